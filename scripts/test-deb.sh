#!/bin/sh
# Installs the built package postgresql-NN-nps-billing in a fresh chroot of a Debian release, as
# a user would (apt-get install of the .deb: apt brings PostgreSQL), then CREATE EXTENSION and a
# smoke query in a throwaway cluster. Prints "ok"/"not ok" lines and a summary; non-zero exit
# on failure.
#   sh scripts/test-deb.sh SUITE MAJOR DEBDIR   the package of MAJOR in DEBDIR, on Debian SUITE
#   sh scripts/test-deb.sh                      (make test-deb) `make deb` here, then the package
#                                               of this machine's major on this machine's release
# Runs as root. Uses the base tarballs of scripts/test-matrix.sh (NPS_MATRIX_CACHE).
set -u
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  make deb || { echo "not ok - make deb"; echo "deb: 0 passed, 1 failed"; exit 1; }
  echo "ok - make deb"
  set -- "$(. /etc/os-release; echo "${VERSION_CODENAME:-}")" "$(sh scripts/pg-major.sh)" build/deb
  summary=1
fi
suite=$1; major=$2; debdir=$3
CACHE=${NPS_MATRIX_CACHE:-/var/cache/nps_billing-matrix}
MAX_AGE=${NPS_MATRIX_MAX_AGE:-7}
. scripts/chroot-lib.sh
[ "$(id -u)" -eq 0 ] || { echo "test-deb: must run as root (chroot and mounts)" >&2; exit 1; }
deb=$(ls "$debdir"/postgresql-"$major"-nps-billing_*.deb 2>/dev/null | grep -v dbgsym | tail -n 1)
[ -n "$deb" ] || { echo "not ok - no postgresql-$major-nps-billing package in $debdir"; exit 1; }
need_mmdebstrap >&2
out=$(mktemp)
(
  set -e
  trap 'chroot_down' EXIT
  trap 'exit 130' INT TERM
  base=$(base_tarball "$suite")
  chroot_up "$suite" "$base"
  mkdir -p "$ROOT/build"
  cp "$deb" "$ROOT/build/"
  in_chroot() {
    nice -n 10 chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PGPORT="$(free_port $((54500 + major)))" sh -c "$1"
  }
  # No main cluster on install: the smoke test uses a throwaway one.
  mkdir -p "$ROOT/etc/postgresql-common/createcluster.d"
  echo "create_main_cluster = false" > "$ROOT/etc/postgresql-common/createcluster.d/nps_billing.conf"
  in_chroot "apt-get update -qq && apt-get install -y -qq --no-install-recommends /build/$(basename "$deb")" >&2
  echo "ok - $(basename "$deb") installs on Debian $suite"
  out=$(in_chroot "pg_virtualenv -v $major psql -qXAt -v ON_ERROR_STOP=1 \
    -c 'CREATE EXTENSION nps_billing' \
    -c \"SELECT extversion FROM pg_extension WHERE extname = 'nps_billing'\" \
    -c 'SELECT round(nps_billing.nps(s)::numeric, 2) FROM generate_series(0, 10) s'" 2>&1) || true  # its output says why
  echo "$out" | grep -Ev '^(Creating new|Dropping cluster)' >&2
  v=$(echo "$out" | grep -E '^[0-9]+\.[0-9]+$' | head -n 1)
  echo "$out" | grep -qx -- '-45.45' || { echo "not ok - CREATE EXTENSION and nps() on PostgreSQL $major: $out"; exit 1; }
  echo "ok - CREATE EXTENSION nps_billing ($v) on PostgreSQL $major; nps(0..10) = -45.45"
) | tee "$out"
ok=$(grep -c '^ok ' "$out"); bad=$(grep -c '^not ok ' "$out")
[ "$ok" -ge 2 ] || [ "$bad" -gt 0 ] || { echo "not ok - the package test did not finish"; bad=$((bad + 1)); }
rm -f "$out"
[ -n "${summary:-}" ] && echo "deb: $((ok + 1)) passed, $bad failed"
[ "$bad" -eq 0 ]
