-- Plans of nps_churn, nps_retention, nps_drivers and comment_terms on a year of data (150,000
-- payment events, 50,000 answers): payment events are read only through
-- payment_event_customer_idx (one probe per customer), answers through their indexes for a
-- range, comments through response_commented_idx; nps_drivers reads the rollups.
-- SECURITY DEFINER functions are not inlined. nps_churn, nps_retention and follow_up_metrics
-- are PL/pgSQL: their query is planned for the call's values (nps_churn and nps_retention set
-- plan_cache_mode = force_custom_plan), as here (PREPARE of the query of RETURN QUERY, custom
-- plan); comment_terms is a SQL function, planned once without the argument values (a generic
-- plan): plan_cache_mode = force_generic_plan for it. Not in a transaction (VACUUM sets the
-- visibility map, as autovacuum would: index-only scans); the tables are emptied at the end.
SET search_path = nps_billing, public;
SET TimeZone = 'UTC';
TRUNCATE response, survey, payment_event; DELETE FROM payment_source;
INSERT INTO payment_source (id, name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES (1, 'stripe', 'pg_class', 'c', 'k', 's');
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT 1, 'k' || g, CASE WHEN g % 20 = 0 THEN 'failed' ELSE 'succeeded' END, 'cus_' || (g % 12500), 29, 'usd',
       timestamptz '2025-01-01' + (g % 12500) * interval '3 minutes' + (g / 12500) * interval '1 month',
       jsonb_build_object('plan', CASE WHEN g % 3 = 0 THEN 'pro' ELSE 'starter' END,
                          'method', CASE WHEN g % 4 = 0 THEN 'invoice' ELSE 'card' END)
FROM generate_series(1, 150000) g
WHERE g / 12500 < 3 OR g % 12500 % 7 <> 0;  -- one customer in seven stops paying after March
INSERT INTO response (customer_id, score, comment, responded_at)
SELECT 'cus_' || (g % 12500), (g % 11)::int,
       CASE WHEN g % 3 = 0 THEN (ARRAY['unclear charge', 'love it', 'support was slow'])[1 + g % 3] END,
       timestamptz '2025-01-01' + g * interval '10 minutes' + interval '5 hours'
FROM generate_series(1, 50000) g;
-- the detractors' follow-ups, two in three worked
INSERT INTO follow_up (response_id, source_id, reason, status, created_at, due_at, contacted_at, closed_at)
SELECT id, 1, 'detractor', CASE WHEN id % 3 = 0 THEN 'open' ELSE 'resolved' END, responded_at, responded_at + interval '2 days',
       CASE WHEN id % 3 <> 0 THEN responded_at + interval '1 day' END, CASE WHEN id % 3 <> 0 THEN responded_at + interval '1 day' END
FROM response WHERE category = 'detractor';
VACUUM ANALYZE payment_event; VACUUM ANALYZE response; ANALYZE payment_source; ANALYZE follow_up;

-- body_plan(fn, parameter name patterns, types, values): EXPLAIN of the function's body with
-- its parameters as $1.., planned generically like the SQL function itself
CREATE FUNCTION pg_temp.body_plan(fn regprocedure, names text[], types text[], args text[]) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE body text; l text; acc text := '';
BEGIN
  SELECT prosrc INTO body FROM pg_proc WHERE oid = fn;
  -- a PL/pgSQL function: the query of its RETURN QUERY
  IF body ~ 'RETURN QUERY' THEN
    body := substring(body FROM '(?s)RETURN QUERY(.*);\s*END\s*$');
  END IF;
  FOR i IN 1 .. cardinality(names) LOOP
    body := regexp_replace(body, names[i], '$' || i, 'g');
  END LOOP;
  EXECUTE format('PREPARE body_plan_q(%s) AS %s', array_to_string(types, ','), body);
  FOR l IN EXECUTE format('EXPLAIN (COSTS OFF) EXECUTE body_plan_q(%s)',
                          (SELECT string_agg(quote_literal(a), ',') FROM unnest(args) a)) LOOP
    acc := acc || l || E'\n';
  END LOOP;
  DEALLOCATE body_plan_q;
  RETURN acc;
END $$;
CREATE FUNCTION pg_temp.plan_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE l text; acc text := '';
BEGIN
  FOR l IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP acc := acc || l || E'\n'; END LOOP;
  RETURN acc;
END $$;
SET plan_cache_mode = force_custom_plan;
CREATE TEMP TABLE got AS
SELECT 'nps_churn' AS fn, pg_temp.body_plan('nps_churn(interval, timestamptz, timestamptz, timestamptz)',
         ARRAY['\mafter\M', '\msince\M', '\muntil\M', '\mas_of\M'], '{interval,timestamptz,timestamptz,timestamptz}',
         '{45 days,-infinity,infinity,2026-01-01}') AS p
UNION ALL
SELECT 'nps_churn (a month)', pg_temp.body_plan('nps_churn(interval, timestamptz, timestamptz, timestamptz)',
         ARRAY['\mafter\M', '\msince\M', '\muntil\M', '\mas_of\M'], '{interval,timestamptz,timestamptz,timestamptz}',
         '{45 days,2025-06-01,2025-07-01,2026-01-01}')
UNION ALL
SELECT 'nps_retention', pg_temp.body_plan('nps_retention(interval, interval, timestamptz, timestamptz, interval, timestamptz)',
         ARRAY['\mbucket\M', '\mhorizon\M', '\msince\M', '\muntil\M', '\mafter\M', '\mas_of\M'],
         '{interval,interval,timestamptz,timestamptz,interval,timestamptz}',
         '{30 days,360 days,-infinity,infinity,45 days,2026-01-01}')
UNION ALL
SELECT 'follow_up_metrics', pg_temp.body_plan('follow_up_metrics(timestamptz, timestamptz, interval)',
         ARRAY['\msince\M', '\muntil\M', '\mafter\M'], '{timestamptz,timestamptz,interval}',
         '{-infinity,infinity,45 days}');
SET plan_cache_mode = force_generic_plan;
INSERT INTO got
SELECT 'comment_terms', pg_temp.body_plan('comment_terms(nps_category, timestamptz, timestamptz, regconfig, integer)',
         ARRAY['comment_terms\.category', '\msince\M', '\muntil\M', '\mconfig\M', '\mmin_answers\M'],
         '{nps_billing.nps_category,timestamptz,timestamptz,regconfig,integer}',
         '{detractor,2025-06-01,2025-07-01,english,5}')
UNION ALL
SELECT 'nps_drivers', pg_temp.plan_of($$SELECT * FROM nps_drivers('{plan,method}', '2025-06-01 12:00', '2025-07-01')$$)
UNION ALL
SELECT 'nps_drivers (all)', pg_temp.plan_of($$SELECT * FROM nps_drivers('{plan,method}')$$);
RESET plan_cache_mode;
SELECT fn,
       p !~ 'Seq Scan on payment_event\M' AS no_full_scan_of_payments,
       CASE WHEN fn ~ '^(nps_churn|nps_retention|follow_up_metrics)' THEN p ~ 'payment_event_customer_idx' END AS payments_by_customer_index,
       CASE WHEN fn IN ('comment_terms', 'nps_drivers') THEN p !~ 'Seq Scan on response\M' END AS no_full_scan_of_answers,
       CASE WHEN fn = 'comment_terms' THEN p ~ 'response_commented_idx' END AS commented_answers_by_index,
       CASE WHEN fn LIKE 'nps_drivers%' THEN p ~ 'rollup_segment' AND p !~ 'payment_event' END AS reads_rollups
FROM got ORDER BY fn;
-- the cohort (each customer's first answer) of a whole-history call comes from
-- response_customer_idx in customer order, without a sort of the answers; a month's by time
SELECT fn, p ~ 'Index Only Scan using response_customer_idx' AND p !~ 'Sort Key: r.customer_id' AS cohort_from_customer_index,
       p ~ 'response_responded_at_idx' AS cohort_by_time
FROM got WHERE fn ~ '^(nps_churn|nps_retention)' ORDER BY fn;
-- nps_retention reads each customer's payments in one index range (no sort of all of them);
-- follow_up_metrics probes the payments once per answer (not once per aggregate reading it)
SELECT fn, (SELECT count(*) FROM regexp_matches(p, 'payment_event_customer_idx', 'g')) AS payment_lookups,
       p !~ 'Sort Key: p.customer_id' AS no_sort_of_payments
FROM got WHERE fn IN ('nps_retention', 'follow_up_metrics') ORDER BY fn;
-- the analysis plan test's promise holds for nps_drivers too: inlined, no Function Scan
SELECT p !~ 'Function Scan on nps_drivers' AS inlined FROM got WHERE fn = 'nps_drivers';
-- on failure, the plans: SELECT fn, p FROM got;
RESET plan_cache_mode;
TRUNCATE response, survey, payment_event; DELETE FROM payment_source;
