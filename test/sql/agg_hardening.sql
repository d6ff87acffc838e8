-- Hostile inputs to the aggregates and the npsagg type: every one gets a clear error or a
-- defined result, never a crash, a wrapped count or a value that does not read back.
SET search_path = nps_billing, public;
SET extra_float_digits = 0;
\set VERBOSITY default

-- 1. The window inverse re-evaluates its argument: it is checked again.
-- The reproducer: the argument is 5 when the row enters the frame, 1e11 when it leaves.
SELECT set_config('x.s', '5', false);
SELECT i, nps(current_setting('x.s')::bigint)
         OVER (ORDER BY i ROWS BETWEEN 1 PRECEDING AND CURRENT ROW),
       set_config('x.s', CASE WHEN i = 2 THEN '100000000000' ELSE '5' END, false)
FROM generate_series(1, 3) i;
-- the same with a negative integer leaving an nps_agg frame
SELECT set_config('x.s', '5', false);
SELECT i, responses(nps_agg(current_setting('x.s')::integer)
         OVER (ORDER BY i ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)),
       set_config('x.s', CASE WHEN i = 2 THEN '-3' ELSE '5' END, false)
FROM generate_series(1, 3) i;
-- a score in range that never entered the frame: the count would go negative
SELECT set_config('x.s', '5', false);
SELECT i, nps(current_setting('x.s')::smallint)
         OVER (ORDER BY i ROWS BETWEEN 1 PRECEDING AND CURRENT ROW),
       set_config('x.s', CASE WHEN i = 2 THEN '9' ELSE '5' END, false)
FROM generate_series(1, 4) i;
-- 11 on the way out (0.1 wrote past the counters)
SELECT set_config('x.s', '10', false);
SELECT i, nps(current_setting('x.s')::integer)
         OVER (ORDER BY i ROWS BETWEEN 2 PRECEDING AND CURRENT ROW),
       set_config('x.s', CASE WHEN i = 3 THEN '11' ELSE '10' END, false)
FROM generate_series(1, 5) i;
-- a stable argument still slides as before
SELECT i, nps(s) OVER w, responses(nps_agg(s) OVER w)
FROM (VALUES (1, 10), (2, 0), (3, 9), (4, 7), (5, 10)) v(i, s)
WINDOW w AS (ORDER BY i ROWS BETWEEN 1 PRECEDING AND CURRENT ROW);

-- 2. Counts and weights never wrap or become infinite; every stored value reads back.
-- derived weight_sq overflows (the two-key form with a weight of 1e200)
SELECT '{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[1e200,0,0,0,0,0,0,0,0,0,0]}'::npsagg;
-- rollup of two summaries weighing 1e308 each (0.1 printed Infinity weights): such a
-- summary cannot be stored now (its weight_sq would be 1e616), ...
SELECT rollup(a) FROM (VALUES
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[1e308,0,0,0,0,0,0,0,0,0,0]}'::npsagg),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[1e308,0,0,0,0,0,0,0,0,0,0]}'::npsagg)) v(a);
SELECT '{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[1e308,0,0,0,0,0,0,0,0,0,0],"weight_sq":0}'::npsagg;
-- ... and a rollup of the largest ones that can be stored raises instead of overflowing
SELECT rollup(a) FROM (VALUES
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[1e154,0,0,0,0,0,0,0,0,0,0]}'::npsagg),
  ('{"counts":[0,0,0,0,0,0,0,0,0,0,1],"weights":[0,0,0,0,0,0,0,0,0,0,1e154]}'::npsagg)) v(a);
-- weights near the limit in different scores: the total weight would be infinite
SELECT '{"counts":[1,1,0,0,0,0,0,0,0,0,0],"weights":[1e308,1e308,0,0,0,0,0,0,0,0,0],"weight_sq":1e300}'::npsagg;
-- rollup overflowing the total count (0.1: responses() = -2446744073709551616)
SELECT responses(rollup(a)) FROM (VALUES
  ('{"counts":[8000000000000000000,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}'::npsagg),
  ('{"counts":[0,0,0,0,0,0,0,0,0,0,8000000000000000000],"weights":[0,0,0,0,0,0,0,0,0,0,0]}'::npsagg)) v(a);
-- rollup overflowing one count
SELECT rollup(a) FROM (VALUES
  ('{"counts":[9223372036854775807,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}'::npsagg),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}'::npsagg)) v(a);
-- one input whose total count overflows
SELECT '{"counts":[9223372036854775807,1,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}'::npsagg;
-- a literal weight beyond float8
SELECT '{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[1e400,0,0,0,0,0,0,0,0,0,0]}'::npsagg;
-- the largest count is a value like any other: it prints and reads back
SELECT a::text::npsagg = a AS reads_back, responses(a), nps(a)
FROM (SELECT '{"counts":[9223372036854775807,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}'::npsagg AS a) x;
-- weighted aggregates: squares that overflow raise in the transition and in the combine step
SELECT nps_agg(s, w) FROM (VALUES (10, 1e154::float8), (0, 1e154::float8)) v(s, w);
SELECT nps(s, w) FROM (VALUES (10, 1e154::float8), (0, 1e154::float8)) v(s, w);
-- (in a parallel plan each worker's partial sum may fit and the combined one not; terse: the
-- error may come from a worker)
\set VERBOSITY terse
CREATE TABLE big_weights AS SELECT g % 11 AS s, 3.67e152::float8 AS w FROM generate_series(1, 2000) g;
ANALYZE big_weights;
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2; SET parallel_leader_participation = off;
SELECT nps(s, w) FROM big_weights;
SELECT rollup(a) FROM (SELECT nps_agg(s, w) AS a FROM big_weights GROUP BY s) x;
RESET parallel_setup_cost; RESET parallel_tuple_cost; RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather; RESET parallel_leader_participation;
\set VERBOSITY default
-- the largest weights that fit print and read back
SELECT a::text::npsagg = a AS reads_back, round(weighted_nps(a)::numeric, 6) AS wnps
FROM (SELECT nps_agg(s, w) AS a FROM (VALUES (10, 1e153::float8), (0, 3e153::float8)) v(s, w)) x;
-- tiny weights whose squares underflow: a defined, finite interval
SELECT a::text::npsagg = a AS reads_back, nps_ci(a) IS NOT NULL AS has_ci,
       (nps_ci(a)).low >= -100 AND (nps_ci(a)).high <= 100 AS ci_in_range
FROM (SELECT nps_agg(s, w) AS a FROM (VALUES (10, 1e-200::float8), (0, 3e-200::float8), (9, 5e-324::float8)) v(s, w)) x;

-- 3. weight_sq must agree with the weights: (sum w)^2/n <= weight_sq <= (sum w)^2 (0.1 took
-- these and nps_ci returned NaN)
SELECT '{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,1],"weight_sq":1e-300}'::npsagg;
SELECT '{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,1],"weight_sq":5}'::npsagg;
SELECT '{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0],"weight_sq":2}'::npsagg;
-- the bounds themselves are accepted: all weight on one response, or equal weights
SELECT responses(a), round(nps_stderr(a)::numeric, 6) AS stderr FROM (VALUES
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,1],"weight_sq":2}'::npsagg),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,1],"weight_sq":4}'::npsagg)) v(a);
-- weights near the limit: statistics stay finite (no Infinity/NaN)
SELECT round(low::numeric, 6) AS low, round(high::numeric, 6) AS high, round(weighted_nps(a)::numeric, 6) AS wnps
FROM (SELECT '{"counts":[0,0,0,0,0,0,0,0,0,0,2],"weights":[0,0,0,0,0,0,0,0,0,0,1e154],"weight_sq":6e307}'::npsagg AS a) x,
     nps_ci(a);

-- 4. Errors quote at most a short prefix of a huge input.
DO $$
BEGIN
  PERFORM ('{"counts":[' || repeat('1', 10000000) || ']}')::nps_billing.npsagg;
EXCEPTION WHEN others THEN
  RAISE NOTICE 'SQLSTATE %, message of % characters: %', SQLSTATE, length(SQLERRM), SQLERRM;
END $$;
DO $$
BEGIN
  PERFORM (repeat('é', 100))::nps_billing.npsagg;
EXCEPTION WHEN others THEN
  RAISE NOTICE 'SQLSTATE %: %', SQLSTATE, SQLERRM;
END $$;

-- 5. Binary recv checks like input: overflow 22003, malformed 22P02.
CREATE FUNCTION pg_temp.wire(counts bigint[], weights float8[], wsq float8) RETURNS bytea
  LANGUAGE sql AS $$
  SELECT int4send(1) || (SELECT string_agg(int8send(c), ''::bytea ORDER BY o) FROM unnest(counts) WITH ORDINALITY u(c, o))
         || (SELECT string_agg(float8send(w), ''::bytea ORDER BY o) FROM unnest(weights) WITH ORDINALITY u(w, o))
         || float8send(wsq) $$;
CREATE TEMP TABLE wire_in (b bytea);
CREATE TEMP TABLE wire_out (a npsagg);
-- total count overflow
INSERT INTO wire_in SELECT pg_temp.wire('{9223372036854775807,1,0,0,0,0,0,0,0,0,0}', '{0,0,0,0,0,0,0,0,0,0,0}', 0);
COPY wire_in TO '/tmp/nps_billing_regress_wire.bin' WITH (FORMAT binary);
COPY wire_out FROM '/tmp/nps_billing_regress_wire.bin' WITH (FORMAT binary);
-- infinite weight
TRUNCATE wire_in;
INSERT INTO wire_in SELECT pg_temp.wire('{1,0,0,0,0,0,0,0,0,0,0}', '{Infinity,0,0,0,0,0,0,0,0,0,0}', 1);
COPY wire_in TO '/tmp/nps_billing_regress_wire.bin' WITH (FORMAT binary);
COPY wire_out FROM '/tmp/nps_billing_regress_wire.bin' WITH (FORMAT binary);
-- NaN weight_sq
TRUNCATE wire_in;
INSERT INTO wire_in SELECT pg_temp.wire('{1,0,0,0,0,0,0,0,0,0,0}', '{1,0,0,0,0,0,0,0,0,0,0}', 'NaN');
COPY wire_in TO '/tmp/nps_billing_regress_wire.bin' WITH (FORMAT binary);
COPY wire_out FROM '/tmp/nps_billing_regress_wire.bin' WITH (FORMAT binary);
-- inconsistent weight_sq
TRUNCATE wire_in;
INSERT INTO wire_in SELECT pg_temp.wire('{1,0,0,0,0,0,0,0,0,0,1}', '{1,0,0,0,0,0,0,0,0,0,1}', 1e-300);
COPY wire_in TO '/tmp/nps_billing_regress_wire.bin' WITH (FORMAT binary);
COPY wire_out FROM '/tmp/nps_billing_regress_wire.bin' WITH (FORMAT binary);
-- a valid one goes through
TRUNCATE wire_in;
INSERT INTO wire_in SELECT pg_temp.wire('{1,0,0,0,0,0,0,0,0,0,1}', '{1,0,0,0,0,0,0,0,0,0,3}', 10);
COPY wire_in TO '/tmp/nps_billing_regress_wire.bin' WITH (FORMAT binary);
COPY wire_out FROM '/tmp/nps_billing_regress_wire.bin' WITH (FORMAT binary);
SELECT a, weighted_nps(a) FROM wire_out;
\set VERBOSITY terse

-- 6. The transition functions over npsagg states, called as plain functions, never write into
-- their argument (a constant here, a table's buffer page below); inside an aggregate they
-- update PostgreSQL's private copy in place.
CREATE TEMP TABLE stored_state AS
SELECT '{"counts":[0,0,0,0,0,1,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0],"weight_sq":0}'::npsagg AS a;
SELECT nps_state_int4(a, 10) AS plus_ten, nps_state_inv_int2(a, 5::smallint) AS minus_five, a AS unchanged FROM stored_state;
SELECT nps_state_weighted_int8(a, 9, 2.0) AS weighted, nps_state_merge(a, a) AS doubled FROM stored_state;
SELECT a AS still_unchanged FROM stored_state;
SELECT x.a AS constant_unchanged, nps_state_int4(x.a, 0) AS plus_zero
FROM (SELECT '{"counts":[0,0,0,0,0,0,0,0,0,0,2],"weights":[0,0,0,0,0,0,0,0,0,0,0],"weight_sq":0}'::npsagg AS a) x;
-- the inverse refuses what the state does not hold, also when called directly
SELECT nps_state_inv_int4(a, 9) FROM stored_state;
SELECT nps_state_int8(a, 11) FROM stored_state;
-- merging hostile states: counts and weights that would overflow raise 22003
SELECT nps_state_merge('{"counts":[9223372036854775807,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}',
                       '{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}');
SELECT nps_state_merge('{"counts":[4611686018427387904,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}',
                       '{"counts":[0,4611686018427387904,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}');
SELECT nps_state_merge('{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[1e154,0,0,0,0,0,0,0,0,0,0]}',
                       '{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[1e154,0,0,0,0,0,0,0,0,0,0]}');
SELECT nps_state_weighted_int4('{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[1e154,0,0,0,0,0,0,0,0,0,0]}', 0, 1e154);
SELECT nps_state_int4('{"counts":[9223372036854775807,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}', 0);
-- a user's aggregate over these functions starting from the largest count: 22003, not a wrap
CREATE AGGREGATE pg_temp.nps_from_max(integer) (SFUNC = nps_billing.nps_state_int4, STYPE = nps_billing.npsagg,
  INITCOND = '{"counts":[0,0,0,0,0,0,0,0,0,0,9223372036854775806],"weights":[0,0,0,0,0,0,0,0,0,0,0]}');
SELECT pg_temp.nps_from_max(s) FROM (VALUES (10), (10)) v(s);
-- (the total count is checked where the state becomes a result: every aggregate's final step)
SELECT nps_state_nps(pg_temp.nps_from_max(s)) FROM (VALUES (0), (10)) v(s);
SELECT nps_state_summary(pg_temp.nps_from_max(s)) FROM (VALUES (0), (10)) v(s);
SELECT nps_state_nps(pg_temp.nps_from_max(s)) FROM (VALUES (0)) v(s);
-- several aggregates sharing one transition state in a query each get their own answer
SELECT nps(s), nps_agg(s), responses(nps_agg(s)), nps(s) FILTER (WHERE s > 5)
FROM (VALUES (10), (0), (9), (7), (NULL)) v(s);
-- rollup whose first summary is stored compressed (wide rows): merged into a fresh state
CREATE TABLE wide_summaries (a npsagg, pad text);
ALTER TABLE wide_summaries ALTER COLUMN pad SET STORAGE PLAIN;
INSERT INTO wide_summaries
SELECT nps_agg(s), (SELECT string_agg(md5(g::text || k::text), '') FROM generate_series(1, 80) k)
FROM generate_series(1, 4) g, LATERAL (VALUES (g % 11), (10), (0)) v(s) GROUP BY g;
SELECT count(*) FILTER (WHERE pg_column_compression(a) IS NOT NULL) AS compressed, count(*) FROM wide_summaries;
SELECT rollup(a), responses(rollup(a)) FROM wide_summaries;
SELECT g, responses(rollup(a)) FROM wide_summaries, generate_series(1, 2) g GROUP BY g ORDER BY g;
-- The transition functions take NULLs themselves: a NULL score or weight skips the row, a NULL
-- state (a user's aggregate without an initcond, one per group) starts from the empty summary.
SELECT nps_state_int4(NULL, 9) AS from_null_state, nps_state_int4(NULL, NULL) IS NULL AS null_stays_null,
       nps_state_weighted_int4(NULL, 9, NULL) IS NULL AS null_weight_skipped;
SELECT nps_state_int4('{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}', NULL) AS null_score_unchanged,
       nps_state_inv_int4('{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}', NULL) AS null_inverse_unchanged;
CREATE AGGREGATE pg_temp.nps_no_initcond(integer) (SFUNC = nps_billing.nps_state_int4, STYPE = nps_billing.npsagg);
CREATE AGGREGATE pg_temp.wnps_no_initcond(integer, float8) (SFUNC = nps_billing.nps_state_weighted_int4, STYPE = nps_billing.npsagg);
SELECT g, nps_state_summary(pg_temp.nps_no_initcond(s)) = nps_agg(s) AS same_as_nps_agg,
       responses(pg_temp.nps_no_initcond(s)) AS responses,
       pg_temp.wnps_no_initcond(s, w) = nps_agg(s, w) AS same_as_weighted
FROM (SELECT g % 3 AS g, CASE WHEN g % 7 = 0 THEN NULL ELSE g % 11 END AS s,
             CASE WHEN g % 5 = 0 THEN NULL ELSE g / 10.0 END AS w FROM generate_series(1, 300) g) v
GROUP BY g ORDER BY g;
SET enable_hashagg = off;
SELECT g, responses(pg_temp.nps_no_initcond(s)) FROM (SELECT g % 4 AS g, g % 11 AS s FROM generate_series(1, 100) g) v GROUP BY g ORDER BY g;
RESET enable_hashagg;
-- nps over NULL scores and weights: those rows do not count
SELECT nps(s) AS unweighted, nps(s, w) AS weighted, responses(nps_agg(s, w)) AS weighted_responses
FROM (VALUES (10, 1.0::float8), (NULL, 1), (0, NULL), (9, 2)) v(s, w);
-- sliding windows over NULL scores (forward and inverse skip them) equal the formula per frame
SELECT count(*) AS frames,
       count(*) FILTER (WHERE n IS DISTINCT FROM f) AS differing
FROM (SELECT nps(s) OVER w AS n,
             100.0 * (count(*) FILTER (WHERE s >= 9) OVER w - count(*) FILTER (WHERE s <= 6) OVER w)
               / nullif(count(s) OVER w, 0) AS f
      FROM (SELECT g, CASE WHEN g % 3 = 0 THEN NULL ELSE (g * 7) % 11 END AS s FROM generate_series(1, 500) g) v
      WINDOW w AS (ORDER BY g ROWS BETWEEN 4 PRECEDING AND CURRENT ROW)) x;
