-- nps_alerts: segments whose NPS fell between two consecutive windows. Hand-built answers,
-- expected numbers from plain SQL formulas. Rolled back at the end.
SET search_path = nps_billing, public;
SET extra_float_digits = 0;
SET TimeZone = 'UTC';
BEGIN;
DELETE FROM response; DELETE FROM survey; DELETE FROM payment_event; DELETE FROM payment_source;
INSERT INTO payment_source (id, name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES (1, 'stripe', 'pg_class', 'c', 'k', 's'), (2, 'invoices', 'pg_class', 'c', 'k', 's');

-- as_of 2026-06-15, window 7 days: previous [06-01, 06-08), current [06-08, 06-15)
-- groups: (tag, source, plan, method, window, promoters, passives, detractors)
CREATE TEMP TABLE grp (tag text, src int, plan text, method text, win text, p int, pa int, d int);
INSERT INTO grp VALUES
  ('pro',   1, 'pro',   'card',    'previous', 30, 5, 5),    -- NPS 62.5
  ('pro',   1, 'pro',   'card',    'current',  15, 10, 15),  -- NPS 0: a drop of 62.5
  ('basic', 2, 'basic', 'invoice', 'previous', 10, 20, 10),  -- NPS 0
  ('basic', 2, 'basic', 'invoice', 'current',  12, 18, 10),  -- NPS 5: better, no alert
  ('team',  1, 'team',  'card',    'previous', 10, 0, 0),    -- 10 answers only: NPS 100
  ('team',  1, 'team',  'card',    'current',  0, 0, 10),    -- NPS -100, but below 30 answers
  ('old',   1, 'pro',   'card',    'before',   0, 0, 50),    -- outside both windows
  ('new',   1, 'pro',   'card',    'after',    0, 0, 50);    -- at or after as_of: ignored
CREATE TEMP TABLE ans AS
SELECT row_number() OVER () AS n, g.*, s.score
FROM grp g,
LATERAL (SELECT 10 AS score FROM generate_series(1, g.p)
         UNION ALL SELECT 7 FROM generate_series(1, g.pa)
         UNION ALL SELECT 2 FROM generate_series(1, g.d)) s;
-- one customer per answer; paid 2026-05-20; answered spread over its window
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT src, 'k' || n, 'succeeded', 'a' || n, 10, 'usd', '2026-05-20', jsonb_build_object('plan', plan, 'method', method)
FROM ans;
INSERT INTO response (customer_id, score, responded_at)
SELECT 'a' || n, score,
       CASE win WHEN 'previous' THEN timestamptz '2026-06-01' WHEN 'current' THEN timestamptz '2026-06-08'
                WHEN 'before' THEN timestamptz '2026-05-25' ELSE timestamptz '2026-06-15' END
       + (n % 7) * interval '1 day' + (n % 24) * interval '1 hour'
FROM ans;
-- window edges: at as_of - 2 windows -> previous; at as_of - window -> current; at as_of -> neither
UPDATE response SET responded_at = '2026-06-01' WHERE customer_id = (SELECT 'a' || min(n) FROM ans WHERE tag = 'pro' AND win = 'previous');
UPDATE response SET responded_at = '2026-06-08' WHERE customer_id = (SELECT 'a' || min(n) FROM ans WHERE tag = 'pro' AND win = 'current');
UPDATE response SET responded_at = '2026-06-15' WHERE customer_id = (SELECT 'a' || min(n) FROM ans WHERE tag = 'new');

SELECT dimension, value, previous_responses, round(previous_nps::numeric, 6) AS previous_nps,
       current_responses, round(current_nps::numeric, 6) AS current_nps,
       round(nps_drop::numeric, 6) AS nps_drop, round(p_value::numeric, 10) AS p_value
FROM nps_alerts('7 days', 10, as_of => '2026-06-15');

-- the same numbers from the formula on the raw groups
WITH w AS (
  SELECT g.*, CASE WHEN g.win IN ('previous', 'current') THEN g.win END AS w2 FROM ans g),
dims AS (
  SELECT 'overall' AS dimension, NULL::text AS value, w2, score FROM w
  UNION ALL SELECT 'source', CASE src WHEN 1 THEN 'stripe' ELSE 'invoices' END, w2, score FROM w
  UNION ALL SELECT 'plan', plan, w2, score FROM w
  UNION ALL SELECT 'method', method, w2, score FROM w),
f AS (
  SELECT dimension, value,
         100.0 * (count(*) FILTER (WHERE w2 = 'previous' AND score >= 9) - count(*) FILTER (WHERE w2 = 'previous' AND score <= 6))
           / nullif(count(*) FILTER (WHERE w2 = 'previous'), 0) AS prev,
         100.0 * (count(*) FILTER (WHERE w2 = 'current' AND score >= 9) - count(*) FILTER (WHERE w2 = 'current' AND score <= 6))
           / nullif(count(*) FILTER (WHERE w2 = 'current'), 0) AS cur,
         count(*) FILTER (WHERE w2 = 'previous') AS n_prev, count(*) FILTER (WHERE w2 = 'current') AS n_cur,
         nps_agg(score) FILTER (WHERE w2 = 'previous') AS a_prev, nps_agg(score) FILTER (WHERE w2 = 'current') AS a_cur
  FROM dims GROUP BY 1, 2)
SELECT f.dimension, f.value, round((f.prev - f.cur)::numeric, 6) AS drop_by_formula,
       a.nps_drop IS NOT NULL AS alerted,
       abs(a.nps_drop - (f.prev - f.cur)) < 1e-9 AND abs(a.p_value - (nps_compare(f.a_cur, f.a_prev)).p_value) < 1e-12 AS same
FROM f LEFT JOIN nps_alerts('7 days', 10, as_of => '2026-06-15') a
  ON a.dimension = f.dimension AND a.value IS NOT DISTINCT FROM f.value
WHERE f.n_prev >= 30 AND f.n_cur >= 30
ORDER BY 1, 2;

-- lower min_responses: team (10 answers each side) shows; higher threshold: only large drops
SELECT dimension, value, previous_responses, current_responses, round(nps_drop::numeric, 6) AS nps_drop
FROM nps_alerts('7 days', 10, min_responses => 10, as_of => '2026-06-15');
SELECT dimension, value FROM nps_alerts('7 days', 40, as_of => '2026-06-15');
-- only the attributes asked for
SELECT dimension, value FROM nps_alerts('7 days', 10, attributes => '{method}', as_of => '2026-06-15');
SELECT dimension, value FROM nps_alerts('7 days', 10, attributes => '{}', as_of => '2026-06-15');
-- a week later the 50 detractors answered from 06-15 on form the current window
SELECT dimension, value, previous_responses, current_responses, round(nps_drop::numeric, 6) AS nps_drop
FROM nps_alerts('7 days', 0, as_of => '2026-06-22');
-- no answers in either window: nothing
SELECT count(*) AS rows FROM nps_alerts('7 days', 0, as_of => '2030-01-01');
ROLLBACK;

\set VERBOSITY terse
SELECT * FROM nps_alerts('0 days', 10);
SELECT * FROM nps_alerts('7 days', -1);
SELECT * FROM nps_alerts('7 days', 'NaN');
SELECT * FROM nps_alerts('7 days', 'infinity');
SELECT * FROM nps_alerts('7 days', 10, min_responses => 0);
SELECT * FROM nps_alerts('7 days', 10, as_of => 'infinity');
SELECT * FROM nps_alerts(NULL, 10);
SELECT * FROM nps_alerts('7 days', 10, NULL);
