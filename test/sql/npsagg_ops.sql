-- npsagg_add / npsagg_sub / npsagg_remove: the arithmetic rollup tables are kept with.
SET search_path = nps_billing, public;
SET extra_float_digits = 0;
\set VERBOSITY sqlstate

-- NULL is the empty summary; both NULL stay NULL
SELECT npsagg_add(NULL::npsagg, NULL::npsagg) IS NULL AS both_null,
       npsagg_add(NULL, nps_agg(9)) = nps_agg(9) AS null_plus_a,
       npsagg_sub(nps_agg(9), NULL) = nps_agg(9) AS a_minus_null
  FROM (VALUES (1)) v;
-- one answer in and out; a NULL score or weight changes nothing
SELECT npsagg_add(NULL, 9, 1) AS one,
       npsagg_remove(npsagg_add(NULL, 9, 1), 9, 1) AS none,
       npsagg_add(NULL, NULL, 1) IS NULL AS null_score,
       npsagg_add(npsagg_add(NULL, 3, 1), 5, NULL) = npsagg_add(NULL, 3, 1) AS null_weight;
-- a + b - b = a exactly for unit weights, on random data (many seeds)
SELECT setseed(0.42);
CREATE TEMP TABLE r AS
  SELECT g % 40 AS k, (random() * 10)::int AS score FROM generate_series(1, 4000) g;
SELECT bool_and(npsagg_sub(npsagg_add(a.x, b.x), b.x) = a.x) AS add_sub_identity,
       bool_and(npsagg_add(a.x, b.x) = npsagg_add(b.x, a.x)) AS commutes
  FROM (SELECT k, nps_agg(score) x FROM r GROUP BY k) a
  JOIN (SELECT k, nps_agg(score) x FROM r GROUP BY k) b ON b.k = (a.k + 1) % 40;
-- removing every answer one by one from the aggregate of them all leaves the empty summary,
-- and the same sum answer by answer equals the aggregate
WITH RECURSIVE steps AS (
  SELECT 0 AS i, (SELECT nps_agg(score) FROM r) AS s
  UNION ALL
  SELECT i + 1, npsagg_remove(s, (SELECT score FROM r ORDER BY k, score OFFSET i LIMIT 1), 1)
    FROM steps WHERE i < 4000)
SELECT responses(s) AS left_after_removing_all, s = '{"counts":[0,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}'::npsagg AS empty
  FROM steps WHERE i = 4000;
-- weighted: removing a large weight leaves a valid summary of the small one (the squares'
-- difference rounds to 0; weight_sq is settled within what the weights allow)
SELECT s AS after_removal, responses(s), round(weighted_nps(s)::numeric, 6) AS weighted_nps,
       s::text::npsagg = s AS reads_back
  FROM (SELECT npsagg_remove(npsagg_add(npsagg_add(NULL, 9, 1e8), 9, 0.1), 9, 1e8) AS s) x;
SELECT npsagg_sub(a, b) AS difference, npsagg_sub(a, b)::text::npsagg = npsagg_sub(a, b) AS reads_back
  FROM (SELECT nps_agg(score, w) AS a, nps_agg(score, w) FILTER (WHERE w > 1) AS b
          FROM (VALUES (10, 1e9::float8), (2, 0.3), (10, 1e9), (7, 0.7)) v(score, w)) x;
-- errors: removing what is not there, a count or the total overflowing, a score out of range
-- (22003); a negative, NaN or infinite weight (22023)
SELECT npsagg_remove(nps_agg(9), 3, 1);
SELECT npsagg_sub(nps_agg(9), npsagg_add(nps_agg(9), 9, 1));
SELECT npsagg_add('{"counts":[9223372036854775807,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}'::npsagg, 0, 1);
SELECT npsagg_add('{"counts":[9223372036854775807,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}'::npsagg,
                  '{"counts":[0,1,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}'::npsagg);
SELECT npsagg_add(NULL, 11, 1);
SELECT npsagg_add(NULL, -1, 1);
SELECT npsagg_add(NULL, 5, -1);
SELECT npsagg_add(NULL, 5, 'NaN');
SELECT npsagg_add(NULL, 5, 'Infinity');
