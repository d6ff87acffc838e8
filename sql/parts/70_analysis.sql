-- Analysis for BI tools: every answer tied to the payment behaviour around it.
-- Each function reads the rollups of 68_rollups.sql for the whole UTC days of its range and the
-- answers themselves (their stored context) only for the partial days at the edges, for an
-- attribute no source keeps as a dimension, or for a failed-payment window other than 30 days.
-- Results are the same as over the answers: npsagg sums are exact.
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
-- (with the rights to read it) for comments. The context is the one stored with the answer.
SELECT r.id                 AS response_id,
       r.score,
       r.category,
       r.channel,
       r.responded_at,
       r.payment_event_id   AS event_id,
       ps.name              AS source,
       r.payment_kind       AS kind,
       r.payment_amount     AS amount,
       r.payment_currency   AS currency,
       r.payment_at,
       r.payment_attributes AS attributes,
       r.days_since_payment,
       r.failed_payment_30d
FROM @extschema@.response r
LEFT JOIN @extschema@.payment_source ps ON ps.id = r.payment_source_id;

COMMENT ON VIEW @extschema@.response_context IS
  'Each response with its customer''s last payment event at or before it (NULL payment columns when none); no customer id or comment';
COMMENT ON COLUMN @extschema@.response_context.source IS 'payment_source.name of the last payment event';
COMMENT ON COLUMN @extschema@.response_context.kind IS 'succeeded or failed: the last payment event''s kind';
COMMENT ON COLUMN @extschema@.response_context.payment_at IS 'when the last payment event occurred';
COMMENT ON COLUMN @extschema@.response_context.attributes IS 'the last payment event''s attributes (plan, method, ...)';
COMMENT ON COLUMN @extschema@.response_context.days_since_payment IS
  'whole 24-hour periods between the last payment event and the answer (0 = within a day)';
COMMENT ON COLUMN @extschema@.response_context.failed_payment_30d IS
  'a failed payment of this customer in the 30 days (720 hours) up to the answer; NULL when the customer is unknown';

