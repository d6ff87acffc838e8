-- Fills a database at the previous release the way a user would (test/upgrade.sh runs it with the
-- current shared library, so it also proves that library still serves a database not yet updated).
-- Surveys end in every status: failed, cancelled, expired, pending, sending, sent, responded.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;

CREATE TABLE public.payments (
  id           bigserial PRIMARY KEY,
  customer_id  text,
  amount_cents bigint,
  currency     text,
  status       text,
  plan         text,
  created_at   timestamptz DEFAULT now());
SELECT nps_billing.track_payments('public.payments', 'customer_id', 'id::text',
         $$status = 'succeeded'$$, $$status = 'failed'$$,
         'amount_cents / 100.0 + 0 * (1 / amount_cents)', 'currency', 'created_at',
         $$jsonb_build_object('plan', plan)$$, name => 'shop') > 0 AS tracked;
-- the DBA tunes the policy: surveys are due at once
UPDATE nps_billing.payment_source SET delay = '0', expires_after = '30 days' WHERE name = 'shop';

-- cus_1, cus_2: single-row inserts; their surveys fail five times and end 'failed'
INSERT INTO payments (customer_id, amount_cents, currency, status, plan) VALUES ('cus_1', 1000, 'usd', 'succeeded', 'pro');
INSERT INTO payments (customer_id, amount_cents, currency, status, plan) VALUES ('cus_2', 2000, 'eur', 'succeeded', 'basic');
SELECT nps_billing.mark_failed(c.id, 'wf', 'smtp 550', '0') FROM nps_billing.claim_surveys('wf', 10) c;
SELECT nps_billing.mark_failed(c.id, 'wf', 'smtp 550', '0') FROM nps_billing.claim_surveys('wf', 10) c;
SELECT nps_billing.mark_failed(c.id, 'wf', 'smtp 550', '0') FROM nps_billing.claim_surveys('wf', 10) c;
SELECT nps_billing.mark_failed(c.id, 'wf', 'smtp 550', '0') FROM nps_billing.claim_surveys('wf', 10) c;
SELECT nps_billing.mark_failed(c.id, 'wf', 'smtp 550', '0') FROM nps_billing.claim_surveys('wf', 10) c;

-- cus_3 .. cus_40: one bulk INSERT ... SELECT (the set path), plus repeat payments (throttled),
-- failed payments, a pending payment later updated to succeeded, and a guest payment
INSERT INTO payments (customer_id, amount_cents, currency, status, plan, created_at)
SELECT 'cus_' || g, 500 * g, CASE WHEN g % 3 = 0 THEN 'eur' ELSE 'usd' END, 'succeeded',
       CASE WHEN g % 2 = 0 THEN 'pro' ELSE 'basic' END, now() - (g || ' hours')::interval
FROM generate_series(3, 40) g;
INSERT INTO payments (customer_id, amount_cents, currency, status, plan)
SELECT 'cus_' || g, 700, 'usd', CASE WHEN g % 4 = 0 THEN 'failed' ELSE 'succeeded' END, 'pro'
FROM generate_series(1, 40) g;
INSERT INTO payments (customer_id, amount_cents, currency, status, plan) VALUES ('cus_50', 900, 'usd', 'pending', 'pro');
UPDATE payments SET status = 'succeeded' WHERE customer_id = 'cus_50';
INSERT INTO payments (customer_id, amount_cents, currency, status, plan) VALUES (NULL, 900, 'usd', 'succeeded', 'pro');
-- a row whose amount expression raises: a capture_error, the payment commits
INSERT INTO payments (customer_id, amount_cents, currency, status, plan) VALUES ('cus_51', 0, 'usd', 'succeeded', 'pro');

-- opt-outs: cus_40's pending survey is cancelled; cus_99 never paid
SELECT nps_billing.opt_out('cus_40');
SELECT nps_billing.opt_out('cus_99');
-- three surveys run out of time
UPDATE nps_billing.survey SET expires_at = now() - interval '1 day'
 WHERE customer_id IN ('cus_37', 'cus_38', 'cus_39');
SELECT nps_billing.expire_surveys();

-- a worker claims 20, sends 15 of them; 8 are answered (one answered twice); 5 stay 'sending'
CREATE TEMP TABLE claimed AS SELECT id, token FROM nps_billing.claim_surveys('w1', 20, '1 day');
SELECT nps_billing.mark_sent(id, 'w1') FROM (SELECT id FROM claimed ORDER BY id LIMIT 15) s;
SELECT nps_billing.record_response(token, (id % 11)::integer, CASE WHEN id % 2 = 0 THEN 'comment ' || id END)
  FROM (SELECT id, token FROM claimed ORDER BY id LIMIT 8) s;
SELECT nps_billing.record_response(token, 10, 'changed my mind') FROM (SELECT token FROM claimed ORDER BY id LIMIT 1) s;
-- historical answers imported with plain INSERT
INSERT INTO nps_billing.response (customer_id, score, comment, responded_at)
VALUES ('cus_old1', 3, 'old answer', '2025-01-01 10:00+00'), ('cus_old2', 9, NULL, '2025-02-01 10:00+00');

-- the user's own objects built on the extension
CREATE TABLE public.nps_daily (day date PRIMARY KEY, summary nps_billing.npsagg NOT NULL);
INSERT INTO public.nps_daily
SELECT d::date, nps_billing.nps_agg(s, 1.0 + s / 10.0)
FROM generate_series(date '2025-01-01', date '2025-01-20', interval '1 day') d,
     LATERAL (SELECT (g * 7 + extract(day FROM d)::int) % 11 AS s FROM generate_series(1, 50) g) x
GROUP BY d;
INSERT INTO public.nps_daily SELECT '2025-02-01', nps_billing.nps_agg(score) FROM nps_billing.response;
CREATE TABLE public.manual_scores (id int PRIMARY KEY, score nps_billing.nps_score, cat nps_billing.nps_category);
INSERT INTO public.manual_scores SELECT g, g % 11, nps_billing.category(g % 11) FROM generate_series(1, 30) g;
CREATE VIEW public.nps_overall AS
  SELECT nps_billing.nps(score) AS nps, nps_billing.nps(score, 2.0) AS weighted,
         nps_billing.responses(nps_billing.nps_agg(score)) AS n
  FROM nps_billing.response;
CREATE VIEW public.nps_monthly AS
  SELECT date_trunc('month', day) AS month, nps_billing.nps(nps_billing.rollup(summary)) AS nps,
         nps_billing.weighted_nps(nps_billing.rollup(summary)) AS weighted,
         (nps_billing.nps_ci(nps_billing.rollup(summary))).low AS ci_low
  FROM public.nps_daily GROUP BY 1;
CREATE VIEW public.my_context AS
  SELECT response_id, score, category, source, kind, amount, currency, days_since_payment,
         failed_payment_30d, attributes->>'plan' AS plan
  FROM nps_billing.response_context;
CREATE FUNCTION public.score_label(s integer) RETURNS text LANGUAGE sql IMMUTABLE
BEGIN ATOMIC SELECT nps_billing.category(s)::text; END;
-- an analyst role's grants on the extension's objects
GRANT USAGE ON SCHEMA nps_billing TO nps_upgrade_analyst;
GRANT SELECT ON nps_billing.response_context TO nps_upgrade_analyst;
GRANT EXECUTE ON FUNCTION nps_billing.nps_trend(interval, timestamptz, timestamptz) TO nps_upgrade_analyst;
GRANT SELECT ON public.my_context TO nps_upgrade_analyst;
