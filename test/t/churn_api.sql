-- Churn, retention, drivers and comment themes: catalog promises, SQLSTATEs, and what the
-- analyst role of examples/bi/analyst_grants.sql gets from them (aggregates and frequent
-- terms only; never a customer id, a comment or a rare word).
BEGIN;
SELECT plan(29);
SET search_path = nps_billing, public;
DELETE FROM response; DELETE FROM survey; DELETE FROM payment_event; DELETE FROM payment_source;

SELECT has_function('nps_billing', 'nps_churn', ARRAY['interval', 'timestamp with time zone', 'timestamp with time zone', 'timestamp with time zone'], 'nps_churn(after, since, until, as_of)');
SELECT has_function('nps_billing', 'nps_retention', ARRAY['interval', 'interval', 'timestamp with time zone', 'timestamp with time zone', 'interval', 'timestamp with time zone'], 'nps_retention(bucket, horizon, since, until, after, as_of)');
SELECT has_function('nps_billing', 'nps_drivers', ARRAY['text[]', 'timestamp with time zone', 'timestamp with time zone', 'integer'], 'nps_drivers(attributes, since, until, min_responses)');
SELECT has_function('nps_billing', 'comment_terms', ARRAY['nps_billing.nps_category', 'timestamp with time zone', 'timestamp with time zone', 'regconfig', 'integer'], 'comment_terms(category, since, until, config, min_answers)');
SELECT has_function('nps_billing', 'wilson_ci', ARRAY['bigint', 'bigint', 'double precision'], 'wilson_ci(successes, trials, confidence)');
SELECT has_index('nps_billing', 'response', 'response_commented_idx', 'response_commented_idx (commented answers by time)');
SELECT has_index('nps_billing', 'payment_event', 'payment_event_customer_idx', 'payment_event_customer_idx (customer_id, occurred_at): the churn probes');

-- defaults
SELECT is((SELECT count(*)::int FROM nps_churn()), 3, 'nps_churn() defaults: one row per category');
SELECT is((SELECT count(*)::int FROM nps_retention()), 36, 'nps_retention() defaults: 12 buckets of 30 days up to 360 days, per category');
SELECT is((SELECT count(*)::int FROM nps_drivers('{plan}')), 0, 'nps_drivers(attributes) alone works');
SELECT is((SELECT count(*)::int FROM comment_terms('detractor')), 0, 'comment_terms(category) alone works');
SELECT is((SELECT proargdefaults IS NOT NULL FROM pg_proc WHERE oid = 'comment_terms(nps_category, timestamptz, timestamptz, regconfig, integer)'::regprocedure), true, 'comment_terms has defaults');

CREATE TEMP TABLE fns AS
SELECT p.oid::regprocedure AS fn, p.provolatile, p.proparallel, p.proisstrict, p.prosecdef, p.proconfig
FROM pg_proc p
WHERE p.pronamespace = 'nps_billing'::regnamespace
  AND p.proname IN ('nps_churn', 'nps_retention', 'nps_drivers', 'comment_terms');
SELECT is((SELECT count(*)::int FROM fns), 4, 'four functions');
SELECT is_empty($$SELECT fn FROM fns WHERE provolatile <> 's' OR proparallel <> 's' OR proisstrict$$, 'STABLE, PARALLEL SAFE, not STRICT');
SELECT is_empty($$SELECT fn FROM fns WHERE prosecdef <> (fn::text !~ 'nps_drivers')$$,
                'SECURITY DEFINER exactly for the three that read customer ids, payments or comments');
SELECT is_empty($$SELECT fn FROM fns WHERE prosecdef AND NOT coalesce(proconfig @> '{"search_path=pg_catalog, pg_temp"}', false)$$,
                'SECURITY DEFINER functions pin search_path = pg_catalog, pg_temp');
SELECT is_empty($$SELECT p.oid::regprocedure FROM pg_proc p WHERE p.pronamespace = 'nps_billing'::regnamespace
                    AND p.proname IN ('nps_churn', 'nps_retention', 'nps_drivers', 'comment_terms', 'wilson_ci',
                                      'proportion_compare', 'normal_cdf', 'normal_quantile', 'churn_arguments_ok')
                    AND obj_description(p.oid, 'pg_proc') IS NULL$$, 'every new function has a COMMENT');
SELECT volatility_is('nps_billing', 'wilson_ci', ARRAY['bigint', 'bigint', 'double precision'], 'immutable', 'wilson_ci is IMMUTABLE');
SELECT is((SELECT count(*)::int FROM pg_proc p WHERE p.oid = 'nps_alerts(interval, float8, text[], integer, timestamptz)'::regprocedure
            AND 'q_value' = ANY (p.proargnames)), 1, 'nps_alerts returns q_value');

-- SQLSTATEs
SELECT throws_ok($$SELECT * FROM nps_churn(NULL)$$, '22004', NULL, 'nps_churn: NULL after -> 22004');
SELECT throws_ok($$SELECT * FROM nps_churn('0 days')$$, '22023', NULL, 'nps_churn: zero window -> 22023');
SELECT throws_ok($$SELECT * FROM nps_retention('1 minute', '10 years')$$, '54000', NULL, 'nps_retention: too many buckets -> 54000');
SELECT throws_ok($$SELECT * FROM comment_terms('detractor', min_answers => 1)$$, '22023', NULL, 'comment_terms: min_answers below 3 -> 22023');

-- the analyst: a customer who answered as a detractor, stopped paying, and wrote a comment
-- with their own name in it; four other detractors complain about a charge.
CREATE ROLE nps_analyst;
\i examples/bi/analyst_grants.sql
INSERT INTO payment_source (id, name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES (900, 'tap_src', 'pg_class', 'c', 'k', 's');
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT 900, 'k' || g, 'succeeded', 'tap-secret-' || g, 10, 'usd', now() - interval '100 days', '{"plan":"pro"}'
FROM generate_series(1, 5) g;
INSERT INTO response (customer_id, score, comment, responded_at)
SELECT 'tap-secret-' || g, 2, CASE WHEN g = 1 THEN 'Zebediah here, the charge was unclear' ELSE 'unclear charge' END,
       now() - interval '90 days'
FROM generate_series(1, 5) g;
SET ROLE nps_analyst;
SELECT lives_ok($$
  SELECT (SELECT count(*) FROM nps_billing.nps_churn())
       + (SELECT count(*) FROM nps_billing.nps_retention())
       + (SELECT count(*) FROM nps_billing.nps_drivers('{plan}', min_responses => 1))
       + (SELECT count(*) FROM nps_billing.comment_terms('detractor'))$$,
  'the analyst runs nps_churn, nps_retention, nps_drivers and comment_terms');
SELECT is((SELECT churned FROM nps_billing.nps_churn() WHERE category = 'detractor'), 5::bigint,
          'the analyst sees churn counts (5 detractors stopped paying)');
SELECT is((SELECT array_agg(term ORDER BY term) FROM nps_billing.comment_terms('detractor')), '{charg,unclear}'::text[],
          'the analyst sees the terms five detractors wrote');
SELECT is_empty($$SELECT term FROM nps_billing.comment_terms('detractor', min_answers => 3) WHERE term ~ 'zebediah'$$,
                'a word one person wrote (their name) never comes out');
SELECT throws_ok($$SELECT comment FROM nps_billing.response$$, '42501', NULL, 'the analyst still cannot read comments');
SELECT throws_ok($$SELECT customer_id FROM nps_billing.payment_event$$, '42501', NULL, 'the analyst still cannot read payment events');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
