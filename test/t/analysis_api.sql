-- Analysis API: catalog promises (volatility, PARALLEL SAFE, comments, inlining), SQLSTATEs of
-- bad arguments, and the analyst role of examples/bi/analyst_grants.sql.
BEGIN;
SELECT plan(44);
SET search_path = nps_billing, public;
-- start from empty tables (rolled back at the end)
DELETE FROM response; DELETE FROM survey; DELETE FROM payment_event; DELETE FROM payment_source;

SELECT has_view('nps_billing', 'response_context', 'view response_context exists');
SELECT columns_are('nps_billing', 'response_context', ARRAY[
  'response_id', 'score', 'category', 'channel', 'responded_at',
  'event_id', 'source', 'kind', 'amount', 'currency', 'payment_at', 'attributes', 'days_since_payment',
  'failed_payment_30d'], 'response_context has the documented columns');
SELECT has_function('nps_billing', 'nps_trend', ARRAY['interval', 'timestamp with time zone', 'timestamp with time zone'], 'nps_trend(interval, timestamptz, timestamptz)');
SELECT has_function('nps_billing', 'nps_by', ARRAY['text', 'timestamp with time zone', 'timestamp with time zone', 'integer'], 'nps_by(text, timestamptz, timestamptz, integer)');
SELECT has_function('nps_billing', 'nps_by_days_since_payment', ARRAY['integer'], 'nps_by_days_since_payment(integer)');
SELECT has_function('nps_billing', 'nps_failed_payments', ARRAY['interval'], 'nps_failed_payments(interval)');
SELECT has_function('nps_billing', 'revenue_at_risk', ARRAY['timestamp with time zone'], 'revenue_at_risk(timestamptz)');
SELECT has_function('nps_billing', 'survey_funnel', ARRAY['timestamp with time zone'], 'survey_funnel(timestamptz)');
SELECT has_function('nps_billing', 'nps_alerts', ARRAY['interval', 'double precision', 'text[]', 'integer', 'timestamp with time zone'], 'nps_alerts(interval, float8, text[], integer, timestamptz)');

-- the defaults the contract names
SELECT is((SELECT count(*)::int FROM nps_by('method')), 0, 'nps_by(attribute) alone works (defaults)');
SELECT is((SELECT count(*)::int FROM nps_by_days_since_payment()), 31, 'nps_by_days_since_payment() defaults to 30 days: days 0..30');
SELECT is((SELECT count(*)::int FROM nps_failed_payments()), 2, 'nps_failed_payments() defaults to 30 days: two rows');
SELECT is((SELECT count(*)::int FROM nps_alerts('7 days', 5)), 0, 'nps_alerts(window, threshold) defaults to now()');

CREATE TEMP TABLE analysis_fns AS
SELECT p.oid::regprocedure AS fn, p.provolatile, p.proparallel, p.proisstrict, p.prosecdef, p.prolang
FROM pg_proc p
WHERE p.pronamespace = 'nps_billing'::regnamespace
  AND p.proname IN ('nps_trend', 'nps_by', 'nps_by_days_since_payment', 'nps_failed_payments',
                    'revenue_at_risk', 'survey_funnel', 'nps_alerts');
SELECT is((SELECT count(*)::int FROM analysis_fns), 7, 'seven analysis functions');
SELECT is_empty($$SELECT fn FROM analysis_fns WHERE provolatile <> 's'$$, 'all analysis functions are STABLE');
SELECT is_empty($$SELECT fn FROM analysis_fns WHERE proparallel <> 's'$$, 'all analysis functions are PARALLEL SAFE');
SELECT is_empty($$SELECT fn FROM analysis_fns WHERE proisstrict
                  OR prolang <> (SELECT oid FROM pg_language WHERE lanname = 'sql')
                  OR prosecdef <> (fn::text ~ '^(nps_billing\.)?(nps_failed_payments|revenue_at_risk|survey_funnel)\(')$$,
                'non-strict SQL functions; SECURITY DEFINER exactly for the three that read ids, payments or surveys');
SELECT is_empty($$SELECT fn FROM analysis_fns a JOIN pg_proc p ON p.oid = a.fn
                  WHERE a.prosecdef AND NOT coalesce(p.proconfig @> '{"search_path=pg_catalog, pg_temp"}', false)$$,
                'SECURITY DEFINER functions pin search_path = pg_catalog, pg_temp');
SELECT is_empty($$SELECT fn FROM analysis_fns WHERE obj_description(fn::oid, 'pg_proc') IS NULL$$,
                'every analysis function has a COMMENT');
SELECT isnt(obj_description('nps_billing.response_context'::regclass, 'pg_class'), NULL, 'response_context has a COMMENT');
SELECT volatility_is('nps_billing', 'check_argument', ARRAY['boolean', 'text', 'text'], 'immutable', 'check_argument is IMMUTABLE');
SELECT volatility_is('nps_billing', 'npsagg_from_histogram', ARRAY['bigint[]'], 'immutable', 'npsagg_from_histogram is IMMUTABLE');

-- inlined: EXPLAIN shows the body's scans, not a Function Scan on the function
CREATE FUNCTION pg_temp.plan_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE l text; acc text := '';
BEGIN
  FOR l IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP acc := acc || l || E'\n'; END LOOP;
  RETURN acc;
END $$;
SELECT doesnt_match(pg_temp.plan_of($$SELECT * FROM nps_billing.nps_trend('1 day', '2026-01-01', '2026-01-08')$$),
              'Function Scan on nps_trend', 'nps_trend is inlined into the caller''s plan');
SELECT doesnt_match(pg_temp.plan_of($$SELECT * FROM nps_billing.nps_by('plan')$$),
              'Function Scan on nps_by', 'nps_by is inlined into the caller''s plan');

-- SQLSTATEs of bad arguments
SELECT throws_ok($$SELECT * FROM nps_trend('0 days', '2026-01-01', '2026-02-01')$$, '22023', NULL, 'nps_trend: zero bucket -> 22023');
SELECT throws_ok($$SELECT * FROM nps_trend('1 day', '2026-02-01', '2026-01-01')$$, '22023', NULL, 'nps_trend: since after until -> 22023');
SELECT throws_ok($$SELECT * FROM nps_trend('1 day', '2026-01-01', 'infinity')$$, '22023', NULL, 'nps_trend: infinite range -> 22023');
SELECT throws_ok($$SELECT * FROM nps_trend('1 second', '2026-01-01', '2026-03-01')$$, '54000', NULL, 'nps_trend: too many buckets -> 54000');
SELECT throws_ok($$SELECT * FROM nps_trend('1 day', NULL, '2026-03-01')$$, '22004', NULL, 'nps_trend: NULL since -> 22004');
SELECT throws_ok($$SELECT * FROM nps_by(NULL)$$, '22004', NULL, 'nps_by: NULL attribute -> 22004');
SELECT throws_ok($$SELECT * FROM nps_by('plan', min_responses => 0)$$, '22023', NULL, 'nps_by: min_responses 0 -> 22023');
SELECT throws_ok($$SELECT * FROM nps_by_days_since_payment(-1)$$, '22023', NULL, 'nps_by_days_since_payment: -1 -> 22023');
SELECT throws_ok($$SELECT * FROM nps_failed_payments('-1 day')$$, '22023', NULL, 'nps_failed_payments: negative window -> 22023');
SELECT throws_ok($$SELECT * FROM revenue_at_risk(NULL)$$, '22004', NULL, 'revenue_at_risk: NULL since -> 22004');
SELECT throws_ok($$SELECT * FROM survey_funnel(NULL)$$, '22004', NULL, 'survey_funnel: NULL since -> 22004');
SELECT throws_ok($$SELECT * FROM nps_alerts('7 days', 'NaN')$$, '22023', NULL, 'nps_alerts: NaN threshold -> 22023');
SELECT throws_ok($$SELECT * FROM nps_alerts('7 days', 5, min_responses => 0)$$, '22023', NULL, 'nps_alerts: min_responses 0 -> 22023');
SELECT throws_ok($$SELECT npsagg_from_histogram('{1,2}')$$, '22023', NULL, 'npsagg_from_histogram: 2 counts -> 22023');

-- the analyst role, exactly as the Privacy recipe of README.md (examples/bi/analyst_grants.sql): response
-- scores and dates, every view, every aggregate and non-volatile function. It runs every analysis
-- function and still reads no customer id, comment or token.
CREATE ROLE nps_analyst;
\i examples/bi/analyst_grants.sql
INSERT INTO payment_source (id, name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES (900, 'tap_src', 'pg_class', 'c', 'k', 's');
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
VALUES (900, 'k1', 'succeeded', 'tap1', 10, 'usd', now() - interval '2 days', '{"plan":"pro","method":"card"}');
INSERT INTO survey (token, source_id, customer_id, channel, status, send_after, expires_at, sent_at, created_at)
VALUES ('tap-secret-token', 900, 'tap1', 'email', 'responded', now() - interval '2 days', now() + interval '1 day',
        now() - interval '2 days', now() - interval '2 days');
INSERT INTO response (survey_id, customer_id, score, responded_at)
SELECT id, 'tap1', 9, now() - interval '1 day' FROM survey WHERE token = 'tap-secret-token';
SET ROLE nps_analyst;
SELECT lives_ok($$
  SELECT (SELECT count(*) FROM nps_billing.response_context)
       + (SELECT count(*) FROM nps_billing.nps_trend('1 day', now() - interval '7 days', now()))
       + (SELECT count(*) FROM nps_billing.nps_by('plan', min_responses => 1))
       + (SELECT count(*) FROM nps_billing.nps_by_days_since_payment())
       + (SELECT count(*) FROM nps_billing.nps_failed_payments())
       + (SELECT count(*) FROM nps_billing.revenue_at_risk(now() - interval '30 days'))
       + (SELECT count(*) FROM nps_billing.survey_funnel(now() - interval '30 days'))
       + (SELECT count(*) FROM nps_billing.nps_alerts('7 days', 0, min_responses => 1))$$,
  'the analyst runs every analysis function');
SELECT is((SELECT responded FROM nps_billing.survey_funnel(now() - interval '30 days')), 1::bigint,
          'the analyst sees the funnel');
SELECT throws_ok($$SELECT token FROM nps_billing.survey$$, '42501', NULL, 'the analyst cannot read survey tokens');
SELECT throws_ok($$SELECT customer_id FROM nps_billing.payment_event$$, '42501', NULL, 'the analyst cannot read payment events');
SELECT throws_ok($$SELECT comment FROM nps_billing.response$$, '42501', NULL, 'the analyst cannot read comments');
RESET ROLE;
SELECT is_empty($$
  SELECT p.oid::regprocedure FROM pg_proc p
  WHERE p.pronamespace = 'nps_billing'::regnamespace
    AND has_function_privilege('nps_analyst', p.oid, 'EXECUTE')
    AND p.proname IN ('claim_surveys', 'mark_sent', 'mark_failed', 'record_response', 'forget_customer',
                      'purge', 'track_payments', 'untrack_payments', 'opt_out', 'opt_in', 'expire_surveys')$$,
  'the analyst gets no queue, capture or privacy function');

SELECT * FROM finish();
ROLLBACK;
