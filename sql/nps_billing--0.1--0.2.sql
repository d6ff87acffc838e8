-- nps_billing 0.1 -> 0.2 (ALTER EXTENSION nps_billing UPDATE).
-- Every schema change in sql/parts/ since 0.1 has its step here, in the same order, so that an
-- updated database has the same catalog as a fresh 0.2 install (test/upgrade.sh checks it).
\echo Use "ALTER EXTENSION nps_billing UPDATE" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- Delivery hardening (intervals checked for what they do; leases held by worker and login role;
-- reports that reveal nothing; batch reports; responded_at checked)
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

-- Leases taken by 0.1 keep lease_role NULL and are matched on the worker name alone until they end.
ALTER TABLE @extschema@.survey ADD COLUMN lease_role name;

DROP FUNCTION @extschema@.lease_check(bigint, text, text);
CREATE OR REPLACE FUNCTION @extschema@.claim_surveys(worker text, max integer DEFAULT 100,
                                          lease interval DEFAULT '5 minutes')
RETURNS SETOF @extschema@.claimed_survey
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  lease_end timestamptz;
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
     WHERE s.status IN ('pending', 'sending')
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
           lease_role = session_user,
           lease_until = lease_end,
           attempts = s.attempts + 1
      FROM picked
     WHERE s.id = picked.id
    RETURNING s.id, s.token, s.customer_id, s.channel, s.attempts, s.lease_until, s.expires_at,
              s.source_id, s.event_id, s.send_after
  )
  SELECT c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at,
         p.name, e.kind, e.amount, e.currency, e.occurred_at, e.attributes
    FROM claimed c
    LEFT JOIN @extschema@.payment_source p ON p.id = c.source_id
    LEFT JOIN @extschema@.payment_event e ON e.id = c.event_id
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
     AND (x.lease_role IS NULL OR x.lease_role = session_user)
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
     AND (x.lease_role IS NULL OR x.lease_role = session_user)
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
       AND (x.lease_role IS NULL OR x.lease_role = session_user)
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
       AND (x.lease_role IS NULL OR x.lease_role = session_user)
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
   WHERE s.status IN ('pending', 'sending', 'sent') AND s.expires_at <= now();
  GET DIAGNOSTICS expired = ROW_COUNT;
  -- Leases that ran out max_attempts times (a sender that crashes on this survey every time)
  -- are never claimed again: close them as failed.
  UPDATE @extschema@.survey s
     SET status = 'failed', lease_owner = NULL, lease_until = NULL, lease_role = NULL,
         last_error = coalesce(s.last_error, 'lease ran out ' || s.attempts || ' times')
    FROM @extschema@.payment_source p
   WHERE s.status = 'sending' AND s.lease_until <= now()
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
