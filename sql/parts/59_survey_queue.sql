-- The due queue: one narrow row per queued survey (status pending or sending), which the claims
-- walk instead of the survey table (60_delivery.sql).
--
-- survey stays the record of every survey (status, lease, attempts, history); survey_queue only
-- says from when each queued survey may be claimed. A claim or a report then changes no indexed
-- value of survey - no index of survey depends on the status between pending, sending and sent -
-- so both are in-place (HOT) updates of survey when its page has room, and the index work of the
-- queue is done on this table of two columns (its primary key and visible_at).
--
-- Triggers on survey keep it (any writer: capture, the functions, a DBA's UPDATE, a restore):
--   visible_at = send_after for a pending survey,
--              = the later of send_after and lease_until for a sending one (the lease's end:
--                claimable again once it lapses; never while lease_until is NULL),
--   no row for a survey in any other status.
-- Claims walk survey_queue in visible_at order and lock the survey rows themselves (FOR UPDATE
-- SKIP LOCKED), checking each survey under its row lock before leasing it: the queue decides the
-- order and what is looked at, survey decides. Every writer locks the survey row first and its
-- queue row after it (in these triggers), so there is one lock order and no deadlock between them.
CREATE TABLE @extschema@.survey_queue (
  survey_id  bigint PRIMARY KEY,      -- survey.id
  visible_at timestamptz NOT NULL     -- claimable from (see above)
);
CREATE INDEX survey_queue_visible_idx ON @extschema@.survey_queue (visible_at);
COMMENT ON TABLE @extschema@.survey_queue IS
  'The due queue: one row per pending or sending survey and the time it may be claimed from (kept by triggers on survey)';
-- Not dumped: derived from survey, and rebuilt from it by the insert trigger when pg_restore
-- loads survey's rows.

-- When a survey may be claimed, from its status, send_after and lease_until (NULL: not queued).
CREATE FUNCTION @extschema@.queue_visible_at(status text, send_after timestamptz, lease_until timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE status WHEN 'pending' THEN send_after
                     WHEN 'sending' THEN greatest(send_after, coalesce(lease_until, 'infinity'))
         END
$$;
COMMENT ON FUNCTION @extschema@.queue_visible_at(text, timestamptz, timestamptz) IS
  'Internal: when a survey may be claimed (survey_queue.visible_at); NULL when it is not queued';

-- Statement level: one pass over the statement's transition table (a claim or a report of 100
-- surveys is one MERGE of 100 rows).
CREATE FUNCTION @extschema@.survey_queue_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  INSERT INTO @extschema@.survey_queue AS q (survey_id, visible_at)
  SELECT n.id, @extschema@.queue_visible_at(n.status, n.send_after, n.lease_until)
    FROM nps_new n WHERE n.status IN ('pending', 'sending')
  ON CONFLICT (survey_id) DO UPDATE SET visible_at = excluded.visible_at;
  RETURN NULL;
END
$fn$;
CREATE FUNCTION @extschema@.survey_queue_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  -- survey_queue is read through its primary key for exactly these ids, whatever plan the
  -- cached statement got from the row count of its first call (never a scan of the queue)
  MERGE INTO @extschema@.survey_queue q
  USING (SELECT n.id, @extschema@.queue_visible_at(n.status, n.send_after, n.lease_until) AS visible_at
           FROM nps_new n) c
     ON q.survey_id = c.id AND q.survey_id = ANY (ARRAY(SELECT n.id FROM nps_new n))
   WHEN MATCHED AND c.visible_at IS NULL THEN DELETE
   WHEN MATCHED AND q.visible_at IS DISTINCT FROM c.visible_at THEN UPDATE SET visible_at = c.visible_at
   WHEN NOT MATCHED AND c.visible_at IS NOT NULL THEN INSERT (survey_id, visible_at) VALUES (c.id, c.visible_at);
  RETURN NULL;
END
$fn$;
-- A survey whose id changes (only a DBA's UPDATE does that) moves to its new id.
CREATE FUNCTION @extschema@.survey_queue_renumber() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  DELETE FROM @extschema@.survey_queue q WHERE q.survey_id = OLD.id;
  IF NEW.status IN ('pending', 'sending') THEN
    INSERT INTO @extschema@.survey_queue AS q (survey_id, visible_at)
    VALUES (NEW.id, @extschema@.queue_visible_at(NEW.status, NEW.send_after, NEW.lease_until))
    ON CONFLICT (survey_id) DO UPDATE SET visible_at = excluded.visible_at;
  END IF;
  RETURN NULL;
END
$fn$;
CREATE FUNCTION @extschema@.survey_queue_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  DELETE FROM @extschema@.survey_queue q WHERE q.survey_id = ANY (ARRAY(SELECT o.id FROM nps_old o));
  RETURN NULL;
END
$fn$;
CREATE FUNCTION @extschema@.survey_queue_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  TRUNCATE @extschema@.survey_queue;
  RETURN NULL;
END
$fn$;
CREATE TRIGGER survey_queue_insert AFTER INSERT ON @extschema@.survey
  REFERENCING NEW TABLE AS nps_new
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.survey_queue_insert();
CREATE TRIGGER survey_queue_update AFTER UPDATE ON @extschema@.survey
  REFERENCING NEW TABLE AS nps_new
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.survey_queue_update();
-- (UPDATE OF id: fires only for an UPDATE that sets id; claims and reports do not)
CREATE TRIGGER survey_queue_renumber AFTER UPDATE OF id ON @extschema@.survey
  FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
  EXECUTE FUNCTION @extschema@.survey_queue_renumber();
CREATE TRIGGER survey_queue_delete AFTER DELETE ON @extschema@.survey
  REFERENCING OLD TABLE AS nps_old
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.survey_queue_delete();
CREATE TRIGGER survey_queue_truncate AFTER TRUNCATE ON @extschema@.survey
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.survey_queue_truncate();
COMMENT ON FUNCTION @extschema@.survey_queue_insert() IS 'Trigger: new queued surveys enter survey_queue';
COMMENT ON FUNCTION @extschema@.survey_queue_update() IS
  'Trigger: a survey''s status, send_after or lease_until changed: its survey_queue row follows (in, moved, out)';
COMMENT ON FUNCTION @extschema@.survey_queue_renumber() IS 'Trigger: a survey whose id changed moves in survey_queue';
COMMENT ON FUNCTION @extschema@.survey_queue_delete() IS 'Trigger: deleted surveys leave survey_queue';
COMMENT ON FUNCTION @extschema@.survey_queue_truncate() IS 'Trigger: TRUNCATE survey empties survey_queue';

-- survey_queue from survey again, after its triggers were bypassed (pg_restore
-- --disable-triggers, session_replication_role = replica, triggers disabled by hand): without it
-- a queued survey whose row never reached the queue would never be claimed.
CREATE FUNCTION @extschema@.rebuild_survey_queue() RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  gone bigint;
  made bigint;
BEGIN
  -- writers of survey finish first and new ones wait (claims, reports, capture): the queue is
  -- rebuilt from committed rows only; readers go on
  LOCK TABLE @extschema@.survey IN SHARE MODE;
  DELETE FROM @extschema@.survey_queue q
   WHERE NOT EXISTS (SELECT 1 FROM @extschema@.survey s
                      WHERE s.id = q.survey_id
                        AND @extschema@.queue_visible_at(s.status, s.send_after, s.lease_until) = q.visible_at);
  GET DIAGNOSTICS gone = ROW_COUNT;
  INSERT INTO @extschema@.survey_queue AS q (survey_id, visible_at)
  SELECT s.id, @extschema@.queue_visible_at(s.status, s.send_after, s.lease_until)
    FROM @extschema@.survey s
   WHERE s.status IN ('pending', 'sending')
     AND NOT EXISTS (SELECT 1 FROM @extschema@.survey_queue x WHERE x.survey_id = s.id)
   ORDER BY s.id;
  GET DIAGNOSTICS made = ROW_COUNT;
  RETURN gone + made;
END
$fn$;
COMMENT ON FUNCTION @extschema@.rebuild_survey_queue() IS
  'Makes the due queue (survey_queue) match the surveys again after its triggers were bypassed; '
  'blocks writes of survey meanwhile; returns the number of queue rows removed or added (a moved row counts twice)';
