#!/bin/sh
# make demo: a throwaway PostgreSQL 15 with the extension and generated scores, queried with the
# same SQL you would run on your own data. `--shell` keeps the cluster and opens psql.
set -eu
cd "$(dirname "$0")/.."
if [ -z "${NPS_IN_CLUSTER:-}" ]; then
  exec env NPS_IN_CLUSTER=1 pg_virtualenv -t -v 15 sh "$0" "$@"
fi
psql -qX -v ON_ERROR_STOP=1 -f examples/demo_aggregates.sql
if [ "${1:-}" = "--shell" ]; then
  echo "Demo database: postgresql://$PGUSER:$PGPASSWORD@$PGHOST:$PGPORT/$PGDATABASE (removed when you leave psql)"
  psql -X
fi
