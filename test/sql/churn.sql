-- nps_churn and nps_retention on hand-built data whose answers are known by hand.
-- Expected values: counts and rates by hand; Wilson bounds, the two-proportion p-values and the
-- Kaplan-Meier estimates, Greenwood errors and log-log bands computed independently in Python
-- (math.erfc, z = 1.959963984540054 by bisection) from the textbook formulas:
--   Wilson: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
--   pooled z-test: z = (p1 - p2) / sqrt(p(1-p)(1/n1 + 1/n2)), p-value = erfc(|z| / sqrt 2)
--   KM: S = prod (1 - d/n); Greenwood se = S sqrt(sum d/(n(n-d))); log-log band S^exp(+-z se/|ln S|)
-- Rolled back at the end.
SET search_path = nps_billing, public;
SET TimeZone = 'UTC';
SET extra_float_digits = 0;
SET IntervalStyle = 'postgres';
BEGIN;
DELETE FROM response; DELETE FROM survey; DELETE FROM payment_event; DELETE FROM payment_source;
INSERT INTO payment_source (id, name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES (1, 'hand', 'pg_class', 'c', 'k', 's');
CREATE TEMP TABLE pay (customer text, at timestamptz, kind text, amount numeric, currency text);
CREATE TEMP TABLE ans (customer text, at timestamptz, score int);

-- ---------------------------------------------------------------- churn (answers on 2026-01-01)
-- as_of 2026-06-01, after 45 days: a customer churned when no succeeded payment falls in
-- (2026-01-01, 2026-02-15 00:00].
INSERT INTO ans VALUES
  ('p1', '2026-01-01', 10), ('p2', '2026-01-01', 9), ('p3', '2026-01-01', 10), ('p4', '2026-01-01', 9),
  ('q1', '2026-01-01', 8), ('q2', '2026-01-01', 7),
  ('d1', '2026-01-01', 0), ('d2', '2026-01-01', 3), ('d3', '2026-01-01', 6), ('d4', '2026-01-01', 5),
  ('d5', '2026-01-01', 2), ('d5', '2026-03-01', 10),  -- enters with its first answer: a detractor
  ('y1', '2026-05-01', 0);                            -- window open on 2026-06-01: not judged
INSERT INTO pay VALUES
  ('p1', '2026-01-15', 'succeeded', 10, 'usd'), ('p1', '2026-02-15', 'succeeded', 10, 'usd'),
  ('p2', '2026-01-20', 'succeeded', 10, 'usd'),
  ('p3', '2025-12-20', 'succeeded', 10, 'usd'), ('p3', '2026-01-10', 'failed', 10, 'usd'),   -- a failed payment does not retain
  ('p4', '2026-02-20', 'succeeded', 10, 'usd'),                                              -- 50 days later: too late
  ('q1', '2026-01-31', 'succeeded', 20, 'usd'),
  ('q2', '2025-12-01', 'succeeded', 20, 'usd'), ('q2', '2025-11-01', 'succeeded', 20, 'usd'), -- 61 days before: not counted
  ('d2', '2025-12-15', 'succeeded', 30, 'eur'),
  ('d3', '2026-02-15', 'succeeded', 30, 'eur'),                                              -- exactly at +45 days: retained
  ('d4', '2026-01-01', 'succeeded', 50, 'usd'),                                              -- at the answer: before, not after
  ('y1', '2026-04-20', 'succeeded', 99, 'usd');
-- anonymous (forgotten / imported) answers have no customer: never in the cohort
INSERT INTO response (customer_id, score, responded_at) VALUES (NULL, 0, '2026-01-01');

-- ---------------------------------------------------------------- retention (answers in 2025)
-- as_of 2025-12-01, after 45 days, buckets of 30 days up to 120 days. Payments are days after
-- the answer; a customer churned at the last payment before a gap of more than 45 days.
--   detractors: a  no payment             -> churned at day 0
--               b  30, 60                 -> churned at 60
--               c  30                     -> churned at 30
--               e  30, 60, ..., 150       -> followed to the horizon: censored at 120
--               f  30, 60, 90             -> churned at 90
--               g  30, 100, 130           -> gap 30..100 > 45: churned at 30
--               h  answered 100 days before as_of, 30, 60, 90 -> window open: censored at 90
--               i  answered 20 days before as_of, no payment   -> censored at 0: not judged
--               j  answered 40 days before as_of, 30           -> censored at 30
--   promoters:  pa none -> 0; pb 30 -> 30; pc 30, 60 -> 60; pd 30..150 -> censored at 120
INSERT INTO ans VALUES
  ('a', '2025-01-01', 0), ('b', '2025-01-01', 1), ('c', '2025-01-01', 2), ('e', '2025-01-01', 3),
  ('f', '2025-01-01', 4), ('g', '2025-01-01', 5),
  ('h', timestamptz '2025-12-01' - interval '100 days', 6),
  ('i', timestamptz '2025-12-01' - interval '20 days', 6),
  ('j', timestamptz '2025-12-01' - interval '40 days', 6),
  ('pa', '2025-01-01', 10), ('pb', '2025-01-01', 10), ('pc', '2025-01-01', 9), ('pd', '2025-01-01', 9);
INSERT INTO pay
SELECT x.c, a.at + x.d * interval '1 day', 'succeeded', 10, 'usd'
FROM (VALUES ('b', 30), ('b', 60), ('c', 30), ('e', 30), ('e', 60), ('e', 90), ('e', 120), ('e', 150),
             ('f', 30), ('f', 60), ('f', 90), ('g', 30), ('g', 100), ('g', 130),
             ('h', 30), ('h', 60), ('h', 90), ('j', 30),
             ('pb', 30), ('pc', 30), ('pc', 60), ('pd', 30), ('pd', 60), ('pd', 90), ('pd', 120), ('pd', 150)) x(c, d)
JOIN ans a ON a.customer = x.c;

INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at)
SELECT 1, 'k' || row_number() OVER (ORDER BY customer, at, kind), kind, customer, amount, currency, at FROM pay;
INSERT INTO response (customer_id, score, responded_at) SELECT customer, score, at FROM ans ORDER BY at, customer;

-- Churn: promoters 4 customers, 2 churned (p3: only a failed payment; p4: paid 50 days later);
-- passives 2, 1 churned (q2); detractors 5 (d1..d5), 4 churned (d3 paid at exactly +45 days).
-- y1 is not judged. Wilson 95%: 2/4 (0.150039, 0.849961); 1/2 (0.094531, 0.905469);
-- 4/5 (0.375535, 0.963776). Lift vs promoters 0.5/0.5 = 1, 0.8/0.5 = 1.6; pooled z-test
-- detractors vs promoters z = 0.948683, p = 0.342782; passives vs promoters p = 1.
-- Revenue of the churned in the 45 days up to their answer: p3 10 usd; q2 20 usd (not the
-- payment 61 days before); d2 30 eur, d4 50 usd (a payment at the answer's time is before it).
SELECT category, customers, churned, round(churn_rate::numeric, 6) AS churn_rate,
       round(ci_low::numeric, 6) AS ci_low, round(ci_high::numeric, 6) AS ci_high,
       round(lift::numeric, 6) AS lift, round(p_value::numeric, 6) AS p_value, churned_revenue
FROM nps_churn('45 days', '2026-01-01', '2027-01-01', as_of => '2026-06-01') ORDER BY category;
-- a later as_of does not change judged answers; y1 (answered 2026-05-01, paid nothing after)
-- joins the detractors as churned once its window has closed
SELECT category, customers, churned FROM nps_churn('45 days', '2026-01-01', '2027-01-01', as_of => '2026-06-16') ORDER BY category;
-- a shorter window: p1, p2, q1 paid within 30 days; d3 (45 days) now churned too, and y1
-- (answered 2026-05-01) is judged: 31 days have passed
SELECT category, customers, churned FROM nps_churn('30 days', '2026-01-01', '2027-01-01', as_of => '2026-06-01') ORDER BY category;
-- the 2025 cohort as nps_churn sees it: 7 detractors judged (i and j too young), only a
-- churned within 45 days; 4 promoters, pa churned. Wilson 1/7: (0.025680, 0.513128).
SELECT category, customers, churned, round(ci_low::numeric, 6) AS ci_low, round(ci_high::numeric, 6) AS ci_high
FROM nps_churn('45 days', '2025-01-01', '2026-01-01', as_of => '2025-12-01') ORDER BY category;
-- an empty range: every category with 0 customers and NULL statistics
SELECT * FROM nps_churn('45 days', '2024-01-01', '2024-02-01', as_of => '2026-06-01');

-- Retention, detractors by hand (censored at t: not at risk of the events at t):
--   t=0   n = 5 events >= 0 + 3 censored > 0 (e, h, j) = 8, d = 1: S = 7/8 = 0.875
--   t=30  n = 4 + 2 = 6, d = 2 (c, g):                   S = 0.875 * 4/6 = 0.583333
--   t=60  n = 2 + 2 = 4, d = 1 (b):                      S = 0.583333 * 3/4 = 0.4375
--   t=90  n = 1 + 1 = 2, d = 1 (f):                      S = 0.4375 / 2 = 0.21875
-- Greenwood se 0.116927, 0.185561, 0.187934, 0.180985; log-log 95% bands (0.387000, 0.981393),
-- (0.180189, 0.844069), (0.101370, 0.741886), (0.012065, 0.592799).
-- Promoters (no censoring before the horizon): S = the share still paying, 3/4, 2/4, 1/4, and
-- Greenwood's se the binomial sqrt(S(1-S)/4) at t=0: 0.216506.
-- at_risk per bucket: at its start; censored in (start, end]; the last bucket ends at horizon.
SELECT category, bucket_start, bucket_end, at_risk, churned, censored, round(survival::numeric, 6) AS survival,
       round(stderr::numeric, 6) AS stderr, round(ci_low::numeric, 6) AS ci_low, round(ci_high::numeric, 6) AS ci_high
FROM nps_retention('30 days', '120 days', '2025-01-01', '2026-01-01', '45 days', as_of => '2025-12-01')
ORDER BY category, bucket_start;
-- bucket 0 of the retention curve vs nps_churn: j (window open, but it paid at day 30) is known
-- to have survived day 0, so KM uses it: 1 - 1/8 instead of 1 - 1/7
-- a horizon that is not a whole number of buckets: the last bucket is cut at the horizon
SELECT category, bucket_start, bucket_end, at_risk, churned, censored, round(survival::numeric, 6) AS survival
FROM nps_retention('50 days', '120 days', '2025-01-01', '2026-01-01', as_of => '2025-12-01')
WHERE category = 'detractor' ORDER BY bucket_start;

-- the statistics helpers
SELECT round(low::numeric, 6) AS low, round(high::numeric, 6) AS high FROM wilson_ci(4, 5);
SELECT round(low::numeric, 6) AS low, round(high::numeric, 6) AS high FROM wilson_ci(0, 10);
SELECT * FROM wilson_ci(0, 0);
SELECT round(difference::numeric, 6) AS difference, round(z::numeric, 6) AS z, round(p_value::numeric, 6) AS p_value
FROM proportion_compare(4, 5, 2, 4);
SELECT round(normal_cdf(1.959963984540054)::numeric, 9) AS cdf, round(normal_quantile(0.975)::numeric, 9) AS q975,
       round(normal_quantile(0.025)::numeric, 9) AS q025, normal_quantile(0.5) AS q50;

ROLLBACK;

-- errors: SQLSTATE and a message naming the value
\set VERBOSITY terse
SELECT * FROM nps_churn(NULL);
SELECT * FROM nps_churn('-1 day');
SELECT * FROM nps_churn('1 mon -40 days');
SELECT * FROM nps_churn('45 days', '2026-02-01', '2026-01-01');
SELECT * FROM nps_churn('45 days', as_of => 'infinity');
SELECT * FROM nps_retention('0 days', '120 days');
SELECT * FROM nps_retention('1 second', '1 year');
SELECT * FROM nps_retention('30 days', NULL);
SELECT * FROM wilson_ci(3, 2);
SELECT * FROM wilson_ci(1, 2, 1.5);
SELECT normal_quantile(1);
SELECT * FROM proportion_compare(-1, 2, 1, 2);
