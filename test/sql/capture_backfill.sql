-- backfill_payments: a table that already holds payments when it is tracked. The existing rows
-- become payment events with skip_reason 'backfilled' and no survey; a second call records nothing;
-- `since` limits the rows; the throttle is seeded from imported answers and a table of last survey
-- dates; only the table's owner (or a superuser) may call it, and the expressions run as the owner.
-- The three example schemas are loaded, filled untracked, then tracked as in capture_{stripe,lago,killbill}.
\set QUIET on
SET client_min_messages = warning;
\set ECHO none
\i examples/schemas/stripe.sql
\i examples/schemas/lago.sql
CREATE SCHEMA killbill;
SET search_path = killbill, public;
\i examples/schemas/killbill.sql
RESET search_path;
RESET client_min_messages;
\set ECHO all
\set QUIET off

CREATE VIEW bf_events AS
  SELECT s.name AS source, e.kind, e.skip_reason, count(*) AS events, count(e.survey_id) AS with_survey,
         sum(e.amount) AS amount
  FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
  GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;

-- ---- Stripe: 60 charges synced before tracking (succeeded, failed, pending, a guest) ----------
INSERT INTO stripe.charges (id, object, customer, status, amount, currency, created, payment_method_details, invoice)
SELECT 'ch_old_' || g, 'charge', CASE WHEN g = 60 THEN NULL ELSE 'cus_' || (g % 20) END,
       CASE WHEN g % 10 = 0 THEN 'failed' WHEN g % 15 = 0 THEN 'pending' ELSE 'succeeded' END,
       100 * g, 'usd', 1700000000 + g * 86400, '{"type": "card"}', 'in_' || g
FROM generate_series(1, 60) g;
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
  name           => 'stripe') > 0 AS tracked;
SELECT count(*) AS events_before_backfill FROM nps_billing.payment_event;
-- an answer imported from the previous survey tool, and the DBA's table of last survey dates
INSERT INTO nps_billing.response (customer_id, score, responded_at) VALUES ('cus_3', 8, now() - interval '10 days');
CREATE TABLE public.old_tool_sent (customer_id text, last_survey_at timestamptz);
INSERT INTO public.old_tool_sent VALUES ('cus_4', now() - interval '20 days'), ('cus_4', now() - interval '200 days'),
                                        ('cus_5', now() - interval '400 days'), (NULL, now());
SELECT nps_billing.backfill_payments('stripe.charges', last_surveys => 'public.old_tool_sent') AS recorded;
SELECT * FROM bf_events;
SELECT count(*) AS surveys FROM nps_billing.survey;
-- events carry what capture would have recorded
SELECT payment_key, kind, customer_id, amount, currency, occurred_at AT TIME ZONE 'UTC' AS occurred_at, attributes
FROM nps_billing.payment_event WHERE payment_key IN ('ch_old_1', 'ch_old_10', 'ch_old_60') ORDER BY payment_key;
SELECT count(*) AS pending_not_recorded FROM nps_billing.payment_event WHERE payment_key = 'ch_old_15';
-- the throttle: seeded from the answer and from the latest date of the imported table (not the older one)
SELECT customer_id, round(extract(epoch FROM now() - last_survey_at) / 86400) AS days_ago
FROM nps_billing.customer_contact ORDER BY customer_id;
-- idempotent: a second call records nothing and changes nothing
SELECT nps_billing.backfill_payments('stripe.charges', last_surveys => 'public.old_tool_sent') AS recorded_again;
SELECT * FROM bf_events;
-- capture carries on: a seeded customer is throttled, a fresh one gets a survey; a pending charge
-- that settles now is captured by the trigger (not by the backfill)
INSERT INTO stripe.charges (id, object, customer, status, amount, currency, created)
VALUES ('ch_new_1', 'charge', 'cus_4', 'succeeded', 500, 'usd', 1800000000),
       ('ch_new_2', 'charge', 'cus_new', 'succeeded', 500, 'usd', 1800000000);
UPDATE stripe.charges SET status = 'succeeded' WHERE id = 'ch_old_15';
SELECT payment_key, customer_id, skip_reason, survey_id IS NOT NULL AS surveyed
FROM nps_billing.payment_event WHERE payment_key IN ('ch_new_1', 'ch_new_2', 'ch_old_15') ORDER BY payment_key;
SELECT count(*) AS backfilled_after_capture FROM nps_billing.payment_event WHERE skip_reason = 'backfilled';
SELECT nps_billing.backfill_payments('stripe.charges') AS recorded_after_capture;

-- ---- Lago: payments of two years; only those since 2024-01-01 are backfilled ------------------
INSERT INTO public.payments (id, organization_id, customer_id, amount_cents, amount_currency, status,
                             payable_payment_status, payment_type, created_at, updated_at)
SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, '00000000-0000-0000-0000-0000000000aa',
       ('00000000-0000-0000-0000-c0000000000' || (g % 5))::uuid, 1000 + g, 'EUR',
       CASE WHEN g % 7 = 0 THEN 'failed' ELSE 'succeeded' END,
       (CASE WHEN g % 7 = 0 THEN 'failed' WHEN g % 11 = 0 THEN 'processing' ELSE 'succeeded' END)::public.payment_payable_payment_status,
       'provider', timestamp '2023-01-01' + g * interval '7 days', now()
FROM generate_series(1, 104) g;
SELECT nps_billing.track_payments(
  source         => 'public.payments',
  customer       => 'customer_id::text',
  payment_key    => 'id::text',
  succeeded_when => $$payable_payment_status = 'succeeded'$$,
  failed_when    => $$payable_payment_status = 'failed'$$,
  amount         => 'amount_cents / 100.0',
  currency       => 'amount_currency',
  paid_at        => $$created_at AT TIME ZONE 'UTC'$$,
  attributes     => $$jsonb_build_object('payment_type', payment_type, 'provider_status', status)$$,
  name           => 'lago') > 0 AS tracked;
SELECT nps_billing.backfill_payments('public.payments', since => '2024-01-01 00:00+00') AS recorded_since_2024;
SELECT min(occurred_at) AT TIME ZONE 'UTC' AS first, max(occurred_at) AT TIME ZONE 'UTC' AS last
FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id WHERE s.name = 'lago';
-- widening the window later adds only the older rows
SELECT nps_billing.backfill_payments('public.payments') AS recorded_before_2024;
SELECT * FROM bf_events WHERE source = 'lago';

-- ---- Kill Bill: the customer comes from a scalar subquery on payments ---------------------------
SET search_path = killbill, public;
INSERT INTO payment_methods (id, external_key, account_id, plugin_name, created_by, created_date, updated_by, updated_date, account_record_id)
VALUES ('pm-1', 'pm-1', 'acc-1', 'killbill-stripe', 'test', '2024-05-01', 'test', '2024-05-01', 1),
       ('pm-2', 'pm-2', 'acc-2', 'killbill-adyen', 'test', '2024-05-01', 'test', '2024-05-01', 2);
INSERT INTO payments (id, account_id, payment_method_id, external_key, state_name, created_by, created_date, updated_by, updated_date, account_record_id)
VALUES ('pay-1', 'acc-1', 'pm-1', 'pay-1', 'PURCHASE_SUCCESS', 'test', '2024-05-02', 'test', '2024-05-02', 1),
       ('pay-2', 'acc-2', 'pm-2', 'pay-2', 'PURCHASE_SUCCESS', 'test', '2024-05-02', 'test', '2024-05-02', 2);
INSERT INTO payment_transactions (id, transaction_external_key, transaction_type, effective_date, transaction_status,
                                  amount, currency, payment_id, created_by, created_date, updated_by, updated_date,
                                  account_record_id)
SELECT 'tx-' || g, 'tx-' || g, CASE WHEN g % 6 = 0 THEN 'REFUND' ELSE 'PURCHASE' END,
       timestamp '2024-05-02' + g * interval '1 day',
       CASE WHEN g % 4 = 0 THEN 'PAYMENT_FAILURE' ELSE 'SUCCESS' END, g, 'USD', 'pay-' || (1 + g % 2),
       'test', '2024-05-02', 'test', '2024-05-02', 1
FROM generate_series(1, 30) g;
RESET search_path;
SELECT nps_billing.track_payments(
  source         => 'killbill.payment_transactions',
  customer       => '(SELECT account_id FROM payments p WHERE p.id = payment_id)',
  payment_key    => 'id',
  succeeded_when => $$transaction_status = 'SUCCESS' AND transaction_type IN ('PURCHASE', 'CAPTURE')$$,
  failed_when    => $$transaction_status = 'PAYMENT_FAILURE'$$,
  amount         => 'amount',
  currency       => 'currency',
  paid_at        => $$effective_date AT TIME ZONE 'UTC'$$,
  attributes     => $$jsonb_build_object('type', transaction_type, 'plugin',
                       (SELECT pm.plugin_name FROM payments p JOIN payment_methods pm ON pm.id = p.payment_method_id
                        WHERE p.id = payment_id))$$,
  name           => 'killbill') > 0 AS tracked;
SELECT nps_billing.backfill_payments('killbill.payment_transactions') AS recorded;
SELECT nps_billing.backfill_payments('killbill.payment_transactions') AS recorded_again;
SELECT customer_id, kind, count(*), sum(amount), min(attributes->>'plugin') AS plugin
FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
WHERE s.name = 'killbill' GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) AS surveys_from_backfills FROM nps_billing.survey s JOIN nps_billing.payment_event e ON e.id = s.event_id
WHERE e.skip_reason = 'backfilled';

-- ---- Rights ---------------------------------------------------------------------------------
SET client_min_messages = warning;
DROP ROLE IF EXISTS nps_bf_owner;
DROP ROLE IF EXISTS nps_bf_other;
RESET client_min_messages;
CREATE ROLE nps_bf_owner;
CREATE ROLE nps_bf_other;
GRANT USAGE ON SCHEMA nps_billing TO nps_bf_owner, nps_bf_other;
GRANT EXECUTE ON FUNCTION nps_billing.backfill_payments(regclass, timestamptz, regclass) TO nps_bf_owner, nps_bf_other;
CREATE TABLE public.bf_owned (id int PRIMARY KEY, who text, ok boolean);
ALTER TABLE public.bf_owned OWNER TO nps_bf_owner;
INSERT INTO public.bf_owned VALUES (1, 'c1', true), (2, 'c2', true);
SELECT nps_billing.track_payments('public.bf_owned', 'who', 'id::text', 'ok',
                                  attributes => $$jsonb_build_object('evaluated_by', current_user)$$) > 0 AS tracked;
GRANT SELECT, UPDATE ON public.bf_owned TO nps_bf_other;
-- another role, even one that may read and write the table, may not backfill it
SET ROLE nps_bf_other;
SELECT nps_billing.backfill_payments('public.bf_owned');
RESET ROLE;
-- a table that is not tracked
SELECT nps_billing.backfill_payments('public.old_tool_sent');
SELECT nps_billing.backfill_payments(NULL);
-- the owner may, needs no grant on the extension's tables, and the expressions run as the owner
-- even when a superuser calls it
SET ROLE nps_bf_owner;
SELECT nps_billing.backfill_payments('public.bf_owned', last_surveys => 'public.old_tool_sent');  -- not readable by the owner
SELECT nps_billing.backfill_payments('public.bf_owned', since => NULL);
SELECT nps_billing.backfill_payments('public.bf_owned', since => '-infinity');
SELECT count(*) FROM nps_billing.payment_event;  -- the owner cannot read the events
RESET ROLE;
INSERT INTO public.bf_owned VALUES (3, 'c3', true);  -- captured by the trigger
DELETE FROM nps_billing.payment_event WHERE payment_key = '2'
  AND source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'bf_owned');
SELECT nps_billing.backfill_payments('public.bf_owned');
SELECT payment_key, skip_reason, CASE WHEN skip_reason = 'backfilled' THEN attributes END AS attributes
FROM nps_billing.payment_event e
JOIN nps_billing.payment_source s ON s.id = e.source_id WHERE s.name = 'bf_owned' ORDER BY payment_key;

-- clean up what is cluster-wide
SELECT nps_billing.untrack_payments('public.bf_owned');
DROP TABLE public.bf_owned;
REVOKE ALL ON FUNCTION nps_billing.backfill_payments(regclass, timestamptz, regclass) FROM nps_bf_owner, nps_bf_other;
REVOKE ALL ON SCHEMA nps_billing FROM nps_bf_owner, nps_bf_other;
DROP ROLE nps_bf_owner;
DROP ROLE nps_bf_other;
\set QUIET on
SET client_min_messages = warning;
\o /dev/null
SELECT nps_billing.untrack_payments('stripe.charges');
SELECT nps_billing.untrack_payments('public.payments');
SELECT nps_billing.untrack_payments('killbill.payment_transactions');
DELETE FROM nps_billing.customer_contact c WHERE c.customer_id IN
  (SELECT e.customer_id FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
   WHERE s.name IN ('stripe', 'lago', 'killbill', 'bf_owned'))
  OR c.customer_id IN ('cus_3', 'cus_4', 'cus_5');
DELETE FROM nps_billing.response WHERE customer_id = 'cus_3';
DELETE FROM nps_billing.survey WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name IN ('stripe', 'lago', 'killbill', 'bf_owned'));
DELETE FROM nps_billing.payment_event WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name IN ('stripe', 'lago', 'killbill', 'bf_owned'));
DELETE FROM nps_billing.payment_source WHERE name IN ('stripe', 'lago', 'killbill', 'bf_owned');
DROP VIEW bf_events;
DROP TABLE public.old_tool_sent;
DROP SCHEMA stripe CASCADE;
DROP FUNCTION set_updated_at();
DROP TABLE public.payments, public.invoices, public.customers;
DROP TYPE public.payment_payable_payment_status, public.payment_type, public.customer_type,
  public.customer_account_type, public.tax_status, public.subscription_invoice_issuing_date_anchors,
  public.subscription_invoice_issuing_date_adjustments;
DROP SCHEMA killbill CASCADE;
\o
RESET client_min_messages;
\set QUIET off
