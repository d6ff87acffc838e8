-- npsagg text/binary forms, equality, validation; category(); check values of the contract.
SET search_path = nps_billing, public;
SET extra_float_digits = 0;

-- check values: 50 promoters, 30 passives, 20 detractors
CREATE TEMP TABLE chk AS SELECT '{"counts":[20,0,0,0,0,0,0,30,0,50,0],"weights":[20,0,0,0,0,0,0,30,0,50,0]}'::npsagg AS a;
SELECT a FROM chk;
SELECT nps(a), weighted_nps(a), responses(a), promoters(a), passives(a), detractors(a),
       round(nps_stderr(a)::numeric, 6) AS stderr, mean_score(a), score_histogram(a) FROM chk;
SELECT round(low::numeric, 5) AS low, round(high::numeric, 5) AS high FROM chk, nps_ci(a, 0.95, 'wald');
SELECT round(low::numeric, 5) AS low, round(high::numeric, 5) AS high FROM chk, nps_ci(a);
SELECT round(((low + high) / 2)::numeric, 5) AS adjusted_centre FROM chk, nps_ci(a);

-- text round trip, equality
SELECT a::text::npsagg = a AS text_roundtrip, a <> a AS differs FROM chk;
-- binary round trip through send/recv (COPY BINARY)
COPY chk TO '/tmp/nps_billing_regress_npsagg.bin' WITH (FORMAT binary);
CREATE TEMP TABLE chk_bin (a npsagg);
COPY chk_bin FROM '/tmp/nps_billing_regress_npsagg.bin' WITH (FORMAT binary);
SELECT b.a = c.a AS binary_roundtrip, b.a::text = c.a::text AS same_text FROM chk_bin b, chk c;
-- a binary npsagg with a negative count: a bytea field read back as npsagg goes through recv
CREATE TEMP TABLE bad_bin AS
SELECT int4send(1) || int8send(-5) || decode(repeat('00', 80), 'hex')
       || decode(repeat('00', 96), 'hex') AS b;
COPY bad_bin TO '/tmp/nps_billing_regress_bad.bin' WITH (FORMAT binary);
COPY chk_bin FROM '/tmp/nps_billing_regress_bad.bin' WITH (FORMAT binary);
-- truncated binary
CREATE TEMP TABLE short_bin AS SELECT int4send(1) || int8send(5) AS b;
COPY short_bin TO '/tmp/nps_billing_regress_short.bin' WITH (FORMAT binary);
COPY chk_bin FROM '/tmp/nps_billing_regress_short.bin' WITH (FORMAT binary);
-- the contract's two-key form is accepted (weight_sq derived)
SELECT '{"counts":[1,0,0,0,0,0,0,0,0,0,2],"weights":[1,0,0,0,0,0,0,0,0,0,2]}'::npsagg;
SELECT ' { "weights" : [0,0,0,0,0,0,0,0,0,0,2.5] , "counts" : [0,0,0,0,0,0,0,0,0,0,1], "weight_sq": 6.25 } '::npsagg;

-- malformed input: 22P02 with the reason
\set VERBOSITY default
SELECT 'garbage'::npsagg;
SELECT '{"counts":[1,2,3],"weights":[1,2,3]}'::npsagg;
SELECT '{"counts":[-1,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}'::npsagg;
SELECT '{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[NaN,0,0,0,0,0,0,0,0,0,0]}'::npsagg;
SELECT '{"counts":[0,0,0,0,0,0,0,0,0,0,0],"weights":[1,0,0,0,0,0,0,0,0,0,0]}'::npsagg;
SELECT '{"counts":[1,0,0,0,0,0,0,0,0,0,0],"weights":[1,0,0,0,0,0,0,0,0,0,0]} x'::npsagg;
SELECT '{"counts":[1.5,0,0,0,0,0,0,0,0,0,0],"weights":[1,0,0,0,0,0,0,0,0,0,0]}'::npsagg;
SELECT '{"counts":[1,0,0,0,0,0,0,0,0,0,0],"counts":[1,0,0,0,0,0,0,0,0,0,0]}'::npsagg;
SELECT '{"counts":[99999999999999999999,0,0,0,0,0,0,0,0,0,0],"weights":[1,0,0,0,0,0,0,0,0,0,0]}'::npsagg;
\set VERBOSITY terse

-- category()
SELECT s, category(s) FROM generate_series(0, 10) s;
SELECT category(NULL::integer), category(7::smallint), category(9::bigint);
SELECT category(11);
SELECT category(-1::bigint);
SELECT 3::nps_score;
SELECT 11::nps_score;

-- statistics argument errors
SELECT * FROM chk, nps_ci(a, 1.5);
SELECT * FROM chk, nps_ci(a, 0.9, 'bootstrap');
