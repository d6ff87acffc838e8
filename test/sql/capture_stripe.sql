-- Capture on the Stripe schema synced by stripe-sync-engine (examples/schemas/stripe.sql, a copy of
-- the contract's examples/stripe.sql). The sync writes every charge with
-- INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE last_synced_at is older: a charge arrives
-- pending and is later re-synced as succeeded or failed; some stay pending; guests have no customer.
\set QUIET on
\set ECHO none
SET client_min_messages = warning;
\i examples/schemas/stripe.sql
RESET client_min_messages;
\set ECHO all
\set QUIET off

-- the customers the sync engine copied (e-mail and preferred locales; Stripe keeps no time zone)
INSERT INTO stripe.customers (id, email, preferred_locales) VALUES
  ('cus_s_A', 'a@example.com', '["de-DE", "en"]'), ('cus_s_B', 'b@example.com', '[]'),
  ('cus_s_C', 'c@example.com', NULL), ('cus_s_D0', 'd0@example.com', '["fr"]'),
  ('cus_s_D1', 'd1@example.com', '["pt_BR"]'), ('cus_s_D2', NULL, '["en"]'),
  ('cus_s_E', 'e@example.com', '["ja"]'), ('cus_s_F', 'f@example.com', '["es-419"]');

SELECT nps_billing.track_payments(
  source         => 'stripe.charges',
  customer       => 'customer',
  payment_key    => 'id',
  succeeded_when => $$status = 'succeeded'$$,
  failed_when    => $$status = 'failed'$$,
  amount         => 'amount / 100.0',
  currency       => 'currency',
  paid_at        => 'to_timestamp(created)',
  attributes     => $$jsonb_build_object('method', payment_method_details->>'type', 'invoice', invoice)$$,
  name           => 'stripe',
  recipient      => '(coalesce(receipt_email, (SELECT c.email FROM stripe.customers c WHERE c.id = customer)))',
  locale         => $$(SELECT c.preferred_locales->>0 FROM stripe.customers c WHERE c.id = customer)$$) > 0 AS tracked;

-- the sync engine's upsert, one charge per call
PREPARE sync(text, text, text, bigint, integer, timestamptz) AS
  INSERT INTO stripe.charges (id, object, customer, status, amount, currency, created, invoice,
                              payment_method_details, last_synced_at)
  VALUES ($1, 'charge', $2, $3, $4, 'usd', $5, 'in_' || $1, '{"type": "card"}', $6)
  ON CONFLICT (id) DO UPDATE SET status = excluded.status, amount = excluded.amount,
    last_synced_at = excluded.last_synced_at
  WHERE charges.last_synced_at IS NULL OR charges.last_synced_at < excluded.last_synced_at;

EXECUTE sync('ch_s1', 'cus_s_A', 'pending',   2500, 1700000000, '2024-01-01 10:00+00');  -- no event yet
SELECT count(*) AS events_after_pending FROM nps_billing.payment_event WHERE payment_key = 'ch_s1';
EXECUTE sync('ch_s1', 'cus_s_A', 'succeeded', 2500, 1700000000, '2024-01-01 10:05+00');  -- pending -> succeeded
EXECUTE sync('ch_s1', 'cus_s_A', 'succeeded', 2500, 1700000000, '2024-01-01 10:10+00');  -- re-sync: nothing new
EXECUTE sync('ch_s1', 'cus_s_A', 'succeeded', 2500, 1700000000, '2024-01-01 09:00+00');  -- stale: DO UPDATE skipped
EXECUTE sync('ch_s2', 'cus_s_A', 'succeeded', 990,  1700003600, '2024-01-01 11:00+00');  -- same customer: throttled
EXECUTE sync('ch_s3', NULL,      'succeeded', 1500, 1700007200, '2024-01-01 12:00+00');  -- guest charge
EXECUTE sync('ch_s4', 'cus_s_B', 'pending',   4000, 1700010800, '2024-01-01 13:00+00');
EXECUTE sync('ch_s4', 'cus_s_B', 'failed',    4000, 1700010800, '2024-01-01 13:01+00');  -- failure
EXECUTE sync('ch_s5', 'cus_s_C', 'pending',   700,  1700014400, '2024-01-01 14:00+00');  -- stays pending

-- a sync batch: one multi-row upsert of 40 charges (3 customers), half already known as pending:
-- its INSERT and its UPDATE parts each take the set path (more than 8 rows)
INSERT INTO stripe.charges (id, customer, status, amount, currency, created, last_synced_at)
SELECT 'ch_b' || g, 'cus_s_D' || (g % 3), 'pending', 1000 * g, 'eur', 1700020000 + g, '2024-01-02'
FROM generate_series(1, 20) g;
INSERT INTO stripe.charges (id, customer, status, amount, currency, created, last_synced_at)
SELECT 'ch_b' || g, 'cus_s_D' || (g % 3), 'succeeded', 1000 * g, 'eur', 1700020000 + g, '2024-01-03'
FROM generate_series(1, 40) g
ON CONFLICT (id) DO UPDATE SET status = excluded.status, last_synced_at = excluded.last_synced_at
WHERE charges.last_synced_at < excluded.last_synced_at;

-- a backfill with COPY: 10 charges of 2 new customers, 2 of them failed, 1 pending
COPY stripe.charges (id, customer, status, amount, currency, created) FROM stdin;
ch_c1	cus_s_E	succeeded	100	usd	1700100001
ch_c2	cus_s_E	succeeded	200	usd	1700100002
ch_c3	cus_s_F	failed	300	usd	1700100003
ch_c4	cus_s_F	succeeded	400	usd	1700100004
ch_c5	cus_s_E	succeeded	500	usd	1700100005
ch_c6	cus_s_F	pending	600	usd	1700100006
ch_c7	cus_s_E	failed	700	usd	1700100007
ch_c8	cus_s_F	succeeded	800	usd	1700100008
ch_c9	cus_s_E	succeeded	900	usd	1700100009
ch_c10	cus_s_F	succeeded	1000	usd	1700100010
\.

-- Every event, exactly: one per (payment, kind), pending rows absent (the batch is summed up below).
SELECT e.payment_key, e.kind, e.customer_id, e.amount, e.currency, e.occurred_at,
       e.attributes, e.survey_id IS NOT NULL AS surveyed, e.skip_reason
FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
WHERE s.name = 'stripe' AND e.payment_key NOT LIKE 'ch\_b%'
ORDER BY e.customer_id COLLATE "C" NULLS FIRST, e.occurred_at, e.kind;
SELECT e.customer_id, count(*) AS events, sum(e.amount) AS amount, min(e.currency) AS currency,
       count(e.survey_id) AS surveyed, count(*) FILTER (WHERE e.skip_reason = 'throttled') AS throttled
FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
WHERE s.name = 'stripe' AND e.payment_key LIKE 'ch\_b%'
GROUP BY e.customer_id ORDER BY e.customer_id;

-- One survey per customer (90-day throttle), on the first payment of each in statement order
-- for the batch (ties on occurred_at go to the smallest key), linked both ways to its event.
SELECT v.customer_id, e.payment_key, v.channel, v.status, v.send_after - v.created_at AS delay,
       v.expires_at - v.send_after AS expires_after, v.token ~ '^[A-Za-z0-9_-]{22}$' AS token_ok,
       v.event_id = e.id AND e.survey_id = v.id AS linked
FROM nps_billing.survey v JOIN nps_billing.payment_event e ON e.id = v.event_id
JOIN nps_billing.payment_source s ON s.id = v.source_id
WHERE s.name = 'stripe'
ORDER BY v.customer_id;

SELECT count(*) AS capture_errors FROM nps_billing.capture_error c
JOIN nps_billing.payment_source s ON s.id = c.source_id WHERE s.name = 'stripe';

-- what the surveys keep for the sender: the receipt e-mail, else the customer's, and the first
-- preferred locale; a charge with neither address (cus_s_D2's) is skipped with no_recipient
INSERT INTO stripe.charges (id, customer, status, amount, currency, created, receipt_email)
VALUES ('ch_g1', 'cus_s_G', 'succeeded', 1200, 'usd', 1700300000, ' receipt-g@example.com');
SELECT v.customer_id, v.recipient, v.locale, v.time_zone
FROM nps_billing.survey v JOIN nps_billing.payment_source s ON s.id = v.source_id
WHERE s.name = 'stripe' ORDER BY v.customer_id;
SELECT e.customer_id, count(*) FILTER (WHERE e.skip_reason = 'no_recipient') AS no_recipient
FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
WHERE s.name = 'stripe' AND e.customer_id = 'cus_s_D2' GROUP BY 1;

-- the charges themselves were written as usual
SELECT status, count(*) FROM stripe.charges GROUP BY status ORDER BY status;

-- clean up (the history stays: untrack keeps it)
SELECT nps_billing.untrack_payments('stripe.charges');
INSERT INTO stripe.charges (id, customer, status, amount, currency, created) VALUES ('ch_after', 'cus_s_Z', 'succeeded', 1, 'usd', 1700200000);
SELECT count(*) AS events_kept, count(*) FILTER (WHERE payment_key = 'ch_after') AS events_after_untrack
FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id WHERE s.name = 'stripe';
SELECT name, tracked FROM nps_billing.payment_source WHERE name = 'stripe';
SELECT tgname FROM pg_trigger WHERE tgrelid = 'stripe.charges'::regclass AND NOT tgisinternal ORDER BY tgname;
\set QUIET on
DELETE FROM nps_billing.survey WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'stripe');
DELETE FROM nps_billing.customer_contact WHERE customer_id LIKE 'cus\_s\_%';
DELETE FROM nps_billing.payment_event WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'stripe');
DELETE FROM nps_billing.payment_source WHERE name = 'stripe';
DROP SCHEMA stripe CASCADE;
DROP FUNCTION set_updated_at();
\set QUIET off
