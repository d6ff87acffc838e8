#!/bin/sh
# make deb: builds the Debian packages postgresql-NN-nps-billing, one per PostgreSQL major that
# debian/pgversions allows and the machine supports (pg_buildext, as Debian builds its
# extensions), with dpkg-buildpackage in a copy of the tree under DEB_DIR (default build/deb),
# where the .deb files land. Installs the build dependencies from the distribution's packages.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
out=${DEB_DIR:-$top/build/deb}
. scripts/chroot-lib.sh  # copy_tree
need=""
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
for p in build-essential make g++ dpkg-dev debhelper postgresql-server-dev-all; do have "$p" || need="$need $p"; done
if [ -n "$need" ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "build-deb: installing:$need"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need
fi
version=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" nps_billing.control)
src="$out/nps-billing-$version"
rm -rf "$src"
rm -f "$out"/postgresql-*-nps-billing*_"$version"-*.deb "$out"/nps-billing_"$version"-*
mkdir -p "$src"
copy_tree "$top" "$src"
# The version lives in nps_billing.control only: the package's changelog entry is made from it.
when=$(git log -1 --format=%cD 2>/dev/null || date -R)
cat > "$src/debian/changelog" <<CHANGELOG
nps-billing ($version-1) unstable; urgency=medium

  * nps_billing $version (see CHANGELOG.md).

 -- nps_billing authors <nps-billing@example.org>  $when
CHANGELOG
cd "$src"
pg_buildext updatecontrol
echo "build-deb: PostgreSQL majors: $(pg_buildext supported-versions | tr '\n' ' ')"
dpkg-buildpackage -us -uc -b
cd "$out"
ls -1 "$out"/postgresql-*-nps-billing_"$version"-*.deb
