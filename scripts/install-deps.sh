#!/bin/sh
# Installs what `make test` / `make demo` need, idempotently, from the distribution's packages
# only: its PostgreSQL major (15 on Debian 12, 17 on Debian 13; PG_MAJOR=NN overrides, see
# scripts/pg-major.sh), the server headers, pgTAP and pg_prove; the delivery agent's libraries
# (libpq, libcurl, cpp-httplib, nlohmann-json, OpenSSL) and its test and benchmark tools (aiosmtpd,
# Chromium, Node.js, wrk); and playwright-core from the npm registry into $NPS_NODE_DIR (default
# /var/cache/nps_billing/node), which drives Chromium in the agent's end-to-end test.
set -eu
. "$(dirname "$0")/pg-major.sh"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
updated=""
apt_update() {
  [ -n "$updated" ] && return
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  updated=1
}
major=$(pg_major)
if [ -z "$major" ]; then  # no package lists yet (a fresh machine or chroot)
  apt_update
  major=$(pg_major)
fi
[ -n "$major" ] || { echo "install-deps: cannot tell the distribution's PostgreSQL major; set PG_MAJOR=NN" >&2; exit 1; }
need=""
# clang and its libFuzzer runtime for the npsagg fuzz target (make fuzz; a short run in make test)
case "$(. /etc/os-release 2>/dev/null; echo "${VERSION_ID:-}")" in
  12) fuzz_pkgs="clang-14 libclang-rt-14-dev";;
  13) fuzz_pkgs="clang-19 libclang-rt-19-dev";;
  *) fuzz_pkgs="clang libclang-rt-dev";;
esac
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
for p in make g++ postgresql-$major postgresql-server-dev-$major postgresql-$major-pgtap \
         libtap-parser-sourcehandler-pgtap-perl postgresql-common \
         libdbd-pg-perl $fuzz_pkgs \
         pkg-config libpq-dev libcurl4-openssl-dev libcpp-httplib-dev nlohmann-json3-dev libssl-dev \
         python3 python3-aiosmtpd openssl curl chromium fonts-dejavu-core wrk; do
  have "$p" || need="$need $p"
done
# Node.js and npm by command: a machine may have them from elsewhere than Debian's packages.
command -v node >/dev/null || need="$need nodejs"
command -v npm >/dev/null || need="$need npm"
if [ -n "$(echo "$need" | tr -d ' ')" ]; then
  echo "install-deps: installing (PostgreSQL $major):$need"
  apt_update
  # Do not let the package create and start the machine's main cluster: tests use throwaway ones.
  if [ ! -d /etc/postgresql-common ]; then
    $SUDO mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/nps_billing.conf >/dev/null
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need
fi
[ -x "$(pg_config_of "$major")" ] || { echo "install-deps: $(pg_config_of "$major") missing after install" >&2; exit 1; }

# playwright-core (no browser download: the test uses Debian's /usr/bin/chromium)
node_dir=${NPS_NODE_DIR:-/var/cache/nps_billing/node}
playwright_version=1.59.1   # the newest that runs on Debian 12's Node.js 18
if [ ! -f "$node_dir/node_modules/playwright-core/package.json" ] ||
   ! grep -q "\"version\": \"$playwright_version\"" "$node_dir/node_modules/playwright-core/package.json"; then
  echo "install-deps: installing playwright-core $playwright_version into $node_dir (npm)"
  $SUDO mkdir -p "$node_dir"
  $SUDO env PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund --no-save \
    --prefix "$node_dir" "playwright-core@$playwright_version" >/dev/null
fi
