#!/bin/sh
# Runs every suite (pg_regress, isolation, pgTAP) in a throwaway cluster made by pg_virtualenv, of
# the selected PostgreSQL major (scripts/pg-major.sh: the distribution's, or PG_MAJOR=NN), prints
# one summary line and exits non-zero on any failure.
set -u
cd "$(dirname "$0")/.."
if [ -z "${NPS_IN_CLUSTER:-}" ]; then
  . scripts/pg-major.sh
  major=$(pg_major)
  [ -n "$major" ] || { echo "$0: cannot tell the PostgreSQL major; set PG_MAJOR=NN" >&2; exit 1; }
  exec env NPS_IN_CLUSTER=1 PG_MAJOR="$major" PG_CONFIG="$(pg_config_of "$major")" pg_virtualenv -t -v "$major" \
    -o max_prepared_transactions=10 \
    sh "$0" "$@"
fi
log=$(mktemp -d)
failed=0; passed=0

# pg_regress + isolation (PGXS installcheck)
make -s installcheck >"$log/regress.out" 2>&1; rc=$?
cat "$log/regress.out"
for f in $(sed 's/^[ #]*//' "$log/regress.out" | grep -E '^(All [0-9]+ tests passed|[0-9]+ of [0-9]+ tests failed)' | tr ' ' '_'); do
  case "$f" in
    All_*) n=$(echo "$f" | cut -d_ -f2); passed=$((passed + n));;
    *) bad=$(echo "$f" | cut -d_ -f1); tot=$(echo "$f" | cut -d_ -f3); failed=$((failed + bad)); passed=$((passed + tot - bad));;
  esac
done
if [ $rc -ne 0 ]; then
  for d in test/regression.diffs test/output_iso/regression.diffs; do [ -f "$d" ] && head -200 "$d"; done
  [ "$failed" -eq 0 ] && failed=1
fi

# pgTAP through pg_prove, in a database of its own
if ls test/t/*.sql >/dev/null 2>&1; then
  psql -qX -v ON_ERROR_STOP=1 -d postgres -c 'DROP DATABASE IF EXISTS nps_tap' -c 'CREATE DATABASE nps_tap' >/dev/null &&
  psql -qX -v ON_ERROR_STOP=1 -d nps_tap -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION nps_billing' >/dev/null
  PGDATABASE=nps_tap pg_prove -v --ext .sql test/t/ >"$log/prove.out" 2>&1; prc=$?
  grep -vE '^ok ' "$log/prove.out" | grep -vE '^\s*$' | tail -80
  tests=$(sed -n 's/.*Tests=\([0-9]*\).*/\1/p' "$log/prove.out" | tail -1)
  nfail=$(grep -cE '^not ok' "$log/prove.out")
  passed=$((passed + ${tests:-0} - nfail)); failed=$((failed + nfail))
  [ $prc -ne 0 ] && [ "$nfail" -eq 0 ] && failed=$((failed + 1))
fi
# Shell tests (test/*.sh): need more than one database or client tools (pg_dump/pg_restore).
# Each prints "ok - ..." / "not ok - ..." lines and exits non-zero on failure.
for t in $(ls test/*.sh 2>/dev/null | sort); do
  sh "$t" >"$log/shell.out" 2>&1; src=$?
  cat "$log/shell.out"
  ok=$(grep -c '^ok ' "$log/shell.out"); bad=$(grep -c '^not ok' "$log/shell.out")
  passed=$((passed + ok)); failed=$((failed + bad))
  if [ $src -ne 0 ] && [ "$bad" -eq 0 ]; then echo "not ok - $t exited $src"; failed=$((failed + 1)); fi
done

rm -rf "$log"
echo "nps_billing: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
