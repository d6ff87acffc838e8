#!/bin/sh
# Errors raised by capture name the source, the payment key and the SQLSTATE, never the row's
# values: not in the client's error (on_error => 'raise'), not in capture_error (on_error =>
# 'record'), not in the server log. The payment reaches the server without the value in its SQL
# text (read from a staging table, as a client passing bind parameters would), so that the log's
# STATEMENT line cannot quote it either. Runs against the cluster of the environment.
set -eu
db=nps_privacy_$$; out=$(mktemp)
cleanup() { psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true; rm -f "$out"; }
trap cleanup EXIT
psql -qX -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $db" >/dev/null
pid=$(psql -qAtX -d "$db" -c "SELECT pg_read_file('postmaster.pid')" | head -1)
log=$(readlink "/proc/$pid/fd/2" 2>/dev/null || true)
[ -n "$log" ] && [ -f "$log" ] || log=/var/log/postgresql/postgresql-15-regress.log
marker="nps-privacy-marker-$$"
psql -qX -v ON_ERROR_STOP=1 -d "$db" >/dev/null <<SQL
CREATE EXTENSION nps_billing;
CREATE TABLE staging (id int, cust text, st text);
INSERT INTO staging VALUES (1, 'CUSTSECRET42', 'ok');
CREATE TABLE pay_raise (id int, cust text, st text);
CREATE TABLE pay_record (id int, cust text, st text);
SELECT nps_billing.track_payments('pay_raise', 'cust::int', 'id::text', \$\$st = 'ok'\$\$, name => 'priv_raise', on_error => 'raise');
SELECT nps_billing.track_payments('pay_record', 'cust::int', 'id::text', \$\$st = 'ok'\$\$, name => 'priv_record');
SELECT nps_billing.track_payments('staging', 'cust', 'id::text', 'cust::int > 0', name => 'priv_cond', on_error => 'raise');
DO \$\$BEGIN RAISE WARNING '$marker'; END\$\$;
SQL
if psql -qX -v ON_ERROR_STOP=1 -d "$db" -c "INSERT INTO pay_raise SELECT * FROM staging" >"$out" 2>&1; then
  echo "not ok - on_error => 'raise' let a failing capture pass"; exit 1; fi
if grep -q CUSTSECRET42 "$out"; then echo "not ok - the client's error quotes the customer id: $(cat "$out")"; exit 1; fi
grep -q 'payment source "priv_raise" failed: invalid input syntax for type ...: "..."' "$out" &&
  grep -q 'SQLSTATE 22P02' "$out" || { echo "not ok - the raised error does not name source, key and SQLSTATE: $(cat "$out")"; exit 1; }
echo "ok - on_error => 'raise': the error names the source and the SQLSTATE, not the customer id"
# the same, when the failing expression is a condition and the key is not known yet; multi-row
if psql -qX -d "$db" -c "INSERT INTO staging SELECT g, s.cust, 'ok' FROM staging s, generate_series(2, 20) g" >"$out" 2>&1; then
  echo "not ok - a failing condition passed"; exit 1; fi
if grep -q CUSTSECRET42 "$out"; then echo "not ok - the set path's error quotes the customer id: $(cat "$out")"; exit 1; fi
grep -q 'payment source "priv_cond" failed' "$out" || { echo "not ok - set path error: $(cat "$out")"; exit 1; }
echo "ok - on_error => 'raise' on the set path: no value in the error"
psql -qX -v ON_ERROR_STOP=1 -d "$db" -c "INSERT INTO pay_record SELECT * FROM staging" >/dev/null
e=$(psql -qAtX -d "$db" -c "SELECT payment_key || ' ' || sqlstate || ' ' || error FROM nps_billing.capture_error")
case "$e" in
  *CUSTSECRET42*) echo "not ok - capture_error quotes the customer id: $e"; exit 1;;
  '1 22P02 invalid input syntax for type ...: "..."') echo "ok - capture_error: payment key, SQLSTATE and the message without the value";;
  *) echo "not ok - unexpected capture_error: $e"; exit 1;;
esac
# the recipient expression's value (personal data) is never quoted either
psql -qX -v ON_ERROR_STOP=1 -d "$db" >/dev/null <<SQL
CREATE TABLE staging_r (id int, cust text, email text, st text);
INSERT INTO staging_r VALUES (7, 'c7', 'RCPTSECRET@example.com', 'ok');
CREATE TABLE pay_rcpt (id int, cust text, email text, st text);
CREATE TABLE pay_rcpt_rec (id int, cust text, email text, st text);
SELECT nps_billing.track_payments('pay_rcpt', 'cust', 'id::text', \$\$st = 'ok'\$\$, name => 'priv_rcpt', on_error => 'raise',
                                  recipient => '(email::int)::text');
SELECT nps_billing.track_payments('pay_rcpt_rec', 'cust', 'id::text', \$\$st = 'ok'\$\$, name => 'priv_rcpt_rec',
                                  recipient => '(email::int)::text', locale => 'email', time_zone => 'email');
SQL
if psql -qX -d "$db" -c "INSERT INTO pay_rcpt SELECT * FROM staging_r" >"$out" 2>&1; then
  echo "not ok - a failing recipient expression passed with on_error => 'raise'"; exit 1; fi
if grep -q RCPTSECRET "$out"; then echo "not ok - the client's error quotes the recipient: $(cat "$out")"; exit 1; fi
grep -q 'payment source "priv_rcpt" failed.*invalid input syntax for type ...: "..."' "$out" ||
  { echo "not ok - the recipient expression's error: $(cat "$out")"; exit 1; }
psql -qX -v ON_ERROR_STOP=1 -d "$db" -c "INSERT INTO pay_rcpt_rec SELECT * FROM staging_r" >/dev/null
r=$(psql -qAtX -d "$db" -c "SELECT count(*) FROM nps_billing.capture_error WHERE error LIKE '%RCPTSECRET%' OR payment_key LIKE '%RCPTSECRET%'
                            UNION ALL SELECT count(*) FROM nps_billing.capture_error WHERE payment_key = '7'" | tr '\n' ' ')
if [ "$r" = "0 1 " ]; then echo "ok - a failing recipient expression: the error names source, key and SQLSTATE, never the recipient"
else echo "not ok - capture_error for the recipient expression: $r"; exit 1; fi
sleep 0.5
grep -q "$marker" "$log" || { echo "not ok - could not find the server log ($log)"; exit 1; }
if grep -q CUSTSECRET42 "$log"; then echo "not ok - the server log quotes the customer id: $(grep CUSTSECRET42 "$log" | head -3)"; exit 1; fi
if grep -q RCPTSECRET "$log"; then echo "not ok - the server log quotes the recipient: $(grep RCPTSECRET "$log" | head -3)"; exit 1; fi
echo "ok - the server log never shows the customer id or the recipient ($log)"
