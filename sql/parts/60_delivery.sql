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
  attributes  jsonb,
  reminder    integer       -- 0: the first send; n: the n-th reminder (the survey was sent before)
);
COMMENT ON TYPE @extschema@.claimed_survey IS
  'A survey leased by claim_surveys(), with the payment context a message needs';
REVOKE USAGE ON TYPE @extschema@.claimed_survey FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- Who holds a lease: the worker name the sender chose AND the login role of its session
-- (session_user, stored as its oid in survey.lease_role: 4 bytes, so a claim fits in place). Inside these SECURITY DEFINER functions current_user is the extension owner,
-- so the caller's role is not visible as current_user; session_user is the role that
-- authenticated, which the caller cannot change (only a superuser may SET SESSION
-- AUTHORIZATION). Roles that one login reaches with SET ROLE share its leases: that login may act
-- as any of them anyway. A lease taken before 0.2 (lease_role NULL) is matched on the worker
-- name alone until it ends.
CREATE FUNCTION @extschema@.claim_surveys(worker text, max integer DEFAULT 100,
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

-- ---------------------------------------------------------------------------------------------
-- Reports. The lease check is part of the UPDATE's WHERE clause: one statement per call (or per
-- batch), and a survey the caller does not hold - unknown id, another worker's or another role's
-- lease, a lease re-claimed after it lapsed, already reported, never claimed - is refused with
-- the same 55000 and the same message, which reveals nothing about it. The owner may still
-- report after its lease lapsed as long as nobody re-claimed the survey: the message most likely
-- went out, and recording it prevents a second send.

CREATE FUNCTION @extschema@.mark_sent(survey_id bigint, worker text)
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

CREATE FUNCTION @extschema@.mark_failed(survey_id bigint, worker text, error text,
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

-- Batches: one statement and one lease check for up to 10000 surveys; one row per distinct id,
-- in the order given: ok = true and the new status, or ok = false and NULL status for a survey
-- the caller does not hold (nothing else is revealed about it). Ids are locked in id order
-- (the primary key scan of = ANY), so overlapping batches cannot deadlock.
CREATE FUNCTION @extschema@.mark_sent(survey_ids bigint[], worker text)
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
COMMENT ON FUNCTION @extschema@.expire_surveys() IS
  'Marks overdue pending/sending/sent surveys expired (and lapsed leases past max_attempts failed, '
  'or sent again for a reminder); '
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
COMMENT ON FUNCTION @extschema@.record_response(text, integer, text, timestamptz) IS
  'Stores the answer to a survey (by its token) and returns the response id; a second answer '
  'replaces the first. Unknown token P0002, expired/cancelled survey 22023, score 22003, '
  'responded_at before the survey or in the future (5 minutes of clock skew allowed) 22023';
