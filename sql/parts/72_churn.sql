-- Churn and retention by NPS category: do detractors stop paying?
--
-- Definition (docs/churn.md): a customer churned after an answer when no `succeeded` payment
-- event of that customer has occurred_at in (responded_at, responded_at + after]. An answer with
-- responded_at + after > as_of (default now()) is not judged: its window is still open.
-- Each customer enters once, at their first answer in [since, until) (and at or before as_of),
-- with that answer's category.
--
-- Both functions read customer ids and payment events, which the analyst role may not read:
-- SECURITY DEFINER with a pinned search_path, returning aggregates only (counts, rates, sums).

-- The standard normal distribution (C, src/statistics.cpp).
CREATE FUNCTION @extschema@.normal_cdf(x float8) RETURNS float8
  AS 'MODULE_PATHNAME', 'nps_normal_cdf' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.normal_quantile(p float8) RETURNS float8
  AS 'MODULE_PATHNAME', 'nps_normal_quantile' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.normal_cdf(float8) IS 'P(Z <= x) for a standard normal Z';
COMMENT ON FUNCTION @extschema@.normal_quantile(float8) IS 'The x with P(Z <= x) = p for a standard normal Z (0 < p < 1)';


-- Wilson score interval of a proportion (Wilson 1927): centre (p + z^2/2n) / (1 + z^2/n),
-- half-width z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n). NULL for 0 trials or a NULL argument.
CREATE FUNCTION @extschema@.wilson_ci(successes bigint, trials bigint, confidence float8 DEFAULT 0.95,
                                      OUT low float8, OUT high float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  -- (clamped against rounding; greatest/least ignore NULLs, hence the CASE)
  SELECT CASE WHEN s.n > 0 AND s.z IS NOT NULL
              THEN greatest(0, (s.p + s.z * s.z / (2 * s.n) - s.z * sqrt(s.p * (1 - s.p) / s.n + s.z * s.z / (4 * s.n * s.n)))
                               / (1 + s.z * s.z / s.n)) END,
         CASE WHEN s.n > 0 AND s.z IS NOT NULL
              THEN least(1, (s.p + s.z * s.z / (2 * s.n) + s.z * sqrt(s.p * (1 - s.p) / s.n + s.z * s.z / (4 * s.n * s.n)))
                            / (1 + s.z * s.z / s.n)) END
  FROM (SELECT successes::float8 / nullif(trials, 0) AS p, nullif(trials, 0)::float8 AS n,
               @extschema@.normal_quantile(1 - (1 - confidence) / 2) AS z
         WHERE @extschema@.check_argument(
                 (successes IS NULL OR trials IS NULL OR (successes >= 0 AND successes <= trials))
                 AND (confidence IS NULL OR (confidence > 0 AND confidence < 1)),
                 '22023', format('wilson_ci: successes %s and trials %s must satisfy 0 <= successes <= trials, confidence %s must be between 0 and 1 exclusive',
                                 successes, trials, confidence))) s
$$;
COMMENT ON FUNCTION @extschema@.wilson_ci(bigint, bigint, float8) IS
  'Wilson score interval of the proportion successes/trials (NULL for 0 trials)';

-- Two-sided pooled z-test of two proportions x1/n1 and x2/n2: z = (p1 - p2) / sqrt(p(1-p)(1/n1 + 1/n2))
-- with p = (x1 + x2) / (n1 + n2). NULL z and p-value when a sample is empty or p is 0 or 1.
CREATE FUNCTION @extschema@.proportion_compare(x1 bigint, n1 bigint, x2 bigint, n2 bigint,
                                               OUT difference float8, OUT z float8, OUT p_value float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT s.d, s.d / s.se, 2 * @extschema@.normal_cdf(-abs(s.d / s.se))
  FROM (SELECT x1::float8 / nullif(n1, 0) - x2::float8 / nullif(n2, 0) AS d,
               nullif(sqrt(((x1 + x2)::float8 / nullif(n1 + n2, 0)) * (1 - (x1 + x2)::float8 / nullif(n1 + n2, 0))
                           * (1.0::float8 / nullif(n1, 0) + 1.0::float8 / nullif(n2, 0))), 0) AS se
         WHERE @extschema@.check_argument(
                 x1 IS NULL OR n1 IS NULL OR x2 IS NULL OR n2 IS NULL
                 OR (x1 >= 0 AND x1 <= n1 AND x2 >= 0 AND x2 <= n2),
                 '22023', format('proportion_compare: counts %s/%s and %s/%s must satisfy 0 <= x <= n', x1, n1, x2, n2))) s
$$;
COMMENT ON FUNCTION @extschema@.proportion_compare(bigint, bigint, bigint, bigint) IS
  'Two-sided pooled z-test of two independent proportions: difference x1/n1 - x2/n2, z, p-value';

-- Argument checks shared by nps_churn and nps_retention (no column reference: a one-time filter
-- that raises before any row is read).
CREATE FUNCTION @extschema@.churn_arguments_ok(fn text, after interval, since timestamptz, until timestamptz,
                                               as_of timestamptz) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT @extschema@.check_argument(after IS NOT NULL AND since IS NOT NULL AND until IS NOT NULL AND as_of IS NOT NULL,
           '22004', format('%s: after, since, until and as_of must not be NULL', fn))
     AND @extschema@.check_argument(@extschema@.interval_within(after, '1 second', '10 years'),
           '22023', format('%s: after %s must be a positive interval of at most 10 years with no negative part', fn, after))
     AND @extschema@.check_argument(since <= until,
           '22023', format('%s: since %s must not be after until %s', fn, since, until))
     AND @extschema@.check_argument(isfinite(as_of),
           '22023', format('%s: as_of %s must be finite', fn, as_of))
$$;
COMMENT ON FUNCTION @extschema@.churn_arguments_ok(text, interval, timestamptz, timestamptz, timestamptz) IS
  'Validates the arguments nps_churn and nps_retention share (22004 / 22023 naming the value)';

CREATE FUNCTION @extschema@.nps_churn(after interval DEFAULT '45 days',
                                      since timestamptz DEFAULT '-infinity',
                                      until timestamptz DEFAULT 'infinity',
                                      as_of timestamptz DEFAULT now())
RETURNS TABLE (category @extschema@.nps_category, customers bigint, churned bigint, churn_rate float8,
               ci_low float8, ci_high float8, lift float8, p_value float8, churned_revenue jsonb)
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- Planned for the call's arguments (a SQL function's body is planned for any argument, as if
-- the range held 0.5 % of the answers): a whole-history call reads the cohort in customer order
-- from response_customer_idx without sorting the answers, a narrow range reads it by time.
SET plan_cache_mode = force_custom_plan
AS $fn$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH judged AS MATERIALIZED (
    -- each customer's first answer in the range, judged once its window has closed: one probe
    -- of payment_event_customer_idx (customer_id, occurred_at) per customer
    SELECT c.customer_id, c.responded_at, c.category,
           NOT EXISTS (SELECT 1 FROM @extschema@.payment_event p
                        WHERE p.customer_id = c.customer_id
                          AND p.occurred_at > c.responded_at AND p.occurred_at <= c.responded_at + after
                          AND p.kind = 'succeeded') AS churned
      FROM (SELECT DISTINCT ON (r.customer_id) r.customer_id, r.responded_at, r.category
              FROM @extschema@.response r
             WHERE r.customer_id IS NOT NULL
               AND r.responded_at >= since AND r.responded_at < until AND r.responded_at <= as_of
               AND @extschema@.churn_arguments_ok('nps_churn', after, since, until, as_of)
             ORDER BY r.customer_id, r.responded_at, r.id) c
     WHERE c.responded_at + after <= as_of
  ), cat AS (
    SELECT j.category, count(*) AS n, count(*) FILTER (WHERE j.churned) AS x
      FROM judged j GROUP BY 1
  ), rev AS (
    -- what the churned customers paid in the period of the same length up to their answer
    -- (one index probe per churned customer; OFFSET 0 keeps it one, not a join over all events)
    SELECT y.category, jsonb_object_agg(y.currency, y.amount) AS revenue
      FROM (SELECT j.category, coalesce(p.currency, '') AS currency, sum(p.amount) AS amount
              FROM judged j
             CROSS JOIN LATERAL (
               SELECT e.currency, e.amount FROM @extschema@.payment_event e
                WHERE e.customer_id = j.customer_id
                  AND e.occurred_at > j.responded_at - after AND e.occurred_at <= j.responded_at
                  AND e.kind = 'succeeded' AND e.amount IS NOT NULL
               OFFSET 0) p
             WHERE j.churned
             GROUP BY 1, 2) y
     GROUP BY 1
  )
  SELECT v.category, coalesce(c.n, 0), coalesce(c.x, 0),
         c.x::float8 / nullif(c.n, 0),
         w.low, w.high,
         (c.x::float8 / nullif(c.n, 0)) / nullif(pr.x::float8 / nullif(pr.n, 0), 0),
         CASE WHEN v.category <> 'promoter' THEN t.p_value END,
         CASE WHEN c.n > 0 THEN coalesce(rv.revenue, '{}') END
    FROM unnest(enum_range(NULL::@extschema@.nps_category)) AS v(category)
    LEFT JOIN cat c ON c.category = v.category
    LEFT JOIN cat pr ON pr.category = 'promoter'
    LEFT JOIN rev rv ON rv.category = v.category
    LEFT JOIN LATERAL @extschema@.wilson_ci(c.x, c.n) w ON c.n > 0
    LEFT JOIN LATERAL @extschema@.proportion_compare(c.x, c.n, pr.x, pr.n) t ON c.n > 0 AND pr.n > 0
   WHERE @extschema@.churn_arguments_ok('nps_churn', after, since, until, as_of)
   ORDER BY v.category;
END
$fn$;

COMMENT ON FUNCTION @extschema@.nps_churn(interval, timestamptz, timestamptz, timestamptz) IS
  'Per NPS category: customers (first answer in [since, until), judged when at least `after` before as_of), churned (no succeeded payment '
  'within `after` of the answer), churn rate with a 95% Wilson CI, lift vs promoters with a two-proportion p-value, and what the churned '
  'paid in the `after` up to their answer, by currency';

-- Kaplan-Meier retention. Each customer of the cohort is followed from their answer along their
-- succeeded payments while consecutive ones (the answer counting as the first) are at most
-- `after` apart; the customer churned at the last payment of that chain (time 0: no payment
-- within `after` of the answer, the churn of nps_churn) once `after` has passed since it by
-- as_of, and is censored there while that window is still open. Times are in seconds (a month
-- of an interval counts as 30 days); follow-up stops at horizon (censored there).
-- Ties: customers censored at a time t are not at risk of the events at t (they are censored
-- because that event cannot be seen yet), so a customer without any payment yet whose window is
-- open (censored at 0) is not judged, as in nps_churn.
-- S(t) = prod over event times t_i <= t of (1 - d_i / n_i); Greenwood variance
-- S^2 * sum d_i / (n_i (n_i - d_i)); the 95% band is log-log (Kalbfleisch-Prentice):
-- S^exp(+-z se), se = sqrt(sum d_i / (n_i (n_i - d_i))) / |ln S|, which stays inside [0, 1].
CREATE FUNCTION @extschema@.nps_retention(bucket interval DEFAULT '30 days',
                                          horizon interval DEFAULT '360 days',
                                          since timestamptz DEFAULT '-infinity',
                                          until timestamptz DEFAULT 'infinity',
                                          after interval DEFAULT '45 days',
                                          as_of timestamptz DEFAULT now())
RETURNS TABLE (category @extschema@.nps_category, bucket_start interval, bucket_end interval,
               at_risk bigint, churned bigint, censored bigint,
               survival float8, stderr float8, ci_low float8, ci_high float8)
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- planned for the call's arguments, as nps_churn
SET plan_cache_mode = force_custom_plan
AS $fn$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH par AS MATERIALIZED (
    SELECT extract(epoch FROM bucket)::float8 AS bs, extract(epoch FROM horizon)::float8 AS hs,
           -- nullif: PostgreSQL 18 folds this division when planning, before the checks below run
           ceil(extract(epoch FROM horizon)::float8 / nullif(extract(epoch FROM bucket)::float8, 0))::integer AS nb,
           @extschema@.normal_quantile(0.975) AS z
     WHERE @extschema@.churn_arguments_ok('nps_retention', after, since, until, as_of)
       AND @extschema@.check_argument(bucket IS NOT NULL AND horizon IS NOT NULL,
             '22004', 'nps_retention: bucket and horizon must not be NULL')
       AND @extschema@.check_argument(@extschema@.interval_within(bucket, '1 second', '100 years')
                                      AND @extschema@.interval_within(horizon, '1 second', '100 years'),
             '22023', format('nps_retention: bucket %s and horizon %s must be positive intervals of at most 100 years with no negative part',
                             bucket, horizon))
       AND @extschema@.check_argument(NOT (@extschema@.interval_within(bucket, '1 second', '100 years')
                                           AND @extschema@.interval_within(horizon, '1 second', '100 years'))
                                      OR extract(epoch FROM horizon) <= 10000 * extract(epoch FROM bucket),
             '54000', format('nps_retention: buckets of %s up to %s exceed the limit of 10000 buckets', bucket, horizon))
  ), cohort AS MATERIALIZED (
    SELECT DISTINCT ON (r.customer_id) r.customer_id, r.responded_at, r.category
      FROM @extschema@.response r
     WHERE r.customer_id IS NOT NULL
       AND r.responded_at >= since AND r.responded_at < until AND r.responded_at <= as_of
     ORDER BY r.customer_id, r.responded_at, r.id
  ), subj AS MATERIALIZED (
    -- per customer, in one index range of payment_event_customer_idx: the succeeded payments
    -- after the answer (up to horizon + after) in time order, each with the previous one (the
    -- answer for the first); a gap longer than `after` breaks the chain, and its last payment
    -- is where it ended (no sort of all the cohort's payments, no join over all events)
    SELECT c.category,
           least(extract(epoch FROM l.last_paid - c.responded_at)::float8, par.hs) AS t,
           l.ended AND extract(epoch FROM l.last_paid - c.responded_at)::float8 < par.hs AS event
      FROM par
     CROSS JOIN cohort c
     CROSS JOIN LATERAL (
       SELECT min(w.prev) FILTER (WHERE w.t > w.prev + after) AS brk, max(w.t) AS last_t
         FROM (SELECT p.occurred_at AS t,
                      lag(p.occurred_at, 1, c.responded_at) OVER (ORDER BY p.occurred_at) AS prev
                 FROM @extschema@.payment_event p
                WHERE p.customer_id = c.customer_id
                  AND p.occurred_at > c.responded_at
                  AND p.occurred_at <= least(as_of, c.responded_at + par.hs * interval '1 second' + after)
                  AND p.kind = 'succeeded') w) e
     CROSS JOIN LATERAL (
       SELECT coalesce(e.brk, e.last_t, c.responded_at) AS last_paid,
              e.brk IS NOT NULL OR coalesce(e.last_t, c.responded_at) + after <= as_of AS ended) l
  ), times AS (
    SELECT s.category, s.t, count(*) FILTER (WHERE s.event) AS d, count(*) FILTER (WHERE NOT s.event) AS c
      FROM subj s GROUP BY 1, 2
  ), risk AS (
    -- at risk at t: events at or after t and censorings after t
    SELECT x.category, x.t, x.d,
           (sum(x.d + x.c) OVER (PARTITION BY x.category ORDER BY x.t DESC ROWS UNBOUNDED PRECEDING) - x.c)::bigint AS n
      FROM times x
  ), km AS (
    SELECT k.category, k.t,
           sum(CASE WHEN k.d < k.n THEN ln(1 - k.d::float8 / k.n) ELSE 0 END) OVER w AS log_s,
           bool_or(k.d = k.n) OVER w AS zero,
           sum(CASE WHEN k.d < k.n THEN k.d::float8 / (k.n::float8 * (k.n - k.d)) ELSE 0 END) OVER w AS gw
      FROM risk k
     WHERE k.d > 0
    WINDOW w AS (PARTITION BY k.category ORDER BY k.t ROWS UNBOUNDED PRECEDING)
  ), grid AS (
    SELECT v.category, g.k
      FROM par, unnest(enum_range(NULL::@extschema@.nps_category)) AS v(category),
           generate_series(0, par.nb - 1) AS g(k)
  ), ev AS (
    SELECT s.category, floor(s.t / par.bs)::integer AS k, count(*) AS n
      FROM subj s, par WHERE s.event GROUP BY 1, 2
  ), ce AS (
    -- censored in (start, end]: those censored at a bucket's start were not at risk in it
    SELECT s.category, least(ceil(s.t / par.bs)::integer - 1, par.nb - 1) AS k, count(*) AS n
      FROM subj s, par WHERE NOT s.event AND s.t > 0 GROUP BY 1, 2
  ), kb AS (
    SELECT m.category, floor(m.t / par.bs)::integer AS k,
           min(m.log_s) AS log_s, bool_or(m.zero) AS zero, max(m.gw) AS gw
      FROM km m, par GROUP BY 1, 2
  ), tot AS (
    SELECT s.category, count(*) FILTER (WHERE s.event OR s.t > 0) AS n FROM subj s GROUP BY 1
  ), carried AS (
    SELECT g.category, g.k, coalesce(ev.n, 0) AS churned, coalesce(ce.n, 0) AS censored,
           coalesce(tot.n, 0) AS cohort,
           coalesce(tot.n, 0)
             - coalesce(sum(coalesce(ev.n, 0) + coalesce(ce.n, 0))
                          OVER (PARTITION BY g.category ORDER BY g.k ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS at_risk,
           -- survival at a bucket's end: the last event time before it (log S only falls)
           coalesce(min(kb.log_s) OVER wk, 0) AS log_s,
           coalesce(bool_or(kb.zero) OVER wk, false) AS zero,
           coalesce(max(kb.gw) OVER wk, 0) AS gw
      FROM grid g
      LEFT JOIN ev ON ev.category = g.category AND ev.k = g.k
      LEFT JOIN ce ON ce.category = g.category AND ce.k = g.k
      LEFT JOIN kb ON kb.category = g.category AND kb.k = g.k
      LEFT JOIN tot ON tot.category = g.category
    WINDOW wk AS (PARTITION BY g.category ORDER BY g.k ROWS UNBOUNDED PRECEDING)
  ), est AS (
    SELECT c.*, CASE WHEN c.zero THEN 0 ELSE exp(c.log_s) END AS s
      FROM carried c
  )
  SELECT e.category, bucket * e.k, least(bucket * (e.k + 1), horizon),
         e.at_risk::bigint, e.churned::bigint, e.censored::bigint,
         CASE WHEN e.cohort > 0 THEN e.s END,
         CASE WHEN e.cohort > 0 THEN e.s * sqrt(e.gw) END,
         CASE WHEN e.cohort = 0 THEN NULL
              WHEN e.s <= 0 OR e.s >= 1 OR e.gw = 0 THEN e.s
              ELSE e.s ^ exp(par.z * sqrt(e.gw) / abs(ln(e.s))) END,
         CASE WHEN e.cohort = 0 THEN NULL
              WHEN e.s <= 0 OR e.s >= 1 OR e.gw = 0 THEN e.s
              ELSE e.s ^ exp(-par.z * sqrt(e.gw) / abs(ln(e.s))) END
    FROM est e, par
   ORDER BY e.category, e.k;
END
$fn$;
COMMENT ON FUNCTION @extschema@.nps_retention(interval, interval, timestamptz, timestamptz, interval, timestamptz) IS
  'Kaplan-Meier retention by NPS category from each customer''s first answer in [since, until): per bucket up to horizon, customers at risk, '
  'churned (their payments stopped: a gap longer than `after`), censored (window still open, or horizon), survival at the bucket''s end '
  'with Greenwood standard error and a 95% log-log band';
