-- Metabase SQL pack for nps_billing. Each block is one saved question: New -> SQL query, paste,
-- set the variable types (since/until: Date; attribute: Text, default 'method'), save, add to
-- a dashboard. Connect Metabase with the analyst role (examples/bi/analyst_grants.sql).
-- Metabase replaces {{since}} / {{until}} with the chosen dates (midnight, the database time zone).

-- Question: NPS trend by week, with 95% confidence interval (line chart: x = week)
SELECT bucket_start AS week, responses, round(nps::numeric, 1) AS nps,
       round(ci_low::numeric, 1) AS ci_low, round(ci_high::numeric, 1) AS ci_high
FROM nps_billing.nps_trend('1 week', {{since}}::timestamptz, {{until}}::timestamptz);

-- Question: NPS by payment attribute (bar chart: x = value, y = nps; table for the p-values)
SELECT coalesce(value, '(none)') AS value, responses, round(nps::numeric, 1) AS nps,
       round(ci_low::numeric, 1) AS ci_low, round(ci_high::numeric, 1) AS ci_high,
       round(difference::numeric, 1) AS vs_rest, p_value
FROM nps_billing.nps_by({{attribute}}, {{since}}::timestamptz, {{until}}::timestamptz, 30);

-- Question: NPS by days since the last payment (bar chart: x = day, y = nps)
SELECT day, responses, round(nps::numeric, 1) AS nps,
       round(ci_low::numeric, 1) AS ci_low, round(ci_high::numeric, 1) AS ci_high
FROM nps_billing.nps_by_days_since_payment(30);

-- Question: failed payments in the 30 days before the answer (table)
SELECT CASE WHEN failed_payment THEN 'with a failed payment' ELSE 'no failed payment' END AS customers,
       responses, round(nps::numeric, 1) AS nps, round(difference::numeric, 1) AS difference, p_value
FROM nps_billing.nps_failed_payments('30 days');

-- Question: survey funnel since a date (table or "number" cards)
SELECT created, sent, responded, expired, failed, round(response_rate::numeric, 3) AS response_rate,
       median_time_to_answer::text AS median_time_to_answer
FROM nps_billing.survey_funnel({{since}}::timestamptz);

-- Question: revenue at risk since a date (table, or bar chart by currency)
SELECT category::text AS category, currency, customers, payments, amount
FROM nps_billing.revenue_at_risk({{since}}::timestamptz);

-- Question: NPS alerts, last 7 days against the 7 before (table; a Metabase alert on "has results")
SELECT dimension, value, previous_responses, round(previous_nps::numeric, 1) AS previous_nps,
       current_responses, round(current_nps::numeric, 1) AS current_nps,
       round(nps_drop::numeric, 1) AS nps_drop, p_value
FROM nps_billing.nps_alerts('7 days', 10)
WHERE p_value < 0.01;

-- Question: churn within 45 days of the answer, by NPS category (table; bar chart of churn_rate)
SELECT category::text AS category, customers, churned, round(100 * churn_rate::numeric, 1) AS churn_pct,
       round(100 * ci_low::numeric, 1) AS ci_low_pct, round(100 * ci_high::numeric, 1) AS ci_high_pct,
       round(lift::numeric, 2) AS lift, p_value
FROM nps_billing.nps_churn('45 days', {{since}}::timestamptz, {{until}}::timestamptz);

-- Question: retention curves (line chart: x bucket_end_days, y survival, series category)
SELECT category::text AS category, (extract(epoch FROM bucket_end) / 86400)::int AS bucket_end_days,
       at_risk, churned, censored, survival, ci_low, ci_high
FROM nps_billing.nps_retention('30 days', '360 days', {{since}}::timestamptz, {{until}}::timestamptz)
ORDER BY 1, 2;

-- Question: drivers with q-values (table)
SELECT attribute, value, responses, round(nps::numeric, 1) AS nps, round(difference::numeric, 1) AS difference,
       p_value, q_value, round(impact::numeric) AS impact
FROM nps_billing.nps_drivers('{plan,method,collection}', {{since}}::timestamptz, {{until}}::timestamptz);

-- Question: what detractors say (table)
SELECT term, answers, round(100 * share::numeric, 1) AS pct, round(100 * other_share::numeric, 1) AS pct_others,
       round(z::numeric, 2) AS z
FROM nps_billing.comment_terms('detractor', {{since}}::timestamptz, {{until}}::timestamptz)
LIMIT 20;
