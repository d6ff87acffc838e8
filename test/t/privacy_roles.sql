-- The role recipes of docs/privacy.md, run exactly as documented, and what each role may
-- and may not do; nothing of the schema is usable by PUBLIC (types and sequences too).
BEGIN;
SELECT plan(74);

-- ---- the recipes (copied verbatim into README.md (Privacy)) ----
-- sender: leases surveys and reports deliveries; reads no table, no response
CREATE ROLE nps_sender NOLOGIN;
GRANT USAGE ON SCHEMA nps_billing TO nps_sender;
GRANT EXECUTE ON FUNCTION nps_billing.claim_surveys(text, integer, interval),
                          nps_billing.mark_sent(bigint, text),
                          nps_billing.mark_failed(bigint, text, text, interval),
                          nps_billing.mark_sent(bigint[], text),
                          nps_billing.mark_failed(bigint[], text, text, interval) TO nps_sender;
-- response collector: the web/SMS endpoint that stores answers by token, nothing else
CREATE ROLE nps_collector NOLOGIN;
GRANT USAGE ON SCHEMA nps_billing TO nps_collector;
GRANT EXECUTE ON FUNCTION nps_billing.record_response(text, integer, text, timestamptz) TO nps_collector;
-- analyst: scores and dates of responses (no comment, no customer id, no survey link), every
-- aggregate and every non-volatile function (calculations and read-only analysis), every view;
-- no table holding tokens, no function that writes
CREATE ROLE nps_analyst NOLOGIN;
\i examples/bi/analyst_grants.sql
-- maintenance (the scheduled jobs and erasure requests): expire, purge, forget; reads nothing
CREATE ROLE nps_maintenance NOLOGIN;
GRANT USAGE ON SCHEMA nps_billing TO nps_maintenance;
GRANT EXECUTE ON FUNCTION nps_billing.expire_surveys(), nps_billing.purge(interval),
                          nps_billing.forget_customer(text) TO nps_maintenance;
-- customer success: works the follow-ups; sees customer ids, comments, notes and payment
-- context; no token, no survey, writes only through the follow-up functions
CREATE ROLE nps_success NOLOGIN;
GRANT USAGE ON SCHEMA nps_billing TO nps_success;
GRANT EXECUTE ON FUNCTION nps_billing.claim_follow_ups(text, integer, interval),
                          nps_billing.update_follow_up(bigint, text, text, text),
                          nps_billing.resolve_follow_up(bigint, text, text, text),
                          nps_billing.release_follow_up(bigint, text),
                          nps_billing.follow_up_metrics(timestamptz, timestamptz, interval) TO nps_success;
GRANT SELECT ON nps_billing.follow_up, nps_billing.follow_up_note, nps_billing.follow_up_policy TO nps_success;
GRANT SELECT (id, customer_id, score, category, comment, channel, responded_at, updated_at,
              payment_source_id, payment_kind, payment_amount, payment_currency, payment_at,
              payment_attributes, days_since_payment, failed_payment_30d) ON nps_billing.response TO nps_success;
GRANT SELECT (id, source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
  ON nps_billing.payment_event TO nps_success;
GRANT SELECT (id, name) ON nps_billing.payment_source TO nps_success;
-- ---- end of recipes ----

-- run a statement as a role (the role switch is undone on error by throws_ok's subtransaction)
CREATE FUNCTION pg_temp.as_role(r text, q text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('role', r, true);
  EXECUTE q;
  PERFORM set_config('role', 'none', true);
END $$;

CREATE TEMP TABLE pr_pay (id int);
INSERT INTO nps_billing.payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES ('pr', 'pr_pay', 'x', 'y', 'z');
INSERT INTO nps_billing.survey (id, token, source_id, customer_id, channel, send_after, expires_at)
SELECT 7700 + g, 'pr-token-' || g, p.id, 'pr-cust-' || g, 'email', now() - interval '1 hour' + g * interval '1 second', now() + interval '1 day'
  FROM nps_billing.payment_source p, generate_series(1, 3) g WHERE p.name = 'pr';

-- sender
SELECT lives_ok($$SELECT pg_temp.as_role('nps_sender', $q$SELECT count(*) FROM nps_billing.claim_surveys('s1', 2)$q$)$$, 'sender: claim_surveys');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_sender', $q$SELECT nps_billing.mark_sent(7701, 's1')$q$)$$, 'sender: mark_sent');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_sender', $q$SELECT nps_billing.mark_failed(7702, 's1', 'bounce')$q$)$$, 'sender: mark_failed');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_sender', 'SELECT * FROM nps_billing.survey')$$, '42501', NULL, 'sender cannot read the survey table');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_sender', 'SELECT score FROM nps_billing.response')$$, '42501', NULL, 'sender cannot read responses');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_sender', 'SELECT * FROM nps_billing.payment_event')$$, '42501', NULL, 'sender cannot read payment events');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_sender', $q$SELECT nps_billing.record_response('pr-token-3', 9)$q$)$$, '42501', NULL, 'sender cannot record responses');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_sender', 'SELECT nps_billing.expire_surveys()')$$, '42501', NULL, 'sender cannot expire surveys');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_sender', $q$SELECT nps_billing.forget_customer('pr-cust-1')$q$)$$, '42501', NULL, 'sender cannot forget customers');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_sender', $q$SELECT * FROM nps_billing.mark_sent(ARRAY[7703]::bigint[], 's1')$q$)$$, 'sender: batch mark_sent');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_sender', $q$UPDATE nps_billing.survey SET status = 'sent'$q$)$$, '42501', NULL, 'sender cannot update surveys directly');

-- collector
SELECT lives_ok($$SELECT pg_temp.as_role('nps_collector', $q$SELECT nps_billing.record_response('pr-token-3', 9, 'ok')$q$)$$, 'collector: record_response');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_collector', $q$SELECT nps_billing.record_response('pr-token-1', 2, 'not ok')$q$)$$, 'collector: record_response of a detractor');
SELECT is((SELECT count(*)::int FROM nps_billing.follow_up f JOIN nps_billing.response r ON r.id = f.response_id WHERE r.customer_id = 'pr-cust-1'), 1,
          '... creates its follow-up though the collector has no grant on follow_up');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_collector', 'SELECT * FROM nps_billing.follow_up')$$, '42501', NULL, 'collector cannot read follow-ups');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_collector', $q$SELECT * FROM nps_billing.claim_surveys('c')$q$)$$, '42501', NULL, 'collector cannot claim');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_collector', $q$SELECT nps_billing.mark_sent(7701, 'c')$q$)$$, '42501', NULL, 'collector cannot mark sent');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_collector', 'SELECT score FROM nps_billing.response')$$, '42501', NULL, 'collector cannot read responses');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_collector', 'SELECT token FROM nps_billing.survey')$$, '42501', NULL, 'collector cannot read surveys (tokens)');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_collector', $q$SELECT nps_billing.purge('1 day')$q$)$$, '42501', NULL, 'collector cannot purge');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_collector', $q$INSERT INTO nps_billing.response (score) VALUES (1)$q$)$$, '42501', NULL, 'collector cannot insert responses directly');

-- analyst
SELECT lives_ok($$SELECT pg_temp.as_role('nps_analyst', 'SELECT nps_billing.nps(score), count(*) FROM nps_billing.response')$$, 'analyst: nps() over responses');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_analyst', 'SELECT id, score, category, channel, responded_at, updated_at FROM nps_billing.response')$$, 'analyst: score, category, channel, dates');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_analyst', 'SELECT nps_billing.nps_ci(nps_billing.nps_agg(score)) FROM nps_billing.response')$$, 'analyst: summaries and confidence intervals');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_analyst', $q$SELECT nps_billing.category(7), nps_billing.nps(x) FROM (SELECT nps_billing.nps_agg(s) x FROM (VALUES (1), (9)) v(s)) y$q$)$$, 'analyst: category(), accessors');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', 'SELECT comment FROM nps_billing.response')$$, '42501', NULL, 'analyst cannot read comments');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', 'SELECT customer_id FROM nps_billing.response')$$, '42501', NULL, 'analyst cannot read response customer ids');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', 'SELECT survey_id FROM nps_billing.response')$$, '42501', NULL, 'analyst cannot link responses to surveys');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', 'SELECT * FROM nps_billing.response')$$, '42501', NULL, 'analyst cannot SELECT * from response');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', 'SELECT token FROM nps_billing.survey')$$, '42501', NULL, 'analyst cannot read tokens');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', $q$SELECT * FROM nps_billing.claim_surveys('a')$q$)$$, '42501', NULL, 'analyst cannot claim surveys (a volatile function)');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', $q$SELECT nps_billing.record_response('pr-token-3', 1)$q$)$$, '42501', NULL, 'analyst cannot record responses');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', $q$SELECT nps_billing.forget_customer('pr-cust-1')$q$)$$, '42501', NULL, 'analyst cannot forget customers');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', 'SELECT nps_billing.expire_surveys()')$$, '42501', NULL, 'analyst cannot expire surveys');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'nps_billing'::regnamespace
                   AND p.provolatile = 'v' AND p.prokind = 'f' AND has_function_privilege('nps_analyst', p.oid, 'EXECUTE')$$,
                'the analyst may execute no volatile (writing) function');
SELECT ok(NOT has_column_privilege('nps_analyst', 'nps_billing.response', 'comment', 'SELECT')
          AND NOT has_column_privilege('nps_analyst', 'nps_billing.response', 'customer_id', 'SELECT')
          AND NOT has_table_privilege('nps_analyst', 'nps_billing.survey', 'SELECT'),
          'catalog: analyst has no comment, customer id or survey');

-- maintenance
SELECT lives_ok($$SELECT pg_temp.as_role('nps_maintenance', $q$SELECT nps_billing.expire_surveys(), nps_billing.purge('3650 days'), nps_billing.forget_customer('pr-cust-2')$q$)$$,
                'maintenance: expire_surveys, purge, forget_customer');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_maintenance', 'SELECT score FROM nps_billing.response')$$, '42501', NULL, 'maintenance cannot read responses');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_maintenance', $q$SELECT * FROM nps_billing.claim_surveys('m')$q$)$$, '42501', NULL, 'maintenance cannot claim surveys');

-- customer success
INSERT INTO nps_billing.response (customer_id, score, comment, responded_at) VALUES ('pr-cs-cust', 2, 'pr cs comment', now());
SELECT lives_ok($$SELECT pg_temp.as_role('nps_success', $q$SELECT count(*) FROM nps_billing.claim_follow_ups('cs-1')$q$)$$, 'success: claim_follow_ups');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_success', $q$SELECT nps_billing.update_follow_up(f.id, 'cs-1', 'contacted', 'called') FROM nps_billing.follow_up f
                   JOIN nps_billing.response r ON r.id = f.response_id WHERE r.customer_id = 'pr-cs-cust'$q$)$$, 'success: update_follow_up');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_success', $q$SELECT nps_billing.resolve_follow_up(f.id, 'cs-1') FROM nps_billing.follow_up f
                   JOIN nps_billing.response r ON r.id = f.response_id WHERE r.customer_id = 'pr-cs-cust'$q$)$$, 'success: resolve_follow_up');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_success', 'SELECT * FROM nps_billing.follow_up_metrics()')$$, 'success: follow_up_metrics');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_success', 'SELECT customer_id, score, category, comment, payment_amount, payment_attributes FROM nps_billing.response')$$,
                'success: customer ids, comments and payment context of answers');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_success', 'SELECT f.*, n.* FROM nps_billing.follow_up f LEFT JOIN nps_billing.follow_up_note n ON n.follow_up_id = f.id')$$,
                'success: follow-ups and their notes');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_success', 'SELECT e.customer_id, e.kind, e.amount, e.occurred_at, e.attributes, p.name FROM nps_billing.payment_event e JOIN nps_billing.payment_source p ON p.id = e.source_id')$$,
                'success: the customers'' payment events');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_success', 'SELECT token FROM nps_billing.survey')$$, '42501', NULL, 'success cannot read surveys (tokens)');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_success', 'SELECT survey_id FROM nps_billing.response')$$, '42501', NULL, 'success cannot link answers to surveys');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_success', 'SELECT survey_id FROM nps_billing.payment_event')$$, '42501', NULL, 'success cannot link payments to surveys');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_success', $q$SELECT nps_billing.record_response('pr-token-3', 1)$q$)$$, '42501', NULL, 'success cannot record responses');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_success', $q$SELECT * FROM nps_billing.claim_surveys('cs')$q$)$$, '42501', NULL, 'success cannot claim surveys');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_success', $q$SELECT nps_billing.forget_customer('pr-cs-cust')$q$)$$, '42501', NULL, 'success cannot forget customers');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_success', $q$INSERT INTO nps_billing.follow_up_note (follow_up_id, author, author_role, body) VALUES (1, 'a', 'b', 'c')$q$)$$,
                 '42501', NULL, 'success cannot write notes around the functions');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_success', $q$UPDATE nps_billing.follow_up SET status = 'resolved'$q$)$$, '42501', NULL, 'success cannot update follow-ups directly');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_success', $q$UPDATE nps_billing.follow_up_policy SET sla = '1 year'$q$)$$, '42501', NULL, 'success cannot change the policy');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', 'SELECT * FROM nps_billing.follow_up')$$, '42501', NULL, 'analyst cannot read follow-ups');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', 'SELECT body FROM nps_billing.follow_up_note')$$, '42501', NULL, 'analyst cannot read notes');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', $q$SELECT * FROM nps_billing.claim_follow_ups('a')$q$)$$, '42501', NULL, 'analyst cannot claim follow-ups');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_analyst', 'SELECT * FROM nps_billing.follow_up_metrics()')$$, 'analyst: follow_up_metrics (counts only)');

-- exactly these grants: each role's executable functions of the schema
SELECT set_eq($$SELECT p.proname::text FROM pg_proc p WHERE p.pronamespace = 'nps_billing'::regnamespace AND has_function_privilege('nps_sender', p.oid, 'EXECUTE')$$,
              ARRAY['claim_surveys', 'mark_sent', 'mark_failed'], 'sender executes exactly claim_surveys, mark_sent, mark_failed');
SELECT set_eq($$SELECT p.proname::text FROM pg_proc p WHERE p.pronamespace = 'nps_billing'::regnamespace AND has_function_privilege('nps_collector', p.oid, 'EXECUTE')$$,
              ARRAY['record_response'], 'collector executes exactly record_response');
SELECT set_eq($$SELECT p.proname::text FROM pg_proc p WHERE p.pronamespace = 'nps_billing'::regnamespace AND has_function_privilege('nps_success', p.oid, 'EXECUTE')$$,
              ARRAY['claim_follow_ups', 'update_follow_up', 'resolve_follow_up', 'release_follow_up', 'follow_up_metrics'],
              'success executes exactly the follow-up functions');
SELECT set_eq($$SELECT c.relname::text FROM pg_class c WHERE c.relnamespace = 'nps_billing'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
                AND (has_table_privilege('nps_success', c.oid, 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER') OR has_any_column_privilege('nps_success', c.oid, 'SELECT,INSERT,UPDATE,REFERENCES'))$$,
              ARRAY['follow_up', 'follow_up_note', 'follow_up_policy', 'response', 'payment_event', 'payment_source'],
              'success reads exactly follow-ups, notes, policy and columns of answers, payments and sources');
SELECT ok(NOT has_table_privilege('nps_success', 'nps_billing.follow_up', 'INSERT,UPDATE,DELETE,TRUNCATE')
          AND NOT has_table_privilege('nps_success', 'nps_billing.follow_up_note', 'INSERT,UPDATE,DELETE,TRUNCATE')
          AND NOT has_any_column_privilege('nps_success', 'nps_billing.response', 'INSERT,UPDATE')
          AND NOT has_column_privilege('nps_success', 'nps_billing.payment_source', 'customer_expr', 'SELECT'),
          'catalog: success writes no table directly and reads no capture expression');
SELECT is_empty($$SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'nps_billing'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
                   AND (has_table_privilege('nps_sender', c.oid, 'SELECT,INSERT,UPDATE,DELETE') OR has_table_privilege('nps_collector', c.oid, 'SELECT,INSERT,UPDATE,DELETE')
                        OR has_any_column_privilege('nps_sender', c.oid, 'SELECT') OR has_any_column_privilege('nps_collector', c.oid, 'SELECT'))$$,
                'sender and collector have no privilege on any table, view or sequence');

-- nothing usable by PUBLIC: types (other than tables' row types and arrays), sequences
SELECT is_empty($$SELECT t.typname FROM pg_type t
                   WHERE t.typnamespace = 'nps_billing'::regnamespace AND t.typelem = 0
                     AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
                     AND EXISTS (SELECT 1 FROM aclexplode(coalesce(t.typacl, acldefault('T', t.typowner))) a WHERE a.grantee = 0)$$,
                'no type of nps_billing is usable by PUBLIC');
SELECT is_empty($$SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'nps_billing'::regnamespace AND c.relkind = 'S'
                   AND EXISTS (SELECT 1 FROM aclexplode(coalesce(c.relacl, acldefault('s', c.relowner))) a WHERE a.grantee = 0)$$,
                'no sequence of nps_billing is usable by PUBLIC');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'nps_billing'::regnamespace AND p.prosecdef
                   AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)$$,
                'every SECURITY DEFINER function pins search_path = pg_catalog, pg_temp');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'nps_billing'::regnamespace
                   AND p.proname IN ('claim_surveys', 'mark_sent', 'mark_failed', 'expire_surveys', 'record_response', 'forget_customer', 'purge')
                   AND NOT p.prosecdef$$, 'queue, response and privacy functions are SECURITY DEFINER (roles need no table grants)');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'nps_billing'::regnamespace
                   AND p.proname IN ('claim_follow_ups', 'update_follow_up', 'resolve_follow_up', 'release_follow_up', 'follow_up_metrics')
                   AND (NOT p.prosecdef OR obj_description(p.oid, 'pg_proc') IS NULL)$$,
                'the follow-up functions are SECURITY DEFINER and have a COMMENT');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'nps_billing'::regnamespace
                   AND p.proname IN ('claim_surveys', 'mark_sent', 'mark_failed', 'expire_surveys', 'record_response', 'forget_customer', 'purge')
                   AND obj_description(p.oid, 'pg_proc') IS NULL$$, 'every delivery and privacy function has a COMMENT');
SELECT is((SELECT count(*)::int FROM pg_proc p WHERE p.pronamespace = 'nps_billing'::regnamespace
            AND p.proname IN ('claim_surveys', 'mark_sent', 'mark_failed', 'expire_surveys', 'record_response', 'forget_customer', 'purge')), 9,
          'the delivery and privacy functions exist once each (mark_sent and mark_failed for one id and for arrays)');
SELECT function_returns('nps_billing', 'claim_surveys', ARRAY['text', 'integer', 'interval'], 'setof nps_billing.claimed_survey', 'claim_surveys returns SETOF claimed_survey');
SELECT function_returns('nps_billing', 'record_response', ARRAY['text', 'integer', 'text', 'timestamp with time zone'], 'bigint', 'record_response returns bigint');
SELECT * FROM finish();
ROLLBACK;
