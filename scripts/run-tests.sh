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
# The throwaway cluster's server log (pg_virtualenv's), checked for crashes at the end.
srvlog=$(pg_lsclusters -h 2>/dev/null | awk -v p="${PGPORT:-}" '$3 == p { print $7; exit }')
srvlog_start=$( [ -n "$srvlog" ] && [ -f "$srvlog" ] && wc -c <"$srvlog" || echo 0)

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

# libFuzzer campaign on the npsagg text and binary parsers (make fuzz runs a longer one).
if [ -x test/fuzz/npsagg_fuzz ]; then
  if FUZZ_TIME="${NPS_TEST_FUZZ_TIME:-20}" FUZZ_ARTIFACTS="$log/" make -s fuzz >"$log/fuzz.out" 2>&1; then
    echo "ok - libFuzzer npsagg parsers: $(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log/fuzz.out") runs, no failure"
    passed=$((passed + 1))
  else
    grep -vE '^(#|INFO|0x)' "$log/fuzz.out" | tail -20
    echo "not ok - libFuzzer npsagg parsers"; failed=$((failed + 1))
  fi
else
  echo "not ok - libFuzzer target test/fuzz/npsagg_fuzz not built (make fuzz-build)"; failed=$((failed + 1))
fi

# The same for the message template parser and renderer.
if [ -x test/fuzz/render_fuzz ]; then
  if FUZZ_TIME="${NPS_TEST_RENDER_FUZZ_TIME:-10}" FUZZ_ARTIFACTS="$log/" make -s fuzz-render >"$log/fuzz.out" 2>&1; then
    echo "ok - libFuzzer message template parser and renderer: $(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log/fuzz.out") runs, no failure"
    passed=$((passed + 1))
  else
    grep -vE '^(#|INFO|0x)' "$log/fuzz.out" | tail -20
    echo "not ok - libFuzzer message template parser and renderer"; failed=$((failed + 1))
  fi
else
  echo "not ok - libFuzzer target test/fuzz/render_fuzz not built (make fuzz-build)"; failed=$((failed + 1))
fi

# A crash is the worst defect: no backend may have died during the run.
if [ -n "$srvlog" ] && [ -f "$srvlog" ]; then
  if tail -c +$((srvlog_start + 1)) "$srvlog" | grep -E 'terminated by signal|was terminated by exception' >"$log/crash.out"; then
    cat "$log/crash.out"; echo "not ok - server log shows a backend terminated by a signal"; failed=$((failed + 1))
  else
    echo "ok - server log ($srvlog) shows no backend terminated by a signal"; passed=$((passed + 1))
  fi
else
  echo "not ok - server log of the test cluster not found"; failed=$((failed + 1))
fi

rm -rf "$log"
echo "nps_billing: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
