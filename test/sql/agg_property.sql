-- Property test: every public aggregate, npsagg function and statistic, fed random and extreme
-- values (NULLs, huge and negative integers, NaN/Infinity, denormals, huge and malformed
-- texts, maximal counts), gives either a data-exception error (SQLSTATE class 22) or a defined
-- result, never a crash. Defined results are checked too: NPS within -100..100, no NaN, every
-- npsagg reads back from its text, intervals ordered. Prints only what breaks a property.
SET search_path = nps_billing, public;
SELECT setseed(0.4242);

CREATE TEMP TABLE ints(v bigint);
INSERT INTO ints VALUES (NULL), (0), (1), (6), (7), (9), (10), (-1), (11), (32767), (-32768),
  (2147483647), (-2147483648), (9223372036854775807), (-9223372036854775808), (100000000000);
CREATE TEMP TABLE floats(v float8);
INSERT INTO floats VALUES (NULL), (0), ('-0'), (1), (0.5), (100), (1e-320), (5e-324), (1e-300),
  (1e150), (1e154), (1e200), (1.7976931348623157e308), ('NaN'), ('Infinity'), ('-Infinity'), (-1), (-1e-300);
CREATE TEMP TABLE texts(v text);
INSERT INTO texts VALUES (NULL), (''), ('{}'), ('null'), ('[]'), ('{"counts":[]}'),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,1]}'),
  ('{"counts":[20,0,0,0,0,0,0,30,0,50,0],"weights":[20,0,0,0,0,0,0,30,0,50,0],"weight_sq":100}'),
  ('{"counts":[9223372036854775807,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0]}'),
  ('{"counts":[4611686018427387904,0,0,0,0,0,0,0,0,0,4611686018427387903],"weights":[0,0,0,0,0,0,0,0,0,0,0]}'),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1e154,0,0,0,0,0,0,0,0,0,1e154],"weight_sq":2e308}'),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1e153,0,0,0,0,0,0,0,0,0,1e153],"weight_sq":2e306}'),
  ('{"counts":[3,0,0,0,0,0,0,0,0,0,1],"weights":[1e-320,0,0,0,0,0,0,0,0,0,5e-324],"weight_sq":0}'),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[NaN,0,0,0,0,0,0,0,0,0,1]}'),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[Infinity,0,0,0,0,0,0,0,0,0,1]}'),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,1],"weight_sq":-1}'),
  ('{"counts":[-1,0,0,0,0,0,0,0,0,0,1],"weights":[0,0,0,0,0,0,0,0,0,0,1]}'),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,1],"weight_sq":1e999}'),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,1,5],"weights":[1,0,0,0,0,0,0,0,0,0,1]}'),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,1],"extra":1}'),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,1]'),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,"1"]}'),
  ('{"counts":[0x10,0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,1]}'),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,1]}' || repeat(' ', 100000) || 'x'),
  ('{"counts":[' || repeat('9', 5000) || ',0,0,0,0,0,0,0,0,0,1],"weights":[1,0,0,0,0,0,0,0,0,0,1]}'),
  ('{"counts":[1,0,0,0,0,0,0,0,0,0,1],"weights":[0.' || repeat('1', 5000) || ',0,0,0,0,0,0,0,0,0,1]}'),
  (repeat('{"counts":', 10000)), (repeat('é', 3000)), ('{"cöunts":[1]}');

-- Runs one SQL text: 'result' when it gave a defined result that passes `chk` (a boolean SQL
-- expression over the single result column r), 'class 22 error', else what went wrong.
CREATE FUNCTION pg_temp.try(q text, chk text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE ok boolean; state text;
BEGIN
  EXECUTE format('SELECT bool_and(coalesce(%s, true)) FROM (%s) t(r)', chk, q) INTO ok;
  IF ok IS DISTINCT FROM false THEN RETURN 'result'; END IF;
  RETURN 'property violated: ' || left(q, 300);
EXCEPTION WHEN OTHERS THEN
  state := SQLSTATE;
  -- did the call itself raise, or only the check of its result (e.g. text that does not read back)?
  BEGIN
    EXECUTE format('SELECT count(r::text) FROM (%s) t(r)', q);
  EXCEPTION WHEN OTHERS THEN
    IF SQLSTATE LIKE '22%' THEN RETURN 'class 22 error'; END IF;
    RETURN SQLSTATE || ' ' || left(SQLERRM, 200) || ' in: ' || left(q, 300);
  END;
  RETURN 'property check raised ' || state || ' on the result of: ' || left(q, 300);
END $$;

CREATE TEMP TABLE calls(q text, chk text);
-- scalar functions on every extreme value
INSERT INTO calls SELECT format('SELECT category(%s::%s)', quote_nullable(v), t), 'r IS NOT NULL OR true'
  FROM ints, unnest('{smallint,integer,bigint}'::text[]) t;
INSERT INTO calls SELECT format('SELECT %s::npsagg', quote_nullable(v)), 'r::text::npsagg = r' FROM texts;
INSERT INTO calls SELECT format('SELECT %s(%s::npsagg)', f, quote_nullable(v)), c
  FROM texts, (VALUES ('nps', 'r BETWEEN -100 AND 100'), ('weighted_nps', 'r BETWEEN -100 AND 100'),
                      ('responses', 'r >= 0'), ('promoters', 'r >= 0'), ('passives', 'r >= 0'),
                      ('detractors', 'r >= 0'), ('mean_score', 'r BETWEEN 0 AND 10'),
                      ('nps_stderr', 'r >= 0 AND r <> ''NaN'''), ('score_histogram', 'cardinality(r) = 11')) f(f, c);
INSERT INTO calls SELECT format('SELECT nps_ci(%s::npsagg, %s, %s)', quote_nullable(t.v), quote_nullable(f.v), m),
                         '((r).low IS NULL AND (r).high IS NULL) OR ((r).low <= (r).high AND (r).low >= -100 AND (r).high <= 100)'
  FROM texts t, floats f, unnest(ARRAY['''wald''', '''adjusted_wald''', '''''', 'NULL', quote_literal(repeat('x', 10000))]) m
  WHERE t.v IS NULL OR length(t.v) < 200;
INSERT INTO calls SELECT format('SELECT nps_compare(%s::npsagg, %s::npsagg)', quote_nullable(a.v), quote_nullable(b.v)),
                         '(r).p_value IS NULL OR ((r).p_value BETWEEN 0 AND 1 AND (r).stderr >= 0)'
  FROM texts a, texts b WHERE (a.v IS NULL OR length(a.v) < 200) AND (b.v IS NULL OR length(b.v) < 200);
INSERT INTO calls SELECT format('SELECT %s::npsagg = %s::npsagg', quote_nullable(a.v), quote_nullable(b.v)), 'true'
  FROM texts a, texts b WHERE (a.v IS NULL OR length(a.v) < 200) AND (b.v IS NULL OR length(b.v) < 200);
-- aggregates over random multisets of extreme values, all integer types, plain, grouped,
-- weighted, as summaries, rolled up, and in sliding windows
INSERT INTO calls
SELECT replace(a.q, '$D', format('(SELECT (ARRAY[%s])[1 + (hashint4(g + %s) & 2147483647) %% %s]::%s AS s,
                                         (ARRAY[%s]::float8[])[1 + (hashint4(g * 7 + %s) & 2147483647) %% %s] AS w, g
                                  FROM generate_series(1, %s) g) d', si.l, k, si.n, t, fl.l, k, fl.n, 1 + k * 37 % 300)), a.c
FROM generate_series(1, 40) k,
     -- every fourth set draws from all extremes, the others from valid scores (so that most
     -- sets give a result to check) and every third from all weights
     LATERAL (SELECT string_agg(coalesce(v::text, 'NULL'), ',') AS l, count(*) AS n FROM ints
              WHERE k % 4 = 0 OR v IS NULL OR v BETWEEN 0 AND 10) si,
     LATERAL (SELECT string_agg(coalesce(quote_literal(v::text), 'NULL'), ',') AS l, count(*) AS n FROM floats
              WHERE k % 3 = 0 OR v IS NULL OR v BETWEEN 0 AND 1e150) fl,
     unnest('{smallint,integer,bigint}'::text[]) t,
     (VALUES ('SELECT nps(s) FROM $D', 'r BETWEEN -100 AND 100'),
             ('SELECT nps(s, w) FROM $D', 'r BETWEEN -100 AND 100'),
             ('SELECT nps_agg(s) FROM $D', 'r::text::npsagg = r'),
             ('SELECT nps_agg(s, w) FROM $D', 'r::text::npsagg = r AND (weighted_nps(r) IS NULL OR weighted_nps(r) BETWEEN -100 AND 100)'),
             ('SELECT nps_agg(s, w) FILTER (WHERE w IS NULL OR w BETWEEN 0 AND 1e300) FROM $D', 'r::text::npsagg = r AND coalesce(nps_stderr(r) <> ''NaN'', true)'),
             ('SELECT rollup(x) FROM (SELECT nps_agg(s, w) FILTER (WHERE w BETWEEN 0 AND 1e300) AS x FROM $D GROUP BY g % 5) y', 'r::text::npsagg = r'),
             ('SELECT nps(s) OVER (ORDER BY g ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) FROM $D', 'r BETWEEN -100 AND 100'),
             ('SELECT nps_agg(s) OVER (ORDER BY g ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM $D', 'responses(r) <= 3')) a(q, c);
-- the aggregates' support functions called directly on hostile states and values
INSERT INTO calls SELECT format('SELECT %s(%s::npsagg, %s::%s)', f, quote_nullable(t.v), quote_nullable(i.v), ty), 'r::text::npsagg = r'
  FROM texts t, ints i, unnest('{nps_state_int2,nps_state_int4,nps_state_int8,nps_state_inv_int2,nps_state_inv_int4,nps_state_inv_int8}'::text[]) f,
       LATERAL (SELECT CASE right(f, 1) WHEN '2' THEN 'smallint' WHEN '4' THEN 'integer' ELSE 'bigint' END) y(ty)
  WHERE t.v IS NULL OR length(t.v) < 200;
INSERT INTO calls SELECT format('SELECT nps_state_weighted_int8(%s::npsagg, %s, %s::float8)', quote_nullable(t.v), quote_nullable(i.v), quote_nullable(f.v)), 'r::text::npsagg = r'
  FROM texts t, ints i, floats f WHERE (t.v IS NULL OR length(t.v) < 200) AND (i.v IS NULL OR i.v BETWEEN -1 AND 11);
INSERT INTO calls SELECT format('SELECT nps_state_merge(%s::npsagg, %s::npsagg)', quote_nullable(a.v), quote_nullable(b.v)), 'r::text::npsagg = r'
  FROM texts a, texts b WHERE (a.v IS NULL OR length(a.v) < 200) AND (b.v IS NULL OR length(b.v) < 200);
INSERT INTO calls SELECT format('SELECT %s(%s::npsagg)', f, quote_nullable(t.v)), c
  FROM texts t, (VALUES ('nps_state_nps', 'r BETWEEN -100 AND 100'), ('nps_state_weighted_nps', 'r BETWEEN -100 AND 100'),
                        ('nps_state_summary', 'r::text::npsagg = r'), ('nps_state_weighted_summary', 'r::text::npsagg = r'),
                        ('nps_state_rollup', 'r::text::npsagg = r')) f(f, c)
  WHERE t.v IS NULL OR length(t.v) < 200;
-- rollup over maximal and hostile stored summaries
INSERT INTO calls SELECT format('SELECT rollup(a) FROM (VALUES (%s::npsagg), (%s::npsagg), (%s::npsagg)) v(a)',
                                quote_nullable(a.v), quote_nullable(b.v), quote_nullable(b.v)), 'r::text::npsagg = r'
  FROM texts a, texts b WHERE (a.v IS NULL OR length(a.v) < 200) AND (b.v IS NULL OR length(b.v) < 200);

SELECT count(*) > 3000 AS enough_calls FROM calls;
CREATE TEMP TABLE outcome AS SELECT q, pg_temp.try(q, chk) AS r FROM calls;
SELECT CASE WHEN r IN ('result', 'class 22 error') THEN r ELSE 'failure' END AS outcome, count(*)
FROM outcome GROUP BY 1 ORDER BY 1;
SELECT r AS failures FROM outcome WHERE r NOT IN ('result', 'class 22 error');
