#!/bin/sh
# The delivery loop of `make demo` (run by scripts/demo.sh in its cluster): three of the demo's
# surveys are queued again, nps-billing-agent delivers them to a local SMTP server (aiosmtpd),
# one received e-mail is shown, and headless Chromium opens its score link on the agent's answer
# page and saves a screenshot (DEMO_SCREENSHOT, default ./nps-demo-answer-page.png).
set -u
cd "$(dirname "$0")/.."
top=$(pwd)
BIN=$top/agent/nps-billing-agent
T=$top/test/agent
# Debian's Python (python3-aiosmtpd), whatever python3 comes first on PATH
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
NODE_DIR=${NPS_NODE_DIR:-/var/cache/nps_billing/node}
shot=${DEMO_SCREENSHOT:-$top/nps-demo-answer-page.png}
[ -x "$BIN" ] || { echo "(the delivery agent is not built: its part of the demo is skipped)"; exit 0; }
w=$(mktemp -d /tmp/nps-demo-agent.XXXXXX)
pids=""
trap 'for p in $pids; do kill $p 2>/dev/null; done; wait 2>/dev/null; rm -rf "$w"' EXIT
smtp_port=$("$PY" "$T/free_port.py" 47100 47199); answer_port=$("$PY" "$T/free_port.py" 47100 47199)
"$PY" "$T/smtp_sink.py" "$smtp_port" "$w/mail" >"$w/smtp.log" 2>&1 &
pids="$pids $!"
n=100; while [ $n -gt 0 ] && [ ! -e "$w/mail/ready" ]; do sleep 0.1; n=$((n - 1)); done
psql -qAtX -v ON_ERROR_STOP=1 -v base="http://127.0.0.1:$answer_port/r" >/dev/null <<'SQL'
-- the links of the source's messages point at this agent's answer page
UPDATE nps_billing.payment_source SET answer_base_url = :'base' WHERE name = 'stripe';
-- three recent surveys that got no answer, queued again for the agent
UPDATE nps_billing.survey s SET status = 'pending', send_after = now(), expires_at = now() + interval '14 days',
       attempts = 0, lease_owner = NULL, lease_until = NULL, lease_role = NULL, sent_at = NULL
 WHERE s.id IN (SELECT id FROM nps_billing.survey WHERE status IN ('sent', 'expired') AND channel = 'email'
                 ORDER BY created_at DESC, id LIMIT 3);
SQL
cat >"$w/agent.conf" <<CONF
[agent]
worker = demo-agent
[send]
poll_interval = 1
fallback_recipient = {customer_id}@customers.example
link_base_url = http://127.0.0.1:$answer_port/r
[email]
url = smtp://127.0.0.1:$smtp_port
tls = none
from = feedback@saas.example
from_name = Demo SaaS
[answer]
listen = 127.0.0.1:$answer_port
[metrics]
listen =
[log]
level = warning
CONF
echo
echo "== The delivery loop: nps-billing-agent sends 3 surveys to a local SMTP server (127.0.0.1:$smtp_port) =="
"$BIN" --config "$w/agent.conf" >"$w/agent.log" 2>&1 &
pids="$pids $!"
n=200; while [ $n -gt 0 ] && [ "$(ls "$w/mail"/*.eml 2>/dev/null | wc -l)" -lt 3 ]; do sleep 0.1; n=$((n - 1)); done
first=$(ls "$w/mail"/*.eml 2>/dev/null | head -1)
[ -n "$first" ] || { echo "(no e-mail arrived; agent log:)"; cat "$w/agent.log"; exit 1; }
echo "One of the received e-mails ($(ls "$w/mail"/*.eml | wc -l) arrived), headers and text body:"
echo
"$PY" - "$first" <<'PY'
import email, email.policy, sys
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)
for h in ('From', 'To', 'Subject', 'Date', 'Message-ID', 'List-Unsubscribe', 'List-Unsubscribe-Post'):
    print('%s: %s' % (h, m[h]))
print()
print(m.get_body(preferencelist=('plain',)).get_content().rstrip())
PY
link=$("$PY" - "$first" <<'PY'
import email, email.policy, re, sys
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)
print(re.findall(r'(https?://\S+/\d+)\s', m.get_body(preferencelist=('plain',)).get_content())[9])
PY
)
echo
failed=0
if [ -d "$NODE_DIR/node_modules/playwright-core" ] && [ -x /usr/bin/chromium ]; then
  if NODE_PATH="$NODE_DIR/node_modules" node -e '
const { chromium } = require("playwright-core");
(async () => {
  const b = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  const p = await b.newPage({ viewport: { width: 800, height: 640 } });
  await p.goto(process.argv[1]);
  await p.waitForSelector("#saved:not([hidden])", { timeout: 10000 });
  await p.fill("#comment", "The invoice was clear and the card payment went through at once.");
  await p.screenshot({ path: process.argv[2], fullPage: true });
  await b.close();
})().catch((e) => { console.error(e.message); process.exit(1); });' "$link" "$shot"; then
    echo "Chromium opened the score link $(echo "$link" | sed 's|/r/[^/]*/|/r/<token>/|') (score 9 recorded by the page itself);"
    echo "screenshot of the answer page: $shot"
  else
    echo "(headless Chromium could not open the answer page: no screenshot; agent log:)"; cat "$w/agent.log"
    failed=1
  fi
  want=1
else
  echo "(headless Chromium or playwright-core missing: no screenshot; sh scripts/install-deps.sh installs them)"
  want=0
fi
got=$(psql -qAtX -c "SELECT count(*) FROM nps_billing.response r JOIN nps_billing.survey s ON s.id = r.survey_id WHERE s.attempts > 0 AND r.responded_at > now() - interval '1 minute'")
echo "Answers recorded by the agent's page now: $got"
[ "${got:-0}" -ge "$want" ] || { echo "(the answer page recorded no answer)"; failed=1; }
exit "$failed"
