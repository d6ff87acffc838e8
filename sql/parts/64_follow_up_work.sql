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
COMMENT ON FUNCTION @extschema@.follow_up_metrics(timestamptz, timestamptz, interval) IS
  'Follow-ups created in [since, until): open, overdue, resolved, wont_fix, median time to close, share closed '
  'within the SLA; detractor answers of the period: share that paid again (succeeded payment within after) '
  'when followed up vs not, difference and two-sided p-value. Counts only';
