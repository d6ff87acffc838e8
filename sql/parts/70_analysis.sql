-- Analysis for BI tools: every answer tied to the payment behaviour around it.
-- The functions are plain LANGUAGE sql, STABLE and not STRICT so PostgreSQL inlines them into
-- the caller's query: the planner sees the real arguments (time ranges become index ranges) and
-- EXPLAIN SELECT * FROM nps_trend(...) shows the actual plan. They run with the caller's rights
-- and read only what the analyst role of README.md (Privacy) may read (response scores and dates,
-- the views). The three that must look at customer ids, payment events or surveys
-- (nps_failed_payments, revenue_at_risk, survey_funnel) are SECURITY DEFINER and return only
-- aggregates: no id, comment or token ever leaves them.

-- Argument validation usable inside an inlined SQL function: a condition with no column
-- references becomes a one-time filter (or is folded at plan time), so it raises before any
-- row is read. IMMUTABLE: the outcome depends only on the arguments.
CREATE FUNCTION @extschema@.check_argument(ok boolean, sqlstate text, message text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
  IF ok IS NOT TRUE THEN
    RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message;
  END IF;
  RETURN true;
END
$$;
COMMENT ON FUNCTION @extschema@.check_argument(boolean, text, text) IS
  'Raises the given SQLSTATE and message unless ok is true; used to validate analysis function arguments';

-- Builds an unweighted summary from a score histogram (element 1 = score 0), the inverse of
-- score_histogram(). nps_by() uses it for "all other segments" (total minus one segment)
-- without a second pass over the rows.
CREATE FUNCTION @extschema@.npsagg_from_histogram(histogram bigint[]) RETURNS @extschema@.npsagg
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
  SELECT CASE WHEN @extschema@.check_argument(
                     array_ndims(histogram) = 1 AND cardinality(histogram) = 11
                     AND array_position(histogram, NULL) IS NULL AND 0 <= ALL (histogram),
                     '22023', format('npsagg_from_histogram: %s must be 11 non-negative counts', histogram))
              THEN format('{"counts":[%1$s],"weights":[%1$s],"weight_sq":%2$s}',
                          array_to_string(histogram, ','),
                          (SELECT sum(c) FROM unnest(histogram) c))::@extschema@.npsagg
         END
$$;
COMMENT ON FUNCTION @extschema@.npsagg_from_histogram(bigint[]) IS
  'Unweighted npsagg from 11 score counts (element 1 = score 0); inverse of score_histogram()';

-- Surveys by creation time: survey_funnel(since) reads a recent range.
CREATE INDEX survey_created_at_idx ON @extschema@.survey (created_at);

CREATE VIEW @extschema@.response_context AS
-- No customer id, comment or survey link: the analyst role may read every view (README.md (Privacy)),
-- so this one carries scores, dates and payment context only. Join response on response_id
-- (with the rights to read it) for comments.
SELECT r.id            AS response_id,
       r.score,
       r.category,
       r.channel,
       r.responded_at,
       e.id            AS event_id,
       ps.name         AS source,
       e.kind,
       e.amount,
       e.currency,
       e.occurred_at   AS payment_at,
       e.attributes,
       -- whole days elapsed (24 h periods, time-zone independent): 0 = within a day of paying
       floor(extract(epoch FROM r.responded_at - e.occurred_at) / 86400)::integer AS days_since_payment,
       CASE WHEN r.customer_id IS NOT NULL THEN
         EXISTS (SELECT 1 FROM @extschema@.payment_event f
                 WHERE f.customer_id = r.customer_id AND f.kind = 'failed'
                   AND f.occurred_at > r.responded_at - interval '30 days'
                   AND f.occurred_at <= r.responded_at)
       END             AS failed_payment_30d
FROM @extschema@.response r
LEFT JOIN LATERAL (
  -- the customer's last payment event (succeeded or failed) at or before the answer;
  -- one backward step on payment_event_customer_idx
  SELECT e.id, e.source_id, e.kind, e.amount, e.currency, e.occurred_at, e.attributes
  FROM @extschema@.payment_event e
  WHERE e.customer_id = r.customer_id AND e.occurred_at <= r.responded_at
  ORDER BY e.occurred_at DESC, e.id DESC
  LIMIT 1) e ON true
LEFT JOIN @extschema@.payment_source ps ON ps.id = e.source_id;

COMMENT ON VIEW @extschema@.response_context IS
  'Each response with its customer''s last payment event at or before it (NULL payment columns when none); no customer id or comment';
COMMENT ON COLUMN @extschema@.response_context.source IS 'payment_source.name of the last payment event';
COMMENT ON COLUMN @extschema@.response_context.kind IS 'succeeded or failed: the last payment event''s kind';
COMMENT ON COLUMN @extschema@.response_context.payment_at IS 'when the last payment event occurred';
COMMENT ON COLUMN @extschema@.response_context.attributes IS 'the last payment event''s attributes (plan, method, ...)';
COMMENT ON COLUMN @extschema@.response_context.days_since_payment IS
  'whole 24-hour periods between the last payment event and the answer (0 = within a day)';
COMMENT ON COLUMN @extschema@.response_context.failed_payment_30d IS
  'a failed payment of this customer in the 30 days up to the answer; NULL when the customer is unknown';

CREATE FUNCTION @extschema@.nps_trend(bucket interval, since timestamptz, until timestamptz)
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

CREATE FUNCTION @extschema@.nps_by(attribute text,
                                   since timestamptz DEFAULT '-infinity',
                                   until timestamptz DEFAULT 'infinity',
                                   min_responses integer DEFAULT 30)
RETURNS TABLE (value text, responses bigint, nps float8, ci_low float8, ci_high float8,
               difference float8, p_value float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  WITH seg AS (
    SELECT c.attributes ->> attribute AS value, @extschema@.nps_agg(c.score) AS a
    FROM @extschema@.response_context c
    WHERE c.responded_at >= since AND c.responded_at < until
      AND @extschema@.check_argument(attribute IS NOT NULL AND since IS NOT NULL AND until IS NOT NULL
                                     AND min_responses IS NOT NULL,
            '22004', 'nps_by: attribute, since, until and min_responses must not be NULL')
      AND @extschema@.check_argument(min_responses IS NULL OR min_responses >= 1,
            '22023', format('nps_by: min_responses %s must be at least 1', min_responses))
    GROUP BY 1
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

CREATE FUNCTION @extschema@.nps_by_days_since_payment(max_days integer DEFAULT 30)
RETURNS TABLE (day integer, responses bigint, nps float8, ci_low float8, ci_high float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT d.day, coalesce(@extschema@.responses(s.a), 0), @extschema@.nps(s.a), ci.low, ci.high
  FROM generate_series(0, max_days) AS d(day)
  LEFT JOIN (
    SELECT c.days_since_payment AS day, @extschema@.nps_agg(c.score) AS a
    FROM @extschema@.response_context c
    WHERE c.days_since_payment <= max_days
    GROUP BY 1) s ON s.day = d.day
  LEFT JOIN LATERAL @extschema@.nps_ci(s.a) ci ON true
  WHERE @extschema@.check_argument(max_days IS NOT NULL, '22004',
          'nps_by_days_since_payment: max_days must not be NULL')
    AND @extschema@.check_argument(max_days IS NULL OR max_days BETWEEN 0 AND 3660, '22023',
          format('nps_by_days_since_payment: max_days %s must be between 0 and 3660', max_days))
  ORDER BY d.day
$$;
COMMENT ON FUNCTION @extschema@.nps_by_days_since_payment(integer) IS
  'NPS by whole days between the last payment event and the answer (0..max_days, empty days included)';

CREATE FUNCTION @extschema@.nps_failed_payments("window" interval DEFAULT '30 days')
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

CREATE FUNCTION @extschema@.revenue_at_risk(since timestamptz)
RETURNS TABLE (category @extschema@.nps_category, currency text, customers bigint, payments bigint,
               amount numeric)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  WITH latest AS (
    -- each customer's latest answer decides their category
    SELECT DISTINCT ON (r.customer_id) r.customer_id, r.category
    FROM @extschema@.response r
    WHERE r.customer_id IS NOT NULL
    ORDER BY r.customer_id, r.responded_at DESC, r.id DESC
  )
  SELECT l.category, p.currency, count(*), sum(p.payments)::bigint, sum(p.amount)
  FROM latest l
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

CREATE FUNCTION @extschema@.survey_funnel(since timestamptz)
RETURNS TABLE (created bigint, sent bigint, responded bigint, expired bigint, failed bigint,
               response_rate float8, median_time_to_answer interval)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT count(*),
         count(*) FILTER (WHERE s.sent_at IS NOT NULL OR r.id IS NOT NULL),
         count(r.id),
         count(*) FILTER (WHERE s.status = 'expired'),
         count(*) FILTER (WHERE s.status = 'failed'),
         count(r.id)::float8 / nullif(count(*) FILTER (WHERE s.sent_at IS NOT NULL OR r.id IS NOT NULL), 0),
         percentile_cont(0.5) WITHIN GROUP (ORDER BY r.responded_at - s.sent_at)
  FROM @extschema@.survey s
  -- an answer never predates its survey: the extra range lets the planner read only recent
  -- answers (response_responded_at_idx) instead of every answer ever given
  LEFT JOIN @extschema@.response r ON r.survey_id = s.id AND r.responded_at >= since
  WHERE s.created_at >= since
    AND @extschema@.check_argument(since IS NOT NULL, '22004', 'survey_funnel: since must not be NULL')
$$;
COMMENT ON FUNCTION @extschema@.survey_funnel(timestamptz) IS
  'Surveys created since a time: how many were sent, answered, expired, failed; response rate (answered/sent) and median time from sending to answer';

CREATE FUNCTION @extschema@.nps_alerts("window" interval, drop_threshold float8,
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
