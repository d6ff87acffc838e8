#!/bin/sh
# nps-billing-agent end to end, against real servers on 127.0.0.1 (free ports in 47100-47199):
# an SMTP server (aiosmtpd: STARTTLS required, AUTH), a webhook receiver for sms / in_app, headless
# Chromium (playwright-core, /usr/bin/chromium) on the answer page, and the faults: SMTP down and
# back, the database restarted under the agent, SIGKILL mid-batch, SIGTERM mid-batch.
# Runs in the test cluster (pg_virtualenv's environment), in a database of its own.
set -u
cd "$(dirname "$0")/.."
top=$(pwd)
BIN=$top/agent/nps-billing-agent
T=$top/test/agent
# Debian's Python (python3-aiosmtpd), whatever python3 comes first on PATH
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
NODE_DIR=${NPS_NODE_DIR:-/var/cache/nps_billing/node}
if [ ! -x "$BIN" ]; then
  echo "not ok - agent: agent/nps-billing-agent is not built (its build dependencies: sh scripts/install-deps.sh)"
  exit 1
fi
w=$(mktemp -d /tmp/nps-agent-test.XXXXXX)
chmod 755 "$w"
pids=""
DB=nps_agent_e2e
cleanup() {
  for p in $pids; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1
  psql -qX -d postgres -c "DROP ROLE IF EXISTS nps_agent_sender" -c "DROP ROLE IF EXISTS nps_agent_collector" >/dev/null 2>&1
  rm -rf "$w"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
fails=0
ok() { echo "ok - agent: $*"; }
nok() { echo "not ok - agent: $*"; fails=$((fails + 1)); }
q() { psql -qAtX -d "$DB" -c "$1"; }
# wait_for SECONDS SQL: until the query returns t
wait_for() {
  _n=$(($1 * 10))
  while [ $_n -gt 0 ]; do
    [ "$(q "$2" 2>/dev/null)" = t ] && return 0
    sleep 0.1; _n=$((_n - 1))
  done
  return 1
}
wait_file() { _n=$(($2 * 10)); while [ $_n -gt 0 ] && [ ! -e "$1" ]; do sleep 0.1; _n=$((_n - 1)); done; [ -e "$1" ]; }
emls() { ls "$1"/*.eml 2>/dev/null | wc -l; }

# --- servers ------------------------------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$w/key.pem" -out "$w/cert.pem" >/dev/null 2>&1 ||
  { echo "not ok - agent: openssl could not make the test certificate"; exit 1; }
smtp_port=$("$PY" "$T/free_port.py") || exit 1
start_smtp() {  # start_smtp DIR [--delay S]
  rm -f "$1/ready"
  "$PY" "$T/smtp_sink.py" "$smtp_port" "$@" --tls "$w/cert.pem" "$w/key.pem" --auth agent:s3cret >>"$w/smtp.log" 2>&1 &
  smtp_pid=$!; pids="$pids $smtp_pid"
  wait_file "$1/ready" 15 || { cat "$w/smtp.log"; echo "not ok - agent: the SMTP server did not start"; exit 1; }
}
stop_smtp() { kill "$smtp_pid" 2>/dev/null; wait "$smtp_pid" 2>/dev/null; }
start_smtp "$w/mail1"
hook_port=$("$PY" "$T/free_port.py") || exit 1
"$PY" "$T/webhook_sink.py" "$hook_port" "$w/hooks" >"$w/hooks.log" 2>&1 &
pids="$pids $!"
wait_file "$w/hooks/ready" 15 || { echo "not ok - agent: the webhook receiver did not start"; exit 1; }
answer_port=$("$PY" "$T/free_port.py") || exit 1
metrics_port=$("$PY" "$T/free_port.py") || exit 1
[ "$metrics_port" != "$answer_port" ] || metrics_port=$("$PY" "$T/free_port.py")

# --- database -------------------------------------------------------------------------------------
psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "DROP ROLE IF EXISTS nps_agent_sender" \
  -c "DROP ROLE IF EXISTS nps_agent_collector" -c "CREATE DATABASE $DB" >/dev/null || exit 1
psql -qX -v ON_ERROR_STOP=1 -d "$DB" >/dev/null <<'SQL' || { echo "not ok - agent: database setup"; exit 1; }
CREATE EXTENSION nps_billing;
-- the role recipes (docs/agent.md), as login roles
CREATE ROLE nps_agent_sender LOGIN PASSWORD 'sender-pw';
GRANT USAGE ON SCHEMA nps_billing TO nps_agent_sender;
GRANT EXECUTE ON FUNCTION nps_billing.claim_surveys(text, integer, interval),
                          nps_billing.mark_sent(bigint[], text),
                          nps_billing.mark_failed(bigint[], text, text, interval) TO nps_agent_sender;
CREATE ROLE nps_agent_collector LOGIN PASSWORD 'collector-pw';
GRANT USAGE ON SCHEMA nps_billing TO nps_agent_collector;
GRANT EXECUTE ON FUNCTION nps_billing.record_response(text, integer, text, timestamptz),
                          nps_billing.survey_for_token(text) TO nps_agent_collector;
DO $$ BEGIN  -- the rendered messages and the unsubscribe action, where the extension has them
  IF to_regprocedure('nps_billing.claim_messages(text,integer,interval)') IS NOT NULL THEN
    GRANT EXECUTE ON FUNCTION nps_billing.claim_messages(text, integer, interval) TO nps_agent_sender;
  END IF;
  IF to_regprocedure('nps_billing.opt_out_by_token(text)') IS NOT NULL THEN
    GRANT EXECUTE ON FUNCTION nps_billing.opt_out_by_token(text) TO nps_agent_collector;
  END IF;
END $$;
CREATE TABLE payments (id text PRIMARY KEY, customer text NOT NULL, email text, amount numeric,
                       currency text, status text NOT NULL);
SQL
# The recipient comes from the payment row where the extension takes it (track_payments'
# recipient), else from the agent's fallback_recipient; links point at this agent.
rcpt=$(q "SELECT CASE WHEN EXISTS (SELECT FROM pg_proc WHERE proname = 'track_payments' AND 'recipient' = ANY (proargnames)) THEN ', recipient => ''email''' END")
q "SELECT nps_billing.track_payments('payments', 'customer', 'id', \$\$status = 'succeeded'\$\$,
     amount => 'amount', currency => 'currency', name => 'shop'$rcpt)" >/dev/null || { echo "not ok - agent: track_payments"; exit 1; }
q "UPDATE nps_billing.payment_source SET delay = '0', max_attempts = 20 WHERE name = 'shop'" >/dev/null
if [ "$(q "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'nps_billing.payment_source'::regclass AND attname = 'answer_base_url' AND NOT attisdropped)")" = t ]; then
  q "UPDATE nps_billing.payment_source SET answer_base_url = 'http://127.0.0.1:$answer_port/r' WHERE name = 'shop'" >/dev/null
fi
has_opt_out=$(q "SELECT to_regprocedure('nps_billing.opt_out_by_token(text)') IS NOT NULL")
has_locale=$(q "SELECT EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'nps_billing.survey'::regclass AND attname = 'locale' AND NOT attisdropped)")
pay() {  # pay ID... : one succeeded payment per id, customer cus_<id>, email cus_<id>@example.test
  _v=""; for _i in "$@"; do _v="$_v${_v:+,}('p_$_i', 'cus_$_i', 'cus_$_i@example.test', 19.90, 'EUR', 'succeeded')"; done
  q "INSERT INTO payments VALUES $_v" >/dev/null
}

cat >"$w/agent.conf" <<CONF
# test configuration (email.password comes from the environment)
[database]
sender = "dbname=$DB user=nps_agent_sender password=sender-pw"
collector = "dbname=$DB user=nps_agent_collector password=collector-pw"
[agent]
worker = e2e-agent
[send]
batch = 20
lease = 3 seconds
poll_interval = 1
retry_after = 1
retry_max = 2
fallback_recipient = {customer_id}@example.test
link_base_url = http://127.0.0.1:$answer_port/r
[email]
url = smtp://127.0.0.1:$smtp_port
tls = starttls
user = agent
ca_file = $w/cert.pem
from = surveys@shop.example
from_name = Shop Surveys
concurrency = 2
[sms]
url = http://127.0.0.1:$hook_port/sms
auth_header = Authorization: Bearer sms-secret
[in_app]
url = http://127.0.0.1:$hook_port/in_app
auth_header = Authorization: Bearer app-secret
[answer]
listen = 127.0.0.1:$answer_port
rate_per_ip = 120
[metrics]
listen = 127.0.0.1:$metrics_port
CONF
export NPS_AGENT_EMAIL_PASSWORD=s3cret
start_agent() {  # start_agent [VAR=value...]
  env "$@" "$BIN" --config "$w/agent.conf" >>"$w/agent.log" 2>&1 &
  agent_pid=$!; pids="$pids $agent_pid"
  wait_file_http "http://127.0.0.1:$metrics_port/healthz" 15
}
wait_file_http() { _n=$(($2 * 10)); while [ $_n -gt 0 ]; do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; _n=$((_n - 1)); done; return 1; }
stop_agent() {  # stop_agent SIGNAL -> exit status
  kill -"$1" "$agent_pid" 2>/dev/null; wait "$agent_pid"; _rc=$?; return $_rc
}

# --- configuration check ---------------------------------------------------------------------------
if "$BIN" --config "$w/agent.conf" --check >"$w/check.out" 2>&1; then ok "--check validates the configuration and connects as sender and collector"
else cat "$w/check.out"; nok "--check"; fi
printf 'email.colour = blue\n' >"$w/bad.conf"
"$BIN" --config "$w/bad.conf" --check >"$w/bad.out" 2>&1; rc=$?
if [ $rc -eq 2 ] && grep -q 'unknown key email.colour' "$w/bad.out"; then ok "--check refuses an unknown key (exit 2, names it)"
else nok "--check with an unknown key: exit $rc"; fi

# --- sending: email, sms, in_app --------------------------------------------------------------------
pay 1 2 3 4 5
q "UPDATE nps_billing.survey SET channel = 'sms' WHERE customer_id = 'cus_4'; UPDATE nps_billing.survey SET channel = 'in_app' WHERE customer_id = 'cus_5'" >/dev/null
start_agent || { tail -20 "$w/agent.log"; nok "the agent did not come up"; }
if wait_for 20 "SELECT count(*) = 5 FROM nps_billing.survey WHERE status = 'sent'"; then ok "5 surveys delivered and reported sent (mark_sent)"
else q "SELECT status, attempts, last_error FROM nps_billing.survey"; tail -5 "$w/agent.log"; nok "surveys not all sent"; fi
q "SELECT token || E'\t' || customer_id || '@example.test' FROM nps_billing.survey WHERE channel = 'email' ORDER BY customer_id" >"$w/expected1"
"$PY" "$T/check_mail.py" "$w/mail1" "$w/expected1" shop.example "$w/links" || fails=$((fails + 1))
conns=$(cut -d' ' -f2 "$w/mail1/peers" 2>/dev/null | sort -u | wc -l)
if [ "$conns" -ge 1 ] && [ "$conns" -le 2 ]; then ok "STARTTLS + AUTH, $conns SMTP connection(s) for 3 messages (concurrency 2, connections reused)"
else nok "SMTP connections: $conns"; fi
q "SELECT channel || ' ' || token FROM nps_billing.survey WHERE channel <> 'email' ORDER BY channel" >"$w/hook_tokens"
if "$PY" - "$w/hooks" "$w/hook_tokens" <<'PY'
import glob, json, sys
docs = [json.load(open(f)) for f in sorted(glob.glob(sys.argv[1] + '/*.json'))]
want = dict(l.split() for l in open(sys.argv[2]) if l.strip())
got = {}
for d in docs:
    b, h = d['body'], {k.lower(): v for k, v in d['headers'].items()}
    ch = b['channel']
    secret = {'sms': 'Bearer sms-secret', 'in_app': 'Bearer app-secret'}[ch]
    assert d['path'] == '/' + ch, d['path']
    assert h.get('authorization') == secret and h.get('content-type') == 'application/json'
    assert h.get('idempotency-key') and b['token'] == want[ch]
    assert b['text'] and b['survey_id'] > 0 and b['customer_id'] and b['message_id'].startswith('<nps.')
    got[ch] = got.get(ch, 0) + 1
assert got == {'sms': 1, 'in_app': 1}, got
PY
then ok "sms and in_app: one JSON POST each to their webhook, with its auth header, Idempotency-Key, token and text"
else nok "webhooks"; fi

# --- the answer page: scanners record nothing ------------------------------------------------------
link1=$(grep '^cus_1@' "$w/links" | cut -f2); unsub2=$(grep '^cus_2@' "$w/links" | cut -f3); link3=$(grep '^cus_3@' "$w/links" | cut -f2)
s1=$(curl -s -o /dev/null -w '%{http_code}' "$link1"); s2=$(curl -s -o /dev/null -w '%{http_code}' "$unsub2")
s3=$(curl -s -I -o /dev/null -w '%{http_code}' "$link1")
if [ "$s1$s2$s3" = 200200200 ] && [ "$(q "SELECT count(*) FROM nps_billing.response") $(q "SELECT count(*) FROM nps_billing.opt_out")" = "0 0" ]; then
  ok "a bare GET or HEAD of the score and unsubscribe links (a link scanner) records nothing"
else nok "scanner GET: HTTP $s1 $s2 $s3, responses $(q "SELECT count(*) FROM nps_billing.response")"; fi
p1=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d score=3 "$link1")
curl -s -c "$w/jar" -o "$w/page3.html" "$link3"
csrf=$(sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' "$w/page3.html")
p2=$(curl -s -o /dev/null -w '%{http_code}' -b "$w/jar" -H 'Origin: http://evil.example' -d "score=3&csrf=$csrf" "$link3")
p3=$(curl -s -o /dev/null -w '%{http_code}' -d "score=3&csrf=$csrf" "$link3")
if [ "$p1$p2$p3" = 403403403 ] && [ "$(q "SELECT count(*) FROM nps_billing.response")" = 0 ]; then
  ok "CSRF: a POST without the page's value, from another origin, or without its cookie is refused (403)"
else nok "CSRF: HTTP $p1 $p2 $p3"; fi
u=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$answer_port/r/NoSuchToken123456789a/5")
[ "$u" = 404 ] && ok "an unknown token: 404, nothing revealed" || nok "unknown token: HTTP $u"

# --- the answer page in a browser --------------------------------------------------------------------
if [ -d "$NODE_DIR/node_modules/playwright-core" ] && [ -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  [ "$has_opt_out" = t ] || unsub_arg=- ; : "${unsub_arg:=$unsub2}"
  NODE_PATH="$NODE_DIR/node_modules" timeout 90 node "$T/browser.cjs" "$link1" 9 "Invoice was clear, thanks" "$unsub_arg" "$w/answer-page.png" ||
    fails=$((fails + 1))
  r=$(q "SELECT count(*) || ' ' || min(r.score) || ' ' || min(r.comment) FROM nps_billing.response r JOIN nps_billing.survey s ON s.id = r.survey_id WHERE s.customer_id = 'cus_1'")
  if [ "$r" = "1 9 Invoice was clear, thanks" ]; then ok "the browser's answer is in response: score 9 and the comment, one row after a double click"
  else nok "response after the browser: $r"; fi
  if [ "$has_opt_out" = t ]; then
    [ "$(q "SELECT count(*) FROM nps_billing.opt_out WHERE customer_id = 'cus_2'")" = 1 ] && ok "the unsubscribe link opted the customer out (opt_out_by_token)" || nok "unsubscribe"
  else ok "# skip unsubscribe: this extension has no opt_out_by_token"; fi
else
  nok "headless Chromium: $NODE_DIR/node_modules/playwright-core or /usr/bin/chromium missing (sh scripts/install-deps.sh)"
fi
# two submissions of the same answer at once (a double click without the page's script): one answer
curl -s -b "$w/jar" -o /dev/null -d "score=6&csrf=$csrf" "$link3" & c1=$!
curl -s -b "$w/jar" -o /dev/null -d "score=6&csrf=$csrf&comment=twice" "$link3" & c2=$!
wait $c1 $c2
r=$(q "SELECT count(*) || ' ' || min(r.score) FROM nps_billing.response r JOIN nps_billing.survey s ON s.id = r.survey_id WHERE s.customer_id = 'cus_3'")
[ "$r" = "1 6" ] && ok "two concurrent POSTs of one answer: one response row" || nok "concurrent POSTs: $r"
if [ "$has_locale" = t ]; then
  q "UPDATE nps_billing.survey SET locale = 'de-AT' WHERE customer_id = 'cus_3'" >/dev/null
  if curl -s "$link3" | grep -q '<html lang="de">.*Wie wahrscheinlich'; then ok "the page is in the survey's locale (de-AT -> de)"
  else nok "localised page"; fi
else ok "# skip localisation by the survey's locale: survey has no locale column in this extension"; fi

# --- faults: SMTP down, then back --------------------------------------------------------------------
stop_smtp
pay 6
if wait_for 15 "SELECT attempts >= 2 AND status IN ('pending', 'sending') AND last_error LIKE 'email:%' FROM nps_billing.survey WHERE customer_id = 'cus_6'"; then
  ok "SMTP down: mark_failed, the survey waits for a retry (backoff) and is tried again"
else q "SELECT status, attempts, last_error FROM nps_billing.survey WHERE customer_id = 'cus_6'"; nok "SMTP down"; fi
start_smtp "$w/mail2"
if wait_for 20 "SELECT status = 'sent' FROM nps_billing.survey WHERE customer_id = 'cus_6'" && [ "$(emls "$w/mail2")" = 1 ]; then
  ok "SMTP back: the survey is delivered, once, and reported sent"
else nok "SMTP back: $(emls "$w/mail2") messages"; fi

# --- faults: the database restarted under the agent ---------------------------------------------------
if command -v pg_ctlcluster >/dev/null && [ -n "${PGVERSION:-}" ]; then
  t_before=$(q "SELECT pg_postmaster_start_time()")
  datadir=$(q "SHOW data_directory")
  pg_ctlcluster -m fast "$PGVERSION" regress restart >"$w/restart.out" 2>&1
  if [ "$(q "SELECT pg_postmaster_start_time()" 2>/dev/null)" = "$t_before" ]; then
    # pg_ctlcluster can find the cluster "already running" while other clusters come and go
    owner=$(stat -c %U "$datadir")
    if [ "$(id -u)" = 0 ] && [ "$owner" != root ]; then as_owner="runuser -u $owner --"; else as_owner=""; fi
    # keep the server's log file (the later suites read it): pg_ctl restart without -l drops it
    srvpid=$(q "SELECT pg_read_file('postmaster.pid')" | head -1)
    srvlog=$(readlink "/proc/$srvpid/fd/2" 2>/dev/null || true)
    $as_owner "/usr/lib/postgresql/$PGVERSION/bin/pg_ctl" -D "$datadir" -m fast -w ${srvlog:+-l "$srvlog"} restart >>"$w/restart.out" 2>&1
  fi
  t_after=$(q "SELECT pg_postmaster_start_time()" 2>/dev/null)
  [ -n "$t_after" ] && [ "$t_after" != "$t_before" ] || { sed 's/^/# /' "$w/restart.out"; nok "the database did not restart"; }
  pay 7
  if wait_for 40 "SELECT status = 'sent' FROM nps_billing.survey WHERE customer_id = 'cus_7'"; then ok "database restarted: the sender reconnects and delivers"
  else tail -5 "$w/agent.log"; nok "after a database restart"; fi
  g=$(curl -s -o /dev/null -w '%{http_code}' "$link1"); g2=$(curl -s -o /dev/null -w '%{http_code}' "$link1")
  h=$(curl -s "http://127.0.0.1:$metrics_port/healthz")
  [ "$g2" = 200 ] && [ "$h" = ok ] && ok "database restarted: the answer page reconnects (HTTP $g, $g2), /healthz ok" || nok "answer page after restart: $g $g2 $h"
else ok "# skip database restart: not in a pg_virtualenv cluster"; fi

# --- metrics, rate limit -------------------------------------------------------------------------------
curl -s "http://127.0.0.1:$metrics_port/metrics" >"$w/metrics"
if grep -qE '^nps_agent_sent_total\{channel="email"\} [1-9]' "$w/metrics" && grep -qE '^nps_agent_retried_total [1-9]' "$w/metrics" &&
   grep -qE '^nps_agent_answered_total [1-9]' "$w/metrics" && grep -q '^nps_agent_send_seconds_bucket{channel="email",le="+Inf"}' "$w/metrics" &&
   grep -q '^nps_agent_queue_depth ' "$w/metrics"; then
  ok "/metrics: sent, retried, answered, queue depth and latency histograms in Prometheus format"
else nok "/metrics"; head -30 "$w/metrics"; fi
urls=""; for i in $(seq 1 150); do urls="$urls -o /dev/null http://127.0.0.1:$answer_port/r/NoSuchToken123456789a/5"; done
n429=$(curl -s -w '%{http_code}\n' $urls | grep -c '^429$')
[ "$n429" -gt 0 ] && ok "per-address rate limit: $n429 of 150 rapid requests answered 429" || nok "rate limit: no 429"

# --- faults: SIGKILL mid-batch, then SIGTERM mid-batch ----------------------------------------------------
stop_agent TERM; rc=$?
[ $rc -eq 0 ] && grep -q 'received SIGTERM' "$w/agent.log" && ok "SIGTERM when idle: clean exit 0" || nok "SIGTERM exit $rc"
stop_smtp
start_smtp "$w/mail3" --delay 0.3
start_agent NPS_AGENT_EMAIL_CONCURRENCY=1 NPS_AGENT_SEND_BATCH=10 || nok "agent restart"
pay k1 k2 k3 k4 k5 k6
_n=100; while [ $_n -gt 0 ] && [ "$(emls "$w/mail3")" -lt 2 ]; do sleep 0.1; _n=$((_n - 1)); done
kill -9 "$agent_pid"; wait "$agent_pid" 2>/dev/null
before=$(emls "$w/mail3")
start_agent || nok "agent start after SIGKILL"
if wait_for 40 "SELECT count(*) = 6 FROM nps_billing.survey WHERE customer_id LIKE 'cus_k%' AND status = 'sent'"; then
  q "SELECT token || E'\t' || customer_id || '@example.test' FROM nps_billing.survey WHERE customer_id LIKE 'cus_k%'" >"$w/expected3"
  if "$PY" - "$w/mail3" "$w/expected3" "$before" <<'PY'
import email, email.policy, glob, hashlib, sys
toks = [l.split('\t')[0] for l in open(sys.argv[2]) if l.strip()]
mid = {'<nps.%s@shop.example>' % hashlib.sha256(('nps_billing:' + t).encode()).hexdigest()[:32]: t for t in toks}
seen = {}
for f in glob.glob(sys.argv[1] + '/*.eml'):
    m = email.message_from_binary_file(open(f, 'rb'), policy=email.policy.default)
    seen[mid[str(m['Message-ID'])]] = seen.get(mid[str(m['Message-ID'])], 0) + 1
twice = [t for t in toks if seen.get(t) == 2]
assert all(seen.get(t) in (1, 2) for t in toks), seen
assert 1 <= len(twice) <= int(sys.argv[3]) + 1, (len(twice), sys.argv[3])
print('# %d delivered before the kill, %d surveys delivered twice, the rest once' % (int(sys.argv[3]), len(twice)))
PY
  then ok "SIGKILL mid-batch: the leases ran out, each survey sent before the kill was delivered again once (same Message-ID), none lost"
  else nok "SIGKILL mid-batch: deliveries"; fi
else nok "SIGKILL mid-batch: not all sent"; q "SELECT status, attempts FROM nps_billing.survey WHERE customer_id LIKE 'cus_k%'"; fi
stop_agent TERM
start_agent NPS_AGENT_EMAIL_CONCURRENCY=1 NPS_AGENT_SEND_BATCH=10 NPS_AGENT_SEND_LEASE='5 minutes' || nok "agent restart"
m0=$(emls "$w/mail3")
pay t1 t2 t3 t4 t5 t6
_n=100; while [ $_n -gt 0 ] && [ "$(emls "$w/mail3")" -le "$m0" ]; do sleep 0.1; _n=$((_n - 1)); done
stop_agent TERM; rc=$?
r=$(q "SELECT count(*) FILTER (WHERE status = 'sending') || ' ' || count(*) FILTER (WHERE status = 'sent') || ' ' || count(*) FILTER (WHERE status = 'pending' AND send_after <= now() AND last_error LIKE 'released%') FROM nps_billing.survey WHERE customer_id LIKE 'cus_t%'")
set -- $r
if [ $rc -eq 0 ] && [ "$1" = 0 ] && [ "$2" -ge 1 ] && [ "$3" -ge 1 ] && [ $(($2 + $3)) = 6 ]; then
  ok "SIGTERM mid-batch: the message in progress finished ($2 sent), the other $3 leases released at once, exit 0"
else nok "SIGTERM mid-batch: exit $rc, sending/sent/released = $r"; fi

# --- privacy of the logs ------------------------------------------------------------------------------
q "SELECT token FROM nps_billing.survey UNION ALL SELECT customer_id FROM nps_billing.survey" | grep -v '^$' >"$w/secrets"
printf 'example.test\nInvoice was clear\n' >>"$w/secrets"
if grep -F -f "$w/secrets" "$w/agent.log" >/dev/null; then nok "the agent's log shows a token, customer id, address or comment"
else ok "the agent's log ($(wc -l <"$w/agent.log") lines) shows no token, customer id, address or comment"; fi
[ -n "${NPS_AGENT_SCREENSHOT:-}" ] && [ -f "$w/answer-page.png" ] && cp "$w/answer-page.png" "$NPS_AGENT_SCREENSHOT"
[ $fails -eq 0 ]
