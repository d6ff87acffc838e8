#!/bin/sh
# P11 / P12: nps-billing-agent. Runs in make bench's cluster, in a database of its own.
#  P11: emails/s: N due email surveys, the agent (send mode, 8 SMTP connections, batches of 200)
#       into a local SMTP server (aiosmtpd, counting only), from the agent's start until every
#       survey is reported sent; median of REPS runs.
#  P12: answers/s through the answer endpoint: wrk (2 threads, 16 connections, DURATION s) POSTs
#       answers with the page's CSRF value to distinct tokens; answers/s = answers the agent recorded
#       (nps_agent_answered_total) per second; p99 latency from wrk; median of REPS runs.
# Sizes: NPS_P11_EMAILS (default 10000), NPS_P12_SECONDS (default 10), NPS_BENCH_REPS (default 5);
# NPS_BENCH_ONLY_AGENT=p11 or p12 runs one of the two. Also printed (as # lines): CPU per e-mail
# and per answer of the agent, the SMTP server, the database connections and wrk.
set -u
cd "$(dirname "$0")/.."
top=$(pwd)
BIN=${NPS_AGENT_BIN:-$top/agent/nps-billing-agent}  # NPS_AGENT_BIN: another build, to compare
T=$top/test/agent
# Debian's Python (python3-aiosmtpd), whatever python3 comes first on PATH
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
N=${NPS_P11_EMAILS:-10000}
DURATION=${NPS_P12_SECONDS:-10}
REPS=${NPS_BENCH_REPS:-5}
DB=nps_agent_bench
[ -x "$BIN" ] || { echo "P11|delivery agent not built (agent/nps-billing-agent)|-|>= 500/s|NO"; exit 0; }
w=$(mktemp -d /tmp/nps-agent-bench.XXXXXX)
pids=""
cleanup() { for p in $pids; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1; rm -rf "$w"; }
trap cleanup EXIT
q() { psql -qAtX -d "$DB" -c "$1"; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }
tck=$(getconf CLK_TCK 2>/dev/null || echo 100)
# cpu PID... -> CPU seconds (user + system) these processes used so far (gone ones count 0)
cpu() {
  for _p in "$@"; do [ -r "/proc/$_p/stat" ] && sed 's/^.*) //' "/proc/$_p/stat"; done |
    awk -v t="$tck" '{ s += $12 + $13 } END { printf "%.2f\n", s / t }'
}
backends() { q "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE datname = '$DB' AND application_name = 'nps-billing-agent'"; }

psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
psql -qX -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'SQL'
CREATE EXTENSION nps_billing;
CREATE TABLE bench_pay (id int);
INSERT INTO nps_billing.payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES ('bench', 'bench_pay', 'x', 'y', 'z');
SQL
smtp_port=$("$PY" "$T/free_port.py")
answer_port=$smtp_port; while [ "$answer_port" = "$smtp_port" ]; do answer_port=$("$PY" "$T/free_port.py"); done
metrics_port=$smtp_port; while [ "$metrics_port" = "$smtp_port" ] || [ "$metrics_port" = "$answer_port" ]; do metrics_port=$("$PY" "$T/free_port.py"); done
"$PY" "$T/smtp_sink.py" "$smtp_port" "$w/mail" --count-only >"$w/smtp.log" 2>&1 &
smtp_pid=$!; pids="$pids $smtp_pid"
n=100; while [ $n -gt 0 ] && [ ! -e "$w/mail/ready" ]; do sleep 0.1; n=$((n - 1)); done
# Rendered messages (claim_messages) need the source's answer_base_url: the agent's answer page.
if [ "$(q "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'nps_billing.payment_source'::regclass AND attname = 'answer_base_url' AND NOT attisdropped)")" = t ]; then
  q "UPDATE nps_billing.payment_source SET answer_base_url = 'http://127.0.0.1:$answer_port/r' WHERE name = 'bench'" >/dev/null
fi
cat >"$w/agent.conf" <<CONF
[database]
sender = "dbname=$DB"
collector = "dbname=$DB"
[agent]
worker = bench-agent
[send]
batch = 200
poll_interval = 1
fallback_recipient = {customer_id}@example.test
link_base_url = http://127.0.0.1:$answer_port/r
[email]
url = smtp://127.0.0.1:$smtp_port
tls = none
concurrency = 8
[answer]
listen = 127.0.0.1:$answer_port
rate_per_ip = 0
threads = 32
db_connections = 8
[metrics]
listen = 127.0.0.1:$metrics_port
[log]
level = warning
CONF

# ---- P11 ------------------------------------------------------------------------------------------
ONLY=${NPS_BENCH_ONLY_AGENT:-}
if [ "$ONLY" != p12 ]; then
: >"$w/p11"; : >"$w/p11cpu"
for r in $(seq 1 "$REPS"); do
  q "DELETE FROM nps_billing.survey" >/dev/null
  q "INSERT INTO nps_billing.survey (token, source_id, customer_id, channel, send_after, expires_at)
     SELECT 'p11-$r-' || lpad(g::text, 8, '0'), p.id, 'c' || g, 'email', now() - interval '1 minute', now() + interval '1 day'
       FROM nps_billing.payment_source p, generate_series(1, $N) g WHERE p.name = 'bench'" >/dev/null
  s0=$(cpu $smtp_pid)
  t0=$(now)
  NPS_AGENT_AGENT_MODE=send "$BIN" --config "$w/agent.conf" >>"$w/agent.log" 2>&1 &
  apid=$!; pids="$pids $apid"
  # One session polls for the last report every 50 ms (PL/pgSQL takes a new snapshot for each
  # statement), rather than a psql process 5 times a second taking CPU from what is measured.
  PGAPPNAME=nps-bench-wait psql -qAtX -d "$DB" -c "DO \$\$ BEGIN
      WHILE (SELECT count(*) FILTER (WHERE status = 'sent') < $N FROM nps_billing.survey)
            AND clock_timestamp() < now() + interval '600 seconds' LOOP
        PERFORM pg_sleep(0.05);
      END LOOP; END \$\$" -c "SELECT extract(epoch FROM clock_timestamp())" >"$w/t1" &
  wpid=$!
  while kill -0 $wpid 2>/dev/null; do
    kill -0 $apid 2>/dev/null ||
      { q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'nps-bench-wait'" >/dev/null; break; }
    sleep 0.2
  done
  wait $wpid 2>/dev/null
  t1=$(cat "$w/t1"); [ -n "$t1" ] || t1=$(now)
  # CPU seconds of the agent, the SMTP server and the agent's database connections in this run
  echo "$(cpu $apid) $(cpu $smtp_pid) $s0 $(cpu $(backends)) $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" >>"$w/p11cpu"
  kill $apid; wait $apid 2>/dev/null
  if [ "$(q "SELECT count(*) FILTER (WHERE status = 'sent') = $N FROM nps_billing.survey")" != t ]; then
    echo "# P11: run $r did not deliver every survey: $(tail -1 "$w/agent.log")" >&2; echo 0 >>"$w/p11"; continue
  fi
  awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f\n", n / (b - a) }' >>"$w/p11"
done
p11=$(median <"$w/p11")
echo "# P11 runs (emails/s): $(tr '\n' ' ' <"$w/p11")" >&2
awk -v n="$N" '{ a += $1; s += $2 - $3; d += $4; e += $5 } END { if (NR) printf "# P11 CPU ms per e-mail (mean of %d runs): agent %.3f, SMTP server %.3f, database %.3f; elapsed %.3f ms per e-mail\n", NR, 1000 * a / NR / n, 1000 * s / NR / n, 1000 * d / NR / n, 1000 * e / NR / n }' "$w/p11cpu" >&2
met=$(awk -v r="$p11" 'BEGIN { print (r >= 500 ? "yes" : "NO") }')
echo "P11|delivery agent: emails/s into a local SMTP server ($N emails, 8 connections)|$p11/s|>= 500/s|$met"
fi
[ "$ONLY" = p11 ] && exit 0

# ---- P12 ------------------------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then echo "P12|answer endpoint: wrk not installed (apt-get install wrk)|-|>= 1500/s, p99 <= 50 ms|NO"; exit 0; fi
# distinct tokens for every request: run r, wrk thread t takes the S tokens from ((r - 1) * 2 + t) * S
# (run REPS + 1: a 2 s warm-up that opens every collector connection before the measured runs)
S=$((3000 * DURATION)); K=$((2 * S * (REPS + 1)))
q "DELETE FROM nps_billing.response; DELETE FROM nps_billing.survey" >/dev/null
q "INSERT INTO nps_billing.survey (token, source_id, customer_id, channel, status, sent_at, send_after, expires_at)
   SELECT 'p12tok' || lpad(g::text, 8, '0'), p.id, 'c' || g, 'email', 'sent', now(), now() - interval '1 minute', now() + interval '1 day'
     FROM nps_billing.payment_source p, generate_series(1, $K) g WHERE p.name = 'bench'" >/dev/null
q "VACUUM ANALYZE nps_billing.survey" >/dev/null
NPS_AGENT_AGENT_MODE=answer "$BIN" --config "$w/agent.conf" >>"$w/agent.log" 2>&1 &
apid=$!; pids="$pids $apid"
n=100; while [ $n -gt 0 ] && ! curl -sf -o /dev/null "http://127.0.0.1:$metrics_port/healthz"; do sleep 0.1; n=$((n - 1)); done
curl -s -c "$w/jar" -o "$w/page.html" "http://127.0.0.1:$answer_port/r/p12tok00000001/9"
csrf=$(sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' "$w/page.html")
TIME=/usr/bin/time; [ -x "$TIME" ] || TIME=
: >"$w/p12"; : >"$w/p12p99"; : >"$w/p12cpu"
lua() {  # lua RUN: the wrk script of that run
  r=$1
  cat >"$w/post.lua" <<LUA
-- each thread walks its own slice of the tokens; every request is one answer to another survey
local counter = 0
local nthreads = 0
function setup(thread) thread:set("tid", nthreads); nthreads = nthreads + 1 end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Cookie"] = "nps_csrf=$csrf"
request = function()
  counter = counter + 1
  local i = ($r - 1) * 2 * $S + (tid or 0) * $S + counter % $S + 1
  local score = counter % 11
  return wrk.format(nil, string.format("/r/p12tok%08d/%d", i, score), nil,
                    string.format("score=%d&csrf=$csrf&ajax=1", score))
end
LUA
}
lua $((REPS + 1)); wrk -t2 -c16 -d2s -s "$w/post.lua" "http://127.0.0.1:$answer_port" >/dev/null 2>&1
for r in $(seq 1 "$REPS"); do
  lua "$r"
  a0=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | sed -n 's/^nps_agent_answered_total //p')
  b=$(backends); c0="$(cpu $apid) $(cpu $b)"
  rm -f "$w/wrk.time"
  if [ -n "$TIME" ]; then set -- "$TIME" -f "wrkcpu %U %S" -o "$w/wrk.time"; else set --; fi
  "$@" wrk -t2 -c16 -d"${DURATION}s" --latency -s "$w/post.lua" "http://127.0.0.1:$answer_port" >"$w/wrk.out" 2>&1
  a1=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | sed -n 's/^nps_agent_answered_total //p')
  wc=$(sed -n 's/^wrkcpu //p' "$w/wrk.time" 2>/dev/null | awk '{ print $1 + $2 }')
  echo "$(($a1 - $a0)) $c0 $(cpu $apid) $(cpu $b) ${wc:-0}" >>"$w/p12cpu"
  awk -v a="$a0" -v b="$a1" -v d="$DURATION" 'BEGIN { printf "%.0f\n", (b - a) / d }' >>"$w/p12"
  # wrk prints "99%  12.34ms" (or us / s)
  awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) }
       else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } printf "%.1f\n", v }' "$w/wrk.out" >>"$w/p12p99"
  grep -q 'Non-2xx' "$w/wrk.out" && echo "# P12: $(grep 'Non-2xx' "$w/wrk.out")" >&2
done
awk '{ n += $1; a += $4 - $2; d += $5 - $3; w += $6 } END { if (n) printf "# P12 CPU ms per answer (%d answers): agent %.3f, database %.3f, wrk %.3f\n", n, 1000 * a / n, 1000 * d / n, 1000 * w / n }' "$w/p12cpu" >&2
kill $apid; wait $apid 2>/dev/null
p12=$(median <"$w/p12"); p99=$(median <"$w/p12p99")
echo "# P12 runs (answers/s): $(tr '\n' ' ' <"$w/p12"); p99 ms: $(tr '\n' ' ' <"$w/p12p99")" >&2
met=$(awk -v r="$p12" -v p="$p99" 'BEGIN { print (r >= 1500 && p <= 50 ? "yes" : "NO") }')
echo "P12|answer endpoint: answers/s recorded (wrk, 2 threads, 16 connections), p99|$p12/s, p99 $p99 ms|>= 1500/s, p99 <= 50 ms|$met"
