#!/bin/sh
# P10: rendering N (10,000) survey messages. N due surveys of six locales (en, de, fr, es, ja,
# pt-BR, in several time zones and currencies), 70% email (subject, text and HTML with the 0-10
# links), 30% sms, with payment events carrying attributes; a DBA template for one language.
#  - render: _messages() over the N survey ids in one statement (template lookup per source /
#    channel / locale, payment context by key, the C++ renderer per survey): what claim_messages
#    adds to claim_surveys. Median of REPS runs, in seconds.
#  - also printed: claim_messages(w, N) vs claim_surveys(w, N) in one call each, interleaved
#    (the surveys are put back into the queue between runs).
. "$(dirname "$0")/lib.sh"
N=${NPS_P10_SURVEYS:-10000}
REPS=${NPS_BENCH_REPS:-5}
psql -qX -v ON_ERROR_STOP=1 >/dev/null <<SQL
DROP TABLE IF EXISTS p10_pay;
CREATE TABLE p10_pay (id int);
DELETE FROM nps_billing.message_template WHERE body_text LIKE 'p10:%';
DELETE FROM nps_billing.payment_source WHERE name = 'p10';
INSERT INTO nps_billing.payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr, answer_base_url)
VALUES ('p10', 'p10_pay', 'x', 'y', 'z', 'https://nps.example.com/answer');
INSERT INTO nps_billing.message_template (source_id, channel, locale, subject, body_text, body_html)
SELECT id, 'email', 'pt', 'Sua opinião sobre o plano {{attributes.plan}}',
       E'p10: Pagamento de {{amount}} em {{paid_at}}.\n{{score_links}}\nCancelar: {{unsubscribe_url}}',
       E'<p>Pagamento de <b>{{amount}}</b> em {{paid_at}} ({{attributes.plan}})</p>\n{{score_links}}\n<p><a href="{{unsubscribe_url}}">Cancelar</a></p>'
  FROM nps_billing.payment_source WHERE name = 'p10';
WITH src AS (SELECT id FROM nps_billing.payment_source WHERE name = 'p10'),
ev AS (
  INSERT INTO nps_billing.payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
  SELECT src.id, 'p10-' || g, 'succeeded', 'p10-cust-' || g, (g % 997) * 1.37,
         (ARRAY['USD', 'EUR', 'EUR', 'MXN', 'JPY', 'BRL', 'KWD'])[1 + g % 7],
         timestamptz '2025-03-01' + g * interval '7 minutes',
         jsonb_build_object('plan', (ARRAY['basic', 'pro', '<b>team</b> & co'])[1 + g % 3], 'method', 'card')
    FROM src, generate_series(1, $N) g
  RETURNING id, source_id, customer_id, payment_key)
INSERT INTO nps_billing.survey (token, source_id, event_id, customer_id, channel, send_after, expires_at,
                                recipient, locale, time_zone)
SELECT nps_billing.new_token(), ev.source_id, ev.id, ev.customer_id,
       CASE WHEN substr(ev.payment_key, 5)::int % 10 < 7 THEN 'email' ELSE 'sms' END,
       now() - interval '1 minute', now() + interval '14 days',
       ev.customer_id || '@example.com',
       (ARRAY['en', 'de', 'fr', 'es-MX', 'ja', 'pt-BR', NULL])[1 + substr(ev.payment_key, 5)::int % 7],
       (ARRAY['America/New_York', 'Europe/Berlin', 'Europe/Paris', 'America/Mexico_City', 'Asia/Tokyo',
              'America/Sao_Paulo', NULL])[1 + substr(ev.payment_key, 5)::int % 7]
  FROM ev;
VACUUM ANALYZE nps_billing.survey;
VACUUM ANALYZE nps_billing.payment_event;
SQL
ids="ARRAY(SELECT id FROM nps_billing.survey WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'p10'))"
requeue="UPDATE nps_billing.survey SET status = 'pending', lease_owner = NULL, lease_role = NULL, lease_until = NULL, attempts = 0
         WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'p10')"
tmp=$(mktemp -d)
# one warm-up render (tz data, plans), checked: every survey rendered, every email with its HTML
psql -qAtX -c "SELECT count(*) || ' messages, ' || count(body_html) || ' with HTML, ' || count(*) FILTER (WHERE body_text LIKE '%https://nps.example.com/answer/%') || ' with links'
               FROM nps_billing._messages($ids)" | sed 's/^/# P10 warm-up: /'
r=0
while [ $r -lt "$REPS" ]; do
  ms "SELECT count(*), sum(length(body_text) + coalesce(length(body_html), 0)) FROM nps_billing._messages($ids)" >>"$tmp/render"
  psql -qX -c "$requeue" >/dev/null
  ms "SELECT count(*) FROM nps_billing.claim_surveys('p10', $N)" >>"$tmp/claim"
  psql -qX -c "$requeue" >/dev/null
  ms "SELECT count(*) FROM nps_billing.claim_messages('p10', $N)" >>"$tmp/claim_messages"
  psql -qX -c "$requeue" >/dev/null
  r=$((r + 1))
done
sec=$(median <"$tmp/render" | awk '{ printf "%.3f", $1 / 1000 }')
met=$(awk -v s="$sec" 'BEGIN { print (s < 1 ? "yes" : "NO") }')
label=$(echo "$N" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')
echo "P10|rendering $label survey messages|$sec|< 1 s|$met"
echo "# P10 claim_surveys($N): $(median <"$tmp/claim" | awk '{ printf "%.3f", $1 / 1000 }') s, claim_messages($N): $(median <"$tmp/claim_messages" | awk '{ printf "%.3f", $1 / 1000 }') s (medians of $REPS)"
psql -qX >/dev/null <<'SQL'
DELETE FROM nps_billing.survey WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'p10');
DELETE FROM nps_billing.payment_event WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'p10');
DELETE FROM nps_billing.message_template WHERE body_text LIKE 'p10:%';
DELETE FROM nps_billing.payment_source WHERE name = 'p10';
DROP TABLE p10_pay;
SQL
rm -rf "$tmp"
