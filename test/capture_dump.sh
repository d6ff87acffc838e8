#!/bin/sh
# pg_dump / pg_restore keeps every row of the extension's tables (pg_extension_config_dump) and
# capture keeps working in the restored database. Runs against the cluster of the environment
# (PGHOST/PGPORT, e.g. inside scripts/run-tests.sh's pg_virtualenv); prints "ok" lines and exits
# non-zero on the first difference.
set -eu
src=nps_dump_src_$$; dst=nps_dump_dst_$$; dump=$(mktemp)
cleanup() { psql -qX -d postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" >/dev/null 2>&1 || true; rm -f "$dump"; }
trap cleanup EXIT
psql -qX -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $src" -c "CREATE DATABASE $dst" >/dev/null
psql -qX -v ON_ERROR_STOP=1 -d "$src" >/dev/null <<'SQL'
CREATE EXTENSION nps_billing;
CREATE TABLE payments (id bigserial PRIMARY KEY, customer_id text, amount_cents bigint, currency text, status text,
                       created_at timestamptz DEFAULT now());
SELECT nps_billing.track_payments('payments', 'customer_id', 'id::text', $$status = 'succeeded'$$, $$status = 'failed'$$,
                                  'amount_cents / 100.0 + 0 * (1 / amount_cents)', 'currency', 'created_at', name => 'dumped');
UPDATE nps_billing.payment_source SET throttle = '1 day', sample_rate = 0.9 WHERE name = 'dumped';
SELECT nps_billing.opt_out('cus_7');
INSERT INTO payments (customer_id, amount_cents, currency, status)
SELECT 'cus_' || (g % 20), g * 10, 'usd', CASE WHEN g % 9 = 0 THEN 'failed' WHEN g % 11 = 0 THEN 'pending' ELSE 'succeeded' END
FROM generate_series(1, 300) g;
-- a capture error: the amount expression divides by zero on this row only
INSERT INTO payments (customer_id, amount_cents, currency, status) VALUES ('cus_1', 0, 'usd', 'succeeded');
-- an answer through the real path and an imported historical one
SELECT nps_billing.record_response((SELECT token FROM nps_billing.survey ORDER BY id LIMIT 1), 9, 'fine');
INSERT INTO nps_billing.response (customer_id, score, comment, responded_at) VALUES ('cus_old', 3, 'old answer', '2025-01-01');
-- a recent detractor: its follow-up, worked, with a note (restored as dumped, not made again)
INSERT INTO nps_billing.follow_up_policy (source_id, with_comment) SELECT id, true FROM nps_billing.payment_source WHERE name = 'dumped';
SELECT nps_billing.record_response((SELECT token FROM nps_billing.survey ORDER BY id LIMIT 1 OFFSET 1), 2, 'charged twice');
SELECT nps_billing.update_follow_up(c.id, 'agent', 'contacted', 'called back') FROM nps_billing.claim_follow_ups('agent') c;
-- a message template of the DBA's (the built-in ones are re-created by CREATE EXTENSION, not dumped)
INSERT INTO nps_billing.message_template (source_id, channel, locale, subject, body_text)
SELECT id, 'email', 'de', 'Ihre Meinung', 'Zahlung {{amount}}: {{score_links}}' FROM nps_billing.payment_source WHERE name = 'dumped';
-- the table changes after tracking: the trigger recompiles
ALTER TABLE payments ADD COLUMN note text;
-- expressions bound to a function of another schema (stored schema-qualified) and varchar columns
CREATE SCHEMA billing;
CREATE FUNCTION billing.norm(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT upper($1)';
CREATE TABLE billing.charges (id int PRIMARY KEY, cust varchar(20), st varchar(10));
SELECT nps_billing.track_payments('billing.charges', 'norm(cust)', 'id::text', $$st = 'ok'$$, name => 'bound');
INSERT INTO billing.charges VALUES (1, 'cus_b1', 'ok');
SQL
# five surveys due now (the others wait for the source's delay): the restored queue must serve them
psql -qX -v ON_ERROR_STOP=1 -d "$src" -c "UPDATE nps_billing.survey SET send_after = now() - interval '1 minute'
  WHERE id IN (SELECT id FROM nps_billing.survey WHERE status = 'pending' ORDER BY id LIMIT 5)" >/dev/null
pg_dump -Fc -d "$src" -f "$dump"
pg_restore -d "$dst" "$dump"
for t in payment_source payment_event survey customer_contact opt_out capture_error response follow_up_policy follow_up follow_up_note message_template message_template_builtin; do
  q="SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM nps_billing.$t t"
  a=$(psql -qAtX -d "$src" -c "$q"); b=$(psql -qAtX -d "$dst" -c "$q")
  if [ "$a" != "$b" ]; then echo "not ok - nps_billing.$t differs after restore ($a vs $b)"; exit 1; fi
  echo "ok - nps_billing.$t: ${a%%:*} rows kept"
done
n=$(psql -qAtX -d "$dst" -c "SELECT count(*) FROM nps_billing.payment_event")
[ "$n" -gt 200 ] || { echo "not ok - too few events to prove anything ($n)"; exit 1; }
r=$(psql -qAtX -d "$dst" -c "SELECT count(*) FROM nps_billing.response")
[ "$r" = 3 ] || { echo "not ok - expected three responses after restore ($r)"; exit 1; }
e=$(psql -qAtX -d "$dst" -c "SELECT count(*) FROM nps_billing.capture_error")
[ "$e" = 1 ] || { echo "not ok - expected one capture_error row ($e)"; exit 1; }
for s in payment_event_id_seq survey_id_seq follow_up_id_seq follow_up_note_id_seq; do
  a=$(psql -qAtX -d "$src" -c "SELECT last_value FROM nps_billing.$s"); b=$(psql -qAtX -d "$dst" -c "SELECT last_value FROM nps_billing.$s")
  [ "$a" = "$b" ] || { echo "not ok - sequence $s differs ($a vs $b)"; exit 1; }
done
echo "ok - sequences kept"
# the due queue is not dumped: the restore of survey rebuilds it, and the restored surveys are claimed
q="SELECT string_agg(survey_id || ' ' || visible_at, ',' ORDER BY survey_id) FROM nps_billing.survey_queue"
a=$(psql -qAtX -d "$src" -c "$q"); b=$(psql -qAtX -d "$dst" -c "$q")
[ -n "$a" ] && [ "$a" = "$b" ] || { echo "not ok - survey_queue after restore differs from the source's"; exit 1; }
a=$(psql -qAtX -d "$src" -c "SELECT count(*) FROM nps_billing.survey WHERE status = 'pending' AND send_after <= now() AND expires_at > now()")
b=$(psql -qAtX -d "$dst" -c "SELECT count(*) FROM nps_billing.claim_surveys('restored', 10000)")
[ "$a" = 5 ] && [ "$b" = 5 ] || { echo "not ok - $b surveys claimed after restore, $a due"; exit 1; }
echo "ok - the due queue is rebuilt by the restore: its $b due surveys are claimed"
psql -qX -v ON_ERROR_STOP=1 -d "$dst" -c "INSERT INTO payments (customer_id, amount_cents, currency, status) VALUES ('cus_new', 100, 'usd', 'succeeded')" >/dev/null
c=$(psql -qAtX -d "$dst" -c "SELECT count(*) FROM nps_billing.payment_event WHERE customer_id = 'cus_new' AND survey_id IS NOT NULL")
[ "$c" = 1 ] || { echo "not ok - capture does not work after restore"; exit 1; }
echo "ok - capture works in the restored database"
b=$(psql -qAtX -d "$dst" -c "SELECT customer_expr FROM nps_billing.payment_source WHERE name = 'bound'")
[ "$b" = 'billing.norm((cust)::text)' ] || { echo "not ok - bound expression not restored as stored ($b)"; exit 1; }
psql -qX -v ON_ERROR_STOP=1 -d "$dst" -c "INSERT INTO billing.charges VALUES (2, 'cus_b2', 'ok')" >/dev/null
c=$(psql -qAtX -d "$dst" -c "SELECT string_agg(customer_id, ',' ORDER BY customer_id) FROM nps_billing.payment_event WHERE customer_id LIKE 'CUS_B%'")
[ "$c" = 'CUS_B1,CUS_B2' ] || { echo "not ok - bound expressions do not run after restore ($c)"; exit 1; }
echo "ok - bound (schema-qualified) expressions restore and run"
t=$(psql -qAtX -d "$dst" -c "DROP TABLE billing.charges; SELECT tracked FROM nps_billing.payment_source WHERE name = 'bound'")
[ "$t" = f ] || { echo "not ok - the drop event trigger is missing after restore ($t)"; exit 1; }
echo "ok - a dropped tracked table is untracked in the restored database"
