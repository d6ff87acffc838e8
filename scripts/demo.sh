#!/bin/sh
# make demo: a throwaway PostgreSQL (the distribution's major, or PG_MAJOR=NN) with the extension and a year of Stripe billing history
# (examples/demo_billing.sql), then the billing story told by the analysis functions
# (examples/demo_analysis.sql). `--shell` keeps the cluster and opens psql on it.
set -eu
cd "$(dirname "$0")/.."
if [ -z "${NPS_IN_CLUSTER:-}" ]; then
  . scripts/pg-major.sh
  major=$(pg_major)
  [ -n "$major" ] || { echo "$0: cannot tell the PostgreSQL major; set PG_MAJOR=NN" >&2; exit 1; }
  exec env NPS_IN_CLUSTER=1 PG_MAJOR="$major" PG_CONFIG="$(pg_config_of "$major")" pg_virtualenv -t -v "$major" sh "$0" "$@"
fi
start=$(date +%s)
echo "Loading 20,000 Stripe customers and 12 months of charges through the track_payments trigger,"
echo "delivering surveys with claim_surveys/mark_sent and recording answers with record_response ..."
psql -qX -v ON_ERROR_STOP=1 -f examples/demo_billing.sql
loaded=$(date +%s)
psql -qX -v ON_ERROR_STOP=1 -f examples/demo_analysis.sql
# the delivery loop with nps-billing-agent: e-mails into a local SMTP server, the answer page
# (when it fails, the rest of the demo still runs and `make demo` exits non-zero at the end)
agent_rc=0
sh scripts/demo-agent.sh || { agent_rc=$?; echo "(the delivery agent part of the demo failed)"; }
echo
echo "(data generated in $((loaded - start)) s, story told in $(($(date +%s) - loaded)) s)"
if [ "${1:-}" = "--shell" ]; then
  echo
  echo "Demo database: postgresql://$PGUSER:$PGPASSWORD@$PGHOST:$PGPORT/$PGDATABASE"
  echo "It stays up while this psql session runs (point Grafana/Metabase at it now, see README.md (Analysis));"
  echo "leaving psql (\\q) stops and removes the cluster."
  psql -X
fi
exit "$agent_rc"
