#!/bin/sh
# Prints the PostgreSQL major that `make test`, `make demo` and `make bench` use: PG_MAJOR if set,
# else the distribution's (the version its `postgresql` package depends on: 15 on Debian 12,
# 17 on Debian 13, 18 on sid), else the one known for the release's codename.
# With --pg-config: prints that major's pg_config instead.
# Sourced by the other scripts (pg_major / pg_config_of), or run on its own (the Makefile).
pg_major() {
  if [ -n "${PG_MAJOR:-}" ]; then echo "$PG_MAJOR"; return; fi
  m=$(apt-cache depends postgresql 2>/dev/null | sed -n 's/^ *Depends: postgresql-\([0-9][0-9]*\)$/\1/p' | head -n 1)
  if [ -z "$m" ] && [ -r /etc/os-release ]; then
    case "$(. /etc/os-release; echo "${VERSION_CODENAME:-}")" in
      bookworm) m=15;; trixie) m=17;;
    esac
  fi
  echo "$m"
}
pg_config_of() { echo "/usr/lib/postgresql/$1/bin/pg_config"; }

case "$0" in
  *pg-major.sh)
    m=$(pg_major)
    [ -n "$m" ] || { echo "pg-major: cannot tell the distribution's PostgreSQL major (run apt-get update, or set PG_MAJOR=NN)" >&2; exit 1; }
    if [ "${1:-}" = "--pg-config" ]; then pg_config_of "$m"; else echo "$m"; fi;;
esac
