#!/bin/sh
# P9: 4 concurrent workers drain 100k due surveys through claim_surveys + mark_sent.
# Each worker is a psql session running a loop like a real sender: claim a batch of 100 and
# commit, then report every survey with mark_sent in its own transaction. Every claim is logged,
# so duplicates (a survey claimed twice) and losses (a survey not sent) are counted, not assumed.
# Prints surveys/s (median of REPS runs) and the total duplicates and losses over all runs.
. "$(dirname "$0")/lib.sh"
N=${NPS_P9_SURVEYS:-100000}
REPS=${NPS_BENCH_REPS:-5}
WORKERS=4
psql -qX -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
DROP TABLE IF EXISTS p9_pay, p9_claims;
CREATE TABLE p9_pay (id int);
CREATE UNLOGGED TABLE p9_claims (survey_id bigint, worker text);
DELETE FROM nps_billing.payment_source WHERE name = 'p9';
INSERT INTO nps_billing.payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES ('p9', 'p9_pay', 'x', 'y', 'z');
CREATE OR REPLACE PROCEDURE p9_worker(w text, batch integer) LANGUAGE plpgsql AS $$
DECLARE ids bigint[]; i bigint;
BEGIN
  LOOP
    SELECT array_agg(id) INTO ids FROM nps_billing.claim_surveys(w, batch);
    COMMIT;
    EXIT WHEN ids IS NULL;
    INSERT INTO p9_claims SELECT unnest(ids), w;
    FOREACH i IN ARRAY ids LOOP
      PERFORM nps_billing.mark_sent(i, w);
      COMMIT;
    END LOOP;
  END LOOP;
END $$;
SQL
tmp=$(mktemp -d)
r=0
while [ $r -lt "$REPS" ]; do
  psql -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
DELETE FROM nps_billing.survey WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'p9');
DELETE FROM nps_billing.payment_event WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'p9');
TRUNCATE p9_claims;
INSERT INTO nps_billing.payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT p.id, 'p9-' || g, 'succeeded', 'c' || (g % 50000), 19.99, 'EUR', now() - interval '2 hours', '{"plan": "pro"}'
  FROM nps_billing.payment_source p, generate_series(1, $N) g WHERE p.name = 'p9';
INSERT INTO nps_billing.survey (token, source_id, event_id, customer_id, channel, send_after, expires_at)
SELECT md5(e.id::text || random()::text), e.source_id, e.id, e.customer_id, 'email',
       now() - interval '1 hour' + (e.id % 3600) * interval '1 second', now() + interval '14 days'
  FROM nps_billing.payment_event e JOIN nps_billing.payment_source p ON p.id = e.source_id WHERE p.name = 'p9';
VACUUM ANALYZE nps_billing.survey;
CHECKPOINT;
SQL
  t0=$(date +%s.%N)
  w=1
  while [ $w -le $WORKERS ]; do
    psql -qX -v ON_ERROR_STOP=1 -c "CALL p9_worker('p9-w$w', 100)" >/dev/null &
    w=$((w + 1))
  done
  wait
  t1=$(date +%s.%N)
  awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f\n", n / (b - a) }' >>"$tmp/rate"
  psql -qAtX >>"$tmp/dups" -c "SELECT count(*) - count(DISTINCT survey_id) FROM p9_claims"
  psql -qAtX >>"$tmp/lost" -c "SELECT count(*) FROM nps_billing.survey s JOIN nps_billing.payment_source p ON p.id = s.source_id
                                 WHERE p.name = 'p9' AND (s.status <> 'sent' OR s.attempts <> 1)
                                    OR (p.name = 'p9' AND NOT EXISTS (SELECT 1 FROM p9_claims c WHERE c.survey_id = s.id))"
  echo "run $r: $(tail -1 "$tmp/rate") surveys/s, dups $(tail -1 "$tmp/dups"), lost $(tail -1 "$tmp/lost")" >&2
  r=$((r + 1))
done
rate=$(median <"$tmp/rate")
dups=$(awk '{s += $1} END {print s + 0}' "$tmp/dups")
lost=$(awk '{s += $1} END {print s + 0}' "$tmp/lost")
row P9 "4 workers drain ${N} surveys (claim 100 + mark_sent each), surveys/s" "$rate" ">= 5000"
row P9 "duplicate claims over $REPS runs" "$dups" "<= 0"
row P9 "surveys lost (not sent once) over $REPS runs" "$lost" "<= 0"
psql -qX >/dev/null <<'SQL'
DELETE FROM nps_billing.survey WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'p9');
DELETE FROM nps_billing.payment_event WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'p9');
DELETE FROM nps_billing.payment_source WHERE name = 'p9';
DROP TABLE p9_pay, p9_claims;
DROP PROCEDURE p9_worker(text, integer);
SQL
rm -rf "$tmp"
