#!/bin/sh
# P6-P8: the capture trigger against an untracked table and the hand-written PL/pgSQL baseline.
#   P6  single-row INSERTs/s (pgbench, 4 clients), tracked vs untracked        target >= 0.70
#   P7  same mix, tracked vs the PL/pgSQL reference trigger                     target >= 1.3
#   P8  INSERT ... SELECT of 1M payments (50k customers), tracked vs untracked  target <= 3.0
# Runs are interleaved; medians of NPS_BENCH_REPS (default 5).
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
# warm-up: every customer has paid (and been surveyed) once, caches are hot
for t in pay_plain pay_tracked pay_ref; do tps 3 $t >/dev/null; done
i=0
while [ $i -lt "$REPS" ]; do
  tps "$SECS" pay_plain >>"$tmp/plain"
  tps "$SECS" pay_tracked >>"$tmp/tracked"
  tps "$SECS" pay_ref >>"$tmp/ref"
  i=$((i + 1))
done
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

row P6 "single-row INSERT tps, tracked / untracked (4 clients)" "$(ratio "$m_tracked" "$m_plain")" ">= 0.70"
row P7 "single-row INSERT tps, tracked / PL/pgSQL reference trigger" "$(ratio "$m_tracked" "$m_ref")" ">= 1.3"
row P8 "INSERT ... SELECT $P8ROWS rows, tracked / untracked time" "$(ratio "$m_p8t" "$m_p8p")" "<= 3.0"
psql -qX >/dev/null <<SQL
SELECT nps_billing.untrack_payments('pay_tracked'); SELECT nps_billing.untrack_payments('p8_tracked');
DROP TABLE pay_plain, pay_tracked, pay_ref, p8_plain, p8_tracked; DROP SCHEMA ref CASCADE;
SQL
rm -rf "$tmp"
