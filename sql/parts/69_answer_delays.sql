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
-- bucket's range of response_answered_after_idx (one scan per bucket: two middle answers in one
-- bucket are read together); percentile_cont of those gives the value.
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
REVOKE ALL ON FUNCTION @extschema@.median_time_to_answer(timestamptz) FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.median_time_to_answer(timestamptz) IS
  'Internal (survey_funnel): median time from sending to answer of the answers to surveys created since a time';
