-- Nothing about surveys makes a payment fail: a row whose expressions raise is recorded in
-- capture_error (source, payment key when it can be computed, message, SQLSTATE) and the payment
-- commits; only on_error => 'raise' makes the write fail.
CREATE TABLE cap_err_pay (id int PRIMARY KEY, cust text, amt text, st text);
SELECT nps_billing.track_payments('cap_err_pay', 'cust', 'id::text', $$st = 'ok'$$, amount => 'amt::numeric',
                                  name => 'err_pay') > 0 AS tracked;
CREATE VIEW cap_err_events AS
  SELECT e.payment_key, e.customer_id, e.amount, e.survey_id IS NOT NULL AS surveyed, e.skip_reason
  FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id WHERE s.name = 'err_pay';
CREATE VIEW cap_err_errors AS
  SELECT c.payment_key, c.customer_id, c.sqlstate, c.error
  FROM nps_billing.capture_error c JOIN nps_billing.payment_source s ON s.id = c.source_id WHERE s.name = 'err_pay';

-- row path: a bad cast, a NULL customer (not an error: no_customer), a pending bad row (ignored)
INSERT INTO cap_err_pay VALUES (1, 'E1', '12.50', 'ok');
INSERT INTO cap_err_pay VALUES (2, 'E2', 'twelve', 'ok');
INSERT INTO cap_err_pay VALUES (3, NULL, '1', 'ok');
INSERT INTO cap_err_pay VALUES (4, 'E4', 'bad', 'pending');
SELECT id FROM cap_err_pay ORDER BY id;
SELECT * FROM cap_err_events ORDER BY payment_key;
SELECT * FROM cap_err_errors ORDER BY payment_key;

-- set path: 20 rows in one statement, 2 bad: the statement is redone row by row, only the bad rows
-- land in capture_error, the 18 others are captured
INSERT INTO cap_err_pay SELECT g, 'E' || g, CASE WHEN g IN (13, 17) THEN 'n/a' ELSE g::text END, 'ok'
FROM generate_series(10, 29) g;
SELECT count(*) AS events, count(*) FILTER (WHERE surveyed) AS surveyed FROM cap_err_events WHERE payment_key::int BETWEEN 10 AND 29;
SELECT * FROM cap_err_errors WHERE payment_key::int BETWEEN 10 AND 29 ORDER BY payment_key;
SELECT count(*) AS committed FROM cap_err_pay WHERE id BETWEEN 10 AND 29;

-- a NULL payment key cannot be recorded as an event: capture_error 22004, on both paths
CREATE TABLE cap_err_keys (k text, cust text);
SELECT nps_billing.track_payments('cap_err_keys', 'cust', 'k', 'true', name => 'err_keys') > 0 AS tracked;
INSERT INTO cap_err_keys VALUES (NULL, 'K1');
INSERT INTO cap_err_keys SELECT CASE WHEN g = 5 THEN NULL ELSE 'k' || g END, 'K' || g FROM generate_series(1, 12) g;
SELECT c.payment_key, c.sqlstate, c.error FROM nps_billing.capture_error c
JOIN nps_billing.payment_source s ON s.id = c.source_id WHERE s.name = 'err_keys';
SELECT count(*) AS events FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
WHERE s.name = 'err_keys';

-- a failed subtransaction inside the caller's own transaction leaves it usable
BEGIN;
INSERT INTO cap_err_pay VALUES (40, 'E40', 'oops', 'ok');
INSERT INTO cap_err_pay VALUES (41, 'E41', '41', 'ok');
COMMIT;
SELECT payment_key, skip_reason FROM cap_err_events WHERE payment_key IN ('40', '41');
SELECT payment_key, sqlstate FROM cap_err_errors WHERE payment_key IN ('40', '41');

-- on_error => 'raise': the payment write fails with the expression's error
CREATE TABLE cap_err_strict (id int PRIMARY KEY, cust text, amt text);
SELECT nps_billing.track_payments('cap_err_strict', 'cust', 'id::text', 'true', amount => 'amt::numeric',
                                  name => 'err_strict', on_error => 'raise') > 0 AS tracked;
INSERT INTO cap_err_strict VALUES (1, 'R1', 'x');
INSERT INTO cap_err_strict SELECT g, 'R' || g, CASE WHEN g = 7 THEN 'x' ELSE '1' END FROM generate_series(1, 20) g;
INSERT INTO cap_err_strict VALUES (2, 'R2', '2');
SELECT id FROM cap_err_strict;
SELECT e.payment_key FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
WHERE s.name = 'err_strict';

-- a role with only INSERT and UPDATE on the payments table (and SELECT of the id its UPDATE filters on) writes tracked payments; it has no
-- access to nps_billing (no grant is needed) and cannot read surveys
CREATE ROLE regress_cap_billing;
GRANT INSERT, UPDATE (st), SELECT (id) ON cap_err_pay TO regress_cap_billing;  -- SELECT (id): the WHERE of its UPDATE
CREATE TABLE cap_err_insonly (id int, cust text);
GRANT INSERT ON cap_err_insonly TO regress_cap_billing;  -- INSERT alone is enough
SELECT nps_billing.track_payments('cap_err_insonly', 'cust', 'id::text', 'true', name => 'err_insonly') > 0 AS tracked;
SET ROLE regress_cap_billing;
INSERT INTO cap_err_pay VALUES (50, 'E50', '50', 'pending');
UPDATE cap_err_pay SET st = 'ok' WHERE id = 50;
INSERT INTO cap_err_insonly VALUES (1, 'E51'), (2, 'E52');
SELECT count(*) FROM nps_billing.survey;
SELECT count(*) FROM nps_billing.payment_event;
SELECT nps_billing.track_payments('cap_err_pay', 'cust', 'id::text', 'true', name => 'err_hijack');
RESET ROLE;
SELECT * FROM cap_err_events WHERE payment_key = '50';
SELECT e.payment_key, e.customer_id FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
WHERE s.name = 'err_insonly' ORDER BY 1;
-- expressions run with the table owner's rights, on the row path without SPI too: a function
-- the writer may not execute still computes the amount of the writer's payment
CREATE FUNCTION cap_err_secret(int) RETURNS numeric LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 2';
REVOKE EXECUTE ON FUNCTION cap_err_secret(int) FROM PUBLIC;
CREATE TABLE cap_err_fn (id int, cust text);
GRANT INSERT ON cap_err_fn TO regress_cap_billing;
SELECT nps_billing.track_payments('cap_err_fn', 'cust', 'id::text', 'true', amount => 'cap_err_secret(id)',
                                  name => 'err_fn') > 0 AS tracked;
INSERT INTO cap_err_fn VALUES (1, 'F1');
SET ROLE regress_cap_billing;
INSERT INTO cap_err_fn VALUES (2, 'F2');
RESET ROLE;
INSERT INTO cap_err_fn VALUES (3, 'F3');
SELECT e.payment_key, e.amount FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
WHERE s.name = 'err_fn' ORDER BY 1;
SELECT c.payment_key, c.sqlstate, c.error FROM nps_billing.capture_error c JOIN nps_billing.payment_source s ON s.id = c.source_id
WHERE s.name = 'err_fn';

\set QUIET on
SELECT nps_billing.untrack_payments(t) FROM unnest('{cap_err_pay,cap_err_keys,cap_err_strict,cap_err_fn,cap_err_insonly}'::regclass[]) t;
DELETE FROM nps_billing.survey WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'err\_%');
DELETE FROM nps_billing.payment_event WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'err\_%');
DELETE FROM nps_billing.capture_error WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'err\_%');
DELETE FROM nps_billing.customer_contact WHERE customer_id ~ '^[EKRF][0-9]+$';
DELETE FROM nps_billing.payment_source WHERE name LIKE 'err\_%';
DROP VIEW cap_err_events, cap_err_errors;
DROP TABLE cap_err_pay, cap_err_keys, cap_err_strict, cap_err_fn, cap_err_insonly;
DROP FUNCTION cap_err_secret(int);
DROP ROLE regress_cap_billing;
\set QUIET off
