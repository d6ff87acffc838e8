-- Catalog-level promises: objects exist, nothing is granted to PUBLIC.
BEGIN;
SELECT plan(36);
SELECT has_type('nps_billing', 'npsagg', 'npsagg type exists');
SELECT has_function('nps_billing', 'nps_ci', ARRAY['nps_billing.npsagg', 'double precision', 'text'], 'nps_ci exists');
SELECT is_aggregate('nps_billing', 'nps', ARRAY['integer'], 'nps(integer) is an aggregate');
-- follow-ups (closing the loop)
SELECT has_table('nps_billing', 'follow_up', 'table follow_up exists');
SELECT has_table('nps_billing', 'follow_up_note', 'table follow_up_note exists');
SELECT has_table('nps_billing', 'follow_up_policy', 'table follow_up_policy exists');
SELECT columns_are('nps_billing', 'follow_up', ARRAY['id', 'response_id', 'source_id', 'reason', 'status', 'created_at', 'due_at',
                   'assignee', 'lease_role', 'lease_until', 'contacted_at', 'closed_at', 'answer_changed_at', 'still_needed', 'active'],
                   'follow_up has its columns');
SELECT function_returns('nps_billing', 'claim_follow_ups', ARRAY['text', 'integer', 'interval'], 'setof nps_billing.claimed_follow_up',
                        'claim_follow_ups returns SETOF claimed_follow_up');
SELECT has_function('nps_billing', 'update_follow_up', ARRAY['bigint', 'text', 'text', 'text'], 'update_follow_up exists');
SELECT has_function('nps_billing', 'resolve_follow_up', ARRAY['bigint', 'text', 'text', 'text'], 'resolve_follow_up exists');
SELECT is((SELECT array_agg(tgname::text ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'nps_billing.response'::regclass AND tgname LIKE 'follow_up%'),
          ARRAY['follow_up_answer_delete', 'follow_up_answer_insert', 'follow_up_answer_truncate', 'follow_up_answer_update'],
          'response carries the follow-up triggers (insert, update, delete, truncate)');
SELECT is((SELECT count(*)::int FROM unnest((SELECT extconfig FROM pg_extension WHERE extname = 'nps_billing')) c
            WHERE c::regclass::text IN ('nps_billing.follow_up', 'nps_billing.follow_up_note', 'nps_billing.follow_up_policy',
                                        'nps_billing.follow_up_id_seq', 'nps_billing.follow_up_note_id_seq')), 5,
          'follow-up tables and sequences are dumped with pg_dump (pg_extension_config_dump)');
SELECT has_function('nps_billing', 'nps_churn', ARRAY['interval', 'timestamp with time zone', 'timestamp with time zone', 'timestamp with time zone'], 'nps_churn exists');
SELECT has_function('nps_billing', 'nps_retention', ARRAY['interval', 'interval', 'timestamp with time zone', 'timestamp with time zone', 'interval', 'timestamp with time zone'], 'nps_retention exists');
SELECT has_function('nps_billing', 'nps_drivers', ARRAY['text[]', 'timestamp with time zone', 'timestamp with time zone', 'integer'], 'nps_drivers exists');
SELECT has_function('nps_billing', 'comment_terms', ARRAY['nps_billing.nps_category', 'timestamp with time zone', 'timestamp with time zone', 'regconfig', 'integer'], 'comment_terms exists');
-- analysis: record_response brings the context, the trigger fills it for other inserts; shards
SELECT is((SELECT array_agg(tgname::text || ':' || (tgqual IS NOT NULL)::text ORDER BY tgname) FROM pg_trigger
            WHERE tgrelid = 'nps_billing.response'::regclass AND tgname LIKE 'response_context%'),
          ARRAY['response_context_fill:true', 'response_context_refill:false'],
          'the context trigger runs for inserts without a context (WHEN) and for updates');
SELECT is((SELECT array_agg(c.relname::text ORDER BY c.relname) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relnamespace = 'nps_billing'::regnamespace AND a.attname = 'shard' AND NOT a.attisdropped AND c.relkind = 'r'),
          ARRAY['rollup_answer_delay', 'rollup_days', 'rollup_segment', 'survey_funnel_day'],
          'the rollups written by every answer are kept in shards');
-- survey messages
SELECT has_table('nps_billing', 'message_template', 'message_template exists');
SELECT has_table('nps_billing', 'message_template_builtin', 'message_template_builtin exists');
SELECT columns_are('nps_billing', 'message_template',
  ARRAY['id', 'source_id', 'channel', 'locale', 'subject', 'body_text', 'body_html', 'updated_at'], 'message_template columns');
SELECT has_column('nps_billing', 'survey', 'recipient', 'survey.recipient');
SELECT has_column('nps_billing', 'payment_source', 'answer_base_url', 'payment_source.answer_base_url');
SELECT has_function('nps_billing', 'claim_messages', ARRAY['text', 'integer', 'interval'], 'claim_messages exists');
SELECT has_function('nps_billing', 'render_survey', ARRAY['bigint', 'text'], 'render_survey exists');
SELECT has_function('nps_billing', 'opt_out_by_token', ARRAY['text'], 'opt_out_by_token exists');
SELECT is((SELECT array_agg(channel || '/' || locale ORDER BY channel, locale) FROM nps_billing.message_template_builtin),
  ARRAY['email/de', 'email/en', 'email/es', 'email/fr', 'in_app/de', 'in_app/en', 'in_app/es', 'in_app/fr',
        'sms/de', 'sms/en', 'sms/es', 'sms/fr'], 'built-in templates: en, de, fr, es for every channel');
SELECT is((SELECT array_agg(c::regclass::text ORDER BY c::regclass::text) FROM pg_extension, unnest(extconfig) c
            WHERE extname = 'nps_billing' AND c::regclass::text LIKE 'nps_billing.message_template%'),
  ARRAY['nps_billing.message_template', 'nps_billing.message_template_id_seq'], 'the DBA''s templates are dumped, the built-in ones are not');
-- the due queue
SELECT columns_are('nps_billing', 'survey_queue', ARRAY['survey_id', 'visible_at'], 'survey_queue: survey id and visible_at');
SELECT is((SELECT array_agg(tgname::text ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'nps_billing.survey'::regclass AND tgname LIKE 'survey_queue%'),
          ARRAY['survey_queue_delete', 'survey_queue_insert', 'survey_queue_renumber', 'survey_queue_truncate', 'survey_queue_update'],
          'survey carries the queue triggers (insert, update, id change, delete, truncate)');
SELECT is_empty($$
  SELECT i.indexrelid::regclass::text FROM pg_index i
   WHERE i.indrelid = 'nps_billing.survey'::regclass
     AND (EXISTS (SELECT 1 FROM unnest(i.indkey) k JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k
                   WHERE a.attname IN ('status', 'queued', 'send_after', 'lease_owner', 'lease_until', 'lease_role',
                                       'attempts', 'sent_at', 'due_at', 'reminder', 'reminders_sent', 'last_error'))
          OR coalesce(pg_get_expr(i.indpred, i.indrelid), '') || coalesce(pg_get_expr(i.indexprs, i.indrelid), '')
             ~ '(status|queued|send_after|lease_|attempts|sent_at|due_at|reminder|last_error)')
$$, 'no index of survey reads a column a claim or a report changes (they are HOT updates)');
SELECT ok(NOT EXISTS (SELECT 1 FROM pg_extension, unnest(extconfig) c WHERE extname = 'nps_billing' AND c = 'nps_billing.survey_queue'::regclass),
          'survey_queue is not dumped (rebuilt from survey by its insert trigger on restore)');
SELECT is((SELECT attname::text FROM pg_attribute WHERE attrelid = 'nps_billing.claimed_message'::regclass AND attnum > 0 AND NOT attisdropped
            ORDER BY attnum DESC LIMIT 1), 'reminder', 'claimed_message ends with reminder');
SELECT is_empty($$
  SELECT p.oid::regprocedure::text FROM pg_proc p
  WHERE p.pronamespace = 'nps_billing'::regnamespace
    AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))
$$, 'no function of nps_billing is executable by PUBLIC');
SELECT is_empty($$
  SELECT c.relname FROM pg_class c
  WHERE c.relnamespace = 'nps_billing'::regnamespace
    AND EXISTS (SELECT 1 FROM aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a WHERE a.grantee = 0)
$$, 'no table of nps_billing is readable by PUBLIC');
SELECT is_empty($$
  SELECT n.nspname FROM pg_namespace n
  WHERE n.nspname = 'nps_billing'
    AND EXISTS (SELECT 1 FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a WHERE a.grantee = 0)
$$, 'schema nps_billing grants nothing to PUBLIC');
SELECT * FROM finish();
ROLLBACK;
