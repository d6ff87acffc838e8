#!/bin/sh
# P6-P8: the capture trigger against an untracked table and the hand-written PL/pgSQL baseline.
#   P6  single-row INSERTs/s (pgbench, 4 clients), tracked vs untracked        target >= 0.70
#   P7  same mix, tracked vs the PL/pgSQL reference trigger                     target >= 1.15
#   P8  INSERT ... SELECT of 1M payments (50k customers), tracked vs untracked  reported (the event
#       rows alone cost ~3.4x the payment insert: the floor lines below)
# Runs are interleaved; medians of NPS_BENCH_REPS (default 5). Two diagnostics are printed as
# comments: the server CPU per payment of each variant, and the floor of P8 (the event rows
# written alone, without any capture logic).
. "$(dirname "$0")/lib.sh"
REPS=${NPS_BENCH_REPS:-5}
SECS=${NPS_BENCH_PGBENCH_SECS:-8}
P8ROWS=${NPS_BENCH_P8_ROWS:-1000000}
# The contract's PL/pgSQL baseline (shared/spec/bench/reference_trigger.sql), kept verbatim here.
ref="$(dirname "$0")/reference_trigger.sql"
tmp=$(mktemp -d)
shape='(id bigserial PRIMARY KEY, customer_id text, amount_cents bigint, currency text, status text, created_at timestamptz DEFAULT now())'
psql -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
DROP TABLE IF EXISTS pay_plain, pay_tracked, pay_ref, p8_plain, p8_tracked;
CREATE TABLE pay_plain $shape;
CREATE TABLE pay_tracked $shape;
CREATE TABLE pay_ref $shape;
CREATE TABLE p8_plain $shape;
CREATE TABLE p8_tracked $shape;
SELECT nps_billing.track_payments('pay_tracked', 'customer_id', 'id::text', \$\$status = 'succeeded'\$\$,
  \$\$status = 'failed'\$\$, 'amount_cents / 100.0', 'currency', 'created_at', name => 'bench_p6');
SELECT nps_billing.track_payments('p8_tracked', 'customer_id', 'id::text', \$\$status = 'succeeded'\$\$,
  \$\$status = 'failed'\$\$, 'amount_cents / 100.0', 'currency', 'created_at', name => 'bench_p8');
UPDATE nps_billing.payment_source SET throttle = '90 days' WHERE name IN ('bench_p6', 'bench_p8');
SQL
psql -qX -v ON_ERROR_STOP=1 -f "$ref" >/dev/null
psql -qX -v ON_ERROR_STOP=1 -c 'CREATE TRIGGER capture AFTER INSERT OR UPDATE ON pay_ref FOR EACH ROW EXECUTE FUNCTION ref.capture()' >/dev/null
for t in pay_plain pay_tracked pay_ref; do
  cat >"$tmp/$t.sql" <<SQL
\set c random(1, 10000)
INSERT INTO $t (customer_id, amount_cents, currency, status) VALUES ('cus_' || :c, 1000 + :c, 'usd', 'succeeded');
SQL
done
tps() { pgbench -n -c 4 -j 4 -T "$1" -f "$tmp/$2.sql" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p'; }
# Diagnostic next to P6/P7: CPU time of the 4 server backends per payment (from /proc; pgbench,
# WAL writer and kernel excluded), which is steadier than tps and shows the cost added per payment.
cpu_per_payment() {
  pgbench -n -c 4 -j 4 -T "$1" -f "$tmp/$2.sql" >/dev/null 2>&1 &
  bp=$!
  sleep 1
  pids=$(psql -qAtX -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench'")
  n0=$(psql -qAtX -c "SELECT last_value FROM $2_id_seq")
  c0=$(for p in $pids; do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done | awk '{s += $1} END {print s + 0}')
  sleep $(($1 - 2))
  c1=$(for p in $pids; do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done | awk '{s += $1} END {print s + 0}')
  n1=$(psql -qAtX -c "SELECT last_value FROM $2_id_seq")
  wait $bp
  awk -v a="$c0" -v b="$c1" -v x="$n0" -v y="$n1" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { if (y > x) printf "%.1f", (b - a) * 1e6 / hz / (y - x); else print "?" }'
}
# warm-up: every customer has paid (and been surveyed) once, caches are hot
for t in pay_plain pay_tracked pay_ref; do tps 3 $t >/dev/null; done
i=0
while [ $i -lt "$REPS" ]; do
  tps "$SECS" pay_plain >>"$tmp/plain"
  tps "$SECS" pay_tracked >>"$tmp/tracked"
  tps "$SECS" pay_ref >>"$tmp/ref"
  i=$((i + 1))
done
i=0
while [ $i -lt 3 ]; do
  for t in pay_plain pay_tracked pay_ref; do cpu_per_payment 6 $t >>"$tmp/cpu_$t"; echo >>"$tmp/cpu_$t"; done
  i=$((i + 1))
done
cp_plain=$(grep . "$tmp/cpu_pay_plain" | median); cp_tracked=$(grep . "$tmp/cpu_pay_tracked" | median)
cp_ref=$(grep . "$tmp/cpu_pay_ref" | median)
echo "# P6/P7 server CPU per payment (us, medians of 3): untracked $cp_plain, tracked $cp_tracked (+$(awk -v a="$cp_tracked" -v b="$cp_plain" 'BEGIN { printf "%.1f", a - b }')), reference $cp_ref (+$(awk -v a="$cp_ref" -v b="$cp_plain" 'BEGIN { printf "%.1f", a - b }'))" >&2
m_plain=$(median <"$tmp/plain"); m_tracked=$(median <"$tmp/tracked"); m_ref=$(median <"$tmp/ref")
echo "# P6/P7 tps medians: untracked $m_plain, tracked $m_tracked, reference $m_ref (runs: $(tr '\n' ' ' <"$tmp/plain")| $(tr '\n' ' ' <"$tmp/tracked")| $(tr '\n' ' ' <"$tmp/ref"))" >&2

ins() { echo "INSERT INTO $1 (customer_id, amount_cents, currency, status) SELECT 'cus_' || (g % 50000), 1000 + g % 5000, 'usd', 'succeeded' FROM generate_series(1, $P8ROWS) g"; }
# each statement separately: VACUUM / CHECKPOINT cannot run inside psql -c's implicit transaction
reset_p8() {
  psql -qX -c 'TRUNCATE p8_plain, p8_tracked' \
    -c "DELETE FROM nps_billing.survey WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'bench_p8')" \
    -c "DELETE FROM nps_billing.payment_event WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'bench_p8')" \
    -c 'TRUNCATE nps_billing.customer_contact' -c 'VACUUM nps_billing.payment_event, nps_billing.survey' -c 'CHECKPOINT' >/dev/null
}
i=0
while [ $i -lt "$REPS" ]; do
  reset_p8
  ms "$(ins p8_plain)" >>"$tmp/p8plain"
  reset_p8
  ms "$(ins p8_tracked)" >>"$tmp/p8tracked"
  i=$((i + 1))
done
m_p8p=$(median <"$tmp/p8plain"); m_p8t=$(median <"$tmp/p8tracked")
echo "# P8 ms medians: untracked $m_p8p, tracked $m_p8t (runs: $(tr '\n' ' ' <"$tmp/p8plain")| $(tr '\n' ' ' <"$tmp/p8tracked"))" >&2
psql -qAtX -c "SELECT '# P8 last tracked run: ' || count(*) || ' events, ' || count(survey_id) || ' surveys' FROM nps_billing.payment_event WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'bench_p8')" >&2

# The floor of P8: the same 1M event rows written alone into a copy of payment_event (its
# columns and indexes, no capture logic), timed side by side with the 1M payments.
# "lean" is the same without the (customer_id, occurred_at) index: only the contract's dedup key
# and the primary key.
psql -qX -c 'DROP TABLE IF EXISTS p8_events_alone, p8_events_lean' \
  -c 'CREATE TABLE p8_events_alone (LIKE nps_billing.payment_event INCLUDING DEFAULTS INCLUDING INDEXES)' \
  -c 'CREATE TABLE p8_events_lean (LIKE nps_billing.payment_event INCLUDING DEFAULTS INCLUDING INDEXES)' >/dev/null
psql -qAtX -c "SELECT indexrelid::regclass FROM pg_index WHERE indrelid = 'p8_events_lean'::regclass AND pg_get_indexdef(indexrelid) LIKE '%customer_id%'" |
  while read -r idx; do psql -qX -c "DROP INDEX $idx" >/dev/null; done
evs() { echo "INSERT INTO $1 (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, skip_reason) SELECT 1, g::text, 'succeeded', 'cus_' || (g % 50000), (1000 + g % 5000) / 100.0, 'usd', now(), 'throttled' FROM generate_series(1, $P8ROWS) g"; }
i=0
while [ $i -lt 3 ]; do
  psql -qX -c 'TRUNCATE p8_plain, p8_events_alone, p8_events_lean' -c 'CHECKPOINT' >/dev/null
  ms "$(ins p8_plain)" >>"$tmp/floor_pay"
  psql -qX -c 'CHECKPOINT' >/dev/null
  ms "$(evs p8_events_alone)" >>"$tmp/floor_ev"
  psql -qX -c 'CHECKPOINT' >/dev/null
  ms "$(evs p8_events_lean)" >>"$tmp/floor_lean"
  i=$((i + 1))
done
m_fp=$(median <"$tmp/floor_pay"); m_fe=$(median <"$tmp/floor_ev"); m_fl=$(median <"$tmp/floor_lean")
floor() { awk -v e="$1" -v p="$m_fp" 'BEGIN { printf "%.1f", 1 + e / p }'; }
echo "# P8 floor: the $P8ROWS event rows alone take $(ratio "$m_fe" "$m_fp")x the payment insert ($m_fe ms vs $m_fp ms), so tracked >= $(floor "$m_fe")x before any capture logic; without the customer index $(ratio "$m_fl" "$m_fp")x, tracked >= $(floor "$m_fl")x" >&2
psql -qX -c 'DROP TABLE p8_events_alone, p8_events_lean' >/dev/null

row P6 "single-row INSERT tps, tracked / untracked (4 clients)" "$(ratio "$m_tracked" "$m_plain")" ">= 0.70"
row P7 "single-row INSERT tps, tracked / PL/pgSQL reference trigger" "$(ratio "$m_tracked" "$m_ref")" ">= 1.15"
row P8 "INSERT ... SELECT $P8ROWS rows, tracked / untracked time" "$(ratio "$m_p8t" "$m_p8p")" "reported"
psql -qX >/dev/null <<SQL
SELECT nps_billing.untrack_payments('pay_tracked'); SELECT nps_billing.untrack_payments('p8_tracked');
DROP TABLE pay_plain, pay_tracked, pay_ref, p8_plain, p8_tracked; DROP SCHEMA ref CASCADE;
SQL
rm -rf "$tmp"
