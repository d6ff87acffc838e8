-- survey_for_token: the answer page's lookup (status, locale, closed) by token, for the collector.
BEGIN;
SELECT plan(7);
SET LOCAL search_path = nps_billing, public;

CREATE TEMP TABLE sft_pay (id int);
INSERT INTO payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES ('sft', 'sft_pay', 'x', 'y', 'z');
INSERT INTO survey (token, source_id, customer_id, channel, status, send_after, expires_at)
SELECT 'sft-tok-' || st, p.id, 'sft-cust-' || st, 'email', st, now() - interval '1 day', now() + interval '1 day'
  FROM payment_source p, unnest(ARRAY['pending', 'sent', 'responded', 'failed', 'expired', 'cancelled']) st
 WHERE p.name = 'sft';
INSERT INTO survey (token, source_id, customer_id, channel, status, send_after, expires_at)
SELECT 'sft-tok-overdue', p.id, 'sft-cust-overdue', 'email', 'sent', now() - interval '20 days', now() - interval '1 hour'
  FROM payment_source p WHERE p.name = 'sft';

SELECT results_eq(
  $$SELECT t.tok, f.status, f.closed
      FROM unnest(ARRAY['pending', 'sent', 'responded', 'failed', 'expired', 'cancelled', 'overdue']) WITH ORDINALITY t(tok, n),
           LATERAL survey_for_token('sft-tok-' || t.tok) f ORDER BY t.n$$,
  $$VALUES ('pending', 'pending', false), ('sent', 'sent', false), ('responded', 'responded', false),
           ('failed', 'failed', false), ('expired', 'expired', true), ('cancelled', 'cancelled', true),
           ('overdue', 'sent', true)$$,
  'status of each survey; closed exactly where record_response refuses an answer');
SELECT is((SELECT locale FROM survey_for_token('sft-tok-sent')), NULL, 'no locale recorded: NULL (the page uses its default)');
SELECT is_empty($$SELECT * FROM survey_for_token('no-such-token')$$, 'an unknown token: no row, nothing revealed');
SELECT is_empty($$SELECT * FROM survey_for_token(repeat('t', 1000000))$$, 'a 1 MB token: no row');
SELECT throws_ok($$SELECT * FROM survey_for_token(NULL)$$, '22004', 'survey_for_token: token must not be NULL', 'NULL token: 22004');
SELECT is((SELECT provolatile::text || prosecdef::text FROM pg_proc WHERE oid = 'survey_for_token(text)'::regprocedure), 'vtrue',
          'VOLATILE (not in the analyst recipe) and SECURITY DEFINER');
SELECT is((SELECT proconfig FROM pg_proc WHERE oid = 'survey_for_token(text)'::regprocedure),
          ARRAY['search_path=pg_catalog, pg_temp'], 'pinned search_path');
SELECT * FROM finish();
ROLLBACK;
