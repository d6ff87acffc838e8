#!/bin/sh
# P14-P16: the analysis functions on two years of answers, and what keeping their rollups costs
# an answer.
#   P14  at the large size (1M answers / 5M payment events): the slowest whole-history analysis
#        call / the floor SELECT nps(score) FROM response
#   P15  the slowest analysis call at the large size / at the small one (100k / 0.5M)
#   P16  answers/s through record_response with the context and rollup maintenance / the same
#        calls without it (a copy of record_response that stores the bare answer, the context and
#        rollup triggers disabled), runs interleaved
# Each call is timed in one session (a warm-up run, then NPS_BENCH_REPS runs), as a dashboard's
# pooled connection would run it.
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
response_context count|SELECT count(*) FROM nps_billing.response_context|view
EOF
}

measure() {  # measure SIZE -> $tmp/SIZE.times: name|scope|median ms
  # one session per call, as a dashboard's pooled connection: a warm-up run, then REPS timed runs
  calls | while IFS='|' read -r name q scope; do
    i=0; : >"$tmp/one.sql"
    while [ $i -le "$REPS" ]; do echo "$q;" >>"$tmp/one.sql"; i=$((i + 1)); done
    psql -qAtX -c '\timing on' -f "$tmp/one.sql" 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n +2 >"$tmp/one"
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

# per call: ms at each size, growth
echo "# call (scope) | ms at $SMALL | ms at $LARGE | growth"
awk -F'|' -v s="$SMALL" 'NR == FNR {a[$1] = $3; next} {printf "# %s (%s) | %s | %s | %.1fx\n", $1, $2, a[$1], $3, (a[$1] > 0 ? $3 / a[$1] : 0)}' \
  "$tmp/$SMALL.times" "$tmp/$LARGE.times"
floor_l=$(awk -F'|' '$2 == "floor" {print $3}' "$tmp/$LARGE.times")
# (P14 counts the view's count(*) among the whole-history calls; P15 does not: a count of every
# answer grows with the answers by definition, like the floor)
slow_all_l=$(awk -F'|' '$2 == "all" || $2 == "view" {if ($3 > m) {m = $3; n = $1}} END {print m "|" n}' "$tmp/$LARGE.times")
slow_l=$(awk -F'|' '$2 == "all" || $2 == "30d" {if ($3 > m) {m = $3; n = $1}} END {print m "|" n}' "$tmp/$LARGE.times")
slow_s=$(awk -F'|' '$2 == "all" || $2 == "30d" {if ($3 > m) {m = $3; n = $1}} END {print m "|" n}' "$tmp/$SMALL.times")
echo "# P14: slowest whole-history call ${slow_all_l#*|} ${slow_all_l%%|*} ms vs floor $floor_l ms"
echo "# P15: slowest call ${slow_l#*|} ${slow_l%%|*} ms at $LARGE vs ${slow_s#*|} ${slow_s%%|*} ms at $SMALL"
row P14 "slowest whole-history analysis call / nps(score) over all, $LARGE answers" "$(ratio "${slow_all_l%%|*}" "$floor_l")" "<= 1.0"
row P15 "slowest analysis call at $LARGE / at $SMALL answers" "$(ratio "${slow_l%%|*}" "${slow_s%%|*}")" "<= 2"

# P16: two sessions answer P16N surveys each, one transaction per answer; "on" and "off" runs
# alternate. "on": record_response as shipped, every trigger enabled. "off": the same calls before
# the analysis maintenance existed: a copy of record_response that inserts the bare answer (no
# payment context), with the context and rollup triggers of response and survey disabled for the
# whole run (setup, answers, clean-up: the rollups stay consistent either way); the other
# triggers (follow-ups) run in both and open the same follow-ups (the copy sets context_at, which
# is what they look at).
psql -qX -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE OR REPLACE FUNCTION p16_record_response_before(token text, score integer, comment text DEFAULT NULL,
                                                      responded_at timestamptz DEFAULT now())
RETURNS bigint LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
  s nps_billing.survey;
  rid bigint;
BEGIN
  IF token IS NULL OR score IS NULL OR responded_at IS NULL THEN
    RAISE EXCEPTION 'record_response: % must not be NULL', 'token' USING ERRCODE = '22004';
  END IF;
  IF score < 0 OR score > 10 THEN
    RAISE EXCEPTION 'NPS score % is out of range 0..10', score USING ERRCODE = '22003';
  END IF;
  IF NOT isfinite(responded_at) THEN
    RAISE EXCEPTION 'record_response: responded_at % is not a finite time', responded_at USING ERRCODE = '22023';
  END IF;
  IF responded_at > now() + interval '5 minutes' THEN
    RAISE EXCEPTION 'record_response: responded_at % is in the future', responded_at USING ERRCODE = '22023';
  END IF;
  IF length(comment) > 10000 THEN
    RAISE EXCEPTION 'record_response: comment too long' USING ERRCODE = '22001';
  END IF;
  SELECT * INTO s FROM nps_billing.survey x WHERE x.token = p16_record_response_before.token FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'record_response: no survey has this token' USING ERRCODE = 'P0002';
  END IF;
  IF s.status IN ('expired', 'cancelled') THEN
    RAISE EXCEPTION 'record_response: survey % is %', s.id, s.status USING ERRCODE = '22023';
  END IF;
  IF responded_at < s.created_at - interval '5 minutes' THEN
    RAISE EXCEPTION 'record_response: responded_at % is before survey % was created', responded_at, s.id USING ERRCODE = '22023';
  END IF;
  IF responded_at >= s.expires_at THEN
    RAISE EXCEPTION 'record_response: survey % is expired', s.id USING ERRCODE = '22023';
  END IF;
  UPDATE nps_billing.survey x SET status = 'responded' WHERE x.id = s.id AND x.status <> 'responded';
  -- (context_at set: the follow-up triggers, which run in both, open the same follow-ups)
  INSERT INTO nps_billing.response AS r (survey_id, customer_id, score, comment, channel, responded_at, context_at)
  VALUES (s.id, s.customer_id, score, comment, s.channel, responded_at, now())
  ON CONFLICT (survey_id) DO NOTHING
  RETURNING r.id INTO rid;
  IF rid IS NULL THEN
    UPDATE nps_billing.response r
       SET score = p16_record_response_before.score, comment = p16_record_response_before.comment,
           responded_at = p16_record_response_before.responded_at, updated_at = now()
     WHERE r.survey_id = s.id
    RETURNING r.id INTO rid;
  END IF;
  RETURN rid;
END
$fn$;
CREATE OR REPLACE PROCEDURE p16_answer(part int, parts int, maintained boolean) LANGUAGE plpgsql AS $$
DECLARE t text;
BEGIN
  FOR t IN SELECT s.token FROM nps_billing.survey s WHERE s.token LIKE 'p16-%' AND s.status = 'sent' AND s.id % parts = part ORDER BY s.id LOOP
    IF maintained THEN
      PERFORM nps_billing.record_response(t, (hashtext(t) & 10)::int);
    ELSE
      PERFORM p16_record_response_before(t, (hashtext(t) & 10)::int);
    END IF;
    COMMIT;
  END LOOP;
END $$;
-- the analysis maintenance triggers (context, rollups, funnel counts, answer times)
CREATE OR REPLACE FUNCTION p16_maintenance(enable boolean) RETURNS void LANGUAGE plpgsql AS $$
DECLARE t record;
BEGIN
  FOR t IN SELECT c.relname, g.tgname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
            WHERE c.relnamespace = 'nps_billing'::regnamespace AND c.relname IN ('response', 'survey')
              AND NOT g.tgisinternal
              AND g.tgname ~ '^(response_context|response_rollups|survey_funnel|survey_answer_times)' LOOP
    EXECUTE format('ALTER TABLE nps_billing.%I %s TRIGGER %I', t.relname, CASE WHEN enable THEN 'ENABLE' ELSE 'DISABLE' END, t.tgname);
  END LOOP;
END $$;
SQL
p16_run() {  # p16_run on|off -> answers/s
  if [ "$1" = off ]; then
    psql -qX -c "SELECT p16_maintenance(false)" >/dev/null; m=false
  else
    m=true
  fi
  psql -qX -v ON_ERROR_STOP=1 -v n="$P16N" >/dev/null <<'SQL'
INSERT INTO nps_billing.survey (token, source_id, event_id, customer_id, channel, status, send_after, expires_at, sent_at, created_at)
SELECT 'p16-' || e.id, 1400, e.id, e.customer_id, 'email', 'sent', now() - interval '1 hour', now() + interval '1 day',
       now() - interval '1 hour', now() - interval '1 hour'
  FROM nps_billing.payment_event e WHERE e.id % 5 = 1 ORDER BY e.id DESC LIMIT 2 * :n;
VACUUM ANALYZE nps_billing.survey;
SQL
  a=$(date +%s.%N)
  psql -qX -c "CALL p16_answer(0, 2, $m)" >/dev/null & psql -qX -c "CALL p16_answer(1, 2, $m)" >/dev/null & wait
  b=$(date +%s.%N)
  psql -qX -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
DELETE FROM nps_billing.response WHERE survey_id IN (SELECT id FROM nps_billing.survey WHERE token LIKE 'p16-%');
DELETE FROM nps_billing.survey WHERE token LIKE 'p16-%';
SQL
  psql -qX -c "SELECT p16_maintenance(true)" >/dev/null
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
n_bad=$(psql -qAtX -c "SELECT count(*) FROM ((SELECT day, source_id, dims, failed_30d, nps_billing.rollup(agg)::text FROM nps_billing.rollup_segment GROUP BY 1, 2, 3, 4
          EXCEPT SELECT nps_billing.utc_day(responded_at), coalesce(payment_source_id, 0), coalesce(payment_dimensions, '{}'),
                        coalesce(failed_payment_30d, false), nps_billing.nps_agg(score)::text FROM nps_billing.response GROUP BY 1, 2, 3, 4)) x")
echo "# rollup rows that differ from the answers after the runs: $n_bad"
row P16 "record_response answers/s, context + rollups kept / without" "$(ratio "$on" "$off")" ">= 0.8"
psql -qX -c "DROP PROCEDURE IF EXISTS p16_answer(int, int, boolean)" -c "DROP FUNCTION IF EXISTS p16_record_response_before(text, integer, text, timestamptz), p16_maintenance(boolean)" >/dev/null
rm -rf "$tmp"
