#!/bin/sh
# make test-matrix: `make test` in throwaway Debian chroots made with mmdebstrap from the Debian
# archive: bookworm (Debian 12, PostgreSQL 15), trixie (Debian 13, 17) and sid (18). Inside, the
# repo's own scripts install the distribution's packages, so this proves that `make test` works
# on a fresh machine of that release; on bookworm and trixie `make demo` runs there too. Then
# `make deb` there, and the package is installed in another fresh chroot of the release
# (scripts/test-deb.sh; on bookworm that is `make test-deb`'s job). Prints one line per release
# and fails if any fails.
#
#   NPS_MATRIX="bookworm:15 trixie:17 sid:18"   suites to run, each suite:expected-major
#   NPS_MATRIX_CMD="make test"      what runs in the tree inside the chroot
#   NPS_MATRIX_DEB=1                also build and install-test the package (0: not)
#   NPS_MATRIX_NODEB="bookworm"     suites whose package is not built here (make test-deb does it)
#   NPS_MATRIX_CACHE=/var/cache/nps_billing-matrix   base tarballs (one per suite, rebuilt when
#                                   older than NPS_MATRIX_MAX_AGE days, default 7) and downloaded
#                                   packages, so reruns are fast; CI works from an empty cache.
#   NPS_MIRROR=URL                  Debian mirror (default: mmdebstrap's)
#   NPS_MATRIX_DOCS_SKIP="docs/x.md"  doc pages whose shown outputs are not compared in the
#                                   chroots (default: none)
#   NPS_MATRIX_DEMO="bookworm trixie"  suites in whose chroot `make demo` also runs, after CMD, as a
#                                   user of that release would type it (the whole story, the
#                                   delivery agent's loop and the answer page's screenshot; it
#                                   exits non-zero when a part fails); "" for none
# Runs as root (chroot, mounts). The host's PostgreSQL install is not touched.
set -u
cd "$(dirname "$0")/.."
top=$(pwd)
MATRIX=${NPS_MATRIX:-"bookworm:15 trixie:17 sid:18"}
CMD=${NPS_MATRIX_CMD:-make test}
DEB=${NPS_MATRIX_DEB:-1}
DEMO=${NPS_MATRIX_DEMO-bookworm trixie}
NODEB=${NPS_MATRIX_NODEB-bookworm}
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
  debs=$(mktemp -d /tmp/nps-matrix-debs-$suite.XXXXXX)
  deb=$DEB; case " $NODEB " in *" $suite "*) deb=0;; esac
  echo "== test-matrix: Debian $suite, PostgreSQL $major: $CMD (log: $log, removed if it passes)"
  (
    set -e
    trap 'chroot_down' EXIT
    trap 'exit 130' INT TERM
    base=$(base_tarball "$suite")
    chroot_up "$suite" "$base"
    copy_tree "$top" "$ROOT/build/nps_billing"
    port=$(free_port $((54000 + major * 10)))
    # nice: the chroots burn both cores; other work on the machine keeps going.
    docs_skip=${NPS_MATRIX_DOCS_SKIP-}
    in_chroot() {
      nice -n 10 chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb CI="${CI:-}" MAKEFLAGS=-j2 \
        NPS_DOCS_SKIP="$docs_skip" \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PGPORT="$port" \
        sh -c "cd /build/nps_billing && $1"
    }
    in_chroot "$CMD"
    case " $DEMO " in
      *" $suite "*)
        echo "-- test-matrix: make demo on Debian $suite"
        if in_chroot "make demo DEMO_SCREENSHOT=/tmp/nps-demo-answer-page.png" && [ -s "$ROOT/tmp/nps-demo-answer-page.png" ]; then
          echo "ok - make demo on Debian $suite"
        else
          echo "not ok - make demo on Debian $suite"; exit 1
        fi;;
    esac
    if [ "$deb" = 1 ]; then
      in_chroot "make deb DEB_DIR=/build/debs"
      cp "$ROOT"/build/debs/*.deb "$debs/"
    fi
    # The distribution's major is the expected one (not, say, a leftover of another).
    [ -x "$ROOT/usr/lib/postgresql/$major/bin/postgres" ] || [ -x "$ROOT/usr/lib/postgresql/$major/bin/pg_config" ] || {
      echo "test-matrix: PostgreSQL $major is not what $suite installed: $(ls "$ROOT/usr/lib/postgresql" 2>/dev/null)"; exit 1; }
  ) >"$log" 2>&1  # (not `|| rc=$?`: that would switch off set -e inside)
  rc=$?
  if [ "$rc" -eq 0 ] && [ "$deb" = 1 ]; then
    echo "-- test-matrix: the package on Debian $suite" >>"$log"
    sh scripts/test-deb.sh "$suite" "$major" "$debs" >"$debs/test.log" 2>&1 || rc=$?
    cat "$debs/test.log" >>"$log"
    pkg_ok=$(grep -c '^ok ' "$debs/test.log"); pkg_bad=$(grep -c '^not ok ' "$debs/test.log")
    [ "$rc" -ne 0 ] && [ "$pkg_bad" -eq 0 ] && pkg_bad=1
  else
    pkg_ok=0; pkg_bad=0
  fi
  rm -rf "$debs"
  demo_ok=$(grep -c '^ok - make demo' "$log"); demo_bad=$(grep -c '^not ok - make demo' "$log")
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
  pkgline=""
  [ "$deb" = 1 ] && [ $((pkg_ok + pkg_bad)) -gt 0 ] && pkgline="; package: $pkg_ok ok, $pkg_bad not ok"
  demoline=""
  [ $((demo_ok + demo_bad)) -gt 0 ] && demoline="; make demo: $( [ "$demo_ok" -gt 0 ] && echo ok || echo "not ok")"
  # (a failed demo already made rc non-zero and counts in f)
  total_pass=$((total_pass + p + pkg_ok + demo_ok)); total_fail=$((total_fail + f + pkg_bad))
  line="PostgreSQL $major (Debian $suite): ${summary#nps_billing: }$demoline$pkgline, in ${secs} s"
  echo "$line"
  [ "$rc" -eq 0 ] && rm -f "$log"
  results="$results$line
"
done
echo
echo "test-matrix summary:"
printf '%s' "$results"
echo "matrix: $total_pass passed, $total_fail failed"
[ "$bad" -eq 0 ] && [ "$total_fail" -eq 0 ]
