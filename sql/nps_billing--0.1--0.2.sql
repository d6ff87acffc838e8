-- nps_billing 0.1 -> 0.2 (ALTER EXTENSION nps_billing UPDATE).
-- Every schema change in sql/parts/ since 0.1 has its step here, in the same order, so that an
-- updated database has the same catalog as a fresh 0.2 install (test/upgrade.sh checks it).
\echo Use "ALTER EXTENSION nps_billing UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- Delivery hardening (intervals checked for what they do; leases held by worker and login role;
-- reports that reveal nothing; batch reports; responded_at checked) and a queue that writes less
-- (claims update surveys in place; payment context read by primary key)
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.interval_within(i interval, lo interval, hi interval) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT i IS NOT NULL AND isfinite(i)
         -- year/month come from the months part, hour/minute/second from the time part; each
         -- keeps its part's sign (truncating division), so one negative part shows here
         AND least(extract(year FROM i), extract(month FROM i), extract(day FROM i),
                   extract(hour FROM i), extract(minute FROM i), extract(second FROM i)) >= 0
         AND i >= lo AND i <= hi
$$;
COMMENT ON FUNCTION @extschema@.interval_within(interval, interval, interval) IS
  'true when no part (months, days, time) of the interval is negative and lo <= i <= hi: adding it moves any time forward, by about that much';
REVOKE ALL ON FUNCTION @extschema@.interval_within(interval, interval, interval) FROM PUBLIC;

-- Policy intervals: a 0.1 database may hold values the new CHECK constraints refuse; say which
-- source and column instead of failing on the constraint.
DO $$
DECLARE bad text;
BEGIN
  SELECT string_agg(format('%s (%s)', p.name, concat_ws(', ',
           CASE WHEN NOT @extschema@.interval_within(p.delay, '0', '1 year') THEN 'delay ' || p.delay END,
           CASE WHEN NOT @extschema@.interval_within(p.throttle, '0', '100 years') THEN 'throttle ' || p.throttle END,
           CASE WHEN NOT @extschema@.interval_within(p.expires_after, '1 minute', '10 years') THEN 'expires_after ' || p.expires_after END)), '; ')
    INTO bad
    FROM @extschema@.payment_source p
   WHERE NOT (@extschema@.interval_within(p.delay, '0', '1 year')
              AND @extschema@.interval_within(p.throttle, '0', '100 years')
              AND @extschema@.interval_within(p.expires_after, '1 minute', '10 years'));
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'nps_billing 0.2: payment_source policy intervals out of range: %', bad
      USING ERRCODE = '23514',
            HINT = 'delay must be in [0, 1 year], throttle in [0, 100 years], expires_after in [1 minute, 10 years], '
                   'none with a negative part; UPDATE nps_billing.payment_source, then run ALTER EXTENSION nps_billing UPDATE again.';
  END IF;
END $$;
ALTER TABLE @extschema@.payment_source
  ADD CONSTRAINT payment_source_delay_check CHECK (@extschema@.interval_within(delay, '0', '1 year')),
  ADD CONSTRAINT payment_source_throttle_check CHECK (@extschema@.interval_within(throttle, '0', '100 years')),
  ADD CONSTRAINT payment_source_expires_after_check CHECK (@extschema@.interval_within(expires_after, '1 minute', '10 years'));

-- survey: the leasing role; queued/live derived from status (a claim changes neither, so it is
-- an in-place HOT update); the queue and expiry indexes on them; room on each page for HOT.
-- The table is rewritten once (stored generated columns) with the new fillfactor. Leases taken
-- by 0.1 keep lease_role NULL and are matched on the worker name alone until they end; queued,
-- leased and sent surveys keep their status, lease and attempts.
ALTER TABLE @extschema@.survey SET (fillfactor = 80);
ALTER TABLE @extschema@.survey
  ADD COLUMN lease_role oid,
  ADD COLUMN queued boolean GENERATED ALWAYS AS (status IN ('pending', 'sending')) STORED,
  ADD COLUMN live boolean GENERATED ALWAYS AS (status IN ('pending', 'sending', 'sent')) STORED;
DROP INDEX @extschema@.survey_queue_idx;
CREATE INDEX survey_queue_idx ON @extschema@.survey (send_after) WHERE queued;
DROP INDEX @extschema@.survey_expiry_idx;
CREATE INDEX survey_expiry_idx ON @extschema@.survey (expires_at) WHERE live;

DROP FUNCTION @extschema@.lease_check(bigint, text, text);
CREATE OR REPLACE FUNCTION @extschema@.claim_surveys(worker text, max integer DEFAULT 100,
                                          lease interval DEFAULT '5 minutes')
RETURNS SETOF @extschema@.claimed_survey
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  lease_end timestamptz;
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
BEGIN
  -- Not STRICT: a NULL argument is a caller bug and gets 22004, not a silent empty result.
  IF worker IS NULL OR max IS NULL OR lease IS NULL THEN
    RAISE EXCEPTION 'claim_surveys: % must not be NULL',
      CASE WHEN worker IS NULL THEN 'worker' WHEN max IS NULL THEN 'max' ELSE 'lease' END
      USING ERRCODE = '22004';
  END IF;
  IF worker = '' OR length(worker) > 200 THEN
    RAISE EXCEPTION 'claim_surveys: worker name must have 1..200 characters, got %', length(worker)
      USING ERRCODE = '22023';
  END IF;
  IF max <= 0 OR max > 10000 THEN
    RAISE EXCEPTION 'claim_surveys: max % is out of range 1..10000', max USING ERRCODE = '22023';
  END IF;
  IF caller IS NULL THEN  -- the session's login role was dropped meanwhile
    RAISE EXCEPTION 'claim_surveys: the session''s login role no longer exists' USING ERRCODE = '42704';
  END IF;
  -- Checked for what it does: no negative part (35_intervals.sql), then in absolute time from now.
  IF @extschema@.interval_within(lease, '1 microsecond', '1 day') THEN
    lease_end := now() + lease;
  END IF;
  IF lease_end IS NULL OR lease_end <= now() OR lease_end > now() + interval '25 hours' THEN
    RAISE EXCEPTION 'claim_surveys: lease % is out of range (0, 1 day] or has a negative part', lease
      USING ERRCODE = '22023';
  END IF;
  RETURN QUERY
  WITH picked AS (
    SELECT s.id
      FROM @extschema@.survey s
     WHERE s.queued  -- survey_queue_idx
       AND s.status IN ('pending', 'sending')
       AND s.send_after <= now()
       AND s.expires_at > now()
       AND (s.status = 'pending'
            OR (s.lease_until <= now()
                AND s.attempts < (SELECT p.max_attempts FROM @extschema@.payment_source p
                                   WHERE p.id = s.source_id)))
     ORDER BY s.send_after  -- the queue index's order: no sort of the whole backlog
     LIMIT claim_surveys.max
       FOR UPDATE OF s SKIP LOCKED
  ), claimed AS (
    UPDATE @extschema@.survey s
       SET status = 'sending',
           lease_owner = claim_surveys.worker,
           lease_role = caller,
           lease_until = lease_end,
           attempts = s.attempts + 1
      FROM picked
     WHERE s.id = picked.id
    RETURNING s.id, s.token, s.customer_id, s.channel, s.attempts, s.lease_until, s.expires_at,
              s.source_id, s.event_id, s.send_after
  )
  -- The payment context: one primary-key probe per claimed survey (LIMIT 1 keeps each LATERAL
  -- subquery a nested loop; a plain join let the planner hash the whole payment_event table).
  SELECT c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at,
         p.name, e.kind, e.amount, e.currency, e.occurred_at, e.attributes
    FROM claimed c
    LEFT JOIN LATERAL (SELECT p.name FROM @extschema@.payment_source p
                        WHERE p.id = c.source_id LIMIT 1) p ON true
    LEFT JOIN LATERAL (SELECT e.kind, e.amount, e.currency, e.occurred_at, e.attributes
                         FROM @extschema@.payment_event e WHERE e.id = c.event_id LIMIT 1) e ON true
   ORDER BY c.send_after, c.id;
END
$fn$;
COMMENT ON FUNCTION @extschema@.claim_surveys(text, integer, interval) IS
  'Leases up to max due surveys (pending, or sending with a lapsed lease) to worker and the '
  'session''s login role for lease; FOR UPDATE SKIP LOCKED: concurrent workers never get the '
  'same survey while a lease holds';

CREATE OR REPLACE FUNCTION @extschema@.mark_sent(survey_id bigint, worker text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
BEGIN
  IF survey_id IS NULL OR worker IS NULL THEN
    RAISE EXCEPTION 'mark_sent: % must not be NULL',
      CASE WHEN survey_id IS NULL THEN 'survey_id' ELSE 'worker' END USING ERRCODE = '22004';
  END IF;
  -- An answer can arrive before the sender reports (in-app surveys): keep 'responded'.
  UPDATE @extschema@.survey x
     SET status = CASE WHEN x.status = 'responded' THEN 'responded' ELSE 'sent' END,
         sent_at = now(), lease_owner = NULL, lease_until = NULL, lease_role = NULL
   WHERE x.id = mark_sent.survey_id
     AND x.lease_owner = mark_sent.worker
     AND (x.lease_role IS NULL OR x.lease_role = caller)
     AND x.status IN ('sending', 'responded');
  IF NOT FOUND THEN
    RAISE EXCEPTION 'mark_sent: survey % is not leased by worker "%"', survey_id, worker
      USING ERRCODE = '55000',
            HINT = 'Report only surveys this worker claimed with claim_surveys(), once each.';
  END IF;
END
$fn$;
COMMENT ON FUNCTION @extschema@.mark_sent(bigint, text) IS
  'Reports a claimed survey as sent; only the worker and role holding its lease (55000 otherwise, '
  'the same for every survey the caller does not hold)';

CREATE OR REPLACE FUNCTION @extschema@.mark_failed(survey_id bigint, worker text, error text,
                                        retry_after interval DEFAULT '15 minutes')
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  new_status text;
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
BEGIN
  IF survey_id IS NULL OR worker IS NULL OR error IS NULL OR retry_after IS NULL THEN
    RAISE EXCEPTION 'mark_failed: % must not be NULL',
      CASE WHEN survey_id IS NULL THEN 'survey_id' WHEN worker IS NULL THEN 'worker'
           WHEN error IS NULL THEN 'error' ELSE 'retry_after' END USING ERRCODE = '22004';
  END IF;
  IF NOT @extschema@.interval_within(retry_after, '0', '1 year') THEN
    RAISE EXCEPTION 'mark_failed: retry_after % is out of range [0, 1 year] or has a negative part', retry_after
      USING ERRCODE = '22023';
  END IF;
  UPDATE @extschema@.survey x
     SET status = CASE WHEN x.status = 'responded' THEN 'responded'
                       WHEN x.attempts >= coalesce((SELECT p.max_attempts FROM @extschema@.payment_source p
                                                     WHERE p.id = x.source_id), 5) THEN 'failed'
                       ELSE 'pending' END,
         send_after = CASE WHEN x.status = 'responded'
                             OR x.attempts >= coalesce((SELECT p.max_attempts FROM @extschema@.payment_source p
                                                         WHERE p.id = x.source_id), 5)
                           THEN x.send_after ELSE now() + retry_after END,
         last_error = left(error, 2000),
         lease_owner = NULL, lease_until = NULL, lease_role = NULL
   WHERE x.id = mark_failed.survey_id
     AND x.lease_owner = mark_failed.worker
     AND (x.lease_role IS NULL OR x.lease_role = caller)
     AND x.status IN ('sending', 'responded')
  RETURNING x.status INTO new_status;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'mark_failed: survey % is not leased by worker "%"', survey_id, worker
      USING ERRCODE = '55000',
            HINT = 'Report only surveys this worker claimed with claim_surveys(), once each.';
  END IF;
  RETURN new_status;
END
$fn$;
COMMENT ON FUNCTION @extschema@.mark_failed(bigint, text, text, interval) IS
  'Reports a failed delivery: back to pending after retry_after, or failed once attempts reach '
  'the source''s max_attempts (default 5); returns the new status';

CREATE FUNCTION @extschema@.mark_sent(survey_ids bigint[], worker text)
RETURNS TABLE (survey_id bigint, ok boolean, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
BEGIN
  IF survey_ids IS NULL OR worker IS NULL THEN
    RAISE EXCEPTION 'mark_sent: % must not be NULL',
      CASE WHEN survey_ids IS NULL THEN 'survey_ids' ELSE 'worker' END USING ERRCODE = '22004';
  END IF;
  IF cardinality(survey_ids) > 10000 THEN
    RAISE EXCEPTION 'mark_sent: % survey ids in one call, at most 10000', cardinality(survey_ids)
      USING ERRCODE = '54000';
  END IF;
  IF array_position(survey_ids, NULL) IS NOT NULL THEN
    RAISE EXCEPTION 'mark_sent: survey_ids must not contain NULL' USING ERRCODE = '22004';
  END IF;
  RETURN QUERY
  WITH done AS (
    UPDATE @extschema@.survey x
       SET status = CASE WHEN x.status = 'responded' THEN 'responded' ELSE 'sent' END,
           sent_at = now(), lease_owner = NULL, lease_until = NULL, lease_role = NULL
     WHERE x.id = ANY (mark_sent.survey_ids)
       AND x.lease_owner = mark_sent.worker
       AND (x.lease_role IS NULL OR x.lease_role = caller)
       AND x.status IN ('sending', 'responded')
    RETURNING x.id, x.status
  )
  SELECT u.id, d.id IS NOT NULL, d.status
    FROM (SELECT DISTINCT ON (v.id) v.id, v.ord
            FROM unnest(mark_sent.survey_ids) WITH ORDINALITY AS v(id, ord)
           ORDER BY v.id, v.ord) u
    LEFT JOIN done d ON d.id = u.id
   ORDER BY u.ord;
END
$fn$;
COMMENT ON FUNCTION @extschema@.mark_sent(bigint[], text) IS
  'Reports a batch of claimed surveys as sent in one statement; one row per distinct id: ok and '
  'the new status, or ok = false for a survey the worker and role do not hold';

CREATE FUNCTION @extschema@.mark_failed(survey_ids bigint[], worker text, error text,
                                        retry_after interval DEFAULT '15 minutes')
RETURNS TABLE (survey_id bigint, ok boolean, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
BEGIN
  IF survey_ids IS NULL OR worker IS NULL OR error IS NULL OR retry_after IS NULL THEN
    RAISE EXCEPTION 'mark_failed: % must not be NULL',
      CASE WHEN survey_ids IS NULL THEN 'survey_ids' WHEN worker IS NULL THEN 'worker'
           WHEN error IS NULL THEN 'error' ELSE 'retry_after' END USING ERRCODE = '22004';
  END IF;
  IF cardinality(survey_ids) > 10000 THEN
    RAISE EXCEPTION 'mark_failed: % survey ids in one call, at most 10000', cardinality(survey_ids)
      USING ERRCODE = '54000';
  END IF;
  IF array_position(survey_ids, NULL) IS NOT NULL THEN
    RAISE EXCEPTION 'mark_failed: survey_ids must not contain NULL' USING ERRCODE = '22004';
  END IF;
  IF NOT @extschema@.interval_within(retry_after, '0', '1 year') THEN
    RAISE EXCEPTION 'mark_failed: retry_after % is out of range [0, 1 year] or has a negative part', retry_after
      USING ERRCODE = '22023';
  END IF;
  RETURN QUERY
  WITH done AS (
    UPDATE @extschema@.survey x
       SET status = CASE WHEN x.status = 'responded' THEN 'responded'
                         WHEN x.attempts >= coalesce((SELECT p.max_attempts FROM @extschema@.payment_source p
                                                       WHERE p.id = x.source_id), 5) THEN 'failed'
                         ELSE 'pending' END,
           send_after = CASE WHEN x.status = 'responded'
                               OR x.attempts >= coalesce((SELECT p.max_attempts FROM @extschema@.payment_source p
                                                           WHERE p.id = x.source_id), 5)
                             THEN x.send_after ELSE now() + mark_failed.retry_after END,
           last_error = left(mark_failed.error, 2000),
           lease_owner = NULL, lease_until = NULL, lease_role = NULL
     WHERE x.id = ANY (mark_failed.survey_ids)
       AND x.lease_owner = mark_failed.worker
       AND (x.lease_role IS NULL OR x.lease_role = caller)
       AND x.status IN ('sending', 'responded')
    RETURNING x.id, x.status
  )
  SELECT u.id, d.id IS NOT NULL, d.status
    FROM (SELECT DISTINCT ON (v.id) v.id, v.ord
            FROM unnest(mark_failed.survey_ids) WITH ORDINALITY AS v(id, ord)
           ORDER BY v.id, v.ord) u
    LEFT JOIN done d ON d.id = u.id
   ORDER BY u.ord;
END
$fn$;
COMMENT ON FUNCTION @extschema@.mark_failed(bigint[], text, text, interval) IS
  'Reports a failed delivery for a batch of claimed surveys (one error text for all) in one '
  'statement; one row per distinct id: ok and the new status, or ok = false when not held';

REVOKE ALL ON FUNCTION @extschema@.mark_sent(bigint[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.mark_failed(bigint[], text, text, interval) FROM PUBLIC;

CREATE OR REPLACE FUNCTION @extschema@.expire_surveys()
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  expired integer;
  exhausted integer;
BEGIN
  -- 'sent' too: an unanswered survey expires (sent_at still tells it was delivered).
  UPDATE @extschema@.survey s
     SET status = 'expired', lease_owner = NULL, lease_until = NULL, lease_role = NULL
   WHERE s.live AND s.status IN ('pending', 'sending', 'sent') AND s.expires_at <= now();  -- survey_expiry_idx
  GET DIAGNOSTICS expired = ROW_COUNT;
  -- Leases that ran out max_attempts times (a sender that crashes on this survey every time)
  -- are never claimed again: close them as failed.
  UPDATE @extschema@.survey s
     SET status = 'failed', lease_owner = NULL, lease_until = NULL, lease_role = NULL,
         last_error = coalesce(s.last_error, 'lease ran out ' || s.attempts || ' times')
    FROM @extschema@.payment_source p
   WHERE s.queued AND s.status = 'sending' AND s.lease_until <= now()
     AND p.id = s.source_id AND s.attempts >= p.max_attempts;
  GET DIAGNOSTICS exhausted = ROW_COUNT;
  RETURN expired + exhausted;
END
$fn$;
COMMENT ON FUNCTION @extschema@.expire_surveys() IS
  'Marks overdue pending/sending/sent surveys expired (and lapsed leases past max_attempts failed); '
  'returns how many surveys it closed. Schedule it (pg_cron or cron).';

CREATE OR REPLACE FUNCTION @extschema@.record_response(token text, score integer, comment text DEFAULT NULL,
                                            responded_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  s @extschema@.survey;
  rid bigint;
BEGIN
  IF token IS NULL OR score IS NULL OR responded_at IS NULL THEN
    RAISE EXCEPTION 'record_response: % must not be NULL',
      CASE WHEN token IS NULL THEN 'token' WHEN score IS NULL THEN 'score' ELSE 'responded_at' END
      USING ERRCODE = '22004';
  END IF;
  IF score < 0 OR score > 10 THEN
    RAISE EXCEPTION 'NPS score % is out of range 0..10', score USING ERRCODE = '22003';
  END IF;
  IF NOT isfinite(responded_at) THEN
    RAISE EXCEPTION 'record_response: responded_at % is not a finite time', responded_at
      USING ERRCODE = '22023';
  END IF;
  -- responded_at comes from the collector's clock: 5 minutes of skew either way are accepted.
  IF responded_at > now() + interval '5 minutes' THEN
    RAISE EXCEPTION 'record_response: responded_at % is in the future (more than 5 minutes after now())', responded_at
      USING ERRCODE = '22023';
  END IF;
  IF length(comment) > 10000 THEN
    RAISE EXCEPTION 'record_response: comment has % characters, at most 10000 are kept', length(comment)
      USING ERRCODE = '22001';
  END IF;
  -- Lock the survey: concurrent answers and expire_surveys() serialise on this row.
  SELECT * INTO s FROM @extschema@.survey x WHERE x.token = record_response.token FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'record_response: no survey has this token' USING ERRCODE = 'P0002';
  END IF;
  IF s.status IN ('expired', 'cancelled') THEN
    RAISE EXCEPTION 'record_response: survey % is %', s.id, s.status USING ERRCODE = '22023';
  END IF;
  -- (historical answers, given before any survey existed, load with COPY into response)
  IF responded_at < s.created_at - interval '5 minutes' THEN
    RAISE EXCEPTION 'record_response: responded_at % is before survey % was created', responded_at, s.id
      USING ERRCODE = '22023', HINT = 'Load historical answers with COPY into nps_billing.response.';
  END IF;
  IF responded_at >= s.expires_at THEN
    RAISE EXCEPTION 'record_response: survey % is expired (it closed at %)', s.id, s.expires_at
      USING ERRCODE = '22023', DETAIL = format('Its status is %s.', s.status);
  END IF;
  INSERT INTO @extschema@.response AS r (survey_id, customer_id, score, comment, channel, responded_at)
  VALUES (s.id, s.customer_id, score, comment, s.channel, responded_at)
  ON CONFLICT (survey_id) DO UPDATE
     SET score = excluded.score, comment = excluded.comment,
         responded_at = excluded.responded_at, updated_at = now()
  RETURNING r.id INTO rid;
  UPDATE @extschema@.survey x SET status = 'responded'
   WHERE x.id = s.id AND x.status <> 'responded';
  RETURN rid;
END
$fn$;
COMMENT ON FUNCTION @extschema@.record_response(text, integer, text, timestamptz) IS
  'Stores the answer to a survey (by its token) and returns the response id; a second answer '
  'replaces the first. Unknown token P0002, expired/cancelled survey 22023, score 22003, '
  'responded_at before the survey or in the future (5 minutes of clock skew allowed) 22023';

CREATE OR REPLACE FUNCTION @extschema@.purge(older_than interval,
                                  OUT events integer, OUT surveys integer, OUT responses integer,
                                  OUT capture_errors integer, OUT contacts integer)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  cutoff timestamptz;
  longest_throttle interval;
  gone_ids bigint[];
  gone_events bigint[];
BEGIN
  IF older_than IS NULL THEN
    RAISE EXCEPTION 'purge: older_than must not be NULL' USING ERRCODE = '22004';
  END IF;
  -- Checked for what it does (35_intervals.sql): no negative part, at least a day (a shorter
  -- retention would delete surveys still being delivered), and the cutoff really is in the past.
  IF @extschema@.interval_within(older_than, '1 day', '1000 years') THEN
    cutoff := now() - older_than;
  END IF;
  IF cutoff IS NULL OR cutoff >= now() - interval '23 hours' THEN
    RAISE EXCEPTION 'purge: older_than % must be positive, at least 1 day and at most 1000 years, with no negative part', older_than
      USING ERRCODE = '22023';
  END IF;

  -- Surveys created before the cutoff, whatever their state (live ones that old are overdue).
  -- The links to them are cleared by the next statements, whose fresh snapshots also see an
  -- answer that was being recorded while the DELETE waited for its row lock.
  WITH gone AS (
    DELETE FROM @extschema@.survey s WHERE s.created_at < cutoff RETURNING s.id, s.event_id
  )
  SELECT count(*), coalesce(array_agg(gone.id), '{}'), coalesce(array_agg(gone.event_id), '{}')
    INTO surveys, gone_ids, gone_events FROM gone;
  UPDATE @extschema@.response r SET survey_id = NULL WHERE r.survey_id = ANY (gone_ids);
  UPDATE @extschema@.payment_event e SET survey_id = NULL
   WHERE e.id = ANY (gone_events) AND e.survey_id = ANY (gone_ids);

  -- Events before the cutoff, except those a still-live survey needs for its message.
  DELETE FROM @extschema@.payment_event e
   WHERE e.occurred_at < cutoff
     AND NOT EXISTS (SELECT 1 FROM @extschema@.survey s
                      WHERE s.event_id = e.id AND s.status IN ('pending', 'sending'));
  GET DIAGNOSTICS events = ROW_COUNT;

  -- Old responses lose comment and links to a person; score, category, channel and dates stay.
  UPDATE @extschema@.response r
     SET comment = NULL, customer_id = NULL, survey_id = NULL
   WHERE r.responded_at < cutoff
     AND (r.comment IS NOT NULL OR r.customer_id IS NOT NULL OR r.survey_id IS NOT NULL);
  GET DIAGNOSTICS responses = ROW_COUNT;

  DELETE FROM @extschema@.capture_error ce WHERE ce.at < cutoff;
  GET DIAGNOSTICS capture_errors = ROW_COUNT;

  -- A contact row is the throttle's memory: drop it only when no source's throttle needs it.
  SELECT max(p.throttle) INTO longest_throttle FROM @extschema@.payment_source p;
  DELETE FROM @extschema@.customer_contact c
   WHERE c.last_survey_at < now() - greatest(older_than, coalesce(longest_throttle, interval '0'));
  GET DIAGNOSTICS contacts = ROW_COUNT;
END
$fn$;
COMMENT ON FUNCTION @extschema@.purge(interval) IS
  'Retention: deletes surveys, payment events and capture errors older than older_than and '
  'anonymises older responses (comment, customer id, survey link removed; scores kept)';

CREATE OR REPLACE FUNCTION @extschema@.nps_trend(bucket interval, since timestamptz, until timestamptz)
RETURNS TABLE (bucket_start timestamptz, responses bigint, nps float8, ci_low float8, ci_high float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT b.bucket_start,
         coalesce(@extschema@.responses(s.a), 0),
         @extschema@.nps(s.a), ci.low, ci.high
  FROM generate_series(since, until, bucket) AS b(bucket_start)
  CROSS JOIN LATERAL (
    SELECT @extschema@.nps_agg(r.score) AS a
    FROM @extschema@.response r
    WHERE r.responded_at >= b.bucket_start
      AND r.responded_at < least(b.bucket_start + bucket, until)) s
  LEFT JOIN LATERAL @extschema@.nps_ci(s.a) ci ON true
  WHERE b.bucket_start < until
    AND @extschema@.check_argument(bucket IS NOT NULL AND since IS NOT NULL AND until IS NOT NULL,
          '22004', 'nps_trend: bucket, since and until must not be NULL')
    -- no negative part (35_intervals.sql): every bucket ends after it starts, whatever the start
    AND @extschema@.check_argument(bucket IS NULL
                                   OR @extschema@.interval_within(bucket, '1 microsecond', '100 years'),
          '22023', format('nps_trend: bucket %s must be a positive interval of at most 100 years with no negative part', bucket))
    AND @extschema@.check_argument(since IS NULL OR until IS NULL
                                   OR (isfinite(since) AND isfinite(until) AND since <= until),
          '22023', format('nps_trend: since %s and until %s must be finite with since <= until', since, until))
    AND @extschema@.check_argument(bucket IS NULL OR since IS NULL OR until IS NULL
                                   OR NOT isfinite(since) OR NOT isfinite(until)
                                   OR NOT @extschema@.interval_within(bucket, '1 microsecond', '100 years')
                                   OR extract(epoch FROM until - since) / extract(epoch FROM bucket) <= 100000,
          '54000', format('nps_trend: buckets of %s between %s and %s exceed the limit of 100000 buckets',
                          bucket, since, until))
  ORDER BY b.bucket_start
$$;
COMMENT ON FUNCTION @extschema@.nps_trend(interval, timestamptz, timestamptz) IS
  'NPS per time bucket in [since, until) with a 95% adjusted Wald CI; empty buckets have 0 responses and NULL NPS';

CREATE OR REPLACE FUNCTION @extschema@.nps_failed_payments("window" interval DEFAULT '30 days')
RETURNS TABLE (failed_payment boolean, responses bigint, nps float8, ci_low float8, ci_high float8,
               difference float8, p_value float8)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  WITH g AS (
    SELECT EXISTS (SELECT 1 FROM @extschema@.payment_event f
                   WHERE f.customer_id = r.customer_id AND f.kind = 'failed'
                     AND f.occurred_at > r.responded_at - "window"
                     AND f.occurred_at <= r.responded_at) AS failed,
           @extschema@.nps_agg(r.score) AS a
    FROM @extschema@.response r
    -- answers tied to a payment: the customer had a payment event at or before the answer
    WHERE EXISTS (SELECT 1 FROM @extschema@.payment_event e
                  WHERE e.customer_id = r.customer_id AND e.occurred_at <= r.responded_at)
      AND @extschema@.check_argument("window" IS NOT NULL, '22004',
            'nps_failed_payments: window must not be NULL')
      AND @extschema@.check_argument("window" IS NULL
                                     OR @extschema@.interval_within("window", '1 microsecond', '100 years'), '22023',
            format('nps_failed_payments: window %s must be a positive interval of at most 100 years with no negative part', "window"))
    GROUP BY 1
  )
  SELECT v.failed_payment, coalesce(@extschema@.responses(g.a), 0), @extschema@.nps(g.a),
         ci.low, ci.high, d.difference, d.p_value
  FROM (VALUES (true), (false)) AS v(failed_payment)
  LEFT JOIN g ON g.failed = v.failed_payment
  LEFT JOIN LATERAL @extschema@.nps_ci(g.a) ci ON true
  LEFT JOIN LATERAL @extschema@.nps_compare(
    g.a, (SELECT o.a FROM g o WHERE o.failed <> v.failed_payment)) d ON true
  ORDER BY v.failed_payment DESC
$$;
COMMENT ON FUNCTION @extschema@.nps_failed_payments(interval) IS
  'NPS of answers with and without a failed payment of the customer in the window before the answer; difference (this row minus the other) and p-value';

CREATE OR REPLACE FUNCTION @extschema@.nps_alerts("window" interval, drop_threshold float8,
                                       attributes text[] DEFAULT '{plan,method}',
                                       min_responses integer DEFAULT 30,
                                       as_of timestamptz DEFAULT now())
RETURNS TABLE (dimension text, value text, previous_responses bigint, previous_nps float8,
               current_responses bigint, current_nps float8, nps_drop float8, p_value float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  WITH w AS (
    SELECT c.score, c.responded_at >= as_of - "window" AS is_current, c.source, c.attributes
    FROM @extschema@.response_context c
    WHERE c.responded_at >= (as_of - "window") - "window" AND c.responded_at < as_of
      AND @extschema@.check_argument("window" IS NOT NULL AND drop_threshold IS NOT NULL
                                     AND nps_alerts.attributes IS NOT NULL AND min_responses IS NOT NULL
                                     AND as_of IS NOT NULL,
            '22004', 'nps_alerts: no argument may be NULL')
      AND @extschema@.check_argument("window" IS NULL
                                     OR @extschema@.interval_within("window", '1 microsecond', '100 years'), '22023',
            format('nps_alerts: window %s must be a positive interval of at most 100 years with no negative part', "window"))
      AND @extschema@.check_argument(drop_threshold IS NULL
                                     OR (drop_threshold >= 0 AND drop_threshold < 'infinity'), '22023',
            format('nps_alerts: drop_threshold %s must be a finite number >= 0', drop_threshold))
      AND @extschema@.check_argument(min_responses IS NULL OR min_responses >= 1, '22023',
            format('nps_alerts: min_responses %s must be at least 1', min_responses))
      AND @extschema@.check_argument(as_of IS NULL OR isfinite(as_of), '22023',
            format('nps_alerts: as_of %s must be finite', as_of))
  ), seg AS (
    SELECT d.dimension, d.value,
           @extschema@.nps_agg(w.score) FILTER (WHERE w.is_current) AS cur,
           @extschema@.nps_agg(w.score) FILTER (WHERE NOT w.is_current) AS prev
    FROM w
    CROSS JOIN LATERAL (
      SELECT 'overall'::text, NULL::text
      UNION ALL SELECT 'source', w.source WHERE w.source IS NOT NULL
      UNION ALL SELECT k.key, w.attributes ->> k.key
                FROM unnest(nps_alerts.attributes) AS k(key) WHERE w.attributes ->> k.key IS NOT NULL
    ) AS d(dimension, value)
    GROUP BY 1, 2
  )
  SELECT seg.dimension, seg.value,
         @extschema@.responses(seg.prev), @extschema@.nps(seg.prev),
         @extschema@.responses(seg.cur), @extschema@.nps(seg.cur),
         @extschema@.nps(seg.prev) - @extschema@.nps(seg.cur),
         cmp.p_value
  FROM seg
  CROSS JOIN LATERAL @extschema@.nps_compare(seg.cur, seg.prev) cmp
  WHERE @extschema@.responses(seg.cur) >= min_responses
    AND @extschema@.responses(seg.prev) >= min_responses
    AND @extschema@.nps(seg.prev) - @extschema@.nps(seg.cur) > drop_threshold
  ORDER BY cmp.p_value, 7 DESC, 1, 2
$$;
COMMENT ON FUNCTION @extschema@.nps_alerts(interval, float8, text[], integer, timestamptz) IS
  'Segments (overall, source, each listed attribute) whose NPS in [as_of - window, as_of) fell by more than drop_threshold points versus the window before, with p-value';


-- ---------------------------------------------------------------------------------------------
-- Aggregates: the transition state is npsagg instead of internal (Citus pushes such aggregates
-- down; PostgreSQL runs them in parallel without serialize/deserialize). CREATE OR REPLACE
-- AGGREGATE changes the state type in place, so users' views over nps(), nps_agg(), rollup()
-- and their npsagg columns are kept. The 0.1 support functions are then unused and dropped
-- (their C symbols stay in the library for databases still at 0.1).
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.nps_state_merge(@extschema@.npsagg, @extschema@.npsagg) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_state_nps(@extschema@.npsagg) RETURNS float8
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_state_weighted_nps(@extschema@.npsagg) RETURNS float8
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_state_summary(@extschema@.npsagg) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_state_weighted_summary(@extschema@.npsagg) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_state_rollup(@extschema@.npsagg) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

DO $do$
DECLARE
  t record;
  -- the empty summary: every aggregate but rollup starts from it
  zero constant text := '{"counts":[0,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0],"weight_sq":0}';
BEGIN
  FOR t IN SELECT * FROM (VALUES ('int2', 'smallint'), ('int4', 'integer'), ('int8', 'bigint')) v(sfx, typ) LOOP
    EXECUTE format($f$
      CREATE FUNCTION @extschema@.nps_state_%1$s(@extschema@.npsagg, %2$s) RETURNS @extschema@.npsagg
        AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;
      CREATE FUNCTION @extschema@.nps_state_inv_%1$s(@extschema@.npsagg, %2$s) RETURNS @extschema@.npsagg
        AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;
      CREATE FUNCTION @extschema@.nps_state_weighted_%1$s(@extschema@.npsagg, %2$s, float8) RETURNS @extschema@.npsagg
        AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;

      CREATE OR REPLACE AGGREGATE @extschema@.nps(score %2$s) (
        SFUNC = @extschema@.nps_state_%1$s, STYPE = @extschema@.npsagg, SSPACE = 200, INITCOND = %3$L,
        FINALFUNC = @extschema@.nps_state_nps, COMBINEFUNC = @extschema@.nps_state_merge,
        MSFUNC = @extschema@.nps_state_%1$s, MINVFUNC = @extschema@.nps_state_inv_%1$s,
        MSTYPE = @extschema@.npsagg, MSSPACE = 200, MINITCOND = %3$L, MFINALFUNC = @extschema@.nps_state_nps,
        PARALLEL = SAFE);
      CREATE OR REPLACE AGGREGATE @extschema@.nps(score %2$s, weight float8) (
        SFUNC = @extschema@.nps_state_weighted_%1$s, STYPE = @extschema@.npsagg, SSPACE = 200, INITCOND = %3$L,
        FINALFUNC = @extschema@.nps_state_weighted_nps, COMBINEFUNC = @extschema@.nps_state_merge,
        PARALLEL = SAFE);
      CREATE OR REPLACE AGGREGATE @extschema@.nps_agg(score %2$s) (
        SFUNC = @extschema@.nps_state_%1$s, STYPE = @extschema@.npsagg, SSPACE = 200, INITCOND = %3$L,
        FINALFUNC = @extschema@.nps_state_summary, COMBINEFUNC = @extschema@.nps_state_merge,
        MSFUNC = @extschema@.nps_state_%1$s, MINVFUNC = @extschema@.nps_state_inv_%1$s,
        MSTYPE = @extschema@.npsagg, MSSPACE = 200, MINITCOND = %3$L, MFINALFUNC = @extschema@.nps_state_summary,
        PARALLEL = SAFE);
      CREATE OR REPLACE AGGREGATE @extschema@.nps_agg(score %2$s, weight float8) (
        SFUNC = @extschema@.nps_state_weighted_%1$s, STYPE = @extschema@.npsagg, SSPACE = 200, INITCOND = %3$L,
        FINALFUNC = @extschema@.nps_state_weighted_summary, COMBINEFUNC = @extschema@.nps_state_merge,
        PARALLEL = SAFE);
      COMMENT ON AGGREGATE @extschema@.nps(%2$s) IS 'Net Promoter Score (-100..100) of 0..10 scores';
      COMMENT ON AGGREGATE @extschema@.nps(%2$s, float8) IS 'Weighted Net Promoter Score';
      COMMENT ON AGGREGATE @extschema@.nps_agg(%2$s) IS 'NPS summary (npsagg) of 0..10 scores';
      COMMENT ON AGGREGATE @extschema@.nps_agg(%2$s, float8) IS 'Weighted NPS summary (npsagg)';
    $f$, t.sfx, t.typ, zero);
  END LOOP;
END
$do$;

CREATE OR REPLACE AGGREGATE @extschema@.rollup(@extschema@.npsagg) (
  SFUNC = @extschema@.nps_state_merge, STYPE = @extschema@.npsagg, SSPACE = 200,
  FINALFUNC = @extschema@.nps_state_rollup, COMBINEFUNC = @extschema@.nps_state_merge,
  PARALLEL = SAFE);
COMMENT ON AGGREGATE @extschema@.rollup(@extschema@.npsagg) IS 'Merges npsagg summaries (e.g. days into months)';
DO $do$
DECLARE
  t record;
BEGIN
  FOR t IN SELECT * FROM (VALUES ('int2', 'smallint'), ('int4', 'integer'), ('int8', 'bigint')) v(sfx, typ) LOOP
    EXECUTE format($f$
      DROP FUNCTION @extschema@.nps_trans_%1$s(internal, %2$s);
      DROP FUNCTION @extschema@.nps_inv_%1$s(internal, %2$s);
      DROP FUNCTION @extschema@.nps_wtrans_%1$s(internal, %2$s, float8);
      REVOKE ALL ON FUNCTION @extschema@.nps_state_%1$s(@extschema@.npsagg, %2$s) FROM PUBLIC;
      REVOKE ALL ON FUNCTION @extschema@.nps_state_inv_%1$s(@extschema@.npsagg, %2$s) FROM PUBLIC;
      REVOKE ALL ON FUNCTION @extschema@.nps_state_weighted_%1$s(@extschema@.npsagg, %2$s, float8) FROM PUBLIC;
    $f$, t.sfx, t.typ);
  END LOOP;
END
$do$;
DROP FUNCTION @extschema@.nps_combine(internal, internal);
DROP FUNCTION @extschema@.nps_serialize(internal);
DROP FUNCTION @extschema@.nps_deserialize(bytea, internal);
DROP FUNCTION @extschema@.nps_final(internal);
DROP FUNCTION @extschema@.nps_wfinal(internal);
DROP FUNCTION @extschema@.npsagg_final(internal);
DROP FUNCTION @extschema@.npsagg_wfinal(internal);
DROP FUNCTION @extschema@.nps_rollup_trans(internal, @extschema@.npsagg);
DROP FUNCTION @extschema@.nps_rollup_final(internal);
REVOKE ALL ON FUNCTION @extschema@.nps_state_merge(@extschema@.npsagg, @extschema@.npsagg),
  @extschema@.nps_state_nps(@extschema@.npsagg), @extschema@.nps_state_weighted_nps(@extschema@.npsagg),
  @extschema@.nps_state_summary(@extschema@.npsagg), @extschema@.nps_state_weighted_summary(@extschema@.npsagg),
  @extschema@.nps_state_rollup(@extschema@.npsagg) FROM PUBLIC;
-- Analysis at dashboard speed: answers store their payment context; day x segment rollups,
-- the latest answer per customer and survey funnel counts are kept by triggers; the analysis
-- functions read them. The existing answers get their context and the rollups are filled here.
-- ---------------------------------------------------------------------------------------------
-- Arithmetic on stored summaries (rollup tables kept up to date answer by answer). NULL is the
-- empty summary; a sum that overflows or a subtraction below zero raises 22003.
CREATE FUNCTION @extschema@.npsagg_add(a @extschema@.npsagg, b @extschema@.npsagg) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME', 'npsagg_add_agg' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_sub(a @extschema@.npsagg, b @extschema@.npsagg) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME', 'npsagg_sub_agg' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_add(a @extschema@.npsagg, score integer, weight float8 DEFAULT 1)
  RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME', 'npsagg_add_score' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_remove(a @extschema@.npsagg, score integer, weight float8 DEFAULT 1)
  RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME', 'npsagg_remove_score' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.npsagg_add(@extschema@.npsagg, @extschema@.npsagg) IS
  'Sum of two summaries (NULL = empty); 22003 on count overflow';
COMMENT ON FUNCTION @extschema@.npsagg_sub(@extschema@.npsagg, @extschema@.npsagg) IS
  'a minus b (NULL = empty); 22003 if b holds answers a does not';
COMMENT ON FUNCTION @extschema@.npsagg_add(@extschema@.npsagg, integer, float8) IS
  'The summary with one more answer (score, weight); NULL score or weight adds nothing';
COMMENT ON FUNCTION @extschema@.npsagg_remove(@extschema@.npsagg, integer, float8) IS
  'The summary with one answer (score, weight) less; 22003 if it has no answer of that score';

-- (no fast default: a fresh install has no stored "missing value" for it either)
ALTER TABLE @extschema@.payment_source ADD COLUMN dimensions text[];
UPDATE @extschema@.payment_source SET dimensions = '{plan,method}';
ALTER TABLE @extschema@.payment_source ALTER COLUMN dimensions SET DEFAULT '{plan,method}',
                                       ALTER COLUMN dimensions SET NOT NULL;
ALTER TABLE @extschema@.response
  ADD COLUMN survey_event_id bigint,
  ADD COLUMN payment_event_id bigint,
  ADD COLUMN payment_source_id integer,
  ADD COLUMN payment_kind text,
  ADD COLUMN payment_amount numeric,
  ADD COLUMN payment_currency text,
  ADD COLUMN payment_at timestamptz,
  ADD COLUMN payment_attributes jsonb,
  ADD COLUMN payment_dimensions jsonb,
  ADD COLUMN days_since_payment integer,
  ADD COLUMN failed_payment_30d boolean,
  ADD COLUMN context_at timestamptz;
-- The payment context of an answer, fixed when the answer is recorded.
--
-- Every response row carries its context (columns payment_* etc. of table response): the
-- customer's last payment event at or before the answer (any kind; a tie on occurred_at goes to
-- the larger event id), the whole 24-hour periods since it, whether the customer had a failed
-- payment in the 720 hours up to the answer, the event's attributes and their projection on
-- the source's dimensions, and the payment event of the answer's survey. A BEFORE trigger
-- computes it for every INSERT (record_response, plain COPY of historical answers) unless the
-- row comes with one (context_at set: a restored dump keeps its context), and again when an
-- answer's customer, time or survey changes. Facts written later (payments backfilled or
-- re-tracked, events inserted by hand) do not reach recorded answers by themselves:
-- refresh_response_context() brings a range of answers up to date; purge() calls it.

-- The context of one answer, for set-based refreshes. Also what the trigger computes.
CREATE FUNCTION @extschema@.context_of(customer text, survey bigint, at timestamptz,
                                       old_survey_event bigint DEFAULT NULL)
RETURNS TABLE (survey_event_id bigint, payment_event_id bigint, payment_source_id integer,
               payment_kind text, payment_amount numeric, payment_currency text,
               payment_at timestamptz, payment_attributes jsonb, payment_dimensions jsonb,
               days_since_payment integer, failed_payment_30d boolean)
-- a one-row table function, inlined into refresh_response_context()'s UPDATE (no SET clause)
LANGUAGE sql STABLE PARALLEL SAFE ROWS 1
AS $$
  SELECT CASE WHEN customer IS NOT NULL THEN
           coalesce((SELECT s.event_id FROM @extschema@.survey s WHERE s.id = survey),
                    (SELECT x.id FROM @extschema@.payment_event x WHERE x.id = old_survey_event)) END,
         e.id, e.source_id, e.kind, e.amount, e.currency, e.occurred_at, e.attributes,
         CASE WHEN e.id IS NOT NULL THEN
           coalesce((SELECT jsonb_object_agg(k.key, e.attributes -> k.key)
                       FROM @extschema@.payment_source p, unnest(p.dimensions) AS k(key)
                      WHERE p.id = e.source_id), '{}') END,
         floor(extract(epoch FROM at - e.occurred_at) / 86400)::integer,
         CASE WHEN customer IS NOT NULL THEN
           EXISTS (SELECT 1 FROM @extschema@.payment_event f
                    WHERE f.customer_id = customer AND f.kind = 'failed'
                      AND f.occurred_at > at - interval '720 hours' AND f.occurred_at <= at) END
  FROM (SELECT) one
  LEFT JOIN LATERAL (
    SELECT e.id, e.source_id, e.kind, e.amount, e.currency, e.occurred_at, e.attributes
      FROM @extschema@.payment_event e
     WHERE e.customer_id = customer AND e.occurred_at <= at
     ORDER BY e.occurred_at DESC, e.id DESC
     LIMIT 1) e ON true
$$;
REVOKE ALL ON FUNCTION @extschema@.context_of(text, bigint, timestamptz, bigint) FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.context_of(text, bigint, timestamptz, bigint) IS
  'Internal: the payment context of an answer of customer at a time (what table response stores)';

CREATE FUNCTION @extschema@.response_context_fill() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  c record;
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.context_at IS NOT NULL THEN RETURN NEW; END IF;
  ELSIF NEW.context_at IS NOT NULL
        AND NEW.customer_id IS NOT DISTINCT FROM OLD.customer_id
        AND NEW.responded_at = OLD.responded_at
        AND (NEW.survey_id IS NULL OR NEW.survey_id IS NOT DISTINCT FROM OLD.survey_id) THEN
    RETURN NEW;
  END IF;
  IF NEW.customer_id IS NULL THEN
    NEW.survey_event_id := NULL; NEW.payment_event_id := NULL; NEW.payment_source_id := NULL;
    NEW.payment_kind := NULL; NEW.payment_amount := NULL; NEW.payment_currency := NULL;
    NEW.payment_at := NULL; NEW.payment_attributes := NULL; NEW.payment_dimensions := NULL;
    NEW.days_since_payment := NULL; NEW.failed_payment_30d := NULL;
  ELSE
    -- the body of context_of(), inline: plpgsql keeps its plan
    SELECT CASE WHEN NEW.survey_id IS NOT NULL THEN
             (SELECT s.event_id FROM @extschema@.survey s WHERE s.id = NEW.survey_id) END AS survey_event_id,
           e.id AS payment_event_id, e.source_id AS payment_source_id, e.kind AS payment_kind,
           e.amount AS payment_amount, e.currency AS payment_currency, e.occurred_at AS payment_at,
           e.attributes AS payment_attributes,
           CASE WHEN e.id IS NOT NULL THEN
             coalesce((SELECT jsonb_object_agg(k.key, e.attributes -> k.key)
                         FROM @extschema@.payment_source p, unnest(p.dimensions) AS k(key)
                        WHERE p.id = e.source_id), '{}') END AS payment_dimensions,
           floor(extract(epoch FROM NEW.responded_at - e.occurred_at) / 86400)::integer AS days_since_payment,
           EXISTS (SELECT 1 FROM @extschema@.payment_event f
                    WHERE f.customer_id = NEW.customer_id AND f.kind = 'failed'
                      AND f.occurred_at > NEW.responded_at - interval '720 hours'
                      AND f.occurred_at <= NEW.responded_at) AS failed_payment_30d
      INTO c
      FROM (SELECT) one
      LEFT JOIN LATERAL (
        SELECT e.id, e.source_id, e.kind, e.amount, e.currency, e.occurred_at, e.attributes
          FROM @extschema@.payment_event e
         WHERE e.customer_id = NEW.customer_id AND e.occurred_at <= NEW.responded_at
         ORDER BY e.occurred_at DESC, e.id DESC
         LIMIT 1) e ON true;
    IF c.survey_event_id IS NULL AND TG_OP = 'UPDATE' THEN
      c.survey_event_id := OLD.survey_event_id;
    END IF;
    NEW.survey_event_id := c.survey_event_id; NEW.payment_event_id := c.payment_event_id;
    NEW.payment_source_id := c.payment_source_id; NEW.payment_kind := c.payment_kind;
    NEW.payment_amount := c.payment_amount; NEW.payment_currency := c.payment_currency;
    NEW.payment_at := c.payment_at; NEW.payment_attributes := c.payment_attributes;
    NEW.payment_dimensions := c.payment_dimensions; NEW.days_since_payment := c.days_since_payment;
    NEW.failed_payment_30d := c.failed_payment_30d;
  END IF;
  NEW.context_at := now();
  RETURN NEW;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.response_context_fill() FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.response_context_fill() IS
  'Trigger: stores the payment context of an answer when it is recorded (or its customer, time or survey changes)';

-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.refresh_response_context(since timestamptz DEFAULT '-infinity',
                                                     until timestamptz DEFAULT 'infinity',
                                                     customers text[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  n bigint;
BEGIN
  IF since IS NULL OR until IS NULL THEN
    RAISE EXCEPTION 'refresh_response_context: % must not be NULL',
      CASE WHEN since IS NULL THEN 'since' ELSE 'until' END USING ERRCODE = '22004';
  END IF;
  IF since > until THEN
    RAISE EXCEPTION 'refresh_response_context: since % is after until %', since, until USING ERRCODE = '22023';
  END IF;
  -- Only answers whose context differs are rewritten; the rollups follow through the
  -- response triggers (old context out, new one in).
  UPDATE @extschema@.response r
     SET survey_event_id = c.survey_event_id, payment_event_id = c.payment_event_id,
         payment_source_id = c.payment_source_id, payment_kind = c.payment_kind,
         payment_amount = c.payment_amount, payment_currency = c.payment_currency,
         payment_at = c.payment_at, payment_attributes = c.payment_attributes,
         payment_dimensions = c.payment_dimensions, days_since_payment = c.days_since_payment,
         failed_payment_30d = c.failed_payment_30d, context_at = now()
    FROM @extschema@.response o
   CROSS JOIN LATERAL @extschema@.context_of(o.customer_id, o.survey_id, o.responded_at, o.survey_event_id) c
   WHERE r.id = o.id
     AND o.responded_at >= since AND o.responded_at < until
     AND (customers IS NULL OR o.customer_id = ANY (customers))
     AND (o.survey_event_id, o.payment_event_id, o.payment_source_id, o.payment_kind, o.payment_amount,
          o.payment_currency, o.payment_at, o.payment_attributes, o.payment_dimensions,
          o.days_since_payment, o.failed_payment_30d)
         IS DISTINCT FROM
         (c.survey_event_id, c.payment_event_id, c.payment_source_id, c.payment_kind, c.payment_amount,
          c.payment_currency, c.payment_at, c.payment_attributes, c.payment_dimensions,
          c.days_since_payment, c.failed_payment_30d);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END
$fn$;
COMMENT ON FUNCTION @extschema@.refresh_response_context(timestamptz, timestamptz, text[]) IS
  'Recomputes the stored payment context of answers given in [since, until) (only of these customers '
  'when given) from the payment events as they are now, e.g. after older payments were backfilled; '
  'updates the rollups with them; returns how many answers changed';

-- The context of every existing answer, computed now from the payment events as they are
-- (before the response triggers exist: one pass, no per-row trigger work).
UPDATE @extschema@.response r
   SET survey_event_id = c.survey_event_id, payment_event_id = c.payment_event_id,
       payment_source_id = c.payment_source_id, payment_kind = c.payment_kind,
       payment_amount = c.payment_amount, payment_currency = c.payment_currency,
       payment_at = c.payment_at, payment_attributes = c.payment_attributes,
       payment_dimensions = c.payment_dimensions, days_since_payment = c.days_since_payment,
       failed_payment_30d = c.failed_payment_30d, context_at = now()
  FROM @extschema@.response o
 CROSS JOIN LATERAL @extschema@.context_of(o.customer_id, o.survey_id, o.responded_at) c
 WHERE r.id = o.id;
CREATE INDEX response_payment_event_idx ON @extschema@.response (payment_event_id) WHERE payment_event_id IS NOT NULL;
CREATE TRIGGER response_context_fill
  BEFORE INSERT OR UPDATE ON @extschema@.response
  FOR EACH ROW EXECUTE FUNCTION @extschema@.response_context_fill();
-- Rollups kept as answers arrive: what the analysis functions read instead of every answer.
--
--   rollup_segment  per UTC day of the answer x source x dimension values x failed payment
--                   before: an npsagg of the answers (source 0 / dims '{}': no payment context)
--   rollup_days     per UTC day x days since the last payment: an npsagg
--   customer_latest_answer  each customer's latest answer (revenue_at_risk)
--   survey_funnel_day       surveys per UTC creation day x outcome (survey_funnel)
--
-- Statement-level triggers on response and survey keep them exact in the same transaction:
-- one INSERT ... ON CONFLICT DO UPDATE per table and statement (race-free under concurrent
-- answers: the conflicting row is locked and re-read), a replaced, re-dated or re-contexted
-- answer moves its count (its old row out, its new one in), a deleted one leaves.
-- These tables hold only what the answers and surveys determine, so they are not dumped:
-- a restore fills them again through the same triggers as it loads response and survey
-- (after pg_restore --disable-triggers, run rebuild_rollups()).

CREATE TABLE @extschema@.rollup_segment (
  day        date NOT NULL,
  source_id  integer NOT NULL,       -- payment_source.id of the answer's payment; 0: none
  dims       jsonb NOT NULL,         -- response.payment_dimensions; '{}' without payment
  failed_30d boolean NOT NULL,       -- response.failed_payment_30d (false when unknown)
  agg        @extschema@.npsagg NOT NULL,
  PRIMARY KEY (day, source_id, dims, failed_30d)
);
CREATE TABLE @extschema@.rollup_days (
  day        date NOT NULL,
  days_since integer NOT NULL,       -- response.days_since_payment
  agg        @extschema@.npsagg NOT NULL,
  PRIMARY KEY (day, days_since)
);
CREATE TABLE @extschema@.customer_latest_answer (
  customer_id  text PRIMARY KEY,
  response_id  bigint NOT NULL,
  responded_at timestamptz NOT NULL,
  category     @extschema@.nps_category NOT NULL
);
CREATE INDEX customer_latest_answer_category_idx ON @extschema@.customer_latest_answer (category);
CREATE TABLE @extschema@.survey_funnel_day (
  day      date NOT NULL,            -- UTC day of survey.created_at
  outcome  text NOT NULL,            -- responded / expired / failed / open (pending, sending, sent, cancelled)
  sent     boolean NOT NULL,         -- sent_at set, or answered
  -- the writing backend's pid mod 8: concurrent senders (mark_sent moves a survey from "open"
  -- to "open, sent") update different rows instead of queueing on one; readers sum the shards
  shard    smallint NOT NULL,
  surveys  bigint NOT NULL,          -- may be negative in one shard; the sum over shards is the count
  PRIMARY KEY (day, outcome, sent, shard)
);
COMMENT ON TABLE @extschema@.rollup_segment IS
  'Per UTC day, source, dimension values and failed payment before: npsagg of the answers (kept by triggers)';
COMMENT ON TABLE @extschema@.rollup_days IS
  'Per UTC day and whole days since the last payment: npsagg of the answers (kept by triggers)';
COMMENT ON TABLE @extschema@.customer_latest_answer IS
  'Each customer''s latest answer (kept by triggers; forget_customer removes the row)';
COMMENT ON TABLE @extschema@.survey_funnel_day IS
  'Surveys per UTC creation day, outcome and whether sent, in shards to sum (kept by triggers)';

-- UTC day of a time, and the UTC midnights at or after / at or before it (infinities stay).
CREATE FUNCTION @extschema@.utc_day(t timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (t AT TIME ZONE 'UTC')::date $$;
CREATE FUNCTION @extschema@.utc_floor(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT date_trunc('day', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' $$;
CREATE FUNCTION @extschema@.utc_ceil(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN date_trunc('day', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' = t THEN t
                  ELSE (date_trunc('day', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC') + interval '24 hours' END $$;
COMMENT ON FUNCTION @extschema@.utc_day(timestamptz) IS 'The UTC date of a time (the rollups'' day)';
COMMENT ON FUNCTION @extschema@.utc_floor(timestamptz) IS 'The UTC midnight at or before a time';
COMMENT ON FUNCTION @extschema@.utc_ceil(timestamptz) IS 'The UTC midnight at or after a time';

-- A survey's funnel outcome.
CREATE FUNCTION @extschema@.funnel_outcome(status text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN status IN ('responded', 'expired', 'failed') THEN status ELSE 'open' END $$;
COMMENT ON FUNCTION @extschema@.funnel_outcome(text) IS
  'responded / expired / failed, or open for pending, sending, sent and cancelled surveys';

-- ---------------------------------------------------------------------------------------------
-- Response triggers (statement level: one pass per statement over its transition tables).
CREATE FUNCTION @extschema@.response_rollups_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  -- the common case (record_response, COPY): add, in one statement
  WITH seg AS (
    INSERT INTO @extschema@.rollup_segment AS g (day, source_id, dims, failed_30d, agg)
    SELECT @extschema@.utc_day(n.responded_at), coalesce(n.payment_source_id, 0),
           coalesce(n.payment_dimensions, '{}'), coalesce(n.failed_payment_30d, false),
           @extschema@.nps_agg(n.score)
      FROM nps_new n GROUP BY 1, 2, 3, 4
     ORDER BY 1, 2, 3, 4  -- rows locked in key order: concurrent bulk imports cannot deadlock
    ON CONFLICT (day, source_id, dims, failed_30d)
    DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg)
  ), days AS (
    INSERT INTO @extschema@.rollup_days AS g (day, days_since, agg)
    SELECT @extschema@.utc_day(n.responded_at), n.days_since_payment, @extschema@.nps_agg(n.score)
      FROM nps_new n WHERE n.days_since_payment IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (day, days_since) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg)
  )
  INSERT INTO @extschema@.customer_latest_answer AS l (customer_id, response_id, responded_at, category)
  SELECT DISTINCT ON (n.customer_id) n.customer_id, n.id, n.responded_at, n.category
    FROM nps_new n WHERE n.customer_id IS NOT NULL
   ORDER BY n.customer_id, n.responded_at DESC, n.id DESC
  ON CONFLICT (customer_id) DO UPDATE
     SET response_id = excluded.response_id, responded_at = excluded.responded_at, category = excluded.category
   WHERE (excluded.responded_at, excluded.response_id) > (l.responded_at, l.response_id);
  RETURN NULL;
END
$fn$;

-- UPDATE (replaced answers, refreshed contexts, forget_customer, purge): each changed answer
-- leaves its old rollup rows and joins its new ones.
CREATE FUNCTION @extschema@.response_rollups_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  -- INSERT ... ON CONFLICT DO UPDATE (record_response) fires this for every new answer, with
  -- no row updated: nothing to move
  IF NOT EXISTS (SELECT 1 FROM nps_old) THEN
    RETURN NULL;
  END IF;
    WITH d AS (SELECT n.*, 1 AS sign FROM nps_new n JOIN nps_old o USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)
                UNION ALL
                SELECT o.*, -1 FROM nps_old o JOIN nps_new n USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)), k AS (
      SELECT @extschema@.utc_day(d.responded_at) AS day, coalesce(d.payment_source_id, 0) AS source_id,
             coalesce(d.payment_dimensions, '{}') AS dims, coalesce(d.failed_payment_30d, false) AS failed_30d,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign > 0) AS plus,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign < 0) AS minus
        FROM d GROUP BY 1, 2, 3, 4
    ), upd AS (
      UPDATE @extschema@.rollup_segment g SET agg = @extschema@.npsagg_sub(@extschema@.npsagg_add(g.agg, k.plus), k.minus)
        FROM k
       WHERE g.day = k.day AND g.source_id = k.source_id AND g.dims = k.dims AND g.failed_30d = k.failed_30d
      RETURNING g.day, g.source_id, g.dims, g.failed_30d
    )
    INSERT INTO @extschema@.rollup_segment AS g (day, source_id, dims, failed_30d, agg)
    SELECT k.day, k.source_id, k.dims, k.failed_30d, @extschema@.npsagg_sub(k.plus, k.minus)
      FROM k
     WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.day = k.day AND u.source_id = k.source_id
                                             AND u.dims = k.dims AND u.failed_30d = k.failed_30d)
    ON CONFLICT (day, source_id, dims, failed_30d) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    WITH d AS (SELECT n.*, 1 AS sign FROM nps_new n JOIN nps_old o USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)
                UNION ALL
                SELECT o.*, -1 FROM nps_old o JOIN nps_new n USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)), k AS (
      SELECT @extschema@.utc_day(d.responded_at) AS day, d.days_since_payment AS days_since,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign > 0) AS plus,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign < 0) AS minus
        FROM d WHERE d.days_since_payment IS NOT NULL GROUP BY 1, 2
    ), upd AS (
      UPDATE @extschema@.rollup_days g SET agg = @extschema@.npsagg_sub(@extschema@.npsagg_add(g.agg, k.plus), k.minus)
        FROM k WHERE g.day = k.day AND g.days_since = k.days_since
      RETURNING g.day, g.days_since
    )
    INSERT INTO @extschema@.rollup_days AS g (day, days_since, agg)
    SELECT k.day, k.days_since, @extschema@.npsagg_sub(k.plus, k.minus)
      FROM k WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.day = k.day AND u.days_since = k.days_since)
    ON CONFLICT (day, days_since) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    -- rows left empty go
    DELETE FROM @extschema@.rollup_segment g
     USING (SELECT DISTINCT @extschema@.utc_day(o.responded_at) AS day, coalesce(o.payment_source_id, 0) AS source_id,
                   coalesce(o.payment_dimensions, '{}') AS dims, coalesce(o.failed_payment_30d, false) AS failed_30d
              FROM nps_old o) k
     WHERE g.day = k.day AND g.source_id = k.source_id AND g.dims = k.dims AND g.failed_30d = k.failed_30d
       AND @extschema@.responses(g.agg) = 0;
    DELETE FROM @extschema@.rollup_days g
     USING (SELECT DISTINCT @extschema@.utc_day(o.responded_at) AS day, o.days_since_payment AS days_since
              FROM nps_old o) k
     WHERE g.day = k.day AND g.days_since = k.days_since AND @extschema@.responses(g.agg) = 0;
    -- the latest answer of each customer whose answers changed: recomputed from the answers
    -- (a concurrent newer answer is never overwritten by an older one)
    DELETE FROM @extschema@.customer_latest_answer l
     WHERE l.customer_id IN (SELECT o.customer_id FROM nps_old o)
       AND NOT EXISTS (SELECT 1 FROM @extschema@.response r WHERE r.customer_id = l.customer_id);
    INSERT INTO @extschema@.customer_latest_answer AS l (customer_id, response_id, responded_at, category)
    SELECT DISTINCT ON (r.customer_id) r.customer_id, r.id, r.responded_at, r.category
      FROM @extschema@.response r
     WHERE r.customer_id IN (SELECT d.customer_id FROM (SELECT n.*, 1 AS sign FROM nps_new n JOIN nps_old o USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)
                UNION ALL
                SELECT o.*, -1 FROM nps_old o JOIN nps_new n USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)) d)
     ORDER BY r.customer_id, r.responded_at DESC, r.id DESC
    ON CONFLICT (customer_id) DO UPDATE
       SET response_id = excluded.response_id, responded_at = excluded.responded_at, category = excluded.category
     WHERE (excluded.responded_at, excluded.response_id) > (l.responded_at, l.response_id)
        OR l.response_id IN (SELECT o.id FROM nps_old o);
    RETURN NULL;
END
$fn$;

CREATE FUNCTION @extschema@.response_rollups_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM nps_old) THEN
    RETURN NULL;
  END IF;
    WITH d AS (SELECT o.*, -1 AS sign FROM nps_old o), k AS (
      SELECT @extschema@.utc_day(d.responded_at) AS day, coalesce(d.payment_source_id, 0) AS source_id,
             coalesce(d.payment_dimensions, '{}') AS dims, coalesce(d.failed_payment_30d, false) AS failed_30d,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign > 0) AS plus,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign < 0) AS minus
        FROM d GROUP BY 1, 2, 3, 4
    ), upd AS (
      UPDATE @extschema@.rollup_segment g SET agg = @extschema@.npsagg_sub(@extschema@.npsagg_add(g.agg, k.plus), k.minus)
        FROM k
       WHERE g.day = k.day AND g.source_id = k.source_id AND g.dims = k.dims AND g.failed_30d = k.failed_30d
      RETURNING g.day, g.source_id, g.dims, g.failed_30d
    )
    INSERT INTO @extschema@.rollup_segment AS g (day, source_id, dims, failed_30d, agg)
    SELECT k.day, k.source_id, k.dims, k.failed_30d, @extschema@.npsagg_sub(k.plus, k.minus)
      FROM k
     WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.day = k.day AND u.source_id = k.source_id
                                             AND u.dims = k.dims AND u.failed_30d = k.failed_30d)
    ON CONFLICT (day, source_id, dims, failed_30d) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    WITH d AS (SELECT o.*, -1 AS sign FROM nps_old o), k AS (
      SELECT @extschema@.utc_day(d.responded_at) AS day, d.days_since_payment AS days_since,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign > 0) AS plus,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign < 0) AS minus
        FROM d WHERE d.days_since_payment IS NOT NULL GROUP BY 1, 2
    ), upd AS (
      UPDATE @extschema@.rollup_days g SET agg = @extschema@.npsagg_sub(@extschema@.npsagg_add(g.agg, k.plus), k.minus)
        FROM k WHERE g.day = k.day AND g.days_since = k.days_since
      RETURNING g.day, g.days_since
    )
    INSERT INTO @extschema@.rollup_days AS g (day, days_since, agg)
    SELECT k.day, k.days_since, @extschema@.npsagg_sub(k.plus, k.minus)
      FROM k WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.day = k.day AND u.days_since = k.days_since)
    ON CONFLICT (day, days_since) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    -- rows left empty go
    DELETE FROM @extschema@.rollup_segment g
     USING (SELECT DISTINCT @extschema@.utc_day(o.responded_at) AS day, coalesce(o.payment_source_id, 0) AS source_id,
                   coalesce(o.payment_dimensions, '{}') AS dims, coalesce(o.failed_payment_30d, false) AS failed_30d
              FROM nps_old o) k
     WHERE g.day = k.day AND g.source_id = k.source_id AND g.dims = k.dims AND g.failed_30d = k.failed_30d
       AND @extschema@.responses(g.agg) = 0;
    DELETE FROM @extschema@.rollup_days g
     USING (SELECT DISTINCT @extschema@.utc_day(o.responded_at) AS day, o.days_since_payment AS days_since
              FROM nps_old o) k
     WHERE g.day = k.day AND g.days_since = k.days_since AND @extschema@.responses(g.agg) = 0;
    -- the latest answer of each customer whose answers changed: recomputed from the answers
    -- (a concurrent newer answer is never overwritten by an older one)
    DELETE FROM @extschema@.customer_latest_answer l
     WHERE l.customer_id IN (SELECT o.customer_id FROM nps_old o)
       AND NOT EXISTS (SELECT 1 FROM @extschema@.response r WHERE r.customer_id = l.customer_id);
    INSERT INTO @extschema@.customer_latest_answer AS l (customer_id, response_id, responded_at, category)
    SELECT DISTINCT ON (r.customer_id) r.customer_id, r.id, r.responded_at, r.category
      FROM @extschema@.response r
     WHERE r.customer_id IN (SELECT d.customer_id FROM (SELECT o.*, -1 AS sign FROM nps_old o) d)
     ORDER BY r.customer_id, r.responded_at DESC, r.id DESC
    ON CONFLICT (customer_id) DO UPDATE
       SET response_id = excluded.response_id, responded_at = excluded.responded_at, category = excluded.category
     WHERE (excluded.responded_at, excluded.response_id) > (l.responded_at, l.response_id)
        OR l.response_id IN (SELECT o.id FROM nps_old o);
    RETURN NULL;
END
$fn$;

CREATE FUNCTION @extschema@.response_rollups_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  TRUNCATE @extschema@.rollup_segment, @extschema@.rollup_days, @extschema@.customer_latest_answer;
  RETURN NULL;
END
$fn$;

CREATE TRIGGER response_rollups_insert AFTER INSERT ON @extschema@.response
  REFERENCING NEW TABLE AS nps_new
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.response_rollups_insert();
CREATE TRIGGER response_rollups_update AFTER UPDATE ON @extschema@.response
  REFERENCING OLD TABLE AS nps_old NEW TABLE AS nps_new
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.response_rollups_update();
CREATE TRIGGER response_rollups_delete AFTER DELETE ON @extschema@.response
  REFERENCING OLD TABLE AS nps_old
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.response_rollups_delete();
CREATE TRIGGER response_rollups_truncate AFTER TRUNCATE ON @extschema@.response
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.response_rollups_truncate();
-- Survey funnel counts (survey triggers), rebuild_rollups(), and the source-dimension hook.

-- Surveys: a statement-level trigger for INSERT and DELETE (capture's INSERT ... SELECT of many
-- surveys costs one statement), a row-level one for the UPDATEs that change an outcome (a claim,
-- pending -> sending, changes none and does not fire it).
CREATE FUNCTION @extschema@.survey_funnel_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  INSERT INTO @extschema@.survey_funnel_day AS f (day, outcome, sent, shard, surveys)
  SELECT @extschema@.utc_day(n.created_at), @extschema@.funnel_outcome(n.status),
         n.sent_at IS NOT NULL OR n.status = 'responded', pg_backend_pid() % 8, count(*)
    FROM nps_new n GROUP BY 1, 2, 3
  ON CONFLICT (day, outcome, sent, shard) DO UPDATE SET surveys = f.surveys + excluded.surveys;
  RETURN NULL;
END
$fn$;
CREATE FUNCTION @extschema@.survey_funnel_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  INSERT INTO @extschema@.survey_funnel_day AS f (day, outcome, sent, shard, surveys)
  SELECT @extschema@.utc_day(o.created_at), @extschema@.funnel_outcome(o.status),
         o.sent_at IS NOT NULL OR o.status = 'responded', pg_backend_pid() % 8, -count(*)
    FROM nps_old o GROUP BY 1, 2, 3
  ON CONFLICT (day, outcome, sent, shard) DO UPDATE SET surveys = f.surveys + excluded.surveys;
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
  INSERT INTO @extschema@.survey_funnel_day AS f (day, outcome, sent, shard, surveys)
  SELECT k.day, k.outcome, k.sent, pg_backend_pid() % 8, sum(k.d)
    FROM (SELECT @extschema@.utc_day(o.created_at) AS day, @extschema@.funnel_outcome(o.status) AS outcome,
                 o.sent_at IS NOT NULL OR o.status = 'responded' AS sent, -1 AS d
            FROM nps_old o
          UNION ALL
          SELECT @extschema@.utc_day(n.created_at), @extschema@.funnel_outcome(n.status),
                 n.sent_at IS NOT NULL OR n.status = 'responded', 1
            FROM nps_new n) k
   GROUP BY k.day, k.outcome, k.sent
  HAVING sum(k.d) <> 0
  ON CONFLICT (day, outcome, sent, shard) DO UPDATE SET surveys = f.surveys + excluded.surveys;
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
  INSERT INTO @extschema@.rollup_segment (day, source_id, dims, failed_30d, agg)
  SELECT @extschema@.utc_day(r.responded_at), coalesce(r.payment_source_id, 0),
         coalesce(r.payment_dimensions, '{}'), coalesce(r.failed_payment_30d, false),
         @extschema@.nps_agg(r.score)
    FROM @extschema@.response r WHERE r.responded_at >= lo AND r.responded_at < hi
   GROUP BY 1, 2, 3, 4;
  GET DIAGNOSTICS n = ROW_COUNT;
  DELETE FROM @extschema@.rollup_days g WHERE g.day >= from_day AND g.day < to_day;
  INSERT INTO @extschema@.rollup_days (day, days_since, agg)
  SELECT @extschema@.utc_day(r.responded_at), r.days_since_payment, @extschema@.nps_agg(r.score)
    FROM @extschema@.response r
   WHERE r.responded_at >= lo AND r.responded_at < hi AND r.days_since_payment IS NOT NULL
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
  INSERT INTO @extschema@.survey_funnel_day (day, outcome, sent, shard, surveys)
  SELECT @extschema@.utc_day(s.created_at), @extschema@.funnel_outcome(s.status),
         s.sent_at IS NOT NULL OR s.status = 'responded', 0, count(*)
    FROM @extschema@.survey s WHERE s.created_at >= lo AND s.created_at < hi
   GROUP BY 1, 2, 3;
  RETURN n;
END
$fn$;
COMMENT ON FUNCTION @extschema@.rebuild_rollups(date, date) IS
  'Recomputes the rollups (per-day answer summaries, latest answer per customer, survey funnel '
  'counts) for UTC days in [from_day, to_day) from the answers and surveys; blocks new answers '
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

-- The rollups of the existing answers and surveys.
SELECT @extschema@.rebuild_rollups();

CREATE OR REPLACE VIEW @extschema@.response_context AS
-- No customer id, comment or survey link: the analyst role may read every view (README.md (Privacy)),
-- so this one carries scores, dates and payment context only. Join response on response_id
-- (with the rights to read it) for comments. The context is the one stored with the answer.
SELECT r.id                 AS response_id,
       r.score,
       r.category,
       r.channel,
       r.responded_at,
       r.payment_event_id   AS event_id,
       ps.name              AS source,
       r.payment_kind       AS kind,
       r.payment_amount     AS amount,
       r.payment_currency   AS currency,
       r.payment_at,
       r.payment_attributes AS attributes,
       r.days_since_payment,
       r.failed_payment_30d
FROM @extschema@.response r
LEFT JOIN @extschema@.payment_source ps ON ps.id = r.payment_source_id;

COMMENT ON VIEW @extschema@.response_context IS
  'Each response with its customer''s last payment event at or before it (NULL payment columns when none); no customer id or comment';
COMMENT ON COLUMN @extschema@.response_context.source IS 'payment_source.name of the last payment event';
COMMENT ON COLUMN @extschema@.response_context.kind IS 'succeeded or failed: the last payment event''s kind';
COMMENT ON COLUMN @extschema@.response_context.payment_at IS 'when the last payment event occurred';
COMMENT ON COLUMN @extschema@.response_context.attributes IS 'the last payment event''s attributes (plan, method, ...)';
COMMENT ON COLUMN @extschema@.response_context.days_since_payment IS
  'whole 24-hour periods between the last payment event and the answer (0 = within a day)';
COMMENT ON COLUMN @extschema@.response_context.failed_payment_30d IS
  'a failed payment of this customer in the 30 days (720 hours) up to the answer; NULL when the customer is unknown';


-- The analysis functions. Plain LANGUAGE sql, STABLE, not STRICT: PostgreSQL inlines them (and
-- the helpers below) into the caller's query, so the real arguments reach the planner.

-- The whole UTC days inside [since, until), as [full_lo, full_hi); both are until when there
-- is none. The rest of the range is [since, full_lo) and [full_hi, until).
CREATE FUNCTION @extschema@.full_lo(since timestamptz, until timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN @extschema@.utc_ceil(since) < @extschema@.utc_floor(until) THEN @extschema@.utc_ceil(since) ELSE until END $$;
CREATE FUNCTION @extschema@.full_hi(since timestamptz, until timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN @extschema@.utc_ceil(since) < @extschema@.utc_floor(until) THEN @extschema@.utc_floor(until) ELSE until END $$;
COMMENT ON FUNCTION @extschema@.full_lo(timestamptz, timestamptz) IS
  'Start of the whole UTC days inside [since, until) (until when there is none)';
COMMENT ON FUNCTION @extschema@.full_hi(timestamptz, timestamptz) IS
  'End of the whole UTC days inside [since, until) (until when there is none)';

-- The rollups as views, for BI tools and for the analysis functions (which run with the
-- caller's rights: the analyst role reads views, not the tables behind them).
CREATE VIEW @extschema@.nps_daily AS
SELECT g.day, g.source_id, ps.name AS source, g.dims AS dimensions, g.failed_30d AS failed_payment_30d,
       g.agg AS summary
FROM @extschema@.rollup_segment g
LEFT JOIN @extschema@.payment_source ps ON ps.id = g.source_id;
COMMENT ON VIEW @extschema@.nps_daily IS
  'npsagg of the answers per UTC day, payment source (0/NULL: no payment before the answer), '
  'the source''s dimension values and failed payment in the 30 days before; kept as answers arrive';
CREATE VIEW @extschema@.nps_daily_days_since_payment AS
SELECT g.day, g.days_since AS days_since_payment, g.agg AS summary
FROM @extschema@.rollup_days g;
COMMENT ON VIEW @extschema@.nps_daily_days_since_payment IS
  'npsagg of the answers per UTC day and whole days since the customer''s last payment; kept as answers arrive';

-- The answers given in [since, until) as summaries by source, attributes and failed payment
-- before: rollup_segment rows for the whole UTC days, the answers themselves for the rest.
-- attrs holds at least the given keys (the source's dimensions on rollup rows, all attributes
-- on answers); when some rollup row of the range lacks one of keys (a source that does not
-- keep it as a dimension), the whole range is read from the answers.
CREATE FUNCTION @extschema@.answers_in(since timestamptz, until timestamptz, keys text[] DEFAULT '{}')
RETURNS TABLE (source text, attrs jsonb, failed_30d boolean, a @extschema@.npsagg)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT g.source, g.dimensions, g.failed_payment_30d, g.summary
    FROM @extschema@.nps_daily g
   WHERE g.day >= @extschema@.utc_day(@extschema@.full_lo(since, until))
     AND g.day < @extschema@.utc_day(@extschema@.full_hi(since, until))
     AND (cardinality(keys) = 0 OR NOT EXISTS (SELECT 1 FROM @extschema@.nps_daily x
                              WHERE x.day >= @extschema@.utc_day(@extschema@.full_lo(since, until))
                                AND x.day < @extschema@.utc_day(@extschema@.full_hi(since, until))
                                AND x.source_id <> 0 AND NOT x.dimensions ?& keys))
  UNION ALL
  SELECT c.source, c.attributes, coalesce(c.failed_payment_30d, false), @extschema@.nps_agg(c.score)
    FROM @extschema@.response_context c
   WHERE c.responded_at >= since
     AND c.responded_at < CASE WHEN (cardinality(keys) = 0 OR NOT EXISTS (SELECT 1 FROM @extschema@.nps_daily x
                                        WHERE x.day >= @extschema@.utc_day(@extschema@.full_lo(since, until))
                                          AND x.day < @extschema@.utc_day(@extschema@.full_hi(since, until))
                                          AND x.source_id <> 0 AND NOT x.dimensions ?& keys))
                               THEN @extschema@.full_lo(since, until) ELSE until END
   GROUP BY 1, 2, 3
  UNION ALL
  SELECT c.source, c.attributes, coalesce(c.failed_payment_30d, false), @extschema@.nps_agg(c.score)
    FROM @extschema@.response_context c
   WHERE c.responded_at >= @extschema@.full_hi(since, until) AND c.responded_at < until
     AND (cardinality(keys) = 0 OR NOT EXISTS (SELECT 1 FROM @extschema@.nps_daily x
                              WHERE x.day >= @extschema@.utc_day(@extschema@.full_lo(since, until))
                                AND x.day < @extschema@.utc_day(@extschema@.full_hi(since, until))
                                AND x.source_id <> 0 AND NOT x.dimensions ?& keys))
   GROUP BY 1, 2, 3
$$;
COMMENT ON FUNCTION @extschema@.answers_in(timestamptz, timestamptz, text[]) IS
  'Summaries of the answers in [since, until) by source, attributes and failed payment before: '
  'rollups for whole UTC days, answers for the rest';

CREATE OR REPLACE FUNCTION @extschema@.nps_trend(bucket interval, since timestamptz, until timestamptz)
RETURNS TABLE (bucket_start timestamptz, responses bigint, nps float8, ci_low float8, ci_high float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT b.bucket_start,
         coalesce(@extschema@.responses(s.a), 0),
         @extschema@.nps(s.a), ci.low, ci.high
  FROM generate_series(since, until, bucket) AS b(bucket_start)
  CROSS JOIN LATERAL (
    SELECT CASE WHEN @extschema@.responses(@extschema@.rollup(x.a)) > 0 THEN @extschema@.rollup(x.a) END AS a
    FROM @extschema@.answers_in(b.bucket_start, least(b.bucket_start + bucket, until)) x) s
  LEFT JOIN LATERAL @extschema@.nps_ci(s.a) ci ON true
  WHERE b.bucket_start < until
    AND @extschema@.check_argument(bucket IS NOT NULL AND since IS NOT NULL AND until IS NOT NULL,
          '22004', 'nps_trend: bucket, since and until must not be NULL')
    -- no negative part (35_intervals.sql): every bucket ends after it starts, whatever the start
    AND @extschema@.check_argument(bucket IS NULL
                                   OR @extschema@.interval_within(bucket, '1 microsecond', '100 years'),
          '22023', format('nps_trend: bucket %s must be a positive interval of at most 100 years with no negative part', bucket))
    AND @extschema@.check_argument(since IS NULL OR until IS NULL
                                   OR (isfinite(since) AND isfinite(until) AND since <= until),
          '22023', format('nps_trend: since %s and until %s must be finite with since <= until', since, until))
    AND @extschema@.check_argument(bucket IS NULL OR since IS NULL OR until IS NULL
                                   OR NOT isfinite(since) OR NOT isfinite(until)
                                   OR NOT @extschema@.interval_within(bucket, '1 microsecond', '100 years')
                                   OR extract(epoch FROM until - since) / extract(epoch FROM bucket) <= 100000,
          '54000', format('nps_trend: buckets of %s between %s and %s exceed the limit of 100000 buckets',
                          bucket, since, until))
  ORDER BY b.bucket_start
$$;
COMMENT ON FUNCTION @extschema@.nps_trend(interval, timestamptz, timestamptz) IS
  'NPS per time bucket in [since, until) with a 95% adjusted Wald CI; empty buckets have 0 responses and NULL NPS';

CREATE OR REPLACE FUNCTION @extschema@.nps_by(attribute text,
                                   since timestamptz DEFAULT '-infinity',
                                   until timestamptz DEFAULT 'infinity',
                                   min_responses integer DEFAULT 30)
RETURNS TABLE (value text, responses bigint, nps float8, ci_low float8, ci_high float8,
               difference float8, p_value float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  WITH seg AS (
    SELECT x.attrs ->> attribute AS value, @extschema@.rollup(x.a) AS a
    FROM @extschema@.answers_in(since, until, ARRAY[attribute]) x
    WHERE @extschema@.check_argument(attribute IS NOT NULL AND since IS NOT NULL AND until IS NOT NULL
                                     AND min_responses IS NOT NULL,
            '22004', 'nps_by: attribute, since, until and min_responses must not be NULL')
      AND @extschema@.check_argument(min_responses IS NULL OR min_responses >= 1,
            '22023', format('nps_by: min_responses %s must be at least 1', min_responses))
    GROUP BY 1
    HAVING @extschema@.responses(@extschema@.rollup(x.a)) > 0
  ), total AS (
    SELECT @extschema@.score_histogram(@extschema@.rollup(seg.a)) AS h FROM seg
  ), cmp AS (
    SELECT seg.value, seg.a,
           @extschema@.npsagg_from_histogram(ARRAY(
             SELECT t - s FROM unnest(total.h, @extschema@.score_histogram(seg.a)) AS u(t, s))) AS rest
    FROM seg, total
  )
  SELECT cmp.value,
         @extschema@.responses(cmp.a),
         CASE WHEN big THEN @extschema@.nps(cmp.a) END,
         CASE WHEN big THEN ci.low END,
         CASE WHEN big THEN ci.high END,
         CASE WHEN big AND rest_big THEN d.difference END,
         CASE WHEN big AND rest_big THEN d.p_value END
  FROM cmp
  CROSS JOIN LATERAL (SELECT @extschema@.responses(cmp.a) >= min_responses AS big,
                             @extschema@.responses(cmp.rest) >= min_responses AS rest_big) k
  LEFT JOIN LATERAL @extschema@.nps_ci(cmp.a) ci ON true
  LEFT JOIN LATERAL @extschema@.nps_compare(cmp.a, cmp.rest) d ON true
  ORDER BY 2 DESC, 1 NULLS LAST
$$;
COMMENT ON FUNCTION @extschema@.nps_by(text, timestamptz, timestamptz, integer) IS
  'NPS per value of a payment attribute (e.g. method, plan) for answers in [since, until): CI, difference vs all other answers, p-value; statistics NULL below min_responses';

CREATE OR REPLACE FUNCTION @extschema@.nps_by_days_since_payment(max_days integer DEFAULT 30)
RETURNS TABLE (day integer, responses bigint, nps float8, ci_low float8, ci_high float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT d.day, coalesce(@extschema@.responses(s.a), 0), @extschema@.nps(s.a), ci.low, ci.high
  FROM generate_series(0, max_days) AS d(day)
  LEFT JOIN (
    SELECT g.days_since_payment AS day, @extschema@.rollup(g.summary) AS a
    FROM @extschema@.nps_daily_days_since_payment g
    WHERE g.days_since_payment <= max_days
    GROUP BY 1
    HAVING @extschema@.responses(@extschema@.rollup(g.summary)) > 0) s ON s.day = d.day
  LEFT JOIN LATERAL @extschema@.nps_ci(s.a) ci ON true
  WHERE @extschema@.check_argument(max_days IS NOT NULL, '22004',
          'nps_by_days_since_payment: max_days must not be NULL')
    AND @extschema@.check_argument(max_days IS NULL OR max_days BETWEEN 0 AND 3660, '22023',
          format('nps_by_days_since_payment: max_days %s must be between 0 and 3660', max_days))
  ORDER BY d.day
$$;
COMMENT ON FUNCTION @extschema@.nps_by_days_since_payment(integer) IS
  'NPS by whole days between the last payment event and the answer (0..max_days, empty days included)';

CREATE OR REPLACE FUNCTION @extschema@.nps_failed_payments("window" interval DEFAULT '30 days')
RETURNS TABLE (failed_payment boolean, responses bigint, nps float8, ci_low float8, ci_high float8,
               difference float8, p_value float8)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  WITH g AS (
    -- the stored 30 days: from the rollups (answers tied to a payment: source_id <> 0)
    SELECT s.failed_30d AS failed, @extschema@.rollup(s.agg) AS a
    FROM @extschema@.rollup_segment s
    WHERE "window" = interval '30 days' AND extract(day FROM "window") = 30
      AND s.source_id <> 0
    GROUP BY 1
    HAVING @extschema@.responses(@extschema@.rollup(s.agg)) > 0
    UNION ALL
    -- any other window: from the answers tied to a payment
    SELECT EXISTS (SELECT 1 FROM @extschema@.payment_event f
                   WHERE f.customer_id = r.customer_id AND f.kind = 'failed'
                     AND f.occurred_at > r.responded_at - "window"
                     AND f.occurred_at <= r.responded_at),
           @extschema@.nps_agg(r.score)
    FROM @extschema@.response r
    WHERE NOT ("window" = interval '30 days' AND extract(day FROM "window") = 30)
      AND r.payment_event_id IS NOT NULL
    GROUP BY 1
  ), checked AS (
    SELECT g.* FROM g
    WHERE @extschema@.check_argument("window" IS NOT NULL, '22004',
            'nps_failed_payments: window must not be NULL')
      AND @extschema@.check_argument("window" IS NULL
                                     OR @extschema@.interval_within("window", '1 microsecond', '100 years'), '22023',
            format('nps_failed_payments: window %s must be a positive interval of at most 100 years with no negative part', "window"))
  )
  SELECT v.failed_payment, coalesce(@extschema@.responses(g.a), 0), @extschema@.nps(g.a),
         ci.low, ci.high, d.difference, d.p_value
  FROM (VALUES (true), (false)) AS v(failed_payment)
  LEFT JOIN checked g ON g.failed = v.failed_payment
  LEFT JOIN LATERAL @extschema@.nps_ci(g.a) ci ON true
  LEFT JOIN LATERAL @extschema@.nps_compare(
    g.a, (SELECT o.a FROM checked o WHERE o.failed <> v.failed_payment)) d ON true
  WHERE @extschema@.check_argument("window" IS NOT NULL, '22004',
          'nps_failed_payments: window must not be NULL')
    AND @extschema@.check_argument("window" IS NULL
                                   OR @extschema@.interval_within("window", '1 microsecond', '100 years'), '22023',
          format('nps_failed_payments: window %s must be a positive interval of at most 100 years with no negative part', "window"))
  ORDER BY v.failed_payment DESC
$$;
COMMENT ON FUNCTION @extschema@.nps_failed_payments(interval) IS
  'NPS of answers with and without a failed payment of the customer in the window before the answer; difference (this row minus the other) and p-value';

CREATE OR REPLACE FUNCTION @extschema@.revenue_at_risk(since timestamptz)
RETURNS TABLE (category @extschema@.nps_category, currency text, customers bigint, payments bigint,
               amount numeric)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  -- each customer's latest answer decides their category (kept per customer as answers arrive)
  SELECT l.category, p.currency, count(*), sum(p.payments)::bigint, sum(p.amount)
  FROM @extschema@.customer_latest_answer l
  CROSS JOIN LATERAL (
    SELECT e.currency, count(*) AS payments, sum(e.amount) AS amount
    FROM @extschema@.payment_event e
    WHERE e.customer_id = l.customer_id AND e.kind = 'succeeded' AND e.occurred_at >= since
    GROUP BY e.currency) p
  WHERE l.category IN ('detractor', 'passive')
    AND @extschema@.check_argument(since IS NOT NULL, '22004', 'revenue_at_risk: since must not be NULL')
  GROUP BY l.category, p.currency
  ORDER BY p.currency NULLS LAST, l.category
$$;
COMMENT ON FUNCTION @extschema@.revenue_at_risk(timestamptz) IS
  'Succeeded payments since a time of customers whose latest answer is detractor or passive, by category and currency';

CREATE OR REPLACE FUNCTION @extschema@.survey_funnel(since timestamptz)
RETURNS TABLE (created bigint, sent bigint, responded bigint, expired bigint, failed bigint,
               response_rate float8, median_time_to_answer interval)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  WITH c AS (
    -- counts kept per UTC creation day for the whole days, the surveys themselves before
    SELECT f.outcome, f.sent, f.surveys
    FROM @extschema@.survey_funnel_day f
    WHERE f.day >= @extschema@.utc_day(@extschema@.utc_ceil(since))
    UNION ALL
    SELECT @extschema@.funnel_outcome(s.status), s.sent_at IS NOT NULL OR s.status = 'responded', count(*)
    FROM @extschema@.survey s
    WHERE s.created_at >= since AND s.created_at < @extschema@.utc_ceil(since)
    GROUP BY 1, 2
  ), n AS (
    SELECT coalesce(sum(c.surveys), 0)::bigint AS created,
           coalesce(sum(c.surveys) FILTER (WHERE c.sent), 0)::bigint AS sent,
           coalesce(sum(c.surveys) FILTER (WHERE c.outcome = 'responded'), 0)::bigint AS responded,
           coalesce(sum(c.surveys) FILTER (WHERE c.outcome = 'expired'), 0)::bigint AS expired,
           coalesce(sum(c.surveys) FILTER (WHERE c.outcome = 'failed'), 0)::bigint AS failed
    FROM c
  )
  SELECT n.created, n.sent, n.responded, n.expired, n.failed,
         n.responded::float8 / nullif(n.sent, 0),
         -- the median needs the answers' times themselves
         (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY r.responded_at - s.sent_at)
            FROM @extschema@.survey s
            -- an answer never predates its survey: the extra range lets the planner read only
            -- recent answers (response_responded_at_idx) instead of every answer ever given
            JOIN @extschema@.response r ON r.survey_id = s.id AND r.responded_at >= since
           WHERE s.created_at >= since)
  FROM n
  WHERE @extschema@.check_argument(since IS NOT NULL, '22004', 'survey_funnel: since must not be NULL')
$$;
COMMENT ON FUNCTION @extschema@.survey_funnel(timestamptz) IS
  'Surveys created since a time: how many were sent, answered, expired, failed; response rate (answered/sent) and median time from sending to answer';

CREATE OR REPLACE FUNCTION @extschema@.nps_alerts("window" interval, drop_threshold float8,
                                       attributes text[] DEFAULT '{plan,method}',
                                       min_responses integer DEFAULT 30,
                                       as_of timestamptz DEFAULT now())
RETURNS TABLE (dimension text, value text, previous_responses bigint, previous_nps float8,
               current_responses bigint, current_nps float8, nps_drop float8, p_value float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  WITH w AS (
    SELECT true AS is_current, x.source, x.attrs, x.a
    FROM @extschema@.answers_in(as_of - "window", as_of, nps_alerts.attributes) x
    UNION ALL
    SELECT false, x.source, x.attrs, x.a
    FROM @extschema@.answers_in((as_of - "window") - "window", as_of - "window", nps_alerts.attributes) x
  ), checked AS (
    SELECT w.* FROM w
    WHERE @extschema@.check_argument("window" IS NOT NULL AND drop_threshold IS NOT NULL
                                     AND nps_alerts.attributes IS NOT NULL AND min_responses IS NOT NULL
                                     AND as_of IS NOT NULL,
            '22004', 'nps_alerts: no argument may be NULL')
      AND @extschema@.check_argument("window" IS NULL
                                     OR @extschema@.interval_within("window", '1 microsecond', '100 years'), '22023',
            format('nps_alerts: window %s must be a positive interval of at most 100 years with no negative part', "window"))
      AND @extschema@.check_argument(drop_threshold IS NULL
                                     OR (drop_threshold >= 0 AND drop_threshold < 'infinity'), '22023',
            format('nps_alerts: drop_threshold %s must be a finite number >= 0', drop_threshold))
      AND @extschema@.check_argument(min_responses IS NULL OR min_responses >= 1, '22023',
            format('nps_alerts: min_responses %s must be at least 1', min_responses))
      AND @extschema@.check_argument(as_of IS NULL OR isfinite(as_of), '22023',
            format('nps_alerts: as_of %s must be finite', as_of))
  ), seg AS (
    SELECT d.dimension, d.value,
           @extschema@.rollup(w.a) FILTER (WHERE w.is_current) AS cur,
           @extschema@.rollup(w.a) FILTER (WHERE NOT w.is_current) AS prev
    FROM checked w
    CROSS JOIN LATERAL (
      SELECT 'overall'::text, NULL::text
      UNION ALL SELECT 'source', w.source WHERE w.source IS NOT NULL
      UNION ALL SELECT k.key, w.attrs ->> k.key
                FROM unnest(nps_alerts.attributes) AS k(key) WHERE w.attrs ->> k.key IS NOT NULL
    ) AS d(dimension, value)
    GROUP BY 1, 2
  )
  SELECT seg.dimension, seg.value,
         @extschema@.responses(seg.prev), @extschema@.nps(seg.prev),
         @extschema@.responses(seg.cur), @extschema@.nps(seg.cur),
         @extschema@.nps(seg.prev) - @extschema@.nps(seg.cur),
         cmp.p_value
  FROM seg
  CROSS JOIN LATERAL @extschema@.nps_compare(seg.cur, seg.prev) cmp
  WHERE @extschema@.responses(seg.cur) >= min_responses
    AND @extschema@.responses(seg.prev) >= min_responses
    AND @extschema@.nps(seg.prev) - @extschema@.nps(seg.cur) > drop_threshold
  ORDER BY cmp.p_value, 7 DESC, 1, 2
$$;
COMMENT ON FUNCTION @extschema@.nps_alerts(interval, float8, text[], integer, timestamptz) IS
  'Segments (overall, source, each listed attribute) whose NPS in [as_of - window, as_of) fell by more than drop_threshold points versus the window before, with p-value';

CREATE OR REPLACE FUNCTION @extschema@.purge(older_than interval,
                                  OUT events integer, OUT surveys integer, OUT responses integer,
                                  OUT capture_errors integer, OUT contacts integer)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  cutoff timestamptz;
  longest_throttle interval;
  gone_ids bigint[];
  gone_events bigint[];
  gone_customers text[];
BEGIN
  IF older_than IS NULL THEN
    RAISE EXCEPTION 'purge: older_than must not be NULL' USING ERRCODE = '22004';
  END IF;
  -- Checked for what it does (35_intervals.sql): no negative part, at least a day (a shorter
  -- retention would delete surveys still being delivered), and the cutoff really is in the past.
  IF @extschema@.interval_within(older_than, '1 day', '1000 years') THEN
    cutoff := now() - older_than;
  END IF;
  IF cutoff IS NULL OR cutoff >= now() - interval '23 hours' THEN
    RAISE EXCEPTION 'purge: older_than % must be positive, at least 1 day and at most 1000 years, with no negative part', older_than
      USING ERRCODE = '22023';
  END IF;

  -- Surveys created before the cutoff, whatever their state (live ones that old are overdue).
  -- The links to them are cleared by the next statements, whose fresh snapshots also see an
  -- answer that was being recorded while the DELETE waited for its row lock.
  WITH gone AS (
    DELETE FROM @extschema@.survey s WHERE s.created_at < cutoff RETURNING s.id, s.event_id
  )
  SELECT count(*), coalesce(array_agg(gone.id), '{}'), coalesce(array_agg(gone.event_id), '{}')
    INTO surveys, gone_ids, gone_events FROM gone;
  UPDATE @extschema@.response r SET survey_id = NULL WHERE r.survey_id = ANY (gone_ids);
  UPDATE @extschema@.payment_event e SET survey_id = NULL
   WHERE e.id = ANY (gone_events) AND e.survey_id = ANY (gone_ids);

  -- Events before the cutoff, except those a still-live survey needs for its message.
  WITH gone AS (
    DELETE FROM @extschema@.payment_event e
     WHERE e.occurred_at < cutoff
       AND NOT EXISTS (SELECT 1 FROM @extschema@.survey s
                        WHERE s.event_id = e.id AND s.status IN ('pending', 'sending'))
    RETURNING e.customer_id
  )
  SELECT count(*), coalesce(array_agg(DISTINCT gone.customer_id) FILTER (WHERE gone.customer_id IS NOT NULL), '{}')
    INTO events, gone_customers FROM gone;

  -- Old responses lose comment and links to a person; score, category, channel and dates stay.
  UPDATE @extschema@.response r
     SET comment = NULL, customer_id = NULL, survey_id = NULL
   WHERE r.responded_at < cutoff
     AND (r.comment IS NOT NULL OR r.customer_id IS NOT NULL OR r.survey_id IS NOT NULL);
  GET DIAGNOSTICS responses = ROW_COUNT;
  -- Later answers of those customers lose the context the removed events gave them (their
  -- stored attributes too); the older ones lost it with their customer id above.
  IF cardinality(gone_customers) > 0 THEN
    PERFORM @extschema@.refresh_response_context(cutoff, 'infinity', gone_customers);
  END IF;

  DELETE FROM @extschema@.capture_error ce WHERE ce.at < cutoff;
  GET DIAGNOSTICS capture_errors = ROW_COUNT;

  -- A contact row is the throttle's memory: drop it only when no source's throttle needs it.
  SELECT max(p.throttle) INTO longest_throttle FROM @extschema@.payment_source p;
  DELETE FROM @extschema@.customer_contact c
   WHERE c.last_survey_at < now() - greatest(older_than, coalesce(longest_throttle, interval '0'));
  GET DIAGNOSTICS contacts = ROW_COUNT;
END
$fn$;

-- Nothing for PUBLIC (the new functions only: a blanket REVOKE would record users' grants on
-- the old objects as the extension's initial privileges).
REVOKE ALL ON FUNCTION @extschema@.npsagg_add(@extschema@.npsagg, @extschema@.npsagg),
  @extschema@.npsagg_sub(@extschema@.npsagg, @extschema@.npsagg),
  @extschema@.npsagg_add(@extschema@.npsagg, integer, float8),
  @extschema@.npsagg_remove(@extschema@.npsagg, integer, float8),
  @extschema@.refresh_response_context(timestamptz, timestamptz, text[]),
  @extschema@.utc_day(timestamptz), @extschema@.utc_floor(timestamptz), @extschema@.utc_ceil(timestamptz),
  @extschema@.funnel_outcome(text), @extschema@.rebuild_rollups(date, date),
  @extschema@.full_lo(timestamptz, timestamptz), @extschema@.full_hi(timestamptz, timestamptz),
  @extschema@.answers_in(timestamptz, timestamptz, text[]) FROM PUBLIC;
REVOKE ALL ON TABLE @extschema@.rollup_segment, @extschema@.rollup_days, @extschema@.customer_latest_answer,
  @extschema@.survey_funnel_day, @extschema@.nps_daily, @extschema@.nps_daily_days_since_payment FROM PUBLIC;
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

-- ---------------------------------------------------------------------------------------------
-- Capture: backfill_payments (rows a table held before it was tracked; skip_reason backfilled)
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.backfill_payments(source regclass, since timestamptz DEFAULT '-infinity',
                                              last_surveys regclass DEFAULT NULL) RETURNS bigint
  AS 'MODULE_PATHNAME', 'nps_backfill_payments' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.backfill_payments(regclass, timestamptz, regclass) IS
  'Record the rows a tracked table held before tracking (paid at or after since) as payment events with skip_reason backfilled and no survey; '
  'idempotent. Seeds customer_contact from imported responses and the optional last_surveys table (customer_id, last_survey_at). '
  'Returns the number of events recorded';
REVOKE ALL ON FUNCTION @extschema@.backfill_payments(regclass, timestamptz, regclass) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Survey messages (render): recipient, locale and time zone from the billing row (track_payments'
-- new arguments, kept on the survey), message templates, rendering, answer / unsubscribe links
-- ---------------------------------------------------------------------------------------------
-- (IF NOT EXISTS: the send-window step adds the same columns, in the same place, when it runs first)
ALTER TABLE @extschema@.payment_source
  ADD COLUMN IF NOT EXISTS recipient_expr text,
  ADD COLUMN IF NOT EXISTS locale_expr text,
  ADD COLUMN IF NOT EXISTS time_zone_expr text,
  ADD COLUMN IF NOT EXISTS answer_base_url text;
ALTER TABLE @extschema@.payment_source ADD CONSTRAINT payment_source_answer_base_url_check
  CHECK (answer_base_url ~ '^https?://[A-Za-z0-9._~%!$&()*+,;=:@/-]+$');
ALTER TABLE @extschema@.survey
  ADD COLUMN IF NOT EXISTS recipient text,
  ADD COLUMN IF NOT EXISTS locale text,
  ADD COLUMN IF NOT EXISTS time_zone text;
-- track_payments gains three arguments (a new signature: dropped and created again).
DROP FUNCTION @extschema@.track_payments(regclass, text, text, text, text, text, text, text, text, text, text);
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
REVOKE ALL ON FUNCTION @extschema@.track_payments(regclass, text, text, text, text, text, text, text, text, text, text, text, text, text),
  @extschema@._clean_recipient(text), @extschema@._clean_locale(text), @extschema@._clean_time_zone(text) FROM PUBLIC;
-- Survey messages: templates per source, channel and locale, checked when saved (docs/messages.md).
--
-- message_template holds the DBA's templates (dumped with the database); message_template_builtin
-- the ones the extension ships (English, German, French, Spanish; re-created by CREATE EXTENSION,
-- so not dumped). A survey takes the first match of: its locale exactly, its language, the
-- default (locale NULL) - among the DBA's templates (its source's before those for every source),
-- then among the built-in ones (ending with English).

-- true, or the template's problem raised: 42601 a placeholder not closed, 42704 an unknown
-- placeholder, 22023 a placeholder not allowed in that field (src/render.cpp).
CREATE FUNCTION @extschema@._template_ok(template text, field text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'nps_template_ok' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._template_ok(text, text) IS
  'Internal: checks a message template field (subject, body_text, body_html) when it is saved; raises 42601 / 42704 / 22023';

CREATE TABLE @extschema@.message_template (
  id         serial PRIMARY KEY,
  source_id  integer,          -- payment_source.id; NULL: every source
  channel    text NOT NULL CHECK (channel IN ('email', 'in_app', 'sms')),
  locale     text              -- 'de', 'pt-BR' (as _clean_locale writes it); NULL: the default
             CHECK (locale = @extschema@._clean_locale(locale)),
  subject    text CHECK (@extschema@._template_ok(subject, 'subject')),
  body_text  text NOT NULL CHECK (@extschema@._template_ok(body_text, 'body_text')),
  body_html  text CHECK (@extschema@._template_ok(body_html, 'body_html')),
  updated_at timestamptz NOT NULL DEFAULT now(),
  -- email: a subject, a text body and optionally an HTML body; sms / in_app: one short text
  CONSTRAINT message_template_fields_check
    CHECK (CASE WHEN channel = 'email' THEN subject IS NOT NULL ELSE subject IS NULL AND body_html IS NULL END),
  CONSTRAINT message_template_key UNIQUE NULLS NOT DISTINCT (source_id, channel, locale)
);
COMMENT ON TABLE @extschema@.message_template IS
  'Message templates per source (NULL: all), channel and locale (NULL: default); they take precedence over message_template_builtin';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.message_template', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.message_template_id_seq', '');

CREATE TABLE @extschema@.message_template_builtin (
  channel    text NOT NULL CHECK (channel IN ('email', 'in_app', 'sms')),
  locale     text NOT NULL CHECK (locale = @extschema@._clean_locale(locale)),
  subject    text CHECK (@extschema@._template_ok(subject, 'subject')),
  body_text  text NOT NULL CHECK (@extschema@._template_ok(body_text, 'body_text')),
  body_html  text CHECK (@extschema@._template_ok(body_html, 'body_html')),
  PRIMARY KEY (channel, locale)
);
COMMENT ON TABLE @extschema@.message_template_builtin IS
  'The message templates shipped with the extension (en, de, fr, es); copy one into message_template to change it';

INSERT INTO @extschema@.message_template_builtin (channel, locale, subject, body_text, body_html)
SELECT c.channel, w.locale,
       CASE WHEN c.channel = 'email' THEN w.subject END,
       CASE c.channel
         WHEN 'email' THEN pg_catalog.format(E'%s\n\n%s\n\n%s\n%s\n\n{{score_links}}\n\n%s {{unsubscribe_url}}\n',
                                             w.hello, w.thanks, w.question, w.scale, w.unsubscribe)
         WHEN 'sms' THEN w.sms
         ELSE w.question END,
       CASE WHEN c.channel = 'email' THEN pg_catalog.format(
         E'<!DOCTYPE html>\n<html lang="%s"><body style="font-family:sans-serif;color:#222222">\n'
          '<p>%s</p>\n<p>%s</p>\n<p>%s</p>\n{{score_links}}\n'
          '<p style="font-size:12px;color:#555555">%s</p>\n'
          '<p style="font-size:12px;color:#555555"><a href="{{unsubscribe_url}}">%s</a></p>\n</body></html>\n',
         w.locale, w.hello, w.thanks, w.question, w.legend, w.unsubscribe_link) END
  FROM (VALUES ('email'), ('sms'), ('in_app')) c(channel),
       (VALUES
  ('en', 'How likely are you to recommend us?', 'Hello,',
   'Thank you for your payment of {{amount}} on {{paid_date}}.',
   'How likely are you to recommend us to a friend or colleague?',
   'Choose a score from 0 (not at all likely) to 10 (extremely likely):',
   '0 = not at all likely, 10 = extremely likely', 'Do not want these emails? Unsubscribe:', 'Unsubscribe',
   'Thanks for your payment of {{amount}}. How likely are you to recommend us (0-10)? {{answer_url}} Stop: {{unsubscribe_url}}'),
  ('de', 'Wie wahrscheinlich ist es, dass Sie uns weiterempfehlen?', 'Guten Tag,',
   'vielen Dank für Ihre Zahlung über {{amount}} am {{paid_date}}.',
   'Wie wahrscheinlich ist es, dass Sie uns einem Freund oder Kollegen empfehlen?',
   'Wählen Sie einen Wert von 0 (sehr unwahrscheinlich) bis 10 (sehr wahrscheinlich):',
   '0 = sehr unwahrscheinlich, 10 = sehr wahrscheinlich', 'Keine solchen E-Mails mehr? Abmelden:', 'Abmelden',
   'Danke für Ihre Zahlung über {{amount}}. Wie wahrscheinlich empfehlen Sie uns weiter (0-10)? {{answer_url}} Abmelden: {{unsubscribe_url}}'),
  ('fr', 'Quelle est la probabilité que vous nous recommandiez ?', 'Bonjour,',
   'merci pour votre paiement de {{amount}} du {{paid_date}}.',
   'Quelle est la probabilité que vous nous recommandiez à un ami ou un collègue ?',
   'Choisissez une note de 0 (pas du tout probable) à 10 (très probable) :',
   '0 = pas du tout probable, 10 = très probable', 'Vous ne souhaitez plus recevoir ces e-mails ? Se désabonner :', 'Se désabonner',
   'Merci pour votre paiement de {{amount}}. Nous recommanderiez-vous (0-10) ? {{answer_url}} Désabonnement : {{unsubscribe_url}}'),
  ('es', '¿Qué probabilidad hay de que nos recomiende?', 'Hola:',
   'gracias por su pago de {{amount}} del {{paid_date}}.',
   '¿Qué probabilidad hay de que nos recomiende a un amigo o colega?',
   'Elija una puntuación de 0 (nada probable) a 10 (muy probable):',
   '0 = nada probable, 10 = muy probable', '¿No desea recibir estos correos? Darse de baja:', 'Darse de baja',
   'Gracias por su pago de {{amount}}. ¿Nos recomendaría (0-10)? {{answer_url}} Baja: {{unsubscribe_url}}')
       ) w(locale, subject, hello, thanks, question, scale, legend, unsubscribe, unsubscribe_link, sms);

-- The template of a survey of source src, channel ch and locale loc (see the top of this file).
CREATE FUNCTION @extschema@._template_for(src integer, ch text, loc text,
                                          OUT t_subject text, OUT t_text text, OUT t_html text)
RETURNS record
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT x.subject, x.body_text, x.body_html FROM (
    SELECT 0 AS tier,
           CASE WHEN m.locale = loc THEN 0 WHEN m.locale = split_part(loc, '-', 1) THEN 1 ELSE 2 END AS rank,
           (m.source_id IS NULL)::integer AS generic, m.subject, m.body_text, m.body_html
      FROM @extschema@.message_template m
     WHERE m.channel = ch AND (m.source_id = src OR m.source_id IS NULL)
       AND (m.locale IS NULL OR m.locale = loc OR m.locale = split_part(loc, '-', 1))
    UNION ALL
    SELECT 1, CASE WHEN b.locale = loc THEN 0 WHEN b.locale = split_part(loc, '-', 1) THEN 1 ELSE 2 END, 0,
           b.subject, b.body_text, b.body_html
      FROM @extschema@.message_template_builtin b
     WHERE b.channel = ch AND (b.locale = 'en' OR b.locale = loc OR b.locale = split_part(loc, '-', 1))
  ) x
  ORDER BY x.tier, x.rank, x.generic
  LIMIT 1
$fn$;
COMMENT ON FUNCTION @extschema@._template_for(integer, text, text) IS
  'Internal: the message template a survey of this source, channel and locale gets';
-- Survey messages: rendering (render_survey, claim_messages) and the unsubscribe link's action
-- (opt_out_by_token). See docs/messages.md. The renderer is C++ (src/render.cpp,
-- src/render_core.cpp); these functions find each survey's template and context set-based.

-- One message: the template fields (NULL stays NULL) over a survey's context.
CREATE FUNCTION @extschema@._render(t_subject text, t_text text, t_html text, token text, base_url text,
                                    locale text, time_zone text, amount numeric, currency text,
                                    paid_at timestamptz, attributes jsonb, source text,
                                    OUT subject text, OUT body_text text, OUT body_html text)
RETURNS record
  AS 'MODULE_PATHNAME', 'nps_render' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._render(text, text, text, text, text, text, text, numeric, text, timestamptz, jsonb, text) IS
  'Internal: renders one message from template fields and a survey''s context (22023 when links are needed and base_url is NULL)';

-- The messages of these surveys, in one statement: the template of each (source, channel,
-- locale) looked up once, the payment context by primary key. Not SECURITY DEFINER and not
-- granted: render_survey and claim_messages call it with their checks.
CREATE FUNCTION @extschema@._messages(survey_ids bigint[])
RETURNS TABLE (survey_id bigint, recipient text, locale text, subject text, body_text text, body_html text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
  WITH s AS MATERIALIZED (
    SELECT x.id, x.token, x.source_id, x.channel, x.recipient, x.locale, x.time_zone, x.event_id
      FROM @extschema@.survey x WHERE x.id = ANY (survey_ids)
  ), g AS MATERIALIZED (  -- one template lookup per group, not per survey
    -- (the source's default time zone is read by name: payment_source.time_zone, where the send
    -- window settings define it; UTC otherwise)
    SELECT k.source_id, k.channel, k.locale, t.t_subject, t.t_text, t.t_html, p.name, p.answer_base_url,
           pg_catalog.to_jsonb(p) OPERATOR(pg_catalog.->>) 'time_zone' AS source_time_zone
      FROM (SELECT DISTINCT s.source_id, s.channel, s.locale FROM s) k
      CROSS JOIN LATERAL @extschema@._template_for(k.source_id, k.channel, k.locale) t
      LEFT JOIN @extschema@.payment_source p ON p.id = k.source_id
  )
  SELECT s.id, s.recipient, s.locale, r.subject, r.body_text, r.body_html
    FROM s
    JOIN g ON g.source_id = s.source_id AND g.channel = s.channel AND g.locale IS NOT DISTINCT FROM s.locale
    LEFT JOIN LATERAL (SELECT e.amount, e.currency, e.occurred_at, e.attributes
                         FROM @extschema@.payment_event e WHERE e.id = s.event_id LIMIT 1) e ON true
   CROSS JOIN LATERAL @extschema@._render(g.t_subject, g.t_text, g.t_html, s.token, g.answer_base_url, s.locale,
                                          coalesce(s.time_zone, g.source_time_zone, 'UTC'), e.amount, e.currency, e.occurred_at,
                                          e.attributes, g.name) r
$fn$;
COMMENT ON FUNCTION @extschema@._messages(bigint[]) IS
  'Internal: the rendered messages of these surveys (recipient, locale, subject, text, HTML); no lease check';

-- Who holds a lease: as for mark_sent (60_delivery.sql). Every survey the caller does not hold
-- gets the same 55000 and the same message.
CREATE FUNCTION @extschema@.render_survey(survey_id bigint, worker text DEFAULT NULL)
RETURNS TABLE (recipient text, subject text, body_text text, body_html text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
BEGIN
  IF survey_id IS NULL THEN
    RAISE EXCEPTION 'render_survey: survey_id must not be NULL' USING ERRCODE = '22004';
  END IF;
  PERFORM 1 FROM @extschema@.survey x
   WHERE x.id = render_survey.survey_id
     AND x.lease_owner IS NOT NULL
     AND (render_survey.worker IS NULL OR x.lease_owner = render_survey.worker)
     AND (x.lease_role = caller OR (x.lease_role IS NULL AND x.lease_owner = render_survey.worker))
     AND x.status IN ('sending', 'responded');
  IF NOT FOUND THEN
    RAISE EXCEPTION 'render_survey: survey % is not leased by %', survey_id,
      coalesce('worker "' || worker || '"', 'this session''s role')
      USING ERRCODE = '55000',
            HINT = 'Render only surveys this worker claimed with claim_surveys() and has not reported yet.';
  END IF;
  RETURN QUERY SELECT m.recipient, m.subject, m.body_text, m.body_html
                 FROM @extschema@._messages(ARRAY[render_survey.survey_id]) m;
END
$fn$;
COMMENT ON FUNCTION @extschema@.render_survey(bigint, text) IS
  'The message of a survey the caller holds the lease of (its login role; and worker when given): '
  'recipient, subject, text and HTML body; 55000 for every survey the caller does not hold';

CREATE TYPE @extschema@.claimed_message AS (
  id          bigint,
  token       text,
  customer_id text,
  channel     text,
  attempts    integer,
  lease_until timestamptz,
  expires_at  timestamptz,
  source      text,
  kind        text,
  amount      numeric,
  currency    text,
  occurred_at timestamptz,
  attributes  jsonb,
  recipient   text,         -- email address or phone number (NULL: the source has no recipient expression)
  locale      text,
  subject     text,         -- email only
  body_text   text,         -- the text body (email) or the whole message (sms, in_app)
  body_html   text          -- email only (NULL when the template has no HTML body)
);
COMMENT ON TYPE @extschema@.claimed_message IS
  'A survey leased by claim_messages(): claimed_survey''s fields and the rendered message';
REVOKE USAGE ON TYPE @extschema@.claimed_message FROM PUBLIC;

CREATE FUNCTION @extschema@.claim_messages(worker text, max integer DEFAULT 100,
                                           lease interval DEFAULT '5 minutes')
RETURNS SETOF @extschema@.claimed_message
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  -- (claim_surveys checks the values; the NULLs are named here for this function)
  IF worker IS NULL OR max IS NULL OR lease IS NULL THEN
    RAISE EXCEPTION 'claim_messages: % must not be NULL',
      CASE WHEN worker IS NULL THEN 'worker' WHEN max IS NULL THEN 'max' ELSE 'lease' END
      USING ERRCODE = '22004';
  END IF;
  RETURN QUERY
  WITH c AS MATERIALIZED (
    SELECT c.*, pg_catalog.row_number() OVER () AS ord
      FROM @extschema@.claim_surveys(claim_messages.worker, claim_messages.max, claim_messages.lease) c
  ), m AS (
    SELECT * FROM @extschema@._messages(ARRAY(SELECT c.id FROM c))
  )
  SELECT c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at, c.source,
         c.kind, c.amount, c.currency, c.occurred_at, c.attributes,
         m.recipient, m.locale, m.subject, m.body_text, m.body_html
    FROM c LEFT JOIN m ON m.survey_id = c.id
   ORDER BY c.ord;
END
$fn$;
COMMENT ON FUNCTION @extschema@.claim_messages(text, integer, interval) IS
  'claim_surveys with the rendered message: leases due surveys as claim_surveys() does and returns '
  'each with its recipient, locale, subject, text and HTML body';

-- The unsubscribe link's action. The same (empty) result whatever the token: a token that is
-- unknown, expired or of an erased customer reveals nothing. Idempotent.
CREATE FUNCTION @extschema@.opt_out_by_token(token text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  who text;
BEGIN
  IF token IS NULL THEN
    RAISE EXCEPTION 'opt_out_by_token: token must not be NULL' USING ERRCODE = '22004';
  END IF;
  -- Locked like record_response: forget_customer (which locks the person's surveys first)
  -- either erased the survey before, or waits and then erases the opt-out too.
  SELECT x.customer_id INTO who FROM @extschema@.survey x
   WHERE x.token = opt_out_by_token.token FOR UPDATE;
  IF who IS NOT NULL THEN
    PERFORM @extschema@.opt_out(who);
  END IF;
END
$fn$;
COMMENT ON FUNCTION @extschema@.opt_out_by_token(text) IS
  'The unsubscribe link: opts out the customer of the survey with this token (pending surveys '
  'cancelled); idempotent; the same result for an unknown token';
REVOKE ALL ON FUNCTION @extschema@._template_ok(text, text), @extschema@._template_for(integer, text, text),
  @extschema@._render(text, text, text, text, text, text, text, numeric, text, timestamptz, jsonb, text),
  @extschema@._messages(bigint[]), @extschema@.render_survey(bigint, text),
  @extschema@.claim_messages(text, integer, interval), @extschema@.opt_out_by_token(text) FROM PUBLIC;
REVOKE ALL ON TABLE @extschema@.message_template, @extschema@.message_template_builtin FROM PUBLIC;
REVOKE ALL ON SEQUENCE @extschema@.message_template_id_seq FROM PUBLIC;

-- >>> follow-ups (closing the loop)
-- ---------------------------------------------------------------------------------------------
-- Follow-ups (closing the loop): policy, follow-ups and notes, the response triggers that make
-- them, the agents' functions and metrics. Answers recorded before the update get no follow-up
-- (the triggers start with the update; docs/follow-ups.md shows how to open them for recent
-- detractors by hand).
-- ---------------------------------------------------------------------------------------------
-- Closing the loop: a follow-up for every answer that needs one, tracked to resolution.
--
-- Triggers on response create a follow-up in the same statement as the answer (record_response
-- and a plain INSERT / COPY alike), so an answer and its follow-up commit together or not at
-- all. Which answers need one is a per-source policy (follow_up_policy; no row: detractors,
-- due 2 days after the answer, answers older than 30 days when recorded get none). Customer
-- success agents lease follow-ups with claim_follow_ups() (FOR UPDATE SKIP LOCKED, like the
-- survey queue), record contacts and notes with update_follow_up() and close them with
-- resolve_follow_up(); only the agent name AND login role holding the lease may change one.
-- A follow-up lives as long as its answer names a customer: when forget_customer() or purge()
-- anonymise the answer (or it is deleted) the follow-up and its notes go, in the same statement.
-- Error messages name follow-up ids, statuses and agent names, never customer ids, comments or
-- notes; the NOTIFY payload is the source name.

CREATE TABLE @extschema@.follow_up_policy (
  -- payment_source.id; 0: answers tied to no source (imported answers of customers without payments)
  source_id    integer PRIMARY KEY CHECK (source_id >= 0),
  categories   @extschema@.nps_category[] NOT NULL DEFAULT '{detractor}',  -- answers of these categories
  with_comment boolean NOT NULL DEFAULT false,    -- and any answer with a (non-blank) comment
  sla          interval NOT NULL DEFAULT '2 days'  -- due this long after the answer
               CHECK (@extschema@.interval_within(sla, '1 minute', '1 year')),
  max_age      interval NOT NULL DEFAULT '30 days' -- an answer older than this when recorded gets none
               CHECK (@extschema@.interval_within(max_age, '0', '100 years'))
);
COMMENT ON TABLE @extschema@.follow_up_policy IS
  'Which answers of a source get a follow-up and when it is due; no row: detractors, 2 days, answers up to 30 days old';

CREATE TABLE @extschema@.follow_up (
  id                bigserial PRIMARY KEY,
  response_id       bigint NOT NULL UNIQUE,          -- one per answer (a replaced answer keeps it)
  source_id         integer NOT NULL,                -- the policy that applied (0: none)
  reason            text NOT NULL CHECK (reason IN ('detractor', 'passive', 'promoter', 'comment')),
  status            text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'contacted', 'resolved', 'wont_fix')),
  created_at        timestamptz NOT NULL DEFAULT now(),
  due_at            timestamptz NOT NULL,
  assignee          text,                            -- the agent that claimed it last
  lease_role        oid,                             -- with assignee: who holds it (session_user's oid)
  lease_until       timestamptz,
  contacted_at      timestamptz,                     -- first contact (or resolved)
  closed_at         timestamptz,                     -- resolved or wont_fix
  answer_changed_at timestamptz,                     -- the answer was replaced after the follow-up was made
  still_needed      boolean NOT NULL DEFAULT true,   -- the current answer still meets the policy
  active            boolean GENERATED ALWAYS AS (status IN ('open', 'contacted')) STORED
);
-- the agents' queue: open and contacted follow-ups by due time
CREATE INDEX follow_up_queue_idx ON @extschema@.follow_up (due_at, id) WHERE active;
CREATE INDEX follow_up_created_at_idx ON @extschema@.follow_up (created_at);
COMMENT ON TABLE @extschema@.follow_up IS
  'One follow-up per answer that needs one: open -> contacted -> resolved / wont_fix (personal data: see docs/follow-ups.md)';

CREATE TABLE @extschema@.follow_up_note (
  id           bigserial PRIMARY KEY,
  follow_up_id bigint NOT NULL,
  at           timestamptz NOT NULL DEFAULT now(),
  author       text NOT NULL,                        -- the agent name
  author_role  text NOT NULL,                        -- its login role (session_user)
  status       text,                                 -- the status this call set (NULL: unchanged)
  body         text                                  -- the note (NULL: a status change only)
);
CREATE INDEX follow_up_note_follow_up_idx ON @extschema@.follow_up_note (follow_up_id, at);
COMMENT ON TABLE @extschema@.follow_up_note IS
  'Notes and status changes of follow-ups, with author and time (personal data: erased with the follow-up)';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.follow_up_policy', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.follow_up', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.follow_up_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.follow_up_note', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.follow_up_note_id_seq', '');

-- Does an answer meet a policy? (NULL policy columns: the defaults)
CREATE FUNCTION @extschema@.follow_up_needed(category @extschema@.nps_category, comment text,
                                             categories @extschema@.nps_category[], with_comment boolean)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT coalesce(category = ANY (coalesce(categories, '{detractor}')), false)
         OR (coalesce(with_comment, false) AND coalesce(comment ~ '[^[:space:]]', false))
$$;
COMMENT ON FUNCTION @extschema@.follow_up_needed(@extschema@.nps_category, text, @extschema@.nps_category[], boolean) IS
  'Whether an answer of this category and comment needs a follow-up under a policy (NULL: the default, detractors only)';


-- ---------------------------------------------------------------------------------------------
-- Triggers on response (statement level, over the transition tables: one pass per COPY).

-- New answers: a follow-up for each that needs one; one NOTIFY per source. Rows inserted with
-- their payment context already set (context_at given, as pg_restore loads a dump: the
-- follow-ups are in the dump) get none: response_context_fill sets context_at = now() on every
-- other insert.
CREATE FUNCTION @extschema@.follow_up_answer_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'  -- due times: answer + sla in UTC (a '1 day' SLA is 24 hours), whatever the session
AS $fn$
DECLARE
  sources integer[];
BEGIN
  WITH made AS (
    INSERT INTO @extschema@.follow_up (response_id, source_id, reason, due_at)
    SELECT n.id, k.source_id,
           CASE WHEN n.category = ANY (coalesce(p.categories, '{detractor}')) THEN n.category::text ELSE 'comment' END,
           n.responded_at + coalesce(p.sla, interval '2 days')
      FROM nps_new n
     CROSS JOIN LATERAL (SELECT coalesce(CASE WHEN n.survey_id IS NOT NULL THEN
                                           (SELECT s.source_id FROM @extschema@.survey s WHERE s.id = n.survey_id) END,
                                         n.payment_source_id, 0) AS source_id) k
      LEFT JOIN @extschema@.follow_up_policy p ON p.source_id = k.source_id
     WHERE n.customer_id IS NOT NULL
       -- only answers whose context this transaction computed: a row that comes with its
       -- context (pg_restore, a copy between databases) comes with its follow-up too
       AND n.context_at = now()
       -- a bulk import of old answers: most rows leave here, before any lookup (one InitPlan)
       AND n.responded_at > now() - (SELECT greatest(interval '30 days', max(x.max_age)) FROM @extschema@.follow_up_policy x)
       AND n.responded_at > now() - coalesce(p.max_age, interval '30 days')
       AND @extschema@.follow_up_needed(n.category, n.comment, p.categories, p.with_comment)
     ORDER BY n.id
    ON CONFLICT (response_id) DO NOTHING
    RETURNING source_id
  )
  SELECT array_agg(DISTINCT made.source_id) INTO sources FROM made;
  IF sources IS NOT NULL THEN
    PERFORM pg_catalog.pg_notify('nps_billing_follow_up', coalesce(p.name, ''))
       FROM unnest(sources) AS u(id) LEFT JOIN @extschema@.payment_source p ON p.id = u.id
      ORDER BY u.id;
  END IF;
  RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION @extschema@.follow_up_answer_insert() IS
  'Trigger: creates the follow-ups new answers need (their source''s follow_up_policy), in the same statement';

-- Changed answers. An answer that no longer names its customer (forget_customer, purge) loses
-- its follow-up and notes. A replaced answer (score or comment) marks its follow-up
-- (answer_changed_at, still_needed) and keeps its status; one that now needs a follow-up and
-- had none gets one.
CREATE FUNCTION @extschema@.follow_up_answer_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'  -- due times: answer + sla in UTC (a '1 day' SLA is 24 hours), whatever the session
AS $fn$
DECLARE
  gone bigint[];
  sources integer[];
BEGIN
  -- INSERT ... ON CONFLICT DO UPDATE fires this for every new answer, with no row updated
  IF NOT EXISTS (SELECT 1 FROM nps_old) THEN
    RETURN NULL;
  END IF;
  WITH d AS (
    DELETE FROM @extschema@.follow_up f
     USING nps_old o JOIN nps_new n USING (id)
     WHERE f.response_id = n.id AND o.customer_id IS NOT NULL
       AND n.customer_id IS DISTINCT FROM o.customer_id
    RETURNING f.id
  )
  SELECT array_agg(d.id) INTO gone FROM d;
  IF gone IS NOT NULL THEN
    -- a statement of its own: its snapshot sees a note committed while the DELETE above waited
    -- for the follow-up's row lock (update_follow_up locks the follow-up before writing a note)
    DELETE FROM @extschema@.follow_up_note x WHERE x.follow_up_id = ANY (gone);
  END IF;

  WITH changed AS (
    SELECT n.id, n.category, n.comment, n.responded_at, k.source_id, p.categories, p.with_comment, p.sla, p.max_age
      FROM nps_old o JOIN nps_new n USING (id)
     CROSS JOIN LATERAL (SELECT coalesce((SELECT s.source_id FROM @extschema@.survey s WHERE s.id = n.survey_id),
                                         n.payment_source_id, 0) AS source_id) k
      LEFT JOIN @extschema@.follow_up_policy p ON p.source_id = k.source_id
     WHERE n.customer_id IS NOT NULL AND n.customer_id = o.customer_id
       AND (o.score, o.comment) IS DISTINCT FROM (n.score, n.comment)
  ), marked AS (
    UPDATE @extschema@.follow_up f
       SET answer_changed_at = now(),
           still_needed = @extschema@.follow_up_needed(c.category, c.comment, c.categories, c.with_comment)
      FROM changed c
     WHERE f.response_id = c.id
    RETURNING f.source_id
  ), made AS (
    INSERT INTO @extschema@.follow_up (response_id, source_id, reason, due_at)
    SELECT c.id, c.source_id,
           CASE WHEN c.category = ANY (coalesce(c.categories, '{detractor}')) THEN c.category::text ELSE 'comment' END,
           c.responded_at + coalesce(c.sla, interval '2 days')
      FROM changed c
     WHERE c.responded_at > now() - coalesce(c.max_age, interval '30 days')
       AND @extschema@.follow_up_needed(c.category, c.comment, c.categories, c.with_comment)
       AND NOT EXISTS (SELECT 1 FROM @extschema@.follow_up f WHERE f.response_id = c.id)
     ORDER BY c.id
    ON CONFLICT (response_id) DO NOTHING
    RETURNING source_id
  )
  SELECT array_agg(DISTINCT x.source_id) INTO sources
    FROM (SELECT source_id FROM marked UNION ALL SELECT source_id FROM made) x;
  IF sources IS NOT NULL THEN
    PERFORM pg_catalog.pg_notify('nps_billing_follow_up', coalesce(p.name, ''))
       FROM unnest(sources) AS u(id) LEFT JOIN @extschema@.payment_source p ON p.id = u.id
      ORDER BY u.id;
  END IF;
  RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION @extschema@.follow_up_answer_update() IS
  'Trigger: a replaced answer marks its follow-up (or gets one it now needs); an anonymised answer loses its follow-up and notes';

CREATE FUNCTION @extschema@.follow_up_answer_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  gone bigint[];
BEGIN
  WITH d AS (
    DELETE FROM @extschema@.follow_up f USING nps_old o WHERE f.response_id = o.id RETURNING f.id
  )
  SELECT array_agg(d.id) INTO gone FROM d;
  IF gone IS NOT NULL THEN
    DELETE FROM @extschema@.follow_up_note x WHERE x.follow_up_id = ANY (gone);
  END IF;
  RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION @extschema@.follow_up_answer_delete() IS
  'Trigger: a deleted answer takes its follow-up and notes with it';

CREATE FUNCTION @extschema@.follow_up_answer_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  TRUNCATE @extschema@.follow_up, @extschema@.follow_up_note;
  RETURN NULL;
END
$fn$;
COMMENT ON FUNCTION @extschema@.follow_up_answer_truncate() IS
  'Trigger: TRUNCATE of response empties follow_up and follow_up_note';

CREATE TRIGGER follow_up_answer_insert AFTER INSERT ON @extschema@.response
  REFERENCING NEW TABLE AS nps_new
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.follow_up_answer_insert();
CREATE TRIGGER follow_up_answer_update AFTER UPDATE ON @extschema@.response
  REFERENCING OLD TABLE AS nps_old NEW TABLE AS nps_new
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.follow_up_answer_update();
CREATE TRIGGER follow_up_answer_delete AFTER DELETE ON @extschema@.response
  REFERENCING OLD TABLE AS nps_old
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.follow_up_answer_delete();
CREATE TRIGGER follow_up_answer_truncate AFTER TRUNCATE ON @extschema@.response
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.follow_up_answer_truncate();

-- Working follow-ups: claim (lease), update (contact, notes), resolve, release; and metrics.
--
-- Who may change a follow-up: the agent name AND the login role (session_user) that claimed it,
-- as for survey leases (60_delivery.sql). The holder may still write after its lease lapsed as
-- long as nobody re-claimed it. Every follow-up the caller does not hold - unknown id, another
-- agent's or another role's, released, closed - is refused with the same 55000 and message.
-- All SECURITY DEFINER: the customer success role gets EXECUTE and reads no table it is not
-- granted. Notes are personal data: they are written only here and erased with the follow-up.

CREATE TYPE @extschema@.claimed_follow_up AS (
  id                 bigint,       -- follow-up id: pass it to update_follow_up / resolve_follow_up
  status             text,         -- open / contacted
  reason             text,         -- detractor / passive / promoter / comment
  due_at             timestamptz,
  lease_until        timestamptz,
  customer_id        text,
  score              integer,
  category           @extschema@.nps_category,
  comment            text,
  responded_at       timestamptz,
  answer_changed_at  timestamptz,  -- the answer was replaced after the follow-up was made
  still_needed       boolean,      -- the current answer still meets the policy
  source             text,         -- payment_source.name (NULL: none)
  payment_kind       text,         -- the customer's last payment before the answer
  payment_amount     numeric,
  payment_currency   text,
  payment_at         timestamptz,
  payment_attributes jsonb,
  days_since_payment integer,
  failed_payment_30d boolean,
  notes              integer       -- notes so far (table follow_up_note)
);
COMMENT ON TYPE @extschema@.claimed_follow_up IS
  'A follow-up leased by claim_follow_ups(), with the answer and its payment context';
REVOKE USAGE ON TYPE @extschema@.claimed_follow_up FROM PUBLIC;

CREATE FUNCTION @extschema@.claim_follow_ups(agent text, max integer DEFAULT 10,
                                             lease interval DEFAULT '1 hour')
RETURNS SETOF @extschema@.claimed_follow_up
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  lease_end timestamptz;
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
BEGIN
  IF agent IS NULL OR max IS NULL OR lease IS NULL THEN
    RAISE EXCEPTION 'claim_follow_ups: % must not be NULL',
      CASE WHEN agent IS NULL THEN 'agent' WHEN max IS NULL THEN 'max' ELSE 'lease' END
      USING ERRCODE = '22004';
  END IF;
  IF agent = '' OR length(agent) > 200 THEN
    RAISE EXCEPTION 'claim_follow_ups: agent name must have 1..200 characters, got %', length(agent)
      USING ERRCODE = '22023';
  END IF;
  IF max <= 0 OR max > 1000 THEN
    RAISE EXCEPTION 'claim_follow_ups: max % is out of range 1..1000', max USING ERRCODE = '22023';
  END IF;
  IF caller IS NULL THEN
    RAISE EXCEPTION 'claim_follow_ups: the session''s login role no longer exists' USING ERRCODE = '42704';
  END IF;
  IF @extschema@.interval_within(lease, '1 microsecond', '30 days') THEN
    lease_end := now() + lease;
  END IF;
  IF lease_end IS NULL OR lease_end <= now() OR lease_end > now() + interval '31 days' THEN
    RAISE EXCEPTION 'claim_follow_ups: lease % is out of range (0, 30 days] or has a negative part', lease
      USING ERRCODE = '22023';
  END IF;
  RETURN QUERY
  WITH picked AS (
    SELECT f.id
      FROM @extschema@.follow_up f
     WHERE f.active  -- follow_up_queue_idx
       AND (f.lease_until IS NULL OR f.lease_until <= now())
     ORDER BY f.due_at, f.id
     LIMIT claim_follow_ups.max
       FOR UPDATE OF f SKIP LOCKED
  ), claimed AS (
    UPDATE @extschema@.follow_up f
       SET assignee = claim_follow_ups.agent, lease_role = caller, lease_until = lease_end
      FROM picked
     WHERE f.id = picked.id
    RETURNING f.id, f.status, f.reason, f.due_at, f.lease_until, f.response_id, f.source_id,
              f.answer_changed_at, f.still_needed
  )
  SELECT c.id, c.status, c.reason, c.due_at, c.lease_until,
         r.customer_id, r.score::integer, r.category, r.comment, r.responded_at,
         c.answer_changed_at, c.still_needed,
         (SELECT p.name FROM @extschema@.payment_source p WHERE p.id = c.source_id),
         r.payment_kind, r.payment_amount, r.payment_currency, r.payment_at, r.payment_attributes,
         r.days_since_payment, r.failed_payment_30d,
         (SELECT count(*)::integer FROM @extschema@.follow_up_note x WHERE x.follow_up_id = c.id)
    FROM claimed c
    JOIN @extschema@.response r ON r.id = c.response_id
   ORDER BY c.due_at, c.id;
END
$fn$;
COMMENT ON FUNCTION @extschema@.claim_follow_ups(text, integer, interval) IS
  'Leases up to max open or contacted follow-ups nobody holds, earliest due first, to agent and the '
  'session''s login role; FOR UPDATE SKIP LOCKED: concurrent agents never get the same follow-up';

-- A note of a held follow-up: the text checks shared by update / resolve.
CREATE FUNCTION @extschema@.follow_up_check_note(fn text, note text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  IF note IS NOT NULL AND note !~ '[^[:space:]]' THEN
    RAISE EXCEPTION '%: note must not be blank', fn USING ERRCODE = '22023';
  END IF;
  IF length(note) > 10000 THEN
    RAISE EXCEPTION '%: note has % characters, at most 10000 are kept', fn, length(note) USING ERRCODE = '22001';
  END IF;
END
$fn$;
COMMENT ON FUNCTION @extschema@.follow_up_check_note(text, text) IS
  'Internal: refuses a blank note (22023) or one over 10000 characters (22001)';

CREATE FUNCTION @extschema@.update_follow_up(follow_up_id bigint, agent text, status text DEFAULT NULL,
                                             note text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
  new_status text;
BEGIN
  IF follow_up_id IS NULL OR agent IS NULL THEN
    RAISE EXCEPTION 'update_follow_up: % must not be NULL',
      CASE WHEN follow_up_id IS NULL THEN 'follow_up_id' ELSE 'agent' END USING ERRCODE = '22004';
  END IF;
  IF update_follow_up.status IS NULL AND update_follow_up.note IS NULL THEN
    RAISE EXCEPTION 'update_follow_up: give a status or a note' USING ERRCODE = '22004';
  END IF;
  IF update_follow_up.status IS DISTINCT FROM 'contacted' AND update_follow_up.status IS NOT NULL THEN
    RAISE EXCEPTION 'update_follow_up: status "%" is not allowed here (contacted, or NULL to add a note)', left(update_follow_up.status, 40)
      USING ERRCODE = '22023', HINT = 'Close a follow-up with resolve_follow_up().';
  END IF;
  PERFORM @extschema@.follow_up_check_note('update_follow_up', update_follow_up.note);
  -- The lease check is part of the UPDATE: the row stays locked until commit, so an erasure
  -- (forget_customer) waits and then deletes the note written below too.
  UPDATE @extschema@.follow_up f
     SET status = coalesce(update_follow_up.status, f.status),
         contacted_at = CASE WHEN update_follow_up.status = 'contacted' THEN coalesce(f.contacted_at, now())
                             ELSE f.contacted_at END
   WHERE f.id = update_follow_up.follow_up_id
     AND f.assignee = update_follow_up.agent
     AND f.lease_role = caller
     AND f.active
  RETURNING f.status INTO new_status;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'update_follow_up: follow-up % is not held by agent "%"', follow_up_id, agent
      USING ERRCODE = '55000', HINT = 'Claim follow-ups with claim_follow_ups() first.';
  END IF;
  INSERT INTO @extschema@.follow_up_note (follow_up_id, author, author_role, status, body)
  VALUES (update_follow_up.follow_up_id, update_follow_up.agent, session_user, update_follow_up.status,
          update_follow_up.note);
  RETURN new_status;
END
$fn$;
COMMENT ON FUNCTION @extschema@.update_follow_up(bigint, text, text, text) IS
  'Records a contact (status contacted) and/or a note on a follow-up the agent and login role hold; '
  'returns its status. 55000 for a follow-up the caller does not hold';

CREATE FUNCTION @extschema@.resolve_follow_up(follow_up_id bigint, agent text,
                                              resolution text DEFAULT 'resolved', note text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
BEGIN
  IF follow_up_id IS NULL OR agent IS NULL OR resolution IS NULL THEN
    RAISE EXCEPTION 'resolve_follow_up: % must not be NULL',
      CASE WHEN follow_up_id IS NULL THEN 'follow_up_id' WHEN agent IS NULL THEN 'agent' ELSE 'resolution' END
      USING ERRCODE = '22004';
  END IF;
  IF resolution NOT IN ('resolved', 'wont_fix') THEN
    RAISE EXCEPTION 'resolve_follow_up: resolution "%" is not resolved or wont_fix', left(resolution, 40)
      USING ERRCODE = '22023';
  END IF;
  PERFORM @extschema@.follow_up_check_note('resolve_follow_up', note);
  UPDATE @extschema@.follow_up f
     SET status = resolve_follow_up.resolution,
         closed_at = now(),
         contacted_at = CASE WHEN resolve_follow_up.resolution = 'resolved' THEN coalesce(f.contacted_at, now())
                             ELSE f.contacted_at END,
         lease_role = NULL, lease_until = NULL
   WHERE f.id = resolve_follow_up.follow_up_id
     AND f.assignee = resolve_follow_up.agent
     AND f.lease_role = caller
     AND f.active;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'resolve_follow_up: follow-up % is not held by agent "%"', follow_up_id, agent
      USING ERRCODE = '55000', HINT = 'Claim follow-ups with claim_follow_ups() first.';
  END IF;
  INSERT INTO @extschema@.follow_up_note (follow_up_id, author, author_role, status, body)
  VALUES (resolve_follow_up.follow_up_id, resolve_follow_up.agent, session_user,
          resolve_follow_up.resolution, resolve_follow_up.note);
  RETURN resolution;
END
$fn$;
COMMENT ON FUNCTION @extschema@.resolve_follow_up(bigint, text, text, text) IS
  'Closes a follow-up the agent and login role hold as resolved or wont_fix, with an optional note; '
  'the lease ends, the assignee stays. 55000 for a follow-up the caller does not hold';

CREATE FUNCTION @extschema@.release_follow_up(follow_up_id bigint, agent text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
BEGIN
  IF follow_up_id IS NULL OR agent IS NULL THEN
    RAISE EXCEPTION 'release_follow_up: % must not be NULL',
      CASE WHEN follow_up_id IS NULL THEN 'follow_up_id' ELSE 'agent' END USING ERRCODE = '22004';
  END IF;
  UPDATE @extschema@.follow_up f SET lease_role = NULL, lease_until = NULL
   WHERE f.id = release_follow_up.follow_up_id
     AND f.assignee = release_follow_up.agent
     AND f.lease_role = caller
     AND f.active;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'release_follow_up: follow-up % is not held by agent "%"', follow_up_id, agent
      USING ERRCODE = '55000';
  END IF;
END
$fn$;
COMMENT ON FUNCTION @extschema@.release_follow_up(bigint, text) IS
  'Gives a held follow-up back to the queue unchanged (e.g. waiting for the customer); the assignee stays';

-- ---------------------------------------------------------------------------------------------
-- Metrics. Follow-ups created in [since, until); detractor answers given in [since, until) for
-- the retention part, judged with the churn definition (as nps_churn): a customer paid again
-- after an answer when a succeeded payment event of theirs occurred in (responded_at,
-- responded_at + after]; answers with responded_at + after > now() are not judged. "Followed
-- up": the answer's follow-up reached contacted (or resolved). Counts only: the analyst role
-- may run it.
CREATE FUNCTION @extschema@.follow_up_metrics(since timestamptz DEFAULT '-infinity',
                                              until timestamptz DEFAULT 'infinity',
                                              after interval DEFAULT '45 days')
RETURNS TABLE (follow_ups bigint, open bigint, overdue bigint, resolved bigint, wont_fix bigint,
               median_time_to_close interval, closed_within_sla float8,
               detractors_judged bigint,
               followed_up bigint, followed_up_paid_again bigint, followed_up_retention float8,
               not_followed_up bigint, not_followed_up_paid_again bigint, not_followed_up_retention float8,
               retention_difference float8, p_value float8)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'  -- responded_at + after in UTC (45 days are 45 x 24 hours), whatever the session
AS $fn$
BEGIN
  IF since IS NULL OR until IS NULL OR after IS NULL THEN
    RAISE EXCEPTION 'follow_up_metrics: % must not be NULL',
      CASE WHEN since IS NULL THEN 'since' WHEN until IS NULL THEN 'until' ELSE 'after' END
      USING ERRCODE = '22004';
  END IF;
  IF since > until THEN
    RAISE EXCEPTION 'follow_up_metrics: since % is after until %', since, until USING ERRCODE = '22023';
  END IF;
  IF NOT @extschema@.interval_within(after, '1 day', '10 years') THEN
    RAISE EXCEPTION 'follow_up_metrics: after % is out of range [1 day, 10 years] or has a negative part', after
      USING ERRCODE = '22023';
  END IF;
  RETURN QUERY
  WITH f AS (
    SELECT count(*) AS follow_ups,
           count(*) FILTER (WHERE x.active) AS open,
           count(*) FILTER (WHERE x.active AND x.due_at < now()) AS overdue,
           count(*) FILTER (WHERE x.status = 'resolved') AS resolved,
           count(*) FILTER (WHERE x.status = 'wont_fix') AS wont_fix,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY x.closed_at - x.created_at)
             FILTER (WHERE x.closed_at IS NOT NULL) AS median_time_to_close,
           avg((x.closed_at <= x.due_at)::integer::float8) FILTER (WHERE x.closed_at IS NOT NULL) AS within_sla
      FROM @extschema@.follow_up x
     WHERE x.created_at >= since AND x.created_at < until
  ), judged AS (
    SELECT EXISTS (SELECT 1 FROM @extschema@.follow_up u
                    WHERE u.response_id = r.id AND u.contacted_at IS NOT NULL) AS followed,
           EXISTS (SELECT 1 FROM @extschema@.payment_event e
                    WHERE e.customer_id = r.customer_id AND e.kind = 'succeeded'
                      AND e.occurred_at > r.responded_at AND e.occurred_at <= r.responded_at + after) AS paid
      FROM @extschema@.response r
     WHERE r.responded_at >= since AND r.responded_at < until
       AND r.responded_at + after <= now()
       AND r.category = 'detractor' AND r.customer_id IS NOT NULL
  ), g AS (
    SELECT count(*) AS judged,
           count(*) FILTER (WHERE j.followed) AS fu,
           count(*) FILTER (WHERE j.followed AND j.paid) AS fu_paid,
           count(*) FILTER (WHERE NOT j.followed) AS nf,
           count(*) FILTER (WHERE NOT j.followed AND j.paid) AS nf_paid,
           -- paid again = score 10, not = score 0: NPS = 100 (2p - 1), so nps_compare's z-test of
           -- the NPS difference is the (unpooled) z-test of the difference of the two shares
           @extschema@.nps_agg(CASE WHEN j.paid THEN 10 ELSE 0 END) FILTER (WHERE j.followed) AS a_fu,
           @extschema@.nps_agg(CASE WHEN j.paid THEN 10 ELSE 0 END) FILTER (WHERE NOT j.followed) AS a_nf
      FROM judged j
  )
  SELECT f.follow_ups, f.open, f.overdue, f.resolved, f.wont_fix, f.median_time_to_close, f.within_sla,
         g.judged, g.fu, g.fu_paid, g.fu_paid::float8 / nullif(g.fu, 0),
         g.nf, g.nf_paid, g.nf_paid::float8 / nullif(g.nf, 0),
         g.fu_paid::float8 / nullif(g.fu, 0) - g.nf_paid::float8 / nullif(g.nf, 0),
         (SELECT c.p_value FROM @extschema@.nps_compare(g.a_fu, g.a_nf) c)
    FROM f, g;
END
$fn$;
COMMENT ON FUNCTION @extschema@.follow_up_metrics(timestamptz, timestamptz, interval) IS
  'Follow-ups created in [since, until): open, overdue, resolved, wont_fix, median time to close, share closed '
  'within the SLA; detractor answers of the period: share that paid again (succeeded payment within after) '
  'when followed up vs not, difference and two-sided p-value. Counts only';
-- Nothing for PUBLIC (the new objects only).
REVOKE ALL ON FUNCTION @extschema@.follow_up_needed(@extschema@.nps_category, text, @extschema@.nps_category[], boolean),
  @extschema@.follow_up_answer_insert(), @extschema@.follow_up_answer_update(),
  @extschema@.follow_up_answer_delete(), @extschema@.follow_up_answer_truncate(),
  @extschema@.claim_follow_ups(text, integer, interval), @extschema@.follow_up_check_note(text, text),
  @extschema@.update_follow_up(bigint, text, text, text), @extschema@.resolve_follow_up(bigint, text, text, text),
  @extschema@.release_follow_up(bigint, text),
  @extschema@.follow_up_metrics(timestamptz, timestamptz, interval) FROM PUBLIC;
REVOKE ALL ON TABLE @extschema@.follow_up_policy, @extschema@.follow_up, @extschema@.follow_up_note FROM PUBLIC;
REVOKE ALL ON SEQUENCE @extschema@.follow_up_id_seq, @extschema@.follow_up_note_id_seq FROM PUBLIC;
-- <<< follow-ups (closing the loop)

-- ---------------------------------------------------------------------------------------------
-- Churn, retention, drivers and comment themes (72_churn.sql, 73_drivers.sql,
-- 74_comment_terms.sql); nps_alerts gains q_value (Benjamini-Hochberg)
-- ---------------------------------------------------------------------------------------------
-- Churn and retention by NPS category: do detractors stop paying?
--
-- Definition (docs/churn.md): a customer churned after an answer when no `succeeded` payment
-- event of that customer has occurred_at in (responded_at, responded_at + after]. An answer with
-- responded_at + after > as_of (default now()) is not judged: its window is still open.
-- Each customer enters once, at their first answer in [since, until) (and at or before as_of),
-- with that answer's category.
--
-- Both functions read customer ids and payment events, which the analyst role may not read:
-- SECURITY DEFINER with a pinned search_path, returning aggregates only (counts, rates, sums).

-- The standard normal distribution (C, src/statistics.cpp).
CREATE FUNCTION @extschema@.normal_cdf(x float8) RETURNS float8
  AS 'MODULE_PATHNAME', 'nps_normal_cdf' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.normal_quantile(p float8) RETURNS float8
  AS 'MODULE_PATHNAME', 'nps_normal_quantile' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.normal_cdf(float8) IS 'P(Z <= x) for a standard normal Z';
COMMENT ON FUNCTION @extschema@.normal_quantile(float8) IS 'The x with P(Z <= x) = p for a standard normal Z (0 < p < 1)';


-- Wilson score interval of a proportion (Wilson 1927): centre (p + z^2/2n) / (1 + z^2/n),
-- half-width z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n). NULL for 0 trials or a NULL argument.
CREATE FUNCTION @extschema@.wilson_ci(successes bigint, trials bigint, confidence float8 DEFAULT 0.95,
                                      OUT low float8, OUT high float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  -- (clamped against rounding; greatest/least ignore NULLs, hence the CASE)
  SELECT CASE WHEN s.n > 0 AND s.z IS NOT NULL
              THEN greatest(0, (s.p + s.z * s.z / (2 * s.n) - s.z * sqrt(s.p * (1 - s.p) / s.n + s.z * s.z / (4 * s.n * s.n)))
                               / (1 + s.z * s.z / s.n)) END,
         CASE WHEN s.n > 0 AND s.z IS NOT NULL
              THEN least(1, (s.p + s.z * s.z / (2 * s.n) + s.z * sqrt(s.p * (1 - s.p) / s.n + s.z * s.z / (4 * s.n * s.n)))
                            / (1 + s.z * s.z / s.n)) END
  FROM (SELECT successes::float8 / nullif(trials, 0) AS p, nullif(trials, 0)::float8 AS n,
               @extschema@.normal_quantile(1 - (1 - confidence) / 2) AS z
         WHERE @extschema@.check_argument(
                 (successes IS NULL OR trials IS NULL OR (successes >= 0 AND successes <= trials))
                 AND (confidence IS NULL OR (confidence > 0 AND confidence < 1)),
                 '22023', format('wilson_ci: successes %s and trials %s must satisfy 0 <= successes <= trials, confidence %s must be between 0 and 1 exclusive',
                                 successes, trials, confidence))) s
$$;
COMMENT ON FUNCTION @extschema@.wilson_ci(bigint, bigint, float8) IS
  'Wilson score interval of the proportion successes/trials (NULL for 0 trials)';

-- Two-sided pooled z-test of two proportions x1/n1 and x2/n2: z = (p1 - p2) / sqrt(p(1-p)(1/n1 + 1/n2))
-- with p = (x1 + x2) / (n1 + n2). NULL z and p-value when a sample is empty or p is 0 or 1.
CREATE FUNCTION @extschema@.proportion_compare(x1 bigint, n1 bigint, x2 bigint, n2 bigint,
                                               OUT difference float8, OUT z float8, OUT p_value float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT s.d, s.d / s.se, 2 * @extschema@.normal_cdf(-abs(s.d / s.se))
  FROM (SELECT x1::float8 / nullif(n1, 0) - x2::float8 / nullif(n2, 0) AS d,
               nullif(sqrt(((x1 + x2)::float8 / nullif(n1 + n2, 0)) * (1 - (x1 + x2)::float8 / nullif(n1 + n2, 0))
                           * (1.0::float8 / nullif(n1, 0) + 1.0::float8 / nullif(n2, 0))), 0) AS se
         WHERE @extschema@.check_argument(
                 x1 IS NULL OR n1 IS NULL OR x2 IS NULL OR n2 IS NULL
                 OR (x1 >= 0 AND x1 <= n1 AND x2 >= 0 AND x2 <= n2),
                 '22023', format('proportion_compare: counts %s/%s and %s/%s must satisfy 0 <= x <= n', x1, n1, x2, n2))) s
$$;
COMMENT ON FUNCTION @extschema@.proportion_compare(bigint, bigint, bigint, bigint) IS
  'Two-sided pooled z-test of two independent proportions: difference x1/n1 - x2/n2, z, p-value';

-- Argument checks shared by nps_churn and nps_retention (no column reference: a one-time filter
-- that raises before any row is read).
CREATE FUNCTION @extschema@.churn_arguments_ok(fn text, after interval, since timestamptz, until timestamptz,
                                               as_of timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT @extschema@.check_argument(after IS NOT NULL AND since IS NOT NULL AND until IS NOT NULL AND as_of IS NOT NULL,
           '22004', format('%s: after, since, until and as_of must not be NULL', fn))
     AND @extschema@.check_argument(@extschema@.interval_within(after, '1 second', '10 years'),
           '22023', format('%s: after %s must be a positive interval of at most 10 years with no negative part', fn, after))
     AND @extschema@.check_argument(since <= until,
           '22023', format('%s: since %s must not be after until %s', fn, since, until))
     AND @extschema@.check_argument(isfinite(as_of),
           '22023', format('%s: as_of %s must be finite', fn, as_of))
$$;
COMMENT ON FUNCTION @extschema@.churn_arguments_ok(text, interval, timestamptz, timestamptz, timestamptz) IS
  'Validates the arguments nps_churn and nps_retention share (22004 / 22023 naming the value)';

CREATE FUNCTION @extschema@.nps_churn(after interval DEFAULT '45 days',
                                      since timestamptz DEFAULT '-infinity',
                                      until timestamptz DEFAULT 'infinity',
                                      as_of timestamptz DEFAULT now())
RETURNS TABLE (category @extschema@.nps_category, customers bigint, churned bigint, churn_rate float8,
               ci_low float8, ci_high float8, lift float8, p_value float8, churned_revenue jsonb)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  WITH judged AS MATERIALIZED (
    -- each customer's first answer in the range, judged once its window has closed: one probe
    -- of payment_event_customer_idx (customer_id, occurred_at) per customer
    SELECT c.customer_id, c.responded_at, c.category,
           NOT EXISTS (SELECT 1 FROM @extschema@.payment_event p
                        WHERE p.customer_id = c.customer_id
                          AND p.occurred_at > c.responded_at AND p.occurred_at <= c.responded_at + after
                          AND p.kind = 'succeeded') AS churned
      FROM (SELECT DISTINCT ON (r.customer_id) r.customer_id, r.responded_at, r.category
              FROM @extschema@.response r
             WHERE r.customer_id IS NOT NULL
               AND r.responded_at >= since AND r.responded_at < until AND r.responded_at <= as_of
               AND @extschema@.churn_arguments_ok('nps_churn', after, since, until, as_of)
             ORDER BY r.customer_id, r.responded_at, r.id) c
     WHERE c.responded_at + after <= as_of
  ), cat AS (
    SELECT j.category, count(*) AS n, count(*) FILTER (WHERE j.churned) AS x
      FROM judged j GROUP BY 1
  ), rev AS (
    -- what the churned customers paid in the period of the same length up to their answer
    SELECT y.category, jsonb_object_agg(y.currency, y.amount) AS revenue
      FROM (SELECT j.category, coalesce(p.currency, '') AS currency, sum(p.amount) AS amount
              FROM judged j
              JOIN @extschema@.payment_event p
                ON p.customer_id = j.customer_id
               AND p.occurred_at > j.responded_at - after AND p.occurred_at <= j.responded_at
               AND p.kind = 'succeeded'
             WHERE j.churned AND p.amount IS NOT NULL
             GROUP BY 1, 2) y
     GROUP BY 1
  )
  SELECT v.category, coalesce(c.n, 0), coalesce(c.x, 0),
         c.x::float8 / nullif(c.n, 0),
         w.low, w.high,
         (c.x::float8 / nullif(c.n, 0)) / nullif(pr.x::float8 / nullif(pr.n, 0), 0),
         CASE WHEN v.category <> 'promoter' THEN t.p_value END,
         CASE WHEN c.n > 0 THEN coalesce(rv.revenue, '{}') END
    FROM unnest(enum_range(NULL::@extschema@.nps_category)) AS v(category)
    LEFT JOIN cat c ON c.category = v.category
    LEFT JOIN cat pr ON pr.category = 'promoter'
    LEFT JOIN rev rv ON rv.category = v.category
    LEFT JOIN LATERAL @extschema@.wilson_ci(c.x, c.n) w ON c.n > 0
    LEFT JOIN LATERAL @extschema@.proportion_compare(c.x, c.n, pr.x, pr.n) t ON c.n > 0 AND pr.n > 0
   WHERE @extschema@.churn_arguments_ok('nps_churn', after, since, until, as_of)
   ORDER BY v.category
$$;
COMMENT ON FUNCTION @extschema@.nps_churn(interval, timestamptz, timestamptz, timestamptz) IS
  'Per NPS category: customers (first answer in [since, until), judged when at least `after` before as_of), churned (no succeeded payment '
  'within `after` of the answer), churn rate with a 95% Wilson CI, lift vs promoters with a two-proportion p-value, and what the churned '
  'paid in the `after` up to their answer, by currency';

-- Kaplan-Meier retention. Each customer of the cohort is followed from their answer along their
-- succeeded payments while consecutive ones (the answer counting as the first) are at most
-- `after` apart; the customer churned at the last payment of that chain (time 0: no payment
-- within `after` of the answer, the churn of nps_churn) once `after` has passed since it by
-- as_of, and is censored there while that window is still open. Times are in seconds (a month
-- of an interval counts as 30 days); follow-up stops at horizon (censored there).
-- Ties: customers censored at a time t are not at risk of the events at t (they are censored
-- because that event cannot be seen yet), so a customer without any payment yet whose window is
-- open (censored at 0) is not judged, as in nps_churn.
-- S(t) = prod over event times t_i <= t of (1 - d_i / n_i); Greenwood variance
-- S^2 * sum d_i / (n_i (n_i - d_i)); the 95% band is log-log (Kalbfleisch-Prentice):
-- S^exp(+-z se), se = sqrt(sum d_i / (n_i (n_i - d_i))) / |ln S|, which stays inside [0, 1].
CREATE FUNCTION @extschema@.nps_retention(bucket interval DEFAULT '30 days',
                                          horizon interval DEFAULT '360 days',
                                          since timestamptz DEFAULT '-infinity',
                                          until timestamptz DEFAULT 'infinity',
                                          after interval DEFAULT '45 days',
                                          as_of timestamptz DEFAULT now())
RETURNS TABLE (category @extschema@.nps_category, bucket_start interval, bucket_end interval,
               at_risk bigint, churned bigint, censored bigint,
               survival float8, stderr float8, ci_low float8, ci_high float8)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  WITH par AS MATERIALIZED (
    SELECT extract(epoch FROM bucket)::float8 AS bs, extract(epoch FROM horizon)::float8 AS hs,
           -- nullif: PostgreSQL 18 folds this division when planning, before the checks below run
           ceil(extract(epoch FROM horizon)::float8 / nullif(extract(epoch FROM bucket)::float8, 0))::integer AS nb,
           @extschema@.normal_quantile(0.975) AS z
     WHERE @extschema@.churn_arguments_ok('nps_retention', after, since, until, as_of)
       AND @extschema@.check_argument(bucket IS NOT NULL AND horizon IS NOT NULL,
             '22004', 'nps_retention: bucket and horizon must not be NULL')
       AND @extschema@.check_argument(@extschema@.interval_within(bucket, '1 second', '100 years')
                                      AND @extschema@.interval_within(horizon, '1 second', '100 years'),
             '22023', format('nps_retention: bucket %s and horizon %s must be positive intervals of at most 100 years with no negative part',
                             bucket, horizon))
       AND @extschema@.check_argument(NOT (@extschema@.interval_within(bucket, '1 second', '100 years')
                                           AND @extschema@.interval_within(horizon, '1 second', '100 years'))
                                      OR extract(epoch FROM horizon) <= 10000 * extract(epoch FROM bucket),
             '54000', format('nps_retention: buckets of %s up to %s exceed the limit of 10000 buckets', bucket, horizon))
  ), cohort AS MATERIALIZED (
    SELECT DISTINCT ON (r.customer_id) r.customer_id, r.responded_at, r.category
      FROM @extschema@.response r
     WHERE r.customer_id IS NOT NULL
       AND r.responded_at >= since AND r.responded_at < until AND r.responded_at <= as_of
     ORDER BY r.customer_id, r.responded_at, r.id
  ), chain AS (
    -- each customer's succeeded payments after the answer (up to horizon + after), in one pass
    -- with the previous one (the answer for the first)
    SELECT p.customer_id, p.occurred_at AS t,
           lag(p.occurred_at, 1, c.responded_at) OVER (PARTITION BY p.customer_id ORDER BY p.occurred_at) AS prev
      FROM cohort c
      CROSS JOIN par
      JOIN @extschema@.payment_event p
        ON p.customer_id = c.customer_id
       AND p.occurred_at > c.responded_at
       AND p.occurred_at <= least(as_of, c.responded_at + par.hs * interval '1 second' + after)
       AND p.kind = 'succeeded'
  ), ends AS (
    -- a gap longer than `after` breaks the chain: its last payment is where it ended
    SELECT w.customer_id, min(w.prev) FILTER (WHERE w.t > w.prev + after) AS brk, max(w.t) AS last_t
      FROM chain w GROUP BY 1
  ), subj AS MATERIALIZED (
    SELECT c.category,
           least(extract(epoch FROM l.last_paid - c.responded_at)::float8, par.hs) AS t,
           l.ended AND extract(epoch FROM l.last_paid - c.responded_at)::float8 < par.hs AS event
      FROM par
     CROSS JOIN cohort c
      LEFT JOIN ends e ON e.customer_id = c.customer_id
     CROSS JOIN LATERAL (
       SELECT coalesce(e.brk, e.last_t, c.responded_at) AS last_paid,
              e.brk IS NOT NULL OR coalesce(e.last_t, c.responded_at) + after <= as_of AS ended) l
  ), times AS (
    SELECT s.category, s.t, count(*) FILTER (WHERE s.event) AS d, count(*) FILTER (WHERE NOT s.event) AS c
      FROM subj s GROUP BY 1, 2
  ), risk AS (
    -- at risk at t: events at or after t and censorings after t
    SELECT x.category, x.t, x.d,
           (sum(x.d + x.c) OVER (PARTITION BY x.category ORDER BY x.t DESC ROWS UNBOUNDED PRECEDING) - x.c)::bigint AS n
      FROM times x
  ), km AS (
    SELECT k.category, k.t,
           sum(CASE WHEN k.d < k.n THEN ln(1 - k.d::float8 / k.n) ELSE 0 END) OVER w AS log_s,
           bool_or(k.d = k.n) OVER w AS zero,
           sum(CASE WHEN k.d < k.n THEN k.d::float8 / (k.n::float8 * (k.n - k.d)) ELSE 0 END) OVER w AS gw
      FROM risk k
     WHERE k.d > 0
    WINDOW w AS (PARTITION BY k.category ORDER BY k.t ROWS UNBOUNDED PRECEDING)
  ), grid AS (
    SELECT v.category, g.k
      FROM par, unnest(enum_range(NULL::@extschema@.nps_category)) AS v(category),
           generate_series(0, par.nb - 1) AS g(k)
  ), ev AS (
    SELECT s.category, floor(s.t / par.bs)::integer AS k, count(*) AS n
      FROM subj s, par WHERE s.event GROUP BY 1, 2
  ), ce AS (
    -- censored in (start, end]: those censored at a bucket's start were not at risk in it
    SELECT s.category, least(ceil(s.t / par.bs)::integer - 1, par.nb - 1) AS k, count(*) AS n
      FROM subj s, par WHERE NOT s.event AND s.t > 0 GROUP BY 1, 2
  ), kb AS (
    SELECT m.category, floor(m.t / par.bs)::integer AS k,
           min(m.log_s) AS log_s, bool_or(m.zero) AS zero, max(m.gw) AS gw
      FROM km m, par GROUP BY 1, 2
  ), tot AS (
    SELECT s.category, count(*) FILTER (WHERE s.event OR s.t > 0) AS n FROM subj s GROUP BY 1
  ), carried AS (
    SELECT g.category, g.k, coalesce(ev.n, 0) AS churned, coalesce(ce.n, 0) AS censored,
           coalesce(tot.n, 0) AS cohort,
           coalesce(tot.n, 0)
             - coalesce(sum(coalesce(ev.n, 0) + coalesce(ce.n, 0))
                          OVER (PARTITION BY g.category ORDER BY g.k ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS at_risk,
           -- survival at a bucket's end: the last event time before it (log S only falls)
           coalesce(min(kb.log_s) OVER wk, 0) AS log_s,
           coalesce(bool_or(kb.zero) OVER wk, false) AS zero,
           coalesce(max(kb.gw) OVER wk, 0) AS gw
      FROM grid g
      LEFT JOIN ev ON ev.category = g.category AND ev.k = g.k
      LEFT JOIN ce ON ce.category = g.category AND ce.k = g.k
      LEFT JOIN kb ON kb.category = g.category AND kb.k = g.k
      LEFT JOIN tot ON tot.category = g.category
    WINDOW wk AS (PARTITION BY g.category ORDER BY g.k ROWS UNBOUNDED PRECEDING)
  ), est AS (
    SELECT c.*, CASE WHEN c.zero THEN 0 ELSE exp(c.log_s) END AS s
      FROM carried c
  )
  SELECT e.category, bucket * e.k, least(bucket * (e.k + 1), horizon),
         e.at_risk::bigint, e.churned::bigint, e.censored::bigint,
         CASE WHEN e.cohort > 0 THEN e.s END,
         CASE WHEN e.cohort > 0 THEN e.s * sqrt(e.gw) END,
         CASE WHEN e.cohort = 0 THEN NULL
              WHEN e.s <= 0 OR e.s >= 1 OR e.gw = 0 THEN e.s
              ELSE e.s ^ exp(par.z * sqrt(e.gw) / abs(ln(e.s))) END,
         CASE WHEN e.cohort = 0 THEN NULL
              WHEN e.s <= 0 OR e.s >= 1 OR e.gw = 0 THEN e.s
              ELSE e.s ^ exp(-par.z * sqrt(e.gw) / abs(ln(e.s))) END
    FROM est e, par
   ORDER BY e.category, e.k
$$;
COMMENT ON FUNCTION @extschema@.nps_retention(interval, interval, timestamptz, timestamptz, interval, timestamptz) IS
  'Kaplan-Meier retention by NPS category from each customer''s first answer in [since, until): per bucket up to horizon, customers at risk, '
  'churned (their payments stopped: a gap longer than `after`), censored (window still open, or horizon), survival at the bucket''s end '
  'with Greenwood standard error and a 95% log-log band';

-- Drivers: every value of every attribute tested against the rest of the answers, with the
-- Benjamini-Hochberg false discovery rate correction across all the tests of the call.
-- Inlinable SQL like nps_by (70_analysis.sql): it reads the rollups through answers_in().

CREATE FUNCTION @extschema@.nps_drivers(attributes text[],
                                        since timestamptz DEFAULT '-infinity',
                                        until timestamptz DEFAULT 'infinity',
                                        min_responses integer DEFAULT 30)
RETURNS TABLE (attribute text, value text, responses bigint, nps float8, ci_low float8, ci_high float8,
               difference float8, p_value float8, q_value float8, impact float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  WITH x AS MATERIALIZED (
    SELECT x.attrs, x.a
    FROM @extschema@.answers_in(since, until, nps_drivers.attributes) x
    WHERE @extschema@.check_argument(nps_drivers.attributes IS NOT NULL AND since IS NOT NULL AND until IS NOT NULL
                                     AND min_responses IS NOT NULL
                                     AND array_position(nps_drivers.attributes, NULL) IS NULL,
            '22004', 'nps_drivers: attributes (and each of its elements), since, until and min_responses must not be NULL')
      AND @extschema@.check_argument(cardinality(nps_drivers.attributes) > 0,
            '22023', 'nps_drivers: attributes must name at least one attribute')
      AND @extschema@.check_argument(min_responses IS NULL OR min_responses >= 1,
            '22023', format('nps_drivers: min_responses %s must be at least 1', min_responses))
  ), seg AS (
    SELECT k.key AS attribute, x.attrs ->> k.key AS value, @extschema@.rollup(x.a) AS a
    FROM x CROSS JOIN (SELECT DISTINCT u.key FROM unnest(nps_drivers.attributes) AS u(key)) k
    GROUP BY 1, 2
    HAVING @extschema@.responses(@extschema@.rollup(x.a)) > 0
  ), total AS (
    SELECT @extschema@.score_histogram(@extschema@.rollup(x.a)) AS h FROM x
  ), tested AS (
    SELECT seg.attribute, seg.value, seg.a, k.big,
           CASE WHEN k.big AND k.rest_big THEN d.difference END AS difference,
           CASE WHEN k.big AND k.rest_big THEN d.p_value END AS p_value
    FROM seg CROSS JOIN total
    CROSS JOIN LATERAL (SELECT @extschema@.npsagg_from_histogram(ARRAY(
             SELECT t - s FROM unnest(total.h, @extschema@.score_histogram(seg.a)) AS u(t, s))) AS rest) o
    CROSS JOIN LATERAL (SELECT @extschema@.responses(seg.a) >= min_responses AS big,
                               @extschema@.responses(o.rest) >= min_responses AS rest_big) k
    LEFT JOIN LATERAL @extschema@.nps_compare(seg.a, o.rest) d ON true
  ), ranked AS (
    SELECT t.*,
           row_number() OVER (ORDER BY t.p_value NULLS LAST, t.attribute, t.value NULLS LAST) AS rk,
           count(t.p_value) OVER () AS m
    FROM tested t
  ), adjusted AS (
    -- Benjamini-Hochberg: q_(i) = min over j >= i of p_(j) m / j (ascending p-values), at most 1
    SELECT r.*,
           CASE WHEN r.p_value IS NOT NULL
                THEN least(1, min(r.p_value * r.m / r.rk) OVER (ORDER BY r.rk DESC ROWS UNBOUNDED PRECEDING)) END AS q
    FROM ranked r
  )
  SELECT a.attribute, a.value, @extschema@.responses(a.a),
         CASE WHEN a.big THEN @extschema@.nps(a.a) END,
         CASE WHEN a.big THEN ci.low END,
         CASE WHEN a.big THEN ci.high END,
         a.difference, a.p_value, a.q,
         @extschema@.responses(a.a) * a.difference
  FROM adjusted a
  LEFT JOIN LATERAL @extschema@.nps_ci(a.a) ci ON true
  ORDER BY abs(@extschema@.responses(a.a) * a.difference) DESC NULLS LAST, 1, 2 NULLS LAST
$$;
COMMENT ON FUNCTION @extschema@.nps_drivers(text[], timestamptz, timestamptz, integer) IS
  'Every value of every listed payment attribute for answers in [since, until): responses, NPS with CI, difference vs all other answers, '
  'p-value, Benjamini-Hochberg q-value across all the tests of the call, impact = responses x difference; largest |impact| first';

-- Comment themes with PostgreSQL full-text search: which terms are over-represented in the
-- comments of one NPS category compared with the others (docs/churn.md#comment_terms).
--
-- Terms are the lexemes of to_tsvector(config, comment): stemmed, stop words removed, in any
-- language PostgreSQL has a text search configuration for. Each answer counts once per term (as
-- ts_stat's ndoc; unnest(tsvector) gives the same counts without building a query string).
-- The score is the log-odds ratio with an informative Dirichlet prior of Monroe, Colaresi and
-- Quinn (2008), "Fightin' Words", eq. 16 and 20: with y the term's answers and n all term
-- mentions in the category (i) and in the other categories (j), and the prior alpha_w = the
-- term's mentions in both, alpha_0 = all mentions in both,
--   delta = ln((y_i + a_w) / (n_i + a_0 - y_i - a_w)) - ln((y_j + a_w) / (n_j + a_0 - y_j - a_w))
--   z     = delta / sqrt(1 / (y_i + a_w) + 1 / (y_j + a_w))
-- so a term rises because it is over-represented there, not because it is common.
--
-- Privacy: the function reads comments (SECURITY DEFINER) and returns only terms that at least
-- min_answers (>= 3, default 5) answers of the category in the range contain: a word that one
-- person wrote (a name, an e-mail address, an order number) never comes out.

-- The commented answers by time: comment_terms reads the comments of its range and nothing else.
CREATE INDEX response_commented_idx ON @extschema@.response (responded_at) WHERE comment IS NOT NULL;

CREATE FUNCTION @extschema@.comment_terms(category @extschema@.nps_category,
                                          since timestamptz DEFAULT '-infinity',
                                          until timestamptz DEFAULT 'infinity',
                                          config regconfig DEFAULT 'english',
                                          min_answers integer DEFAULT 5)
RETURNS TABLE (term text, answers bigint, share float8, other_answers bigint, other_share float8,
               log_odds float8, z float8)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  WITH docs AS MATERIALIZED (
    SELECT r.category = comment_terms.category AS inside,
           pg_catalog.to_tsvector(config, r.comment) AS v
      FROM @extschema@.response r
     WHERE r.comment IS NOT NULL
       AND r.responded_at >= since AND r.responded_at < until
       AND @extschema@.check_argument(comment_terms.category IS NOT NULL AND since IS NOT NULL AND until IS NOT NULL
                                      AND config IS NOT NULL AND min_answers IS NOT NULL,
             '22004', 'comment_terms: category, since, until, config and min_answers must not be NULL')
       AND @extschema@.check_argument(since IS NULL OR until IS NULL OR since <= until,
             '22023', format('comment_terms: since %s must not be after until %s', since, until))
       AND @extschema@.check_argument(min_answers IS NULL OR min_answers >= 3,
             '22023', format('comment_terms: min_answers %s must be at least 3 (fewer could single out one answer)', min_answers))
  ), n AS (
    SELECT count(*) FILTER (WHERE d.inside) AS docs_i, count(*) FILTER (WHERE NOT d.inside) AS docs_j FROM docs d
  ), tf AS (
    SELECT l.lexeme AS term, count(*) FILTER (WHERE d.inside) AS y_i, count(*) FILTER (WHERE NOT d.inside) AS y_j
      FROM docs d CROSS JOIN LATERAL unnest(d.v) AS l
     GROUP BY 1
  ), tot AS (
    SELECT sum(tf.y_i)::float8 AS n_i, sum(tf.y_j)::float8 AS n_j FROM tf
  ), scored AS (
    SELECT tf.term, tf.y_i, tf.y_j, (tf.y_i + tf.y_j)::float8 AS a_w, tot.n_i + tot.n_j AS a_0, tot.n_i, tot.n_j
      FROM tf, tot
     WHERE tf.y_i >= min_answers
  )
  SELECT s.term, s.y_i, s.y_i::float8 / nullif(n.docs_i, 0), s.y_j, s.y_j::float8 / nullif(n.docs_j, 0),
         ln((s.y_i + s.a_w) / nullif(s.n_i + s.a_0 - s.y_i - s.a_w, 0)) - ln((s.y_j + s.a_w) / nullif(s.n_j + s.a_0 - s.y_j - s.a_w, 0)),
         (ln((s.y_i + s.a_w) / nullif(s.n_i + s.a_0 - s.y_i - s.a_w, 0)) - ln((s.y_j + s.a_w) / nullif(s.n_j + s.a_0 - s.y_j - s.a_w, 0)))
           / sqrt(1 / (s.y_i + s.a_w) + 1 / (s.y_j + s.a_w))
    FROM scored s, n
   ORDER BY 7 DESC, 1
$$;
COMMENT ON FUNCTION @extschema@.comment_terms(@extschema@.nps_category, timestamptz, timestamptz, regconfig, integer) IS
  'Full-text-search terms of the comments of one NPS category in [since, until) that at least min_answers (>= 3) of its answers contain: '
  'answers and share there and in the other categories, log-odds ratio with an informative Dirichlet prior and its z-score; most over-represented first';

REVOKE ALL ON FUNCTION @extschema@.normal_cdf(float8), @extschema@.normal_quantile(float8),
  @extschema@.wilson_ci(bigint, bigint, float8), @extschema@.proportion_compare(bigint, bigint, bigint, bigint),
  @extschema@.churn_arguments_ok(text, interval, timestamptz, timestamptz, timestamptz),
  @extschema@.nps_churn(interval, timestamptz, timestamptz, timestamptz),
  @extschema@.nps_retention(interval, interval, timestamptz, timestamptz, interval, timestamptz),
  @extschema@.nps_drivers(text[], timestamptz, timestamptz, integer),
  @extschema@.comment_terms(@extschema@.nps_category, timestamptz, timestamptz, regconfig, integer) FROM PUBLIC;

-- nps_alerts returns one more column (q_value): a new return type needs DROP and CREATE. The
-- privileges users granted on it (the analyst's) are granted again, and the extension's initial
-- privileges stay those of a fresh install (so pg_dump keeps dumping the users' grants). A view
-- of your own over nps_alerts makes the DROP fail: drop it before the update, create it after.
DO $do$
DECLARE
  old_acl pg_catalog.aclitem[];
  fresh_acl pg_catalog.aclitem[];
  new_fn pg_catalog.oid;
  g record;
BEGIN
  SELECT p.proacl INTO old_acl FROM pg_catalog.pg_proc p
   WHERE p.oid = '@extschema@.nps_alerts(interval, float8, text[], integer, timestamptz)'::pg_catalog.regprocedure;
  DROP FUNCTION @extschema@.nps_alerts(interval, float8, text[], integer, timestamptz);
  EXECUTE $create$
CREATE FUNCTION @extschema@.nps_alerts("window" interval, drop_threshold float8,
                                       attributes text[] DEFAULT '{plan,method}',
                                       min_responses integer DEFAULT 30,
                                       as_of timestamptz DEFAULT now())
RETURNS TABLE (dimension text, value text, previous_responses bigint, previous_nps float8,
               current_responses bigint, current_nps float8, nps_drop float8, p_value float8,
               q_value float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  WITH w AS (
    SELECT true AS is_current, x.source, x.attrs, x.a
    FROM @extschema@.answers_in(as_of - "window", as_of, nps_alerts.attributes) x
    UNION ALL
    SELECT false, x.source, x.attrs, x.a
    FROM @extschema@.answers_in((as_of - "window") - "window", as_of - "window", nps_alerts.attributes) x
  ), checked AS (
    SELECT w.* FROM w
    WHERE @extschema@.check_argument("window" IS NOT NULL AND drop_threshold IS NOT NULL
                                     AND nps_alerts.attributes IS NOT NULL AND min_responses IS NOT NULL
                                     AND as_of IS NOT NULL,
            '22004', 'nps_alerts: no argument may be NULL')
      AND @extschema@.check_argument("window" IS NULL
                                     OR @extschema@.interval_within("window", '1 microsecond', '100 years'), '22023',
            format('nps_alerts: window %s must be a positive interval of at most 100 years with no negative part', "window"))
      AND @extschema@.check_argument(drop_threshold IS NULL
                                     OR (drop_threshold >= 0 AND drop_threshold < 'infinity'), '22023',
            format('nps_alerts: drop_threshold %s must be a finite number >= 0', drop_threshold))
      AND @extschema@.check_argument(min_responses IS NULL OR min_responses >= 1, '22023',
            format('nps_alerts: min_responses %s must be at least 1', min_responses))
      AND @extschema@.check_argument(as_of IS NULL OR isfinite(as_of), '22023',
            format('nps_alerts: as_of %s must be finite', as_of))
  ), seg AS (
    SELECT d.dimension, d.value,
           @extschema@.rollup(w.a) FILTER (WHERE w.is_current) AS cur,
           @extschema@.rollup(w.a) FILTER (WHERE NOT w.is_current) AS prev
    FROM checked w
    CROSS JOIN LATERAL (
      SELECT 'overall'::text, NULL::text
      UNION ALL SELECT 'source', w.source WHERE w.source IS NOT NULL
      UNION ALL SELECT k.key, w.attrs ->> k.key
                FROM unnest(nps_alerts.attributes) AS k(key) WHERE w.attrs ->> k.key IS NOT NULL
    ) AS d(dimension, value)
    GROUP BY 1, 2
  ), tested AS (
    -- every segment with enough answers in both windows is tested, whatever its drop: the
    -- Benjamini-Hochberg correction counts them all (m), not only the ones shown
    SELECT seg.dimension, seg.value, seg.prev, seg.cur, cmp.p_value,
           row_number() OVER (ORDER BY cmp.p_value NULLS LAST, seg.dimension, seg.value) AS rk,
           count(cmp.p_value) OVER () AS m
    FROM seg
    CROSS JOIN LATERAL @extschema@.nps_compare(seg.cur, seg.prev) cmp
    WHERE @extschema@.responses(seg.cur) >= min_responses
      AND @extschema@.responses(seg.prev) >= min_responses
  ), adjusted AS (
    -- q_(i) = min over j >= i of p_(j) m / j (p-values in ascending order), at most 1
    SELECT t.*,
           CASE WHEN t.p_value IS NOT NULL
                THEN least(1, min(t.p_value * t.m / t.rk) OVER (ORDER BY t.rk DESC ROWS UNBOUNDED PRECEDING)) END AS q
    FROM tested t
  )
  SELECT a.dimension, a.value,
         @extschema@.responses(a.prev), @extschema@.nps(a.prev),
         @extschema@.responses(a.cur), @extschema@.nps(a.cur),
         @extschema@.nps(a.prev) - @extschema@.nps(a.cur),
         a.p_value, a.q
  FROM adjusted a
  WHERE @extschema@.nps(a.prev) - @extschema@.nps(a.cur) > drop_threshold
  ORDER BY a.p_value, 7 DESC, 1, 2
$$;
$create$;
  EXECUTE $comment$
COMMENT ON FUNCTION @extschema@.nps_alerts(interval, float8, text[], integer, timestamptz) IS
  'Segments (overall, source, each listed attribute) whose NPS in [as_of - window, as_of) fell by more than drop_threshold points versus the window before, '
  'with p-value and Benjamini-Hochberg q-value across every segment tested';
$comment$;
  REVOKE ALL ON FUNCTION @extschema@.nps_alerts(interval, float8, text[], integer, timestamptz) FROM PUBLIC;
  new_fn := '@extschema@.nps_alerts(interval, float8, text[], integer, timestamptz)'::pg_catalog.regprocedure;
  SELECT p.proacl INTO fresh_acl FROM pg_catalog.pg_proc p WHERE p.oid = new_fn;
  FOR g IN SELECT a.grantee, a.is_grantable
             FROM pg_catalog.aclexplode(old_acl) a JOIN pg_catalog.pg_proc p ON p.oid = new_fn
            WHERE a.grantee <> p.proowner AND a.privilege_type = 'EXECUTE' LOOP
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.nps_alerts(interval, float8, text[], integer, timestamptz) TO %s%s',
              CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::pg_catalog.regrole::pg_catalog.text END,
              CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
  END LOOP;
  -- grants made by an extension script count as the extension's own; these are the users'
  UPDATE pg_catalog.pg_init_privs i SET initprivs = fresh_acl
   WHERE i.objoid = new_fn AND i.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND i.objsubid = 0
     AND i.initprivs IS DISTINCT FROM fresh_acl;
END
$do$;

-- ---------------------------------------------------------------------------------------------
-- Delivery agent: survey_for_token (the answer page's lookup, collector role)
-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.survey_for_token(token text)
RETURNS TABLE (status text, locale text, closed boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
BEGIN
  IF token IS NULL THEN
    RAISE EXCEPTION 'survey_for_token: token must not be NULL' USING ERRCODE = '22004';
  END IF;
  -- closed = record_response would refuse an answer now.
  RETURN QUERY
  SELECT s.status, s.locale,
         s.status IN ('expired', 'cancelled') OR s.expires_at <= pg_catalog.now()
    FROM @extschema@.survey s
   WHERE s.token = survey_for_token.token;
END
$fn$;
COMMENT ON FUNCTION @extschema@.survey_for_token(text) IS
  'The answer page''s lookup: status, locale and whether answers are refused (closed) of the survey '
  'with this token; no row for an unknown token. VOLATILE so that the analyst recipe (non-volatile '
  'functions) does not get it';
REVOKE ALL ON FUNCTION @extschema@.survey_for_token(text) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Send windows, reminders and daily caps per source (sendwin): payment_source and survey columns,
-- send_day, the window functions, claim_surveys / mark_sent / mark_failed / expire_surveys /
-- opt_out applying them, the funnel counts of reminders and caps, send_backlog, send_funnel.
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.time_zone_ok(name text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'nps_time_zone_ok' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.time_zone_ok(text) IS
  'Whether PostgreSQL knows this time zone (an IANA name such as Europe/Berlin, or UTC); never raises';

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

CREATE FUNCTION @extschema@.window_always_open(days integer[], send_from time, send_until time)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT days @> '{1,2,3,4,5,6,7}' AND send_from = '00:00' AND send_until = '24:00' $$;
COMMENT ON FUNCTION @extschema@.window_always_open(integer[], time, time) IS
  'true for the always-open window: every weekday, 00:00 to 24:00';

CREATE FUNCTION @extschema@.send_zone(survey_zone text, source_zone text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE WHEN survey_zone IS NOT NULL AND @extschema@.time_zone_ok(survey_zone) THEN survey_zone
              WHEN source_zone IS NOT NULL AND @extschema@.time_zone_ok(source_zone) THEN source_zone
              ELSE 'UTC' END
$$;
COMMENT ON FUNCTION @extschema@.send_zone(text, text) IS
  'The time zone a send window is read in: the survey''s (recipient''s) if known, else the source''s, else UTC';

CREATE FUNCTION @extschema@.next_local_midnight(t timestamptz, time_zone text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (date_trunc('day', t AT TIME ZONE time_zone) + interval '1 day') AT TIME ZONE time_zone $$;
COMMENT ON FUNCTION @extschema@.next_local_midnight(timestamptz, text) IS
  'The start of the day after t''s day in time_zone';

-- The recipient columns (shared with the messages step, which adds the same), then the sending
-- policy of sources and the bookkeeping of surveys. Columns with a default are added without it,
-- filled, then given their default and NOT NULL: a fresh install stores no "missing value" for
-- them, so neither may the update (one pass over survey).
ALTER TABLE @extschema@.payment_source ADD COLUMN IF NOT EXISTS recipient_expr text,
  ADD COLUMN IF NOT EXISTS locale_expr text, ADD COLUMN IF NOT EXISTS time_zone_expr text,
  ADD COLUMN IF NOT EXISTS answer_base_url text;
ALTER TABLE @extschema@.payment_source
  ADD COLUMN time_zone text CHECK (@extschema@.time_zone_ok(time_zone)),
  ADD COLUMN send_days integer[]
             CHECK (cardinality(send_days) BETWEEN 1 AND 7 AND send_days <@ '{1,2,3,4,5,6,7}'
                    AND array_ndims(send_days) = 1),
  ADD COLUMN send_from time,
  ADD COLUMN send_until time
             CONSTRAINT payment_source_send_window_check CHECK (send_from < send_until),
  ADD COLUMN reminders integer CHECK (reminders BETWEEN 0 AND 10),
  ADD COLUMN reminder_after interval,  -- its CHECK refuses NULL: added once filled
  ADD COLUMN daily_cap integer CHECK (daily_cap >= 0);
UPDATE @extschema@.payment_source
   SET send_days = '{1,2,3,4,5,6,7}', send_from = '00:00', send_until = '24:00', reminders = 0,
       reminder_after = '3 days';
ALTER TABLE @extschema@.payment_source
  ALTER COLUMN send_days SET DEFAULT '{1,2,3,4,5,6,7}', ALTER COLUMN send_days SET NOT NULL,
  ALTER COLUMN send_from SET DEFAULT '00:00', ALTER COLUMN send_from SET NOT NULL,
  ALTER COLUMN send_until SET DEFAULT '24:00', ALTER COLUMN send_until SET NOT NULL,
  ALTER COLUMN reminders SET DEFAULT 0, ALTER COLUMN reminders SET NOT NULL,
  ALTER COLUMN reminder_after SET DEFAULT '3 days', ALTER COLUMN reminder_after SET NOT NULL,
  ADD CONSTRAINT payment_source_reminder_after_check
      CHECK (@extschema@.interval_within(reminder_after, '1 minute', '1 year'));
ALTER TABLE @extschema@.survey ADD COLUMN IF NOT EXISTS recipient text,
  ADD COLUMN IF NOT EXISTS locale text, ADD COLUMN IF NOT EXISTS time_zone text;
ALTER TABLE @extschema@.survey
  ADD COLUMN reminder integer,
  ADD COLUMN reminders_sent integer,
  ADD COLUMN due_at timestamptz,
  ADD COLUMN cap_deferrals integer;
UPDATE @extschema@.survey SET reminder = 0, reminders_sent = 0, cap_deferrals = 0;
ALTER TABLE @extschema@.survey
  ALTER COLUMN reminder SET DEFAULT 0, ALTER COLUMN reminder SET NOT NULL,
  ALTER COLUMN reminders_sent SET DEFAULT 0, ALTER COLUMN reminders_sent SET NOT NULL,
  ALTER COLUMN cap_deferrals SET DEFAULT 0, ALTER COLUMN cap_deferrals SET NOT NULL;
ALTER TABLE @extschema@.survey_funnel_day
  ADD COLUMN reminders bigint,
  ADD COLUMN reminded bigint,
  ADD COLUMN capped bigint;
UPDATE @extschema@.survey_funnel_day SET reminders = 0, reminded = 0, capped = 0;
ALTER TABLE @extschema@.survey_funnel_day
  ALTER COLUMN reminders SET DEFAULT 0, ALTER COLUMN reminders SET NOT NULL,
  ALTER COLUMN reminded SET DEFAULT 0, ALTER COLUMN reminded SET NOT NULL,
  ALTER COLUMN capped SET DEFAULT 0, ALTER COLUMN capped SET NOT NULL;
ALTER TYPE @extschema@.claimed_survey ADD ATTRIBUTE reminder integer;

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
   WHERE s.queued AND s.status = 'pending' AND s.due_at IS NOT NULL
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
     WHERE s.queued AND s.status = 'pending' AND s.source_id = NEW.id AND s.reminder > NEW.reminders;
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

CREATE VIEW @extschema@.send_backlog AS
SELECT p.name AS source, w.state, count(*) AS surveys, min(w.next_send_at) AS next_send_at
  FROM @extschema@.survey s
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
 WHERE s.queued AND s.status IN ('pending', 'sending') AND s.expires_at > now()
 GROUP BY p.name, w.state;
COMMENT ON VIEW @extschema@.send_backlog IS
  'Queued surveys per source and state (due, leased, window, daily_cap, scheduled, reminder) and the earliest next send';

CREATE OR REPLACE FUNCTION @extschema@.claim_surveys(worker text, max integer DEFAULT 100,
                                          lease interval DEFAULT '5 minutes')
RETURNS SETOF @extschema@.claimed_survey
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  lease_end timestamptz;
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
  got integer := 0;         -- surveys leased so far
  asked integer;            -- asked for in this round
  n integer;                -- picked in this round
  rounds integer := 0;
  p_ids bigint[];           -- the round's picked surveys in queue order,
  p_src integer[];          -- their sources,
  p_state text[];           -- and closed / counted / free
  claim_ids bigint[];
  over_ids bigint[];        -- counted ones over their source's cap
  put_off bigint[];         -- closed and over-cap ones
  k integer;
  want integer;
  granted integer;
BEGIN
  -- Not STRICT: a NULL argument is a caller bug and gets 22004, not a silent empty result.
  IF worker IS NULL OR max IS NULL OR lease IS NULL THEN
    RAISE EXCEPTION 'claim_surveys: % must not be NULL',
      CASE WHEN worker IS NULL THEN 'worker' WHEN max IS NULL THEN 'max' ELSE 'lease' END
      USING ERRCODE = '22004';
  END IF;
  IF worker = '' OR length(worker) > 200 THEN
    RAISE EXCEPTION 'claim_surveys: worker name must have 1..200 characters, got %', length(worker)
      USING ERRCODE = '22023';
  END IF;
  IF max <= 0 OR max > 10000 THEN
    RAISE EXCEPTION 'claim_surveys: max % is out of range 1..10000', max USING ERRCODE = '22023';
  END IF;
  IF caller IS NULL THEN  -- the session's login role was dropped meanwhile
    RAISE EXCEPTION 'claim_surveys: the session''s login role no longer exists' USING ERRCODE = '42704';
  END IF;
  -- Checked for what it does: no negative part (35_intervals.sql), then in absolute time from now.
  IF @extschema@.interval_within(lease, '1 microsecond', '1 day') THEN
    lease_end := now() + lease;
  END IF;
  IF lease_end IS NULL OR lease_end <= now() OR lease_end > now() + interval '25 hours' THEN
    RAISE EXCEPTION 'claim_surveys: lease % is out of range (0, 1 day] or has a negative part', lease
      USING ERRCODE = '22023';
  END IF;
  -- Without a send window or a daily cap on any source, a claim is one statement.
  IF NOT EXISTS (SELECT 1 FROM @extschema@.payment_source p
                  WHERE p.daily_cap IS NOT NULL OR NOT @extschema@.window_always_open(p.send_days, p.send_from, p.send_until)) THEN
    RETURN QUERY
    WITH picked AS (
      SELECT s.id
        FROM @extschema@.survey s
       WHERE s.queued  -- survey_queue_idx
         AND s.status IN ('pending', 'sending')
         AND s.send_after <= now()
         AND s.expires_at > now()
         AND (s.status = 'pending'
              OR (s.lease_until <= now()
                  AND s.attempts < (SELECT p.max_attempts FROM @extschema@.payment_source p
                                     WHERE p.id = s.source_id)))
       ORDER BY s.send_after  -- the queue index's order: no sort of the whole backlog
       LIMIT claim_surveys.max
         FOR UPDATE OF s SKIP LOCKED
    ), claimed AS (
      UPDATE @extschema@.survey s
         SET status = 'sending',
             lease_owner = claim_surveys.worker,
             lease_role = caller,
             lease_until = lease_end,
             attempts = s.attempts + 1,
             due_at = NULL
        FROM picked
       WHERE s.id = picked.id
      RETURNING s.id, s.token, s.customer_id, s.channel, s.attempts, s.lease_until, s.expires_at,
                s.source_id, s.event_id, s.send_after, s.reminder
    )
    -- The payment context: one primary-key probe per claimed survey (LIMIT 1 keeps each LATERAL
    -- subquery a nested loop; a plain join let the planner hash the whole payment_event table).
    SELECT c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at,
           p.name, e.kind, e.amount, e.currency, e.occurred_at, e.attributes, c.reminder
      FROM claimed c
      LEFT JOIN LATERAL (SELECT p.name FROM @extschema@.payment_source p
                          WHERE p.id = c.source_id LIMIT 1) p ON true
      LEFT JOIN LATERAL (SELECT e.kind, e.amount, e.currency, e.occurred_at, e.attributes
                           FROM @extschema@.payment_event e WHERE e.id = c.event_id LIMIT 1) e ON true
     ORDER BY c.send_after, c.id;
    RETURN;
  END IF;

  -- Send windows and daily caps (61_send_policy.sql). Each round picks due surveys exactly as
  -- above (FOR UPDATE SKIP LOCKED, queue order) and judges each one: 'closed' (outside its send
  -- window now, in the recipient's time zone), 'counted' (the first claim of a send for a source
  -- with a daily cap: first sends and reminders count, a retry or a re-claim after a lapsed lease
  -- does not) or 'free'. Closed ones move to their window's next opening and over-cap ones to
  -- the next day's (send_after, so they leave the head of the queue and due_at keeps when they
  -- fell due); the rest are leased. A round that put surveys off leaves room for another, so a
  -- claim does not come back empty while due surveys inside their windows wait behind them.
  -- A change of a source's window or cap waits for the claims under way (the advisory lock of
  -- reschedule_surveys, 61_send_policy.sql), so it sees every survey they put off.
  PERFORM pg_catalog.pg_advisory_xact_lock_shared(
            '@extschema@.payment_source'::pg_catalog.regclass::pg_catalog.oid::pg_catalog.int4, x.id)
     FROM (SELECT p.id FROM @extschema@.payment_source p
            WHERE p.daily_cap IS NOT NULL OR NOT @extschema@.window_always_open(p.send_days, p.send_from, p.send_until)
            ORDER BY p.id OFFSET 0) x;  -- in id order
  LOOP
    asked := claim_surveys.max - got;
    SELECT coalesce(array_agg(j.id ORDER BY j.send_after, j.id), '{}'),
           coalesce(array_agg(j.source_id ORDER BY j.send_after, j.id), '{}'),
           coalesce(array_agg(j.state ORDER BY j.send_after, j.id), '{}')
      INTO p_ids, p_src, p_state
      FROM (
        SELECT pk.id, pk.source_id, pk.send_after,
               CASE WHEN p.id IS NOT NULL
                         AND NOT @extschema@.window_always_open(p.send_days, p.send_from, p.send_until)
                         AND NOT (extract(isodow FROM l.t)::integer = ANY (p.send_days)
                                  AND l.t::time >= p.send_from AND l.t::time < p.send_until)
                    THEN 'closed'
                    WHEN p.daily_cap IS NOT NULL AND pk.status = 'pending' AND pk.attempts = 0 THEN 'counted'
                    ELSE 'free' END AS state
          FROM (SELECT s.id, s.source_id, s.send_after, s.status, s.attempts, s.time_zone
                  FROM @extschema@.survey s
                 WHERE s.queued  -- survey_queue_idx
                   AND s.status IN ('pending', 'sending')
                   AND s.send_after <= now()
                   AND s.expires_at > now()
                   AND (s.status = 'pending'
                        OR (s.lease_until <= now()
                            AND s.attempts < (SELECT p.max_attempts FROM @extschema@.payment_source p
                                               WHERE p.id = s.source_id)))
                 ORDER BY s.send_after
                 LIMIT asked
                   FOR UPDATE OF s SKIP LOCKED) pk
          LEFT JOIN @extschema@.payment_source p ON p.id = pk.source_id
          -- local wall-clock time of the recipient (its zone if PostgreSQL knows it, else the source's)
          CROSS JOIN LATERAL (SELECT now() AT TIME ZONE @extschema@.send_zone(pk.time_zone, p.time_zone) AS t) l
      ) j;
    n := cardinality(p_ids);
    EXIT WHEN n = 0;
    IF 'free' = ALL (p_state) THEN
      claim_ids := p_ids;
    ELSE
      over_ids := '{}';
      -- Daily caps: a counter row per source and day of the source's time zone, locked in
      -- source order (no deadlock between claimers of several capped sources) and held to the
      -- end of the transaction, so concurrent claimers never grant more than the cap together.
      FOR k, want IN SELECT u.src, count(*)::integer FROM unnest(p_src, p_state) AS u(src, st)
                      WHERE u.st = 'counted' GROUP BY u.src ORDER BY u.src LOOP
        granted := @extschema@.take_send_quota(k, want);
        IF granted < want THEN
          over_ids := over_ids || ARRAY(SELECT u.id FROM unnest(p_ids, p_src, p_state) WITH ORDINALITY AS u(id, src, st, ord)
                                         WHERE u.st = 'counted' AND u.src = k ORDER BY u.ord OFFSET granted);
        END IF;
      END LOOP;
      put_off := over_ids || ARRAY(SELECT u.id FROM unnest(p_ids, p_state) AS u(id, st) WHERE u.st = 'closed');
      -- Closed ones to their window's next opening, over-cap ones to the next day's.
      UPDATE @extschema@.survey s
         SET status = 'pending', lease_owner = NULL, lease_until = NULL, lease_role = NULL,
             due_at = coalesce(s.due_at, s.send_after),
             cap_deferrals = s.cap_deferrals + CASE WHEN s.id = ANY (over_ids) THEN 1 ELSE 0 END,
             send_after = greatest(now() + interval '1 second',
                                   @extschema@.send_window_next(
                                     CASE WHEN s.id = ANY (over_ids)
                                          THEN @extschema@.next_local_midnight(now(), coalesce(p.time_zone, 'UTC'))
                                          ELSE now() END,
                                     @extschema@.send_zone(s.time_zone, p.time_zone),
                                     p.send_days, p.send_from, p.send_until))
        FROM @extschema@.payment_source p
       WHERE cardinality(put_off) > 0 AND p.id = s.source_id AND s.id = ANY (put_off);
      claim_ids := ARRAY(SELECT u.id FROM unnest(p_ids, p_state) WITH ORDINALITY AS u(id, st, ord)
                          WHERE u.id <> ALL (put_off) ORDER BY u.ord);
    END IF;
    IF cardinality(claim_ids) > 0 THEN
      RETURN QUERY
      WITH claimed AS (
        UPDATE @extschema@.survey s
           SET status = 'sending',
               lease_owner = claim_surveys.worker,
               lease_role = caller,
               lease_until = lease_end,
               attempts = s.attempts + 1,
               due_at = NULL
         WHERE s.id = ANY (claim_ids)
        RETURNING s.id, s.token, s.customer_id, s.channel, s.attempts, s.lease_until, s.expires_at,
                  s.source_id, s.event_id, s.send_after, s.reminder
      )
      SELECT c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at,
             p.name, e.kind, e.amount, e.currency, e.occurred_at, e.attributes, c.reminder
        FROM claimed c
        LEFT JOIN LATERAL (SELECT p.name FROM @extschema@.payment_source p
                            WHERE p.id = c.source_id LIMIT 1) p ON true
        LEFT JOIN LATERAL (SELECT e.kind, e.amount, e.currency, e.occurred_at, e.attributes
                             FROM @extschema@.payment_event e WHERE e.id = c.event_id LIMIT 1) e ON true
       ORDER BY c.send_after, c.id;
      GET DIAGNOSTICS k = ROW_COUNT;
      got := got + k;
    END IF;
    rounds := rounds + 1;
    -- done: enough, the queue had no more due surveys, or enough rounds for one call
    EXIT WHEN got >= claim_surveys.max OR n < asked OR rounds >= 20;
  END LOOP;
END
$fn$;
COMMENT ON FUNCTION @extschema@.claim_surveys(text, integer, interval) IS
  'Leases up to max due surveys (pending, or sending with a lapsed lease) to worker and the '
  'session''s login role for lease; FOR UPDATE SKIP LOCKED: concurrent workers never get the '
  'same survey while a lease holds. Only surveys inside their source''s send window (recipient''s '
  'time zone) and within its daily cap; the others are put off to the next opening';

CREATE OR REPLACE FUNCTION @extschema@.mark_sent(survey_id bigint, worker text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
  -- any source with reminders: only then is the next reminder looked up per survey
  reminding boolean := EXISTS (SELECT 1 FROM @extschema@.payment_source p WHERE p.reminders > 0);
BEGIN
  IF survey_id IS NULL OR worker IS NULL THEN
    RAISE EXCEPTION 'mark_sent: % must not be NULL',
      CASE WHEN survey_id IS NULL THEN 'survey_id' ELSE 'worker' END USING ERRCODE = '22004';
  END IF;
  -- An answer can arrive before the sender reports (in-app surveys): keep 'responded'.
  UPDATE @extschema@.survey x
     SET (status, sent_at, reminder, reminders_sent, attempts, send_after) =
         (SELECT CASE WHEN x.status = 'responded' THEN 'responded' WHEN r.at IS NOT NULL THEN 'pending' ELSE 'sent' END,
                 CASE WHEN x.reminder > 0 THEN coalesce(x.sent_at, now()) ELSE now() END,  -- sent_at: the first send
                 x.reminder + CASE WHEN r.at IS NOT NULL THEN 1 ELSE 0 END,
                 x.reminders_sent + CASE WHEN x.reminder > 0 AND x.status <> 'responded' THEN 1 ELSE 0 END,
                 CASE WHEN r.at IS NOT NULL THEN 0 ELSE x.attempts END,
                 coalesce(r.at, x.send_after)
            FROM (SELECT CASE WHEN reminding AND x.status <> 'responded'
                              THEN @extschema@.next_reminder_at(x.source_id, x.reminder, x.expires_at) END AS at) r),
         lease_owner = NULL, lease_until = NULL, lease_role = NULL
   WHERE x.id = mark_sent.survey_id
     AND x.lease_owner = mark_sent.worker
     AND (x.lease_role IS NULL OR x.lease_role = caller)
     AND x.status IN ('sending', 'responded');
  IF NOT FOUND THEN
    RAISE EXCEPTION 'mark_sent: survey % is not leased by worker "%"', survey_id, worker
      USING ERRCODE = '55000',
            HINT = 'Report only surveys this worker claimed with claim_surveys(), once each.';
  END IF;
END
$fn$;
COMMENT ON FUNCTION @extschema@.mark_sent(bigint, text) IS
  'Reports a claimed survey as sent; only the worker and role holding its lease (55000 otherwise, '
  'the same for every survey the caller does not hold). With reminders left it is queued again '
  '(pending, reminder + 1, due reminder_after from now)';

CREATE OR REPLACE FUNCTION @extschema@.mark_failed(survey_id bigint, worker text, error text,
                                        retry_after interval DEFAULT '15 minutes')
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  new_status text;
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
BEGIN
  IF survey_id IS NULL OR worker IS NULL OR error IS NULL OR retry_after IS NULL THEN
    RAISE EXCEPTION 'mark_failed: % must not be NULL',
      CASE WHEN survey_id IS NULL THEN 'survey_id' WHEN worker IS NULL THEN 'worker'
           WHEN error IS NULL THEN 'error' ELSE 'retry_after' END USING ERRCODE = '22004';
  END IF;
  IF NOT @extschema@.interval_within(retry_after, '0', '1 year') THEN
    RAISE EXCEPTION 'mark_failed: retry_after % is out of range [0, 1 year] or has a negative part', retry_after
      USING ERRCODE = '22023';
  END IF;
  UPDATE @extschema@.survey x
     SET status = CASE WHEN x.status = 'responded' THEN 'responded'
                       WHEN x.attempts >= coalesce((SELECT p.max_attempts FROM @extschema@.payment_source p
                                                     WHERE p.id = x.source_id), 5)
                         THEN CASE WHEN x.reminder > 0 THEN 'sent' ELSE 'failed' END  -- a reminder is given up
                       ELSE 'pending' END,
         send_after = CASE WHEN x.status = 'responded'
                             OR x.attempts >= coalesce((SELECT p.max_attempts FROM @extschema@.payment_source p
                                                         WHERE p.id = x.source_id), 5)
                           THEN x.send_after ELSE now() + retry_after END,
         last_error = left(error, 2000),
         lease_owner = NULL, lease_until = NULL, lease_role = NULL
   WHERE x.id = mark_failed.survey_id
     AND x.lease_owner = mark_failed.worker
     AND (x.lease_role IS NULL OR x.lease_role = caller)
     AND x.status IN ('sending', 'responded')
  RETURNING x.status INTO new_status;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'mark_failed: survey % is not leased by worker "%"', survey_id, worker
      USING ERRCODE = '55000',
            HINT = 'Report only surveys this worker claimed with claim_surveys(), once each.';
  END IF;
  RETURN new_status;
END
$fn$;
COMMENT ON FUNCTION @extschema@.mark_failed(bigint, text, text, interval) IS
  'Reports a failed delivery: back to pending after retry_after, or failed once attempts reach '
  'the source''s max_attempts (default 5; a reminder is given up instead and the survey stays '
  'sent); returns the new status';

CREATE OR REPLACE FUNCTION @extschema@.mark_sent(survey_ids bigint[], worker text)
RETURNS TABLE (survey_id bigint, ok boolean, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
  reminding boolean := EXISTS (SELECT 1 FROM @extschema@.payment_source p WHERE p.reminders > 0);
BEGIN
  IF survey_ids IS NULL OR worker IS NULL THEN
    RAISE EXCEPTION 'mark_sent: % must not be NULL',
      CASE WHEN survey_ids IS NULL THEN 'survey_ids' ELSE 'worker' END USING ERRCODE = '22004';
  END IF;
  IF cardinality(survey_ids) > 10000 THEN
    RAISE EXCEPTION 'mark_sent: % survey ids in one call, at most 10000', cardinality(survey_ids)
      USING ERRCODE = '54000';
  END IF;
  IF array_position(survey_ids, NULL) IS NOT NULL THEN
    RAISE EXCEPTION 'mark_sent: survey_ids must not contain NULL' USING ERRCODE = '22004';
  END IF;
  RETURN QUERY
  WITH done AS (
    UPDATE @extschema@.survey x
       SET (status, sent_at, reminder, reminders_sent, attempts, send_after) =
           (SELECT CASE WHEN x.status = 'responded' THEN 'responded' WHEN r.at IS NOT NULL THEN 'pending' ELSE 'sent' END,
                   CASE WHEN x.reminder > 0 THEN coalesce(x.sent_at, now()) ELSE now() END,  -- sent_at: the first send
                   x.reminder + CASE WHEN r.at IS NOT NULL THEN 1 ELSE 0 END,
                   x.reminders_sent + CASE WHEN x.reminder > 0 AND x.status <> 'responded' THEN 1 ELSE 0 END,
                   CASE WHEN r.at IS NOT NULL THEN 0 ELSE x.attempts END,
                   coalesce(r.at, x.send_after)
              FROM (SELECT CASE WHEN reminding AND x.status <> 'responded'
                                THEN @extschema@.next_reminder_at(x.source_id, x.reminder, x.expires_at) END AS at) r),
           lease_owner = NULL, lease_until = NULL, lease_role = NULL
     WHERE x.id = ANY (mark_sent.survey_ids)
       AND x.lease_owner = mark_sent.worker
       AND (x.lease_role IS NULL OR x.lease_role = caller)
       AND x.status IN ('sending', 'responded')
    RETURNING x.id, x.status
  )
  SELECT u.id, d.id IS NOT NULL, d.status
    FROM (SELECT DISTINCT ON (v.id) v.id, v.ord
            FROM unnest(mark_sent.survey_ids) WITH ORDINALITY AS v(id, ord)
           ORDER BY v.id, v.ord) u
    LEFT JOIN done d ON d.id = u.id
   ORDER BY u.ord;
END
$fn$;
COMMENT ON FUNCTION @extschema@.mark_sent(bigint[], text) IS
  'Reports a batch of claimed surveys as sent in one statement; one row per distinct id: ok and '
  'the new status, or ok = false for a survey the worker and role do not hold';

CREATE OR REPLACE FUNCTION @extschema@.mark_failed(survey_ids bigint[], worker text, error text,
                                        retry_after interval DEFAULT '15 minutes')
RETURNS TABLE (survey_id bigint, ok boolean, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
BEGIN
  IF survey_ids IS NULL OR worker IS NULL OR error IS NULL OR retry_after IS NULL THEN
    RAISE EXCEPTION 'mark_failed: % must not be NULL',
      CASE WHEN survey_ids IS NULL THEN 'survey_ids' WHEN worker IS NULL THEN 'worker'
           WHEN error IS NULL THEN 'error' ELSE 'retry_after' END USING ERRCODE = '22004';
  END IF;
  IF cardinality(survey_ids) > 10000 THEN
    RAISE EXCEPTION 'mark_failed: % survey ids in one call, at most 10000', cardinality(survey_ids)
      USING ERRCODE = '54000';
  END IF;
  IF array_position(survey_ids, NULL) IS NOT NULL THEN
    RAISE EXCEPTION 'mark_failed: survey_ids must not contain NULL' USING ERRCODE = '22004';
  END IF;
  IF NOT @extschema@.interval_within(retry_after, '0', '1 year') THEN
    RAISE EXCEPTION 'mark_failed: retry_after % is out of range [0, 1 year] or has a negative part', retry_after
      USING ERRCODE = '22023';
  END IF;
  RETURN QUERY
  WITH done AS (
    UPDATE @extschema@.survey x
       SET status = CASE WHEN x.status = 'responded' THEN 'responded'
                         WHEN x.attempts >= coalesce((SELECT p.max_attempts FROM @extschema@.payment_source p
                                                       WHERE p.id = x.source_id), 5)
                         THEN CASE WHEN x.reminder > 0 THEN 'sent' ELSE 'failed' END  -- a reminder is given up
                         ELSE 'pending' END,
           send_after = CASE WHEN x.status = 'responded'
                               OR x.attempts >= coalesce((SELECT p.max_attempts FROM @extschema@.payment_source p
                                                           WHERE p.id = x.source_id), 5)
                             THEN x.send_after ELSE now() + mark_failed.retry_after END,
           last_error = left(mark_failed.error, 2000),
           lease_owner = NULL, lease_until = NULL, lease_role = NULL
     WHERE x.id = ANY (mark_failed.survey_ids)
       AND x.lease_owner = mark_failed.worker
       AND (x.lease_role IS NULL OR x.lease_role = caller)
       AND x.status IN ('sending', 'responded')
    RETURNING x.id, x.status
  )
  SELECT u.id, d.id IS NOT NULL, d.status
    FROM (SELECT DISTINCT ON (v.id) v.id, v.ord
            FROM unnest(mark_failed.survey_ids) WITH ORDINALITY AS v(id, ord)
           ORDER BY v.id, v.ord) u
    LEFT JOIN done d ON d.id = u.id
   ORDER BY u.ord;
END
$fn$;
COMMENT ON FUNCTION @extschema@.mark_failed(bigint[], text, text, interval) IS
  'Reports a failed delivery for a batch of claimed surveys (one error text for all) in one '
  'statement; one row per distinct id: ok and the new status, or ok = false when not held';

CREATE OR REPLACE FUNCTION @extschema@.expire_surveys()
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  expired integer;
  exhausted integer;
BEGIN
  -- 'sent' too: an unanswered survey expires (sent_at still tells it was delivered).
  UPDATE @extschema@.survey s
     SET status = 'expired', lease_owner = NULL, lease_until = NULL, lease_role = NULL
   WHERE s.live AND s.status IN ('pending', 'sending', 'sent') AND s.expires_at <= now();  -- survey_expiry_idx
  GET DIAGNOSTICS expired = ROW_COUNT;
  -- Leases that ran out max_attempts times (a sender that crashes on this survey every time)
  -- are never claimed again: close them as failed.
  -- A reminder is given up instead: the survey was sent before and stays sent.
  UPDATE @extschema@.survey s
     SET status = CASE WHEN s.reminder > 0 THEN 'sent' ELSE 'failed' END,
         lease_owner = NULL, lease_until = NULL, lease_role = NULL,
         last_error = coalesce(s.last_error, 'lease ran out ' || s.attempts || ' times')
    FROM @extschema@.payment_source p
   WHERE s.queued AND s.status = 'sending' AND s.lease_until <= now()
     AND p.id = s.source_id AND s.attempts >= p.max_attempts;
  GET DIAGNOSTICS exhausted = ROW_COUNT;
  RETURN expired + exhausted;
END
$fn$;
COMMENT ON FUNCTION @extschema@.expire_surveys() IS
  'Marks overdue pending/sending/sent surveys expired (and lapsed leases past max_attempts failed, '
  'or sent again for a reminder); '
  'returns how many surveys it closed. Schedule it (pg_cron or cron).';

CREATE OR REPLACE FUNCTION @extschema@.survey_funnel_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  INSERT INTO @extschema@.survey_funnel_day AS f (day, outcome, sent, shard, surveys, reminders, reminded, capped)
  SELECT @extschema@.utc_day(n.created_at), @extschema@.funnel_outcome(n.status),
         n.sent_at IS NOT NULL OR n.status = 'responded', pg_backend_pid() % 8, count(*),
         sum(n.reminders_sent), count(*) FILTER (WHERE n.reminders_sent > 0), count(*) FILTER (WHERE n.cap_deferrals > 0)
    FROM nps_new n GROUP BY 1, 2, 3
  ON CONFLICT (day, outcome, sent, shard) DO UPDATE
     SET surveys = f.surveys + excluded.surveys, reminders = f.reminders + excluded.reminders,
         reminded = f.reminded + excluded.reminded, capped = f.capped + excluded.capped;
  RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.survey_funnel_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  INSERT INTO @extschema@.survey_funnel_day AS f (day, outcome, sent, shard, surveys, reminders, reminded, capped)
  SELECT @extschema@.utc_day(o.created_at), @extschema@.funnel_outcome(o.status),
         o.sent_at IS NOT NULL OR o.status = 'responded', pg_backend_pid() % 8, -count(*),
         -sum(o.reminders_sent), -count(*) FILTER (WHERE o.reminders_sent > 0), -count(*) FILTER (WHERE o.cap_deferrals > 0)
    FROM nps_old o GROUP BY 1, 2, 3
  ON CONFLICT (day, outcome, sent, shard) DO UPDATE
     SET surveys = f.surveys + excluded.surveys, reminders = f.reminders + excluded.reminders,
         reminded = f.reminded + excluded.reminded, capped = f.capped + excluded.capped;
  RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.survey_funnel_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  -- One statement per UPDATE statement (a batch mark_sent moves 100 surveys in one upsert); keys
  -- whose net change is zero (a claim) write nothing.
  INSERT INTO @extschema@.survey_funnel_day AS f (day, outcome, sent, shard, surveys, reminders, reminded, capped)
  SELECT k.day, k.outcome, k.sent, pg_backend_pid() % 8, sum(k.d), sum(k.d * k.rem),
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

CREATE OR REPLACE FUNCTION @extschema@.rebuild_rollups(from_day date DEFAULT '-infinity', to_day date DEFAULT 'infinity')
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
  INSERT INTO @extschema@.rollup_segment (day, source_id, dims, failed_30d, agg)
  SELECT @extschema@.utc_day(r.responded_at), coalesce(r.payment_source_id, 0),
         coalesce(r.payment_dimensions, '{}'), coalesce(r.failed_payment_30d, false),
         @extschema@.nps_agg(r.score)
    FROM @extschema@.response r WHERE r.responded_at >= lo AND r.responded_at < hi
   GROUP BY 1, 2, 3, 4;
  GET DIAGNOSTICS n = ROW_COUNT;
  DELETE FROM @extschema@.rollup_days g WHERE g.day >= from_day AND g.day < to_day;
  INSERT INTO @extschema@.rollup_days (day, days_since, agg)
  SELECT @extschema@.utc_day(r.responded_at), r.days_since_payment, @extschema@.nps_agg(r.score)
    FROM @extschema@.response r
   WHERE r.responded_at >= lo AND r.responded_at < hi AND r.days_since_payment IS NOT NULL
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
  'counts) for UTC days in [from_day, to_day) from the answers and surveys; blocks new answers '
  'meanwhile; returns the number of day x segment rows written';

CREATE OR REPLACE FUNCTION @extschema@.opt_out(customer text) RETURNS boolean
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

CREATE FUNCTION @extschema@.send_funnel(since timestamptz)
RETURNS TABLE (created bigint, sent bigint, reminders bigint, reminded bigint,
               responded bigint, responded_after_reminder bigint, capped bigint)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  WITH c AS (
    -- counts kept per UTC creation day for the whole days, the surveys themselves before
    SELECT f.outcome, f.sent, f.surveys, f.reminders, f.reminded, f.capped
    FROM @extschema@.survey_funnel_day f
    WHERE f.day >= @extschema@.utc_day(@extschema@.utc_ceil(since))
    UNION ALL
    SELECT @extschema@.funnel_outcome(s.status), s.sent_at IS NOT NULL OR s.status = 'responded', count(*),
           sum(s.reminders_sent), count(*) FILTER (WHERE s.reminders_sent > 0), count(*) FILTER (WHERE s.cap_deferrals > 0)
    FROM @extschema@.survey s
    WHERE s.created_at >= since AND s.created_at < @extschema@.utc_ceil(since)
    GROUP BY 1, 2
  )
  SELECT coalesce(sum(c.surveys), 0)::bigint,
         coalesce(sum(c.surveys) FILTER (WHERE c.sent), 0)::bigint,
         coalesce(sum(c.reminders), 0)::bigint,
         coalesce(sum(c.reminded), 0)::bigint,
         coalesce(sum(c.surveys) FILTER (WHERE c.outcome = 'responded'), 0)::bigint,
         coalesce(sum(c.reminded) FILTER (WHERE c.outcome = 'responded'), 0)::bigint,
         coalesce(sum(c.capped), 0)::bigint
  FROM c
  WHERE @extschema@.check_argument(since IS NOT NULL, '22004', 'send_funnel: since must not be NULL')
$$;
COMMENT ON FUNCTION @extschema@.send_funnel(timestamptz) IS
  'Surveys created since a time: how many were sent, reminders sent, surveys reminded, answered, '
  'answered after a reminder, and put off by a daily cap';

REVOKE ALL ON FUNCTION @extschema@.time_zone_ok(text), @extschema@.check_time_zone(text),
  @extschema@.send_window_next(timestamptz, text, integer[], time, time),
  @extschema@.window_always_open(integer[], time, time), @extschema@.send_zone(text, text),
  @extschema@.next_local_midnight(timestamptz, text), @extschema@.take_send_quota(integer, integer),
  @extschema@.next_reminder_at(integer, integer, timestamptz), @extschema@.reschedule_surveys(text),
  @extschema@.payment_source_send_policy_changed(), @extschema@.send_funnel(timestamptz) FROM PUBLIC;
REVOKE ALL ON TABLE @extschema@.send_day, @extschema@.send_backlog FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Analysis at dashboard speed, continued: survey_funnel's median time to answer from a rollup
-- (each answer stores its survey's times: answered_after, funnel_at; rollup_answer_delay counts
-- them by day and delay bucket); a first answer is a plain INSERT (record_response no longer
-- fires the UPDATE triggers for it); revenue_at_risk reads payments from the customer index alone.
-- The existing answers get their times, and the rollup is filled, here.
-- ---------------------------------------------------------------------------------------------
ALTER TABLE @extschema@.response
  ADD COLUMN answered_after interval,
  ADD COLUMN funnel_at timestamptz;
CREATE TABLE @extschema@.rollup_answer_delay (
  day      date NOT NULL,            -- UTC day of response.funnel_at
  bucket   integer NOT NULL,         -- delay_bucket(response.answered_after)
  answers  bigint NOT NULL,
  PRIMARY KEY (day, bucket)
);
COMMENT ON TABLE @extschema@.rollup_answer_delay IS
  'Answers to surveys per UTC day of funnel_at and bucket of the time from sending to answer (kept by triggers)';
-- Buckets of the time from sending to answer: bucket b holds [t[b], t[b + 1]) of these
-- thresholds (about 12% wide from 1 second to 40 days, then 60, 90, 180 and 365 days; bucket 0:
-- under a second, or answered before sending). survey_funnel's median finds its bucket from the
-- counts, then reads the answers of that bucket alone (response_answered_after_idx).
CREATE FUNCTION @extschema@.delay_thresholds() RETURNS interval[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT '{1,2,3,4,5,6,7,8,9,11,12,14,16,18,20,23,26,29,33,38,43,48,55,62,70,79,90,102,116,131,148,168,191,216,245,277,314,356,403,457,518,587,665,754,854,968,1097,1243,1408,1596,1808,2049,2322,2631,2981,3378,3828,4337,4915,5569,6311,7151,8103,9182,10405,11790,13360,15139,17154,19438,22026,24959,28283,32048,36316,41151,46630,52839,59874,67846,76880,87116,98716,111860,126754,143631,162755,184425,208981,236807,268337,304066,344552,390428,442413,501320,568070,643708,729416,826537,936589,1061295,1202604,1362729,1544174,1749779,1982759,2246761,2545913,2884898,3269017,5184000,7776000,15552000,31536000}'::interval[] $$;
CREATE FUNCTION @extschema@.delay_bucket(d interval) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT width_bucket(d, @extschema@.delay_thresholds()) $$;
COMMENT ON FUNCTION @extschema@.delay_thresholds() IS
  'Lower bounds of the buckets of rollup_answer_delay (bucket b starts at element b; bucket 0 is below the first)';
COMMENT ON FUNCTION @extschema@.delay_bucket(interval) IS
  'The rollup_answer_delay bucket of a time from sending to answer';
CREATE OR REPLACE FUNCTION @extschema@.response_context_fill() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.context_at IS NOT NULL THEN RETURN NEW; END IF;
  ELSIF NEW.context_at IS NOT NULL
        AND NEW.customer_id IS NOT DISTINCT FROM OLD.customer_id
        AND NEW.responded_at = OLD.responded_at
        AND (NEW.survey_id IS NULL OR NEW.survey_id IS NOT DISTINCT FROM OLD.survey_id) THEN
    -- an answer unlinked from its survey (forget_customer, purge) leaves the funnel's median
    IF NEW.survey_id IS NULL THEN
      NEW.answered_after := NULL; NEW.funnel_at := NULL;
    END IF;
    RETURN NEW;
  END IF;
  IF NEW.customer_id IS NULL THEN
    -- no context; the survey's times (survey_funnel's median) still count
    SELECT NEW.responded_at - s.sent_at, least(s.created_at, NEW.responded_at)
      INTO NEW.answered_after, NEW.funnel_at
      FROM @extschema@.survey s WHERE s.id = NEW.survey_id;
    NEW.survey_event_id := NULL; NEW.payment_event_id := NULL; NEW.payment_source_id := NULL;
    NEW.payment_kind := NULL; NEW.payment_amount := NULL; NEW.payment_currency := NULL;
    NEW.payment_at := NULL; NEW.payment_attributes := NULL; NEW.payment_dimensions := NULL;
    NEW.days_since_payment := NULL; NEW.failed_payment_30d := NULL;
  ELSE
    -- the body of context_of() and the survey's times, inline and in one statement (plpgsql
    -- keeps its plan), straight into the row
    SELECT s.event_id, e.id, e.source_id, e.kind, e.amount, e.currency, e.occurred_at, e.attributes,
           CASE WHEN e.id IS NOT NULL THEN
             coalesce((SELECT jsonb_object_agg(k.key, e.attributes -> k.key)
                         FROM @extschema@.payment_source p, unnest(p.dimensions) AS k(key)
                        WHERE p.id = e.source_id), '{}') END,
           floor(extract(epoch FROM NEW.responded_at - e.occurred_at) / 86400)::integer,
           EXISTS (SELECT 1 FROM @extschema@.payment_event f
                    WHERE f.customer_id = NEW.customer_id AND f.kind = 'failed'
                      AND f.occurred_at > NEW.responded_at - interval '720 hours'
                      AND f.occurred_at <= NEW.responded_at),
           NEW.responded_at - s.sent_at,
           CASE WHEN s.id IS NOT NULL THEN least(s.created_at, NEW.responded_at) END
      INTO NEW.survey_event_id, NEW.payment_event_id, NEW.payment_source_id, NEW.payment_kind,
           NEW.payment_amount, NEW.payment_currency, NEW.payment_at, NEW.payment_attributes,
           NEW.payment_dimensions, NEW.days_since_payment, NEW.failed_payment_30d,
           NEW.answered_after, NEW.funnel_at
      FROM (SELECT) one
      LEFT JOIN @extschema@.survey s ON s.id = NEW.survey_id
      LEFT JOIN LATERAL (
        SELECT e.id, e.source_id, e.kind, e.amount, e.currency, e.occurred_at, e.attributes
          FROM @extschema@.payment_event e
         WHERE e.customer_id = NEW.customer_id AND e.occurred_at <= NEW.responded_at
         ORDER BY e.occurred_at DESC, e.id DESC
         LIMIT 1) e ON true;
    -- (a survey deleted since: the answer keeps the payment event it was sent for)
    IF NEW.survey_event_id IS NULL AND TG_OP = 'UPDATE' THEN
      NEW.survey_event_id := OLD.survey_event_id;
    END IF;
  END IF;
  NEW.context_at := now();
  RETURN NEW;
END
$fn$;
CREATE OR REPLACE FUNCTION @extschema@.refresh_response_context(since timestamptz DEFAULT '-infinity',
                                                     until timestamptz DEFAULT 'infinity',
                                                     customers text[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  n bigint;
BEGIN
  IF since IS NULL OR until IS NULL THEN
    RAISE EXCEPTION 'refresh_response_context: % must not be NULL',
      CASE WHEN since IS NULL THEN 'since' ELSE 'until' END USING ERRCODE = '22004';
  END IF;
  IF since > until THEN
    RAISE EXCEPTION 'refresh_response_context: since % is after until %', since, until USING ERRCODE = '22023';
  END IF;
  -- Only answers whose context differs are rewritten; the rollups follow through the
  -- response triggers (old context out, new one in).
  UPDATE @extschema@.response r
     SET survey_event_id = c.survey_event_id, payment_event_id = c.payment_event_id,
         payment_source_id = c.payment_source_id, payment_kind = c.payment_kind,
         payment_amount = c.payment_amount, payment_currency = c.payment_currency,
         payment_at = c.payment_at, payment_attributes = c.payment_attributes,
         payment_dimensions = c.payment_dimensions, days_since_payment = c.days_since_payment,
         failed_payment_30d = c.failed_payment_30d, answered_after = t.answered_after,
         funnel_at = t.funnel_at, context_at = now()
    FROM @extschema@.response o
   CROSS JOIN LATERAL @extschema@.context_of(o.customer_id, o.survey_id, o.responded_at, o.survey_event_id) c
   CROSS JOIN LATERAL (SELECT o.responded_at - s.sent_at AS answered_after,
                              CASE WHEN s.id IS NOT NULL THEN least(s.created_at, o.responded_at) END AS funnel_at
                         FROM (SELECT) one LEFT JOIN @extschema@.survey s ON s.id = o.survey_id) t
   WHERE r.id = o.id
     AND o.responded_at >= since AND o.responded_at < until
     AND (customers IS NULL OR o.customer_id = ANY (customers))
     AND (o.survey_event_id, o.payment_event_id, o.payment_source_id, o.payment_kind, o.payment_amount,
          o.payment_currency, o.payment_at, o.payment_attributes, o.payment_dimensions,
          o.days_since_payment, o.failed_payment_30d, o.answered_after, o.funnel_at)
         IS DISTINCT FROM
         (c.survey_event_id, c.payment_event_id, c.payment_source_id, c.payment_kind, c.payment_amount,
          c.payment_currency, c.payment_at, c.payment_attributes, c.payment_dimensions,
          c.days_since_payment, c.failed_payment_30d, t.answered_after, t.funnel_at);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END
$fn$;
COMMENT ON FUNCTION @extschema@.refresh_response_context(timestamptz, timestamptz, text[]) IS
  'Recomputes the stored payment context of answers given in [since, until) (only of these customers '
  'when given) from the payment events as they are now, e.g. after older payments were backfilled; '
  'updates the rollups with them; returns how many answers changed';
CREATE OR REPLACE FUNCTION @extschema@.response_rollups_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  -- the common case (record_response, COPY): add, in one statement
  WITH seg AS (
    INSERT INTO @extschema@.rollup_segment AS g (day, source_id, dims, failed_30d, agg)
    SELECT @extschema@.utc_day(n.responded_at), coalesce(n.payment_source_id, 0),
           coalesce(n.payment_dimensions, '{}'), coalesce(n.failed_payment_30d, false),
           @extschema@.nps_agg(n.score)
      FROM nps_new n GROUP BY 1, 2, 3, 4
     ORDER BY 1, 2, 3, 4  -- rows locked in key order: concurrent bulk imports cannot deadlock
    ON CONFLICT (day, source_id, dims, failed_30d)
    DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg)
  ), days AS (
    INSERT INTO @extschema@.rollup_days AS g (day, days_since, agg)
    SELECT @extschema@.utc_day(n.responded_at), n.days_since_payment, @extschema@.nps_agg(n.score)
      FROM nps_new n WHERE n.days_since_payment IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (day, days_since) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg)
  ), delay AS (
    INSERT INTO @extschema@.rollup_answer_delay AS g (day, bucket, answers)
    SELECT @extschema@.utc_day(n.funnel_at), @extschema@.delay_bucket(n.answered_after), count(*)
      FROM nps_new n WHERE n.answered_after IS NOT NULL AND n.funnel_at IS NOT NULL
     GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (day, bucket) DO UPDATE SET answers = g.answers + excluded.answers
  )
  INSERT INTO @extschema@.customer_latest_answer AS l (customer_id, response_id, responded_at, category)
  SELECT DISTINCT ON (n.customer_id) n.customer_id, n.id, n.responded_at, n.category
    FROM nps_new n WHERE n.customer_id IS NOT NULL
   ORDER BY n.customer_id, n.responded_at DESC, n.id DESC
  ON CONFLICT (customer_id) DO UPDATE
     SET response_id = excluded.response_id, responded_at = excluded.responded_at, category = excluded.category
   WHERE (excluded.responded_at, excluded.response_id) > (l.responded_at, l.response_id);
  RETURN NULL;
END
$fn$;
CREATE OR REPLACE FUNCTION @extschema@.response_rollups_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  -- INSERT ... ON CONFLICT DO UPDATE (record_response) fires this for every new answer, with
  -- no row updated: nothing to move
  IF NOT EXISTS (SELECT 1 FROM nps_old) THEN
    RETURN NULL;
  END IF;
    WITH d AS (SELECT n.*, 1 AS sign FROM nps_new n JOIN nps_old o USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)
                UNION ALL
                SELECT o.*, -1 FROM nps_old o JOIN nps_new n USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)), k AS (
      SELECT @extschema@.utc_day(d.responded_at) AS day, coalesce(d.payment_source_id, 0) AS source_id,
             coalesce(d.payment_dimensions, '{}') AS dims, coalesce(d.failed_payment_30d, false) AS failed_30d,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign > 0) AS plus,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign < 0) AS minus
        FROM d GROUP BY 1, 2, 3, 4
    ), upd AS (
      UPDATE @extschema@.rollup_segment g SET agg = @extschema@.npsagg_sub(@extschema@.npsagg_add(g.agg, k.plus), k.minus)
        FROM k
       WHERE g.day = k.day AND g.source_id = k.source_id AND g.dims = k.dims AND g.failed_30d = k.failed_30d
      RETURNING g.day, g.source_id, g.dims, g.failed_30d
    )
    INSERT INTO @extschema@.rollup_segment AS g (day, source_id, dims, failed_30d, agg)
    SELECT k.day, k.source_id, k.dims, k.failed_30d, @extschema@.npsagg_sub(k.plus, k.minus)
      FROM k
     WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.day = k.day AND u.source_id = k.source_id
                                             AND u.dims = k.dims AND u.failed_30d = k.failed_30d)
    ON CONFLICT (day, source_id, dims, failed_30d) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    WITH d AS (SELECT n.*, 1 AS sign FROM nps_new n JOIN nps_old o USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)
                UNION ALL
                SELECT o.*, -1 FROM nps_old o JOIN nps_new n USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)), k AS (
      SELECT @extschema@.utc_day(d.responded_at) AS day, d.days_since_payment AS days_since,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign > 0) AS plus,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign < 0) AS minus
        FROM d WHERE d.days_since_payment IS NOT NULL GROUP BY 1, 2
    ), upd AS (
      UPDATE @extschema@.rollup_days g SET agg = @extschema@.npsagg_sub(@extschema@.npsagg_add(g.agg, k.plus), k.minus)
        FROM k WHERE g.day = k.day AND g.days_since = k.days_since
      RETURNING g.day, g.days_since
    )
    INSERT INTO @extschema@.rollup_days AS g (day, days_since, agg)
    SELECT k.day, k.days_since, @extschema@.npsagg_sub(k.plus, k.minus)
      FROM k WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.day = k.day AND u.days_since = k.days_since)
    ON CONFLICT (day, days_since) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    -- rows left empty go
    DELETE FROM @extschema@.rollup_segment g
     USING (SELECT DISTINCT @extschema@.utc_day(o.responded_at) AS day, coalesce(o.payment_source_id, 0) AS source_id,
                   coalesce(o.payment_dimensions, '{}') AS dims, coalesce(o.failed_payment_30d, false) AS failed_30d
              FROM nps_old o) k
     WHERE g.day = k.day AND g.source_id = k.source_id AND g.dims = k.dims AND g.failed_30d = k.failed_30d
       AND @extschema@.responses(g.agg) = 0;
    DELETE FROM @extschema@.rollup_days g
     USING (SELECT DISTINCT @extschema@.utc_day(o.responded_at) AS day, o.days_since_payment AS days_since
              FROM nps_old o) k
     WHERE g.day = k.day AND g.days_since = k.days_since AND @extschema@.responses(g.agg) = 0;
    -- answers to surveys by day and time to answer: net change per row
    INSERT INTO @extschema@.rollup_answer_delay AS g (day, bucket, answers)
    SELECT k.day, k.bucket, sum(k.d)
      FROM (SELECT @extschema@.utc_day(o.funnel_at) AS day, @extschema@.delay_bucket(o.answered_after) AS bucket, -1 AS d
              FROM nps_old o WHERE o.answered_after IS NOT NULL AND o.funnel_at IS NOT NULL
            UNION ALL
            SELECT @extschema@.utc_day(n.funnel_at), @extschema@.delay_bucket(n.answered_after), 1
              FROM nps_new n WHERE n.answered_after IS NOT NULL AND n.funnel_at IS NOT NULL) k
     GROUP BY k.day, k.bucket
    HAVING sum(k.d) <> 0
     ORDER BY k.day, k.bucket
    ON CONFLICT (day, bucket) DO UPDATE SET answers = g.answers + excluded.answers;
    DELETE FROM @extschema@.rollup_answer_delay g
     USING (SELECT DISTINCT @extschema@.utc_day(o.funnel_at) AS day, @extschema@.delay_bucket(o.answered_after) AS bucket
              FROM nps_old o WHERE o.answered_after IS NOT NULL AND o.funnel_at IS NOT NULL) k
     WHERE g.day = k.day AND g.bucket = k.bucket AND g.answers = 0;
    -- the latest answer of each customer whose answers changed: recomputed from the answers
    -- (a concurrent newer answer is never overwritten by an older one)
    DELETE FROM @extschema@.customer_latest_answer l
     WHERE l.customer_id IN (SELECT o.customer_id FROM nps_old o)
       AND NOT EXISTS (SELECT 1 FROM @extschema@.response r WHERE r.customer_id = l.customer_id);
    INSERT INTO @extschema@.customer_latest_answer AS l (customer_id, response_id, responded_at, category)
    SELECT DISTINCT ON (r.customer_id) r.customer_id, r.id, r.responded_at, r.category
      FROM @extschema@.response r
     WHERE r.customer_id IN (SELECT d.customer_id FROM (SELECT n.*, 1 AS sign FROM nps_new n JOIN nps_old o USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)
                UNION ALL
                SELECT o.*, -1 FROM nps_old o JOIN nps_new n USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)) d)
     ORDER BY r.customer_id, r.responded_at DESC, r.id DESC
    ON CONFLICT (customer_id) DO UPDATE
       SET response_id = excluded.response_id, responded_at = excluded.responded_at, category = excluded.category
     WHERE (excluded.responded_at, excluded.response_id) > (l.responded_at, l.response_id)
        OR l.response_id IN (SELECT o.id FROM nps_old o);
    RETURN NULL;
END
$fn$;
CREATE OR REPLACE FUNCTION @extschema@.response_rollups_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM nps_old) THEN
    RETURN NULL;
  END IF;
    WITH d AS (SELECT o.*, -1 AS sign FROM nps_old o), k AS (
      SELECT @extschema@.utc_day(d.responded_at) AS day, coalesce(d.payment_source_id, 0) AS source_id,
             coalesce(d.payment_dimensions, '{}') AS dims, coalesce(d.failed_payment_30d, false) AS failed_30d,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign > 0) AS plus,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign < 0) AS minus
        FROM d GROUP BY 1, 2, 3, 4
    ), upd AS (
      UPDATE @extschema@.rollup_segment g SET agg = @extschema@.npsagg_sub(@extschema@.npsagg_add(g.agg, k.plus), k.minus)
        FROM k
       WHERE g.day = k.day AND g.source_id = k.source_id AND g.dims = k.dims AND g.failed_30d = k.failed_30d
      RETURNING g.day, g.source_id, g.dims, g.failed_30d
    )
    INSERT INTO @extschema@.rollup_segment AS g (day, source_id, dims, failed_30d, agg)
    SELECT k.day, k.source_id, k.dims, k.failed_30d, @extschema@.npsagg_sub(k.plus, k.minus)
      FROM k
     WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.day = k.day AND u.source_id = k.source_id
                                             AND u.dims = k.dims AND u.failed_30d = k.failed_30d)
    ON CONFLICT (day, source_id, dims, failed_30d) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    WITH d AS (SELECT o.*, -1 AS sign FROM nps_old o), k AS (
      SELECT @extschema@.utc_day(d.responded_at) AS day, d.days_since_payment AS days_since,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign > 0) AS plus,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign < 0) AS minus
        FROM d WHERE d.days_since_payment IS NOT NULL GROUP BY 1, 2
    ), upd AS (
      UPDATE @extschema@.rollup_days g SET agg = @extschema@.npsagg_sub(@extschema@.npsagg_add(g.agg, k.plus), k.minus)
        FROM k WHERE g.day = k.day AND g.days_since = k.days_since
      RETURNING g.day, g.days_since
    )
    INSERT INTO @extschema@.rollup_days AS g (day, days_since, agg)
    SELECT k.day, k.days_since, @extschema@.npsagg_sub(k.plus, k.minus)
      FROM k WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.day = k.day AND u.days_since = k.days_since)
    ON CONFLICT (day, days_since) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    -- rows left empty go
    DELETE FROM @extschema@.rollup_segment g
     USING (SELECT DISTINCT @extschema@.utc_day(o.responded_at) AS day, coalesce(o.payment_source_id, 0) AS source_id,
                   coalesce(o.payment_dimensions, '{}') AS dims, coalesce(o.failed_payment_30d, false) AS failed_30d
              FROM nps_old o) k
     WHERE g.day = k.day AND g.source_id = k.source_id AND g.dims = k.dims AND g.failed_30d = k.failed_30d
       AND @extschema@.responses(g.agg) = 0;
    DELETE FROM @extschema@.rollup_days g
     USING (SELECT DISTINCT @extschema@.utc_day(o.responded_at) AS day, o.days_since_payment AS days_since
              FROM nps_old o) k
     WHERE g.day = k.day AND g.days_since = k.days_since AND @extschema@.responses(g.agg) = 0;
    -- answers to surveys by day and time to answer: net change per row
    INSERT INTO @extschema@.rollup_answer_delay AS g (day, bucket, answers)
    SELECT k.day, k.bucket, sum(k.d)
      FROM (SELECT @extschema@.utc_day(o.funnel_at) AS day, @extschema@.delay_bucket(o.answered_after) AS bucket, -1 AS d
              FROM nps_old o WHERE o.answered_after IS NOT NULL AND o.funnel_at IS NOT NULL) k
     GROUP BY k.day, k.bucket
    HAVING sum(k.d) <> 0
     ORDER BY k.day, k.bucket
    ON CONFLICT (day, bucket) DO UPDATE SET answers = g.answers + excluded.answers;
    DELETE FROM @extschema@.rollup_answer_delay g
     USING (SELECT DISTINCT @extschema@.utc_day(o.funnel_at) AS day, @extschema@.delay_bucket(o.answered_after) AS bucket
              FROM nps_old o WHERE o.answered_after IS NOT NULL AND o.funnel_at IS NOT NULL) k
     WHERE g.day = k.day AND g.bucket = k.bucket AND g.answers = 0;
    -- the latest answer of each customer whose answers changed: recomputed from the answers
    -- (a concurrent newer answer is never overwritten by an older one)
    DELETE FROM @extschema@.customer_latest_answer l
     WHERE l.customer_id IN (SELECT o.customer_id FROM nps_old o)
       AND NOT EXISTS (SELECT 1 FROM @extschema@.response r WHERE r.customer_id = l.customer_id);
    INSERT INTO @extschema@.customer_latest_answer AS l (customer_id, response_id, responded_at, category)
    SELECT DISTINCT ON (r.customer_id) r.customer_id, r.id, r.responded_at, r.category
      FROM @extschema@.response r
     WHERE r.customer_id IN (SELECT d.customer_id FROM (SELECT o.*, -1 AS sign FROM nps_old o) d)
     ORDER BY r.customer_id, r.responded_at DESC, r.id DESC
    ON CONFLICT (customer_id) DO UPDATE
       SET response_id = excluded.response_id, responded_at = excluded.responded_at, category = excluded.category
     WHERE (excluded.responded_at, excluded.response_id) > (l.responded_at, l.response_id)
        OR l.response_id IN (SELECT o.id FROM nps_old o);
    RETURN NULL;
END
$fn$;
CREATE OR REPLACE FUNCTION @extschema@.response_rollups_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  TRUNCATE @extschema@.rollup_segment, @extschema@.rollup_days, @extschema@.customer_latest_answer,
           @extschema@.rollup_answer_delay;
  RETURN NULL;
END
$fn$;
CREATE OR REPLACE FUNCTION @extschema@.rebuild_rollups(from_day date DEFAULT '-infinity', to_day date DEFAULT 'infinity')
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
  INSERT INTO @extschema@.rollup_segment (day, source_id, dims, failed_30d, agg)
  SELECT @extschema@.utc_day(r.responded_at), coalesce(r.payment_source_id, 0),
         coalesce(r.payment_dimensions, '{}'), coalesce(r.failed_payment_30d, false),
         @extschema@.nps_agg(r.score)
    FROM @extschema@.response r WHERE r.responded_at >= lo AND r.responded_at < hi
   GROUP BY 1, 2, 3, 4;
  GET DIAGNOSTICS n = ROW_COUNT;
  DELETE FROM @extschema@.rollup_days g WHERE g.day >= from_day AND g.day < to_day;
  INSERT INTO @extschema@.rollup_days (day, days_since, agg)
  SELECT @extschema@.utc_day(r.responded_at), r.days_since_payment, @extschema@.nps_agg(r.score)
    FROM @extschema@.response r
   WHERE r.responded_at >= lo AND r.responded_at < hi AND r.days_since_payment IS NOT NULL
   GROUP BY 1, 2;
  DELETE FROM @extschema@.rollup_answer_delay g WHERE g.day >= from_day AND g.day < to_day;
  INSERT INTO @extschema@.rollup_answer_delay (day, bucket, answers)
  SELECT @extschema@.utc_day(r.funnel_at), @extschema@.delay_bucket(r.answered_after), count(*)
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
  INSERT INTO @extschema@.survey_funnel_day (day, outcome, sent, shard, surveys)
  SELECT @extschema@.utc_day(s.created_at), @extschema@.funnel_outcome(s.status),
         s.sent_at IS NOT NULL OR s.status = 'responded', 0, count(*)
    FROM @extschema@.survey s WHERE s.created_at >= lo AND s.created_at < hi
   GROUP BY 1, 2, 3;
  RETURN n;
END
$fn$;
COMMENT ON FUNCTION @extschema@.rebuild_rollups(date, date) IS
  'Recomputes the rollups (per-day answer summaries, latest answer per customer, survey funnel '
  'counts, answers by time to answer) for UTC days in [from_day, to_day) from the answers and surveys; blocks new answers '
  'meanwhile; returns the number of day x segment rows written';
CREATE OR REPLACE FUNCTION @extschema@.record_response(token text, score integer, comment text DEFAULT NULL,
                                            responded_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  s @extschema@.survey;
  rid bigint;
BEGIN
  IF token IS NULL OR score IS NULL OR responded_at IS NULL THEN
    RAISE EXCEPTION 'record_response: % must not be NULL',
      CASE WHEN token IS NULL THEN 'token' WHEN score IS NULL THEN 'score' ELSE 'responded_at' END
      USING ERRCODE = '22004';
  END IF;
  IF score < 0 OR score > 10 THEN
    RAISE EXCEPTION 'NPS score % is out of range 0..10', score USING ERRCODE = '22003';
  END IF;
  IF NOT isfinite(responded_at) THEN
    RAISE EXCEPTION 'record_response: responded_at % is not a finite time', responded_at
      USING ERRCODE = '22023';
  END IF;
  -- responded_at comes from the collector's clock: 5 minutes of skew either way are accepted.
  IF responded_at > now() + interval '5 minutes' THEN
    RAISE EXCEPTION 'record_response: responded_at % is in the future (more than 5 minutes after now())', responded_at
      USING ERRCODE = '22023';
  END IF;
  IF length(comment) > 10000 THEN
    RAISE EXCEPTION 'record_response: comment has % characters, at most 10000 are kept', length(comment)
      USING ERRCODE = '22001';
  END IF;
  -- Lock the survey: concurrent answers and expire_surveys() serialise on this row.
  SELECT * INTO s FROM @extschema@.survey x WHERE x.token = record_response.token FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'record_response: no survey has this token' USING ERRCODE = 'P0002';
  END IF;
  IF s.status IN ('expired', 'cancelled') THEN
    RAISE EXCEPTION 'record_response: survey % is %', s.id, s.status USING ERRCODE = '22023';
  END IF;
  -- (historical answers, given before any survey existed, load with COPY into response)
  IF responded_at < s.created_at - interval '5 minutes' THEN
    RAISE EXCEPTION 'record_response: responded_at % is before survey % was created', responded_at, s.id
      USING ERRCODE = '22023', HINT = 'Load historical answers with COPY into nps_billing.response.';
  END IF;
  IF responded_at >= s.expires_at THEN
    RAISE EXCEPTION 'record_response: survey % is expired (it closed at %)', s.id, s.expires_at
      USING ERRCODE = '22023', DETAIL = format('Its status is %s.', s.status);
  END IF;
  UPDATE @extschema@.survey x SET status = 'responded'
   WHERE x.id = s.id AND x.status <> 'responded';
  -- A first answer is a plain insert (only the INSERT triggers run); a second one replaces it.
  -- The survey lock above serialises answers to one survey. Last in the transaction: the rollup
  -- rows its triggers update (shared by concurrent answers of the day) stay locked only until
  -- the commit that follows.
  INSERT INTO @extschema@.response AS r (survey_id, customer_id, score, comment, channel, responded_at)
  VALUES (s.id, s.customer_id, score, comment, s.channel, responded_at)
  ON CONFLICT (survey_id) DO NOTHING
  RETURNING r.id INTO rid;
  IF rid IS NULL THEN
    UPDATE @extschema@.response r
       SET score = record_response.score, comment = record_response.comment,
           responded_at = record_response.responded_at, updated_at = now()
     WHERE r.survey_id = s.id
    RETURNING r.id INTO rid;
    IF rid IS NULL THEN  -- (an answer loaded by another transaction, invisible to this snapshot)
      RAISE EXCEPTION 'record_response: could not serialize access due to a concurrent answer'
        USING ERRCODE = '40001';
    END IF;
  END IF;
  RETURN rid;
END
$fn$;
-- The times of the existing answers to surveys (the response triggers count them by delay).
UPDATE @extschema@.response r
   SET answered_after = r.responded_at - s.sent_at, funnel_at = least(s.created_at, r.responded_at)
  FROM @extschema@.survey s
 WHERE s.id = r.survey_id;
-- survey_funnel's median time to answer, from rollup_answer_delay and one bucket of answers.
--
-- Each answer to a survey stores answered_after (responded_at - survey.sent_at) and funnel_at
-- (least(survey.created_at, responded_at): the answer counts for survey_funnel(since) when
-- funnel_at >= since, i.e. its survey was created and it was given at or after since). The
-- response triggers count them per UTC day of funnel_at and delay bucket; the survey triggers
-- below bring the stored times up to date when a survey answered already is sent (an in-app
-- answer before the sender's report), re-dated or deleted.

-- The median reads the answers' times in order within one bucket.
CREATE INDEX response_answered_after_idx ON @extschema@.response (answered_after, funnel_at)
  WHERE answered_after IS NOT NULL;

CREATE FUNCTION @extschema@.survey_answer_times() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  -- the response triggers move the answer's count (old bucket out, new one in)
  UPDATE @extschema@.response r
     SET answered_after = r.responded_at - NEW.sent_at,
         funnel_at = least(NEW.created_at, r.responded_at)
   WHERE r.survey_id = NEW.id
     AND (r.answered_after, r.funnel_at) IS DISTINCT FROM
         (r.responded_at - NEW.sent_at, least(NEW.created_at, r.responded_at));
  RETURN NULL;
END
$fn$;
-- Only a survey already answered has an answer to update (record_response sets status
-- responded with the answer): a send, a claim or an expiry of an unanswered one calls nothing.
CREATE TRIGGER survey_answer_times AFTER UPDATE OF sent_at, created_at ON @extschema@.survey
  FOR EACH ROW
  WHEN ((OLD.sent_at IS DISTINCT FROM NEW.sent_at OR OLD.created_at IS DISTINCT FROM NEW.created_at)
        AND (OLD.status = 'responded' OR NEW.status = 'responded'))
  EXECUTE FUNCTION @extschema@.survey_answer_times();

CREATE FUNCTION @extschema@.survey_answer_times_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  -- an answer whose survey is gone is no longer in the median (as a join with survey would say)
  UPDATE @extschema@.response r SET answered_after = NULL, funnel_at = NULL
    FROM nps_old o
   WHERE r.survey_id = o.id AND (r.answered_after IS NOT NULL OR r.funnel_at IS NOT NULL);
  RETURN NULL;
END
$fn$;
CREATE TRIGGER survey_answer_times_delete AFTER DELETE ON @extschema@.survey
  REFERENCING OLD TABLE AS nps_old
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.survey_answer_times_delete();
REVOKE ALL ON FUNCTION @extschema@.survey_answer_times(), @extschema@.survey_answer_times_delete() FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.survey_answer_times() IS
  'Trigger: an answered survey sent or re-dated updates its answer''s answered_after and funnel_at';
COMMENT ON FUNCTION @extschema@.survey_answer_times_delete() IS
  'Trigger: answers of deleted surveys leave survey_funnel''s median';

-- percentile_cont(0.5) of answered_after over the answers with funnel_at >= since, exactly as
-- over the answers themselves: the counts per bucket (rollup days, and the answers of the
-- partial UTC day at the start) locate the one or two middle answers; each is read from its
-- bucket's range of response_answered_after_idx; percentile_cont of those gives the value.
CREATE FUNCTION @extschema@.median_time_to_answer(since timestamptz) RETURNS interval
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  WITH part AS (
    -- funnel_at in [since, first UTC midnight at or after since): answered in that time, or
    -- answered later to a survey created in it
    SELECT r.answered_after AS d
      FROM @extschema@.response r
     WHERE r.responded_at >= since AND r.responded_at < @extschema@.utc_ceil(since)
       AND r.answered_after IS NOT NULL
       AND r.funnel_at >= since AND r.funnel_at < @extschema@.utc_ceil(since)
    UNION ALL
    SELECT r.answered_after
      FROM @extschema@.survey s
      JOIN @extschema@.response r ON r.survey_id = s.id
     WHERE s.created_at >= since AND s.created_at < @extschema@.utc_ceil(since)
       AND r.answered_after IS NOT NULL
       AND r.funnel_at >= since AND r.funnel_at < @extschema@.utc_ceil(since)
       AND NOT (r.responded_at >= since AND r.responded_at < @extschema@.utc_ceil(since))
  ), h AS (
    SELECT b.bucket, sum(b.answers)::bigint AS n
      FROM (SELECT g.bucket, g.answers FROM @extschema@.rollup_answer_delay g
             WHERE g.day >= @extschema@.utc_day(@extschema@.utc_ceil(since))
            UNION ALL
            SELECT @extschema@.delay_bucket(p.d), count(*) FROM part p GROUP BY 1) b
     GROUP BY b.bucket
    HAVING sum(b.answers) > 0
  ), cum AS (
    SELECT h.bucket, h.n, (sum(h.n) OVER (ORDER BY h.bucket) - h.n)::bigint AS below,
           (sum(h.n) OVER ())::bigint AS total
      FROM h
  ), pos AS (
    -- 0-based positions of the middle answers: one when their number is odd, two when even
    SELECT DISTINCT v.p FROM (SELECT cum.total FROM cum LIMIT 1) t,
           LATERAL (VALUES ((t.total - 1) / 2), (t.total / 2)) v(p)
  )
  SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY m.d)
    FROM pos
    JOIN cum ON pos.p >= cum.below AND pos.p < cum.below + cum.n
   CROSS JOIN LATERAL (
     SELECT r.answered_after AS d
       FROM @extschema@.response r
      WHERE r.answered_after IS NOT NULL
        AND r.answered_after >= coalesce((@extschema@.delay_thresholds())[cum.bucket], interval '-100000000 years')
        AND r.answered_after < coalesce((@extschema@.delay_thresholds())[cum.bucket + 1], interval '100000000 years')
        AND r.funnel_at >= since
      ORDER BY r.answered_after
     OFFSET pos.p - cum.below LIMIT 1) m
$$;
REVOKE ALL ON FUNCTION @extschema@.median_time_to_answer(timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.median_time_to_answer(timestamptz) IS
  'Internal (survey_funnel): median time from sending to answer of the answers to surveys created since a time';
-- The customer index carries kind, currency and amount (rebuilt once).
DROP INDEX @extschema@.payment_event_customer_idx;
CREATE INDEX payment_event_customer_idx ON @extschema@.payment_event (customer_id, occurred_at)
  INCLUDE (kind, currency, amount);
CREATE OR REPLACE FUNCTION @extschema@.nps_failed_payments("window" interval DEFAULT '30 days')
RETURNS TABLE (failed_payment boolean, responses bigint, nps float8, ci_low float8, ci_high float8,
               difference float8, p_value float8)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- (not inlined: JIT would compile its plan for longer than it runs over the rollups)
SET jit = off
AS $$
  WITH g AS (
    -- the stored 30 days: from the rollups (answers tied to a payment: source_id <> 0)
    SELECT s.failed_30d AS failed, @extschema@.rollup(s.agg) AS a
    FROM @extschema@.rollup_segment s
    WHERE "window" = interval '30 days' AND extract(day FROM "window") = 30
      AND s.source_id <> 0
    GROUP BY 1
    HAVING @extschema@.responses(@extschema@.rollup(s.agg)) > 0
    UNION ALL
    -- any other window: from the answers tied to a payment
    SELECT EXISTS (SELECT 1 FROM @extschema@.payment_event f
                   WHERE f.customer_id = r.customer_id AND f.kind = 'failed'
                     AND f.occurred_at > r.responded_at - "window"
                     AND f.occurred_at <= r.responded_at),
           @extschema@.nps_agg(r.score)
    FROM @extschema@.response r
    WHERE NOT ("window" = interval '30 days' AND extract(day FROM "window") = 30)
      AND r.payment_event_id IS NOT NULL
    GROUP BY 1
  ), checked AS (
    SELECT g.* FROM g
    WHERE @extschema@.check_argument("window" IS NOT NULL, '22004',
            'nps_failed_payments: window must not be NULL')
      AND @extschema@.check_argument("window" IS NULL
                                     OR @extschema@.interval_within("window", '1 microsecond', '100 years'), '22023',
            format('nps_failed_payments: window %s must be a positive interval of at most 100 years with no negative part', "window"))
  )
  SELECT v.failed_payment, coalesce(@extschema@.responses(g.a), 0), @extschema@.nps(g.a),
         ci.low, ci.high, d.difference, d.p_value
  FROM (VALUES (true), (false)) AS v(failed_payment)
  LEFT JOIN checked g ON g.failed = v.failed_payment
  LEFT JOIN LATERAL @extschema@.nps_ci(g.a) ci ON true
  LEFT JOIN LATERAL @extschema@.nps_compare(
    g.a, (SELECT o.a FROM checked o WHERE o.failed <> v.failed_payment)) d ON true
  WHERE @extschema@.check_argument("window" IS NOT NULL, '22004',
          'nps_failed_payments: window must not be NULL')
    AND @extschema@.check_argument("window" IS NULL
                                   OR @extschema@.interval_within("window", '1 microsecond', '100 years'), '22023',
          format('nps_failed_payments: window %s must be a positive interval of at most 100 years with no negative part', "window"))
  ORDER BY v.failed_payment DESC
$$;
CREATE OR REPLACE FUNCTION @extschema@.revenue_at_risk(since timestamptz)
RETURNS TABLE (category @extschema@.nps_category, currency text, customers bigint, payments bigint,
               amount numeric)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- (not inlined: JIT would compile its plan for longer than it runs over the rollups)
SET jit = off
AS $$
  -- each customer's latest answer decides their category (kept per customer as answers arrive)
  SELECT l.category, p.currency, count(*), sum(p.payments)::bigint, sum(p.amount)
  FROM @extschema@.customer_latest_answer l
  CROSS JOIN LATERAL (
    SELECT e.currency, count(*) AS payments, sum(e.amount) AS amount
    FROM @extschema@.payment_event e
    WHERE e.customer_id = l.customer_id AND e.kind = 'succeeded' AND e.occurred_at >= since
    GROUP BY e.currency) p
  WHERE l.category IN ('detractor', 'passive')
    AND @extschema@.check_argument(since IS NOT NULL, '22004', 'revenue_at_risk: since must not be NULL')
  GROUP BY l.category, p.currency
  ORDER BY p.currency NULLS LAST, l.category
$$;
CREATE OR REPLACE FUNCTION @extschema@.survey_funnel(since timestamptz)
RETURNS TABLE (created bigint, sent bigint, responded bigint, expired bigint, failed bigint,
               response_rate float8, median_time_to_answer interval)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- (not inlined: JIT would compile its plan for longer than it runs over the rollups)
SET jit = off
AS $$
  WITH c AS (
    -- counts kept per UTC creation day for the whole days, the surveys themselves before
    SELECT f.outcome, f.sent, f.surveys
    FROM @extschema@.survey_funnel_day f
    WHERE f.day >= @extschema@.utc_day(@extschema@.utc_ceil(since))
    UNION ALL
    SELECT @extschema@.funnel_outcome(s.status), s.sent_at IS NOT NULL OR s.status = 'responded', count(*)
    FROM @extschema@.survey s
    WHERE s.created_at >= since AND s.created_at < @extschema@.utc_ceil(since)
    GROUP BY 1, 2
  ), n AS (
    SELECT coalesce(sum(c.surveys), 0)::bigint AS created,
           coalesce(sum(c.surveys) FILTER (WHERE c.sent), 0)::bigint AS sent,
           coalesce(sum(c.surveys) FILTER (WHERE c.outcome = 'responded'), 0)::bigint AS responded,
           coalesce(sum(c.surveys) FILTER (WHERE c.outcome = 'expired'), 0)::bigint AS expired,
           coalesce(sum(c.surveys) FILTER (WHERE c.outcome = 'failed'), 0)::bigint AS failed
    FROM c
  )
  SELECT n.created, n.sent, n.responded, n.expired, n.failed,
         n.responded::float8 / nullif(n.sent, 0),
         -- from the delay rollup and one bucket of answers (69_answer_delays.sql)
         @extschema@.median_time_to_answer(since)
  FROM n
  WHERE @extschema@.check_argument(since IS NOT NULL, '22004', 'survey_funnel: since must not be NULL')
$$;
REVOKE ALL ON FUNCTION @extschema@.delay_thresholds(), @extschema@.delay_bucket(interval) FROM PUBLIC;
REVOKE ALL ON TABLE @extschema@.rollup_answer_delay FROM PUBLIC;
-- utc_ceil inlinable (immutable parts only): a bucket edge costs no function call
CREATE OR REPLACE FUNCTION @extschema@.utc_ceil(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- (timestamp + interval, not timestamptz + interval: every part immutable, so PostgreSQL
-- inlines it; a call per bucket edge would cost nps_trend most of its time)
AS $$ SELECT CASE WHEN date_trunc('day', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' = t THEN t
                  ELSE (date_trunc('day', t AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC' END $$;

-- rebuild_rollups as a fresh install has it: the send funnel's reminder and cap counters and the
-- answer-delay rollup together (the two sections above each replace it).
CREATE OR REPLACE FUNCTION @extschema@.rebuild_rollups(from_day date DEFAULT '-infinity', to_day date DEFAULT 'infinity')
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
  INSERT INTO @extschema@.rollup_segment (day, source_id, dims, failed_30d, agg)
  SELECT @extschema@.utc_day(r.responded_at), coalesce(r.payment_source_id, 0),
         coalesce(r.payment_dimensions, '{}'), coalesce(r.failed_payment_30d, false),
         @extschema@.nps_agg(r.score)
    FROM @extschema@.response r WHERE r.responded_at >= lo AND r.responded_at < hi
   GROUP BY 1, 2, 3, 4;
  GET DIAGNOSTICS n = ROW_COUNT;
  DELETE FROM @extschema@.rollup_days g WHERE g.day >= from_day AND g.day < to_day;
  INSERT INTO @extschema@.rollup_days (day, days_since, agg)
  SELECT @extschema@.utc_day(r.responded_at), r.days_since_payment, @extschema@.nps_agg(r.score)
    FROM @extschema@.response r
   WHERE r.responded_at >= lo AND r.responded_at < hi AND r.days_since_payment IS NOT NULL
   GROUP BY 1, 2;
  DELETE FROM @extschema@.rollup_answer_delay g WHERE g.day >= from_day AND g.day < to_day;
  INSERT INTO @extschema@.rollup_answer_delay (day, bucket, answers)
  SELECT @extschema@.utc_day(r.funnel_at), @extschema@.delay_bucket(r.answered_after), count(*)
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

-- ---------------------------------------------------------------------------------------------
-- analysis (session 3)
-- What an answer costs: record_response computes the answer's payment context in its INSERT
-- (the context trigger runs only for rows that come without one, and for updates); the answer
-- rollups are kept in shards (rollup_shard(): concurrent answers of one day and segment update
-- different rows instead of waiting for each other's commit), the views sum them; the latest
-- answer table loses its category index (written by every answer, read by no plan); rollup
-- pages keep room for HOT updates (fillfactor 50).
-- Existing rollup rows become shard 0 (no column default left behind); no answer changes.
-- ---------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION @extschema@.record_response(token text, score integer, comment text DEFAULT NULL,
                                            responded_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  s @extschema@.survey;
  rid bigint;
BEGIN
  IF token IS NULL OR score IS NULL OR responded_at IS NULL THEN
    RAISE EXCEPTION 'record_response: % must not be NULL',
      CASE WHEN token IS NULL THEN 'token' WHEN score IS NULL THEN 'score' ELSE 'responded_at' END
      USING ERRCODE = '22004';
  END IF;
  IF score < 0 OR score > 10 THEN
    RAISE EXCEPTION 'NPS score % is out of range 0..10', score USING ERRCODE = '22003';
  END IF;
  IF NOT isfinite(responded_at) THEN
    RAISE EXCEPTION 'record_response: responded_at % is not a finite time', responded_at
      USING ERRCODE = '22023';
  END IF;
  -- responded_at comes from the collector's clock: 5 minutes of skew either way are accepted.
  IF responded_at > now() + interval '5 minutes' THEN
    RAISE EXCEPTION 'record_response: responded_at % is in the future (more than 5 minutes after now())', responded_at
      USING ERRCODE = '22023';
  END IF;
  IF length(comment) > 10000 THEN
    RAISE EXCEPTION 'record_response: comment has % characters, at most 10000 are kept', length(comment)
      USING ERRCODE = '22001';
  END IF;
  -- Lock the survey: concurrent answers and expire_surveys() serialise on this row.
  SELECT * INTO s FROM @extschema@.survey x WHERE x.token = record_response.token FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'record_response: no survey has this token' USING ERRCODE = 'P0002';
  END IF;
  IF s.status IN ('expired', 'cancelled') THEN
    RAISE EXCEPTION 'record_response: survey % is %', s.id, s.status USING ERRCODE = '22023';
  END IF;
  -- (historical answers, given before any survey existed, load with COPY into response)
  IF responded_at < s.created_at - interval '5 minutes' THEN
    RAISE EXCEPTION 'record_response: responded_at % is before survey % was created', responded_at, s.id
      USING ERRCODE = '22023', HINT = 'Load historical answers with COPY into nps_billing.response.';
  END IF;
  IF responded_at >= s.expires_at THEN
    RAISE EXCEPTION 'record_response: survey % is expired (it closed at %)', s.id, s.expires_at
      USING ERRCODE = '22023', DETAIL = format('Its status is %s.', s.status);
  END IF;
  UPDATE @extschema@.survey x SET status = 'responded'
   WHERE x.id = s.id AND x.status <> 'responded';
  -- A first answer is a plain insert (only the INSERT triggers run); a second one replaces it.
  -- The survey lock above serialises answers to one survey. Last in the transaction: the rollup
  -- rows its triggers update (shared by concurrent answers of the day) stay locked only until
  -- the commit that follows. The answer's payment context (67_context.sql) is computed in the
  -- same statement (context_of() is inlined), so the context trigger has nothing to do for it.
  INSERT INTO @extschema@.response AS r (survey_id, customer_id, score, comment, channel, responded_at,
         survey_event_id, payment_event_id, payment_source_id, payment_kind, payment_amount,
         payment_currency, payment_at, payment_attributes, payment_dimensions, days_since_payment,
         failed_payment_30d, context_at, answered_after, funnel_at)
  SELECT s.id, s.customer_id, record_response.score, record_response.comment, s.channel,
         record_response.responded_at, c.survey_event_id, c.payment_event_id, c.payment_source_id,
         c.payment_kind, c.payment_amount, c.payment_currency, c.payment_at, c.payment_attributes,
         c.payment_dimensions, c.days_since_payment, c.failed_payment_30d, now(),
         record_response.responded_at - s.sent_at, least(s.created_at, record_response.responded_at)
    FROM @extschema@.context_of(s.customer_id, s.id, record_response.responded_at) c
  ON CONFLICT (survey_id) DO NOTHING
  RETURNING r.id INTO rid;
  IF rid IS NULL THEN
    UPDATE @extschema@.response r
       SET score = record_response.score, comment = record_response.comment,
           responded_at = record_response.responded_at, updated_at = now()
     WHERE r.survey_id = s.id
    RETURNING r.id INTO rid;
    IF rid IS NULL THEN  -- (an answer loaded by another transaction, invisible to this snapshot)
      RAISE EXCEPTION 'record_response: could not serialize access due to a concurrent answer'
        USING ERRCODE = '40001';
    END IF;
  END IF;
  RETURN rid;
END
$fn$;
DROP TRIGGER response_context_fill ON @extschema@.response;
-- (an INSERT that brings its context, record_response's among them, does not call the function)
CREATE TRIGGER response_context_fill
  BEFORE INSERT ON @extschema@.response
  FOR EACH ROW WHEN (NEW.context_at IS NULL) EXECUTE FUNCTION @extschema@.response_context_fill();
CREATE TRIGGER response_context_refill
  BEFORE UPDATE ON @extschema@.response
  FOR EACH ROW EXECUTE FUNCTION @extschema@.response_context_fill();
DROP INDEX @extschema@.customer_latest_answer_category_idx;
ALTER TABLE @extschema@.rollup_segment ADD COLUMN shard smallint;
UPDATE @extschema@.rollup_segment SET shard = 0;
ALTER TABLE @extschema@.rollup_segment ALTER COLUMN shard SET NOT NULL,
  DROP CONSTRAINT rollup_segment_pkey, ADD PRIMARY KEY (day, source_id, dims, failed_30d, shard);
ALTER TABLE @extschema@.rollup_days ADD COLUMN shard smallint;
UPDATE @extschema@.rollup_days SET shard = 0;
ALTER TABLE @extschema@.rollup_days ALTER COLUMN shard SET NOT NULL,
  DROP CONSTRAINT rollup_days_pkey, ADD PRIMARY KEY (day, days_since, shard);
ALTER TABLE @extschema@.rollup_answer_delay ADD COLUMN shard smallint;
UPDATE @extschema@.rollup_answer_delay SET shard = 0;
ALTER TABLE @extschema@.rollup_answer_delay ALTER COLUMN shard SET NOT NULL,
  DROP CONSTRAINT rollup_answer_delay_pkey, ADD PRIMARY KEY (day, bucket, shard);
-- (room on the page: an answer's update of its row is a HOT update)
ALTER TABLE @extschema@.rollup_segment SET (fillfactor = 50);
ALTER TABLE @extschema@.rollup_days SET (fillfactor = 50);
ALTER TABLE @extschema@.rollup_answer_delay SET (fillfactor = 50);
CREATE OR REPLACE FUNCTION @extschema@.rollup_shard() RETURNS smallint
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN current_setting('nps_billing.rollup_shard', true) ~ '^[0-7]$'
                   THEN current_setting('nps_billing.rollup_shard', true)::integer
                   ELSE pg_backend_pid() % 8 END)::smallint $$;
COMMENT ON FUNCTION @extschema@.rollup_shard() IS
  'The rollup shard this session''s new answers and surveys add to: pg_backend_pid() % 8, or setting nps_billing.rollup_shard (0-7)';
REVOKE ALL ON FUNCTION @extschema@.rollup_shard() FROM PUBLIC;
CREATE OR REPLACE FUNCTION @extschema@.response_rollups_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  -- the common case (record_response, COPY): add, in one statement, to this backend's shard
  WITH seg AS (
    INSERT INTO @extschema@.rollup_segment AS g (day, source_id, dims, failed_30d, shard, agg)
    SELECT @extschema@.utc_day(n.responded_at), coalesce(n.payment_source_id, 0),
           coalesce(n.payment_dimensions, '{}'), coalesce(n.failed_payment_30d, false),
           @extschema@.rollup_shard(), @extschema@.nps_agg(n.score)
      FROM nps_new n GROUP BY 1, 2, 3, 4
     ORDER BY 1, 2, 3, 4  -- rows locked in key order: concurrent bulk imports cannot deadlock
    ON CONFLICT (day, source_id, dims, failed_30d, shard)
    DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg)
  ), days AS (
    INSERT INTO @extschema@.rollup_days AS g (day, days_since, shard, agg)
    SELECT @extschema@.utc_day(n.responded_at), n.days_since_payment, @extschema@.rollup_shard(), @extschema@.nps_agg(n.score)
      FROM nps_new n WHERE n.days_since_payment IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (day, days_since, shard) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg)
  ), delay AS (
    INSERT INTO @extschema@.rollup_answer_delay AS g (day, bucket, shard, answers)
    SELECT @extschema@.utc_day(n.funnel_at), @extschema@.delay_bucket(n.answered_after), @extschema@.rollup_shard(), count(*)
      FROM nps_new n WHERE n.answered_after IS NOT NULL AND n.funnel_at IS NOT NULL
     GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (day, bucket, shard) DO UPDATE SET answers = g.answers + excluded.answers
  )
  INSERT INTO @extschema@.customer_latest_answer AS l (customer_id, response_id, responded_at, category)
  SELECT DISTINCT ON (n.customer_id) n.customer_id, n.id, n.responded_at, n.category
    FROM nps_new n WHERE n.customer_id IS NOT NULL
   ORDER BY n.customer_id, n.responded_at DESC, n.id DESC
  ON CONFLICT (customer_id) DO UPDATE
     SET response_id = excluded.response_id, responded_at = excluded.responded_at, category = excluded.category
   WHERE (excluded.responded_at, excluded.response_id) > (l.responded_at, l.response_id);
  RETURN NULL;
END
$fn$;
CREATE OR REPLACE FUNCTION @extschema@.response_rollups_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  -- INSERT ... ON CONFLICT DO UPDATE (record_response) fires this for every new answer, with
  -- no row updated: nothing to move
  IF NOT EXISTS (SELECT 1 FROM nps_old) THEN
    RETURN NULL;
  END IF;
    -- the npsagg rows answers leave: their shards gathered into shard 0 first
    WITH d AS (SELECT n.*, 1 AS sign FROM nps_new n JOIN nps_old o USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)
                UNION ALL
                SELECT o.*, -1 FROM nps_old o JOIN nps_new n USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)), k AS (
      SELECT DISTINCT @extschema@.utc_day(d.responded_at) AS day, coalesce(d.payment_source_id, 0) AS source_id,
             coalesce(d.payment_dimensions, '{}') AS dims, coalesce(d.failed_payment_30d, false) AS failed_30d
        FROM d WHERE d.sign < 0
    ), gone AS (
      DELETE FROM @extschema@.rollup_segment g USING k
       WHERE g.day = k.day AND g.source_id = k.source_id AND g.dims = k.dims AND g.failed_30d = k.failed_30d
         AND g.shard <> 0
      RETURNING g.day, g.source_id, g.dims, g.failed_30d, g.agg
    )
    INSERT INTO @extschema@.rollup_segment AS g (day, source_id, dims, failed_30d, shard, agg)
    SELECT gone.day, gone.source_id, gone.dims, gone.failed_30d, 0, @extschema@.rollup(gone.agg)
      FROM gone GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (day, source_id, dims, failed_30d, shard) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    WITH d AS (SELECT n.*, 1 AS sign FROM nps_new n JOIN nps_old o USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)
                UNION ALL
                SELECT o.*, -1 FROM nps_old o JOIN nps_new n USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)), k AS (
      SELECT DISTINCT @extschema@.utc_day(d.responded_at) AS day, d.days_since_payment AS days_since
        FROM d WHERE d.sign < 0 AND d.days_since_payment IS NOT NULL
    ), gone AS (
      DELETE FROM @extschema@.rollup_days g USING k
       WHERE g.day = k.day AND g.days_since = k.days_since AND g.shard <> 0
      RETURNING g.day, g.days_since, g.agg
    )
    INSERT INTO @extschema@.rollup_days AS g (day, days_since, shard, agg)
    SELECT gone.day, gone.days_since, 0, @extschema@.rollup(gone.agg) FROM gone GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (day, days_since, shard) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    -- then the changes, in shard 0
    WITH d AS (SELECT n.*, 1 AS sign FROM nps_new n JOIN nps_old o USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)
                UNION ALL
                SELECT o.*, -1 FROM nps_old o JOIN nps_new n USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)), k AS (
      SELECT @extschema@.utc_day(d.responded_at) AS day, coalesce(d.payment_source_id, 0) AS source_id,
             coalesce(d.payment_dimensions, '{}') AS dims, coalesce(d.failed_payment_30d, false) AS failed_30d,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign > 0) AS plus,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign < 0) AS minus
        FROM d GROUP BY 1, 2, 3, 4
    ), upd AS (
      UPDATE @extschema@.rollup_segment g SET agg = @extschema@.npsagg_sub(@extschema@.npsagg_add(g.agg, k.plus), k.minus)
        FROM k
       WHERE g.day = k.day AND g.source_id = k.source_id AND g.dims = k.dims AND g.failed_30d = k.failed_30d
         AND g.shard = 0
      RETURNING g.day, g.source_id, g.dims, g.failed_30d
    )
    INSERT INTO @extschema@.rollup_segment AS g (day, source_id, dims, failed_30d, shard, agg)
    SELECT k.day, k.source_id, k.dims, k.failed_30d, 0, @extschema@.npsagg_sub(k.plus, k.minus)
      FROM k
     WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.day = k.day AND u.source_id = k.source_id
                                             AND u.dims = k.dims AND u.failed_30d = k.failed_30d)
    ON CONFLICT (day, source_id, dims, failed_30d, shard) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    WITH d AS (SELECT n.*, 1 AS sign FROM nps_new n JOIN nps_old o USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)
                UNION ALL
                SELECT o.*, -1 FROM nps_old o JOIN nps_new n USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)), k AS (
      SELECT @extschema@.utc_day(d.responded_at) AS day, d.days_since_payment AS days_since,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign > 0) AS plus,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign < 0) AS minus
        FROM d WHERE d.days_since_payment IS NOT NULL GROUP BY 1, 2
    ), upd AS (
      UPDATE @extschema@.rollup_days g SET agg = @extschema@.npsagg_sub(@extschema@.npsagg_add(g.agg, k.plus), k.minus)
        FROM k WHERE g.day = k.day AND g.days_since = k.days_since AND g.shard = 0
      RETURNING g.day, g.days_since
    )
    INSERT INTO @extschema@.rollup_days AS g (day, days_since, shard, agg)
    SELECT k.day, k.days_since, 0, @extschema@.npsagg_sub(k.plus, k.minus)
      FROM k WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.day = k.day AND u.days_since = k.days_since)
    ON CONFLICT (day, days_since, shard) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    -- rows left empty go
    DELETE FROM @extschema@.rollup_segment g
     USING (SELECT DISTINCT @extschema@.utc_day(o.responded_at) AS day, coalesce(o.payment_source_id, 0) AS source_id,
                   coalesce(o.payment_dimensions, '{}') AS dims, coalesce(o.failed_payment_30d, false) AS failed_30d
              FROM nps_old o) k
     WHERE g.day = k.day AND g.source_id = k.source_id AND g.dims = k.dims AND g.failed_30d = k.failed_30d
       AND @extschema@.responses(g.agg) = 0;
    DELETE FROM @extschema@.rollup_days g
     USING (SELECT DISTINCT @extschema@.utc_day(o.responded_at) AS day, o.days_since_payment AS days_since
              FROM nps_old o) k
     WHERE g.day = k.day AND g.days_since = k.days_since AND @extschema@.responses(g.agg) = 0;
    -- answers to surveys by day and time to answer: net change per row, in this backend's shard
    INSERT INTO @extschema@.rollup_answer_delay AS g (day, bucket, shard, answers)
    SELECT k.day, k.bucket, @extschema@.rollup_shard(), sum(k.d)
      FROM (SELECT @extschema@.utc_day(o.funnel_at) AS day, @extschema@.delay_bucket(o.answered_after) AS bucket, -1 AS d
              FROM nps_old o WHERE o.answered_after IS NOT NULL AND o.funnel_at IS NOT NULL
            UNION ALL
            SELECT @extschema@.utc_day(n.funnel_at), @extschema@.delay_bucket(n.answered_after), 1
              FROM nps_new n WHERE n.answered_after IS NOT NULL AND n.funnel_at IS NOT NULL) k
     GROUP BY k.day, k.bucket
    HAVING sum(k.d) <> 0
     ORDER BY k.day, k.bucket
    ON CONFLICT (day, bucket, shard) DO UPDATE SET answers = g.answers + excluded.answers;
    DELETE FROM @extschema@.rollup_answer_delay g
     USING (SELECT DISTINCT @extschema@.utc_day(o.funnel_at) AS day, @extschema@.delay_bucket(o.answered_after) AS bucket
              FROM nps_old o WHERE o.answered_after IS NOT NULL AND o.funnel_at IS NOT NULL) k
     WHERE g.day = k.day AND g.bucket = k.bucket AND g.answers = 0;
    -- the latest answer of each customer whose answers changed: recomputed from the answers
    -- (a concurrent newer answer is never overwritten by an older one)
    DELETE FROM @extschema@.customer_latest_answer l
     WHERE l.customer_id IN (SELECT o.customer_id FROM nps_old o)
       AND NOT EXISTS (SELECT 1 FROM @extschema@.response r WHERE r.customer_id = l.customer_id);
    INSERT INTO @extschema@.customer_latest_answer AS l (customer_id, response_id, responded_at, category)
    SELECT DISTINCT ON (r.customer_id) r.customer_id, r.id, r.responded_at, r.category
      FROM @extschema@.response r
     WHERE r.customer_id IN (SELECT d.customer_id FROM (SELECT n.*, 1 AS sign FROM nps_new n JOIN nps_old o USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)
                UNION ALL
                SELECT o.*, -1 FROM nps_old o JOIN nps_new n USING (id) WHERE (o.score, o.responded_at, o.customer_id, o.payment_source_id, o.payment_dimensions, o.failed_payment_30d, o.days_since_payment) IS DISTINCT FROM (n.score, n.responded_at, n.customer_id, n.payment_source_id, n.payment_dimensions, n.failed_payment_30d, n.days_since_payment)) d)
     ORDER BY r.customer_id, r.responded_at DESC, r.id DESC
    ON CONFLICT (customer_id) DO UPDATE
       SET response_id = excluded.response_id, responded_at = excluded.responded_at, category = excluded.category
     WHERE (excluded.responded_at, excluded.response_id) > (l.responded_at, l.response_id)
        OR l.response_id IN (SELECT o.id FROM nps_old o);
    RETURN NULL;
END
$fn$;
CREATE OR REPLACE FUNCTION @extschema@.response_rollups_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM nps_old) THEN
    RETURN NULL;
  END IF;
    -- the npsagg rows answers leave: their shards gathered into shard 0 first
    WITH d AS (SELECT o.*, -1 AS sign FROM nps_old o), k AS (
      SELECT DISTINCT @extschema@.utc_day(d.responded_at) AS day, coalesce(d.payment_source_id, 0) AS source_id,
             coalesce(d.payment_dimensions, '{}') AS dims, coalesce(d.failed_payment_30d, false) AS failed_30d
        FROM d WHERE d.sign < 0
    ), gone AS (
      DELETE FROM @extschema@.rollup_segment g USING k
       WHERE g.day = k.day AND g.source_id = k.source_id AND g.dims = k.dims AND g.failed_30d = k.failed_30d
         AND g.shard <> 0
      RETURNING g.day, g.source_id, g.dims, g.failed_30d, g.agg
    )
    INSERT INTO @extschema@.rollup_segment AS g (day, source_id, dims, failed_30d, shard, agg)
    SELECT gone.day, gone.source_id, gone.dims, gone.failed_30d, 0, @extschema@.rollup(gone.agg)
      FROM gone GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (day, source_id, dims, failed_30d, shard) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    WITH d AS (SELECT o.*, -1 AS sign FROM nps_old o), k AS (
      SELECT DISTINCT @extschema@.utc_day(d.responded_at) AS day, d.days_since_payment AS days_since
        FROM d WHERE d.sign < 0 AND d.days_since_payment IS NOT NULL
    ), gone AS (
      DELETE FROM @extschema@.rollup_days g USING k
       WHERE g.day = k.day AND g.days_since = k.days_since AND g.shard <> 0
      RETURNING g.day, g.days_since, g.agg
    )
    INSERT INTO @extschema@.rollup_days AS g (day, days_since, shard, agg)
    SELECT gone.day, gone.days_since, 0, @extschema@.rollup(gone.agg) FROM gone GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (day, days_since, shard) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    -- then the changes, in shard 0
    WITH d AS (SELECT o.*, -1 AS sign FROM nps_old o), k AS (
      SELECT @extschema@.utc_day(d.responded_at) AS day, coalesce(d.payment_source_id, 0) AS source_id,
             coalesce(d.payment_dimensions, '{}') AS dims, coalesce(d.failed_payment_30d, false) AS failed_30d,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign > 0) AS plus,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign < 0) AS minus
        FROM d GROUP BY 1, 2, 3, 4
    ), upd AS (
      UPDATE @extschema@.rollup_segment g SET agg = @extschema@.npsagg_sub(@extschema@.npsagg_add(g.agg, k.plus), k.minus)
        FROM k
       WHERE g.day = k.day AND g.source_id = k.source_id AND g.dims = k.dims AND g.failed_30d = k.failed_30d
         AND g.shard = 0
      RETURNING g.day, g.source_id, g.dims, g.failed_30d
    )
    INSERT INTO @extschema@.rollup_segment AS g (day, source_id, dims, failed_30d, shard, agg)
    SELECT k.day, k.source_id, k.dims, k.failed_30d, 0, @extschema@.npsagg_sub(k.plus, k.minus)
      FROM k
     WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.day = k.day AND u.source_id = k.source_id
                                             AND u.dims = k.dims AND u.failed_30d = k.failed_30d)
    ON CONFLICT (day, source_id, dims, failed_30d, shard) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    WITH d AS (SELECT o.*, -1 AS sign FROM nps_old o), k AS (
      SELECT @extschema@.utc_day(d.responded_at) AS day, d.days_since_payment AS days_since,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign > 0) AS plus,
             @extschema@.nps_agg(d.score) FILTER (WHERE d.sign < 0) AS minus
        FROM d WHERE d.days_since_payment IS NOT NULL GROUP BY 1, 2
    ), upd AS (
      UPDATE @extschema@.rollup_days g SET agg = @extschema@.npsagg_sub(@extschema@.npsagg_add(g.agg, k.plus), k.minus)
        FROM k WHERE g.day = k.day AND g.days_since = k.days_since AND g.shard = 0
      RETURNING g.day, g.days_since
    )
    INSERT INTO @extschema@.rollup_days AS g (day, days_since, shard, agg)
    SELECT k.day, k.days_since, 0, @extschema@.npsagg_sub(k.plus, k.minus)
      FROM k WHERE NOT EXISTS (SELECT 1 FROM upd u WHERE u.day = k.day AND u.days_since = k.days_since)
    ON CONFLICT (day, days_since, shard) DO UPDATE SET agg = @extschema@.npsagg_add(g.agg, excluded.agg);
    -- rows left empty go
    DELETE FROM @extschema@.rollup_segment g
     USING (SELECT DISTINCT @extschema@.utc_day(o.responded_at) AS day, coalesce(o.payment_source_id, 0) AS source_id,
                   coalesce(o.payment_dimensions, '{}') AS dims, coalesce(o.failed_payment_30d, false) AS failed_30d
              FROM nps_old o) k
     WHERE g.day = k.day AND g.source_id = k.source_id AND g.dims = k.dims AND g.failed_30d = k.failed_30d
       AND @extschema@.responses(g.agg) = 0;
    DELETE FROM @extschema@.rollup_days g
     USING (SELECT DISTINCT @extschema@.utc_day(o.responded_at) AS day, o.days_since_payment AS days_since
              FROM nps_old o) k
     WHERE g.day = k.day AND g.days_since = k.days_since AND @extschema@.responses(g.agg) = 0;
    -- answers to surveys by day and time to answer: net change per row, in this backend's shard
    INSERT INTO @extschema@.rollup_answer_delay AS g (day, bucket, shard, answers)
    SELECT k.day, k.bucket, @extschema@.rollup_shard(), sum(k.d)
      FROM (SELECT @extschema@.utc_day(o.funnel_at) AS day, @extschema@.delay_bucket(o.answered_after) AS bucket, -1 AS d
              FROM nps_old o WHERE o.answered_after IS NOT NULL AND o.funnel_at IS NOT NULL) k
     GROUP BY k.day, k.bucket
    HAVING sum(k.d) <> 0
     ORDER BY k.day, k.bucket
    ON CONFLICT (day, bucket, shard) DO UPDATE SET answers = g.answers + excluded.answers;
    DELETE FROM @extschema@.rollup_answer_delay g
     USING (SELECT DISTINCT @extschema@.utc_day(o.funnel_at) AS day, @extschema@.delay_bucket(o.answered_after) AS bucket
              FROM nps_old o WHERE o.answered_after IS NOT NULL AND o.funnel_at IS NOT NULL) k
     WHERE g.day = k.day AND g.bucket = k.bucket AND g.answers = 0;
    -- the latest answer of each customer whose answers changed: recomputed from the answers
    -- (a concurrent newer answer is never overwritten by an older one)
    DELETE FROM @extschema@.customer_latest_answer l
     WHERE l.customer_id IN (SELECT o.customer_id FROM nps_old o)
       AND NOT EXISTS (SELECT 1 FROM @extschema@.response r WHERE r.customer_id = l.customer_id);
    INSERT INTO @extschema@.customer_latest_answer AS l (customer_id, response_id, responded_at, category)
    SELECT DISTINCT ON (r.customer_id) r.customer_id, r.id, r.responded_at, r.category
      FROM @extschema@.response r
     WHERE r.customer_id IN (SELECT d.customer_id FROM (SELECT o.*, -1 AS sign FROM nps_old o) d)
     ORDER BY r.customer_id, r.responded_at DESC, r.id DESC
    ON CONFLICT (customer_id) DO UPDATE
       SET response_id = excluded.response_id, responded_at = excluded.responded_at, category = excluded.category
     WHERE (excluded.responded_at, excluded.response_id) > (l.responded_at, l.response_id)
        OR l.response_id IN (SELECT o.id FROM nps_old o);
    RETURN NULL;
END
$fn$;
CREATE OR REPLACE FUNCTION @extschema@.survey_funnel_insert() RETURNS trigger
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
CREATE OR REPLACE FUNCTION @extschema@.survey_funnel_delete() RETURNS trigger
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
CREATE OR REPLACE FUNCTION @extschema@.survey_funnel_update() RETURNS trigger
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
CREATE OR REPLACE FUNCTION @extschema@.rebuild_rollups(from_day date DEFAULT '-infinity', to_day date DEFAULT 'infinity')
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
CREATE OR REPLACE VIEW @extschema@.nps_daily AS
SELECT g.day, g.source_id, ps.name AS source, g.dims AS dimensions, g.failed_30d AS failed_payment_30d,
       g.summary
FROM (SELECT r.day, r.source_id, r.dims, r.failed_30d, @extschema@.rollup(r.agg) AS summary
        FROM @extschema@.rollup_segment r GROUP BY r.day, r.source_id, r.dims, r.failed_30d) g
LEFT JOIN @extschema@.payment_source ps ON ps.id = g.source_id;
CREATE OR REPLACE VIEW @extschema@.nps_daily_days_since_payment AS
SELECT g.day, g.days_since AS days_since_payment, @extschema@.rollup(g.agg) AS summary
FROM @extschema@.rollup_days g
GROUP BY g.day, g.days_since;




-- ---------------------------------------------------------------------------------------------
-- queue (session 3): the due queue in its own narrow table survey_queue (kept by triggers on
-- survey), so claims and reports update survey in place; survey_queue_idx goes (its predicate
-- made every report a non-HOT update). Surveys queued, leased or sent before the update carry
-- on: survey_queue is filled from them here. claim_messages returns reminder and reports a
-- survey whose links have no answer_base_url failed instead of failing the call.
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

-- the surveys queued or leased before the update
INSERT INTO @extschema@.survey_queue (survey_id, visible_at)
SELECT s.id, @extschema@.queue_visible_at(s.status, s.send_after, s.lease_until)
  FROM @extschema@.survey s WHERE s.status IN ('pending', 'sending');
DROP INDEX @extschema@.survey_queue_idx;
-- more room per page for the in-place updates of claims and reports (pages written from now on)
ALTER TABLE @extschema@.survey SET (fillfactor = 50);
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
CREATE OR REPLACE FUNCTION @extschema@.claim_surveys(worker text, max integer DEFAULT 100,
                                          lease interval DEFAULT '5 minutes')
RETURNS SETOF @extschema@.claimed_survey
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  lease_end timestamptz;
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
  got integer := 0;         -- surveys leased so far
  asked integer;            -- asked for in this round
  n integer;                -- picked in this round
  rounds integer := 0;
  p_ids bigint[];           -- the round's picked surveys in queue order,
  p_src integer[];          -- their sources,
  p_state text[];           -- and closed / counted / free
  claim_ids bigint[];
  over_ids bigint[];        -- counted ones over their source's cap
  put_off bigint[];         -- closed and over-cap ones
  k integer;
  want integer;
  granted integer;
BEGIN
  -- Not STRICT: a NULL argument is a caller bug and gets 22004, not a silent empty result.
  IF worker IS NULL OR max IS NULL OR lease IS NULL THEN
    RAISE EXCEPTION 'claim_surveys: % must not be NULL',
      CASE WHEN worker IS NULL THEN 'worker' WHEN max IS NULL THEN 'max' ELSE 'lease' END
      USING ERRCODE = '22004';
  END IF;
  IF worker = '' OR length(worker) > 200 THEN
    RAISE EXCEPTION 'claim_surveys: worker name must have 1..200 characters, got %', length(worker)
      USING ERRCODE = '22023';
  END IF;
  IF max <= 0 OR max > 10000 THEN
    RAISE EXCEPTION 'claim_surveys: max % is out of range 1..10000', max USING ERRCODE = '22023';
  END IF;
  IF caller IS NULL THEN  -- the session's login role was dropped meanwhile
    RAISE EXCEPTION 'claim_surveys: the session''s login role no longer exists' USING ERRCODE = '42704';
  END IF;
  -- Checked for what it does: no negative part (35_intervals.sql), then in absolute time from now.
  IF @extschema@.interval_within(lease, '1 microsecond', '1 day') THEN
    lease_end := now() + lease;
  END IF;
  IF lease_end IS NULL OR lease_end <= now() OR lease_end > now() + interval '25 hours' THEN
    RAISE EXCEPTION 'claim_surveys: lease % is out of range (0, 1 day] or has a negative part', lease
      USING ERRCODE = '22023';
  END IF;
  -- Without a send window or a daily cap on any source, a claim is one statement.
  IF NOT EXISTS (SELECT 1 FROM @extschema@.payment_source p
                  WHERE p.daily_cap IS NOT NULL OR NOT @extschema@.window_always_open(p.send_days, p.send_from, p.send_until)) THEN
    RETURN QUERY
    WITH picked AS (
      SELECT s.id
        FROM @extschema@.survey_queue q
        JOIN @extschema@.survey s ON s.id = q.survey_id
       WHERE q.visible_at <= now()  -- survey_queue_visible_idx
         AND s.status IN ('pending', 'sending')
         AND s.send_after <= now()
         AND s.expires_at > now()
         AND (s.status = 'pending'
              OR (s.lease_until <= now()
                  AND s.attempts < (SELECT p.max_attempts FROM @extschema@.payment_source p
                                     WHERE p.id = s.source_id)))
       ORDER BY q.visible_at  -- the queue index's order: no sort of the whole backlog
       LIMIT claim_surveys.max
         FOR UPDATE OF s SKIP LOCKED
    ), claimed AS (
      UPDATE @extschema@.survey s
         SET status = 'sending',
             lease_owner = claim_surveys.worker,
             lease_role = caller,
             lease_until = lease_end,
             attempts = s.attempts + 1,
             due_at = NULL
        FROM picked
       WHERE s.id = picked.id
      RETURNING s.id, s.token, s.customer_id, s.channel, s.attempts, s.lease_until, s.expires_at,
                s.source_id, s.event_id, s.send_after, s.reminder
    )
    -- The payment context: one primary-key probe per claimed survey (LIMIT 1 keeps each LATERAL
    -- subquery a nested loop; a plain join let the planner hash the whole payment_event table).
    SELECT c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at,
           p.name, e.kind, e.amount, e.currency, e.occurred_at, e.attributes, c.reminder
      FROM claimed c
      LEFT JOIN LATERAL (SELECT p.name FROM @extschema@.payment_source p
                          WHERE p.id = c.source_id LIMIT 1) p ON true
      LEFT JOIN LATERAL (SELECT e.kind, e.amount, e.currency, e.occurred_at, e.attributes
                           FROM @extschema@.payment_event e WHERE e.id = c.event_id LIMIT 1) e ON true
     ORDER BY c.send_after, c.id;
    RETURN;
  END IF;

  -- Send windows and daily caps (61_send_policy.sql). Each round picks due surveys exactly as
  -- above (FOR UPDATE SKIP LOCKED, queue order) and judges each one: 'closed' (outside its send
  -- window now, in the recipient's time zone), 'counted' (the first claim of a send for a source
  -- with a daily cap: first sends and reminders count, a retry or a re-claim after a lapsed lease
  -- does not) or 'free'. Closed ones move to their window's next opening and over-cap ones to
  -- the next day's (send_after, so they leave the head of the queue and due_at keeps when they
  -- fell due); the rest are leased. A round that put surveys off leaves room for another, so a
  -- claim does not come back empty while due surveys inside their windows wait behind them.
  -- A change of a source's window or cap waits for the claims under way (the advisory lock of
  -- reschedule_surveys, 61_send_policy.sql), so it sees every survey they put off.
  PERFORM pg_catalog.pg_advisory_xact_lock_shared(
            '@extschema@.payment_source'::pg_catalog.regclass::pg_catalog.oid::pg_catalog.int4, x.id)
     FROM (SELECT p.id FROM @extschema@.payment_source p
            WHERE p.daily_cap IS NOT NULL OR NOT @extschema@.window_always_open(p.send_days, p.send_from, p.send_until)
            ORDER BY p.id OFFSET 0) x;  -- in id order
  LOOP
    asked := claim_surveys.max - got;
    SELECT coalesce(array_agg(j.id ORDER BY j.send_after, j.id), '{}'),
           coalesce(array_agg(j.source_id ORDER BY j.send_after, j.id), '{}'),
           coalesce(array_agg(j.state ORDER BY j.send_after, j.id), '{}')
      INTO p_ids, p_src, p_state
      FROM (
        SELECT pk.id, pk.source_id, pk.send_after,
               CASE WHEN p.id IS NOT NULL
                         AND NOT @extschema@.window_always_open(p.send_days, p.send_from, p.send_until)
                         AND NOT (extract(isodow FROM l.t)::integer = ANY (p.send_days)
                                  AND l.t::time >= p.send_from AND l.t::time < p.send_until)
                    THEN 'closed'
                    WHEN p.daily_cap IS NOT NULL AND pk.status = 'pending' AND pk.attempts = 0 THEN 'counted'
                    ELSE 'free' END AS state
          FROM (SELECT s.id, s.source_id, s.send_after, s.status, s.attempts, s.time_zone
                  FROM @extschema@.survey_queue q
                  JOIN @extschema@.survey s ON s.id = q.survey_id
                 WHERE q.visible_at <= now()  -- survey_queue_visible_idx
                   AND s.status IN ('pending', 'sending')
                   AND s.send_after <= now()
                   AND s.expires_at > now()
                   AND (s.status = 'pending'
                        OR (s.lease_until <= now()
                            AND s.attempts < (SELECT p.max_attempts FROM @extschema@.payment_source p
                                               WHERE p.id = s.source_id)))
                 ORDER BY q.visible_at
                 LIMIT asked
                   FOR UPDATE OF s SKIP LOCKED) pk
          LEFT JOIN @extschema@.payment_source p ON p.id = pk.source_id
          -- local wall-clock time of the recipient (its zone if PostgreSQL knows it, else the source's)
          CROSS JOIN LATERAL (SELECT now() AT TIME ZONE @extschema@.send_zone(pk.time_zone, p.time_zone) AS t) l
      ) j;
    n := cardinality(p_ids);
    EXIT WHEN n = 0;
    put_off := '{}';
    IF NOT 'free' = ALL (p_state) THEN
      over_ids := '{}';
      -- Daily caps: a counter row per source and day of the source's time zone, locked in
      -- source order (no deadlock between claimers of several capped sources) and held to the
      -- end of the transaction, so concurrent claimers never grant more than the cap together.
      FOR k, want IN SELECT u.src, count(*)::integer FROM unnest(p_src, p_state) AS u(src, st)
                      WHERE u.st = 'counted' GROUP BY u.src ORDER BY u.src LOOP
        granted := @extschema@.take_send_quota(k, want);
        IF granted < want THEN
          over_ids := over_ids || ARRAY(SELECT u.id FROM unnest(p_ids, p_src, p_state) WITH ORDINALITY AS u(id, src, st, ord)
                                         WHERE u.st = 'counted' AND u.src = k ORDER BY u.ord OFFSET granted);
        END IF;
      END LOOP;
      put_off := over_ids || ARRAY(SELECT u.id FROM unnest(p_ids, p_state) AS u(id, st) WHERE u.st = 'closed');
    END IF;
    IF cardinality(put_off) > 0 THEN
      -- Closed ones to their window's next opening, over-cap ones to the next day's.
      UPDATE @extschema@.survey s
         SET status = 'pending', lease_owner = NULL, lease_until = NULL, lease_role = NULL,
             due_at = coalesce(s.due_at, s.send_after),
             cap_deferrals = s.cap_deferrals + CASE WHEN s.id = ANY (over_ids) THEN 1 ELSE 0 END,
             send_after = greatest(now() + interval '1 second',
                                   @extschema@.send_window_next(
                                     CASE WHEN s.id = ANY (over_ids)
                                          THEN @extschema@.next_local_midnight(now(), coalesce(p.time_zone, 'UTC'))
                                          ELSE now() END,
                                     @extschema@.send_zone(s.time_zone, p.time_zone),
                                     p.send_days, p.send_from, p.send_until))
        FROM @extschema@.payment_source p
       WHERE p.id = s.source_id AND s.id = ANY (put_off);
      claim_ids := ARRAY(SELECT u.id FROM unnest(p_ids, p_state) WITH ORDINALITY AS u(id, st, ord)
                          WHERE u.id <> ALL (put_off) ORDER BY u.ord);
    ELSE
      claim_ids := p_ids;
    END IF;
    IF cardinality(claim_ids) > 0 THEN
      RETURN QUERY
      WITH claimed AS (
        UPDATE @extschema@.survey s
           SET status = 'sending',
               lease_owner = claim_surveys.worker,
               lease_role = caller,
               lease_until = lease_end,
               attempts = s.attempts + 1,
               due_at = NULL
         WHERE s.id = ANY (claim_ids)
        RETURNING s.id, s.token, s.customer_id, s.channel, s.attempts, s.lease_until, s.expires_at,
                  s.source_id, s.event_id, s.send_after, s.reminder
      )
      SELECT c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at,
             p.name, e.kind, e.amount, e.currency, e.occurred_at, e.attributes, c.reminder
        FROM claimed c
        LEFT JOIN LATERAL (SELECT p.name FROM @extschema@.payment_source p
                            WHERE p.id = c.source_id LIMIT 1) p ON true
        LEFT JOIN LATERAL (SELECT e.kind, e.amount, e.currency, e.occurred_at, e.attributes
                             FROM @extschema@.payment_event e WHERE e.id = c.event_id LIMIT 1) e ON true
       ORDER BY c.send_after, c.id;
      GET DIAGNOSTICS k = ROW_COUNT;
      got := got + k;
    END IF;
    rounds := rounds + 1;
    -- done: enough, the queue had no more due surveys, or enough rounds for one call
    EXIT WHEN got >= claim_surveys.max OR n < asked OR rounds >= 20;
  END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.expire_surveys()
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  expired integer;
  exhausted integer;
BEGIN
  -- 'sent' too: an unanswered survey expires (sent_at still tells it was delivered).
  UPDATE @extschema@.survey s
     SET status = 'expired', lease_owner = NULL, lease_until = NULL, lease_role = NULL
   WHERE s.live AND s.status IN ('pending', 'sending', 'sent') AND s.expires_at <= now();  -- survey_expiry_idx
  GET DIAGNOSTICS expired = ROW_COUNT;
  -- Leases that ran out max_attempts times (a sender that crashes on this survey every time)
  -- are never claimed again: close them as failed.
  -- A reminder is given up instead: the survey was sent before and stays sent.
  UPDATE @extschema@.survey s
     SET status = CASE WHEN s.reminder > 0 THEN 'sent' ELSE 'failed' END,
         lease_owner = NULL, lease_until = NULL, lease_role = NULL,
         last_error = coalesce(s.last_error, 'lease ran out ' || s.attempts || ' times')
    FROM @extschema@.payment_source p
   WHERE s.id IN (SELECT q.survey_id FROM @extschema@.survey_queue q WHERE q.visible_at <= now())
     AND s.status = 'sending' AND s.lease_until <= now()
     AND p.id = s.source_id AND s.attempts >= p.max_attempts;
  GET DIAGNOSTICS exhausted = ROW_COUNT;
  RETURN expired + exhausted;
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.reschedule_surveys(source text DEFAULT NULL) RETURNS bigint
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

CREATE OR REPLACE FUNCTION @extschema@.payment_source_send_policy_changed() RETURNS trigger
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

CREATE OR REPLACE VIEW @extschema@.send_backlog AS
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

ALTER TYPE @extschema@.claimed_message ADD ATTRIBUTE reminder integer;
-- Whether a template field's links need its source's answer_base_url (src/render.cpp).
CREATE FUNCTION @extschema@._template_links(template text, field text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'nps_template_links' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._template_links(text, text) IS
  'Internal: whether a message template field has links (answer_url, unsubscribe_url, score_links, score_url.N)';

CREATE OR REPLACE FUNCTION @extschema@.claim_messages(worker text, max integer DEFAULT 100,
                                           lease interval DEFAULT '5 minutes')
RETURNS SETOF @extschema@.claimed_message
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  claimed @extschema@.claimed_survey[];
  ids bigint[];
  unrenderable bigint[];
  src record;
BEGIN
  -- (claim_surveys checks the values; the NULLs are named here for this function)
  IF worker IS NULL OR max IS NULL OR lease IS NULL THEN
    RAISE EXCEPTION 'claim_messages: % must not be NULL',
      CASE WHEN worker IS NULL THEN 'worker' WHEN max IS NULL THEN 'max' ELSE 'lease' END
      USING ERRCODE = '22004';
  END IF;
  SELECT coalesce(array_agg(x.s ORDER BY x.ord), '{}'), coalesce(array_agg((x.s).id), '{}')
    INTO claimed, ids
    FROM (SELECT c, pg_catalog.row_number() OVER ()
            FROM @extschema@.claim_surveys(claim_messages.worker, claim_messages.max, claim_messages.lease) c) x(s, ord);
  -- surveys of sources without answer_base_url whose template has links (one check per template)
  IF cardinality(ids) > 0 AND EXISTS (SELECT 1 FROM @extschema@.payment_source p WHERE p.answer_base_url IS NULL) THEN
    SELECT coalesce(array_agg(s.id), '{}') INTO unrenderable
      FROM @extschema@.survey s
      JOIN (SELECT k.source_id, k.channel, k.locale
              FROM (SELECT DISTINCT x.source_id, x.channel, x.locale FROM @extschema@.survey x WHERE x.id = ANY (ids)) k
              JOIN @extschema@.payment_source p ON p.id = k.source_id AND p.answer_base_url IS NULL
             CROSS JOIN LATERAL @extschema@._template_for(k.source_id, k.channel, k.locale) t
             WHERE @extschema@._template_links(t.t_subject, 'subject') OR @extschema@._template_links(t.t_text, 'body_text')
                OR @extschema@._template_links(t.t_html, 'body_html')) g
        ON g.source_id = s.source_id AND g.channel = s.channel AND g.locale IS NOT DISTINCT FROM s.locale
     WHERE s.id = ANY (ids);
    IF cardinality(unrenderable) > 0 THEN
      FOR src IN SELECT p.name, array_agg(s.id ORDER BY s.id) AS ids FROM @extschema@.survey s
                   JOIN @extschema@.payment_source p ON p.id = s.source_id
                  WHERE s.id = ANY (unrenderable) GROUP BY p.name ORDER BY p.name LOOP
        PERFORM @extschema@.mark_failed(src.ids, claim_messages.worker,
          pg_catalog.format('no_answer_base_url: payment source "%s" has no answer_base_url, which its message template''s links need',
                            src.name),
          interval '1 hour');
      END LOOP;
    END IF;
  END IF;
  RETURN QUERY
  WITH c AS MATERIALIZED (
    SELECT u.*, u.ordinality AS ord FROM unnest(claimed) WITH ORDINALITY AS u
     WHERE unrenderable IS NULL OR u.id <> ALL (unrenderable)
  ), m AS (
    SELECT * FROM @extschema@._messages(ARRAY(SELECT c.id FROM c))
  )
  SELECT c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at, c.source,
         c.kind, c.amount, c.currency, c.occurred_at, c.attributes,
         m.recipient, m.locale, m.subject, m.body_text, m.body_html, c.reminder
    FROM c LEFT JOIN m ON m.survey_id = c.id
   ORDER BY c.ord;
END
$fn$;

COMMENT ON FUNCTION @extschema@.claim_messages(text, integer, interval) IS
  'claim_surveys with the rendered message: leases due surveys as claim_surveys() does and returns '
  'each with its recipient, locale, subject, text and HTML body; a survey whose template needs '
  'links its source has no answer_base_url for is reported failed (no_answer_base_url) instead';

REVOKE ALL ON TABLE @extschema@.survey_queue FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.queue_visible_at(text, timestamptz, timestamptz), @extschema@.survey_queue_insert(),
  @extschema@.survey_queue_update(), @extschema@.survey_queue_renumber(), @extschema@.survey_queue_delete(),
  @extschema@.survey_queue_truncate(), @extschema@._template_links(text, text) FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- release/churn (session 3): the churn functions at 1M answers / 10M payment events.
-- response_customer_idx also holds id and category (each customer's first answer read from the
-- index in customer order); nps_churn and nps_retention are planned for their arguments and
-- read each customer's payments in one index range; follow_up_metrics looks up each answer once.
DROP INDEX @extschema@.response_customer_idx;
CREATE INDEX response_customer_idx ON @extschema@.response (customer_id, responded_at, id) INCLUDE (category);

CREATE OR REPLACE FUNCTION @extschema@.nps_churn(after interval DEFAULT '45 days',
                                      since timestamptz DEFAULT '-infinity',
                                      until timestamptz DEFAULT 'infinity',
                                      as_of timestamptz DEFAULT now())
RETURNS TABLE (category @extschema@.nps_category, customers bigint, churned bigint, churn_rate float8,
               ci_low float8, ci_high float8, lift float8, p_value float8, churned_revenue jsonb)
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- Planned for the call's arguments (a SQL function's body is planned for any argument, as if
-- the range held 0.5 % of the answers): a whole-history call reads the cohort in customer order
-- from response_customer_idx without sorting the answers, a narrow range reads it by time.
SET plan_cache_mode = force_custom_plan
AS $fn$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH judged AS MATERIALIZED (
    -- each customer's first answer in the range, judged once its window has closed: one probe
    -- of payment_event_customer_idx (customer_id, occurred_at) per customer
    SELECT c.customer_id, c.responded_at, c.category,
           NOT EXISTS (SELECT 1 FROM @extschema@.payment_event p
                        WHERE p.customer_id = c.customer_id
                          AND p.occurred_at > c.responded_at AND p.occurred_at <= c.responded_at + after
                          AND p.kind = 'succeeded') AS churned
      FROM (SELECT DISTINCT ON (r.customer_id) r.customer_id, r.responded_at, r.category
              FROM @extschema@.response r
             WHERE r.customer_id IS NOT NULL
               AND r.responded_at >= since AND r.responded_at < until AND r.responded_at <= as_of
               AND @extschema@.churn_arguments_ok('nps_churn', after, since, until, as_of)
             ORDER BY r.customer_id, r.responded_at, r.id) c
     WHERE c.responded_at + after <= as_of
  ), cat AS (
    SELECT j.category, count(*) AS n, count(*) FILTER (WHERE j.churned) AS x
      FROM judged j GROUP BY 1
  ), rev AS (
    -- what the churned customers paid in the period of the same length up to their answer
    -- (one index probe per churned customer; OFFSET 0 keeps it one, not a join over all events)
    SELECT y.category, jsonb_object_agg(y.currency, y.amount) AS revenue
      FROM (SELECT j.category, coalesce(p.currency, '') AS currency, sum(p.amount) AS amount
              FROM judged j
             CROSS JOIN LATERAL (
               SELECT e.currency, e.amount FROM @extschema@.payment_event e
                WHERE e.customer_id = j.customer_id
                  AND e.occurred_at > j.responded_at - after AND e.occurred_at <= j.responded_at
                  AND e.kind = 'succeeded' AND e.amount IS NOT NULL
               OFFSET 0) p
             WHERE j.churned
             GROUP BY 1, 2) y
     GROUP BY 1
  )
  SELECT v.category, coalesce(c.n, 0), coalesce(c.x, 0),
         c.x::float8 / nullif(c.n, 0),
         w.low, w.high,
         (c.x::float8 / nullif(c.n, 0)) / nullif(pr.x::float8 / nullif(pr.n, 0), 0),
         CASE WHEN v.category <> 'promoter' THEN t.p_value END,
         CASE WHEN c.n > 0 THEN coalesce(rv.revenue, '{}') END
    FROM unnest(enum_range(NULL::@extschema@.nps_category)) AS v(category)
    LEFT JOIN cat c ON c.category = v.category
    LEFT JOIN cat pr ON pr.category = 'promoter'
    LEFT JOIN rev rv ON rv.category = v.category
    LEFT JOIN LATERAL @extschema@.wilson_ci(c.x, c.n) w ON c.n > 0
    LEFT JOIN LATERAL @extschema@.proportion_compare(c.x, c.n, pr.x, pr.n) t ON c.n > 0 AND pr.n > 0
   WHERE @extschema@.churn_arguments_ok('nps_churn', after, since, until, as_of)
   ORDER BY v.category;
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.nps_retention(bucket interval DEFAULT '30 days',
                                          horizon interval DEFAULT '360 days',
                                          since timestamptz DEFAULT '-infinity',
                                          until timestamptz DEFAULT 'infinity',
                                          after interval DEFAULT '45 days',
                                          as_of timestamptz DEFAULT now())
RETURNS TABLE (category @extschema@.nps_category, bucket_start interval, bucket_end interval,
               at_risk bigint, churned bigint, censored bigint,
               survival float8, stderr float8, ci_low float8, ci_high float8)
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- planned for the call's arguments, as nps_churn
SET plan_cache_mode = force_custom_plan
AS $fn$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH par AS MATERIALIZED (
    SELECT extract(epoch FROM bucket)::float8 AS bs, extract(epoch FROM horizon)::float8 AS hs,
           -- nullif: PostgreSQL 18 folds this division when planning, before the checks below run
           ceil(extract(epoch FROM horizon)::float8 / nullif(extract(epoch FROM bucket)::float8, 0))::integer AS nb,
           @extschema@.normal_quantile(0.975) AS z
     WHERE @extschema@.churn_arguments_ok('nps_retention', after, since, until, as_of)
       AND @extschema@.check_argument(bucket IS NOT NULL AND horizon IS NOT NULL,
             '22004', 'nps_retention: bucket and horizon must not be NULL')
       AND @extschema@.check_argument(@extschema@.interval_within(bucket, '1 second', '100 years')
                                      AND @extschema@.interval_within(horizon, '1 second', '100 years'),
             '22023', format('nps_retention: bucket %s and horizon %s must be positive intervals of at most 100 years with no negative part',
                             bucket, horizon))
       AND @extschema@.check_argument(NOT (@extschema@.interval_within(bucket, '1 second', '100 years')
                                           AND @extschema@.interval_within(horizon, '1 second', '100 years'))
                                      OR extract(epoch FROM horizon) <= 10000 * extract(epoch FROM bucket),
             '54000', format('nps_retention: buckets of %s up to %s exceed the limit of 10000 buckets', bucket, horizon))
  ), cohort AS MATERIALIZED (
    SELECT DISTINCT ON (r.customer_id) r.customer_id, r.responded_at, r.category
      FROM @extschema@.response r
     WHERE r.customer_id IS NOT NULL
       AND r.responded_at >= since AND r.responded_at < until AND r.responded_at <= as_of
     ORDER BY r.customer_id, r.responded_at, r.id
  ), subj AS MATERIALIZED (
    -- per customer, in one index range of payment_event_customer_idx: the succeeded payments
    -- after the answer (up to horizon + after) in time order, each with the previous one (the
    -- answer for the first); a gap longer than `after` breaks the chain, and its last payment
    -- is where it ended (no sort of all the cohort's payments, no join over all events)
    SELECT c.category,
           least(extract(epoch FROM l.last_paid - c.responded_at)::float8, par.hs) AS t,
           l.ended AND extract(epoch FROM l.last_paid - c.responded_at)::float8 < par.hs AS event
      FROM par
     CROSS JOIN cohort c
     CROSS JOIN LATERAL (
       SELECT min(w.prev) FILTER (WHERE w.t > w.prev + after) AS brk, max(w.t) AS last_t
         FROM (SELECT p.occurred_at AS t,
                      lag(p.occurred_at, 1, c.responded_at) OVER (ORDER BY p.occurred_at) AS prev
                 FROM @extschema@.payment_event p
                WHERE p.customer_id = c.customer_id
                  AND p.occurred_at > c.responded_at
                  AND p.occurred_at <= least(as_of, c.responded_at + par.hs * interval '1 second' + after)
                  AND p.kind = 'succeeded') w) e
     CROSS JOIN LATERAL (
       SELECT coalesce(e.brk, e.last_t, c.responded_at) AS last_paid,
              e.brk IS NOT NULL OR coalesce(e.last_t, c.responded_at) + after <= as_of AS ended) l
  ), times AS (
    SELECT s.category, s.t, count(*) FILTER (WHERE s.event) AS d, count(*) FILTER (WHERE NOT s.event) AS c
      FROM subj s GROUP BY 1, 2
  ), risk AS (
    -- at risk at t: events at or after t and censorings after t
    SELECT x.category, x.t, x.d,
           (sum(x.d + x.c) OVER (PARTITION BY x.category ORDER BY x.t DESC ROWS UNBOUNDED PRECEDING) - x.c)::bigint AS n
      FROM times x
  ), km AS (
    SELECT k.category, k.t,
           sum(CASE WHEN k.d < k.n THEN ln(1 - k.d::float8 / k.n) ELSE 0 END) OVER w AS log_s,
           bool_or(k.d = k.n) OVER w AS zero,
           sum(CASE WHEN k.d < k.n THEN k.d::float8 / (k.n::float8 * (k.n - k.d)) ELSE 0 END) OVER w AS gw
      FROM risk k
     WHERE k.d > 0
    WINDOW w AS (PARTITION BY k.category ORDER BY k.t ROWS UNBOUNDED PRECEDING)
  ), grid AS (
    SELECT v.category, g.k
      FROM par, unnest(enum_range(NULL::@extschema@.nps_category)) AS v(category),
           generate_series(0, par.nb - 1) AS g(k)
  ), ev AS (
    SELECT s.category, floor(s.t / par.bs)::integer AS k, count(*) AS n
      FROM subj s, par WHERE s.event GROUP BY 1, 2
  ), ce AS (
    -- censored in (start, end]: those censored at a bucket's start were not at risk in it
    SELECT s.category, least(ceil(s.t / par.bs)::integer - 1, par.nb - 1) AS k, count(*) AS n
      FROM subj s, par WHERE NOT s.event AND s.t > 0 GROUP BY 1, 2
  ), kb AS (
    SELECT m.category, floor(m.t / par.bs)::integer AS k,
           min(m.log_s) AS log_s, bool_or(m.zero) AS zero, max(m.gw) AS gw
      FROM km m, par GROUP BY 1, 2
  ), tot AS (
    SELECT s.category, count(*) FILTER (WHERE s.event OR s.t > 0) AS n FROM subj s GROUP BY 1
  ), carried AS (
    SELECT g.category, g.k, coalesce(ev.n, 0) AS churned, coalesce(ce.n, 0) AS censored,
           coalesce(tot.n, 0) AS cohort,
           coalesce(tot.n, 0)
             - coalesce(sum(coalesce(ev.n, 0) + coalesce(ce.n, 0))
                          OVER (PARTITION BY g.category ORDER BY g.k ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS at_risk,
           -- survival at a bucket's end: the last event time before it (log S only falls)
           coalesce(min(kb.log_s) OVER wk, 0) AS log_s,
           coalesce(bool_or(kb.zero) OVER wk, false) AS zero,
           coalesce(max(kb.gw) OVER wk, 0) AS gw
      FROM grid g
      LEFT JOIN ev ON ev.category = g.category AND ev.k = g.k
      LEFT JOIN ce ON ce.category = g.category AND ce.k = g.k
      LEFT JOIN kb ON kb.category = g.category AND kb.k = g.k
      LEFT JOIN tot ON tot.category = g.category
    WINDOW wk AS (PARTITION BY g.category ORDER BY g.k ROWS UNBOUNDED PRECEDING)
  ), est AS (
    SELECT c.*, CASE WHEN c.zero THEN 0 ELSE exp(c.log_s) END AS s
      FROM carried c
  )
  SELECT e.category, bucket * e.k, least(bucket * (e.k + 1), horizon),
         e.at_risk::bigint, e.churned::bigint, e.censored::bigint,
         CASE WHEN e.cohort > 0 THEN e.s END,
         CASE WHEN e.cohort > 0 THEN e.s * sqrt(e.gw) END,
         CASE WHEN e.cohort = 0 THEN NULL
              WHEN e.s <= 0 OR e.s >= 1 OR e.gw = 0 THEN e.s
              ELSE e.s ^ exp(par.z * sqrt(e.gw) / abs(ln(e.s))) END,
         CASE WHEN e.cohort = 0 THEN NULL
              WHEN e.s <= 0 OR e.s >= 1 OR e.gw = 0 THEN e.s
              ELSE e.s ^ exp(-par.z * sqrt(e.gw) / abs(ln(e.s))) END
    FROM est e, par
   ORDER BY e.category, e.k;
END
$fn$;

CREATE OR REPLACE FUNCTION @extschema@.follow_up_metrics(since timestamptz DEFAULT '-infinity',
                                              until timestamptz DEFAULT 'infinity',
                                              after interval DEFAULT '45 days')
RETURNS TABLE (follow_ups bigint, open bigint, overdue bigint, resolved bigint, wont_fix bigint,
               median_time_to_close interval, closed_within_sla float8,
               detractors_judged bigint,
               followed_up bigint, followed_up_paid_again bigint, followed_up_retention float8,
               not_followed_up bigint, not_followed_up_paid_again bigint, not_followed_up_retention float8,
               retention_difference float8, p_value float8)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'  -- responded_at + after in UTC (45 days are 45 x 24 hours), whatever the session
AS $fn$
BEGIN
  IF since IS NULL OR until IS NULL OR after IS NULL THEN
    RAISE EXCEPTION 'follow_up_metrics: % must not be NULL',
      CASE WHEN since IS NULL THEN 'since' WHEN until IS NULL THEN 'until' ELSE 'after' END
      USING ERRCODE = '22004';
  END IF;
  IF since > until THEN
    RAISE EXCEPTION 'follow_up_metrics: since % is after until %', since, until USING ERRCODE = '22023';
  END IF;
  IF NOT @extschema@.interval_within(after, '1 day', '10 years') THEN
    RAISE EXCEPTION 'follow_up_metrics: after % is out of range [1 day, 10 years] or has a negative part', after
      USING ERRCODE = '22023';
  END IF;
  RETURN QUERY
  WITH f AS (
    SELECT count(*) AS follow_ups,
           count(*) FILTER (WHERE x.active) AS open,
           count(*) FILTER (WHERE x.active AND x.due_at < now()) AS overdue,
           count(*) FILTER (WHERE x.status = 'resolved') AS resolved,
           count(*) FILTER (WHERE x.status = 'wont_fix') AS wont_fix,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY x.closed_at - x.created_at)
             FILTER (WHERE x.closed_at IS NOT NULL) AS median_time_to_close,
           avg((x.closed_at <= x.due_at)::integer::float8) FILTER (WHERE x.closed_at IS NOT NULL) AS within_sla
      FROM @extschema@.follow_up x
     WHERE x.created_at >= since AND x.created_at < until
  ), judged AS MATERIALIZED (
    -- (materialized: each answer's two look-ups once, not once per aggregate that reads them;
    -- the follow-ups joined, the payments probed in payment_event_customer_idx)
    SELECT u.response_id IS NOT NULL AS followed,
           EXISTS (SELECT 1 FROM @extschema@.payment_event e
                    WHERE e.customer_id = r.customer_id AND e.kind = 'succeeded'
                      AND e.occurred_at > r.responded_at AND e.occurred_at <= r.responded_at + after) AS paid
      FROM @extschema@.response r
      LEFT JOIN @extschema@.follow_up u ON u.response_id = r.id AND u.contacted_at IS NOT NULL
     WHERE r.responded_at >= since AND r.responded_at < until
       AND r.responded_at + after <= now()
       AND r.category = 'detractor' AND r.customer_id IS NOT NULL
  ), g AS (
    SELECT count(*) AS judged,
           count(*) FILTER (WHERE j.followed) AS fu,
           count(*) FILTER (WHERE j.followed AND j.paid) AS fu_paid,
           count(*) FILTER (WHERE NOT j.followed) AS nf,
           count(*) FILTER (WHERE NOT j.followed AND j.paid) AS nf_paid,
           -- paid again = score 10, not = score 0: NPS = 100 (2p - 1), so nps_compare's z-test of
           -- the NPS difference is the (unpooled) z-test of the difference of the two shares
           @extschema@.nps_agg(CASE WHEN j.paid THEN 10 ELSE 0 END) FILTER (WHERE j.followed) AS a_fu,
           @extschema@.nps_agg(CASE WHEN j.paid THEN 10 ELSE 0 END) FILTER (WHERE NOT j.followed) AS a_nf
      FROM judged j
  )
  SELECT f.follow_ups, f.open, f.overdue, f.resolved, f.wont_fix, f.median_time_to_close, f.within_sla,
         g.judged, g.fu, g.fu_paid, g.fu_paid::float8 / nullif(g.fu, 0),
         g.nf, g.nf_paid, g.nf_paid::float8 / nullif(g.nf, 0),
         g.fu_paid::float8 / nullif(g.fu, 0) - g.nf_paid::float8 / nullif(g.nf, 0),
         (SELECT c.p_value FROM @extschema@.nps_compare(g.a_fu, g.a_nf) c)
    FROM f, g;
END
$fn$;

-- ---------------------------------------------------------------------------------------------
-- survey queue rebuild (session 5): rebuild_survey_queue() after the survey triggers were bypassed
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
REVOKE ALL ON FUNCTION @extschema@.rebuild_survey_queue() FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- analysis (session 5): survey_funnel's median reads two middle answers of one bucket in one scan
-- percentile_cont(0.5) of answered_after over the answers with funnel_at >= since, exactly as
-- over the answers themselves: the counts per bucket (rollup days, and the answers of the
-- partial UTC day at the start) locate the one or two middle answers; each is read from its
-- bucket's range of response_answered_after_idx (one scan per bucket: two middle answers in one
-- bucket are read together); percentile_cont of those gives the value.
CREATE OR REPLACE FUNCTION @extschema@.median_time_to_answer(since timestamptz) RETURNS interval
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  WITH part AS (
    -- funnel_at in [since, first UTC midnight at or after since): answered in that time, or
    -- answered later to a survey created in it
    SELECT r.answered_after AS d
      FROM @extschema@.response r
     WHERE r.responded_at >= since AND r.responded_at < @extschema@.utc_ceil(since)
       AND r.answered_after IS NOT NULL
       AND r.funnel_at >= since AND r.funnel_at < @extschema@.utc_ceil(since)
    UNION ALL
    SELECT r.answered_after
      FROM @extschema@.survey s
      JOIN @extschema@.response r ON r.survey_id = s.id
     WHERE s.created_at >= since AND s.created_at < @extschema@.utc_ceil(since)
       AND r.answered_after IS NOT NULL
       AND r.funnel_at >= since AND r.funnel_at < @extschema@.utc_ceil(since)
       AND NOT (r.responded_at >= since AND r.responded_at < @extschema@.utc_ceil(since))
  ), h AS (
    SELECT b.bucket, sum(b.answers)::bigint AS n
      FROM (SELECT g.bucket, g.answers FROM @extschema@.rollup_answer_delay g
             WHERE g.day >= @extschema@.utc_day(@extschema@.utc_ceil(since))
            UNION ALL
            SELECT @extschema@.delay_bucket(p.d), count(*) FROM part p GROUP BY 1) b
     GROUP BY b.bucket
    HAVING sum(b.answers) > 0
  ), cum AS (
    SELECT h.bucket, h.n, (sum(h.n) OVER (ORDER BY h.bucket) - h.n)::bigint AS below,
           (sum(h.n) OVER ())::bigint AS total
      FROM h
  ), pos AS (
    -- 0-based positions of the middle answers: one when their number is odd, two when even
    SELECT DISTINCT v.p FROM (SELECT cum.total FROM cum LIMIT 1) t,
           LATERAL (VALUES ((t.total - 1) / 2), (t.total / 2)) v(p)
  ), want AS (
    -- per bucket, the first middle position in it and how many of the (consecutive) middle
    -- positions it holds: one index scan per bucket, not one per position
    SELECT cum.bucket, min(pos.p) - cum.below AS skip, count(*) AS n
      FROM pos
      JOIN cum ON pos.p >= cum.below AND pos.p < cum.below + cum.n
     GROUP BY cum.bucket, cum.below
  )
  SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY m.d)
    FROM want
   CROSS JOIN LATERAL (
     SELECT r.answered_after AS d
       FROM @extschema@.response r
      WHERE r.answered_after IS NOT NULL
        AND r.answered_after >= coalesce((@extschema@.delay_thresholds())[want.bucket], interval '-100000000 years')
        AND r.answered_after < coalesce((@extschema@.delay_thresholds())[want.bucket + 1], interval '100000000 years')
        AND r.funnel_at >= since
      ORDER BY r.answered_after
     OFFSET want.skip LIMIT want.n) m
$$;

-- ==== session 5: queue ====
-- claim_surveys: generic plans for its picks (their LIMIT parameter had them planned again on
-- every call); the one-statement claim reads survey through its primary key either way. With
-- room under a daily cap, the surveys are leased first and the cap's counters taken last, so a
-- claimer holds the counter row only for the end of its claim and its commit.
CREATE OR REPLACE FUNCTION @extschema@.claim_surveys(worker text, max integer DEFAULT 100,
                                          lease interval DEFAULT '5 minutes')
RETURNS SETOF @extschema@.claimed_survey
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- The picks' LIMIT is a parameter: a generic plan costs it at a tenth of the queue, so the plan
-- cache would plan them again on every call (custom plans), a third of a claim's time. Their
-- generic plans are the same walks of survey_queue_visible_idx.
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
  lease_end timestamptz;
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
  got integer := 0;         -- surveys leased so far
  asked integer;            -- asked for in this round
  n integer;                -- picked in this round
  rounds integer := 0;
  p_ids bigint[];           -- the round's picked surveys in queue order,
  p_src integer[];          -- their sources,
  p_state text[];           -- and closed / counted / free
  p_due timestamptz[];      -- their due_at
  late boolean;             -- lease first, take the cap's counters after
  leased @extschema@.claimed_survey[];
  claim_ids bigint[];
  over_ids bigint[];        -- counted ones over their source's cap
  put_off bigint[];         -- closed and over-cap ones
  k integer;
  want integer;
  granted integer;
BEGIN
  -- Not STRICT: a NULL argument is a caller bug and gets 22004, not a silent empty result.
  IF worker IS NULL OR max IS NULL OR lease IS NULL THEN
    RAISE EXCEPTION 'claim_surveys: % must not be NULL',
      CASE WHEN worker IS NULL THEN 'worker' WHEN max IS NULL THEN 'max' ELSE 'lease' END
      USING ERRCODE = '22004';
  END IF;
  IF worker = '' OR length(worker) > 200 THEN
    RAISE EXCEPTION 'claim_surveys: worker name must have 1..200 characters, got %', length(worker)
      USING ERRCODE = '22023';
  END IF;
  IF max <= 0 OR max > 10000 THEN
    RAISE EXCEPTION 'claim_surveys: max % is out of range 1..10000', max USING ERRCODE = '22023';
  END IF;
  IF caller IS NULL THEN  -- the session's login role was dropped meanwhile
    RAISE EXCEPTION 'claim_surveys: the session''s login role no longer exists' USING ERRCODE = '42704';
  END IF;
  -- Checked for what it does: no negative part (35_intervals.sql), then in absolute time from now.
  IF @extschema@.interval_within(lease, '1 microsecond', '1 day') THEN
    lease_end := now() + lease;
  END IF;
  IF lease_end IS NULL OR lease_end <= now() OR lease_end > now() + interval '25 hours' THEN
    RAISE EXCEPTION 'claim_surveys: lease % is out of range (0, 1 day] or has a negative part', lease
      USING ERRCODE = '22023';
  END IF;
  -- Without a send window or a daily cap on any source, a claim is one statement.
  IF NOT EXISTS (SELECT 1 FROM @extschema@.payment_source p
                  WHERE p.daily_cap IS NOT NULL OR NOT @extschema@.window_always_open(p.send_days, p.send_from, p.send_until)) THEN
    RETURN QUERY
    WITH picked AS (
      SELECT s.id
        FROM @extschema@.survey_queue q
        JOIN @extschema@.survey s ON s.id = q.survey_id
       WHERE q.visible_at <= now()  -- survey_queue_visible_idx
         AND s.status IN ('pending', 'sending')
         AND s.send_after <= now()
         AND s.expires_at > now()
         AND (s.status = 'pending'
              OR (s.lease_until <= now()
                  AND s.attempts < (SELECT p.max_attempts FROM @extschema@.payment_source p
                                     WHERE p.id = s.source_id)))
       ORDER BY q.visible_at  -- the queue index's order: no sort of the whole backlog
       LIMIT claim_surveys.max
         FOR UPDATE OF s SKIP LOCKED
    ), claimed AS (
      UPDATE @extschema@.survey s
         SET status = 'sending',
             lease_owner = claim_surveys.worker,
             lease_role = caller,
             lease_until = lease_end,
             attempts = s.attempts + 1,
             due_at = NULL
       WHERE s.id = ANY (ARRAY(SELECT picked.id FROM picked))  -- survey_pkey, whatever picked's estimate
      RETURNING s.id, s.token, s.customer_id, s.channel, s.attempts, s.lease_until, s.expires_at,
                s.source_id, s.event_id, s.send_after, s.reminder
    )
    -- The payment context: one primary-key probe per claimed survey (LIMIT 1 keeps each LATERAL
    -- subquery a nested loop; a plain join let the planner hash the whole payment_event table).
    SELECT c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at,
           p.name, e.kind, e.amount, e.currency, e.occurred_at, e.attributes, c.reminder
      FROM claimed c
      LEFT JOIN LATERAL (SELECT p.name FROM @extschema@.payment_source p
                          WHERE p.id = c.source_id LIMIT 1) p ON true
      LEFT JOIN LATERAL (SELECT e.kind, e.amount, e.currency, e.occurred_at, e.attributes
                           FROM @extschema@.payment_event e WHERE e.id = c.event_id LIMIT 1) e ON true
     ORDER BY c.send_after, c.id;
    RETURN;
  END IF;

  -- Send windows and daily caps (61_send_policy.sql). Each round picks due surveys exactly as
  -- above (FOR UPDATE SKIP LOCKED, queue order) and judges each one: 'closed' (outside its send
  -- window now, in the recipient's time zone), 'counted' (the first claim of a send for a source
  -- with a daily cap: first sends and reminders count, a retry or a re-claim after a lapsed lease
  -- does not) or 'free'. Closed ones move to their window's next opening and over-cap ones to
  -- the next day's (send_after, so they leave the head of the queue and due_at keeps when they
  -- fell due); the rest are leased. A round that put surveys off leaves room for another, so a
  -- claim does not come back empty while due surveys inside their windows wait behind them.
  -- A change of a source's window or cap waits for the claims under way (the advisory lock of
  -- reschedule_surveys, 61_send_policy.sql), so it sees every survey they put off.
  PERFORM pg_catalog.pg_advisory_xact_lock_shared(
            '@extschema@.payment_source'::pg_catalog.regclass::pg_catalog.oid::pg_catalog.int4, x.id)
     FROM (SELECT p.id FROM @extschema@.payment_source p
            WHERE p.daily_cap IS NOT NULL OR NOT @extschema@.window_always_open(p.send_days, p.send_from, p.send_until)
            ORDER BY p.id OFFSET 0) x;  -- in id order
  LOOP
    asked := claim_surveys.max - got;
    SELECT coalesce(array_agg(j.id ORDER BY j.send_after, j.id), '{}'),
           coalesce(array_agg(j.source_id ORDER BY j.send_after, j.id), '{}'),
           coalesce(array_agg(j.state ORDER BY j.send_after, j.id), '{}'),
           coalesce(array_agg(j.due_at ORDER BY j.send_after, j.id), '{}')
      INTO p_ids, p_src, p_state, p_due
      FROM (
        SELECT pk.id, pk.source_id, pk.send_after, pk.due_at,
               CASE WHEN p.id IS NOT NULL
                         AND NOT @extschema@.window_always_open(p.send_days, p.send_from, p.send_until)
                         AND NOT (extract(isodow FROM l.t)::integer = ANY (p.send_days)
                                  AND l.t::time >= p.send_from AND l.t::time < p.send_until)
                    THEN 'closed'
                    WHEN p.daily_cap IS NOT NULL AND pk.status = 'pending' AND pk.attempts = 0 THEN 'counted'
                    ELSE 'free' END AS state
          FROM (SELECT s.id, s.source_id, s.send_after, s.status, s.attempts, s.time_zone, s.due_at
                  FROM @extschema@.survey_queue q
                  JOIN @extschema@.survey s ON s.id = q.survey_id
                 WHERE q.visible_at <= now()  -- survey_queue_visible_idx
                   AND s.status IN ('pending', 'sending')
                   AND s.send_after <= now()
                   AND s.expires_at > now()
                   AND (s.status = 'pending'
                        OR (s.lease_until <= now()
                            AND s.attempts < (SELECT p.max_attempts FROM @extschema@.payment_source p
                                               WHERE p.id = s.source_id)))
                 ORDER BY q.visible_at
                 LIMIT asked
                   FOR UPDATE OF s SKIP LOCKED) pk
          LEFT JOIN @extschema@.payment_source p ON p.id = pk.source_id
          -- local wall-clock time of the recipient (its zone if PostgreSQL knows it, else the source's)
          CROSS JOIN LATERAL (SELECT now() AT TIME ZONE @extschema@.send_zone(pk.time_zone, p.time_zone) AS t) l
      ) j;
    n := cardinality(p_ids);
    EXIT WHEN n = 0;
    put_off := '{}';
    over_ids := '{}';
    -- Daily caps: a counter row per source and day of the source's time zone, locked in source
    -- order (no deadlock between claimers of several capped sources) and held to the end of the
    -- transaction, so concurrent claimers never grant more than the cap together. While the
    -- committed counts leave room for every counted survey of the round (the usual case), the
    -- surveys are leased first and the counters taken last, so a claimer holds them only for
    -- the end of its claim and its commit, not for the lease of the whole batch; one that
    -- finds less room than the committed counts promised (concurrent claims took it) gives its
    -- over-cap surveys back right away. Near the cap the counters are taken first, as no
    -- lease is worth taking then.
    late := false;
    IF 'counted' = ANY (p_state) THEN
      late := NOT EXISTS (
        SELECT 1
          FROM (SELECT u.src, count(*) AS want FROM unnest(p_src, p_state) AS u(src, st)
                 WHERE u.st = 'counted' GROUP BY u.src) w
          JOIN @extschema@.payment_source p ON p.id = w.src
          LEFT JOIN @extschema@.send_day d
                 ON d.source_id = w.src AND d.day = (now() AT TIME ZONE coalesce(p.time_zone, 'UTC'))::date
         WHERE p.daily_cap IS NULL OR coalesce(d.claimed, 0) + w.want > p.daily_cap);
      IF NOT late THEN
        FOR k, want IN SELECT u.src, count(*)::integer FROM unnest(p_src, p_state) AS u(src, st)
                        WHERE u.st = 'counted' GROUP BY u.src ORDER BY u.src LOOP
          granted := @extschema@.take_send_quota(k, want);
          IF granted < want THEN
            over_ids := over_ids || ARRAY(SELECT u.id FROM unnest(p_ids, p_src, p_state) WITH ORDINALITY AS u(id, src, st, ord)
                                           WHERE u.st = 'counted' AND u.src = k ORDER BY u.ord OFFSET granted);
          END IF;
        END LOOP;
      END IF;
    END IF;
    IF 'closed' = ANY (p_state) OR cardinality(over_ids) > 0 THEN
      put_off := over_ids || ARRAY(SELECT u.id FROM unnest(p_ids, p_state) AS u(id, st) WHERE u.st = 'closed');
      -- Closed ones to their window's next opening, over-cap ones to the next day's.
      UPDATE @extschema@.survey s
         SET status = 'pending', lease_owner = NULL, lease_until = NULL, lease_role = NULL,
             due_at = coalesce(s.due_at, s.send_after),
             cap_deferrals = s.cap_deferrals + CASE WHEN s.id = ANY (over_ids) THEN 1 ELSE 0 END,
             send_after = greatest(now() + interval '1 second',
                                   @extschema@.send_window_next(
                                     CASE WHEN s.id = ANY (over_ids)
                                          THEN @extschema@.next_local_midnight(now(), coalesce(p.time_zone, 'UTC'))
                                          ELSE now() END,
                                     @extschema@.send_zone(s.time_zone, p.time_zone),
                                     p.send_days, p.send_from, p.send_until))
        FROM @extschema@.payment_source p
       WHERE p.id = s.source_id AND s.id = ANY (put_off);
      claim_ids := ARRAY(SELECT u.id FROM unnest(p_ids, p_state) WITH ORDINALITY AS u(id, st, ord)
                          WHERE u.id <> ALL (put_off) ORDER BY u.ord);
    ELSE
      claim_ids := p_ids;
    END IF;
    IF cardinality(claim_ids) > 0 AND NOT late THEN
      RETURN QUERY
      WITH claimed AS (
        UPDATE @extschema@.survey s
           SET status = 'sending',
               lease_owner = claim_surveys.worker,
               lease_role = caller,
               lease_until = lease_end,
               attempts = s.attempts + 1,
               due_at = NULL
         WHERE s.id = ANY (claim_ids)
        RETURNING s.id, s.token, s.customer_id, s.channel, s.attempts, s.lease_until, s.expires_at,
                  s.source_id, s.event_id, s.send_after, s.reminder
      )
      SELECT c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at,
             p.name, e.kind, e.amount, e.currency, e.occurred_at, e.attributes, c.reminder
        FROM claimed c
        LEFT JOIN LATERAL (SELECT p.name FROM @extschema@.payment_source p
                            WHERE p.id = c.source_id LIMIT 1) p ON true
        LEFT JOIN LATERAL (SELECT e.kind, e.amount, e.currency, e.occurred_at, e.attributes
                             FROM @extschema@.payment_event e WHERE e.id = c.event_id LIMIT 1) e ON true
       ORDER BY c.send_after, c.id;
      GET DIAGNOSTICS k = ROW_COUNT;
      got := got + k;
    ELSIF cardinality(claim_ids) > 0 THEN
      -- leased first (kept here, returned once the cap has granted them) ...
      WITH claimed AS (
        UPDATE @extschema@.survey s
           SET status = 'sending',
               lease_owner = claim_surveys.worker,
               lease_role = caller,
               lease_until = lease_end,
               attempts = s.attempts + 1,
               due_at = NULL
         WHERE s.id = ANY (claim_ids)
        RETURNING s.id, s.token, s.customer_id, s.channel, s.attempts, s.lease_until, s.expires_at,
                  s.source_id, s.event_id, s.send_after, s.reminder
      )
      SELECT coalesce(array_agg(ROW(c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at,
                                    p.name, e.kind, e.amount, e.currency, e.occurred_at, e.attributes, c.reminder)::@extschema@.claimed_survey
                                ORDER BY c.send_after, c.id), '{}')
        INTO leased
        FROM claimed c
        LEFT JOIN LATERAL (SELECT p.name FROM @extschema@.payment_source p
                            WHERE p.id = c.source_id LIMIT 1) p ON true
        LEFT JOIN LATERAL (SELECT e.kind, e.amount, e.currency, e.occurred_at, e.attributes
                             FROM @extschema@.payment_event e WHERE e.id = c.event_id LIMIT 1) e ON true;
      -- ... then the cap's counters, in source order
      FOR k, want IN SELECT u.src, count(*)::integer FROM unnest(p_src, p_state) AS u(src, st)
                      WHERE u.st = 'counted' GROUP BY u.src ORDER BY u.src LOOP
        granted := @extschema@.take_send_quota(k, want);
        IF granted < want THEN
          over_ids := over_ids || ARRAY(SELECT u.id FROM unnest(p_ids, p_src, p_state) WITH ORDINALITY AS u(id, src, st, ord)
                                         WHERE u.st = 'counted' AND u.src = k ORDER BY u.ord OFFSET granted);
        END IF;
      END LOOP;
      IF cardinality(over_ids) > 0 THEN
        -- Over the cap after all: back as they were (attempts, due_at), put off to the next day's
        -- opening, exactly as the counters-first order would have put them off.
        UPDATE @extschema@.survey s
           SET status = 'pending', lease_owner = NULL, lease_until = NULL, lease_role = NULL,
               attempts = s.attempts - 1,
               due_at = coalesce(u.due_at, s.send_after),
               cap_deferrals = s.cap_deferrals + 1,
               send_after = greatest(now() + interval '1 second',
                                     @extschema@.send_window_next(
                                       @extschema@.next_local_midnight(now(), coalesce(p.time_zone, 'UTC')),
                                       @extschema@.send_zone(s.time_zone, p.time_zone),
                                       p.send_days, p.send_from, p.send_until))
          FROM @extschema@.payment_source p, unnest(p_ids, p_due) AS u(id, due_at)
         WHERE p.id = s.source_id AND s.id = u.id AND s.id = ANY (over_ids);
      END IF;
      RETURN QUERY SELECT (r).* FROM unnest(leased) AS r WHERE r.id <> ALL (over_ids);
      GET DIAGNOSTICS k = ROW_COUNT;
      got := got + k;
    END IF;
    rounds := rounds + 1;
    -- done: enough, the queue had no more due surveys, or enough rounds for one call
    EXIT WHEN got >= claim_surveys.max OR n < asked OR rounds >= 20;
  END LOOP;
END
$fn$;
COMMENT ON FUNCTION @extschema@.claim_surveys(text, integer, interval) IS
  'Leases up to max due surveys (pending, or sending with a lapsed lease) to worker and the '
  'session''s login role for lease; FOR UPDATE SKIP LOCKED: concurrent workers never get the '
  'same survey while a lease holds. Only surveys inside their source''s send window (recipient''s '
  'time zone) and within its daily cap; the others are put off to the next opening';

-- ---------------------------------------------------------------------------------------------
-- queue (session 5, review): a claim round's share of the caps in one function; one lease statement
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
REVOKE ALL ON FUNCTION @extschema@.take_round_quota(bigint[], integer[], text[]) FROM PUBLIC;
CREATE OR REPLACE FUNCTION @extschema@.claim_surveys(worker text, max integer DEFAULT 100,
                                          lease interval DEFAULT '5 minutes')
RETURNS SETOF @extschema@.claimed_survey
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- The picks' LIMIT is a parameter: a generic plan costs it at a tenth of the queue, so the plan
-- cache would plan them again on every call (custom plans), a third of a claim's time. Their
-- generic plans are the same walks of survey_queue_visible_idx.
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
  lease_end timestamptz;
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
  got integer := 0;         -- surveys leased so far
  asked integer;            -- asked for in this round
  n integer;                -- picked in this round
  rounds integer := 0;
  p_ids bigint[];           -- the round's picked surveys in queue order,
  p_src integer[];          -- their sources,
  p_state text[];           -- and closed / counted / free
  p_due timestamptz[];      -- their due_at
  late boolean;             -- lease first, take the cap's counters after
  leased @extschema@.claimed_survey[];
  claim_ids bigint[];
  over_ids bigint[];        -- counted ones over their source's cap
  put_off bigint[];         -- closed and over-cap ones
  k integer;
BEGIN
  -- Not STRICT: a NULL argument is a caller bug and gets 22004, not a silent empty result.
  IF worker IS NULL OR max IS NULL OR lease IS NULL THEN
    RAISE EXCEPTION 'claim_surveys: % must not be NULL',
      CASE WHEN worker IS NULL THEN 'worker' WHEN max IS NULL THEN 'max' ELSE 'lease' END
      USING ERRCODE = '22004';
  END IF;
  IF worker = '' OR length(worker) > 200 THEN
    RAISE EXCEPTION 'claim_surveys: worker name must have 1..200 characters, got %', length(worker)
      USING ERRCODE = '22023';
  END IF;
  IF max <= 0 OR max > 10000 THEN
    RAISE EXCEPTION 'claim_surveys: max % is out of range 1..10000', max USING ERRCODE = '22023';
  END IF;
  IF caller IS NULL THEN  -- the session's login role was dropped meanwhile
    RAISE EXCEPTION 'claim_surveys: the session''s login role no longer exists' USING ERRCODE = '42704';
  END IF;
  -- Checked for what it does: no negative part (35_intervals.sql), then in absolute time from now.
  IF @extschema@.interval_within(lease, '1 microsecond', '1 day') THEN
    lease_end := now() + lease;
  END IF;
  IF lease_end IS NULL OR lease_end <= now() OR lease_end > now() + interval '25 hours' THEN
    RAISE EXCEPTION 'claim_surveys: lease % is out of range (0, 1 day] or has a negative part', lease
      USING ERRCODE = '22023';
  END IF;
  -- Without a send window or a daily cap on any source, a claim is one statement.
  IF NOT EXISTS (SELECT 1 FROM @extschema@.payment_source p
                  WHERE p.daily_cap IS NOT NULL OR NOT @extschema@.window_always_open(p.send_days, p.send_from, p.send_until)) THEN
    RETURN QUERY
    WITH picked AS (
      SELECT s.id
        FROM @extschema@.survey_queue q
        JOIN @extschema@.survey s ON s.id = q.survey_id
       WHERE q.visible_at <= now()  -- survey_queue_visible_idx
         AND s.status IN ('pending', 'sending')
         AND s.send_after <= now()
         AND s.expires_at > now()
         AND (s.status = 'pending'
              OR (s.lease_until <= now()
                  AND s.attempts < (SELECT p.max_attempts FROM @extschema@.payment_source p
                                     WHERE p.id = s.source_id)))
       ORDER BY q.visible_at  -- the queue index's order: no sort of the whole backlog
       LIMIT claim_surveys.max
         FOR UPDATE OF s SKIP LOCKED
    ), claimed AS (
      UPDATE @extschema@.survey s
         SET status = 'sending',
             lease_owner = claim_surveys.worker,
             lease_role = caller,
             lease_until = lease_end,
             attempts = s.attempts + 1,
             due_at = NULL
       WHERE s.id = ANY (ARRAY(SELECT picked.id FROM picked))  -- survey_pkey, whatever picked's estimate
      RETURNING s.id, s.token, s.customer_id, s.channel, s.attempts, s.lease_until, s.expires_at,
                s.source_id, s.event_id, s.send_after, s.reminder
    )
    -- The payment context: one primary-key probe per claimed survey (LIMIT 1 keeps each LATERAL
    -- subquery a nested loop; a plain join let the planner hash the whole payment_event table).
    SELECT c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at,
           p.name, e.kind, e.amount, e.currency, e.occurred_at, e.attributes, c.reminder
      FROM claimed c
      LEFT JOIN LATERAL (SELECT p.name FROM @extschema@.payment_source p
                          WHERE p.id = c.source_id LIMIT 1) p ON true
      LEFT JOIN LATERAL (SELECT e.kind, e.amount, e.currency, e.occurred_at, e.attributes
                           FROM @extschema@.payment_event e WHERE e.id = c.event_id LIMIT 1) e ON true
     ORDER BY c.send_after, c.id;
    RETURN;
  END IF;

  -- Send windows and daily caps (61_send_policy.sql). Each round picks due surveys exactly as
  -- above (FOR UPDATE SKIP LOCKED, queue order) and judges each one: 'closed' (outside its send
  -- window now, in the recipient's time zone), 'counted' (the first claim of a send for a source
  -- with a daily cap: first sends and reminders count, a retry or a re-claim after a lapsed lease
  -- does not) or 'free'. Closed ones move to their window's next opening and over-cap ones to
  -- the next day's (send_after, so they leave the head of the queue and due_at keeps when they
  -- fell due); the rest are leased. A round that put surveys off leaves room for another, so a
  -- claim does not come back empty while due surveys inside their windows wait behind them.
  -- A change of a source's window or cap waits for the claims under way (the advisory lock of
  -- reschedule_surveys, 61_send_policy.sql), so it sees every survey they put off.
  PERFORM pg_catalog.pg_advisory_xact_lock_shared(
            '@extschema@.payment_source'::pg_catalog.regclass::pg_catalog.oid::pg_catalog.int4, x.id)
     FROM (SELECT p.id FROM @extschema@.payment_source p
            WHERE p.daily_cap IS NOT NULL OR NOT @extschema@.window_always_open(p.send_days, p.send_from, p.send_until)
            ORDER BY p.id OFFSET 0) x;  -- in id order
  LOOP
    asked := claim_surveys.max - got;
    SELECT coalesce(array_agg(j.id ORDER BY j.send_after, j.id), '{}'),
           coalesce(array_agg(j.source_id ORDER BY j.send_after, j.id), '{}'),
           coalesce(array_agg(j.state ORDER BY j.send_after, j.id), '{}'),
           coalesce(array_agg(j.due_at ORDER BY j.send_after, j.id), '{}')
      INTO p_ids, p_src, p_state, p_due
      FROM (
        SELECT pk.id, pk.source_id, pk.send_after, pk.due_at,
               CASE WHEN p.id IS NOT NULL
                         AND NOT @extschema@.window_always_open(p.send_days, p.send_from, p.send_until)
                         AND NOT (extract(isodow FROM l.t)::integer = ANY (p.send_days)
                                  AND l.t::time >= p.send_from AND l.t::time < p.send_until)
                    THEN 'closed'
                    WHEN p.daily_cap IS NOT NULL AND pk.status = 'pending' AND pk.attempts = 0 THEN 'counted'
                    ELSE 'free' END AS state
          FROM (SELECT s.id, s.source_id, s.send_after, s.status, s.attempts, s.time_zone, s.due_at
                  FROM @extschema@.survey_queue q
                  JOIN @extschema@.survey s ON s.id = q.survey_id
                 WHERE q.visible_at <= now()  -- survey_queue_visible_idx
                   AND s.status IN ('pending', 'sending')
                   AND s.send_after <= now()
                   AND s.expires_at > now()
                   AND (s.status = 'pending'
                        OR (s.lease_until <= now()
                            AND s.attempts < (SELECT p.max_attempts FROM @extschema@.payment_source p
                                               WHERE p.id = s.source_id)))
                 ORDER BY q.visible_at
                 LIMIT asked
                   FOR UPDATE OF s SKIP LOCKED) pk
          LEFT JOIN @extschema@.payment_source p ON p.id = pk.source_id
          -- local wall-clock time of the recipient (its zone if PostgreSQL knows it, else the source's)
          CROSS JOIN LATERAL (SELECT now() AT TIME ZONE @extschema@.send_zone(pk.time_zone, p.time_zone) AS t) l
      ) j;
    n := cardinality(p_ids);
    EXIT WHEN n = 0;
    put_off := '{}';
    over_ids := '{}';
    -- Daily caps: a counter row per source and day of the source's time zone, locked in source
    -- order (no deadlock between claimers of several capped sources) and held to the end of the
    -- transaction, so concurrent claimers never grant more than the cap together. While the
    -- committed counts leave room for every counted survey of the round (the usual case), the
    -- surveys are leased first and the counters taken last, so a claimer holds them only for
    -- the end of its claim and its commit, not for the lease of the whole batch; one that
    -- finds less room than the committed counts promised (concurrent claims took it) gives its
    -- over-cap surveys back right away. Near the cap the counters are taken first, as no
    -- lease is worth taking then.
    late := false;
    IF 'counted' = ANY (p_state) THEN
      late := NOT EXISTS (
        SELECT 1
          FROM (SELECT u.src, count(*) AS want FROM unnest(p_src, p_state) AS u(src, st)
                 WHERE u.st = 'counted' GROUP BY u.src) w
          JOIN @extschema@.payment_source p ON p.id = w.src
          LEFT JOIN @extschema@.send_day d
                 ON d.source_id = w.src AND d.day = (now() AT TIME ZONE coalesce(p.time_zone, 'UTC'))::date
         WHERE p.daily_cap IS NULL OR coalesce(d.claimed, 0) + w.want > p.daily_cap);
      IF NOT late THEN
        over_ids := @extschema@.take_round_quota(p_ids, p_src, p_state);
      END IF;
    END IF;
    IF 'closed' = ANY (p_state) OR cardinality(over_ids) > 0 THEN
      put_off := over_ids || ARRAY(SELECT u.id FROM unnest(p_ids, p_state) AS u(id, st) WHERE u.st = 'closed');
      -- Closed ones to their window's next opening, over-cap ones to the next day's.
      UPDATE @extschema@.survey s
         SET status = 'pending', lease_owner = NULL, lease_until = NULL, lease_role = NULL,
             due_at = coalesce(s.due_at, s.send_after),
             cap_deferrals = s.cap_deferrals + CASE WHEN s.id = ANY (over_ids) THEN 1 ELSE 0 END,
             send_after = greatest(now() + interval '1 second',
                                   @extschema@.send_window_next(
                                     CASE WHEN s.id = ANY (over_ids)
                                          THEN @extschema@.next_local_midnight(now(), coalesce(p.time_zone, 'UTC'))
                                          ELSE now() END,
                                     @extschema@.send_zone(s.time_zone, p.time_zone),
                                     p.send_days, p.send_from, p.send_until))
        FROM @extschema@.payment_source p
       WHERE p.id = s.source_id AND s.id = ANY (put_off);
      claim_ids := ARRAY(SELECT u.id FROM unnest(p_ids, p_state) WITH ORDINALITY AS u(id, st, ord)
                          WHERE u.id <> ALL (put_off) ORDER BY u.ord);
    ELSE
      claim_ids := p_ids;
    END IF;
    IF cardinality(claim_ids) > 0 THEN
      -- leased (kept here: with the cap taken late, returned once it has granted them) ...
      WITH claimed AS (
        UPDATE @extschema@.survey s
           SET status = 'sending',
               lease_owner = claim_surveys.worker,
               lease_role = caller,
               lease_until = lease_end,
               attempts = s.attempts + 1,
               due_at = NULL
         WHERE s.id = ANY (claim_ids)
        RETURNING s.id, s.token, s.customer_id, s.channel, s.attempts, s.lease_until, s.expires_at,
                  s.source_id, s.event_id, s.send_after, s.reminder
      )
      SELECT coalesce(array_agg(ROW(c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at,
                                    p.name, e.kind, e.amount, e.currency, e.occurred_at, e.attributes, c.reminder)::@extschema@.claimed_survey
                                ORDER BY c.send_after, c.id), '{}')
        INTO leased
        FROM claimed c
        LEFT JOIN LATERAL (SELECT p.name FROM @extschema@.payment_source p
                            WHERE p.id = c.source_id LIMIT 1) p ON true
        LEFT JOIN LATERAL (SELECT e.kind, e.amount, e.currency, e.occurred_at, e.attributes
                             FROM @extschema@.payment_event e WHERE e.id = c.event_id LIMIT 1) e ON true;
      IF late THEN
        -- ... then the cap's counters
        over_ids := @extschema@.take_round_quota(p_ids, p_src, p_state);
        IF cardinality(over_ids) > 0 THEN
          -- Over the cap after all: back as they were (attempts, due_at), put off to the next
          -- day's opening, exactly as the counters-first order would have put them off.
          UPDATE @extschema@.survey s
             SET status = 'pending', lease_owner = NULL, lease_until = NULL, lease_role = NULL,
                 attempts = s.attempts - 1,
                 due_at = coalesce(u.due_at, s.send_after),
                 cap_deferrals = s.cap_deferrals + 1,
                 send_after = greatest(now() + interval '1 second',
                                       @extschema@.send_window_next(
                                         @extschema@.next_local_midnight(now(), coalesce(p.time_zone, 'UTC')),
                                         @extschema@.send_zone(s.time_zone, p.time_zone),
                                         p.send_days, p.send_from, p.send_until))
            FROM @extschema@.payment_source p, unnest(p_ids, p_due) AS u(id, due_at)
           WHERE p.id = s.source_id AND s.id = u.id AND s.id = ANY (over_ids);
        END IF;
      END IF;
      -- (without the late cap, over_ids were never leased)
      RETURN QUERY SELECT (r).* FROM unnest(leased) AS r WHERE r.id <> ALL (over_ids);
      GET DIAGNOSTICS k = ROW_COUNT;
      got := got + k;
    END IF;
    rounds := rounds + 1;
    -- done: enough, the queue had no more due surveys, or enough rounds for one call
    EXIT WHEN got >= claim_surveys.max OR n < asked OR rounds >= 20;
  END LOOP;
END
$fn$;
COMMENT ON FUNCTION @extschema@.claim_surveys(text, integer, interval) IS
  'Leases up to max due surveys (pending, or sending with a lapsed lease) to worker and the '
  'session''s login role for lease; FOR UPDATE SKIP LOCKED: concurrent workers never get the '
  'same survey while a lease holds. Only surveys inside their source''s send window (recipient''s '
  'time zone) and within its daily cap; the others are put off to the next opening';

-- ==== session 6: queue ====
-- claim_surveys with send windows or daily caps: one statement per round (pick and judge, caps
-- taken first near a cap, put off, lease with the payment context) instead of three; the
-- put-off time of a survey written once (put_off_until).
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
REVOKE ALL ON FUNCTION @extschema@.put_off_until(boolean, text, text, integer[], time, time) FROM PUBLIC;
CREATE OR REPLACE FUNCTION @extschema@.claim_surveys(worker text, max integer DEFAULT 100,
                                          lease interval DEFAULT '5 minutes')
RETURNS SETOF @extschema@.claimed_survey
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- The picks' LIMIT is a parameter: a generic plan costs it at a tenth of the queue, so the plan
-- cache would plan them again on every call (custom plans), a third of a claim's time. Their
-- generic plans are the same walks of survey_queue_visible_idx.
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
  lease_end timestamptz;
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
  got integer := 0;         -- surveys leased so far
  asked integer;            -- asked for in this round
  n integer;                -- picked in this round
  rounds integer := 0;
  p_ids bigint[];           -- the round's picked surveys in queue order,
  p_src integer[];          -- their sources,
  p_state text[];           -- and closed / counted / free
  p_due timestamptz[];      -- their due_at before the lease
  late boolean;             -- leased first, the cap's counters to be taken after
  leased @extschema@.claimed_survey[];
  over_ids bigint[];        -- counted ones over their source's cap, found after the lease
  k integer;
BEGIN
  -- Not STRICT: a NULL argument is a caller bug and gets 22004, not a silent empty result.
  IF worker IS NULL OR max IS NULL OR lease IS NULL THEN
    RAISE EXCEPTION 'claim_surveys: % must not be NULL',
      CASE WHEN worker IS NULL THEN 'worker' WHEN max IS NULL THEN 'max' ELSE 'lease' END
      USING ERRCODE = '22004';
  END IF;
  IF worker = '' OR length(worker) > 200 THEN
    RAISE EXCEPTION 'claim_surveys: worker name must have 1..200 characters, got %', length(worker)
      USING ERRCODE = '22023';
  END IF;
  IF max <= 0 OR max > 10000 THEN
    RAISE EXCEPTION 'claim_surveys: max % is out of range 1..10000', max USING ERRCODE = '22023';
  END IF;
  IF caller IS NULL THEN  -- the session's login role was dropped meanwhile
    RAISE EXCEPTION 'claim_surveys: the session''s login role no longer exists' USING ERRCODE = '42704';
  END IF;
  -- Checked for what it does: no negative part (35_intervals.sql), then in absolute time from now.
  IF @extschema@.interval_within(lease, '1 microsecond', '1 day') THEN
    lease_end := now() + lease;
  END IF;
  IF lease_end IS NULL OR lease_end <= now() OR lease_end > now() + interval '25 hours' THEN
    RAISE EXCEPTION 'claim_surveys: lease % is out of range (0, 1 day] or has a negative part', lease
      USING ERRCODE = '22023';
  END IF;
  -- Without a send window or a daily cap on any source, a claim is one statement.
  IF NOT EXISTS (SELECT 1 FROM @extschema@.payment_source p
                  WHERE p.daily_cap IS NOT NULL OR NOT @extschema@.window_always_open(p.send_days, p.send_from, p.send_until)) THEN
    RETURN QUERY
    WITH picked AS (
      SELECT s.id
        FROM @extschema@.survey_queue q
        JOIN @extschema@.survey s ON s.id = q.survey_id
       WHERE q.visible_at <= now()  -- survey_queue_visible_idx
         AND s.status IN ('pending', 'sending')
         AND s.send_after <= now()
         AND s.expires_at > now()
         AND (s.status = 'pending'
              OR (s.lease_until <= now()
                  AND s.attempts < (SELECT p.max_attempts FROM @extschema@.payment_source p
                                     WHERE p.id = s.source_id)))
       ORDER BY q.visible_at  -- the queue index's order: no sort of the whole backlog
       LIMIT claim_surveys.max
         FOR UPDATE OF s SKIP LOCKED
    ), claimed AS (
      UPDATE @extschema@.survey s
         SET status = 'sending',
             lease_owner = claim_surveys.worker,
             lease_role = caller,
             lease_until = lease_end,
             attempts = s.attempts + 1,
             due_at = NULL
       WHERE s.id = ANY (ARRAY(SELECT picked.id FROM picked))  -- survey_pkey, whatever picked's estimate
      RETURNING s.id, s.token, s.customer_id, s.channel, s.attempts, s.lease_until, s.expires_at,
                s.source_id, s.event_id, s.send_after, s.reminder
    )
    -- The payment context: one primary-key probe per claimed survey (LIMIT 1 keeps each LATERAL
    -- subquery a nested loop; a plain join let the planner hash the whole payment_event table).
    SELECT c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at,
           p.name, e.kind, e.amount, e.currency, e.occurred_at, e.attributes, c.reminder
      FROM claimed c
      LEFT JOIN LATERAL (SELECT p.name FROM @extschema@.payment_source p
                          WHERE p.id = c.source_id LIMIT 1) p ON true
      LEFT JOIN LATERAL (SELECT e.kind, e.amount, e.currency, e.occurred_at, e.attributes
                           FROM @extschema@.payment_event e WHERE e.id = c.event_id LIMIT 1) e ON true
     ORDER BY c.send_after, c.id;
    RETURN;
  END IF;

  -- Send windows and daily caps (61_send_policy.sql). Each round picks due surveys exactly as
  -- above (FOR UPDATE SKIP LOCKED, queue order) and judges each one: 'closed' (outside its send
  -- window now, in the recipient's time zone), 'counted' (the first claim of a send for a source
  -- with a daily cap: first sends and reminders count, a retry or a re-claim after a lapsed lease
  -- does not) or 'free'. Closed ones move to their window's next opening and over-cap ones to
  -- the next day's (send_after, so they leave the head of the queue and due_at keeps when they
  -- fell due); the rest are leased. A round that put surveys off leaves room for another, so a
  -- claim does not come back empty while due surveys inside their windows wait behind them.
  -- A change of a source's window or cap waits for the claims under way (the advisory lock of
  -- reschedule_surveys, 61_send_policy.sql), so it sees every survey they put off.
  PERFORM pg_catalog.pg_advisory_xact_lock_shared(
            '@extschema@.payment_source'::pg_catalog.regclass::pg_catalog.oid::pg_catalog.int4, x.id)
     FROM (SELECT p.id FROM @extschema@.payment_source p
            WHERE p.daily_cap IS NOT NULL OR NOT @extschema@.window_always_open(p.send_days, p.send_from, p.send_until)
            ORDER BY p.id OFFSET 0) x;  -- in id order
  LOOP
    asked := claim_surveys.max - got;
    -- One statement per round: pick and judge (pk), decide the order of lease and cap (round),
    -- take the caps first when the committed counts leave too little room (quota), put off the
    -- closed and over-cap ones (off) and lease the rest with their payment context (claimed).
    -- pk is materialized once, so its rows are locked once; each UPDATE finds its rows through
    -- survey_pkey (= ANY of an array), whatever the estimate of pk.
    WITH pk AS MATERIALIZED (
      SELECT pk.id, pk.source_id, pk.send_after, pk.due_at,
             CASE WHEN p.id IS NOT NULL
                       AND NOT @extschema@.window_always_open(p.send_days, p.send_from, p.send_until)
                       AND NOT (extract(isodow FROM l.t)::integer = ANY (p.send_days)
                                AND l.t::time >= p.send_from AND l.t::time < p.send_until)
                  THEN 'closed'
                  WHEN p.daily_cap IS NOT NULL AND pk.status = 'pending' AND pk.attempts = 0 THEN 'counted'
                  ELSE 'free' END AS state
        FROM (SELECT s.id, s.source_id, s.send_after, s.status, s.attempts, s.time_zone, s.due_at
                FROM @extschema@.survey_queue q
                JOIN @extschema@.survey s ON s.id = q.survey_id
               WHERE q.visible_at <= now()  -- survey_queue_visible_idx
                 AND s.status IN ('pending', 'sending')
                 AND s.send_after <= now()
                 AND s.expires_at > now()
                 AND (s.status = 'pending'
                      OR (s.lease_until <= now()
                          AND s.attempts < (SELECT p.max_attempts FROM @extschema@.payment_source p
                                             WHERE p.id = s.source_id)))
               ORDER BY q.visible_at
               LIMIT asked
                 FOR UPDATE OF s SKIP LOCKED) pk
        LEFT JOIN @extschema@.payment_source p ON p.id = pk.source_id
        -- local wall-clock time of the recipient (its zone if PostgreSQL knows it, else the source's)
        CROSS JOIN LATERAL (SELECT now() AT TIME ZONE @extschema@.send_zone(pk.time_zone, p.time_zone) AS t) l
    ), round AS (
      -- Daily caps: a counter row per source and day of the source's time zone, locked in
      -- source order (no deadlock between claimers of several capped sources) and held to the
      -- end of the transaction, so concurrent claimers never grant more than the cap together.
      -- While the committed counts leave room for every counted survey of the round (the usual
      -- case), the surveys are leased first and the counters taken last (late), so a claimer
      -- holds them only for the end of its claim and its commit, not for the lease of the
      -- whole batch. Near the cap the counters are taken first, as no lease is worth taking then.
      SELECT coalesce(array_agg(pk.id ORDER BY pk.send_after, pk.id), '{}') AS ids,
             coalesce(array_agg(pk.source_id ORDER BY pk.send_after, pk.id), '{}') AS src,
             coalesce(array_agg(pk.state ORDER BY pk.send_after, pk.id), '{}') AS st,
             coalesce(array_agg(pk.due_at ORDER BY pk.send_after, pk.id), '{}') AS due,
             NOT EXISTS (
               SELECT 1
                 FROM (SELECT c.source_id, count(*) AS want FROM pk c WHERE c.state = 'counted' GROUP BY c.source_id) w
                 JOIN @extschema@.payment_source p ON p.id = w.source_id
                 LEFT JOIN @extschema@.send_day d
                        ON d.source_id = w.source_id AND d.day = (now() AT TIME ZONE coalesce(p.time_zone, 'UTC'))::date
                WHERE p.daily_cap IS NULL OR coalesce(d.claimed, 0) + w.want > p.daily_cap) AS late
        FROM pk
    ), quota AS (
      -- counters first: the counted surveys over the cap are put off, never leased
      SELECT CASE WHEN NOT r.late AND 'counted' = ANY (r.st)
                  THEN @extschema@.take_round_quota(r.ids, r.src, r.st) ELSE '{}' END AS over
        FROM round r
    ), off AS (
      -- closed ones to their window's next opening, over-cap ones to the next day's
      UPDATE @extschema@.survey s
         SET status = 'pending', lease_owner = NULL, lease_until = NULL, lease_role = NULL,
             due_at = coalesce(s.due_at, s.send_after),
             cap_deferrals = s.cap_deferrals + CASE WHEN s.id = ANY (q.over) THEN 1 ELSE 0 END,
             send_after = @extschema@.put_off_until(s.id = ANY (q.over), s.time_zone, p.time_zone,
                                                    p.send_days, p.send_from, p.send_until)
        FROM quota q, @extschema@.payment_source p
       WHERE p.id = s.source_id
         AND s.id = ANY (ARRAY(SELECT pk.id FROM pk WHERE pk.state = 'closed') || q.over)
    ), claimed AS (
      UPDATE @extschema@.survey s
         SET status = 'sending',
             lease_owner = claim_surveys.worker,
             lease_role = caller,
             lease_until = lease_end,
             attempts = s.attempts + 1,
             due_at = NULL
        FROM quota q
       WHERE s.id = ANY (ARRAY(SELECT pk.id FROM pk WHERE pk.state <> 'closed'))
         AND s.id <> ALL (q.over)
      RETURNING s.id, s.token, s.customer_id, s.channel, s.attempts, s.lease_until, s.expires_at,
                s.source_id, s.event_id, s.send_after, s.reminder
    )
    SELECT r.ids, r.src, r.st, r.due, r.late,
           (SELECT coalesce(array_agg(ROW(c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at,
                                          p.name, e.kind, e.amount, e.currency, e.occurred_at, e.attributes, c.reminder)::@extschema@.claimed_survey
                                      ORDER BY c.send_after, c.id), '{}')
              FROM claimed c
              LEFT JOIN LATERAL (SELECT p.name FROM @extschema@.payment_source p
                                  WHERE p.id = c.source_id LIMIT 1) p ON true
              LEFT JOIN LATERAL (SELECT e.kind, e.amount, e.currency, e.occurred_at, e.attributes
                                   FROM @extschema@.payment_event e WHERE e.id = c.event_id LIMIT 1) e ON true)
      INTO p_ids, p_src, p_state, p_due, late, leased
      FROM round r;
    n := cardinality(p_ids);
    EXIT WHEN n = 0;
    over_ids := '{}';
    IF late AND 'counted' = ANY (p_state) THEN
      -- leased first, then the cap's counters: a claimer that finds less room than the committed
      -- counts promised (concurrent claims took it) gives its over-cap surveys back right away,
      -- as they were (attempts, due_at), put off to the next day's opening, exactly as the
      -- counters-first order would have put them off
      over_ids := @extschema@.take_round_quota(p_ids, p_src, p_state);
      IF cardinality(over_ids) > 0 THEN
        UPDATE @extschema@.survey s
           SET status = 'pending', lease_owner = NULL, lease_until = NULL, lease_role = NULL,
               attempts = s.attempts - 1,
               due_at = coalesce(u.due_at, s.send_after),
               cap_deferrals = s.cap_deferrals + 1,
               send_after = @extschema@.put_off_until(true, s.time_zone, p.time_zone, p.send_days, p.send_from, p.send_until)
          FROM @extschema@.payment_source p, unnest(p_ids, p_due) AS u(id, due_at)
         WHERE p.id = s.source_id AND s.id = u.id AND s.id = ANY (over_ids);
      END IF;
    END IF;
    RETURN QUERY SELECT (r).* FROM unnest(leased) AS r WHERE r.id <> ALL (over_ids);
    GET DIAGNOSTICS k = ROW_COUNT;
    got := got + k;
    rounds := rounds + 1;
    -- done: enough, the queue had no more due surveys, or enough rounds for one call
    EXIT WHEN got >= claim_surveys.max OR n < asked OR rounds >= 20;
  END LOOP;
END
$fn$;
COMMENT ON FUNCTION @extschema@.claim_surveys(text, integer, interval) IS
  'Leases up to max due surveys (pending, or sending with a lapsed lease) to worker and the '
  'session''s login role for lease; FOR UPDATE SKIP LOCKED: concurrent workers never get the '
  'same survey while a lease holds. Only surveys inside their source''s send window (recipient''s '
  'time zone) and within its daily cap; the others are put off to the next opening';
-- survey: room on each page for a claim and a report beside the original version, so both stay
-- in place (HOT) with concurrent senders (pages written from now on; 40_schema.sql says why).
ALTER TABLE @extschema@.survey SET (fillfactor = 34);

-- ==== session 7: capture set path ====
-- The ids of a set statement's events and surveys, read per row by its event insert (src/capture_set_ids.cpp).
CREATE FUNCTION @extschema@._capture_set_id(payment_key text, kind text, which integer) RETURNS bigint
  AS 'MODULE_PATHNAME', 'nps_capture_set_id' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@._capture_set_id(text, text, integer) IS
  'Internal: while the capture trigger inserts the events of a multi-row statement, whether a payment is recorded already (which = 0), its event id (1) or survey id (2); an error anywhere else';

REVOKE ALL ON FUNCTION @extschema@._capture_set_id(text, text, integer) FROM PUBLIC;
