-- The analyst role recipe of README.md (Privacy), ready for a BI tool (Grafana, Metabase, Superset).
-- Usage:  CREATE ROLE nps_analyst LOGIN PASSWORD '...';   psql -d yourdb -f examples/bi/analyst_grants.sql
-- The analyst reads response scores and dates, every view (response_context), every aggregate
-- and every non-volatile function (all analysis functions); never comments, customer ids,
-- payment rows or survey tokens, and no function that writes. Re-run after upgrading the extension.
GRANT USAGE ON SCHEMA nps_billing TO nps_analyst;
GRANT USAGE ON TYPE nps_billing.nps_category, nps_billing.nps_score, nps_billing.npsagg TO nps_analyst;
GRANT SELECT (id, score, category, channel, responded_at, updated_at) ON nps_billing.response TO nps_analyst;
DO $$
DECLARE f regprocedure; v regclass;
BEGIN
  FOR f IN SELECT p.oid FROM pg_proc p
            WHERE p.pronamespace = 'nps_billing'::regnamespace
              AND (p.prokind = 'a' OR (p.prokind = 'f' AND p.provolatile <> 'v')) LOOP
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO nps_analyst', f);
  END LOOP;
  FOR v IN SELECT c.oid FROM pg_class c
            WHERE c.relnamespace = 'nps_billing'::regnamespace AND c.relkind IN ('v', 'm') LOOP
    EXECUTE format('GRANT SELECT ON %s TO nps_analyst', v);
  END LOOP;
END $$;
