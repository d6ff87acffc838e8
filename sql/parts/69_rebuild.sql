-- Survey funnel counts (survey triggers), rebuild_rollups(), and the source-dimension hook.

-- Surveys: a statement-level trigger for INSERT and DELETE (capture's INSERT ... SELECT of many
-- surveys costs one statement), a row-level one for the UPDATEs that change an outcome (a claim,
-- pending -> sending, changes none and does not fire it).
CREATE FUNCTION @extschema@.survey_funnel_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  INSERT INTO @extschema@.survey_funnel_day AS f (day, outcome, sent, shard, surveys, reminders, reminded, capped)
  SELECT @extschema@.utc_day(n.created_at), @extschema@.funnel_outcome(n.status),
         n.sent_at IS NOT NULL OR n.status = 'responded', @extschema@.rollup_shard(), count(*),
         sum(n.reminders_sent), count(*) FILTER (WHERE n.reminders_sent > 0), count(*) FILTER (WHERE n.cap_deferrals > 0)
    FROM nps_new n GROUP BY 1, 2, 3
  ON CONFLICT (day, outcome, sent, shard) DO UPDATE
     SET surveys = f.surveys + excluded.surveys, reminders = f.reminders + excluded.reminders,
         reminded = f.reminded + excluded.reminded, capped = f.capped + excluded.capped;
  RETURN NULL;
END
$fn$;
CREATE FUNCTION @extschema@.survey_funnel_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  INSERT INTO @extschema@.survey_funnel_day AS f (day, outcome, sent, shard, surveys, reminders, reminded, capped)
  SELECT @extschema@.utc_day(o.created_at), @extschema@.funnel_outcome(o.status),
         o.sent_at IS NOT NULL OR o.status = 'responded', @extschema@.rollup_shard(), -count(*),
         -sum(o.reminders_sent), -count(*) FILTER (WHERE o.reminders_sent > 0), -count(*) FILTER (WHERE o.cap_deferrals > 0)
    FROM nps_old o GROUP BY 1, 2, 3
  ON CONFLICT (day, outcome, sent, shard) DO UPDATE
     SET surveys = f.surveys + excluded.surveys, reminders = f.reminders + excluded.reminders,
         reminded = f.reminded + excluded.reminded, capped = f.capped + excluded.capped;
  RETURN NULL;
END
$fn$;
CREATE FUNCTION @extschema@.survey_funnel_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  -- One statement per UPDATE statement (a batch mark_sent moves 100 surveys in one upsert); keys
  -- whose net change is zero (a claim) write nothing.
  INSERT INTO @extschema@.survey_funnel_day AS f (day, outcome, sent, shard, surveys, reminders, reminded, capped)
  SELECT k.day, k.outcome, k.sent, @extschema@.rollup_shard(), sum(k.d), sum(k.d * k.rem),
         coalesce(sum(k.d) FILTER (WHERE k.rem > 0), 0), coalesce(sum(k.d) FILTER (WHERE k.capped), 0)
    FROM (SELECT @extschema@.utc_day(o.created_at) AS day, @extschema@.funnel_outcome(o.status) AS outcome,
                 o.sent_at IS NOT NULL OR o.status = 'responded' AS sent, -1 AS d,
                 o.reminders_sent AS rem, o.cap_deferrals > 0 AS capped
            FROM nps_old o
          UNION ALL
          SELECT @extschema@.utc_day(n.created_at), @extschema@.funnel_outcome(n.status),
                 n.sent_at IS NOT NULL OR n.status = 'responded', 1, n.reminders_sent, n.cap_deferrals > 0
            FROM nps_new n) k
   GROUP BY k.day, k.outcome, k.sent
  HAVING sum(k.d) <> 0 OR sum(k.d * k.rem) <> 0 OR coalesce(sum(k.d) FILTER (WHERE k.rem > 0), 0) <> 0
      OR coalesce(sum(k.d) FILTER (WHERE k.capped), 0) <> 0
  ON CONFLICT (day, outcome, sent, shard) DO UPDATE
     SET surveys = f.surveys + excluded.surveys, reminders = f.reminders + excluded.reminders,
         reminded = f.reminded + excluded.reminded, capped = f.capped + excluded.capped;
  RETURN NULL;
END
$fn$;
CREATE FUNCTION @extschema@.survey_funnel_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  TRUNCATE @extschema@.survey_funnel_day;
  RETURN NULL;
END
$fn$;
CREATE TRIGGER survey_funnel_insert AFTER INSERT ON @extschema@.survey
  REFERENCING NEW TABLE AS nps_new
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.survey_funnel_insert();
CREATE TRIGGER survey_funnel_delete AFTER DELETE ON @extschema@.survey
  REFERENCING OLD TABLE AS nps_old
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.survey_funnel_delete();
CREATE TRIGGER survey_funnel_update AFTER UPDATE ON @extschema@.survey
  REFERENCING OLD TABLE AS nps_old NEW TABLE AS nps_new
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.survey_funnel_update();
CREATE TRIGGER survey_funnel_truncate AFTER TRUNCATE ON @extschema@.survey
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.survey_funnel_truncate();
REVOKE ALL ON FUNCTION @extschema@.survey_funnel_insert(), @extschema@.survey_funnel_delete(),
  @extschema@.survey_funnel_update(), @extschema@.survey_funnel_truncate(),
  @extschema@.response_rollups_insert(), @extschema@.response_rollups_update(),
  @extschema@.response_rollups_delete(), @extschema@.response_rollups_truncate() FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.rebuild_rollups(from_day date DEFAULT '-infinity', to_day date DEFAULT 'infinity')
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  n bigint;
  lo timestamptz;
  hi timestamptz;
BEGIN
  IF from_day IS NULL OR to_day IS NULL THEN
    RAISE EXCEPTION 'rebuild_rollups: % must not be NULL',
      CASE WHEN from_day IS NULL THEN 'from_day' ELSE 'to_day' END USING ERRCODE = '22004';
  END IF;
  IF from_day > to_day THEN
    RAISE EXCEPTION 'rebuild_rollups: from_day % is after to_day %', from_day, to_day USING ERRCODE = '22023';
  END IF;
  lo := from_day::timestamp AT TIME ZONE 'UTC';
  hi := to_day::timestamp AT TIME ZONE 'UTC';
  -- Answers and surveys being written finish first and new ones wait: the rebuilt rows are
  -- exactly what the committed rows say, and nothing is counted twice or lost.
  LOCK TABLE @extschema@.response, @extschema@.survey IN SHARE MODE;
  DELETE FROM @extschema@.rollup_segment g WHERE g.day >= from_day AND g.day < to_day;
  INSERT INTO @extschema@.rollup_segment (day, source_id, dims, failed_30d, shard, agg)
  SELECT @extschema@.utc_day(r.responded_at), coalesce(r.payment_source_id, 0),
         coalesce(r.payment_dimensions, '{}'), coalesce(r.failed_payment_30d, false), 0,
         @extschema@.nps_agg(r.score)
    FROM @extschema@.response r WHERE r.responded_at >= lo AND r.responded_at < hi
   GROUP BY 1, 2, 3, 4;
  GET DIAGNOSTICS n = ROW_COUNT;
  DELETE FROM @extschema@.rollup_days g WHERE g.day >= from_day AND g.day < to_day;
  INSERT INTO @extschema@.rollup_days (day, days_since, shard, agg)
  SELECT @extschema@.utc_day(r.responded_at), r.days_since_payment, 0, @extschema@.nps_agg(r.score)
    FROM @extschema@.response r
   WHERE r.responded_at >= lo AND r.responded_at < hi AND r.days_since_payment IS NOT NULL
   GROUP BY 1, 2;
  DELETE FROM @extschema@.rollup_answer_delay g WHERE g.day >= from_day AND g.day < to_day;
  INSERT INTO @extschema@.rollup_answer_delay (day, bucket, shard, answers)
  SELECT @extschema@.utc_day(r.funnel_at), @extschema@.delay_bucket(r.answered_after), 0, count(*)
    FROM @extschema@.response r
   WHERE r.funnel_at >= lo AND r.funnel_at < hi AND r.answered_after IS NOT NULL
   GROUP BY 1, 2;
  -- latest answers of the customers who answered in the range
  INSERT INTO @extschema@.customer_latest_answer AS l (customer_id, response_id, responded_at, category)
  SELECT DISTINCT ON (r.customer_id) r.customer_id, r.id, r.responded_at, r.category
    FROM @extschema@.response r
   WHERE r.customer_id IN (SELECT x.customer_id FROM @extschema@.response x
                            WHERE x.responded_at >= lo AND x.responded_at < hi AND x.customer_id IS NOT NULL)
   ORDER BY r.customer_id, r.responded_at DESC, r.id DESC
  ON CONFLICT (customer_id) DO UPDATE
     SET response_id = excluded.response_id, responded_at = excluded.responded_at, category = excluded.category;
  IF from_day = '-infinity' AND to_day = 'infinity' THEN
    DELETE FROM @extschema@.customer_latest_answer l
     WHERE NOT EXISTS (SELECT 1 FROM @extschema@.response r WHERE r.customer_id = l.customer_id);
  END IF;
  DELETE FROM @extschema@.survey_funnel_day f WHERE f.day >= from_day AND f.day < to_day;
  INSERT INTO @extschema@.survey_funnel_day (day, outcome, sent, shard, surveys, reminders, reminded, capped)
  SELECT @extschema@.utc_day(s.created_at), @extschema@.funnel_outcome(s.status),
         s.sent_at IS NOT NULL OR s.status = 'responded', 0, count(*),
         sum(s.reminders_sent), count(*) FILTER (WHERE s.reminders_sent > 0), count(*) FILTER (WHERE s.cap_deferrals > 0)
    FROM @extschema@.survey s WHERE s.created_at >= lo AND s.created_at < hi
   GROUP BY 1, 2, 3;
  RETURN n;
END
$fn$;
COMMENT ON FUNCTION @extschema@.rebuild_rollups(date, date) IS
  'Recomputes the rollups (per-day answer summaries, latest answer per customer, survey funnel '
  'counts, answers by time to answer) for UTC days in [from_day, to_day) from the answers and surveys; blocks new answers '
  'meanwhile; returns the number of day x segment rows written';

-- A source's dimensions decide the segments its answers are kept under: changing them
-- re-projects that source's answers (their contexts, hence their rollup rows).
CREATE FUNCTION @extschema@.payment_source_dimensions_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  UPDATE @extschema@.response r
     SET payment_dimensions = coalesce((SELECT jsonb_object_agg(k.key, r.payment_attributes -> k.key)
                                          FROM unnest(NEW.dimensions) AS k(key)), '{}')
   WHERE r.payment_source_id = NEW.id;
  RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.payment_source_dimensions_changed() FROM PUBLIC;
CREATE TRIGGER payment_source_dimensions_changed AFTER UPDATE OF dimensions ON @extschema@.payment_source
  FOR EACH ROW WHEN (OLD.dimensions IS DISTINCT FROM NEW.dimensions)
  EXECUTE FUNCTION @extschema@.payment_source_dimensions_changed();
