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
