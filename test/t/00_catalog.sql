-- Catalog-level promises: objects exist, nothing is granted to PUBLIC.
BEGIN;
SELECT plan(16);
SELECT has_type('nps_billing', 'npsagg', 'npsagg type exists');
SELECT has_function('nps_billing', 'nps_ci', ARRAY['nps_billing.npsagg', 'double precision', 'text'], 'nps_ci exists');
SELECT is_aggregate('nps_billing', 'nps', ARRAY['integer'], 'nps(integer) is an aggregate');
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
