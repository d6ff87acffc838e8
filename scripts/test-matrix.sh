#!/bin/sh
# make test-matrix: `make test` on the other PostgreSQL majors, each in a throwaway Debian chroot
# made with mmdebstrap from the Debian archive: trixie (PostgreSQL 17) and sid (18). Inside, the
# repo's own scripts install the distribution's packages, so this also proves that `make test`
# works on a fresh machine of that release. Prints one line per major and fails if any fails.
#
#   NPS_MATRIX="trixie:17 sid:18"   suites to run, each suite:expected-major
#   NPS_MATRIX_CMD="make test"      what runs in the tree inside the chroot
#   NPS_MATRIX_CACHE=/var/cache/nps_billing-matrix   base tarballs (one per suite, rebuilt when
#                                   older than NPS_MATRIX_MAX_AGE days, default 7) and downloaded
#                                   packages, so reruns are fast; CI works from an empty cache.
#   NPS_MIRROR=URL                  Debian mirror (default: mmdebstrap's)
# Runs as root (chroot, mounts). The host's PostgreSQL install is not touched.
set -u
cd "$(dirname "$0")/.."
top=$(pwd)
MATRIX=${NPS_MATRIX:-"trixie:17 sid:18"}
CMD=${NPS_MATRIX_CMD:-make test}
CACHE=${NPS_MATRIX_CACHE:-/var/cache/nps_billing-matrix}
MAX_AGE=${NPS_MATRIX_MAX_AGE:-7}
. scripts/chroot-lib.sh

[ "$(id -u)" -eq 0 ] || { echo "test-matrix: must run as root (chroot and mounts)" >&2; exit 1; }
need_mmdebstrap

results=""; total_pass=0; total_fail=0; bad=0
for entry in $MATRIX; do
  suite=${entry%%:*}; major=${entry#*:}
  t0=$(date +%s)
  log=$(mktemp /tmp/nps-matrix-$suite.XXXXXX.log)
  echo "== test-matrix: Debian $suite, PostgreSQL $major: $CMD (log: $log)"
  rc=0
  (
    set -e
    trap 'chroot_down' EXIT
    trap 'exit 130' INT TERM
    base=$(base_tarball "$suite")
    chroot_up "$suite" "$base"
    copy_tree "$top" "$ROOT/build/nps_billing"
    port=$(free_port $((54000 + major * 10)))
    # nice: the chroots burn both cores; other work on the machine keeps going.
    nice -n 10 chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb CI="${CI:-}" \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PGPORT="$port" \
      sh -c "cd /build/nps_billing && $CMD"
    # The distribution's major is the expected one (not, say, a leftover of another).
    [ -x "$ROOT/usr/lib/postgresql/$major/bin/postgres" ] || [ -x "$ROOT/usr/lib/postgresql/$major/bin/pg_config" ] || {
      echo "test-matrix: PostgreSQL $major is not what $suite installed: $(ls "$ROOT/usr/lib/postgresql" 2>/dev/null)"; exit 1; }
  ) >"$log" 2>&1 || rc=$?
  secs=$(($(date +%s) - t0))
  summary=$(grep -E '^nps_billing: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  p=$(echo "$summary" | sed -n 's/^nps_billing: \([0-9]*\) passed.*/\1/p'); p=${p:-0}
  f=$(echo "$summary" | sed -n 's/.* \([0-9]*\) failed.*/\1/p'); f=${f:-0}
  if [ "$rc" -ne 0 ]; then
    bad=1; [ "$f" -eq 0 ] && f=1
    echo "-- test-matrix: Debian $suite failed (exit $rc); end of its log:"
    tail -n 200 "$log"
    [ -z "$summary" ] && summary="did not finish"
  fi
  [ -n "$summary" ] || summary="exit $rc"
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
  line="PostgreSQL $major (Debian $suite): ${summary#nps_billing: } in ${secs} s"
  echo "$line"
  results="$results$line
"
done
echo
echo "test-matrix summary:"
printf '%s' "$results"
echo "matrix: $total_pass passed, $total_fail failed"
[ "$bad" -eq 0 ] && [ "$total_fail" -eq 0 ]
