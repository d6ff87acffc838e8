-- What Citus and parallel query rely on, from the catalog: every aggregate of the extension has
-- a transition type that is a real type (Citus pushes down only those), a combine function,
-- serialize/deserialize only where the state is internal, PARALLEL SAFE; and forced parallel
-- plans give the answers of serial plans and of the SQL formula.
BEGIN;
SET LOCAL search_path = nps_billing, public;
SELECT plan(12);

CREATE TEMP VIEW ext_aggs AS
SELECT p.oid::regprocedure AS agg, a.*, p.proparallel
FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid
WHERE p.pronamespace = 'nps_billing'::regnamespace;

SELECT is((SELECT count(*) FROM ext_aggs), 13::bigint, 'nps x6, nps_agg x6 and rollup are the aggregates');
SELECT is_empty($$SELECT agg FROM ext_aggs a JOIN pg_type t ON t.oid = a.aggtranstype WHERE t.typtype = 'p'$$,
                'no aggregate has a pseudo-type (internal) transition type');
SELECT is_empty($$SELECT agg FROM ext_aggs a JOIN pg_type t ON t.oid = a.aggmtranstype WHERE t.typtype = 'p'$$,
                'no moving aggregate has a pseudo-type transition type');
SELECT is_empty($$SELECT agg FROM ext_aggs WHERE aggcombinefn = 0$$, 'every aggregate has a combine function');
SELECT is_empty($$SELECT agg FROM ext_aggs WHERE (aggserialfn <> 0 OR aggdeserialfn <> 0) AND aggtranstype <> 'internal'::regtype$$,
                'serialize/deserialize only where the state is internal');
SELECT is_empty($$SELECT agg FROM ext_aggs WHERE proparallel <> 's'$$, 'every aggregate is PARALLEL SAFE');
SELECT is_empty($$SELECT agg FROM ext_aggs a JOIN pg_proc f ON f.oid IN (a.aggtransfn, a.aggcombinefn, a.aggfinalfn)
                  WHERE f.proparallel <> 's'$$, 'their support functions are PARALLEL SAFE');
SELECT set_eq($$SELECT agg::text FROM ext_aggs WHERE aggminvtransfn <> 0$$,
              ARRAY['nps(smallint)', 'nps(integer)', 'nps(bigint)', 'nps_agg(smallint)', 'nps_agg(integer)', 'nps_agg(bigint)'],
              'nps(score) and nps_agg(score) keep their inverse transition');

-- random data: 8 seeds, NULL scores and weights, grouped
CREATE TABLE cat_data AS
SELECT seed, g % 7 AS grp,
       CASE WHEN h % 12 = 11 THEN NULL ELSE (h % 12)::int END AS s,
       CASE WHEN (h >> 8) % 10 = 0 THEN NULL ELSE ((h >> 12) % 100000) / 100.0 END::float8 AS w
FROM generate_series(1, 8) seed, generate_series(1, 4000) g,
     LATERAL (SELECT hashint8extended(g, seed) & 2147483647 AS h) x;
ANALYZE cat_data;
CREATE TABLE cat_serial AS
SELECT seed, grp, nps(s::smallint) AS n2, nps(s) AS n4, nps(s::bigint) AS n8,
       nps(s::smallint, w) AS w2, nps(s, w) AS w4, nps(s::bigint, w) AS w8,
       nps_agg(s) AS a, nps_agg(s::bigint, w) AS wa,
       100.0 * (count(*) FILTER (WHERE s >= 9) - count(*) FILTER (WHERE s <= 6)) / NULLIF(count(s), 0) AS f,
       100.0 * (coalesce(sum(w) FILTER (WHERE s >= 9), 0) - coalesce(sum(w) FILTER (WHERE s <= 6), 0))
         / NULLIF(sum(w) FILTER (WHERE s IS NOT NULL), 0) AS wf
FROM cat_data GROUP BY seed, grp;

SET LOCAL parallel_setup_cost = 0;
SET LOCAL parallel_tuple_cost = 0;
SET LOCAL min_parallel_table_scan_size = 0;
SET LOCAL max_parallel_workers_per_gather = 2;
SET LOCAL parallel_leader_participation = off;
CREATE FUNCTION pg_temp.partial_plan(q text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE l text; found boolean := false;
BEGIN
  FOR l IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
    IF l LIKE '%Partial%Aggregate%' THEN found := true; END IF;
  END LOOP;
  RETURN found;
END $$;
SELECT ok(pg_temp.partial_plan('SELECT seed, grp, nps(s), nps(s, w), nps_agg(s), nps_agg(s, w) FROM cat_data GROUP BY seed, grp'),
          'the grouped query gets a parallel plan with partial aggregates');
SELECT is_empty($$
  SELECT seed, grp FROM cat_serial c JOIN (
    SELECT seed, grp, nps(s::smallint) AS n2, nps(s) AS n4, nps(s::bigint) AS n8,
           nps(s::smallint, w) AS w2, nps(s, w) AS w4, nps(s::bigint, w) AS w8,
           nps_agg(s) AS a, nps_agg(s::bigint, w) AS wa
    FROM cat_data GROUP BY seed, grp) p USING (seed, grp)
  WHERE p.n2 IS DISTINCT FROM c.n2 OR p.n4 IS DISTINCT FROM c.n4 OR p.n8 IS DISTINCT FROM c.n8
     OR p.a IS DISTINCT FROM c.a OR responses(p.wa) IS DISTINCT FROM responses(c.wa)
     OR abs(p.w2 - c.w2) > 1e-9 OR abs(p.w4 - c.w4) > 1e-9 OR abs(p.w8 - c.w8) > 1e-9
     OR abs(weighted_nps(p.wa) - weighted_nps(c.wa)) > 1e-9
     OR (p.w4 IS NULL) <> (c.w4 IS NULL)
$$, 'forced parallel plans give the serial answers (all integer types, weights)');
SELECT is_empty($$
  SELECT seed, grp FROM cat_serial
  WHERE abs(n4 - f) > 1e-12 OR (n4 IS NULL) <> (f IS NULL) OR abs(w4 - wf) > 1e-9 OR (w4 IS NULL) <> (wf IS NULL)
$$, 'and equal the SQL formula');
SELECT is((SELECT rollup(a) FROM cat_serial), (SELECT nps_agg(s) FROM cat_data),
          'parallel rollup of the grouped summaries equals the summary of all rows');
SELECT * FROM finish();
ROLLBACK;
