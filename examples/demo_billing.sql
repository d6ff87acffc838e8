-- Demo billing history: a subscription business on the Stripe-sync schema (examples/schemas/stripe.sql),
-- 20,000 customers, 12 months of charges (Oct 2025 - Sep 2026), surveys flowing through the REAL
-- path: track_payments() trigger on stripe.charges -> claim_surveys() -> mark_sent() /
-- mark_failed() -> record_response(). Deterministic: every "random" draw is a hash of ids, so
-- every run prints the same numbers. See docs/demo.md for the time travel and the model.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS nps_billing;
\i examples/schemas/stripe.sql
CREATE SCHEMA demo;
SET search_path = public;

-- u(seed, key): a uniform draw in [0, 1), the same every run
CREATE FUNCTION demo.u(seed integer, key bigint) RETURNS float8
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  AS $$ SELECT (hashint8extended(key, seed) & 9007199254740991)::float8 / 9007199254740992.0 $$;

-- ---------------------------------------------------------------- customers and plans
CREATE TABLE demo.plan (plan text PRIMARY KEY, usd bigint, share float8);
INSERT INTO demo.plan VALUES ('starter', 2900, 0.55), ('pro', 7900, 0.35), ('business', 24900, 0.10);

CREATE TABLE demo.customer AS
SELECT g AS n,
       'cus_' || lpad(g::text, 6, '0') AS id,
       1 + (demo.u(1, g) * 28)::int % 28 AS billing_day,
       CASE WHEN demo.u(2, g) < 0.55 THEN 'starter' WHEN demo.u(2, g) < 0.90 THEN 'pro' ELSE 'business' END AS plan,
       -- automatic collection (card 55 %, SEPA debit 15 %) or manual invoices paid by bank transfer (30 %)
       CASE WHEN demo.u(3, g) < 0.55 THEN 'card' WHEN demo.u(3, g) < 0.70 THEN 'sepa_debit'
            ELSE 'ach_credit_transfer' END AS method,
       CASE WHEN demo.u(4, g) < 0.70 THEN 'usd' WHEN demo.u(4, g) < 0.90 THEN 'eur' ELSE 'gbp' END AS currency,
       -- 70 % were customers before the year starts, the rest sign up during it
       CASE WHEN demo.u(5, g) < 0.70 THEN 0 ELSE 1 + (demo.u(6, g) * 11)::int END AS first_month,
       -- The churn effect planted in the data: a quarter of the customers are unhappy. They
       -- answer worse (25 points fewer promoters, 25 more detractors, see demo.answer) and stop
       -- paying with a hazard of 10 % per month (the others 1 %), so detractors churn more
       -- than promoters: nps_churn() and nps_retention() measure it from the payments.
       demo.u(20, g) < 0.25 AS unhappy
FROM generate_series(1, 20000) g;
-- the first month a customer no longer pays (a geometric draw; 99: pays to the end of the year)
ALTER TABLE demo.customer ADD COLUMN stop_month integer;
UPDATE demo.customer SET stop_month = least(99, first_month + 1
  + floor(ln(1 - demo.u(21, n)) / ln(1 - CASE WHEN unhappy THEN 0.10 ELSE 0.01 END))::int);

INSERT INTO stripe.customers (id, object, email, name, created, currency, metadata)
SELECT id, 'customer', 'customer' || n || '@example.com', 'Customer ' || n,
       extract(epoch FROM timestamptz '2025-10-01 00:00+00' + make_interval(months => first_month) - interval '20 days')::int,
       currency, jsonb_build_object('plan', plan)
FROM demo.customer;

-- ---------------------------------------------------------------- capture: the real trigger
SELECT to_regproc('nps_billing.track_payments') IS NOT NULL AS have_capture,
       to_regproc('nps_billing.claim_surveys') IS NOT NULL AS have_delivery \gset
\if :have_capture
SELECT nps_billing.track_payments(
  source         => 'stripe.charges'::regclass,
  customer       => 'customer',
  payment_key    => 'id',
  succeeded_when => $$status = 'succeeded'$$,
  failed_when    => $$status = 'failed'$$,
  amount         => 'round(amount / 100.0, 2)',
  currency       => 'currency',
  paid_at        => 'to_timestamp(created)',
  attributes     => $$jsonb_build_object('plan', metadata->>'plan',
                                         'method', payment_method_details->>'type',
                                         'collection', metadata->>'collection_method')$$,
  name           => 'stripe') IS NOT NULL AS tracked \gset
-- Time is compressed: a year of charges arrives in seconds, so the per-customer throttle (it
-- compares with now()) is off, sampling keeps ~1 in 4 payments for a survey, and the 1-hour
-- delay is applied in the historical timeline below (delay 0: surveys are due at once).
UPDATE nps_billing.payment_source SET throttle = '0', sample_rate = 0.25, delay = '0' WHERE name = 'stripe';
\else
\echo '!! FALLBACK: nps_billing.track_payments() is not installed; events and surveys are written by the demo itself (labelled fallback, not the product path)'
INSERT INTO nps_billing.payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr, throttle, sample_rate)
VALUES ('stripe', 'stripe.charges', 'customer', 'id', $$status = 'succeeded'$$, '0', 0.25);
\endif

-- One billing cycle per statement (and transaction), like a month of Stripe syncs: the charge on
-- the customer's billing day; failed charges (3 % card, 4 % SEPA, 12 % manual) are retried 3 days
-- later and the retry succeeds 85 % of the time. Pro goes from $79 to $89 on 2026-08-01.
CREATE FUNCTION demo.charges_of_month(m integer)
RETURNS TABLE (id text, paid boolean, amount bigint, status text, created integer, invoice text,
               outcome jsonb, currency text, customer text, metadata jsonb, failure_code text,
               failure_message text, payment_intent text, payment_method_details jsonb)
LANGUAGE sql STABLE AS $$
  WITH c AS (
    SELECT cu.*, p.usd,
           timestamptz '2025-10-01 09:00+00' + make_interval(months => m, days => cu.billing_day - 1)
             + (demo.u(7, cu.n * 100 + m) * 6) * interval '1 hour' AS at,
           demo.u(8, cu.n * 100 + m) < CASE cu.method WHEN 'card' THEN 0.03 WHEN 'sepa_debit' THEN 0.04 ELSE 0.12 END AS fails,
           demo.u(9, cu.n * 100 + m) < 0.85 AS retry_ok
    FROM demo.customer cu JOIN demo.plan p USING (plan)
    WHERE cu.first_month <= m AND m < cu.stop_month),
  attempts AS (
    SELECT c.*, 1 AS try, CASE WHEN fails THEN 'failed' ELSE 'succeeded' END AS st, at AS t FROM c
    UNION ALL
    SELECT c.*, 2, CASE WHEN retry_ok THEN 'succeeded' ELSE 'failed' END, at + interval '3 days' FROM c WHERE fails)
  SELECT 'ch_' || a.n || '_' || m || '_' || a.try, a.st = 'succeeded',
         (CASE WHEN a.plan = 'pro' AND a.t >= '2026-08-01' THEN 8900 ELSE a.usd END
           * CASE a.currency WHEN 'usd' THEN 1.0 WHEN 'eur' THEN 0.92 ELSE 0.79 END)::bigint,
         a.st, extract(epoch FROM a.t)::int, 'in_' || a.n || '_' || m,
         jsonb_build_object('type', CASE WHEN a.st = 'succeeded' THEN 'authorized' ELSE 'issuer_declined' END),
         a.currency, a.id,
         jsonb_build_object('plan', a.plan, 'collection_method',
                            CASE WHEN a.method = 'ach_credit_transfer' THEN 'send_invoice' ELSE 'charge_automatically' END),
         CASE WHEN a.st = 'failed' THEN CASE WHEN a.method = 'ach_credit_transfer' THEN 'payment_overdue' ELSE 'card_declined' END END,
         CASE WHEN a.st = 'failed' THEN 'The payment was not completed.' END,
         'pi_' || a.n || '_' || m || '_' || a.try,
         jsonb_build_object('type', a.method)
  FROM attempts a
$$;
SELECT format($f$INSERT INTO stripe.charges (id, object, paid, amount, status, created, invoice, outcome, captured,
  currency, customer, livemode, metadata, refunded, description, failure_code, failure_message, payment_intent,
  amount_refunded, statement_descriptor, payment_method_details, last_synced_at)
SELECT id, 'charge', paid, amount, status, created, invoice, outcome, true, currency, customer, false, metadata,
  false, 'Subscription update', failure_code, failure_message, payment_intent, 0, 'DEMO SAAS',
  payment_method_details, now()
FROM demo.charges_of_month(%s)$f$, m)
FROM generate_series(0, 11) m \gexec

\if :have_capture
\else
-- FALLBACK capture (only without track_payments): what the trigger would have written
INSERT INTO nps_billing.payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT s.id, c.id, c.status, c.customer, round(c.amount / 100.0, 2), c.currency, to_timestamp(c.created),
       jsonb_build_object('plan', c.metadata->>'plan', 'method', c.payment_method_details->>'type',
                          'collection', c.metadata->>'collection_method')
FROM stripe.charges c, nps_billing.payment_source s WHERE s.name = 'stripe' AND c.status IN ('succeeded', 'failed');
WITH ins AS (
  INSERT INTO nps_billing.survey (token, source_id, event_id, customer_id, channel, send_after, expires_at)
  SELECT md5(e.id::text || 'demo-token'), e.source_id, e.id, e.customer_id, 'email', now(), now() + interval '14 days'
  FROM nps_billing.payment_event e
  WHERE e.kind = 'succeeded' AND demo.u(42, e.id) < 0.25
  RETURNING id, event_id)
UPDATE nps_billing.payment_event e SET survey_id = ins.id FROM ins WHERE e.id = ins.event_id;
\endif

-- ---------------------------------------------------------------- delivery with time travel
-- The sender of this demo lives in the past: for each survey we decide when it went out (the
-- payment + 1 h delay + a stagger over the billing cycle, so answers cover every day of it),
-- whether the e-mail bounced (2 %), whether and when the customer answered (38 %; median ~12 h,
-- never after the 14-day expiry). The queue functions run now; their timestamps are moved back
-- to these historical times afterwards.
CREATE TABLE demo.plan_survey AS
SELECT s.id, s.token, s.customer_id, e.occurred_at AS paid_at,
       e.occurred_at + interval '1 hour' + demo.u(10, s.id) * interval '26 days' AS sent_at,
       demo.u(11, s.id) < 0.02 AS bounces,
       demo.u(12, s.id) < 0.38 AS answers,
       least(-ln(1 - demo.u(13, s.id)) * 18, 13 * 24) * interval '1 hour' AS answer_after
FROM nps_billing.survey s JOIN nps_billing.payment_event e ON e.id = s.event_id;
CREATE INDEX ON demo.plan_survey (id);

\if :have_delivery
-- Two sender workers drain the queue at the same time, as in production (claim_surveys leases
-- with FOR UPDATE SKIP LOCKED, so they never get the same survey): examples/demo_sender.sql.
\! psql -qX -v ON_ERROR_STOP=1 -v worker=demo-sender-1 -f examples/demo_sender.sql & psql -qX -v ON_ERROR_STOP=1 -v worker=demo-sender-2 -f examples/demo_sender.sql; wait
DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM nps_billing.survey WHERE status IN ('pending', 'sending')) THEN
    RAISE EXCEPTION 'the demo senders did not drain the survey queue';
  END IF;
END $$;
\else
\echo '!! FALLBACK: nps_billing.claim_surveys() is not installed; survey statuses are set by the demo itself'
UPDATE nps_billing.survey s SET status = CASE WHEN p.bounces THEN 'failed' ELSE 'sent' END,
       sent_at = CASE WHEN p.bounces THEN NULL ELSE now() END, attempts = CASE WHEN p.bounces THEN 5 ELSE 1 END
FROM demo.plan_survey p WHERE p.id = s.id;
\endif

-- ---------------------------------------------------------------- the answers
-- Each answer's score depends on what the customer just lived through (computed from the
-- captured payment events, like response_context does):
--   automatic payers: 55 % promoters / 15 % detractors; manual payers: 35 % / 30 %;
--   in the 3 days after a charge: -15 points of promoters, +17 of detractors;
--   a failed payment in the last 30 days: -10 / +15; Pro after the Aug 2026 price rise: -12 / +15;
--   an unhappy customer (demo.customer.unhappy, who also stops paying sooner): -25 / +25.
CREATE TABLE demo.answer AS
WITH a AS (
  SELECT p.*, p.sent_at + p.answer_after AS responded_at, cu.unhappy FROM demo.plan_survey p
  JOIN demo.customer cu ON cu.id = p.customer_id
  WHERE p.answers AND NOT p.bounces),
ctx AS (
  SELECT a.*, last.occurred_at AS last_paid, last.attributes,
         floor(extract(epoch FROM a.responded_at - last.occurred_at) / 86400)::int AS days,
         EXISTS (SELECT 1 FROM nps_billing.payment_event f
                 WHERE f.customer_id = a.customer_id AND f.kind = 'failed'
                   AND f.occurred_at > a.responded_at - interval '30 days' AND f.occurred_at <= a.responded_at) AS failed_30d
  FROM a CROSS JOIN LATERAL (
    SELECT e.occurred_at, e.attributes FROM nps_billing.payment_event e
    WHERE e.customer_id = a.customer_id AND e.occurred_at <= a.responded_at
    ORDER BY e.occurred_at DESC LIMIT 1) last),
probs AS (
  SELECT ctx.*,
         CASE WHEN attributes->>'collection' = 'charge_automatically' THEN 0.55 ELSE 0.35 END
           - CASE WHEN days <= 3 THEN 0.15 ELSE 0 END - CASE WHEN failed_30d THEN 0.10 ELSE 0 END
           - CASE WHEN attributes->>'plan' = 'pro' AND responded_at >= '2026-08-01' THEN 0.12 ELSE 0 END
           - CASE WHEN unhappy THEN 0.25 ELSE 0 END AS p_prom,
         CASE WHEN attributes->>'collection' = 'charge_automatically' THEN 0.15 ELSE 0.30 END
           + CASE WHEN days <= 3 THEN 0.17 ELSE 0 END + CASE WHEN failed_30d THEN 0.15 ELSE 0 END
           + CASE WHEN attributes->>'plan' = 'pro' AND responded_at >= '2026-08-01' THEN 0.15 ELSE 0 END
           + CASE WHEN unhappy THEN 0.25 ELSE 0 END AS p_det
  FROM ctx)
SELECT p.*,
       CASE WHEN demo.u(14, id) < p_det THEN (ARRAY[0,1,2,3,4,5,5,6,6,6])[1 + (demo.u(15, id) * 10)::int % 10]
            WHEN demo.u(14, id) < 1 - greatest(p_prom, 0.02) THEN 7 + (demo.u(15, id) < 0.5)::int
            ELSE 9 + (demo.u(15, id) < 0.45)::int END AS score
FROM probs p;

-- comments: half of the answers have one; detractors right after a charge talk about the charge
ALTER TABLE demo.answer ADD COLUMN comment text;
UPDATE demo.answer SET comment = CASE
  WHEN demo.u(16, id) >= 0.5 THEN NULL
  WHEN score <= 6 AND days <= 3 AND demo.u(17, id) < 0.75 THEN (ARRAY[
    'Unexpected charge on my card, I did not know it renews today',
    'Unclear invoice: what exactly is this charge for?',
    'Another unexpected charge, please send a reminder before billing',
    'The invoice is unclear and the amount was higher than I expected',
    'Charged without warning, the invoice does not explain the charge',
    'Unclear charge on my statement, support had to explain the invoice'])[1 + (demo.u(18, id) * 6)::int % 6]
  WHEN score <= 6 AND attributes->>'plan' = 'pro' AND responded_at >= '2026-08-01' THEN
    'Price increase without notice, considering other tools'
  WHEN score <= 6 THEN (ARRAY['Too expensive for what we use', 'Support took days to reply',
    'Missing the integrations we need', 'Paying by bank transfer every month is tedious',
    'Reports are slow'])[1 + (demo.u(18, id) * 5)::int % 5]
  WHEN score <= 8 THEN (ARRAY['Does the job', 'Fine, a bit pricey', 'Good, but the dashboard could be faster'])[1 + (demo.u(18, id) * 3)::int % 3]
  ELSE (ARRAY['Love it, saves us hours', 'Great support team', 'Just works, never think about it',
    'Best tool we pay for'])[1 + (demo.u(18, id) * 4)::int % 4] END;

-- Follow-ups (when installed): every detractor answer gets one, as in production; the answers
-- here are historical, so the policy accepts answers up to two years old (default: 30 days).
SELECT to_regclass('nps_billing.follow_up_policy') IS NOT NULL AS have_follow_ups \gset
\if :have_follow_ups
INSERT INTO nps_billing.follow_up_policy (source_id, max_age)
SELECT id, '2 years' FROM nps_billing.payment_source WHERE name = 'stripe';
\endif

\if :have_delivery
-- the surveys were created when the payment happened (record_response refuses an answer dated
-- before its survey was created)
UPDATE nps_billing.survey s SET created_at = p.paid_at FROM demo.plan_survey p WHERE p.id = s.id;
-- in survey order, so response ids do not depend on the physical order of demo.answer
SELECT count(nps_billing.record_response(token, score, comment, responded_at)) AS answers_recorded
FROM (SELECT * FROM demo.answer ORDER BY id) a \gset
\else
INSERT INTO nps_billing.response (survey_id, customer_id, score, comment, channel, responded_at)
SELECT id, customer_id, score, comment, 'email', responded_at FROM demo.answer ORDER BY id;
UPDATE nps_billing.survey s SET status = 'responded' FROM demo.answer a WHERE a.id = s.id;
\endif

-- back to history: when each survey was created, due, sent and closed
UPDATE nps_billing.survey s
   SET created_at = p.paid_at, send_after = p.paid_at + interval '1 hour',
       sent_at = CASE WHEN s.sent_at IS NOT NULL THEN p.sent_at END,
       expires_at = p.sent_at + interval '14 days'
  FROM demo.plan_survey p WHERE p.id = s.id;
\if :have_delivery
SELECT nps_billing.expire_surveys() AS surveys_expired \gset
\else
UPDATE nps_billing.survey SET status = 'expired' WHERE status IN ('pending', 'sent') AND expires_at <= now();
\endif
ANALYZE;
