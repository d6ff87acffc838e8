-- The three role recipes of README.md (Privacy), run exactly as documented, and what each role may
-- and may not do; nothing of the schema is usable by PUBLIC (types and sequences too).
BEGIN;
SELECT plan(65);

-- ---- the recipes (copied verbatim into README.md (Privacy)) ----
-- sender: leases surveys (with their recipients and rendered messages) and reports deliveries;
-- reads no table, no response
CREATE ROLE nps_sender NOLOGIN;
GRANT USAGE ON SCHEMA nps_billing TO nps_sender;
GRANT EXECUTE ON FUNCTION nps_billing.claim_surveys(text, integer, interval),
                          nps_billing.claim_messages(text, integer, interval),
                          nps_billing.render_survey(bigint, text),
                          nps_billing.mark_sent(bigint, text),
                          nps_billing.mark_failed(bigint, text, text, interval),
                          nps_billing.mark_sent(bigint[], text),
                          nps_billing.mark_failed(bigint[], text, text, interval) TO nps_sender;
-- response collector: the web/SMS endpoint that stores answers and unsubscribes by token, nothing else
CREATE ROLE nps_collector NOLOGIN;
GRANT USAGE ON SCHEMA nps_billing TO nps_collector;
GRANT EXECUTE ON FUNCTION nps_billing.record_response(text, integer, text, timestamptz),
                          nps_billing.opt_out_by_token(text),
                          nps_billing.survey_for_token(text) TO nps_collector;
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
UPDATE nps_billing.payment_source SET answer_base_url = 'https://nps.example.com' WHERE name = 'pr';
INSERT INTO nps_billing.survey (id, token, source_id, customer_id, channel, send_after, expires_at, recipient, locale)
SELECT 7700 + g, 'pr-token-' || g, p.id, 'pr-cust-' || g, 'email', now() - interval '1 hour' + g * interval '1 second', now() + interval '1 day',
       'pr-' || g || '@example.com', 'de'
  FROM nps_billing.payment_source p, generate_series(1, 5) g WHERE p.name = 'pr';

-- sender
SELECT lives_ok($$SELECT pg_temp.as_role('nps_sender', $q$SELECT count(*) FROM nps_billing.claim_surveys('s1', 2)$q$)$$, 'sender: claim_surveys');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_sender', $q$SELECT count(*) FROM nps_billing.claim_messages('s1', 2)$q$)$$, 'sender: claim_messages');
SELECT is((SELECT m.recipient || ' ' || (m.body_text LIKE '%https://nps.example.com/pr-token-4/10%')::text FROM nps_billing.survey s,
                  LATERAL nps_billing._messages(ARRAY[s.id]) m WHERE s.id = 7704), 'pr-4@example.com true',
          'claim_messages gave the sender the recipient and the rendered message with its links');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_sender', $q$SELECT * FROM nps_billing.render_survey(7701, 's1')$q$)$$, 'sender: render_survey of a survey it holds');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_sender', $q$SELECT * FROM nps_billing._messages(ARRAY[7701::bigint])$q$)$$, '42501', NULL, 'sender cannot render without the lease check (_messages)');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_sender', 'SELECT recipient FROM nps_billing.survey')$$, '42501', NULL, 'sender cannot read recipients from the table');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_sender', 'SELECT * FROM nps_billing.message_template')$$, '42501', NULL, 'sender cannot read or change templates');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_sender', $q$SELECT nps_billing.opt_out_by_token('pr-token-5')$q$)$$, '42501', NULL, 'sender cannot unsubscribe by token');
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
SELECT lives_ok($$SELECT pg_temp.as_role('nps_collector', $q$SELECT nps_billing.opt_out_by_token('pr-token-5'), nps_billing.opt_out_by_token('unknown')$q$)$$, 'collector: opt_out_by_token');
SELECT is((SELECT count(*)::int FROM nps_billing.opt_out WHERE customer_id = 'pr-cust-5'), 1, '... which opted the survey''s customer out');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_collector', $q$SELECT * FROM nps_billing.render_survey(7701)$q$)$$, '42501', NULL, 'collector cannot render messages');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_collector', $q$SELECT * FROM nps_billing.claim_messages('c')$q$)$$, '42501', NULL, 'collector cannot claim messages');
SELECT lives_ok($$SELECT pg_temp.as_role('nps_collector', $q$SELECT * FROM nps_billing.survey_for_token('pr-token-3')$q$)$$,
                'collector: survey_for_token (the answer page''s lookup)');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', $q$SELECT * FROM nps_billing.survey_for_token('pr-token-3')$q$)$$, '42501', NULL,
                 'analyst cannot look surveys up by token');
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
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', 'SELECT recipient, locale, time_zone FROM nps_billing.survey')$$, '42501', NULL, 'analyst cannot read recipients');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', $q$SELECT * FROM nps_billing.claim_messages('a')$q$)$$, '42501', NULL, 'analyst cannot claim messages');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', $q$SELECT * FROM nps_billing.render_survey(7701)$q$)$$, '42501', NULL, 'analyst cannot render messages');
SELECT throws_ok($$SELECT pg_temp.as_role('nps_analyst', $q$SELECT * FROM nps_billing._messages(ARRAY[7701::bigint])$q$)$$, '42501', NULL, 'analyst cannot render messages through _messages');
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

-- exactly these grants: each role's executable functions of the schema
SELECT set_eq($$SELECT p.proname::text FROM pg_proc p WHERE p.pronamespace = 'nps_billing'::regnamespace AND has_function_privilege('nps_sender', p.oid, 'EXECUTE')$$,
              ARRAY['claim_surveys', 'claim_messages', 'render_survey', 'mark_sent', 'mark_failed'],
              'sender executes exactly claim_surveys, claim_messages, render_survey, mark_sent, mark_failed');
SELECT set_eq($$SELECT p.proname::text FROM pg_proc p WHERE p.pronamespace = 'nps_billing'::regnamespace AND has_function_privilege('nps_collector', p.oid, 'EXECUTE')$$,
              ARRAY['record_response', 'opt_out_by_token', 'survey_for_token'], 'collector executes exactly record_response, opt_out_by_token, survey_for_token');
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
                   AND p.proname IN ('claim_surveys', 'claim_messages', 'render_survey', 'opt_out_by_token', 'mark_sent', 'mark_failed', 'expire_surveys', 'record_response', 'forget_customer', 'purge')
                   AND NOT p.prosecdef$$, 'queue, response and privacy functions are SECURITY DEFINER (roles need no table grants)');
SELECT is_empty($$SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'nps_billing'::regnamespace
                   AND p.proname IN ('claim_surveys', 'claim_messages', 'render_survey', 'opt_out_by_token', 'mark_sent', 'mark_failed', 'expire_surveys', 'record_response', 'forget_customer', 'purge')
                   AND obj_description(p.oid, 'pg_proc') IS NULL$$, 'every delivery and privacy function has a COMMENT');
SELECT is((SELECT count(*)::int FROM pg_proc p WHERE p.pronamespace = 'nps_billing'::regnamespace
            AND p.proname IN ('claim_surveys', 'claim_messages', 'render_survey', 'opt_out_by_token', 'mark_sent', 'mark_failed', 'expire_surveys', 'record_response', 'forget_customer', 'purge')), 12,
          'the delivery and privacy functions exist once each (mark_sent and mark_failed for one id and for arrays)');
SELECT function_returns('nps_billing', 'claim_surveys', ARRAY['text', 'integer', 'interval'], 'setof nps_billing.claimed_survey', 'claim_surveys returns SETOF claimed_survey');
SELECT function_returns('nps_billing', 'claim_messages', ARRAY['text', 'integer', 'interval'], 'setof nps_billing.claimed_message', 'claim_messages returns SETOF claimed_message');
SELECT function_returns('nps_billing', 'record_response', ARRAY['text', 'integer', 'text', 'timestamp with time zone'], 'bigint', 'record_response returns bigint');
SELECT * FROM finish();
ROLLBACK;
