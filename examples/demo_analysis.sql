-- The billing story told with nps_billing's analysis functions, on the data of demo_billing.sql.
-- Every query here runs as is on your own database.
\set ON_ERROR_STOP 1
SET search_path = public, nps_billing;
SET TimeZone = 'UTC';
\pset footer off
-- p-values: scientific notation when tiny
CREATE FUNCTION pg_temp.p(x float8) RETURNS text LANGUAGE sql IMMUTABLE
  AS $$ SELECT CASE WHEN x IS NULL THEN NULL WHEN x < 0.0001 THEN to_char(x, '9.9EEEE') ELSE round(x::numeric, 4)::text END $$;
CREATE FUNCTION pg_temp.r(x float8) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$ SELECT round(x::numeric, 1) $$;

\echo
\echo '== What the demo loaded (Stripe-sync tables -> track_payments trigger -> queue -> answers)'
SELECT (SELECT count(*) FROM stripe.customers) AS customers,
       (SELECT count(*) FROM stripe.charges) AS charges,
       (SELECT count(*) FROM stripe.charges WHERE status = 'failed') AS failed_charges,
       (SELECT count(*) FROM payment_event) AS payment_events,
       (SELECT count(*) FROM capture_error) AS capture_errors,
       (SELECT count(*) FROM survey) AS surveys,
       (SELECT count(*) FROM response) AS answers;

\echo
\echo '== Survey funnel: survey_funnel(since)'
SELECT created, sent, responded, expired, failed, round(response_rate::numeric, 3) AS response_rate,
       date_trunc('minute', median_time_to_answer) AS median_time_to_answer
FROM survey_funnel('2025-10-01');

\echo
\echo '== Pattern 1: automatic payers are more often promoters: nps_by(''collection'') and nps_by(''method'')'
SELECT value AS collection, responses, pg_temp.r(nps) AS nps, pg_temp.r(ci_low) AS ci_low, pg_temp.r(ci_high) AS ci_high,
       pg_temp.r(difference) AS vs_rest, pg_temp.p(p_value) AS p_value
FROM nps_by('collection');
SELECT value AS method, responses, pg_temp.r(nps) AS nps, pg_temp.r(ci_low) AS ci_low, pg_temp.r(ci_high) AS ci_high,
       pg_temp.r(difference) AS vs_rest, pg_temp.p(p_value) AS p_value
FROM nps_by('method');

\echo
\echo '== Pattern 2: NPS dips in the days right after the monthly charge: nps_by_days_since_payment(30)'
SELECT day, responses, pg_temp.r(nps) AS nps, pg_temp.r(ci_low) AS ci_low, pg_temp.r(ci_high) AS ci_high,
       CASE WHEN responses >= 100 THEN repeat('#', greatest(0, round((nps + 20) / 2.5))::int) END AS "nps (bar from -20; n >= 100)"
FROM nps_by_days_since_payment(30);

\echo
\echo '== Both patterns, tested (95% adjusted Wald CIs; two-sided z-test from nps_compare)'
WITH g AS (
  SELECT 'automatic vs manual collection' AS pattern,
         nps_agg(score) FILTER (WHERE attributes->>'collection' = 'charge_automatically') AS a,
         nps_agg(score) FILTER (WHERE attributes->>'collection' = 'send_invoice') AS b
  FROM response_context
  UNION ALL
  SELECT 'days 4-30 vs days 0-3 after a charge',
         nps_agg(score) FILTER (WHERE days_since_payment BETWEEN 4 AND 30),
         nps_agg(score) FILTER (WHERE days_since_payment BETWEEN 0 AND 3)
  FROM response_context)
SELECT pattern, pg_temp.r(nps(a)) AS nps_a, format('[%s, %s]', pg_temp.r((nps_ci(a)).low), pg_temp.r((nps_ci(a)).high)) AS ci_a,
       pg_temp.r(nps(b)) AS nps_b, format('[%s, %s]', pg_temp.r((nps_ci(b)).low), pg_temp.r((nps_ci(b)).high)) AS ci_b,
       (nps_ci(a)).low > (nps_ci(b)).high AS cis_apart, pg_temp.p((nps_compare(a, b)).p_value) AS p_value,
       (nps_compare(a, b)).p_value < 0.01 AS "p < 0.01"
FROM g;

\echo
\echo '== Failed payments: nps_failed_payments(''30 days'')'
SELECT failed_payment AS failed_payment_in_30d, responses, pg_temp.r(nps) AS nps, pg_temp.r(ci_low) AS ci_low,
       pg_temp.r(ci_high) AS ci_high, pg_temp.r(difference) AS difference, pg_temp.p(p_value) AS p_value
FROM nps_failed_payments('30 days');

\echo
\echo '== Monthly trend: nps_trend(''1 month'', ...) (Pro rose from $79 to $89 on 2026-08-01)'
SELECT to_char(bucket_start, 'YYYY-MM') AS month, responses, pg_temp.r(nps) AS nps, pg_temp.r(ci_low) AS ci_low,
       pg_temp.r(ci_high) AS ci_high
FROM nps_trend('1 month', '2025-10-01', '2026-11-01');

\echo
\echo '== Monitoring: nps_alerts(''30 days'', 5, as_of => ''2026-09-01'') - what dropped in August'
SELECT dimension, value, previous_responses AS prev_n, pg_temp.r(previous_nps) AS prev_nps,
       current_responses AS cur_n, pg_temp.r(current_nps) AS cur_nps, pg_temp.r(nps_drop) AS nps_drop,
       pg_temp.p(p_value) AS p_value
FROM nps_alerts('30 days', 5, as_of => '2026-09-01');

\echo
\echo '== Revenue at risk: revenue_at_risk(''2026-07-01'') (succeeded payments since July of customers whose latest answer is detractor/passive)'
SELECT category, currency, customers, payments, amount FROM revenue_at_risk('2026-07-01');

\echo
\echo '== Do detractors stop paying? nps_churn(''45 days'', as_of => ''2026-10-01'') (churned: no succeeded payment within 45 days of the answer)'
SELECT category, customers, churned, round(100 * churn_rate::numeric, 1) AS "churn %",
       format('[%s, %s]', round(100 * ci_low::numeric, 1), round(100 * ci_high::numeric, 1)) AS "95% Wilson CI",
       round(lift::numeric, 2) AS lift_vs_promoters, pg_temp.p(p_value) AS p_value, churned_revenue AS "paid in the 45 days before (churned)"
FROM nps_churn('45 days', as_of => '2026-10-01');

\echo
\echo '== Retention curves: nps_retention(''30 days'', ''240 days'', as_of => ''2026-10-01'') (Kaplan-Meier, open windows censored; bar: share still paying, from 50 %)'
SELECT (extract(epoch FROM bucket_end) / 86400)::int AS day, category, at_risk, churned, censored,
       round(100 * survival::numeric, 1) AS "paying %",
       format('[%s, %s]', round(100 * ci_low::numeric, 1), round(100 * ci_high::numeric, 1)) AS "95% band",
       rpad(repeat(CASE category WHEN 'detractor' THEN 'D' WHEN 'passive' THEN 'p' ELSE 'P' END,
                   greatest(0, round((survival - 0.5) * 100))::int), 50) || '|' AS "50 %                                        100 %"
FROM nps_retention('30 days', '240 days', as_of => '2026-10-01')
ORDER BY bucket_end, category;

\echo
\echo '== Drivers: nps_drivers(''{collection,method,plan}'') - every value tested, Benjamini-Hochberg q-values, largest impact first'
SELECT attribute, value, responses, pg_temp.r(nps) AS nps, pg_temp.r(difference) AS vs_rest,
       pg_temp.p(p_value) AS p_value, pg_temp.p(q_value) AS q_value, round(impact::numeric) AS impact
FROM nps_drivers('{collection,method,plan}');

\echo
\echo '== What detractors say: comment_terms(''detractor'') - full-text-search terms over-represented in their comments (log-odds z)'
SELECT term, answers, round(100 * share::numeric, 1) AS "% of detractor comments",
       round(100 * other_share::numeric, 1) AS "% of other comments", round(z::numeric, 1) AS z
FROM comment_terms('detractor') LIMIT 10;
\echo '   ... and after the Pro price rise (August - September 2026):'
SELECT term, answers, round(100 * share::numeric, 1) AS "% of detractor comments",
       round(100 * other_share::numeric, 1) AS "% of other comments", round(z::numeric, 1) AS z
FROM comment_terms('detractor', '2026-08-01', '2026-10-01') LIMIT 5;

SELECT to_regproc('nps_billing.claim_follow_ups') IS NOT NULL AS have_follow_ups \gset
\if :have_follow_ups
\echo
\echo '== Closing the loop: a follow-up for every detractor, worked by two agents (claim_follow_ups leases with SKIP LOCKED)'
SELECT count(*) AS follow_ups, count(*) FILTER (WHERE status = 'open') AS open FROM follow_up;
SELECT 'alice' AS agent, id, customer_id, score, left(comment, 45) AS comment, payment_amount, payment_currency, days_since_payment
FROM claim_follow_ups('alice', 3) ORDER BY id;
SELECT 'bob' AS agent, id, customer_id, score, left(comment, 45) AS comment, payment_amount, payment_currency, days_since_payment
FROM claim_follow_ups('bob', 3) ORDER BY id;
-- alice calls and resolves hers; bob leaves a note on his, gives one back to the queue
SELECT id, resolve_follow_up(id, 'alice', note => 'Called: explained the invoice, reminder before billing set up') AS status
FROM follow_up WHERE assignee = 'alice' AND active ORDER BY id;
SELECT id, update_follow_up(id, 'bob', 'contacted', 'Left a voicemail') AS status
FROM follow_up WHERE assignee = 'bob' AND active ORDER BY id;
SELECT release_follow_up(max(id), 'bob') FROM follow_up WHERE assignee = 'bob' AND active;
SELECT follow_ups, open, overdue, resolved, wont_fix, date_trunc('second', median_time_to_close) AS median_time_to_close,
       detractors_judged, followed_up, not_followed_up
FROM follow_up_metrics();
\endif

\echo
\echo '== Under the hood: the aggregates (revenue-weighted NPS, stored daily summaries, sliding window)'
SELECT attributes->>'collection' AS collection, pg_temp.r(nps(score)) AS nps,
       pg_temp.r(nps(score, amount::float8)) AS revenue_weighted_nps
FROM response_context WHERE attributes IS NOT NULL GROUP BY 1 ORDER BY 1;
CREATE TEMP TABLE daily AS
  SELECT date_trunc('day', responded_at) AS day, nps_agg(score) AS summary FROM response GROUP BY 1;
SELECT to_char(date_trunc('quarter', day), 'YYYY-"Q"Q') AS quarter, responses(rollup(summary)) AS responses,
       pg_temp.r(nps(rollup(summary))) AS nps
FROM daily GROUP BY 1 ORDER BY 1;
SELECT to_char(responded_at, 'YYYY-MM-DD HH24:MI') AS answered, pg_temp.r(rolling) AS nps_last_1000_answers
FROM (SELECT responded_at, id, nps(score) OVER (ORDER BY responded_at, id ROWS BETWEEN 999 PRECEDING AND CURRENT ROW) AS rolling
      FROM response) s
ORDER BY responded_at DESC, id DESC LIMIT 3;
