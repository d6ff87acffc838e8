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
-- (the shards of a row summed: 68_rollups.sql)
CREATE VIEW @extschema@.nps_daily AS
SELECT g.day, g.source_id, ps.name AS source, g.dims AS dimensions, g.failed_30d AS failed_payment_30d,
       g.summary
FROM (SELECT r.day, r.source_id, r.dims, r.failed_30d, @extschema@.rollup(r.agg) AS summary
        FROM @extschema@.rollup_segment r GROUP BY r.day, r.source_id, r.dims, r.failed_30d) g
LEFT JOIN @extschema@.payment_source ps ON ps.id = g.source_id;
COMMENT ON VIEW @extschema@.nps_daily IS
  'npsagg of the answers per UTC day, payment source (0/NULL: no payment before the answer), '
  'the source''s dimension values and failed payment in the 30 days before; kept as answers arrive';
CREATE VIEW @extschema@.nps_daily_days_since_payment AS
SELECT g.day, g.days_since AS days_since_payment, @extschema@.rollup(g.agg) AS summary
FROM @extschema@.rollup_days g
GROUP BY g.day, g.days_since;
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

CREATE FUNCTION @extschema@.nps_trend(bucket interval, since timestamptz, until timestamptz)
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

CREATE FUNCTION @extschema@.nps_by(attribute text,
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

CREATE FUNCTION @extschema@.nps_by_days_since_payment(max_days integer DEFAULT 30)
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

CREATE FUNCTION @extschema@.nps_failed_payments("window" interval DEFAULT '30 days')
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
COMMENT ON FUNCTION @extschema@.nps_failed_payments(interval) IS
  'NPS of answers with and without a failed payment of the customer in the window before the answer; difference (this row minus the other) and p-value';

CREATE FUNCTION @extschema@.revenue_at_risk(since timestamptz)
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
COMMENT ON FUNCTION @extschema@.revenue_at_risk(timestamptz) IS
  'Succeeded payments since a time of customers whose latest answer is detractor or passive, by category and currency';

CREATE FUNCTION @extschema@.survey_funnel(since timestamptz)
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
COMMENT ON FUNCTION @extschema@.survey_funnel(timestamptz) IS
  'Surveys created since a time: how many were sent, answered, expired, failed; response rate (answered/sent) and median time from sending to answer';

CREATE FUNCTION @extschema@.nps_alerts("window" interval, drop_threshold float8,
                                       attributes text[] DEFAULT '{plan,method}',
                                       min_responses integer DEFAULT 30,
                                       as_of timestamptz DEFAULT now())
RETURNS TABLE (dimension text, value text, previous_responses bigint, previous_nps float8,
               current_responses bigint, current_nps float8, nps_drop float8, p_value float8,
               q_value float8)
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
  ), tested AS (
    -- every segment with enough answers in both windows is tested, whatever its drop: the
    -- Benjamini-Hochberg correction counts them all (m), not only the ones shown
    SELECT seg.dimension, seg.value, seg.prev, seg.cur, cmp.p_value,
           row_number() OVER (ORDER BY cmp.p_value NULLS LAST, seg.dimension, seg.value) AS rk,
           count(cmp.p_value) OVER () AS m
    FROM seg
    CROSS JOIN LATERAL @extschema@.nps_compare(seg.cur, seg.prev) cmp
    WHERE @extschema@.responses(seg.cur) >= min_responses
      AND @extschema@.responses(seg.prev) >= min_responses
  ), adjusted AS (
    -- q_(i) = min over j >= i of p_(j) m / j (p-values in ascending order), at most 1
    SELECT t.*,
           CASE WHEN t.p_value IS NOT NULL
                THEN least(1, min(t.p_value * t.m / t.rk) OVER (ORDER BY t.rk DESC ROWS UNBOUNDED PRECEDING)) END AS q
    FROM tested t
  )
  SELECT a.dimension, a.value,
         @extschema@.responses(a.prev), @extschema@.nps(a.prev),
         @extschema@.responses(a.cur), @extschema@.nps(a.cur),
         @extschema@.nps(a.prev) - @extschema@.nps(a.cur),
         a.p_value, a.q
  FROM adjusted a
  WHERE @extschema@.nps(a.prev) - @extschema@.nps(a.cur) > drop_threshold
  ORDER BY a.p_value, 7 DESC, 1, 2
$$;
COMMENT ON FUNCTION @extschema@.nps_alerts(interval, float8, text[], integer, timestamptz) IS
  'Segments (overall, source, each listed attribute) whose NPS in [as_of - window, as_of) fell by more than drop_threshold points versus the window before, '
  'with p-value and Benjamini-Hochberg q-value across every segment tested';
