-- nps_billing 0.1 -> 0.2 (ALTER EXTENSION nps_billing UPDATE).
-- Every schema change in sql/parts/ since 0.1 has its step here, in the same order, so that an
-- updated database has the same catalog as a fresh 0.2 install (test/upgrade.sh checks it).
\echo Use "ALTER EXTENSION nps_billing UPDATE" to load this file. \quit

-- Capture: expressions bound at track time, the text as written kept beside them; a dropped
-- tracked table leaves no tracked source behind.
ALTER TABLE @extschema@.payment_source ADD COLUMN expressions_as_written jsonb;
CREATE FUNCTION @extschema@._capture_table_dropped() RETURNS event_trigger
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  UPDATE @extschema@.payment_source s SET tracked = false
    FROM pg_catalog.pg_event_trigger_dropped_objects() d
   WHERE s.tracked AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid = 0
     AND d.objid = s.relid::pg_catalog.oid;
END $$;
COMMENT ON FUNCTION @extschema@._capture_table_dropped() IS
  'Internal: marks the payment source of a dropped table untracked (event trigger nps_billing_capture_dropped)';
REVOKE ALL ON FUNCTION @extschema@._capture_table_dropped() FROM PUBLIC;
CREATE EVENT TRIGGER nps_billing_capture_dropped ON sql_drop
  EXECUTE FUNCTION @extschema@._capture_table_dropped();
-- 0.1 sources: bind their expressions once (and untrack those of dropped tables).
CREATE FUNCTION @extschema@._capture_rebind() RETURNS integer AS 'MODULE_PATHNAME', 'nps_capture_rebind' LANGUAGE C;
SELECT @extschema@._capture_rebind();
DROP FUNCTION @extschema@._capture_rebind();
