-- SQLSTATEs of the aggregates, types and statistics.
BEGIN;
SET LOCAL search_path = nps_billing, public;
SELECT plan(18);
SELECT throws_ok($$SELECT nps(s) FROM (VALUES (11)) v(s)$$, '22003', 'NPS score 11 is out of range 0..10', 'score 11 -> 22003');
SELECT throws_ok($$SELECT nps(s::smallint) FROM (VALUES (-1)) v(s)$$, '22003', 'NPS score -1 is out of range 0..10', 'smallint -1 -> 22003');
SELECT throws_ok($$SELECT nps_agg(s) FROM (VALUES (10000000000::bigint)) v(s)$$, '22003', NULL, 'bigint huge -> 22003');
SELECT throws_ok($$SELECT nps(5, -0.5::float8)$$, '22023', 'NPS weight -0.5 is invalid', 'negative weight -> 22023');
SELECT throws_ok($$SELECT nps(5, 'NaN'::float8)$$, '22023', 'NPS weight NaN is invalid', 'NaN weight -> 22023');
SELECT throws_ok($$SELECT nps_agg(5, '-Infinity'::float8)$$, '22023', 'NPS weight -Infinity is invalid', 'infinite weight -> 22023');
SELECT throws_ok($$SELECT category(11)$$, '22003', 'NPS score 11 is out of range 0..10', 'category(11) -> 22003');
SELECT throws_ok($$SELECT 'nope'::npsagg$$, '22P02', NULL, 'malformed npsagg text -> 22P02');
SELECT throws_ok($$SELECT '{"counts":[0,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,-1]}'::npsagg$$, '22P02', NULL, 'negative weight in text -> 22P02');
SELECT throws_ok($$SELECT nps_ci('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,1]}', 0)$$, '22023', NULL, 'confidence 0 -> 22023');
SELECT throws_ok($$SELECT nps_ci('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,1]}', 0.9, 'exact')$$, '22023', NULL, 'unknown method -> 22023');
SELECT throws_ok($$SELECT 12::nps_score$$, '23514', NULL, 'nps_score domain rejects 12');
SELECT is(nps(s), NULL, 'nps of no rows is NULL') FROM (SELECT 1 AS s WHERE false) e;
SELECT is((nps_ci('{"counts":[0,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}')).low, NULL, 'CI of an empty summary is NULL');
SELECT is((nps_compare('{"counts":[0,0,0,0,0,0,0,0,0,0,5],"weights":[0,0,0,0,0,0,0,0,0,0,5]}',
                       '{"counts":[0,0,0,0,0,0,0,0,0,0,5],"weights":[0,0,0,0,0,0,0,0,0,0,5]}')).p_value, NULL,
          'no variance: p-value is NULL, not a division by zero');
-- weighted statistics use Kish's effective n: 2 rows weighing 1 and 3 -> n_eff = 16/10
SELECT is(round(nps_stderr(nps_agg(s, w))::numeric, 9),
          round((100 * sqrt((0.75 + 0.25 - 0.25) / 1.6))::numeric, 9), 'weighted stderr uses Kish n_eff')
FROM (VALUES (10, 3.0::float8), (0, 1.0)) v(s, w);
SELECT is(round((nps_ci('{"counts":[20,0,0,0,0,0,0,30,0,50,0],"weights":[20,0,0,0,0,0,0,30,0,50,0]}', 0.99, 'wald')).high::numeric, 4),
          round((30 + 2.5758293035489 * 7.8102496759066544)::numeric, 4), '99% Wald CI uses z = 2.5758');
SELECT throws_ok($$SELECT nps(5, 1e200::float8)$$, '22003', NULL, 'weights whose squares overflow -> 22003');
SELECT * FROM finish();
ROLLBACK;
