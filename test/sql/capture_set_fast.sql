-- The set path's two statements decide alike: a statement with distinct payment keys takes the
-- fast one (each customer's candidate picked while the rows are evaluated), the same rows with
-- one repeated key take the general one (DISTINCT ON). Row-level skips before the candidate,
-- ties on the payment time ("C" order of keys), both kinds of one key, opt-out, throttle, no
-- customer, a NULL key, sampling; then a candidate recorded before (the general statement).
CREATE TABLE cap_set_a (ref text, cust text, cents int, state text, at timestamptz);
CREATE TABLE cap_set_b (LIKE cap_set_a);
SELECT nps_billing.track_payments(t, 'cust', 'ref', $$state = 'ok'$$, $$state = 'ko'$$, amount => 'cents / 100.0',
                                  paid_at => 'at', name => replace(t, 'cap_', '')) > 0 AS tracked
FROM unnest(ARRAY['cap_set_a', 'cap_set_b']) t;
UPDATE nps_billing.payment_source SET min_amount = 10, sample_rate = 0.5, throttle = '90 days'
 WHERE name IN ('set_a', 'set_b');
CREATE TEMP TABLE cap_set_rows (ref text, cust text, cents int, state text, at timestamptz);
INSERT INTO cap_set_rows VALUES
  ('k1a', 'fs1', 500, 'ok', '2025-01-02'), ('k1b', 'fs1', 5000, 'ok', '2025-01-03'), ('k1c', 'fs1', 5000, 'ok', '2025-01-04'),
  ('k2-b', 'fs2', 5000, 'ok', '2025-01-05'), ('K2-a', 'fs2', 5000, 'ok', '2025-01-05'), ('k2-a', 'fs2', 5000, 'ok', '2025-01-05'),
  ('k3a', 'fs3', 5000, 'ko', '2025-01-01'), ('k3b', 'fs3', 5000, 'ok', '2025-01-06'),
  ('k4a', 'fs4', 5000, 'ok', '2025-01-01'), ('k5a', 'fs5', 5000, 'ok', '2025-01-01'), ('k5b', 'fs5', 5000, 'ok', '2025-01-02'),
  ('k6a', NULL, 5000, 'ok', '2025-01-01'), (NULL, 'fs7', 5000, 'ok', '2025-01-01'), ('k9a', 'fs9', 5000, 'ok', NULL),
  ('k10', 'fs10', 5000, 'ko', '2025-01-01'), ('k10', 'fs10', 5000, 'ok', '2025-01-02'), ('k11', 'fs10', 5000, 'ok', '2025-01-03');
INSERT INTO cap_set_rows SELECT 'm' || g || '-' || h, 'fs' || (20 + g), 1000 + h, 'ok', '2025-02-01'::timestamptz + h * interval '1 hour'
FROM generate_series(1, 30) g, generate_series(1, 3) h;
SELECT nps_billing.opt_out('fs4') AS opted_out;
-- fast: distinct keys
INSERT INTO nps_billing.customer_contact VALUES ('fs5', now());
INSERT INTO cap_set_a SELECT * FROM cap_set_rows;
CREATE TEMP TABLE cap_set_a_surveys AS
  SELECT array_agg(customer_id ORDER BY id) AS by_id, array_agg(customer_id ORDER BY customer_id COLLATE "C") AS by_customer
  FROM nps_billing.survey WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'set_a');
-- general: the same rows and one of them twice
DELETE FROM nps_billing.customer_contact WHERE customer_id LIKE 'fs%';
INSERT INTO nps_billing.customer_contact VALUES ('fs5', now());
INSERT INTO cap_set_b SELECT * FROM cap_set_rows UNION ALL SELECT * FROM cap_set_rows WHERE ref = 'k1c';
CREATE VIEW cap_set_events AS
  SELECT s.name AS source, e.payment_key, e.kind, e.customer_id, e.survey_id IS NOT NULL AS surveyed, e.skip_reason
  FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id WHERE s.name LIKE 'set\_%';
SELECT payment_key, kind, customer_id, surveyed, skip_reason FROM cap_set_events
WHERE source = 'set_a' AND payment_key NOT LIKE 'm%' ORDER BY payment_key COLLATE "C", kind;
SELECT count(*) FILTER (WHERE surveyed) AS surveyed, count(*) FILTER (WHERE skip_reason = 'sampled_out') AS sampled_out,
       count(*) FILTER (WHERE skip_reason = 'throttled') AS throttled
FROM cap_set_events WHERE source = 'set_a' AND payment_key LIKE 'm%';
-- the same decisions both ways (0 rows differ), surveys numbered in customer order both ways
SELECT count(*) AS differ FROM (
  (SELECT payment_key, kind, customer_id, surveyed, skip_reason FROM cap_set_events WHERE source = 'set_a'
   EXCEPT ALL SELECT payment_key, kind, customer_id, surveyed, skip_reason FROM cap_set_events WHERE source = 'set_b')
  UNION ALL
  (SELECT payment_key, kind, customer_id, surveyed, skip_reason FROM cap_set_events WHERE source = 'set_b'
   EXCEPT ALL SELECT payment_key, kind, customer_id, surveyed, skip_reason FROM cap_set_events WHERE source = 'set_a')) d;
SELECT a.by_id = a.by_customer AS a_in_customer_order, a.by_id = b.by_id AS same_surveys
FROM cap_set_a_surveys a,
     (SELECT array_agg(customer_id ORDER BY id) AS by_id FROM nps_billing.survey
       WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'set_b')) b;
SELECT s.name, count(*) AS null_keys FROM nps_billing.capture_error c JOIN nps_billing.payment_source s ON s.id = c.source_id
WHERE s.name LIKE 'set\_%' GROUP BY 1 ORDER BY 1;

-- a candidate recorded before (while the source was disabled): the customer's next payment is
-- surveyed; another recorded payment is left alone
UPDATE nps_billing.payment_source SET enabled = false, sample_rate = 1 WHERE name = 'set_a';
INSERT INTO cap_set_a VALUES ('r1a', 'fs60', 5000, 'ok', '2025-03-01');
INSERT INTO cap_set_a VALUES ('r2b', 'fs61', 5000, 'ok', '2025-03-09');
UPDATE nps_billing.payment_source SET enabled = true WHERE name = 'set_a';
INSERT INTO cap_set_a VALUES ('r1a', 'fs60', 5000, 'ok', '2025-03-01'), ('r1b', 'fs60', 5000, 'ok', '2025-03-02'),
  ('r1c', 'fs60', 5000, 'ok', '2025-03-03'), ('r2a', 'fs61', 5000, 'ok', '2025-03-01'), ('r2b', 'fs61', 5000, 'ok', '2025-03-09'),
  ('r3a', 'fs62', 5000, 'ok', '2025-03-01'), ('r4a', 'fs63', 5000, 'ok', '2025-03-01'), ('r5a', 'fs64', 5000, 'ok', '2025-03-01'),
  ('r6a', 'fs65', 5000, 'ok', '2025-03-01');
SELECT payment_key, customer_id, surveyed, skip_reason FROM cap_set_events
WHERE source = 'set_a' AND payment_key LIKE 'r%' ORDER BY payment_key COLLATE "C";

-- payments recorded before that are no customer's candidate: the fast statement leaves them out
-- and surveys the others, numbered in customer order (the rows come in the reverse order), the
-- surveyed events' ids drawn with their surveys (before the statement's other events)
UPDATE nps_billing.payment_source SET enabled = false WHERE name = 'set_a';
INSERT INTO cap_set_a VALUES ('q1b', 'fs70', 5000, 'ok', '2025-04-09'), ('q3a', 'fs72', 500, 'ok', '2025-04-01');
UPDATE nps_billing.payment_source SET enabled = true WHERE name = 'set_a';
INSERT INTO cap_set_a VALUES ('q6a', 'fs76', 5000, 'ok', '2025-04-01'), ('q5a', 'fs75', 5000, 'ok', '2025-04-01'),
  ('q4a', 'fs74', 5000, 'ok', '2025-04-01'), ('q3b', 'fs72', 5000, 'ok', '2025-04-02'), ('q3a', 'fs72', 500, 'ok', '2025-04-01'),
  ('q2a', 'fs71', 5000, 'ok', '2025-04-01'), ('q1b', 'fs70', 5000, 'ok', '2025-04-09'), ('q1a', 'fs70', 5000, 'ok', '2025-04-01'),
  ('q0a', NULL, 5000, 'ok', '2025-04-01');
SELECT payment_key, customer_id, surveyed, skip_reason, count(*) OVER (PARTITION BY payment_key) AS events
FROM cap_set_events WHERE source = 'set_a' AND payment_key LIKE 'q%' ORDER BY payment_key COLLATE "C";
SELECT array_agg(s.customer_id ORDER BY s.id) = array_agg(s.customer_id ORDER BY s.customer_id COLLATE "C") AS in_customer_order,
       bool_and(e.survey_id = s.id AND e.customer_id = s.customer_id) AS events_match
FROM nps_billing.survey s JOIN nps_billing.payment_event e ON e.id = s.event_id WHERE s.customer_id LIKE 'fs7%';
SELECT max(id) FILTER (WHERE survey_id IS NOT NULL) < min(id) FILTER (WHERE survey_id IS NULL AND skip_reason <> 'disabled')
       AS surveyed_first
FROM nps_billing.payment_event WHERE payment_key LIKE 'q%';
-- the id lookup serves the capture trigger only
\set VERBOSITY terse
SELECT nps_billing._capture_set_id('q1a', 'succeeded', 1);
\set VERBOSITY default

-- a cancel (or statement_timeout) met while capturing ends the statement, on the set path and on
-- the row path: it is not a capture error, and the rows are not redone one by one
CREATE FUNCTION cap_cancel(c text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF c = 'cancel' THEN
    RAISE EXCEPTION 'canceling statement due to user request' USING ERRCODE = 'query_canceled';
  END IF;
  RETURN c;
END $$;
CREATE TABLE cap_set_c (LIKE cap_set_a);
SELECT nps_billing.track_payments('cap_set_c', 'public.cap_cancel(cust)', 'ref', $$state = 'ok'$$, $$state = 'ko'$$,
                                  name => 'set_c') > 0 AS tracked;
\set VERBOSITY terse
INSERT INTO cap_set_c SELECT 'c' || g, CASE WHEN g = 5 THEN 'cancel' ELSE 'fs80' END, 5000, 'ok', now()
FROM generate_series(1, 20) g;
INSERT INTO cap_set_c VALUES ('c1', 'cancel', 5000, 'ok', now());
\set VERBOSITY default
SELECT (SELECT count(*) FROM cap_set_c) AS payments,
       (SELECT count(*) FROM nps_billing.capture_error c JOIN nps_billing.payment_source s ON s.id = c.source_id
         WHERE s.name = 'set_c') AS capture_errors;

\set QUIET on
SELECT nps_billing.untrack_payments('cap_set_a');
SELECT nps_billing.untrack_payments('cap_set_b');
SELECT nps_billing.untrack_payments('cap_set_c');
DELETE FROM nps_billing.capture_error WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'set\_%');
DELETE FROM nps_billing.survey WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'set\_%');
DELETE FROM nps_billing.payment_event WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'set\_%');
DELETE FROM nps_billing.customer_contact WHERE customer_id LIKE 'fs%';
DELETE FROM nps_billing.opt_out WHERE customer_id LIKE 'fs%';
DELETE FROM nps_billing.payment_source WHERE name LIKE 'set\_%';
DROP VIEW cap_set_events;
DROP TABLE cap_set_a, cap_set_b, cap_set_c;
DROP FUNCTION cap_cancel(text);
\set QUIET off
