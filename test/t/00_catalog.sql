-- Catalog-level promises: objects exist, nothing is granted to PUBLIC.
BEGIN;
SELECT plan(10);
SELECT has_type('nps_billing', 'npsagg', 'npsagg type exists');
SELECT has_function('nps_billing', 'nps_ci', ARRAY['nps_billing.npsagg', 'double precision', 'text'], 'nps_ci exists');
SELECT is_aggregate('nps_billing', 'nps', ARRAY['integer'], 'nps(integer) is an aggregate');
SELECT has_function('nps_billing', 'nps_churn', ARRAY['interval', 'timestamp with time zone', 'timestamp with time zone', 'timestamp with time zone'], 'nps_churn exists');
SELECT has_function('nps_billing', 'nps_retention', ARRAY['interval', 'interval', 'timestamp with time zone', 'timestamp with time zone', 'interval', 'timestamp with time zone'], 'nps_retention exists');
SELECT has_function('nps_billing', 'nps_drivers', ARRAY['text[]', 'timestamp with time zone', 'timestamp with time zone', 'integer'], 'nps_drivers exists');
SELECT has_function('nps_billing', 'comment_terms', ARRAY['nps_billing.nps_category', 'timestamp with time zone', 'timestamp with time zone', 'regconfig', 'integer'], 'comment_terms exists');
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
