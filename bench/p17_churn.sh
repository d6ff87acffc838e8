#!/bin/sh
# P17/P18: nps_churn and nps_retention over the whole history at 1M answers / 10M payment events.
#   P17  SELECT * FROM nps_churn()                          (seconds, median)
#   P18  SELECT * FROM nps_retention('30 days', '360 days')  (seconds, median)
# Targets (docs/churn.md#performance): a monthly retention report over the whole history reads
# each customer's payments after their first answer, so it is proportional to customers and
# their payments, not to the rollups: < 5 s for nps_churn (one index probe per customer) and
# < 10 s for nps_retention (a year of payments per customer) keep both usable from a BI tool.
# The loader writes the extension's tables directly, as capture would have: N/4 customers pay
# monthly for 40 months (5% failed), one in five stops paying at a random month; each customer
# answers every 10 months (4 answers each, N in all). NPS_P17_ANSWERS sets N (default 1,000,000;
# events are ~10N), NPS_BENCH_REPS the repetitions (median, default 5).
. "$(dirname "$0")/lib.sh"
N=${NPS_P17_ANSWERS:-1000000}
REPS=${NPS_BENCH_REPS:-5}
tmp=$(mktemp -d)
t0=$(date +%s)
psql -qX -v ON_ERROR_STOP=1 -v n="$N" >/dev/null <<'SQL'
SET synchronous_commit = off;
TRUNCATE nps_billing.response, nps_billing.survey, nps_billing.payment_event;
DELETE FROM nps_billing.payment_source WHERE name = 'p17';
DROP TABLE IF EXISTS p17_pay;
CREATE TABLE p17_pay (id int);
INSERT INTO nps_billing.payment_source (id, name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES (1700, 'p17', 'p17_pay', 'x', 'y', 'z');
-- customer c (0 .. N/4 - 1) pays in month k (0..39) unless it stopped before k
INSERT INTO nps_billing.payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT 1700, 'p17-' || g, CASE WHEN hashint4(g) % 20 = 0 THEN 'failed' ELSE 'succeeded' END,
       'c' || c, 10 + (c % 5) * 10, CASE WHEN c % 7 = 0 THEN 'EUR' ELSE 'USD' END,
       now() - interval '1200 days' + k * interval '30 days' + (c % 40000) * interval '1 minute',
       jsonb_build_object('plan', (ARRAY['starter', 'pro', 'team'])[1 + c % 3])
  FROM generate_series(0, 10 * :n - 1) g
 CROSS JOIN LATERAL (SELECT g % (:n / 4) AS c, g / (:n / 4) AS k) x
 WHERE NOT (hashint4(c) % 5 = 0 AND k > (hashint4(c * 7) & 2147483647) % 40);
-- N answers: every customer answers in months 1, 11, 21 and 31, two days after paying
INSERT INTO nps_billing.response (customer_id, score, comment, responded_at, context_at)
SELECT 'c' || c, (ARRAY[0,2,4,5,6,7,7,8,8,9,9,9,10,10,10])[1 + (hashint4(j) & 2147483647) % 15],
       CASE WHEN j % 3 = 0 THEN (ARRAY['unclear charge', 'love it', 'support was slow', 'too expensive'])[1 + j % 4] END,
       now() - interval '1200 days' + (1 + 10 * a) * interval '30 days' + (c % 40000) * interval '1 minute' + interval '2 days',
       now()
  FROM generate_series(0, :n - 1) j
 CROSS JOIN LATERAL (SELECT j % (:n / 4) AS c, j / (:n / 4) AS a) x;
VACUUM ANALYZE nps_billing.payment_event;
VACUUM ANALYZE nps_billing.response;
SQL
events=$(psql -qAtX -c "SELECT count(*) FROM nps_billing.payment_event")
echo "# loaded $N answers / $events events in $(( $(date +%s) - t0 )) s" >&2
timed() {  # timed SQL -> median seconds
  ms "$1" >/dev/null
  i=0; : >"$tmp/one"
  while [ $i -lt "$REPS" ]; do ms "$1" >>"$tmp/one"; i=$((i + 1)); done
  median <"$tmp/one" | awk '{ printf "%.2f\n", $1 / 1000 }'
}
churn=$(timed "SELECT * FROM nps_billing.nps_churn()")
retention=$(timed "SELECT * FROM nps_billing.nps_retention('30 days', '360 days')")
drivers=$(timed "SELECT * FROM nps_billing.nps_drivers('{plan}')")
terms=$(timed "SELECT * FROM nps_billing.comment_terms('detractor', now() - interval '90 days', now())")
echo "# P17: nps_churn() $churn s; P18: nps_retention('30 days', '360 days') $retention s"
echo "# also: nps_drivers('{plan}') $drivers s, comment_terms over the last 90 days $terms s"
psql -qAtX -c "SELECT category, customers, churned, round(churn_rate::numeric, 3) FROM nps_billing.nps_churn()" | sed 's/^/# /' >&2
row P17 "nps_churn() at $N answers / $events events, seconds" "$churn" "<= 5"
row P18 "nps_retention('30 days', '360 days') at $N answers / $events events, s" "$retention" "<= 10"
psql -qX -c "TRUNCATE nps_billing.response, nps_billing.payment_event" -c "DROP TABLE p17_pay" >/dev/null
rm -rf "$tmp"
