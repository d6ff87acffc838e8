-- Analysis functions on hand-built data: every number is checked against a plain SQL formula
-- computed here from the rows themselves, and printed so the expected file shows it.
-- Runs in one transaction that is rolled back: the shared tables are left as found.
SET search_path = nps_billing, public;
SET extra_float_digits = 0;
SET TimeZone = 'UTC';
BEGIN;
DELETE FROM response; DELETE FROM survey; DELETE FROM payment_event; DELETE FROM payment_source;

-- Reference formulas, written out independently of the C++ code.
CREATE TEMP TABLE ref_z AS SELECT 1.959963984540054::float8 AS z;   -- 95% two-sided
CREATE FUNCTION pg_temp.ref_nps(p bigint, d bigint, n bigint) RETURNS float8
  LANGUAGE sql AS $$ SELECT 100.0 * (p - d) / n $$;
-- adjusted Wald: 3/4 added to each of the three categories, n + 3 in all
CREATE FUNCTION pg_temp.ref_ci(p bigint, d bigint, n bigint, OUT low float8, OUT high float8)
  LANGUAGE sql AS $$
  SELECT greatest(-100, c - 1.959963984540054 * se), least(100, c + 1.959963984540054 * se)
  FROM (SELECT 100 * (pp - dd) AS c, 100 * sqrt((pp + dd - (pp - dd) ^ 2) / (n + 3)) AS se
        FROM (SELECT (p + 0.75) / (n + 3.0) AS pp, (d + 0.75) / (n + 3.0) AS dd) a) b $$;
CREATE FUNCTION pg_temp.close(a float8, b float8) RETURNS boolean
  LANGUAGE sql AS $$ SELECT abs(a - b) < 1e-9 $$;
-- response_context carries no customer id (analysts may read every view); the test joins it back
CREATE TEMP VIEW ctx AS
  SELECT r.customer_id, c.* FROM response_context c JOIN response r ON r.id = c.response_id;

INSERT INTO payment_source (id, name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES (1, 'stripe', 'pg_class', 'c', 'k', 's'), (2, 'invoices', 'pg_class', 'c', 'k', 's');

-- 40 card customers (c01..c40): paid 2026-03-01 + i minutes; answer i % 5 days + 1 h later.
-- scores: 24 promoters (10), 8 passives (8), 8 detractors (3) -> NPS 40
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT 1, 'card' || i, 'succeeded', 'c' || lpad(i::text, 2, '0'), 10, 'usd',
       timestamptz '2026-03-01' + i * interval '1 minute', '{"method":"card","plan":"pro"}'
FROM generate_series(1, 40) i;
INSERT INTO response (customer_id, score, comment, responded_at)
SELECT 'c' || lpad(i::text, 2, '0'), CASE WHEN i <= 24 THEN 10 WHEN i <= 32 THEN 8 ELSE 3 END,
       CASE WHEN i > 32 THEN 'unexpected charge' END,
       timestamptz '2026-03-01' + i * interval '1 minute' + (i % 5) * interval '1 day' + interval '1 hour'
FROM generate_series(1, 40) i;

-- 35 invoice customers (v01..v35) on source 2, paid 2026-03-02; answer j % 7 days + 2 h later.
-- scores: 7 promoters (9), 14 passives (7), 14 detractors (0..6) -> NPS -20
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT 2, 'inv' || j, 'succeeded', 'v' || lpad(j::text, 2, '0'), 100, CASE WHEN j <= 20 THEN 'eur' ELSE 'usd' END,
       timestamptz '2026-03-02', '{"method":"invoice","plan":"basic"}'
FROM generate_series(1, 35) j;
INSERT INTO response (customer_id, score, responded_at)
SELECT 'v' || lpad(j::text, 2, '0'), CASE WHEN j <= 7 THEN 9 WHEN j <= 21 THEN 7 ELSE j % 7 END,
       timestamptz '2026-03-02' + (j % 7) * interval '1 day' + interval '2 hours'
FROM generate_series(1, 35) j;
-- failed payments of invoice customers, relative to their answer time t:
--   v01..v10: 10 days before t (inside 30 days); v11: exactly 30 days before t (outside: the
--   window is (t - 30 days, t]); v12: 30 days minus 1 second before t (inside); v13: 40 days before.
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT 2, 'fail' || j, 'failed', 'v' || lpad(j::text, 2, '0'), 100, 'eur',
       timestamptz '2026-03-02' + (j % 7) * interval '1 day' + interval '2 hours'
         - CASE WHEN j <= 10 THEN interval '10 days' WHEN j = 11 THEN interval '30 days'
                WHEN j = 12 THEN interval '30 days' - interval '1 second' ELSE interval '40 days' END,
       '{"method":"invoice","plan":"basic"}'
FROM generate_series(1, 13) j;
-- a failed payment AFTER v14's answer does not count
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
VALUES (2, 'late', 'failed', 'v14', 100, 'eur', '2026-03-20', '{"method":"invoice"}');
-- these events were written after the answers: the answers' stored contexts catch up
SELECT refresh_response_context() AS answers_refreshed;

-- 5 SEPA customers (below min_responses = 30), all promoters
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT 1, 'sepa' || k, 'succeeded', 's' || k, 20, 'eur', timestamptz '2026-03-03', '{"method":"sepa"}'
FROM generate_series(1, 5) k;
INSERT INTO response (customer_id, score, responded_at)
SELECT 's' || k, 9, timestamptz '2026-03-03' + interval '12 hours' FROM generate_series(1, 5) k;

-- an answer with no payment at all, and an answer of a forgotten customer (NULL id)
INSERT INTO response (customer_id, score, responded_at) VALUES ('nobody', 5, '2026-03-04'), (NULL, 10, '2026-03-04');
-- an answer BEFORE the customer's first payment has no payment context either
INSERT INTO response (customer_id, score, responded_at) VALUES ('c01', 0, '2026-02-20');

-- ---------------------------------------------------------------- response_context
-- last event, days since payment (whole 24 h periods), failed_payment_30d
SELECT customer_id, score, source, kind, amount, currency, payment_at, attributes ->> 'method' AS method,
       days_since_payment, failed_payment_30d
FROM ctx
WHERE customer_id IN ('c01', 'c02', 'v01', 'v11', 'v12', 'v13', 'v14', 's1', 'nobody') OR customer_id IS NULL
ORDER BY customer_id NULLS LAST, responded_at;
-- one row per response, never more
SELECT (SELECT count(*) FROM response_context) = (SELECT count(*) FROM response) AS one_row_per_response;
-- days_since_payment equals the elapsed-days formula for every row with a payment
SELECT bool_and(days_since_payment = floor(extract(epoch FROM responded_at - payment_at) / 86400))
  AS days_formula_holds
FROM ctx WHERE payment_at IS NOT NULL;
-- the latest of two events wins; a tie on occurred_at is broken by the larger event id
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
VALUES (1, 'tie-a', 'succeeded', 'tie', 1, 'usd', '2026-03-05', '{"n":1}'),
       (1, 'tie-b', 'failed', 'tie', 2, 'usd', '2026-03-05', '{"n":2}'),
       (1, 'tie-old', 'succeeded', 'tie', 3, 'usd', '2026-03-01', '{"n":0}');
INSERT INTO response (customer_id, score, responded_at) VALUES ('tie', 8, '2026-03-06');
SELECT kind, amount, attributes, failed_payment_30d FROM ctx WHERE customer_id = 'tie';
DELETE FROM response WHERE customer_id = 'tie';
DELETE FROM payment_event WHERE customer_id = 'tie';

-- ---------------------------------------------------------------- nps_by
SELECT value, responses, round(nps::numeric, 6) AS nps, round(ci_low::numeric, 6) AS ci_low,
       round(ci_high::numeric, 6) AS ci_high, round(difference::numeric, 6) AS difference,
       round(p_value::numeric, 8) AS p_value
FROM nps_by('method');
-- every segment checked against the formulas on its own rows; "the rest" is every other answer
WITH rows AS (SELECT attributes ->> 'method' AS value, score FROM ctx),
seg AS (
  SELECT value, count(*) AS n, count(*) FILTER (WHERE score >= 9) AS p, count(*) FILTER (WHERE score <= 6) AS d
  FROM rows GROUP BY value),
f AS (SELECT * FROM nps_by('method'))
SELECT s.value, s.n = f.responses AS n_ok,
       CASE WHEN s.n >= 30 THEN pg_temp.close(f.nps, pg_temp.ref_nps(s.p, s.d, s.n))
            ELSE f.nps IS NULL AND f.ci_low IS NULL AND f.ci_high IS NULL AND f.p_value IS NULL END AS nps_ok,
       CASE WHEN s.n >= 30 THEN pg_temp.close(f.ci_low, (pg_temp.ref_ci(s.p, s.d, s.n)).low)
                            AND pg_temp.close(f.ci_high, (pg_temp.ref_ci(s.p, s.d, s.n)).high) END AS ci_ok,
       CASE WHEN s.n >= 30 THEN
         pg_temp.close(f.difference, pg_temp.ref_nps(s.p, s.d, s.n)
           - (SELECT pg_temp.ref_nps(count(*) FILTER (WHERE score >= 9), count(*) FILTER (WHERE score <= 6), count(*))
              FROM rows o WHERE o.value IS DISTINCT FROM s.value))
         AND pg_temp.close(f.p_value, (SELECT (nps_compare(
               (SELECT nps_agg(score) FROM rows i WHERE i.value IS NOT DISTINCT FROM s.value),
               (SELECT nps_agg(score) FROM rows o WHERE o.value IS DISTINCT FROM s.value))).p_value)) END AS compare_ok
FROM seg s JOIN f ON f.value IS NOT DISTINCT FROM s.value
ORDER BY s.n DESC;
-- min_responses 1 shows the small segments; 36 hides invoice (35) as well; rest below min -> no test
SELECT value, responses, round(nps::numeric, 6) AS nps, round(difference::numeric, 6) AS difference
FROM nps_by('method', min_responses => 1);
SELECT value, responses, nps IS NULL AS nps_null, difference IS NULL AS diff_null
FROM nps_by('method', min_responses => 36);
-- a time range: only card answers of 2026-03-01 (i % 5 = 0 answers on the same day)
SELECT value, responses, nps, difference, p_value FROM nps_by('plan', '2026-03-01', '2026-03-02', 1);
-- an attribute nobody has: one NULL segment
SELECT value, responses FROM nps_by('coupon', min_responses => 1);
-- the attribute is a value, never SQL
SELECT count(*) AS rows FROM nps_by($$method'); DROP TABLE response; --$$);
-- empty range: no rows
SELECT count(*) AS rows FROM nps_by('method', '2030-01-01', '2030-02-01');

-- ---------------------------------------------------------------- nps_trend
-- daily buckets from 2026-02-27 to 2026-03-12 (exclusive): empty days present
SELECT bucket_start, responses, round(nps::numeric, 6) AS nps, round(ci_low::numeric, 6) AS ci_low,
       round(ci_high::numeric, 6) AS ci_high
FROM nps_trend('1 day', '2026-02-27', '2026-03-12');
SELECT bool_and(t.responses = r.n
                AND (r.n = 0 AND t.nps IS NULL AND t.ci_low IS NULL
                     OR pg_temp.close(t.nps, pg_temp.ref_nps(r.p, r.d, r.n))
                        AND pg_temp.close(t.ci_low, (pg_temp.ref_ci(r.p, r.d, r.n)).low)
                        AND pg_temp.close(t.ci_high, (pg_temp.ref_ci(r.p, r.d, r.n)).high))) AS daily_matches_formula,
       count(*) AS buckets
FROM nps_trend('1 day', '2026-02-27', '2026-03-12') t
CROSS JOIN LATERAL (
  SELECT count(*) AS n, count(*) FILTER (WHERE score >= 9) AS p, count(*) FILTER (WHERE score <= 6) AS d
  FROM response WHERE responded_at >= t.bucket_start AND responded_at < t.bucket_start + interval '1 day') r;
-- 4-day buckets: the last one is cut at until
SELECT bucket_start, responses FROM nps_trend('4 days', '2026-03-01', '2026-03-10');
SELECT (SELECT count(*) FROM response WHERE responded_at >= '2026-03-09' AND responded_at < '2026-03-10') AS last_bucket_by_hand;
-- month buckets (calendar months in the session time zone)
SELECT bucket_start, responses FROM nps_trend('1 month', '2026-01-01', '2026-05-01');
-- since = until: no buckets
SELECT count(*) AS rows FROM nps_trend('1 day', '2026-03-01', '2026-03-01');

-- ---------------------------------------------------------------- nps_by_days_since_payment
SELECT day, responses, round(nps::numeric, 6) AS nps, round(ci_low::numeric, 6) AS ci_low,
       round(ci_high::numeric, 6) AS ci_high
FROM nps_by_days_since_payment(8);
SELECT bool_and(f.responses = r.n
                AND (r.n = 0 AND f.nps IS NULL
                     OR pg_temp.close(f.nps, pg_temp.ref_nps(r.p, r.d, r.n))
                        AND pg_temp.close(f.ci_high, (pg_temp.ref_ci(r.p, r.d, r.n)).high))) AS days_match_formula
FROM nps_by_days_since_payment(8) f
CROSS JOIN LATERAL (
  SELECT count(*) AS n, count(*) FILTER (WHERE score >= 9) AS p, count(*) FILTER (WHERE score <= 6) AS d
  FROM ctx c WHERE c.days_since_payment = f.day) r;
SELECT day, responses FROM nps_by_days_since_payment(0);

-- ---------------------------------------------------------------- nps_failed_payments
SELECT failed_payment, responses, round(nps::numeric, 6) AS nps, round(ci_low::numeric, 6) AS ci_low,
       round(ci_high::numeric, 6) AS ci_high, round(difference::numeric, 6) AS difference,
       round(p_value::numeric, 8) AS p_value
FROM nps_failed_payments();
-- by hand: v01..v10 and v12 have a failed payment inside the 30 days (11 answers: scores 9 x7, 7 x3, 7)
SELECT array_agg(customer_id ORDER BY customer_id) AS failed_30d, count(*) AS n,
       round(pg_temp.ref_nps(count(*) FILTER (WHERE score >= 9), count(*) FILTER (WHERE score <= 6), count(*))::numeric, 6) AS nps
FROM ctx WHERE failed_payment_30d;
SELECT pg_temp.close(f.p_value, (nps_compare(
         (SELECT nps_agg(score) FROM ctx WHERE failed_payment_30d AND event_id IS NOT NULL),
         (SELECT nps_agg(score) FROM ctx WHERE NOT failed_payment_30d AND event_id IS NOT NULL))).p_value)
       AS p_value_ok
FROM nps_failed_payments() f WHERE f.failed_payment;
-- a 45-day window also catches v11 and v13
SELECT failed_payment, responses FROM nps_failed_payments('45 days');
-- nothing failed within a minute: the "with" row is still there, empty
SELECT failed_payment, responses, nps, difference FROM nps_failed_payments('1 minute');

-- ---------------------------------------------------------------- revenue_at_risk
-- latest answers: detractors c33..c40 (usd 10 each) and v22..v35 (usd 100 each): 22, 1480;
-- passives v08..v20 (eur 100 each): 13, 1300; passives c25..c32 (usd 10) and v21 (usd 100): 9, 180
SELECT category, currency, customers, payments, amount FROM revenue_at_risk('2026-01-01');
-- by hand from the tables
SELECT l.category, e.currency, count(DISTINCT l.customer_id) AS customers, count(*) AS payments, sum(e.amount) AS amount
FROM (SELECT DISTINCT ON (customer_id) customer_id, category FROM response
      WHERE customer_id IS NOT NULL ORDER BY customer_id, responded_at DESC) l
JOIN payment_event e ON e.customer_id = l.customer_id AND e.kind = 'succeeded' AND e.occurred_at >= '2026-01-01'
WHERE l.category IN ('detractor', 'passive')
GROUP BY 1, 2 ORDER BY 2, 1;
-- a later answer changes the category: c33 becomes a promoter
INSERT INTO response (customer_id, score, responded_at) VALUES ('c33', 10, '2026-03-10');
SELECT category, currency, customers, amount FROM revenue_at_risk('2026-01-01') WHERE currency = 'usd';
-- since after every payment: nothing at risk
SELECT count(*) AS rows FROM revenue_at_risk('2026-04-01');

-- ---------------------------------------------------------------- survey_funnel
-- 10 surveys created 2026-03-01..: 6 sent (4 answered, 1 after 1 h, 2 h, 3 h and 10 h),
-- 2 expired, 1 failed, 1 pending; one old survey (February) outside the range
INSERT INTO survey (id, token, source_id, customer_id, channel, status, send_after, expires_at, sent_at, created_at)
SELECT g, 'tok' || g, 1, 'c' || lpad(g::text, 2, '0'), 'email',
       CASE WHEN g <= 4 THEN 'responded' WHEN g <= 6 THEN 'sent' WHEN g <= 8 THEN 'expired'
            WHEN g = 9 THEN 'failed' WHEN g = 10 THEN 'pending' ELSE 'responded' END,
       timestamptz '2026-03-01', timestamptz '2026-03-15',
       CASE WHEN g <= 8 THEN timestamptz '2026-03-01 10:00' WHEN g = 11 THEN timestamptz '2026-02-01 10:00' END,
       CASE WHEN g = 11 THEN timestamptz '2026-02-01' ELSE timestamptz '2026-03-01' + g * interval '1 minute' END
FROM generate_series(1, 11) g;
INSERT INTO response (survey_id, customer_id, score, responded_at)
VALUES (1, 'c01', 9, '2026-03-01 11:00'), (2, 'c02', 9, '2026-03-01 12:00'),
       (3, 'c03', 9, '2026-03-01 13:00'), (4, 'c04', 9, '2026-03-01 20:00'),
       (11, 'c11', 9, '2026-02-01 20:00');
-- expected: created 10, sent 8 (6 sent + 2 sent-then-expired), responded 4, expired 2, failed 1,
-- rate 4/8 = 0.5, median of (1 h, 2 h, 3 h, 10 h) = 2 h 30 min
SELECT * FROM survey_funnel('2026-03-01');
-- with February's survey (answered after 10 h): median of (1, 2, 3, 10, 10 h) = 3 h
SELECT created, responded, median_time_to_answer FROM survey_funnel('2026-01-01');
SELECT * FROM survey_funnel('2027-01-01');

-- npsagg_from_histogram is the inverse of score_histogram
SELECT npsagg_from_histogram(score_histogram(a)) = a AS inverse
FROM (SELECT nps_agg(score) AS a FROM response) s;
ROLLBACK;

-- ---------------------------------------------------------------- argument errors (their SQLSTATEs are checked in test/t/analysis_api.sql)
\set VERBOSITY terse
SELECT * FROM nps_trend('0 days', '2026-01-01', '2026-02-01');
SELECT * FROM nps_trend('-1 day', '2026-01-01', '2026-02-01');
SELECT * FROM nps_trend('1 day', '2026-02-01', '2026-01-01');
SELECT * FROM nps_trend('1 day', '-infinity', '2026-01-01');
SELECT * FROM nps_trend('1 second', '2026-01-01', '2026-03-01');
SELECT * FROM nps_trend(NULL, '2026-01-01', '2026-03-01');
SELECT * FROM nps_by(NULL);
SELECT * FROM nps_by('method', min_responses => 0);
SELECT * FROM nps_by_days_since_payment(-1);
SELECT * FROM nps_by_days_since_payment(NULL);
SELECT * FROM nps_failed_payments('0 days');
SELECT * FROM nps_failed_payments(NULL);
SELECT * FROM revenue_at_risk(NULL);
SELECT * FROM survey_funnel(NULL);
SELECT npsagg_from_histogram('{1,2,3}');
SELECT npsagg_from_histogram('{1,2,3,4,5,6,7,8,9,10,NULL}');
SELECT npsagg_from_histogram('{1,0,0,0,0,0,0,0,0,0,-1}');
SELECT npsagg_from_histogram('{{1,0,0,0,0,0,0,0,0,0,1}}');
