#!/usr/bin/env bash
# nps_billing reference sender: leases due surveys with claim_surveys(), "sends" each one by
# appending a line to <outbox>/<channel>.tsv, and reports back with mark_sent / mark_failed.
# Replace send_one() with your e-mail / in-app / SMS call; keep the rest.
#
#   sender.sh [--once] [--worker NAME] [--batch N] [--lease INTERVAL] [--outbox DIR]
#             [--poll SECONDS] [--retry-after INTERVAL] [--fail-channel CHANNEL]
#
#   --once          drain what is due, then exit (for cron, tests)
#   --worker        lease owner name, unique per process (default sender-<host>-<pid>)
#   --batch         surveys per claim (default 100)     --lease   lease length (default '5 minutes')
#   --poll          without --once: after draining, wait for NOTIFY nps_billing_survey at most this
#                   many seconds before claiming again (retries become due without a NOTIFY)
#   --fail-channel  simulate a provider outage for one channel (mark_failed instead of sending)
#
# Claimed rows travel as tab-separated text: customer ids must not contain tabs or newlines.
# Connection: the usual libpq environment (PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD or
# ~/.pgpass). The role needs only the sender grants of README.md (Privacy).
# Delivery is at-least-once: a sender that dies after sending but before mark_sent has its
# lease run out, and the survey is sent again by another sender (attempts shows it).
set -euo pipefail

worker="sender-$(hostname)-$$"; batch=100; lease='5 minutes'; outbox=./outbox; once=0
poll=60; retry_after='15 minutes'; fail_channel=''
while [ $# -gt 0 ]; do
  case "$1" in
    --once) once=1; shift;;
    --worker) worker=$2; shift 2;;
    --batch) batch=$2; shift 2;;
    --lease) lease=$2; shift 2;;
    --outbox) outbox=$2; shift 2;;
    --poll) poll=$2; shift 2;;
    --retry-after) retry_after=$2; shift 2;;
    --fail-channel) fail_channel=$2; shift 2;;
    -h|--help) sed -n '2,22p' "$0"; exit 0;;
    *) echo "sender.sh: unknown option $1" >&2; exit 2;;
  esac
done
case "$batch" in ''|*[!0-9]*) echo "sender.sh: --batch must be a positive integer" >&2; exit 2;; esac
mkdir -p "$outbox"
stop=0; waiter=''
# Stop after the current batch; a wait for NOTIFY is cut short.
trap 'stop=1; [ -z "$waiter" ] || kill "$waiter" 2>/dev/null' INT TERM

# All values reach SQL as psql variables (:'name' quotes them): no string is pasted into SQL.
psql_run() { psql -X -q -A -t -F $'\t' -v worker="$worker" -v batch="$batch" -v lease="$lease" \
                  -v retry_after="$retry_after" "$@"; }

# "Send" one survey. Return non-zero to report a failure (its message goes to mark_failed).
send_one() { # id token customer channel attempts source kind amount currency
  if [ "$4" = "$fail_channel" ]; then echo "simulated $4 provider outage"; return 1; fi
  local now; TZ=UTC printf -v now '%(%Y-%m-%dT%H:%M:%SZ)T' -1   # no fork per message
  printf '%s\t%s\t%s\t%s\thttps://nps.example.com/r/%s\t%s\t%s\t%s\n' \
    "$now" "$worker" "$1" "$3" "$2" "$6" "$8" "$9" >>"$outbox/$4.tsv"
}

# One batch: claim, send each, report. Prints the number of surveys claimed.
one_batch() {
  local rows report n=0 id token customer channel attempts source kind amount currency err
  if ! rows=$(psql_run -v ON_ERROR_STOP=1 <<'SQL'
SELECT id, token, customer_id, channel, attempts, source, kind, amount, currency
  FROM nps_billing.claim_surveys(:'worker', :'batch', :'lease');
SQL
  ); then
    echo -1; return   # claim failed (connection, privileges, bad --batch/--lease): psql said why
  fi
  report=''
  while IFS=$'\t' read -r id token customer channel attempts source kind amount currency; do
    case "$id" in ''|*[!0-9]*) continue;; esac
    n=$((n + 1))
    if err=$(send_one "$id" "$token" "$customer" "$channel" "$attempts" "$source" "$kind" "$amount" "$currency"); then
      report+="SELECT nps_billing.mark_sent($id, :'worker');"$'\n'
    else
      # the error text goes in as a dollar-quoted literal with a random tag
      tag="e$RANDOM$RANDOM"
      report+="SELECT nps_billing.mark_failed($id, :'worker', \$$tag\$${err}\$$tag\$, :'retry_after');"$'\n'
    fi
  done <<<"$rows"
  # No ON_ERROR_STOP: a lease lost to another sender (55000) must not stop the other reports.
  [ -z "$report" ] || psql_run >/dev/null <<<"$report" || true
  echo "$n"
}

wait_for_work() {
  # psql prints a notification after the next command it runs: ask every second. timeout runs
  # the pipeline in its own process group and takes all of it down (on timeout or on our kill).
  timeout "$poll" bash -c '{ echo "LISTEN nps_billing_survey;"; while sleep 1; do echo "SELECT 1;"; done; } |
    psql -X -q -A -t 2>/dev/null | grep -q -m1 "Asynchronous notification"' &
  waiter=$!
  wait "$waiter" || true
  waiter=''
}

while [ "$stop" -eq 0 ]; do
  n=1
  while [ "$stop" -eq 0 ] && [ "$n" -gt 0 ]; do n=$(one_batch); done
  if [ "$n" -lt 0 ]; then
    [ "$once" -eq 1 ] && exit 1
    echo "sender.sh: claim failed, retrying in $poll s" >&2
  fi
  [ "$once" -eq 1 ] && break
  [ "$stop" -eq 0 ] && wait_for_work
done
