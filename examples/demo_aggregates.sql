-- NPS aggregates on generated scores (seeded, so every run prints the same numbers).
CREATE EXTENSION IF NOT EXISTS nps_billing;
SET search_path = public, nps_billing;
SELECT setseed(0.42);
CREATE TEMP TABLE answers AS
SELECT g AS id,
       CASE WHEN g % 3 = 0 THEN 'manual' ELSE 'autopay' END AS method,
       date '2026-01-01' + (g % 300) AS day,
       LEAST(10, GREATEST(0, round(CASE WHEN g % 3 = 0 THEN 6.8 ELSE 8.1 END + random() * 4 - 2)))::smallint AS score,
       (10 + random() * 90)::numeric(10,2) AS amount
FROM generate_series(1, 20000) g;

\echo '== NPS by payment method, with 95% confidence intervals'
SELECT method, responses(a), round(nps(a)::numeric, 1) AS nps,
       round((nps_ci(a)).low::numeric, 1) AS ci_low, round((nps_ci(a)).high::numeric, 1) AS ci_high,
       round(weighted_nps(w)::numeric, 1) AS revenue_weighted_nps
FROM (SELECT method, nps_agg(score) AS a, nps_agg(score, amount::float8) AS w
      FROM answers GROUP BY method) s
ORDER BY method;

\echo '== Is the difference significant?'
SELECT round(difference::numeric, 2) AS difference, round(stderr::numeric, 2) AS stderr,
       round(z::numeric, 2) AS z, p_value
FROM nps_compare((SELECT nps_agg(score) FROM answers WHERE method = 'autopay'),
                 (SELECT nps_agg(score) FROM answers WHERE method = 'manual'));

\echo '== Daily summaries stored once, rolled up into months'
CREATE TEMP TABLE daily AS SELECT day, nps_agg(score) AS summary FROM answers GROUP BY day;
SELECT date_trunc('month', day)::date AS month, responses(rollup(summary)),
       round(nps(rollup(summary))::numeric, 1) AS nps
FROM daily GROUP BY 1 ORDER BY 1 LIMIT 6;

\echo '== 1,000-answer sliding window'
SELECT id, round(nps(score) OVER w::numeric, 1) AS rolling_nps
FROM answers WINDOW w AS (ORDER BY id ROWS BETWEEN 999 PRECEDING AND CURRENT ROW)
ORDER BY id DESC LIMIT 3;
