-- Rollups kept as answers arrive: what the analysis functions read instead of every answer.
--
--   rollup_segment  per UTC day of the answer x source x dimension values x failed payment
--                   before: an npsagg of the answers (source 0 / dims '{}': no payment context)
--   rollup_days     per UTC day x days since the last payment: an npsagg
--   customer_latest_answer  each customer's latest answer (revenue_at_risk)
--   survey_funnel_day       surveys per UTC creation day x outcome (survey_funnel)
--   rollup_answer_delay     answers per UTC day x bucket of time from sending to answer (the
--                           median of survey_funnel)
--
-- Statement-level triggers on response and survey keep them exact in the same transaction:
-- one INSERT ... ON CONFLICT DO UPDATE per table and statement (race-free under concurrent
-- answers: the conflicting row is locked and re-read), a replaced, re-dated or re-contexted
-- answer moves its count (its old row out, its new one in), a deleted one leaves.
-- The three answer rollups (and survey_funnel_day) are kept in shards: new answers add to the
-- row of their session's shard (rollup_shard(): pg_backend_pid() % 8), so concurrent answers of
-- one day and segment update different rows instead of each waiting for the other's commit
-- (the row lock of an upsert is held until then); readers sum the shards (the views do). An answer leaving
-- an npsagg row (replaced, re-dated, deleted) first gathers that row's shards into shard 0,
-- then leaves shard 0 (an npsagg never holds fewer than zero answers); a count row
-- (rollup_answer_delay) just takes the change in its shard, which may then be negative.
-- These tables hold only what the answers and surveys determine, so they are not dumped:
-- a restore fills them again through the same triggers as it loads response and survey
-- (after pg_restore --disable-triggers, run rebuild_rollups()).

CREATE TABLE @extschema@.rollup_segment (
  day        date NOT NULL,
  source_id  integer NOT NULL,       -- payment_source.id of the answer's payment; 0: none
  dims       jsonb NOT NULL,         -- response.payment_dimensions; '{}' without payment
  failed_30d boolean NOT NULL,       -- response.failed_payment_30d (false when unknown)
  agg        @extschema@.npsagg NOT NULL,
  shard      smallint NOT NULL,      -- see above; 0 after a rebuild or a removal
  PRIMARY KEY (day, source_id, dims, failed_30d, shard)
) WITH (fillfactor = 50);  -- (room on the page: an answer's update of its row is a HOT update)
CREATE TABLE @extschema@.rollup_days (
  day        date NOT NULL,
  days_since integer NOT NULL,       -- response.days_since_payment
  agg        @extschema@.npsagg NOT NULL,
  shard      smallint NOT NULL,
  PRIMARY KEY (day, days_since, shard)
) WITH (fillfactor = 50);
CREATE TABLE @extschema@.customer_latest_answer (
  customer_id  text PRIMARY KEY,
  response_id  bigint NOT NULL,
  responded_at timestamptz NOT NULL,
  category     @extschema@.nps_category NOT NULL
);
CREATE TABLE @extschema@.survey_funnel_day (
  day      date NOT NULL,            -- UTC day of survey.created_at
  outcome  text NOT NULL,            -- responded / expired / failed / open (pending, sending, sent, cancelled)
  sent     boolean NOT NULL,         -- sent_at set, or answered
  -- rollup_shard() of the writing session: concurrent senders (mark_sent moves a survey from
  -- "open" to "open, sent") update different rows instead of queueing on one; readers sum the shards
  shard    smallint NOT NULL,
  surveys  bigint NOT NULL,          -- may be negative in one shard; the sum over shards is the count
  PRIMARY KEY (day, outcome, sent, shard),
  -- reminders and caps (send_funnel), summed like surveys:
  reminders bigint NOT NULL DEFAULT 0,  -- survey.reminders_sent
  reminded  bigint NOT NULL DEFAULT 0,  -- surveys with a reminder sent
  capped    bigint NOT NULL DEFAULT 0   -- surveys the daily cap put off at least once
);
CREATE TABLE @extschema@.rollup_answer_delay (
  day      date NOT NULL,            -- UTC day of response.funnel_at
  bucket   integer NOT NULL,         -- delay_bucket(response.answered_after)
  answers  bigint NOT NULL,          -- may be negative in one shard; the sum over shards is the count
  shard    smallint NOT NULL,
  PRIMARY KEY (day, bucket, shard)
) WITH (fillfactor = 50);
COMMENT ON TABLE @extschema@.rollup_answer_delay IS
  'Answers to surveys per UTC day of funnel_at and bucket of the time from sending to answer (kept by triggers)';
COMMENT ON TABLE @extschema@.rollup_segment IS
  'Per UTC day, source, dimension values and failed payment before: npsagg of the answers (kept by triggers)';
COMMENT ON TABLE @extschema@.rollup_days IS
  'Per UTC day and whole days since the last payment: npsagg of the answers (kept by triggers)';
COMMENT ON TABLE @extschema@.customer_latest_answer IS
  'Each customer''s latest answer (kept by triggers; forget_customer removes the row)';
COMMENT ON TABLE @extschema@.survey_funnel_day IS
  'Surveys per UTC creation day, outcome and whether sent, in shards to sum (kept by triggers)';

-- The shard this session adds to: pg_backend_pid() % 8, or the setting nps_billing.rollup_shard
-- when it is a digit 0-7 (the isolation tests pin sessions to shards with it). Which shard a row
-- goes to changes no sum.
CREATE FUNCTION @extschema@.rollup_shard() RETURNS smallint
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (CASE WHEN current_setting('nps_billing.rollup_shard', true) ~ '^[0-7]$'
                   THEN current_setting('nps_billing.rollup_shard', true)::integer
                   ELSE pg_backend_pid() % 8 END)::smallint $$;
COMMENT ON FUNCTION @extschema@.rollup_shard() IS
  'The rollup shard this session''s new answers and surveys add to: pg_backend_pid() % 8, or setting nps_billing.rollup_shard (0-7)';

-- UTC day of a time, and the UTC midnights at or after / at or before it (infinities stay).
CREATE FUNCTION @extschema@.utc_day(t timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (t AT TIME ZONE 'UTC')::date $$;
CREATE FUNCTION @extschema@.utc_floor(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT date_trunc('day', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' $$;
CREATE FUNCTION @extschema@.utc_ceil(t timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
-- (timestamp + interval, not timestamptz + interval: every part immutable, so PostgreSQL
-- inlines it; a call per bucket edge would cost nps_trend most of its time)
AS $$ SELECT CASE WHEN date_trunc('day', t AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' = t THEN t
                  ELSE (date_trunc('day', t AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC' END $$;
COMMENT ON FUNCTION @extschema@.utc_day(timestamptz) IS 'The UTC date of a time (the rollups'' day)';
COMMENT ON FUNCTION @extschema@.utc_floor(timestamptz) IS 'The UTC midnight at or before a time';
COMMENT ON FUNCTION @extschema@.utc_ceil(timestamptz) IS 'The UTC midnight at or after a time';

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

CREATE FUNCTION @extschema@.response_rollups_delete() RETURNS trigger
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

CREATE FUNCTION @extschema@.response_rollups_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  TRUNCATE @extschema@.rollup_segment, @extschema@.rollup_days, @extschema@.customer_latest_answer,
           @extschema@.rollup_answer_delay;
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
