#!/bin/sh
# Installs what `make test` / `make demo` need on Debian 12, idempotently, from Debian only.
set -eu
need=""
# clang and its libFuzzer runtime for the npsagg fuzz target (make fuzz; a short run in make test)
. /etc/os-release 2>/dev/null || true
case "${VERSION_ID:-}" in
  12) fuzz_pkgs="clang-14 libclang-rt-14-dev";;
  13) fuzz_pkgs="clang-19 libclang-rt-19-dev";;
  *) fuzz_pkgs="clang";;
esac
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
for p in make g++ postgresql-15 postgresql-server-dev-15 postgresql-15-pgtap \
         libtap-parser-sourcehandler-pgtap-perl postgresql-common $fuzz_pkgs; do
  have "$p" || need="$need $p"
done
if [ -n "$(echo "$need" | tr -d ' ')" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install-deps: installing:$need"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # Do not let the package create and start the machine's main cluster: tests use throwaway ones.
  if [ ! -d /etc/postgresql-common ]; then
    $SUDO mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/nps_billing.conf >/dev/null
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need
fi
command -v pg_config >/dev/null || { echo "install-deps: pg_config missing after install" >&2; exit 1; }
