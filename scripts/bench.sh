#!/bin/sh
# make bench: runs every bench/p*.sh in one throwaway cluster and prints one table:
# id | measurement | measured ratio | target | met. Ratios come from runs interleaved side by side,
# medians of >= 5; nothing here is a test (no timing ever fails `make test`).
set -u
cd "$(dirname "$0")/.."
if [ -z "${NPS_IN_CLUSTER:-}" ]; then
  . scripts/pg-major.sh
  major=$(pg_major)
  [ -n "$major" ] || { echo "$0: cannot tell the PostgreSQL major; set PG_MAJOR=NN" >&2; exit 1; }
  exec env NPS_IN_CLUSTER=1 PG_MAJOR="$major" PG_CONFIG="$(pg_config_of "$major")" pg_virtualenv -t -v "$major" \
    -o shared_buffers=2GB -o work_mem=64MB -o max_wal_size=8GB -o checkpoint_timeout=30min \
    -o max_parallel_workers_per_gather=2 -o max_worker_processes=8 -o jit=off \
    -o synchronous_commit=off -o max_connections=50 \
    sh "$0" "$@"
fi
out=$(mktemp)
psql -qX -c 'CREATE EXTENSION IF NOT EXISTS nps_billing' >/dev/null
for b in $(ls bench/p*.sh 2>/dev/null | sort); do
  [ -n "${NPS_BENCH_ONLY:-}" ] && ! echo "$b" | grep -q "$NPS_BENCH_ONLY" && continue
  echo "== $b" >&2
  sh "$b" | tee -a "$out" >&2
done
echo
printf '%-4s | %-66s | %-10s | %-10s | %s\n' id measurement measured target met
printf '%s\n' '-----+--------------------------------------------------------------------+------------+------------+----'
grep -E '^P[0-9]+[a-z]?\|' "$out" | while IFS='|' read -r id what ratio target met; do
  printf '%-4s | %-66s | %-10s | %-10s | %s\n' "$id" "$what" "$ratio" "$target" "$met"
done
rm -f "$out"
