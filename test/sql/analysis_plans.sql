-- The analysis functions are inlined SQL, so EXPLAIN shows their real plans. On a year of data
-- (150,000 payment events, 50,000 answers, 50,000 surveys) each reads the rollups and never
-- scans a whole table of answers, surveys or payments. Rolled back at the end.
SET search_path = nps_billing, public;
SET TimeZone = 'UTC';
BEGIN;
DELETE FROM response; DELETE FROM survey; DELETE FROM payment_event; DELETE FROM payment_source;
INSERT INTO payment_source (id, name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES (1, 'stripe', 'pg_class', 'c', 'k', 's');
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT 1, 'k' || g, CASE WHEN g % 20 = 0 THEN 'failed' ELSE 'succeeded' END, 'cus_' || (g % 12500), 29, 'usd',
       timestamptz '2025-01-01' + (g % 12500) * interval '3 minutes' + (g / 12500) * interval '1 month',
       jsonb_build_object('plan', CASE WHEN g % 3 = 0 THEN 'pro' ELSE 'starter' END,
                          'method', CASE WHEN g % 4 = 0 THEN 'invoice' ELSE 'card' END)
FROM generate_series(1, 150000) g;
INSERT INTO survey (token, source_id, customer_id, channel, status, send_after, expires_at, sent_at, created_at)
SELECT 't' || g, 1, 'cus_' || (g % 12500), 'email', 'responded', ts, ts + interval '14 days', ts, ts
FROM generate_series(1, 50000) g, LATERAL (SELECT timestamptz '2025-01-01' + g * interval '10 minutes') t(ts);
INSERT INTO response (survey_id, customer_id, score, responded_at)
SELECT s.id, s.customer_id, (s.id % 11)::int, s.sent_at + interval '5 hours' FROM survey s;
ANALYZE payment_event; ANALYZE survey; ANALYZE response; ANALYZE payment_source;

-- plan_of(query): the EXPLAIN (COSTS OFF) text as one string
CREATE FUNCTION pg_temp.plan_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE l text; acc text := '';
BEGIN
  FOR l IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP acc := acc || l || E'\n'; END LOOP;
  RETURN acc;
END $$;
-- SECURITY DEFINER functions are not inlined: their body is planned as a prepared statement
-- with the same argument, which is how PostgreSQL plans it inside the function.
CREATE FUNCTION pg_temp.body_plan(fn regprocedure, param text, typ text, arg text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE body text; l text; acc text := '';
BEGIN
  SELECT regexp_replace(prosrc, param, '$1', 'g') INTO body FROM pg_proc WHERE oid = fn;
  EXECUTE format('PREPARE body_plan_q(%s) AS %s', typ, body);
  FOR l IN EXECUTE format('EXPLAIN (COSTS OFF) EXECUTE body_plan_q(%L)', arg) LOOP acc := acc || l || E'\n'; END LOOP;
  DEALLOCATE body_plan_q;
  RETURN acc;
END $$;
CREATE TEMP TABLE plans (fn text, q text);
INSERT INTO plans VALUES
  ('nps_trend',   $$SELECT * FROM nps_trend('1 day', '2025-06-01', '2025-06-08')$$),
  ('nps_by',      $$SELECT * FROM nps_by('method', '2025-06-01', '2025-06-08')$$),
  ('nps_alerts',  $$SELECT * FROM nps_alerts('7 days', 5, as_of => '2025-06-15')$$),
  ('nps_by (all)', $$SELECT * FROM nps_by('method')$$),
  ('nps_by_days_since_payment', $$SELECT * FROM nps_by_days_since_payment(30)$$),
  -- whole UTC days only: the rollups alone (their shards summed by the view)
  ('nps_trend (a year of days)', $$SELECT * FROM nps_trend('1 day', '2025-01-01', '2026-01-01')$$),
  ('nps_daily', $$SELECT * FROM nps_daily WHERE day = '2025-06-01'$$),
  ('response_context', $$SELECT * FROM response_context WHERE responded_at >= '2025-06-01' AND responded_at < '2025-06-02'$$);
-- What must hold whatever the statistics sample: the functions read the rollups kept as
-- answers arrive (rollup_segment, rollup_days, the funnel counts, the latest answer per
-- customer); over a time range they read answers only through the range index (for the
-- partial days at the edges); none looks up payment events per answer (the context is stored
-- with the answer). revenue_at_risk sums the payments of the customers at risk by index.
CREATE TEMP TABLE got AS
SELECT fn, p FROM (SELECT fn, pg_temp.plan_of(q) AS p FROM plans
      -- (its median: median_time_to_answer's body, planned the same way)
      UNION ALL SELECT 'survey_funnel', pg_temp.body_plan('survey_funnel(timestamptz)', '\msince\M', 'timestamptz', '2025-12-10')
                                        || pg_temp.body_plan('median_time_to_answer(timestamptz)', '\msince\M', 'timestamptz', '2025-12-10')
      UNION ALL SELECT 'survey_funnel median', pg_temp.body_plan('median_time_to_answer(timestamptz)', '\msince\M', 'timestamptz', '2025-12-10 05:00')
      UNION ALL SELECT 'revenue_at_risk', pg_temp.body_plan('revenue_at_risk(timestamptz)', '\msince\M', 'timestamptz', '2025-12-01')
      UNION ALL SELECT 'nps_failed_payments', pg_temp.body_plan('nps_failed_payments(interval)', '"window"', 'interval', '30 days')) x;
SELECT fn,
       p ~ CASE fn WHEN 'nps_by_days_since_payment' THEN 'rollup_days'
                   WHEN 'survey_funnel' THEN 'survey_funnel_day'
                   WHEN 'survey_funnel median' THEN 'rollup_answer_delay'
                   WHEN 'revenue_at_risk' THEN 'customer_latest_answer'
                   WHEN 'response_context' THEN 'response'
                   ELSE 'rollup_segment' END AS reads_rollup,
       CASE WHEN fn IN ('nps_trend', 'nps_by', 'nps_alerts', 'response_context', 'survey_funnel')
            THEN p ~ 'response_responded_at_idx' AND (fn <> 'survey_funnel' OR p ~ 'survey_created_at_idx')
            -- the answers of the median's bucket, by index; the partial day by the range indexes
            WHEN fn = 'survey_funnel median'
            THEN p ~ 'response_answered_after_idx' AND p ~ 'response_responded_at_idx' AND p ~ 'survey_created_at_idx' END AS range_index_used,
       p !~ 'Seq Scan on (response|survey|payment_event)\M' AS no_full_scan,
       CASE WHEN fn = 'revenue_at_risk' THEN p ~ 'payment_event_customer_idx'
            -- (its window other than the stored 30 days is answered from the answers)
            WHEN fn <> 'nps_failed_payments' THEN p !~ 'payment_event' END AS payments
FROM got ORDER BY fn;
-- on failure, the plans: SELECT fn, p FROM got;
ROLLBACK;
