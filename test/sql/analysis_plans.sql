-- The analysis functions are inlined SQL, so EXPLAIN shows their real plans. On a year of data
-- (150,000 payment events, 50,000 answers, 50,000 surveys) each reads the index that serves it
-- and never scans a whole table it only needs a range of. Rolled back at the end.
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
CREATE TEMP TABLE plans (fn text, q text);
INSERT INTO plans VALUES
  ('nps_trend',   $$SELECT * FROM nps_trend('1 day', '2025-06-01', '2025-06-08')$$),
  ('nps_by',      $$SELECT * FROM nps_by('method', '2025-06-01', '2025-06-08')$$),
  ('nps_alerts',  $$SELECT * FROM nps_alerts('7 days', 5, as_of => '2025-06-15')$$),
  ('survey_funnel', $$SELECT * FROM survey_funnel('2025-12-10')$$),
  ('revenue_at_risk', $$SELECT * FROM revenue_at_risk('2025-12-01')$$),
  ('nps_by_days_since_payment', $$SELECT * FROM nps_by_days_since_payment(30)$$),
  ('nps_failed_payments', $$SELECT * FROM nps_failed_payments('30 days')$$),
  ('response_context', $$SELECT * FROM response_context WHERE responded_at >= '2025-06-01' AND responded_at < '2025-06-02'$$);
-- which indexes each plan uses, and which tables it reads in full
SELECT fn,
       ARRAY(SELECT DISTINCT m[1] FROM regexp_matches(p, '(?:Index|Index Only) Scan(?: Backward)? using (\w+)', 'g') m
             UNION SELECT DISTINCT m[1] FROM regexp_matches(p, 'Bitmap Index Scan on (\w+)', 'g') m
             ORDER BY 1) AS indexes_used,
       ARRAY(SELECT DISTINCT m[1] FROM regexp_matches(p, 'Seq Scan on (\w+)', 'g') m ORDER BY 1) AS full_scans
FROM plans, LATERAL pg_temp.plan_of(q) p
ORDER BY fn;
ROLLBACK;
