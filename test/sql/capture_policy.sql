-- Survey policy: several sources at once, throttle across sources, deterministic sampling,
-- opt-out, disabled, min_amount, survey_on, channel / delay / expiry, untrack and re-track.
CREATE TABLE cap_pol_charges (id serial PRIMARY KEY, cust text, cents int, state text);
CREATE TABLE cap_pol_invoices (no text PRIMARY KEY, cust text, total numeric, paid boolean, failed boolean DEFAULT false);
SELECT nps_billing.track_payments('cap_pol_charges', 'cust', 'id::text', $$state = 'ok'$$, $$state = 'ko'$$,
                                  amount => 'cents / 100.0', name => 'pol_charges') > 0 AS tracked;
SELECT nps_billing.track_payments('cap_pol_invoices', 'cust', 'no', 'paid', 'failed', amount => 'total',
                                  name => 'pol_invoices') > 0 AS tracked;
CREATE VIEW cap_pol_events AS
  SELECT s.name AS source, e.payment_key, e.kind, e.customer_id, e.amount, e.survey_id IS NOT NULL AS surveyed, e.skip_reason
  FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
  WHERE s.name LIKE 'pol\_%';

-- throttle across sources: a charge surveys P1; P1's invoice the same day is throttled
INSERT INTO cap_pol_charges (cust, cents, state) VALUES ('P1', 1000, 'ok');
INSERT INTO cap_pol_invoices (no, cust, total, paid) VALUES ('INV-1', 'P1', 10, true);
-- an invoice first for P2, then its charge
INSERT INTO cap_pol_invoices (no, cust, total, paid) VALUES ('INV-2', 'P2', 20, true);
INSERT INTO cap_pol_charges (cust, cents, state) VALUES ('P2', 2000, 'ok');
-- the throttle is per source: with a 0-day throttle on invoices, P1 is surveyed again there
UPDATE nps_billing.payment_source SET throttle = '0 days' WHERE name = 'pol_invoices';
INSERT INTO cap_pol_invoices (no, cust, total, paid) VALUES ('INV-3', 'P1', 30, true);
UPDATE nps_billing.payment_source SET throttle = '90 days' WHERE name = 'pol_invoices';
SELECT * FROM cap_pol_events ORDER BY source, payment_key;
SELECT customer_id, count(*) AS surveys FROM nps_billing.survey
WHERE customer_id IN ('P1', 'P2') GROUP BY 1 ORDER BY 1;

-- min_amount, survey_on, channel, delay, expires_after, enabled
UPDATE nps_billing.payment_source
   SET min_amount = 50, survey_on = '{succeeded,failed}', channel = 'sms', delay = '2 days', expires_after = '3 days'
 WHERE name = 'pol_charges';
INSERT INTO cap_pol_charges (cust, cents, state) VALUES ('P3', 4999, 'ok');   -- 49.99 < 50
INSERT INTO cap_pol_charges (cust, cents, state) VALUES ('P4', 5000, 'ko');   -- failed, surveyed now
INSERT INTO cap_pol_charges (cust, cents, state) VALUES ('P5', NULL, 'ok');   -- unknown amount < 50
UPDATE nps_billing.payment_source SET enabled = false WHERE name = 'pol_charges';
INSERT INTO cap_pol_charges (cust, cents, state) VALUES ('P6', 9000, 'ok');
UPDATE nps_billing.payment_source SET enabled = true, survey_on = '{succeeded}' WHERE name = 'pol_charges';
INSERT INTO cap_pol_charges (cust, cents, state) VALUES ('P7', 9000, 'ko');   -- failed: not surveyed kind
SELECT payment_key, kind, customer_id, amount, surveyed, skip_reason FROM cap_pol_events
WHERE customer_id IN ('P3', 'P4', 'P5', 'P6', 'P7') ORDER BY customer_id;
SELECT customer_id, channel, status, send_after - created_at AS delay, expires_at - send_after AS expires_after
FROM nps_billing.survey WHERE customer_id = 'P4';
-- bad policy values are refused by the table's constraints
\set VERBOSITY terse
UPDATE nps_billing.payment_source SET sample_rate = 1.5 WHERE name = 'pol_charges';
UPDATE nps_billing.payment_source SET channel = 'pigeon' WHERE name = 'pol_charges';
UPDATE nps_billing.payment_source SET survey_on = '{refunded}' WHERE name = 'pol_charges';
\set VERBOSITY default

-- opt-out: events say opted_out; pending surveys are cancelled; opt_in lets the next one through
SELECT nps_billing.opt_out('P8') AS opted_out, nps_billing.opt_out('P8') AS again;
INSERT INTO cap_pol_charges (cust, cents, state) VALUES ('P8', 9000, 'ok');
SELECT nps_billing.opt_out('P4') AS opted_out;
SELECT status FROM nps_billing.survey WHERE customer_id = 'P4';
SELECT nps_billing.opt_in('P8') AS opted_in, nps_billing.opt_in('P8') AS again;
INSERT INTO cap_pol_charges (cust, cents, state) VALUES ('P8', 9100, 'ok');
SELECT payment_key, customer_id, surveyed, skip_reason FROM cap_pol_events WHERE customer_id = 'P8' ORDER BY payment_key;
SELECT nps_billing.opt_out(NULL);

-- Sampling is deterministic: kept exactly when sample_point(customer, key) < sample_rate, on the
-- row path (single-row INSERTs) and on the set path (one INSERT ... SELECT), and the same
-- customer and payment decide the same way when replayed.
UPDATE nps_billing.payment_source SET sample_rate = 0.5, min_amount = 0 WHERE name IN ('pol_charges', 'pol_invoices');
DO $$ BEGIN
  FOR g IN 1..40 LOOP
    INSERT INTO cap_pol_invoices (no, cust, total, paid) VALUES ('S-' || g, 'S' || g, 1, true);
  END LOOP;
END $$;
INSERT INTO cap_pol_invoices (no, cust, total, paid) SELECT 'T-' || g, 'T' || g, 1, true FROM generate_series(1, 200) g;
SELECT count(*) AS sampled_events,
       count(*) FILTER (WHERE (skip_reason IS NOT DISTINCT FROM 'sampled_out') = (nps_billing.sample_point(customer_id, payment_key) >= 0.5)) AS as_sample_point_says,
       count(*) FILTER (WHERE skip_reason = 'sampled_out') > 0 AND count(*) FILTER (WHERE surveyed) > 0 AS both_outcomes
FROM cap_pol_events WHERE source = 'pol_invoices' AND (payment_key LIKE 'S-%' OR payment_key LIKE 'T-%');
CREATE TEMP TABLE cap_pol_first AS
  SELECT payment_key, skip_reason FROM cap_pol_events WHERE source = 'pol_invoices' AND payment_key LIKE 'T-%';
-- replay: forget the events and throttle state of T*, write the same payments again
DELETE FROM nps_billing.survey WHERE customer_id LIKE 'T%';
DELETE FROM nps_billing.customer_contact WHERE customer_id LIKE 'T%';
DELETE FROM nps_billing.payment_event e USING nps_billing.payment_source s
 WHERE s.id = e.source_id AND s.name = 'pol_invoices' AND e.payment_key LIKE 'T-%';
DELETE FROM cap_pol_invoices WHERE no LIKE 'T-%';
INSERT INTO cap_pol_invoices (no, cust, total, paid) SELECT 'T-' || g, 'T' || g, 1, true FROM generate_series(200, 1, -1) g;
SELECT count(*) AS replayed, count(*) FILTER (WHERE f.skip_reason IS NOT DISTINCT FROM e.skip_reason) AS same_decision
FROM cap_pol_first f JOIN cap_pol_events e ON e.source = 'pol_invoices' AND e.payment_key = f.payment_key;
SELECT nps_billing.sample_point('cus_1', 'ch_1') = nps_billing.sample_point('cus_1', 'ch_1') AS stable,
       nps_billing.sample_point('cus_1', 'ch_1') <> nps_billing.sample_point('cus_1', 'ch_2') AS varies,
       nps_billing.sample_point('cus_1', 'ch_1') BETWEEN 0 AND 1 AS in_range;

-- untrack keeps the history and stops capture; tracking twice or under a taken name fails
SELECT nps_billing.track_payments('cap_pol_charges', 'cust', 'id::text', 'true');
SELECT nps_billing.track_payments('cap_pol_events', 'customer_id', 'payment_key', 'true');
CREATE TABLE cap_pol_other (id int, cust text);
SELECT nps_billing.track_payments('cap_pol_other', 'cust', 'id::text', 'true', name => 'pol_charges');
SELECT count(*) AS before_untrack FROM cap_pol_events WHERE source = 'pol_charges';
SELECT nps_billing.untrack_payments('cap_pol_charges');
SELECT nps_billing.untrack_payments('cap_pol_charges');
INSERT INTO cap_pol_charges (cust, cents, state) VALUES ('P9', 9000, 'ok');
SELECT count(*) AS after_untrack FROM cap_pol_events WHERE source = 'pol_charges';
SELECT name, tracked FROM nps_billing.payment_source WHERE name LIKE 'pol\_%' ORDER BY name;
-- tracking it again under its old name continues the same source (same id, same history)
SELECT nps_billing.track_payments('cap_pol_charges', 'cust', 'id::text', $$state = 'ok'$$, name => 'pol_charges')
     = (SELECT id FROM nps_billing.payment_source WHERE name = 'pol_charges') AS same_source;
INSERT INTO cap_pol_charges (cust, cents, state) VALUES ('P10', 9000, 'ok');
SELECT payment_key, customer_id, surveyed FROM cap_pol_events WHERE customer_id IN ('P9', 'P10');

\set QUIET on
SELECT nps_billing.untrack_payments('cap_pol_charges');
SELECT nps_billing.untrack_payments('cap_pol_invoices');
DELETE FROM nps_billing.survey WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'pol\_%');
DELETE FROM nps_billing.payment_event WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'pol\_%');
DELETE FROM nps_billing.customer_contact WHERE customer_id ~ '^[PST][0-9]+$';
DELETE FROM nps_billing.opt_out WHERE customer_id ~ '^P[0-9]+$';
DELETE FROM nps_billing.payment_source WHERE name LIKE 'pol\_%';
DROP VIEW cap_pol_events;
DROP TABLE cap_pol_charges, cap_pol_invoices, cap_pol_other;
\set QUIET off
