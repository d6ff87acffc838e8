-- track_payments(): every bad argument gets its SQLSTATE, injection attempts only ever raise,
-- only the table's owner may track, and the catalog of the capture area is as documented.
BEGIN;
SELECT plan(45);

CREATE TABLE tap_cap_pay (id bigint PRIMARY KEY, cust text, cents int, st text, meta jsonb, at timestamptz);
CREATE TABLE tap_cap_victim (x int);
INSERT INTO tap_cap_victim VALUES (1);

SELECT has_function('nps_billing', 'track_payments',
  ARRAY['regclass', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'text', 'text'], 'track_payments exists');
SELECT has_function('nps_billing', 'untrack_payments', ARRAY['regclass'], 'untrack_payments exists');
SELECT has_function('nps_billing', 'opt_out', ARRAY['text'], 'opt_out exists');
SELECT has_function('nps_billing', 'opt_in', ARRAY['text'], 'opt_in exists');
SELECT is_definer('nps_billing', 'opt_out', ARRAY['text'], 'opt_out is SECURITY DEFINER');
SELECT ok((SELECT proconfig @> '{"search_path=pg_catalog, pg_temp"}' FROM pg_proc WHERE oid = 'nps_billing.opt_out(text)'::regprocedure),
          'opt_out pins its search_path');
SELECT volatility_is('nps_billing', 'sample_point', ARRAY['text', 'text'], 'immutable', 'sample_point is immutable');

-- unknown column, wrong type, aggregate / window / set-returning, syntax
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'nope', 'id::text', 'true')$$, '42703', NULL, 'unknown column: 42703');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', $q$st = 'ok' AND other.x = 1$q$)$$, '42P01', NULL, 'unknown table qualifier: 42P01');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', 'cents')$$, '42804', NULL, 'succeeded_when must be boolean: 42804');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', 'true', failed_when => 'st')$$, '42804', NULL, 'failed_when must be boolean: 42804');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', 'true', amount => 'st')$$, '42804', NULL, 'amount must be numeric: 42804');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', 'true', paid_at => 'cents')$$, '42804', NULL, 'paid_at must be a timestamp: 42804');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', 'true', attributes => 'cents')$$, '42804', NULL, 'attributes must be jsonb: 42804');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', 'count(*) > 0')$$, '0A000', NULL, 'aggregate: 0A000');
-- the contact expressions are checked like the others
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', 'true', recipient => 'nope')$$, '42703', NULL, 'recipient: unknown column: 42703');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', 'true', locale => 'no_such_locale_fn(cust)')$$, '42883', NULL, 'locale: unknown function: 42883');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', 'true', time_zone => 'random()::text')$$, '42P17', NULL, 'time_zone: a volatile function is refused: 42P17');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', 'true', recipient => 'max(cust)')$$, '0A000', NULL, 'recipient: aggregate: 0A000');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', 'true', recipient => 'cust FROM tap_cap_victim')$$, '42601', NULL, 'recipient: FROM smuggled in: 42601');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', 'true', locale => 'st; DROP TABLE tap_cap_victim')$$, '42601', NULL, 'locale: a second statement: 42601');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', 'true', amount => 'sum(cents) OVER ()')$$, '0A000', NULL, 'window function: 0A000');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'generate_series(1, 2)::text', 'id::text', 'true')$$, '0A000', NULL, 'set-returning function: 0A000');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', $q$st = 'ok' AND$q$)$$, '42601', NULL, 'syntax error: 42601');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', '', 'true')$$, '42601', NULL, 'empty expression: 42601');

-- injection attempts: each only raises, nothing runs
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text), (1', 'true')$$, '42601', NULL, 'smuggled second expression: 42601');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text, 1', 'true')$$, '42601', NULL, 'two expressions: 42601');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', '1; DROP TABLE tap_cap_victim', 'true')$$, '42601', NULL, 'a second statement: 42601');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text FROM tap_cap_victim', 'true')$$, '42601', NULL, 'FROM smuggled in: 42601');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text WHERE false', 'true')$$, '42601', NULL, 'WHERE smuggled in: 42601');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text --', 'true', amount => '1) FROM tap_cap_victim; --')$$, '42601', NULL, 'comment / parenthesis escape: 42601');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text /*', 'true')$$, '42601', NULL, 'unterminated comment: 42601');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text AS x', 'true')$$, '42601', NULL, 'alias: 42601');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', '$1', 'true')$$, '42P02', NULL, 'parameters are not expressions over the row: 42P02');
SELECT is((SELECT count(*) FROM tap_cap_victim), 1::bigint, 'the victim table is untouched');
SELECT is((SELECT count(*) FROM nps_billing.payment_source WHERE relid = 'tap_cap_pay'::regclass), 0::bigint, 'no source was created by the failed calls');

-- arguments
SELECT throws_ok($$SELECT nps_billing.track_payments(NULL, 'cust', 'id::text', 'true')$$, '22004', NULL, 'NULL source: 22004');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', NULL, 'true')$$, '22004', NULL, 'NULL payment_key: 22004');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', 'true', on_error => 'ignore')$$, '22023', NULL, 'bad on_error: 22023');
SELECT throws_ok($$SELECT nps_billing.untrack_payments('tap_cap_pay')$$, '42704', NULL, 'untracking an untracked table: 42704');

-- a scalar subquery is allowed; tracking twice is refused
SELECT ok(nps_billing.track_payments('tap_cap_pay', '(SELECT max(v.x)::text FROM tap_cap_victim v) || cust', 'id::text',
          $q$st = 'ok'$q$, amount => 'cents / 100.0', paid_at => 'at', attributes => 'meta', name => 'tap_cap',
          recipient => $q$meta->>'email'$q$, locale => $q$(SELECT 'de' FROM tap_cap_victim v LIMIT 1)$q$, time_zone => 'st') > 0,
          'scalar subquery, all slots: tracked');
SELECT is((SELECT (recipient_expr, locale_expr, time_zone_expr, expressions_as_written->>'recipient')::text
             FROM nps_billing.payment_source WHERE name = 'tap_cap'),
          $q$("(meta ->> 'email'::text)","(SELECT 'de'::text AS text FROM public.tap_cap_victim v LIMIT 1)",st,meta->>'email')$q$,
          'the contact expressions are stored bound (schema-qualified) and as written');
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_pay', 'cust', 'id::text', 'true', name => 'tap_cap2')$$, '42710', NULL, 'tracking a tracked table: 42710');

-- only the owner may track
CREATE ROLE regress_tap_cap_other;
GRANT USAGE ON SCHEMA nps_billing TO regress_tap_cap_other;
GRANT EXECUTE ON FUNCTION nps_billing.track_payments(regclass, text, text, text, text, text, text, text, text, text, text, text, text, text) TO regress_tap_cap_other;
CREATE TABLE tap_cap_not_mine (id int, cust text);
SET LOCAL ROLE regress_tap_cap_other;
SELECT throws_ok($$SELECT nps_billing.track_payments('tap_cap_not_mine', 'cust', 'id::text', 'true')$$, '42501', NULL, 'not the owner: 42501');
RESET ROLE;
-- the triggers
SELECT is((SELECT array_agg(tgname::text ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'tap_cap_pay'::regclass),
          ARRAY['nps_billing_capture_insert', 'nps_billing_capture_update'], 'two statement triggers with transition tables');

SELECT * FROM finish();
ROLLBACK;
