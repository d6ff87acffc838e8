#!/bin/sh
# P9 / P9a: 4 concurrent workers drain N due messages, our survey queue and a bare leased queue
# side by side, interleaved (ours, bare, ours, bare, ...), medians of REPS runs. Ours runs with a
# send window (recipients in three time zones) and a daily cap configured on its source.
#  - ours: claim_surveys(w, 100), commit, then one mark_sent(ids[], w) for the batch, commit.
#  - bare: the floor, written here: one narrow table (id, payload, lease columns) with two indexes;
#    read = UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 100) ... RETURNING, commit;
#    done = one DELETE ... WHERE id = ANY(ids), commit.
#  - floor: our design's writes alone, written here - copies of survey and survey_queue (same
#    columns, indexes and fillfactor, no triggers): claim = pick through the queue, lock and lease
#    the survey in place, move its queue row to the lease's end, read the payment event; report =
#    the survey marked sent in place, its queue row deleted. No send window, cap, funnel count,
#    trigger, validation or function layer: what any survey queue keeping the contract's survey
#    row (status and lease set by the claim) and a due queue beside it must write at least.
# Every claim/read is logged (unlogged table), so duplicates and losses are counted, not assumed.
# Also printed: bytes per queued message (table + indexes, after loading into a compacted table)
# and WAL bytes per message for claim + report (pg_current_wal_lsn around each drain).
. "$(dirname "$0")/lib.sh"
N=${NPS_P9_SURVEYS:-100000}
REPS=${NPS_BENCH_REPS:-5}
WORKERS=4
psql -qX -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
DROP TABLE IF EXISTS p9_pay, p9_claims, p9a_queue, p9a_claims, p9f_survey, p9f_queue, p9f_claims;
CREATE TABLE p9_pay (id int);
CREATE UNLOGGED TABLE p9_claims (survey_id bigint, worker text);
CREATE UNLOGGED TABLE p9a_claims (id bigint, worker text);
DELETE FROM nps_billing.payment_source WHERE name = 'p9';
INSERT INTO nps_billing.payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES ('p9', 'p9_pay', 'x', 'y', 'z');
-- A send window and a daily cap, so every claim judges each survey in its recipient's time zone
-- and takes its share of the day's cap: a window open every day until 23:59:59.999999 local time
-- (open whenever the bench runs, but not the always-open default, which claims skip) and a cap
-- far above what the runs send.
UPDATE nps_billing.payment_source
   SET time_zone = 'Europe/Berlin', send_from = '00:00', send_until = '23:59:59.999999', daily_cap = 100000000
 WHERE name = 'p9';
-- the bare leased queue: what a message needs travels in the payload
CREATE TABLE p9a_queue (
  id          bigserial PRIMARY KEY,
  payload     jsonb NOT NULL,
  vt          timestamptz NOT NULL DEFAULT now(),  -- visible (claimable) from this time
  read_ct     integer NOT NULL DEFAULT 0,
  lease_owner text);
CREATE INDEX p9a_queue_vt_idx ON p9a_queue (vt);
-- the floor's copies of survey and its due queue: what survey holds, without triggers
CREATE TABLE p9f_survey (LIKE nps_billing.survey INCLUDING ALL EXCLUDING GENERATED) WITH (fillfactor = 34);
CREATE TABLE p9f_queue (LIKE nps_billing.survey_queue INCLUDING ALL);
CREATE OR REPLACE PROCEDURE p9f_worker(w text, batch integer) LANGUAGE plpgsql AS $$
DECLARE ids bigint[]; le timestamptz;
BEGIN
  LOOP
    le := now() + interval '5 minutes';
    WITH pk AS MATERIALIZED (
      SELECT s.id FROM p9f_queue q JOIN p9f_survey s ON s.id = q.survey_id
       WHERE q.visible_at <= now() AND s.status IN ('pending', 'sending') AND s.send_after <= now()
         AND s.expires_at > now() AND (s.status = 'pending' OR s.lease_until <= now())
       ORDER BY q.visible_at LIMIT batch FOR UPDATE OF s SKIP LOCKED),
    qu AS (UPDATE p9f_queue q SET visible_at = le WHERE q.survey_id = ANY (ARRAY(SELECT id FROM pk))),
    c AS (UPDATE p9f_survey s SET status = 'sending', lease_owner = w, lease_until = le, attempts = s.attempts + 1, due_at = NULL
           WHERE s.id = ANY (ARRAY(SELECT id FROM pk)) RETURNING s.id, s.event_id, s.token)
    SELECT array_agg(c.id) INTO ids
      FROM c LEFT JOIN LATERAL (SELECT e.kind, e.amount FROM nps_billing.payment_event e WHERE e.id = c.event_id LIMIT 1) e ON true;
    COMMIT;
    EXIT WHEN ids IS NULL;
    INSERT INTO p9f_claims SELECT unnest(ids), w;
    WITH d AS (UPDATE p9f_survey x SET status = 'sent', sent_at = now(), lease_owner = NULL, lease_until = NULL, lease_role = NULL
                WHERE x.id = ANY (ids) AND x.lease_owner = w AND x.status IN ('sending', 'responded') RETURNING x.id)
    DELETE FROM p9f_queue q WHERE q.survey_id = ANY (ARRAY(SELECT id FROM d));
    COMMIT;
  END LOOP;
END $$;
CREATE UNLOGGED TABLE p9f_claims (survey_id bigint, worker text);
CREATE OR REPLACE PROCEDURE p9_worker(w text, batch integer) LANGUAGE plpgsql AS $$
DECLARE ids bigint[];
BEGIN
  LOOP
    SELECT array_agg(id) INTO ids FROM nps_billing.claim_surveys(w, batch);
    COMMIT;
    EXIT WHEN ids IS NULL;
    INSERT INTO p9_claims SELECT unnest(ids), w;
    PERFORM count(*) FROM nps_billing.mark_sent(ids, w) m WHERE m.ok;
    COMMIT;
  END LOOP;
END $$;
CREATE OR REPLACE PROCEDURE p9a_worker(w text, batch integer) LANGUAGE plpgsql AS $$
DECLARE ids bigint[];
BEGIN
  LOOP
    WITH r AS (
      UPDATE p9a_queue q SET vt = now() + interval '5 minutes', read_ct = q.read_ct + 1, lease_owner = w
        FROM (SELECT id FROM p9a_queue WHERE vt <= now() ORDER BY vt LIMIT batch FOR UPDATE SKIP LOCKED) s
       WHERE q.id = s.id
      RETURNING q.id, q.payload)
    SELECT array_agg(r.id) INTO ids FROM r;
    COMMIT;
    EXIT WHEN ids IS NULL;
    INSERT INTO p9a_claims SELECT unnest(ids), w;
    DELETE FROM p9a_queue WHERE id = ANY (ids);
    COMMIT;
  END LOOP;
END $$;
SQL
tmp=$(mktemp -d)
# drain KIND (p9 or p9a): runs the workers, appends rate and WAL bytes per message
drain() {
  lsn0=$(psql -qAtX -c 'SELECT pg_current_wal_lsn()')
  t0=$(date +%s.%N)
  w=1
  while [ $w -le $WORKERS ]; do
    psql -qX -v ON_ERROR_STOP=1 -c "CALL $1_worker('$1-w$w', 100)" >/dev/null &
    w=$((w + 1))
  done
  wait
  t1=$(date +%s.%N)
  awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f\n", n / (b - a) }' >>"$tmp/$1.rate"
  psql -qAtX -c "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0') / $N)" >>"$tmp/$1.wal"
}
r=0
while [ $r -lt "$REPS" ]; do
  # ---- ours
  psql -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
DELETE FROM nps_billing.survey WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'p9');
DELETE FROM nps_billing.payment_event WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'p9');
TRUNCATE p9_claims;
SQL
  # storage: the survey table and its due queue (survey_queue), with their indexes
  size="pg_total_relation_size('nps_billing.survey') + pg_total_relation_size('nps_billing.survey_queue')"
  if [ $r -eq 0 ]; then
    psql -qX -c 'VACUUM FULL nps_billing.survey, nps_billing.survey_queue' >/dev/null
    before=$(psql -qAtX -c "SELECT $size")
  fi
  psql -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO nps_billing.payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT p.id, 'p9-' || g, 'succeeded', 'c' || (g % 50000), 19.99, 'EUR', now() - interval '2 hours', '{"plan": "pro"}'
  FROM nps_billing.payment_source p, generate_series(1, $N) g WHERE p.name = 'p9';
INSERT INTO nps_billing.survey (token, source_id, event_id, customer_id, channel, send_after, expires_at, time_zone)
SELECT md5(e.id::text || random()::text), e.source_id, e.id, e.customer_id, 'email',
       now() - interval '1 hour' + (e.id % 3600) * interval '1 second', now() + interval '14 days',
       (ARRAY['America/New_York', 'Asia/Tokyo', NULL])[e.id % 3 + 1]  -- a third in the source's zone
  FROM nps_billing.payment_event e JOIN nps_billing.payment_source p ON p.id = e.source_id WHERE p.name = 'p9';
VACUUM ANALYZE nps_billing.survey, nps_billing.survey_queue;
-- the floor's copies of the same surveys and queue rows
TRUNCATE p9f_survey, p9f_queue, p9f_claims;
INSERT INTO p9f_survey SELECT * FROM nps_billing.survey s WHERE s.source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'p9');
INSERT INTO p9f_queue SELECT q.* FROM nps_billing.survey_queue q JOIN p9f_survey s ON s.id = q.survey_id;
VACUUM ANALYZE p9f_survey, p9f_queue;
CHECKPOINT;
SQL
  if [ $r -eq 0 ]; then
    psql -qAtX -c "SELECT round(($size - $before)::numeric / $N)" >"$tmp/p9.bytes"
    psql -qAtX -F " " -c "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'nps_billing.survey'::regclass" >"$tmp/p9.hot0"
  fi
  drain p9
  if [ $r -eq 0 ]; then
    sleep 1   # statistics are flushed at most once a second
    psql -qAtX -F ' ' -c "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'nps_billing.survey'::regclass" >"$tmp/p9.hot1"
    # the same surveys once sent (the queue empty again): what the history keeps, with what the
    # claims and reports left behind (index entries of updates that were not in place)
    psql -qX -c 'VACUUM nps_billing.survey, nps_billing.survey_queue' >/dev/null
    psql -qAtX -c "SELECT round(($size - $before)::numeric / $N)" >"$tmp/p9.bytes_sent"
  fi
  psql -qAtX >>"$tmp/dups" -c "SELECT count(*) - count(DISTINCT survey_id) FROM p9_claims"
  # ---- floor (its copies were loaded with ours)
  drain p9f
  psql -qAtX >>"$tmp/dups" -c "SELECT count(*) - count(DISTINCT survey_id) FROM p9f_claims"
  psql -qAtX >>"$tmp/lost" -c "SELECT count(*) FROM p9f_survey s WHERE s.status <> 'sent' OR NOT EXISTS (SELECT 1 FROM p9f_claims c WHERE c.survey_id = s.id)"
  psql -qAtX >>"$tmp/lost" -c "SELECT count(*) FROM nps_billing.survey s JOIN nps_billing.payment_source p ON p.id = s.source_id
                                 WHERE p.name = 'p9' AND (s.status <> 'sent' OR s.attempts <> 1)
                                    OR (p.name = 'p9' AND NOT EXISTS (SELECT 1 FROM p9_claims c WHERE c.survey_id = s.id))"
  # ---- bare
  psql -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
TRUNCATE p9a_queue, p9a_claims;
INSERT INTO p9a_queue (payload, vt)
SELECT jsonb_build_object('token', md5(g::text || random()::text), 'customer_id', 'c' || (g % 50000), 'channel', 'email',
                          'source', 'p9', 'kind', 'succeeded', 'amount', 19.99, 'currency', 'EUR',
                          'occurred_at', now() - interval '2 hours', 'attributes', '{"plan": "pro"}'::jsonb),
       now() - interval '1 hour' + (g % 3600) * interval '1 second'
  FROM generate_series(1, $N) g;
VACUUM ANALYZE p9a_queue;
CHECKPOINT;
SQL
  [ $r -eq 0 ] && psql -qAtX -c "SELECT round(pg_total_relation_size('p9a_queue')::numeric / $N)" >"$tmp/p9a.bytes"
  drain p9a
  psql -qAtX >>"$tmp/dups" -c "SELECT count(*) - count(DISTINCT id) FROM p9a_claims"
  psql -qAtX >>"$tmp/lost" -c "SELECT ($N - count(DISTINCT id)) + (SELECT count(*) FROM p9a_queue) FROM p9a_claims"
  echo "run $r: ours $(tail -1 "$tmp/p9.rate")/s (WAL $(tail -1 "$tmp/p9.wal") B/msg), floor $(tail -1 "$tmp/p9f.rate")/s (WAL $(tail -1 "$tmp/p9f.wal") B/msg), bare $(tail -1 "$tmp/p9a.rate")/s (WAL $(tail -1 "$tmp/p9a.wal") B/msg)" >&2
  r=$((r + 1))
done
ours=$(median <"$tmp/p9.rate")
bare=$(median <"$tmp/p9a.rate")
floor=$(median <"$tmp/p9f.rate")
dups=$(awk '{s += $1} END {print s + 0}' "$tmp/dups")
lost=$(awk '{s += $1} END {print s + 0}' "$tmp/lost")
read -r upd0 hot0 <"$tmp/p9.hot0" 2>/dev/null || true
read -r upd1 hot1 <"$tmp/p9.hot1" 2>/dev/null || true
row P9 "4 workers drain ${N} surveys (send window + daily cap; claim 100 + one mark_sent per batch), surveys/s" "$ours" ">= 5000"
row P9 "duplicate claims over $REPS runs (ours, floor and bare)" "$dups" "<= 0"
row P9 "messages lost (not sent once) over $REPS runs (ours, floor and bare)" "$lost" "<= 0"
row P9a "our drain vs the bare leased queue (${bare} messages/s), ratio" "$(ratio "$ours" "$bare")" ">= 0.6"
echo "# P9a floor: our design's writes alone (see the top of this file) drain $floor surveys/s, $(ratio "$floor" "$bare") of the bare queue; our drain is $(ratio "$ours" "$floor") of that floor (per run: $(paste -d/ "$tmp/p9.rate" "$tmp/p9f.rate" "$tmp/p9a.rate" | tr '\n' ' '))"
echo "# P9 storage per queued message (tables + indexes): survey + survey_queue $(cat "$tmp/p9.bytes") B, bare queue $(cat "$tmp/p9a.bytes") B"
echo "# P9 storage per survey once sent and vacuumed (tables + indexes): $(cat "$tmp/p9.bytes_sent") B"
echo "# P9 WAL per message, claim + report (median): survey $(median <"$tmp/p9.wal") B, floor $(median <"$tmp/p9f.wal") B, bare queue $(median <"$tmp/p9a.wal") B"
awk -v u0="${upd0:-0}" -v h0="${hot0:-0}" -v u1="${upd1:-0}" -v h1="${hot1:-0}" 'BEGIN {
  if (u1 > u0) printf "# P9 survey updates in the first drain: %d, HOT %d (%.0f%%)\n", u1 - u0, h1 - h0, 100 * (h1 - h0) / (u1 - u0) }'
psql -qX >/dev/null <<'SQL'
DELETE FROM nps_billing.survey WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'p9');
DELETE FROM nps_billing.payment_event WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'p9');
DELETE FROM nps_billing.send_day WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'p9');
DELETE FROM nps_billing.payment_source WHERE name = 'p9';
DROP TABLE p9_pay, p9_claims, p9a_queue, p9a_claims, p9f_survey, p9f_queue, p9f_claims;
DROP PROCEDURE p9_worker(text, integer);
DROP PROCEDURE p9f_worker(text, integer);
DROP PROCEDURE p9a_worker(text, integer);
SQL
rm -rf "$tmp"
