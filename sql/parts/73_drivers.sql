-- Drivers: every value of every attribute tested against the rest of the answers, with the
-- Benjamini-Hochberg false discovery rate correction across all the tests of the call.
-- Inlinable SQL like nps_by (70_analysis.sql): it reads the rollups through answers_in().

CREATE FUNCTION @extschema@.nps_drivers(attributes text[],
                                        since timestamptz DEFAULT '-infinity',
                                        until timestamptz DEFAULT 'infinity',
                                        min_responses integer DEFAULT 30)
RETURNS TABLE (attribute text, value text, responses bigint, nps float8, ci_low float8, ci_high float8,
               difference float8, p_value float8, q_value float8, impact float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  WITH x AS MATERIALIZED (
    SELECT x.attrs, x.a
    FROM @extschema@.answers_in(since, until, nps_drivers.attributes) x
    WHERE @extschema@.check_argument(nps_drivers.attributes IS NOT NULL AND since IS NOT NULL AND until IS NOT NULL
                                     AND min_responses IS NOT NULL
                                     AND array_position(nps_drivers.attributes, NULL) IS NULL,
            '22004', 'nps_drivers: attributes (and each of its elements), since, until and min_responses must not be NULL')
      AND @extschema@.check_argument(cardinality(nps_drivers.attributes) > 0,
            '22023', 'nps_drivers: attributes must name at least one attribute')
      AND @extschema@.check_argument(min_responses IS NULL OR min_responses >= 1,
            '22023', format('nps_drivers: min_responses %s must be at least 1', min_responses))
  ), seg AS (
    SELECT k.key AS attribute, x.attrs ->> k.key AS value, @extschema@.rollup(x.a) AS a
    FROM x CROSS JOIN (SELECT DISTINCT u.key FROM unnest(nps_drivers.attributes) AS u(key)) k
    GROUP BY 1, 2
    HAVING @extschema@.responses(@extschema@.rollup(x.a)) > 0
  ), total AS (
    SELECT @extschema@.score_histogram(@extschema@.rollup(x.a)) AS h FROM x
  ), tested AS (
    SELECT seg.attribute, seg.value, seg.a, k.big,
           CASE WHEN k.big AND k.rest_big THEN d.difference END AS difference,
           CASE WHEN k.big AND k.rest_big THEN d.p_value END AS p_value
    FROM seg CROSS JOIN total
    CROSS JOIN LATERAL (SELECT @extschema@.npsagg_from_histogram(ARRAY(
             SELECT t - s FROM unnest(total.h, @extschema@.score_histogram(seg.a)) AS u(t, s))) AS rest) o
    CROSS JOIN LATERAL (SELECT @extschema@.responses(seg.a) >= min_responses AS big,
                               @extschema@.responses(o.rest) >= min_responses AS rest_big) k
    LEFT JOIN LATERAL @extschema@.nps_compare(seg.a, o.rest) d ON true
  ), ranked AS (
    SELECT t.*,
           row_number() OVER (ORDER BY t.p_value NULLS LAST, t.attribute, t.value NULLS LAST) AS rk,
           count(t.p_value) OVER () AS m
    FROM tested t
  ), adjusted AS (
    -- Benjamini-Hochberg: q_(i) = min over j >= i of p_(j) m / j (ascending p-values), at most 1
    SELECT r.*,
           CASE WHEN r.p_value IS NOT NULL
                THEN least(1, min(r.p_value * r.m / r.rk) OVER (ORDER BY r.rk DESC ROWS UNBOUNDED PRECEDING)) END AS q
    FROM ranked r
  )
  SELECT a.attribute, a.value, @extschema@.responses(a.a),
         CASE WHEN a.big THEN @extschema@.nps(a.a) END,
         CASE WHEN a.big THEN ci.low END,
         CASE WHEN a.big THEN ci.high END,
         a.difference, a.p_value, a.q,
         @extschema@.responses(a.a) * a.difference
  FROM adjusted a
  LEFT JOIN LATERAL @extschema@.nps_ci(a.a) ci ON true
  ORDER BY abs(@extschema@.responses(a.a) * a.difference) DESC NULLS LAST, 1, 2 NULLS LAST
$$;
COMMENT ON FUNCTION @extschema@.nps_drivers(text[], timestamptz, timestamptz, integer) IS
  'Every value of every listed payment attribute for answers in [since, until): responses, NPS with CI, difference vs all other answers, '
  'p-value, Benjamini-Hochberg q-value across all the tests of the call, impact = responses x difference; largest |impact| first';
