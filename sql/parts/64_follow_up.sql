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
