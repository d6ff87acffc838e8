#!/bin/sh
# P14-P16: the analysis functions on two years of answers, and what keeping their rollups costs
# an answer.
#   P14  at the large size (1M answers / 5M payment events): the slowest whole-history analysis
#        call / the floor SELECT nps(score) FROM response
#   P15  the slowest analysis call at the large size / at the small one (100k / 0.5M)
#   P16  answers/s through record_response with the context and rollup triggers on / with them
#        disabled (the same calls, runs interleaved)
# The loader writes the extension's tables directly, as capture would have: one source with the
# dimensions plan and method, payments every ~34 days per customer (5% failed), a survey for
# one payment in five, answered within two days; the answers get their context from
# context_of() (what the trigger stores) and the rollups from the statement triggers.
# NPS_P14_SMALL / NPS_P14_LARGE set the sizes in answers (events are 5x), NPS_BENCH_REPS the
# timing repetitions (median), NPS_P16_ANSWERS the answers per P16 run.
. "$(dirname "$0")/lib.sh"
SMALL=${NPS_P14_SMALL:-100000}
LARGE=${NPS_P14_LARGE:-1000000}
REPS=${NPS_BENCH_REPS:-3}
P16N=${NPS_P16_ANSWERS:-20000}
tmp=$(mktemp -d)

load() {  # load N: N answers, 5N events over 730 days
  psql -qX -v ON_ERROR_STOP=1 -v n="$1" >/dev/null <<'SQL'
SET synchronous_commit = off;
TRUNCATE nps_billing.response, nps_billing.survey, nps_billing.payment_event;
DROP TABLE IF EXISTS p14_pay;
CREATE TABLE p14_pay (id int);
DELETE FROM nps_billing.payment_source WHERE name = 'p14';
INSERT INTO nps_billing.payment_source (id, name, relid, customer_expr, payment_key_expr, succeeded_expr, dimensions)
VALUES (1400, 'p14', 'p14_pay', 'x', 'y', 'z', '{plan,method}');
-- 5N events: customer c pays every ~36 days over 730 days (20 payments each)
INSERT INTO nps_billing.payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT 1400, 'p14-' || g, CASE WHEN hashint4(g) % 20 = 0 THEN 'failed' ELSE 'succeeded' END,
       'c' || (g % (:n / 4)), 10 + (g % 5) * 10, CASE WHEN g % 7 = 0 THEN 'EUR' ELSE 'USD' END,
       now() - interval '730 days' + (g / (:n / 4)) * interval '34 days' + ((g % (:n / 4)) % 34000) * interval '1 minute' * 1.44,
       jsonb_build_object('plan', (ARRAY['starter', 'pro', 'team'])[1 + g % 3], 'method', (ARRAY['card', 'sepa', 'invoice'])[1 + (g / 3) % 3])
  FROM generate_series(1, 5 * :n) g;
-- N surveys (one payment in five), all answered
INSERT INTO nps_billing.survey (token, source_id, event_id, customer_id, channel, status, send_after, expires_at, sent_at, created_at)
SELECT md5(e.id::text), 1400, e.id, e.customer_id, 'email', 'responded', e.occurred_at + interval '1 hour',
       e.occurred_at + interval '14 days', e.occurred_at + interval '1 hour', e.occurred_at
  FROM nps_billing.payment_event e WHERE e.id % 5 = 0 AND e.occurred_at < now() - interval '3 days';
INSERT INTO nps_billing.response (survey_id, customer_id, score, channel, responded_at, survey_event_id, payment_event_id,
       payment_source_id, payment_kind, payment_amount, payment_currency, payment_at, payment_attributes,
       payment_dimensions, days_since_payment, failed_payment_30d, context_at, answered_after, funnel_at)
SELECT s.id, s.customer_id, sc.score, 'email', t.at, c.survey_event_id, c.payment_event_id, c.payment_source_id, c.payment_kind,
       c.payment_amount, c.payment_currency, c.payment_at, c.payment_attributes, c.payment_dimensions,
       c.days_since_payment, c.failed_payment_30d, now(), t.at - s.sent_at, least(s.created_at, t.at)
  FROM nps_billing.survey s
 CROSS JOIN LATERAL (SELECT s.sent_at + (hashint8(s.id) % 172800 + 172800) % 172800 * interval '1 second' AS at) t
 CROSS JOIN LATERAL (SELECT (ARRAY[0,2,4,5,6,7,7,8,8,9,9,9,10,10,10])[1 + (hashint8(s.id * 7) % 15 + 15) % 15] AS score) sc
 CROSS JOIN LATERAL nps_billing.context_of(s.customer_id, s.id, t.at) c;
VACUUM ANALYZE nps_billing.payment_event;
VACUUM ANALYZE nps_billing.survey;
VACUUM ANALYZE nps_billing.response;
VACUUM ANALYZE nps_billing.rollup_segment;
VACUUM ANALYZE nps_billing.rollup_days;
VACUUM ANALYZE nps_billing.customer_latest_answer;
VACUUM ANALYZE nps_billing.survey_funnel_day;
SQL
}

# name|SQL|scope (all = whole history, 30d)
calls() {
  cat <<'EOF'
floor|SELECT nps_billing.nps(score) FROM nps_billing.response|floor
nps_trend 1 day|SELECT count(*) FROM nps_billing.nps_trend('1 day', date_trunc('day', now()) - interval '730 days', date_trunc('day', now()))|all
nps_trend 30 days|SELECT count(*) FROM nps_billing.nps_trend('1 day', now() - interval '30 days', now())|30d
nps_by(plan)|SELECT count(*) FROM nps_billing.nps_by('plan')|all
nps_by(plan) 30 days|SELECT count(*) FROM nps_billing.nps_by('plan', now() - interval '30 days', now())|30d
nps_by_days_since_payment(30)|SELECT count(*) FROM nps_billing.nps_by_days_since_payment(30)|all
nps_failed_payments()|SELECT count(*) FROM nps_billing.nps_failed_payments()|all
revenue_at_risk all|SELECT count(*) FROM nps_billing.revenue_at_risk('-infinity')|all
revenue_at_risk 30 days|SELECT count(*) FROM nps_billing.revenue_at_risk(now() - interval '30 days')|30d
survey_funnel all|SELECT count(*) FROM nps_billing.survey_funnel('-infinity')|all
survey_funnel 30 days|SELECT count(*) FROM nps_billing.survey_funnel(now() - interval '30 days')|30d
nps_alerts(30 days, 10)|SELECT count(*) FROM nps_billing.nps_alerts('30 days', 10)|30d
response_context count|SELECT count(*) FROM nps_billing.response_context|all
EOF
}

measure() {  # measure SIZE -> $tmp/SIZE.times: name|scope|median ms
  calls | while IFS='|' read -r name q scope; do
    ms "$q" >/dev/null  # warm
    i=0; : >"$tmp/one"
    while [ $i -lt "$REPS" ]; do ms "$q" >>"$tmp/one"; i=$((i + 1)); done
    echo "$name|$scope|$(median <"$tmp/one")"
  done >"$tmp/$1.times"
  while IFS='|' read -r name scope t; do echo "# $1 answers: $name ($scope): $t ms"; done <"$tmp/$1.times"
}

for size in "$SMALL" "$LARGE"; do
  t0=$(date +%s)
  load "$size"
  echo "# loaded $size answers / $((5 * size)) events in $(( $(date +%s) - t0 )) s" >&2
  measure "$size"
done

floor_l=$(awk -F'|' '$2 == "floor" {print $3}' "$tmp/$LARGE.times")
slow_all_l=$(awk -F'|' '$2 == "all" {if ($3 > m) {m = $3; n = $1}} END {print m "|" n}' "$tmp/$LARGE.times")
slow_l=$(awk -F'|' '$2 != "floor" {if ($3 > m) {m = $3; n = $1}} END {print m "|" n}' "$tmp/$LARGE.times")
slow_s=$(awk -F'|' '$2 != "floor" {if ($3 > m) {m = $3; n = $1}} END {print m "|" n}' "$tmp/$SMALL.times")
echo "# P14: slowest whole-history call ${slow_all_l#*|} ${slow_all_l%%|*} ms vs floor $floor_l ms"
echo "# P15: slowest call ${slow_l#*|} ${slow_l%%|*} ms at $LARGE vs ${slow_s#*|} ${slow_s%%|*} ms at $SMALL"
row P14 "slowest whole-history analysis call / nps(score) over all, $LARGE answers" "$(ratio "${slow_all_l%%|*}" "$floor_l")" "<= 1.0"
row P15 "slowest analysis call at $LARGE / at $SMALL answers" "$(ratio "${slow_l%%|*}" "${slow_s%%|*}")" "<= 2"

# P16: two sessions answer P16N surveys each through record_response, one transaction per
# answer; maintenance on and off alternate.
psql -qX -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE OR REPLACE PROCEDURE p16_answer(part int, parts int) LANGUAGE plpgsql AS $$
DECLARE t text;
BEGIN
  FOR t IN SELECT s.token FROM nps_billing.survey s WHERE s.token LIKE 'p16-%' AND s.status = 'sent' AND s.id % parts = part ORDER BY s.id LOOP
    PERFORM nps_billing.record_response(t, (hashtext(t) & 10)::int);
    COMMIT;
  END LOOP;
END $$;
SQL
p16_run() {  # p16_run on|off -> answers/s; "off": every trigger on response and survey disabled
  # for the whole run (setup, answers, clean-up), so the rollups stay consistent either way
  if [ "$1" = off ]; then
    psql -qX -c "ALTER TABLE nps_billing.response DISABLE TRIGGER USER" -c "ALTER TABLE nps_billing.survey DISABLE TRIGGER USER" >/dev/null
  fi
  psql -qX -v ON_ERROR_STOP=1 -v n="$P16N" >/dev/null <<'SQL'
INSERT INTO nps_billing.survey (token, source_id, event_id, customer_id, channel, status, send_after, expires_at, sent_at, created_at)
SELECT 'p16-' || e.id, 1400, e.id, e.customer_id, 'email', 'sent', now() - interval '1 hour', now() + interval '1 day',
       now() - interval '1 hour', now() - interval '1 hour'
  FROM nps_billing.payment_event e WHERE e.id % 5 = 1 ORDER BY e.id DESC LIMIT 2 * :n;
VACUUM ANALYZE nps_billing.survey;
SQL
  a=$(date +%s.%N)
  psql -qX -c "CALL p16_answer(0, 2)" >/dev/null & psql -qX -c "CALL p16_answer(1, 2)" >/dev/null & wait
  b=$(date +%s.%N)
  psql -qX -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
DELETE FROM nps_billing.response WHERE survey_id IN (SELECT id FROM nps_billing.survey WHERE token LIKE 'p16-%');
DELETE FROM nps_billing.survey WHERE token LIKE 'p16-%';
SQL
  psql -qX -c "ALTER TABLE nps_billing.response ENABLE TRIGGER USER" -c "ALTER TABLE nps_billing.survey ENABLE TRIGGER USER" >/dev/null
  awk -v n="$P16N" -v a="$a" -v b="$b" 'BEGIN { printf "%.0f\n", 2 * n / (b - a) }'
}
i=0; : >"$tmp/on"; : >"$tmp/off"
while [ $i -lt "$REPS" ]; do
  p16_run off >>"$tmp/off"; p16_run on >>"$tmp/on"
  echo "# P16 run $i: off $(tail -1 "$tmp/off") answers/s, on $(tail -1 "$tmp/on") answers/s" >&2
  i=$((i + 1))
done
on=$(median <"$tmp/on"); off=$(median <"$tmp/off")
echo "# P16: record_response $on answers/s with context and rollups, $off without (2 sessions)"
n_bad=$(psql -qAtX -c "SELECT count(*) FROM ((SELECT day, source_id, dims, failed_30d, agg::text FROM nps_billing.rollup_segment
          EXCEPT SELECT nps_billing.utc_day(responded_at), coalesce(payment_source_id, 0), coalesce(payment_dimensions, '{}'),
                        coalesce(failed_payment_30d, false), nps_billing.nps_agg(score)::text FROM nps_billing.response GROUP BY 1, 2, 3, 4)) x")
echo "# rollup rows that differ from the answers after the runs: $n_bad"
row P16 "record_response answers/s, context + rollups kept / without" "$(ratio "$on" "$off")" ">= 0.8"
psql -qX -c "DROP PROCEDURE IF EXISTS p16_answer(int, int)" >/dev/null
rm -rf "$tmp"
