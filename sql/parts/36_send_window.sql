-- Time zones and send windows (the window columns of payment_source, 40_schema.sql; the claim
-- that applies them, 60_delivery.sql). Pure functions: no table, the same answer for the same
-- arguments (AT TIME ZONE itself is IMMUTABLE in PostgreSQL: the zone database is fixed).

CREATE FUNCTION @extschema@.time_zone_ok(name text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'nps_time_zone_ok' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.time_zone_ok(text) IS
  'Whether PostgreSQL knows this time zone (an IANA name such as Europe/Berlin, or UTC); never raises';

-- 22023 for an unknown zone, without echoing it (a recipient's time zone is personal data).
CREATE FUNCTION @extschema@.check_time_zone(time_zone text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
  IF time_zone IS NULL OR NOT @extschema@.time_zone_ok(time_zone) THEN
    RAISE EXCEPTION 'time zone is NULL or unknown' USING ERRCODE = '22023',
      HINT = 'Use an IANA name such as Europe/Berlin, or UTC.';
  END IF;
  RETURN true;
END
$$;
COMMENT ON FUNCTION @extschema@.check_time_zone(text) IS
  'true for a known time zone; 22023 (without the value) otherwise';

-- The earliest moment at or after t inside a send window: local (wall-clock) time in
-- time_zone on one of the ISO weekdays days (1 = Monday .. 7 = Sunday), at or after send_from
-- and before send_until (send_until 24:00 = the end of the day). t itself when t is inside.
-- Each day's bounds are converted with AT TIME ZONE, so a window 09:00-17:00 is 09:00-17:00 on
-- both sides of a DST change (8 hours of UTC each day; the day itself has 23 or 25 hours). A
-- bound inside a skipped hour (02:30 on a spring-forward night) is read as PostgreSQL reads such
-- a local time: as the standard time before the change (03:30 summer time).
CREATE FUNCTION @extschema@.send_window_next(t timestamptz, time_zone text, days integer[],
                                             send_from time, send_until time)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE
    WHEN t IS NULL OR days IS NULL OR send_from IS NULL OR send_until IS NULL THEN NULL
    WHEN NOT isfinite(t) THEN t
    WHEN @extschema@.check_time_zone(time_zone) THEN (
      SELECT greatest(t, (d.day + send_from) AT TIME ZONE time_zone)
        FROM (SELECT (t AT TIME ZONE time_zone)::date + i AS day FROM pg_catalog.generate_series(0, 7) i) d
       WHERE extract(isodow FROM d.day)::integer = ANY (days)
         AND (d.day + send_until) AT TIME ZONE time_zone > t
         AND (d.day + send_from) AT TIME ZONE time_zone < (d.day + send_until) AT TIME ZONE time_zone
       ORDER BY d.day
       LIMIT 1)
  END
$$;
COMMENT ON FUNCTION @extschema@.send_window_next(timestamptz, text, integer[], time, time) IS
  'The earliest moment at or after t inside the send window (ISO weekdays, [send_from, send_until) '
  'local time in time_zone); t when t is inside; NULL when no day of the week is in the window';

-- Whether a window is the default, always-open one (every day, 00:00-24:00): the claim skips
-- the time zone arithmetic for such sources. Inlined (a single expression).
CREATE FUNCTION @extschema@.window_always_open(days integer[], send_from time, send_until time)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT days @> '{1,2,3,4,5,6,7}' AND send_from = '00:00' AND send_until = '24:00' $$;
COMMENT ON FUNCTION @extschema@.window_always_open(integer[], time, time) IS
  'true for the always-open window: every weekday, 00:00 to 24:00';

-- The zone a survey's window is read in: the recipient's when PostgreSQL knows it, else the
-- source's, else UTC. Inlined.
CREATE FUNCTION @extschema@.send_zone(survey_zone text, source_zone text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE WHEN survey_zone IS NOT NULL AND @extschema@.time_zone_ok(survey_zone) THEN survey_zone
              WHEN source_zone IS NOT NULL AND @extschema@.time_zone_ok(source_zone) THEN source_zone
              ELSE 'UTC' END
$$;
COMMENT ON FUNCTION @extschema@.send_zone(text, text) IS
  'The time zone a send window is read in: the survey''s (recipient''s) if known, else the source''s, else UTC';

-- The first local midnight after t in a zone (the start of the next day there; a DST day has
-- 23 or 25 hours).
CREATE FUNCTION @extschema@.next_local_midnight(t timestamptz, time_zone text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (date_trunc('day', t AT TIME ZONE time_zone) + interval '1 day') AT TIME ZONE time_zone $$;
COMMENT ON FUNCTION @extschema@.next_local_midnight(timestamptz, text) IS
  'The start of the day after t''s day in time_zone';
