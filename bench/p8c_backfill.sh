#!/bin/sh
# P8c: backfill_payments over 1M existing rows vs the capture set path on the same rows.
#   The set path's cost is (tracked INSERT ... SELECT) - (the same INSERT untracked); the backfill
#   reads the rows already in the table and writes the same 1M event rows (no surveys).
#   ratio = backfill ms / set-path ms                                    target <= 1.0
# Runs interleaved; medians of NPS_BENCH_REPS (default 5); NPS_BENCH_P8_ROWS rows (default 1M).
. "$(dirname "$0")/lib.sh"
REPS=${NPS_BENCH_REPS:-5}
ROWS=${NPS_BENCH_P8_ROWS:-1000000}
tmp=$(mktemp -d)
shape='(id bigserial PRIMARY KEY, customer_id text, amount_cents bigint, currency text, status text, created_at timestamptz DEFAULT now())'
psql -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
DROP TABLE IF EXISTS p8c_plain, p8c_tracked, p8c_old;
CREATE TABLE p8c_plain $shape;
CREATE TABLE p8c_tracked $shape;
CREATE TABLE p8c_old $shape;
SELECT nps_billing.track_payments('p8c_tracked', 'customer_id', 'id::text', \$\$status = 'succeeded'\$\$,
  \$\$status = 'failed'\$\$, 'amount_cents / 100.0', 'currency', 'created_at', name => 'bench_p8c_set');
INSERT INTO p8c_old (customer_id, amount_cents, currency, status)
SELECT 'cus_' || (g % 50000), 1000 + g % 5000, 'usd', 'succeeded' FROM generate_series(1, $ROWS) g;
SELECT nps_billing.track_payments('p8c_old', 'customer_id', 'id::text', \$\$status = 'succeeded'\$\$,
  \$\$status = 'failed'\$\$, 'amount_cents / 100.0', 'currency', 'created_at', name => 'bench_p8c_backfill');
VACUUM ANALYZE p8c_old;
SQL
ins() { echo "INSERT INTO $1 (customer_id, amount_cents, currency, status) SELECT 'cus_' || (g % 50000), 1000 + g % 5000, 'usd', 'succeeded' FROM generate_series(1, $ROWS) g"; }
reset() {
  psql -qX -c 'TRUNCATE p8c_plain, p8c_tracked' \
    -c "DELETE FROM nps_billing.survey WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'bench\_p8c\_%')" \
    -c "DELETE FROM nps_billing.payment_event WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'bench\_p8c\_%')" \
    -c 'TRUNCATE nps_billing.customer_contact' -c 'VACUUM nps_billing.payment_event, nps_billing.survey' -c 'CHECKPOINT' >/dev/null
}
i=0
while [ $i -lt "$REPS" ]; do
  reset; ms "$(ins p8c_plain)" >>"$tmp/plain"
  reset; ms "$(ins p8c_tracked)" >>"$tmp/tracked"
  reset; ms "SELECT nps_billing.backfill_payments('p8c_old')" >>"$tmp/backfill"
  i=$((i + 1))
done
n=$(psql -qAtX -c "SELECT count(*) FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id WHERE s.name = 'bench_p8c_backfill' AND e.skip_reason = 'backfilled' AND e.survey_id IS NULL")
[ "$n" = "$ROWS" ] || echo "# P8c: the last backfill recorded $n events, expected $ROWS" >&2
m_p=$(median <"$tmp/plain"); m_t=$(median <"$tmp/tracked"); m_b=$(median <"$tmp/backfill")
set_ms=$(awk -v t="$m_t" -v p="$m_p" 'BEGIN { printf "%.1f", t - p }')
echo "# P8c ms medians: untracked insert $m_p, tracked insert $m_t (set path $set_ms), backfill $m_b; backfill vs the whole tracked insert $(ratio "$m_b" "$m_t")x" >&2
row P8c "backfill_payments of ${ROWS} existing rows vs the capture set path" "$(ratio "$m_b" "$set_ms")" "<= 1.0"
reset
psql -qX -c "SELECT nps_billing.untrack_payments('p8c_tracked'), nps_billing.untrack_payments('p8c_old')" -c 'DROP TABLE p8c_plain, p8c_tracked, p8c_old' >/dev/null
rm -rf "$tmp"
