-- A payment write never fails because of capture (on_error => 'record'), whatever the writer's
-- session settings and whatever happened to the table since it was tracked; the same row gives
-- the same event under every session setting.
CREATE TABLE set_pay (id int PRIMARY KEY, cust text, amt text, st text, extra text,
                      booked timestamp, d date, iv interval, f float8, m money, note text);
CREATE VIEW set_events AS
  SELECT s.name, e.payment_key, e.customer_id, e.amount, e.occurred_at, e.attributes FROM nps_billing.payment_event e
  JOIN nps_billing.payment_source s ON s.id = e.source_id WHERE s.name LIKE 'set\_%';
CREATE VIEW set_errors AS
  SELECT s.name, c.payment_key, c.sqlstate, c.error FROM nps_billing.capture_error c
  JOIN nps_billing.payment_source s ON s.id = c.source_id WHERE s.name LIKE 'set\_%';

-- one event per session: every setting that changes how text parses or values print
SELECT nps_billing.track_payments('set_pay', $$cust || '\'$$, 'id::text', $$st = 'ok'$$,
  amount => 'amt::numeric', paid_at => 'booked',
  attributes => $$jsonb_build_object('d', d::text, 'iv', iv::text, 'f', f::text, 'm', m::text, 'lit', '01/02/2024'::date,
                   'tc', to_char(amt::numeric, 'FM9G999D99'), 'ts', booked::timestamptz::text, 'mon', to_char(d, 'TMMonth'))$$,
  name => 'set_same') > 0 AS tracked;
SELECT customer_expr FROM nps_billing.payment_source WHERE name = 'set_same';
INSERT INTO set_pay VALUES (1, 'C', '1234.5', 'ok', NULL, '2024-03-04 05:06:07', '2024-03-04', '1 day 02:03:04', 0.1, 12.34);
BEGIN;
SET LOCAL standard_conforming_strings = off;
SET LOCAL search_path = pg_temp, public;
SET LOCAL DateStyle = 'SQL, DMY';
SET LOCAL IntervalStyle = 'sql_standard';
SET LOCAL TimeZone = 'Asia/Tokyo';
SET LOCAL extra_float_digits = 3;
SET LOCAL lc_monetary = 'C.UTF-8';
SET LOCAL lc_numeric = 'C.UTF-8';
SET LOCAL bytea_output = 'escape';
INSERT INTO set_pay VALUES (2, 'C', '1234.5', 'ok', NULL, '2024-03-04 05:06:07', '2024-03-04', '1 day 02:03:04', 0.1, 12.34);
COMMIT;
BEGIN;
SET LOCAL DateStyle = 'German';
SET LOCAL IntervalStyle = 'iso_8601';
SET LOCAL TimeZone = 'America/Los_Angeles';
SET LOCAL extra_float_digits = -15;
SET LOCAL transform_null_equals = on;
INSERT INTO set_pay SELECT g, 'C', '1234.5', 'ok', NULL, '2024-03-04 05:06:07', '2024-03-04', '1 day 02:03:04', 0.1, 12.34
FROM generate_series(3, 12) g;  -- the set path
COMMIT;
SELECT count(*) AS events, count(DISTINCT (customer_id, amount, occurred_at, attributes)) AS distinct_events
FROM set_events WHERE name = 'set_same';
SELECT customer_id, amount, occurred_at AT TIME ZONE 'UTC' AS occurred_utc, attributes FROM set_events
WHERE name = 'set_same' AND payment_key = '2';
SELECT count(*) AS errors FROM set_errors WHERE name = 'set_same';
SELECT nps_billing.untrack_payments('set_pay');

-- the table changes after tracking: a dropped, a renamed, a retyped column; the payment commits
-- and each problem lands in capture_error, on the row path and on the set path
SELECT nps_billing.track_payments('set_pay', 'cust', 'id::text', $$st = 'ok'$$,
  attributes => $$jsonb_build_object('x', extra)$$, name => 'set_drop') > 0 AS tracked;
ALTER TABLE set_pay DROP COLUMN extra;
INSERT INTO set_pay (id, cust, amt, st) VALUES (20, 'C20', '1', 'ok');
INSERT INTO set_pay (id, cust, amt, st) SELECT g, 'C' || g, '1', 'ok' FROM generate_series(21, 30) g;
SELECT count(*) AS committed FROM set_pay WHERE id BETWEEN 20 AND 30;
SELECT sqlstate, error, count(*), count(payment_key) AS with_key FROM set_errors WHERE name = 'set_drop' GROUP BY 1, 2;
-- the way back: track the table again with expressions that compile
SELECT nps_billing.untrack_payments('set_pay');
SELECT nps_billing.track_payments('set_pay', 'cust', 'id::text', $$st = 'ok'$$, amount => 'amt::numeric / 100',
                                  name => 'set_alter') > 0 AS tracked;
ALTER TABLE set_pay RENAME COLUMN cust TO customer;
INSERT INTO set_pay (id, customer, amt, st) VALUES (31, 'C31', '1', 'ok');
ALTER TABLE set_pay RENAME COLUMN customer TO cust;
ALTER TABLE set_pay ALTER COLUMN amt TYPE bytea USING amt::bytea;
INSERT INTO set_pay (id, cust, amt, st) VALUES (32, 'C32', '1', 'ok');
ALTER TABLE set_pay ALTER COLUMN amt TYPE text USING convert_from(amt, 'UTF8');
INSERT INTO set_pay (id, cust, amt, st) VALUES (33, 'C33', '1', 'ok');
SELECT payment_key, sqlstate, error FROM set_errors WHERE name = 'set_alter' ORDER BY payment_key;
SELECT payment_key, customer_id FROM set_events WHERE name = 'set_alter' ORDER BY payment_key;
-- renamed and moved to another schema: still captured
CREATE SCHEMA set_other;
ALTER TABLE set_pay RENAME TO set_pay_renamed;
INSERT INTO set_pay_renamed (id, cust, amt, st) VALUES (34, 'C34', '1', 'ok');
ALTER TABLE set_pay_renamed SET SCHEMA set_other;
INSERT INTO set_other.set_pay_renamed (id, cust, amt, st) VALUES (35, 'C35', '1', 'ok');
INSERT INTO set_other.set_pay_renamed (id, cust, amt, st) SELECT g, 'C' || g, '1', 'ok' FROM generate_series(36, 45) g;
SELECT count(*) AS events FROM set_events WHERE name = 'set_alter' AND payment_key::int >= 34;
ALTER TABLE set_other.set_pay_renamed SET SCHEMA public;
ALTER TABLE set_pay_renamed RENAME TO set_pay;
DROP SCHEMA set_other;

-- a dropped tracked table leaves no tracked source behind
CREATE TABLE set_gone (id int, cust text);
SELECT nps_billing.track_payments('set_gone', 'cust', 'id::text', 'true', name => 'set_gone') > 0 AS tracked;
CREATE SCHEMA set_gone_schema;
CREATE TABLE set_gone_schema.t (id int, cust text);
SELECT nps_billing.track_payments('set_gone_schema.t', 'cust', 'id::text', 'true', name => 'set_gone2') > 0 AS tracked;
DROP TABLE set_gone;
DROP SCHEMA set_gone_schema CASCADE;
SELECT name, tracked FROM nps_billing.payment_source WHERE name LIKE 'set\_gone%' ORDER BY name;

-- expressions calling only built-in IMMUTABLE functions: a single-row statement pins only the
-- settings such functions read (float and bytea output, ...), and still every session setting
-- gives the same event, on the row path and on the set path
CREATE TYPE set_lean_kind AS ENUM ('card', 'sepa');
CREATE TABLE set_lean (id int PRIMARY KEY, cust text, amt text, st text, f float8, b bytea, iv interval, cur text,
                       k set_lean_kind DEFAULT 'sepa');
SELECT nps_billing.track_payments('set_lean', $$cust || '\'$$, 'id::text', $$st = 'ok'$$, amount => 'amt::numeric',
  currency => 'upper(cur)',
  attributes => $$jsonb_build_object('f', f, 'ft', f::text, 'b', md5(b::text), 'iv', extract(epoch FROM iv), 'k', k, 'kt', k::text)$$,
  name => 'set_lean') > 0 AS tracked;
INSERT INTO set_lean VALUES (1, 'L', '12.5', 'ok', 0.1, '\x01ff', '1 day 02:03:04', 'eur');
INSERT INTO set_lean VALUES (2, 'L', '12.5', 'ok', 0.1, '\x01ff', '1 day 02:03:04', 'eur');
BEGIN;
SET LOCAL extra_float_digits = 3;
SET LOCAL bytea_output = 'escape';
SET LOCAL DateStyle = 'German';
SET LOCAL IntervalStyle = 'sql_standard';
SET LOCAL TimeZone = 'Asia/Tokyo';
SET LOCAL search_path = pg_temp, public;
SET LOCAL lc_numeric = 'C.UTF-8';
INSERT INTO set_lean VALUES (3, 'L', '12.5', 'ok', 0.1, '\x01ff', '1 day 02:03:04', 'eur');
INSERT INTO set_lean SELECT g, 'L', '12.5', 'ok', 0.1, '\x01ff', '1 day 02:03:04', 'eur' FROM generate_series(4, 13) g;
COMMIT;
SELECT count(*) AS events, count(DISTINCT (customer_id, amount, attributes)) AS distinct_events
FROM set_events WHERE name = 'set_lean';
SELECT customer_id, amount, attributes FROM set_events WHERE name = 'set_lean' AND payment_key = '3';
SELECT count(*) AS errors FROM set_errors WHERE name = 'set_lean';
SELECT nps_billing.untrack_payments('set_lean');
DROP TABLE set_lean;
DROP TYPE set_lean_kind;

\set QUIET on
SELECT nps_billing.untrack_payments('set_pay');
DELETE FROM nps_billing.survey WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'set\_%');
DELETE FROM nps_billing.payment_event WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'set\_%');
DELETE FROM nps_billing.capture_error WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'set\_%');
DELETE FROM nps_billing.customer_contact WHERE customer_id ~ '^[CL][0-9]*\\?$';
DELETE FROM nps_billing.payment_source WHERE name LIKE 'set\_%';
DROP VIEW set_events, set_errors;
DROP TABLE set_pay;
\set QUIET off
