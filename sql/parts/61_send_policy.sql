-- Sending policy per source: send windows, reminders and daily caps (the columns of
-- payment_source, 40_schema.sql; claim_surveys and mark_sent apply them, 60_delivery.sql).
--
-- Windows are judged when a survey is claimed, not when it is created: claim_surveys leases a
-- due survey only while its source's window is open in the recipient's time zone, and moves one
-- outside it to the window's next opening (send_after; due_at keeps when it fell due). The queue
-- index on send_after keeps serving claims, the time zone arithmetic is done once per survey put
-- off, and a window or cap changed later applies at the next claim: a change to a source's window
-- or cap moves the surveys it put off back to when they fell due (reschedule_surveys), so the
-- next claims judge them by the new rules.

-- Daily caps: the sends claimed per source and day (of the source's time zone). The row is the
-- lock point of concurrent claimers of that source.
CREATE TABLE @extschema@.send_day (
  source_id integer NOT NULL,
  day       date NOT NULL,             -- in the source's time zone (payment_source.time_zone, NULL: UTC)
  claimed   integer NOT NULL DEFAULT 0, -- sends claimed that day against the cap (first claims only)
  deferred  integer NOT NULL DEFAULT 0, -- claims put off to the next day because the cap was reached
  PRIMARY KEY (source_id, day)
);
COMMENT ON TABLE @extschema@.send_day IS
  'Sends claimed per source and local day against payment_source.daily_cap, and how many were put off to the next day';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.send_day', '');

-- Grants up to wanted sends of today's cap of a source; returns how many. Locks the day's row
-- to the end of the transaction: claimers of one capped source take turns here (only they).
CREATE FUNCTION @extschema@.take_send_quota(source integer, wanted integer) RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  cap integer;
  zone text;
  today date;
  used integer;
  granted integer;
BEGIN
  SELECT p.daily_cap, coalesce(p.time_zone, 'UTC') INTO cap, zone
    FROM @extschema@.payment_source p WHERE p.id = source;
  IF cap IS NULL THEN
    RETURN wanted;
  END IF;
  today := (now() AT TIME ZONE zone)::date;
  LOOP
    -- READ COMMITTED: waits for a concurrent claimer, then reads its committed count
    SELECT d.claimed INTO used FROM @extschema@.send_day d
     WHERE d.source_id = source AND d.day = today FOR UPDATE;
    EXIT WHEN FOUND;
    INSERT INTO @extschema@.send_day (source_id, day) VALUES (source, today) ON CONFLICT DO NOTHING;
  END LOOP;
  granted := least(wanted, greatest(cap - used, 0));
  UPDATE @extschema@.send_day d
     SET claimed = d.claimed + granted, deferred = d.deferred + (wanted - granted)
   WHERE d.source_id = source AND d.day = today;
  RETURN granted;
END
$fn$;
COMMENT ON FUNCTION @extschema@.take_send_quota(integer, integer) IS
  'Internal (claim_surveys): grants up to wanted of a source''s daily cap for today, locking the day''s counter';

-- A claim round's share of the daily caps: take_send_quota for each capped source of the round,
-- in source order (no deadlock between claimers of several capped sources); returns the counted
-- surveys left over their source's cap, in queue order within each source.
CREATE FUNCTION @extschema@.take_round_quota(ids bigint[], sources integer[], states text[]) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  over_ids bigint[] := '{}';
  k integer;
  want integer;
  granted integer;
BEGIN
  FOR k, want IN SELECT u.src, count(*)::integer FROM unnest(sources, states) AS u(src, st)
                  WHERE u.st = 'counted' GROUP BY u.src ORDER BY u.src LOOP
    granted := @extschema@.take_send_quota(k, want);
    IF granted < want THEN
      over_ids := over_ids || ARRAY(SELECT u.id FROM unnest(ids, sources, states) WITH ORDINALITY AS u(id, src, st, ord)
                                     WHERE u.st = 'counted' AND u.src = k ORDER BY u.ord OFFSET granted);
    END IF;
  END LOOP;
  RETURN over_ids;
END
$fn$;
COMMENT ON FUNCTION @extschema@.take_round_quota(bigint[], integer[], text[]) IS
  'Internal (claim_surveys): takes a claim round''s share of the daily caps; returns the surveys over the cap';

-- When a survey that claim_surveys puts off may be claimed again: its window's next opening in
-- its recipient's zone, from now (closed) or from the next local midnight of the source's zone
-- (over the daily cap); at least a second away, so the claim does not pick it again.
CREATE FUNCTION @extschema@.put_off_until(over_cap boolean, survey_zone text, source_zone text,
                                          days integer[], send_from time, send_until time)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT greatest(now() + interval '1 second',
                  @extschema@.send_window_next(
                    CASE WHEN over_cap THEN @extschema@.next_local_midnight(now(), coalesce(source_zone, 'UTC'))
                         ELSE now() END,
                    @extschema@.send_zone(survey_zone, source_zone), days, send_from, send_until))
$$;
COMMENT ON FUNCTION @extschema@.put_off_until(boolean, text, text, integer[], time, time) IS
  'Internal (claim_surveys): the send_after of a survey put off, outside its window or over its source''s daily cap';

-- When the next reminder of a survey is due after a send reported now: NULL when its source
-- gives no more reminders or the reminder would come after the survey closes.
CREATE FUNCTION @extschema@.next_reminder_at(source_id integer, reminder integer, expires_at timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT now() + p.reminder_after FROM @extschema@.payment_source p
   WHERE p.id = next_reminder_at.source_id AND p.reminders > next_reminder_at.reminder
     AND now() + p.reminder_after < next_reminder_at.expires_at
$$;
COMMENT ON FUNCTION @extschema@.next_reminder_at(integer, integer, timestamptz) IS
  'Internal (mark_sent): the due time of a survey''s next reminder after a send reported now, NULL for none';

-- Surveys put off by a send window or the daily cap go back to when they fell due; the next
-- claims judge them again. Run after changing surveys' time zones; a change of a source's
-- window, time zone or cap runs it for that source by itself (trigger below).
CREATE FUNCTION @extschema@.reschedule_surveys(source text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  moved bigint;
  sid integer;
BEGIN
  IF source IS NOT NULL THEN
    SELECT p.id INTO sid FROM @extschema@.payment_source p WHERE p.name = reschedule_surveys.source;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'reschedule_surveys: no payment source is named "%"', source USING ERRCODE = '42704';
    END IF;
  END IF;
  -- Claims of these sources under way hold this lock shared until they commit: wait for them,
  -- so the surveys they put off are seen (each statement below reads what has committed), and
  -- claims starting now wait for this transaction's new window or cap.
  PERFORM pg_catalog.pg_advisory_xact_lock('@extschema@.payment_source'::pg_catalog.regclass::pg_catalog.oid::pg_catalog.int4, x.id)
     FROM (SELECT p.id FROM @extschema@.payment_source p WHERE sid IS NULL OR p.id = sid ORDER BY p.id OFFSET 0) x;
  UPDATE @extschema@.survey s
     SET send_after = s.due_at, due_at = NULL
   WHERE s.id IN (SELECT q.survey_id FROM @extschema@.survey_queue q)
     AND s.status = 'pending' AND s.due_at IS NOT NULL
     AND (sid IS NULL OR s.source_id = sid);
  GET DIAGNOSTICS moved = ROW_COUNT;
  RETURN moved;
END
$fn$;
COMMENT ON FUNCTION @extschema@.reschedule_surveys(text) IS
  'Moves surveys a send window or daily cap put off back to when they fell due (one source, or all), '
  'so the next claims apply the current windows and caps; returns how many';

CREATE FUNCTION @extschema@.payment_source_send_policy_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  IF (OLD.time_zone, OLD.send_days, OLD.send_from, OLD.send_until, OLD.daily_cap)
     IS DISTINCT FROM (NEW.time_zone, NEW.send_days, NEW.send_from, NEW.send_until, NEW.daily_cap) THEN
    PERFORM @extschema@.reschedule_surveys(NEW.name);
  END IF;
  -- fewer reminders: queued reminders beyond the new number are dropped (the survey stays sent)
  IF NEW.reminders < OLD.reminders THEN
    UPDATE @extschema@.survey s SET status = 'sent', due_at = NULL
     WHERE s.id IN (SELECT q.survey_id FROM @extschema@.survey_queue q)
       AND s.status = 'pending' AND s.source_id = NEW.id AND s.reminder > NEW.reminders;
  END IF;
  RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION @extschema@.payment_source_send_policy_changed() IS
  'Internal: a source''s window, time zone or cap changed: its put-off surveys are judged again; '
  'fewer reminders: queued reminders beyond them are dropped';
CREATE TRIGGER payment_source_send_policy_changed
  AFTER UPDATE OF time_zone, send_days, send_from, send_until, daily_cap, reminders ON @extschema@.payment_source
  FOR EACH ROW
  WHEN ((OLD.time_zone, OLD.send_days, OLD.send_from, OLD.send_until, OLD.daily_cap, OLD.reminders)
        IS DISTINCT FROM (NEW.time_zone, NEW.send_days, NEW.send_from, NEW.send_until, NEW.daily_cap, NEW.reminders))
  EXECUTE FUNCTION @extschema@.payment_source_send_policy_changed();

-- The backlog of the queue for a dashboard: per source and state, how many surveys and the
-- earliest moment one of them may go out. No customer id, token or time zone.
--   due        claimable now
--   leased     held by a sender (next_send_at: when the lease runs out)
--   window     due, but outside its send window now (next_send_at: the window's next opening)
--   daily_cap  due and inside its window, but today's cap is used up (next: the next day's opening)
--   scheduled  not due yet: the delay after the payment, a retry, or put off to an opening
--   reminder   a sent survey waiting for its next reminder
CREATE VIEW @extschema@.send_backlog AS
SELECT p.name AS source, w.state, count(*) AS surveys, min(w.next_send_at) AS next_send_at
  FROM @extschema@.survey_queue q
  JOIN @extschema@.survey s ON s.id = q.survey_id
  JOIN @extschema@.payment_source p ON p.id = s.source_id
  CROSS JOIN LATERAL (SELECT @extschema@.send_zone(s.time_zone, p.time_zone) AS zone,
                             coalesce(p.time_zone, 'UTC') AS source_zone) z
  LEFT JOIN @extschema@.send_day d
         ON d.source_id = p.id AND d.day = (now() AT TIME ZONE z.source_zone)::date
  CROSS JOIN LATERAL (
    SELECT CASE WHEN s.status = 'sending' AND s.lease_until > now() THEN 'leased'
                WHEN s.send_after > now() THEN CASE WHEN s.reminder > 0 THEN 'reminder' ELSE 'scheduled' END
                WHEN @extschema@.send_window_next(now(), z.zone, p.send_days, p.send_from, p.send_until) > now()
                  THEN 'window'
                WHEN p.daily_cap IS NOT NULL AND s.status = 'pending' AND s.attempts = 0
                     AND coalesce(d.claimed, 0) >= p.daily_cap THEN 'daily_cap'
                ELSE 'due' END AS state) st
  CROSS JOIN LATERAL (
    SELECT CASE st.state
             WHEN 'leased' THEN s.lease_until
             WHEN 'window' THEN @extschema@.send_window_next(now(), z.zone, p.send_days, p.send_from, p.send_until)
             WHEN 'daily_cap' THEN @extschema@.send_window_next(@extschema@.next_local_midnight(now(), z.source_zone),
                                                                z.zone, p.send_days, p.send_from, p.send_until)
             WHEN 'due' THEN now()
             ELSE @extschema@.send_window_next(s.send_after, z.zone, p.send_days, p.send_from, p.send_until)
           END AS next_send_at,
           st.state) w
 WHERE s.status IN ('pending', 'sending') AND s.expires_at > now()
 GROUP BY p.name, w.state;
COMMENT ON VIEW @extschema@.send_backlog IS
  'Queued surveys per source and state (due, leased, window, daily_cap, scheduled, reminder) and the earliest next send';
