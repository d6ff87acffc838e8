# Throwaway Debian chroots for scripts/test-matrix.sh and scripts/test-deb.sh (sourced; needs
# CACHE and MAX_AGE). One base tarball per suite is cached; every run unpacks a fresh copy,
# binds /dev, /proc and /sys into it, and chroot_down unmounts them and checks that nothing is
# still mounted under the tree before removing it.

need_mmdebstrap() {
  command -v mmdebstrap >/dev/null && return
  echo "test-matrix: installing mmdebstrap"
  env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap
}

# Prints the path of the cached base tarball of suite, building it when missing or too old.
# (Bump BASE_KIND when the options below change.)
BASE_KIND=apt-make-unsafeio
base_tarball() {
  _s=$1; _tar="$CACHE/$_s-$BASE_KIND.tar"
  mkdir -p "$CACHE"
  (
    flock 9
    if [ -f "$_tar" ] && [ -z "$(find "$_tar" -mtime +"$MAX_AGE")" ]; then exit 0; fi
    echo "chroot: building the $_s base ($_tar)" >&2
    rm -f "$_tar.new"
    # A fresh Debian as a user has it before typing `make test`: essential packages, apt and make.
    # Check-Valid-Until off because sid's Release file may be past its Valid-Until; dpkg without
    # fsync (a throwaway tree: unpacking is several times faster).
    nice mmdebstrap --variant=apt --include=make --format=tar --dpkgopt=force-unsafe-io \
      --aptopt='Acquire::Check-Valid-Until "false"' \
      "$_s" "$_tar.new" ${NPS_MIRROR:-} >&2
    mv "$_tar.new" "$_tar"
  ) 9>"$CACHE/$_s.lock" || return 1
  echo "$_tar"
}

ROOT=""; MOUNTS=""
_mount() {  # _mount <target> <mount args...>: mounts and remembers it (last mounted first undone)
  _t=$1; shift
  mkdir -p "$_t"
  mount "$@" "$_t"
  MOUNTS="$_t $MOUNTS"
}

# Unpacks a fresh chroot of suite from tarball into ROOT (under /var/tmp) and mounts into it.
chroot_up() {
  ROOT=$(mktemp -d /var/tmp/nps-chroot-$1.XXXXXX)
  tar -C "$ROOT" -xf "$2"
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
  # The chroot trusts what this machine trusts (a site's own CA on its HTTPS proxy included):
  # npm, which make test uses for playwright-core, reads this bundle.
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$ROOT/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/nps-host-ca-bundle.crt"
    echo "cafile=/etc/ssl/certs/nps-host-ca-bundle.crt" >> "$ROOT/etc/npmrc"
  fi
  # No package starts a service inside the chroot.
  printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
  chmod 755 "$ROOT/usr/sbin/policy-rc.d"
  _mount "$ROOT/proc" -t proc proc
  _mount "$ROOT/sys" -t sysfs sysfs
  # /dev recursively (/dev/shm, /dev/pts), as a slave: nothing done inside propagates back.
  _mount "$ROOT/dev" --rbind /dev
  mount --make-rslave "$ROOT/dev"
  # Downloaded packages survive the chroot: reruns do not fetch them again.
  mkdir -p "$CACHE/$1-debs/partial"
  find "$CACHE/$1-debs" -name '*.deb' -mtime +30 -delete 2>/dev/null || true
  _mount "$ROOT/var/cache/apt/archives" --bind "$CACHE/$1-debs"
}

# Everything mounted at or under ROOT (from the kernel's table, not from our list).
mounted_under() {
  awk -v r="$ROOT" '$5 == r || index($5, r "/") == 1 { print $5 }' /proc/self/mountinfo
}

chroot_down() {
  [ -n "$ROOT" ] || return 0
  # Processes left inside (a server a failed test did not stop) would keep the mounts busy.
  for p in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$(readlink "/proc/$p/root" 2>/dev/null)" = "$ROOT" ] && kill -9 "$p" 2>/dev/null
  done
  for m in $MOUNTS; do umount -R "$m" 2>/dev/null || umount -R -l "$m" 2>/dev/null || true; done
  MOUNTS=""
  left=$(mounted_under)
  if [ -n "$left" ]; then
    echo "chroot: still mounted under $ROOT, not removing it: $left" >&2
    ROOT=""; return 1
  fi
  rm -rf --one-file-system "$ROOT"
  ROOT=""
}

# Copies the source tree (tracked and untracked files, nothing git ignores: no build products).
copy_tree() {
  mkdir -p "$2"
  if git -C "$1" rev-parse --git-dir >/dev/null 2>&1; then
    # (a tracked file deleted in the work tree is listed but missing: --ignore-failed-read)
    (cd "$1" && git ls-files -z -c -o --exclude-standard | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) |
      tar -C "$2" -xf -
  else
    (cd "$1" && tar --exclude=.git --exclude='*.o' --exclude='*.bc' --exclude='*.so' -cf - .) | tar -C "$2" -xf -
  fi
}

# The first TCP port from $1 on that nothing listens on (the chroot shares the host's network).
free_port() {
  _p=$1
  while ss -Hltn "sport = :$_p" 2>/dev/null | grep -q .; do _p=$((_p + 1)); done
  echo "$_p"
}
