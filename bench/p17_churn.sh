#!/bin/sh
# P17/P18: nps_churn and nps_retention over the whole history at 1M answers / 10M payment events.
#   P17  SELECT * FROM nps_churn()                          (seconds, median)
#   P18  SELECT * FROM nps_retention('30 days', '360 days')  (seconds, median)
# also timed (no target): follow_up_metrics(), nps_drivers('{plan}'), comment_terms over the last
# 90 days and over the whole history.
# Targets (docs/churn.md#performance): both are whole-history reports that read every customer of
# the cohort and, for the retention curve, a year of each one's payments: < 5 s for nps_churn and
# < 10 s for nps_retention, i.e. a dashboard tile that loads in seconds, refreshed at most a few
# times an hour over a history that changes daily (a range of a few months costs a fraction).
# The loader writes the extension's tables directly, in bulk, as capture and record_response
# would have: N/4 customers (plan starter/pro/team) pay monthly for 45 months, in time order
# (5% failed, with skip_reason as capture sets it); one in five stops paying at a random month.
# Each customer answers in months 1, 11, 21 and 31, two days after paying (N answers, a third
# with a comment), each with its payment context (context_of(), what the trigger stores) and the
# rollups from the statement triggers; every detractor answer has its follow-up (70% resolved,
# 10% won't fix, the rest open), as the follow-up trigger and the agents would have left them.
# NPS_P17_ANSWERS sets N (default 1,000,000; events are ~10N), NPS_BENCH_REPS the repetitions
# (median, default 5), NPS_P17_EXPLAIN=FILE writes EXPLAIN (ANALYZE, BUFFERS) of the statements
# inside each function (auto_explain) to FILE, NPS_P17_KEEP=1 keeps the data, NPS_P17_LOAD=0
# times what is already loaded.
. "$(dirname "$0")/lib.sh"
N=${NPS_P17_ANSWERS:-1000000}
REPS=${NPS_BENCH_REPS:-5}
tmp=$(mktemp -d)
t0=$(date +%s)
[ "${NPS_P17_LOAD:-1}" = 0 ] || psql -qX -v ON_ERROR_STOP=1 -v n="$N" >/dev/null <<'SQL'
SET synchronous_commit = off;
TRUNCATE nps_billing.response, nps_billing.survey, nps_billing.payment_event;
DELETE FROM nps_billing.payment_source WHERE name = 'p17';
DROP TABLE IF EXISTS p17_pay;
CREATE TABLE p17_pay (id int);
INSERT INTO nps_billing.payment_source (id, name, relid, customer_expr, payment_key_expr, succeeded_expr, dimensions)
VALUES (1700, 'p17', 'p17_pay', 'x', 'y', 'z', '{plan}');
-- customer c (0 .. N/4 - 1) pays in month k (0..44) unless it stopped before k; rows in time
-- order (month by month), as capture appends them
INSERT INTO nps_billing.payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at,
                                       attributes, skip_reason)
SELECT 1700, 'p17-' || c || '-' || k, f.kind, 'c' || c, 10 + (c % 5) * 10, CASE WHEN c % 7 = 0 THEN 'EUR' ELSE 'USD' END,
       now() - interval '1360 days' + k * interval '30 days' + (c % 38000) * interval '1 minute',
       jsonb_build_object('plan', (ARRAY['starter', 'pro', 'team'])[1 + c % 3]),
       CASE f.kind WHEN 'failed' THEN 'not_surveyed_kind' ELSE 'throttled' END
  FROM generate_series(0, 44) k
 CROSS JOIN LATERAL generate_series(0 * k, :n / 4 - 1) c  -- (lateral: months outside, in order)
 CROSS JOIN LATERAL (SELECT CASE WHEN hashint4(c * 64 + k) % 20 = 0 THEN 'failed' ELSE 'succeeded' END AS kind) f
 WHERE NOT (hashint4(c) % 5 = 0 AND k > (hashint4(c * 7) & 2147483647) % 45);
VACUUM ANALYZE nps_billing.payment_event;
-- N answers: every customer answers in months 1, 11, 21 and 31, two days after paying, with the
-- context the trigger would have stored when the answer was recorded (context_at: then, so the
-- follow-up trigger leaves them to the rows below)
INSERT INTO nps_billing.response (customer_id, score, comment, channel, responded_at, payment_event_id,
       payment_source_id, payment_kind, payment_amount, payment_currency, payment_at, payment_attributes,
       payment_dimensions, days_since_payment, failed_payment_30d, context_at)
SELECT a.customer_id, a.score, a.comment, 'email', a.at, x.payment_event_id, x.payment_source_id, x.payment_kind,
       x.payment_amount, x.payment_currency, x.payment_at, x.payment_attributes, x.payment_dimensions,
       x.days_since_payment, x.failed_payment_30d, a.at
  FROM (SELECT 'c' || c AS customer_id,
               (ARRAY[0,2,4,5,6,7,7,8,8,9,9,9,10,10,10])[1 + (hashint4(j) & 2147483647) % 15] AS score,
               CASE WHEN j % 3 = 0 THEN (ARRAY['unclear charge', 'love it', 'support was slow', 'too expensive'])[1 + j % 4] END AS comment,
               now() - interval '1360 days' + (1 + 10 * m) * interval '30 days' + (c % 38000) * interval '1 minute' + interval '2 days' AS at
          FROM generate_series(0, :n - 1) j
         CROSS JOIN LATERAL (SELECT j % (:n / 4) AS c, j / (:n / 4) AS m) x
         ORDER BY at) a
 CROSS JOIN LATERAL nps_billing.context_of(a.customer_id, NULL, a.at) x;
-- the follow-ups of the detractor answers, worked by the agents
INSERT INTO nps_billing.follow_up (response_id, source_id, reason, status, created_at, due_at, assignee,
                                   contacted_at, closed_at)
SELECT r.id, 1700, 'detractor', s.status, r.responded_at, r.responded_at + interval '2 days',
       CASE WHEN s.status <> 'open' THEN 'agent' || r.id % 7 END,
       CASE WHEN s.status <> 'open' THEN r.responded_at + s.took / 2 END,
       CASE WHEN s.status IN ('resolved', 'wont_fix') THEN r.responded_at + s.took END
  FROM nps_billing.response r
 CROSS JOIN LATERAL (SELECT CASE WHEN h < 70 THEN 'resolved' WHEN h < 80 THEN 'wont_fix' ELSE 'open' END AS status,
                            (1 + h % 5) * interval '1 day' AS took
                       FROM (SELECT (hashint8(r.id) & 2147483647) % 100 AS h) q) s
 WHERE r.category = 'detractor'
 ORDER BY r.id;
VACUUM ANALYZE nps_billing.response;
VACUUM ANALYZE nps_billing.follow_up;
VACUUM ANALYZE nps_billing.rollup_segment;
VACUUM ANALYZE nps_billing.rollup_days;
VACUUM ANALYZE nps_billing.customer_latest_answer;
SQL
events=$(psql -qAtX -c "SELECT count(*) FROM nps_billing.payment_event")
answers=$(psql -qAtX -c "SELECT count(*) FROM nps_billing.response")
echo "# loaded $answers answers / $events events in $(( $(date +%s) - t0 )) s" >&2
if [ -n "${NPS_P17_EXPLAIN:-}" ]; then
  : >"$NPS_P17_EXPLAIN"
  for q in "SELECT * FROM nps_billing.nps_churn()" \
           "SELECT * FROM nps_billing.nps_retention('30 days', '360 days')" \
           "SELECT * FROM nps_billing.follow_up_metrics()" \
           "SELECT * FROM nps_billing.nps_drivers('{plan}')" \
           "SELECT * FROM nps_billing.comment_terms('detractor', now() - interval '90 days', now())" \
           "SELECT * FROM nps_billing.comment_terms('detractor')"; do
    { echo "=== $q"
      psql -qX -c "LOAD 'auto_explain'" -c "SET auto_explain.log_min_duration = 0" \
        -c "SET auto_explain.log_analyze = on" -c "SET auto_explain.log_buffers = on" \
        -c "SET auto_explain.log_nested_statements = on" -c "SET auto_explain.log_timing = on" \
        -c "SET client_min_messages = log" -c '\timing on' -c "$q" 2>&1 | grep -v '^LOG:  duration: [0-9.]* ms  plan:$' ; } >>"$NPS_P17_EXPLAIN"
  done
fi
timed() {  # timed SQL -> median seconds
  ms "$1" >/dev/null
  i=0; : >"$tmp/one"
  while [ $i -lt "$REPS" ]; do ms "$1" >>"$tmp/one"; i=$((i + 1)); done
  median <"$tmp/one" | awk '{ printf "%.2f\n", $1 / 1000 }'
}
churn=$(timed "SELECT * FROM nps_billing.nps_churn()")
retention=$(timed "SELECT * FROM nps_billing.nps_retention('30 days', '360 days')")
metrics=$(timed "SELECT * FROM nps_billing.follow_up_metrics()")
drivers=$(timed "SELECT * FROM nps_billing.nps_drivers('{plan}')")
terms=$(timed "SELECT * FROM nps_billing.comment_terms('detractor', now() - interval '90 days', now())")
terms_all=$(timed "SELECT * FROM nps_billing.comment_terms('detractor')")
echo "# P17: nps_churn() $churn s; P18: nps_retention('30 days', '360 days') $retention s (load: $(uptime | sed 's/.*load average: //'))"
echo "# also: follow_up_metrics() $metrics s, nps_drivers('{plan}') $drivers s, comment_terms over the last 90 days $terms s, over the whole history $terms_all s"
psql -qAtX -c "SELECT category, customers, churned, round(churn_rate::numeric, 3) FROM nps_billing.nps_churn()" | sed 's/^/# /' >&2
row P17 "nps_churn() at $answers answers / $events events, seconds" "$churn" "<= 5"
row P18 "nps_retention('30 days', '360 days') at $answers answers / $events events, s" "$retention" "<= 10"
[ -n "${NPS_P17_KEEP:-}" ] ||
  psql -qX -c "TRUNCATE nps_billing.response, nps_billing.payment_event" -c "DELETE FROM nps_billing.payment_source WHERE name = 'p17'" -c "DROP TABLE p17_pay" >/dev/null
rm -rf "$tmp"
