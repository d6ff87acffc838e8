-- Delivery: the survey queue (claim / mark_sent / mark_failed / expire) and responses.
--
-- The queue follows pgmq's visibility-timeout model: claim_surveys() leases due surveys with
-- FOR UPDATE SKIP LOCKED, so concurrent senders never block each other and never get the same
-- survey while its lease holds; a crashed sender's lease runs out and the survey is claimed
-- again (at-least-once delivery, attempts counted, max_attempts per source).
--
-- All functions are SECURITY DEFINER (senders and collectors get EXECUTE on them and nothing on
-- the tables) with a fixed search_path and schema-qualified names. Error messages name survey
-- ids and statuses, never customer ids, tokens or comments.

CREATE TYPE @extschema@.claimed_survey AS (
  id          bigint,       -- survey id: pass it to mark_sent / mark_failed
  token       text,         -- the URL-safe token to put in the survey link
  customer_id text,
  channel     text,         -- email / in_app / sms
  attempts    integer,      -- 1 on the first delivery attempt
  lease_until timestamptz,  -- call mark_sent before this
  expires_at  timestamptz,  -- the link stops accepting answers at this time
  source      text,         -- payment_source.name
  kind        text,         -- succeeded / failed (the payment event that triggered it)
  amount      numeric,
  currency    text,
  occurred_at timestamptz,
  attributes  jsonb
);
COMMENT ON TYPE @extschema@.claimed_survey IS
  'A survey leased by claim_surveys(), with the payment context a message needs';
REVOKE USAGE ON TYPE @extschema@.claimed_survey FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.claim_surveys(worker text, max integer DEFAULT 100,
                                          lease interval DEFAULT '5 minutes')
RETURNS SETOF @extschema@.claimed_survey
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
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
  IF lease <= interval '0' OR lease > interval '1 day' THEN
    RAISE EXCEPTION 'claim_surveys: lease % is out of range (0, 1 day]', lease USING ERRCODE = '22023';
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
           lease_until = now() + claim_surveys.lease,
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
  'Leases up to max due surveys (pending, or sending with a lapsed lease) to worker for lease; '
  'FOR UPDATE SKIP LOCKED: concurrent workers never get the same survey while a lease holds';

-- ---------------------------------------------------------------------------------------------
-- The lease check shared by mark_sent and mark_failed: locks the survey row and returns it, or
-- raises P0002 (no such survey) / 55000 (not leased by this worker any more).
CREATE FUNCTION @extschema@.lease_check(survey_id bigint, worker text, caller text)
RETURNS @extschema@.survey
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  s @extschema@.survey;
BEGIN
  IF survey_id IS NULL OR worker IS NULL THEN
    RAISE EXCEPTION '%: % must not be NULL', caller,
      CASE WHEN survey_id IS NULL THEN 'survey_id' ELSE 'worker' END USING ERRCODE = '22004';
  END IF;
  SELECT * INTO s FROM @extschema@.survey x WHERE x.id = lease_check.survey_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION '%: survey % does not exist', caller, survey_id USING ERRCODE = 'P0002';
  END IF;
  -- The owner may still report after its lease lapsed as long as nobody re-claimed the survey:
  -- the message most likely went out, and recording it prevents a second send.
  IF s.lease_owner IS DISTINCT FROM worker OR s.status NOT IN ('sending', 'responded') THEN
    RAISE EXCEPTION '%: survey % is not leased by worker "%"', caller, survey_id, worker
      USING ERRCODE = '55000',
            DETAIL = CASE
              WHEN s.status = 'sending' THEN 'Another worker holds its lease (a lapsed lease is re-claimed).'
              ELSE format('Its status is %s.', s.status) END,
            HINT = 'Do not report a survey twice; claim it again with claim_surveys().';
  END IF;
  RETURN s;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.lease_check(bigint, text, text) FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.lease_check(bigint, text, text) IS
  'Internal: locks a survey and checks that worker holds its lease; grant nobody';

CREATE FUNCTION @extschema@.mark_sent(survey_id bigint, worker text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  s @extschema@.survey;
BEGIN
  s := @extschema@.lease_check(survey_id, worker, 'mark_sent');
  -- An answer can arrive before the sender reports (in-app surveys): keep 'responded'.
  UPDATE @extschema@.survey x
     SET status = CASE WHEN x.status = 'responded' THEN 'responded' ELSE 'sent' END,
         sent_at = now(), lease_owner = NULL, lease_until = NULL
   WHERE x.id = s.id;
END
$fn$;
COMMENT ON FUNCTION @extschema@.mark_sent(bigint, text) IS
  'Reports a claimed survey as sent; only the worker holding its lease (55000 otherwise)';

CREATE FUNCTION @extschema@.mark_failed(survey_id bigint, worker text, error text,
                                        retry_after interval DEFAULT '15 minutes')
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  s @extschema@.survey;
  max_attempts integer;
  new_status text;
BEGIN
  IF error IS NULL OR retry_after IS NULL THEN
    RAISE EXCEPTION 'mark_failed: % must not be NULL',
      CASE WHEN error IS NULL THEN 'error' ELSE 'retry_after' END USING ERRCODE = '22004';
  END IF;
  IF retry_after < interval '0' THEN
    RAISE EXCEPTION 'mark_failed: retry_after % is negative', retry_after USING ERRCODE = '22023';
  END IF;
  s := @extschema@.lease_check(survey_id, worker, 'mark_failed');
  SELECT p.max_attempts INTO max_attempts FROM @extschema@.payment_source p WHERE p.id = s.source_id;
  new_status := CASE WHEN s.status = 'responded' THEN 'responded'
                     WHEN s.attempts >= coalesce(max_attempts, 5) THEN 'failed'
                     ELSE 'pending' END;
  UPDATE @extschema@.survey x
     SET status = new_status,
         send_after = CASE WHEN new_status = 'pending' THEN now() + retry_after ELSE x.send_after END,
         last_error = left(error, 2000),
         lease_owner = NULL, lease_until = NULL
   WHERE x.id = s.id;
  RETURN new_status;
END
$fn$;
COMMENT ON FUNCTION @extschema@.mark_failed(bigint, text, text, interval) IS
  'Reports a failed delivery: back to pending after retry_after, or failed once attempts reach '
  'the source''s max_attempts (default 5); returns the new status';

CREATE FUNCTION @extschema@.expire_surveys()
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
     SET status = 'expired', lease_owner = NULL, lease_until = NULL
   WHERE s.status IN ('pending', 'sending', 'sent') AND s.expires_at <= now();
  GET DIAGNOSTICS expired = ROW_COUNT;
  -- Leases that ran out max_attempts times (a sender that crashes on this survey every time)
  -- are never claimed again: close them as failed.
  UPDATE @extschema@.survey s
     SET status = 'failed', lease_owner = NULL, lease_until = NULL,
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

-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.record_response(token text, score integer, comment text DEFAULT NULL,
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
  'replaces the first. Unknown token P0002, expired/cancelled survey 22023, score 22003';
