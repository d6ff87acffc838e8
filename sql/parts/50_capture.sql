-- Capture: payment rows of any billing schema become payment events and survey requests.
-- See README.md (Capture). The trigger function and track_payments() are C++ (src/capture_*.cpp).

CREATE FUNCTION @extschema@.sample_point(customer text, payment_key text) RETURNS float8
  AS 'MODULE_PATHNAME', 'nps_sample_point' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.sample_point(text, text) IS
  'Deterministic sampling point in [0, 1) of a customer and payment key: the payment is kept for a survey when sample_point < payment_source.sample_rate';

CREATE FUNCTION @extschema@.new_token() RETURNS text
  AS 'MODULE_PATHNAME', 'nps_new_token' LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.new_token() IS
  'A survey token: 128 bits from pg_strong_random, base64url without padding (22 characters)';

CREATE FUNCTION @extschema@.capture() RETURNS trigger
  AS 'MODULE_PATHNAME', 'nps_capture_trigger' LANGUAGE C;
COMMENT ON FUNCTION @extschema@.capture() IS
  'Trigger function created by track_payments(): AFTER INSERT / AFTER UPDATE ... REFERENCING NEW TABLE AS nps_new FOR EACH STATEMENT';

CREATE FUNCTION @extschema@._capture_cache_changed() RETURNS trigger
  AS 'MODULE_PATHNAME', 'nps_capture_cache_changed' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._capture_cache_changed() IS
  'Internal: makes every backend drop what the capture trigger cached from this table (payment sources, the customer_contact and opt_out memos) once the change commits';
CREATE TRIGGER payment_source_changed
  AFTER INSERT OR UPDATE OR DELETE ON @extschema@.payment_source
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._capture_cache_changed();
CREATE TRIGGER payment_source_truncated
  AFTER TRUNCATE ON @extschema@.payment_source
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._capture_cache_changed();
-- The throttle memo (src/capture_memo.cpp) may keep a customer's last_survey_at; only
-- changes that remove or lower one need to reach it. Raising it (every new survey) does not.
CREATE TRIGGER customer_contact_removed
  AFTER DELETE ON @extschema@.customer_contact
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._capture_cache_changed();
CREATE TRIGGER customer_contact_truncated
  AFTER TRUNCATE ON @extschema@.customer_contact
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._capture_cache_changed();
CREATE TRIGGER customer_contact_lowered
  AFTER UPDATE ON @extschema@.customer_contact FOR EACH ROW
  WHEN (NEW.last_survey_at < OLD.last_survey_at OR NEW.customer_id IS DISTINCT FROM OLD.customer_id)
  EXECUTE FUNCTION @extschema@._capture_cache_changed();
-- The same memo knows whether opt_out is empty; only rows arriving change that.
CREATE TRIGGER opt_out_added
  AFTER INSERT OR UPDATE ON @extschema@.opt_out
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._capture_cache_changed();

CREATE FUNCTION @extschema@.track_payments(
    source regclass, customer text, payment_key text, succeeded_when text,
    failed_when text DEFAULT NULL, amount text DEFAULT NULL, currency text DEFAULT NULL,
    paid_at text DEFAULT NULL, attributes text DEFAULT NULL, name text DEFAULT NULL,
    on_error text DEFAULT 'record', recipient text DEFAULT NULL, locale text DEFAULT NULL,
    time_zone text DEFAULT NULL) RETURNS integer
  AS 'MODULE_PATHNAME', 'nps_track_payments' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.track_payments(regclass, text, text, text, text, text, text, text, text, text, text, text, text, text) IS
  'Track a payments table: SQL expressions over its rows say who paid, which payment, whether it succeeded or failed, '
  'and whom and how to survey (recipient, locale, time zone); returns the payment_source id';

-- The contact data a survey keeps, as capture cleans it (src/render.cpp): NULL when the billing
-- row's value cannot be used (the payment is never refused for it).
CREATE FUNCTION @extschema@._clean_recipient(value text) RETURNS text
  AS 'MODULE_PATHNAME', 'nps_clean_recipient' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._clean_recipient(text) IS
  'Internal: a recipient as capture keeps it: blanks around removed; NULL when empty, over 320 bytes or with a control character';
CREATE FUNCTION @extschema@._clean_locale(value text) RETURNS text
  AS 'MODULE_PATHNAME', 'nps_clean_locale' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._clean_locale(text) IS
  'Internal: a locale tag in BCP 47 case (pt_BR -> pt-BR); NULL when the value is not a language tag';
CREATE FUNCTION @extschema@._clean_time_zone(value text) RETURNS text
  AS 'MODULE_PATHNAME', 'nps_clean_time_zone' LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._clean_time_zone(text) IS
  'Internal: a time zone name as SET TIME ZONE accepts it, in its canonical spelling; NULL otherwise';

-- The ids of a set statement's events and surveys, read per row by its event insert (src/capture_set_ids.cpp).
CREATE FUNCTION @extschema@._capture_set_id(payment_key text, kind text, which integer) RETURNS bigint
  AS 'MODULE_PATHNAME', 'nps_capture_set_id' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._capture_set_id(text, text, integer) IS
  'Internal: while the capture trigger inserts the events of a multi-row statement, whether a payment is recorded already (which = 0), its event id (1) or survey id (2); an error anywhere else';

CREATE FUNCTION @extschema@.untrack_payments(source regclass) RETURNS void
  AS 'MODULE_PATHNAME', 'nps_untrack_payments' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@.untrack_payments(regclass) IS
  'Stop tracking a payments table: drops its capture triggers, keeps events, surveys and the source row (tracked = false)';

CREATE FUNCTION @extschema@.backfill_payments(source regclass, since timestamptz DEFAULT '-infinity',
                                              last_surveys regclass DEFAULT NULL) RETURNS bigint
  AS 'MODULE_PATHNAME', 'nps_backfill_payments' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.backfill_payments(regclass, timestamptz, regclass) IS
  'Record the rows a tracked table held before tracking (paid at or after since) as payment events with skip_reason backfilled and no survey; '
  'idempotent. Seeds customer_contact from imported responses and the optional last_surveys table (customer_id, last_survey_at). '
  'Returns the number of events recorded';

CREATE FUNCTION @extschema@.opt_out(customer text) RETURNS boolean
  LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  added boolean;
BEGIN
  IF customer IS NULL THEN
    RAISE EXCEPTION 'customer must not be NULL' USING ERRCODE = '22004';
  END IF;
  INSERT INTO @extschema@.opt_out (customer_id) VALUES (customer) ON CONFLICT (customer_id) DO NOTHING;
  added := FOUND;
  -- Surveys not yet handed to a sender are withdrawn; one already sent and waiting for a
  -- reminder gets no reminder and stays sent (its link still takes an answer).
  UPDATE @extschema@.survey SET status = CASE WHEN survey.reminder > 0 THEN 'sent' ELSE 'cancelled' END
   WHERE survey.customer_id = customer AND survey.status = 'pending';
  RETURN added;
END $$;
COMMENT ON FUNCTION @extschema@.opt_out(text) IS
  'The customer gets no more surveys (events still record opted_out); pending surveys are cancelled. True when newly opted out';

CREATE FUNCTION @extschema@.opt_in(customer text) RETURNS boolean
  LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF customer IS NULL THEN
    RAISE EXCEPTION 'customer must not be NULL' USING ERRCODE = '22004';
  END IF;
  DELETE FROM @extschema@.opt_out WHERE opt_out.customer_id = customer;
  RETURN FOUND;
END $$;
COMMENT ON FUNCTION @extschema@.opt_in(text) IS
  'Undo opt_out(): the customer may be surveyed again (future payments only). True when the customer was opted out';

-- A dropped tracked table leaves no tracked source behind (a later table could get its OID).
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
