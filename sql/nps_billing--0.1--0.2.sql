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
        AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
      CREATE FUNCTION @extschema@.nps_state_inv_%1$s(@extschema@.npsagg, %2$s) RETURNS @extschema@.npsagg
        AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
      CREATE FUNCTION @extschema@.nps_state_weighted_%1$s(@extschema@.npsagg, %2$s, float8) RETURNS @extschema@.npsagg
        AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

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
