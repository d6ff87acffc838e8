-- Reminders and daily caps in the funnel: the companion of survey_funnel(since) (whose result
-- columns stay as they were, so views over it survive an update), from the same per-day counts.
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
