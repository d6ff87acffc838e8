-- NPS aggregates against the plain SQL formula on pseudo-random data: 20 seeds, all three
-- integer types, NULL scores and weights, groups, forced parallel plans and sliding windows.
SET search_path = nps_billing, public;
SET extra_float_digits = 0;

CREATE TABLE agg_data AS
SELECT seed, g AS id, g % 13 AS grp, date '2026-01-01' + (g % 40) AS day,
       CASE WHEN h % 12 = 11 THEN NULL ELSE (h % 12)::int END AS s,
       CASE WHEN (h >> 8) % 10 = 0 THEN NULL ELSE ((h >> 12) % 100000) / 100.0 END::float8 AS w
FROM generate_series(1, 20) seed, generate_series(1, 3000) g,
     LATERAL (SELECT hashint8extended(g, seed) & 2147483647 AS h) x;
-- one group with only NULL scores, one empty seed/group combination handled by the formula's NULLIF
INSERT INTO agg_data SELECT 99, g, 99, date '2026-01-01', NULL, 1 FROM generate_series(1, 5) g;
ANALYZE agg_data;

-- The contract's formula, computed at 30 decimal places so the cast to float8 is correctly
-- rounded (at numeric's default scale the cast can land one ulp off: seed 16, group 6 below).
CREATE FUNCTION formula_nps(promoters bigint, detractors bigint, n bigint) RETURNS float8
  LANGUAGE sql IMMUTABLE AS $$ SELECT ((100 * (promoters - detractors))::numeric(60, 30) / NULLIF(n, 0))::float8 $$;

-- 1. unweighted, per seed and group, all integer types: exact equality with the formula
SELECT count(*) AS groups,
       count(*) FILTER (WHERE n2 IS DISTINCT FROM f) AS smallint_mismatches,
       count(*) FILTER (WHERE n4 IS DISTINCT FROM f) AS integer_mismatches,
       count(*) FILTER (WHERE n8 IS DISTINCT FROM f) AS bigint_mismatches,
       count(*) FILTER (WHERE f IS NULL) AS groups_without_scores
FROM (SELECT seed, grp, nps(s::smallint) AS n2, nps(s) AS n4, nps(s::bigint) AS n8,
             formula_nps(count(*) FILTER (WHERE s >= 9), count(*) FILTER (WHERE s <= 6), count(s)) AS f
      FROM agg_data GROUP BY seed, grp) r;
-- the formula exactly as written in the contract agrees to 1e-12
SELECT count(*) FILTER (WHERE abs(n - f) > 1e-12 OR (n IS NULL) <> (f IS NULL)) AS mismatches,
       count(*) FILTER (WHERE n <> f::float8) AS numeric_default_scale_one_ulp_off
FROM (SELECT nps(s) AS n,
             100.0 * (count(*) FILTER (WHERE s >= 9) - count(*) FILTER (WHERE s <= 6)) / NULLIF(count(s), 0) AS f
      FROM agg_data GROUP BY seed, grp) r;

-- 2. weighted: NULL weight skips the row; equal to the formula up to summation order
SELECT count(*) AS groups,
       count(*) FILTER (WHERE abs(wn - f) > 1e-9 OR (wn IS NULL) <> (f IS NULL)) AS mismatches,
       count(*) FILTER (WHERE abs(wn2 - f) > 1e-9 OR (wn2 IS NULL) <> (f IS NULL)) AS smallint_mismatches,
       count(*) FILTER (WHERE abs(wn8 - f) > 1e-9 OR (wn8 IS NULL) <> (f IS NULL)) AS bigint_mismatches
FROM (SELECT seed, grp, nps(s, w) AS wn, nps(s::smallint, w) AS wn2, nps(s::bigint, w) AS wn8,
             100.0 * (coalesce(sum(w) FILTER (WHERE s >= 9), 0) - coalesce(sum(w) FILTER (WHERE s <= 6), 0))
               / NULLIF(sum(w) FILTER (WHERE s IS NOT NULL), 0) AS f
      FROM agg_data GROUP BY seed, grp) r;

-- 3. nps_agg summaries: accessors equal plain counts
SELECT count(*) FILTER (WHERE responses(a) IS DISTINCT FROM n OR promoters(a) <> p OR passives(a) <> pa
                           OR detractors(a) <> d OR nps(a) IS DISTINCT FROM f
                           OR score_histogram(a) <> hist) AS mismatches,
       count(*) FILTER (WHERE a IS NULL) AS null_summaries
FROM (SELECT seed, grp, nps_agg(s) AS a, count(s) AS n, count(*) FILTER (WHERE s >= 9) AS p,
             count(*) FILTER (WHERE s IN (7, 8)) AS pa, count(*) FILTER (WHERE s <= 6) AS d,
             formula_nps(count(*) FILTER (WHERE s >= 9), count(*) FILTER (WHERE s <= 6), count(s)) AS f,
             (SELECT array_agg(c ORDER BY k) FROM (SELECT k, count(*) FILTER (WHERE d2.s = k) AS c
                FROM generate_series(0, 10) k, agg_data d2 WHERE d2.seed = agg_data.seed AND d2.grp = agg_data.grp
                GROUP BY k) hh) AS hist
      FROM agg_data WHERE seed <= 3 GROUP BY seed, grp) r;
-- weighted summaries: weighted_nps equals nps(score, weight)
SELECT count(*) FILTER (WHERE abs(weighted_nps(a) - wn) > 1e-9 OR (weighted_nps(a) IS NULL) <> (wn IS NULL)) AS mismatches
FROM (SELECT seed, grp, nps_agg(s, w) AS a, nps(s, w) AS wn FROM agg_data GROUP BY seed, grp) r;

-- 4. rollup of per-day summaries equals the summary over all rows (exactly), per seed
SELECT count(*) AS seeds, count(*) FILTER (WHERE rolled IS DISTINCT FROM direct) AS mismatches
FROM (SELECT seed, rollup(a) AS rolled FROM (SELECT seed, day, nps_agg(s) AS a FROM agg_data GROUP BY seed, day) d GROUP BY seed) x
JOIN (SELECT seed, nps_agg(s) AS direct FROM agg_data GROUP BY seed) y USING (seed);
-- rollup of weighted summaries: counts exact, weights up to summation order
SELECT count(*) FILTER (WHERE responses(r) <> responses(d) OR abs(weighted_nps(r) - weighted_nps(d)) > 1e-9) AS mismatches
FROM (SELECT seed, rollup(a) AS r FROM (SELECT seed, day, nps_agg(s, w) AS a FROM agg_data GROUP BY seed, day) q GROUP BY seed) x
JOIN (SELECT seed, nps_agg(s, w) AS d FROM agg_data GROUP BY seed) y USING (seed);
-- rollup ignores NULL summaries; rollup of nothing is NULL
SELECT rollup(a) IS NULL AS empty_rollup_is_null FROM (SELECT NULL::npsagg AS a WHERE false) e;
SELECT responses(rollup(a)) FROM (VALUES (NULL::npsagg), ('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,1]}')) v(a);

-- 5. empty input and all-NULL input give NULL
SELECT nps(s) AS nps_empty, nps(s, w) AS wnps_empty, nps_agg(s) AS agg_empty, nps_agg(s, w) AS wagg_empty
FROM agg_data WHERE false;
SELECT nps(s) AS nps_all_null, nps_agg(s) AS agg_all_null FROM agg_data WHERE grp = 99;
SELECT nps(5, NULL::float8) AS null_weight_only, nps(10, 0.0) AS zero_total_weight, responses(nps_agg(10, 0.0)) AS zero_weight_counts;
-- numeric weights cast implicitly
SELECT nps(s, 2.5::numeric) = nps(s) AS numeric_weight_ok FROM agg_data WHERE seed = 1;

-- 6. forced parallel plans: Partial Aggregate in the plan, same results as serial
CREATE FUNCTION plan_has_partial(q text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE l text; found boolean := false;
BEGIN
  FOR l IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
    IF l LIKE '%Partial%Aggregate%' THEN found := true; END IF;
  END LOOP;
  RETURN found;
END $$;
SET max_parallel_workers_per_gather = 0;
CREATE TEMP TABLE serial_results AS
SELECT seed, nps(s) AS n, nps(s, w) AS wn, nps_agg(s) AS a, nps_agg(s, w) AS wa FROM agg_data GROUP BY seed;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = off;
SELECT plan_has_partial('SELECT seed, nps(s), nps(s, w), nps_agg(s), nps_agg(s, w) FROM agg_data GROUP BY seed') AS grouped_partial,
       plan_has_partial('SELECT nps(s::bigint), nps(s::smallint, w) FROM agg_data') AS plain_partial;
CREATE TABLE agg_daily AS SELECT seed, day, nps_agg(s) AS a FROM agg_data GROUP BY seed, day;
ANALYZE agg_daily;
SELECT plan_has_partial('SELECT rollup(a) FROM agg_daily') AS rollup_partial;
SELECT count(*) AS seeds,
       count(*) FILTER (WHERE p.n IS DISTINCT FROM s.n OR p.a IS DISTINCT FROM s.a
                                                      OR responses(p.wa) <> responses(s.wa)
                           OR abs(p.wn - s.wn) > 1e-9) AS mismatches
FROM (SELECT seed, nps(s) AS n, nps(s, w) AS wn, nps_agg(s) AS a, nps_agg(s, w) AS wa FROM agg_data GROUP BY seed) p
JOIN serial_results s USING (seed);
SELECT (SELECT rollup(a) FROM agg_daily) = (SELECT nps_agg(s) FROM agg_data) AS parallel_rollup_equal;
RESET parallel_setup_cost; RESET parallel_tuple_cost; RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather; RESET parallel_leader_participation;

-- 7. sliding windows (moving aggregate with inverse transition) equal the formula and the
-- non-moving aggregate over the same frame
CREATE TEMP TABLE win AS SELECT id, s FROM agg_data WHERE seed = 7 ORDER BY id;
SELECT count(*) AS rows,
       count(*) FILTER (WHERE wn IS DISTINCT FROM f) AS formula_mismatches,
       count(*) FILTER (WHERE wa IS DISTINCT FROM direct) AS summary_mismatches,
       count(*) FILTER (WHERE wn IS NULL) AS null_frames
FROM (SELECT id,
             nps(s) OVER w AS wn,
             nps_agg(s) OVER w AS wa,
             formula_nps(count(*) FILTER (WHERE s >= 9) OVER w, count(*) FILTER (WHERE s <= 6) OVER w, count(s) OVER w) AS f,
             (SELECT nps_agg(s) FROM win w2 WHERE w2.id BETWEEN win.id - 9 AND win.id) AS direct
      FROM win WINDOW w AS (ORDER BY id ROWS BETWEEN 9 PRECEDING AND CURRENT ROW)) r;
-- frames that grow and shrink at both ends, and a frame made only of NULL scores
SELECT count(*) FILTER (WHERE wn IS DISTINCT FROM f) AS mismatches
FROM (SELECT nps(s::smallint) OVER w AS wn,
             formula_nps(count(*) FILTER (WHERE s >= 9) OVER w, count(*) FILTER (WHERE s <= 6) OVER w, count(s) OVER w) AS f
      FROM win WINDOW w AS (ORDER BY id ROWS BETWEEN 3 PRECEDING AND 5 FOLLOWING EXCLUDE CURRENT ROW)) r;
SELECT id, s, nps(s) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
FROM (VALUES (1, 10), (2, NULL), (3, NULL), (4, 0), (5, 9)) v(id, s) ORDER BY id;

-- 8. out-of-range scores and bad weights are errors naming the value, never skipped
SELECT nps(s) FROM (VALUES (5), (11)) v(s);
SELECT nps(s::smallint) FROM (VALUES (5), (-1)) v(s);
SELECT nps(s) FROM (VALUES (5::bigint), (10000000000)) v(s);
SELECT nps_agg(s) FROM (VALUES (12)) v(s);
SELECT nps(s, w) FROM (VALUES (5, -1.0::float8)) v(s, w);
SELECT nps(s, w) FROM (VALUES (5, 'NaN'::float8)) v(s, w);
SELECT nps_agg(s, w) FROM (VALUES (5, 'Infinity'::float8)) v(s, w);
SELECT nps(s, w) FROM (VALUES (11, 1.0::float8)) v(s, w);

DROP TABLE agg_data, agg_daily;
DROP FUNCTION formula_nps(bigint, bigint, bigint);
DROP FUNCTION plan_has_partial(text);
