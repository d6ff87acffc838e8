-- Grants for a read-only analyst / BI role (Grafana, Metabase, Superset, psql) on nps_billing.
-- Usage:  CREATE ROLE nps_analyst LOGIN PASSWORD '...';   then   psql -f examples/bi/analyst_grants.sql
-- The analyst reads answers, payment events and survey STATUS columns; never survey tokens,
-- never the queue functions (claim/mark/record) or forget_customer.
GRANT USAGE ON SCHEMA nps_billing TO nps_analyst;
GRANT USAGE ON TYPE nps_billing.npsagg, nps_billing.nps_category, nps_billing.nps_score TO nps_analyst;
GRANT SELECT ON nps_billing.response_context, nps_billing.response, nps_billing.payment_event,
                nps_billing.payment_source TO nps_analyst;
-- survey without token, lease_owner and last_error
GRANT SELECT (id, source_id, event_id, customer_id, channel, status, send_after, expires_at, attempts,
              sent_at, created_at) ON nps_billing.survey TO nps_analyst;
GRANT EXECUTE ON FUNCTION
  nps_billing.nps_trend(interval, timestamptz, timestamptz),
  nps_billing.nps_by(text, timestamptz, timestamptz, integer),
  nps_billing.nps_by_days_since_payment(integer),
  nps_billing.nps_failed_payments(interval),
  nps_billing.revenue_at_risk(timestamptz),
  nps_billing.survey_funnel(timestamptz),
  nps_billing.nps_alerts(interval, float8, text[], integer, timestamptz),
  nps_billing.check_argument(boolean, text, text),
  nps_billing.npsagg_from_histogram(bigint[]),
  -- aggregates and statistics the analysis functions (and ad-hoc queries) use
  nps_billing.nps(smallint), nps_billing.nps(integer), nps_billing.nps(bigint),
  nps_billing.nps(smallint, float8), nps_billing.nps(integer, float8), nps_billing.nps(bigint, float8),
  nps_billing.nps_agg(smallint), nps_billing.nps_agg(integer), nps_billing.nps_agg(bigint),
  nps_billing.nps_agg(smallint, float8), nps_billing.nps_agg(integer, float8), nps_billing.nps_agg(bigint, float8),
  nps_billing.rollup(nps_billing.npsagg),
  nps_billing.nps(nps_billing.npsagg), nps_billing.weighted_nps(nps_billing.npsagg),
  nps_billing.responses(nps_billing.npsagg), nps_billing.promoters(nps_billing.npsagg),
  nps_billing.passives(nps_billing.npsagg), nps_billing.detractors(nps_billing.npsagg),
  nps_billing.score_histogram(nps_billing.npsagg), nps_billing.mean_score(nps_billing.npsagg),
  nps_billing.nps_stderr(nps_billing.npsagg),
  nps_billing.nps_ci(nps_billing.npsagg, float8, text),
  nps_billing.nps_compare(nps_billing.npsagg, nps_billing.npsagg),
  nps_billing.category(smallint), nps_billing.category(integer), nps_billing.category(bigint)
TO nps_analyst;
