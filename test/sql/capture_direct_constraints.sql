-- The direct row path (single-row writes: the event inserted without the planner) meets the
-- constraints a DBA added to payment_event: the failure is the constraint's own error, recorded
-- in capture_error, and the payment commits. (On PostgreSQL 16+ the direct insert's range table
-- needs its permission info, or a failing constraint raises "invalid perminfoindex" instead.)
-- All in one transaction, rolled back: the DBA's changes to payment_event reach no other test.
BEGIN;
CREATE TABLE cap_direct_pay (id int PRIMARY KEY, cust text, amt numeric, st text);
SELECT nps_billing.track_payments('cap_direct_pay', 'cust', 'id::text', $$st = 'ok'$$, amount => 'amt',
                                  name => 'direct_pay') > 0 AS tracked;
CREATE VIEW cap_direct_errors AS
  SELECT c.payment_key, c.sqlstate, c.error
  FROM nps_billing.capture_error c JOIN nps_billing.payment_source s ON s.id = c.source_id WHERE s.name = 'direct_pay';
CREATE VIEW cap_direct_events AS
  SELECT e.payment_key, e.skip_reason
  FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id WHERE s.name = 'direct_pay';
INSERT INTO cap_direct_pay VALUES (1, 'D1', 10, 'ok');
-- a NOT NULL column without a default
ALTER TABLE nps_billing.payment_event ADD COLUMN region text NOT NULL DEFAULT 'eu';
ALTER TABLE nps_billing.payment_event ALTER COLUMN region DROP DEFAULT;
INSERT INTO cap_direct_pay VALUES (2, 'D2', 20, 'ok');
-- a CHECK constraint
ALTER TABLE nps_billing.payment_event DROP COLUMN region;
ALTER TABLE nps_billing.payment_event ADD CONSTRAINT no_big_amounts CHECK (amount < 100);
INSERT INTO cap_direct_pay VALUES (3, 'D3', 500, 'ok');
INSERT INTO cap_direct_pay VALUES (4, 'D4', 40, 'ok');
ALTER TABLE nps_billing.payment_event DROP CONSTRAINT no_big_amounts;
SELECT id FROM cap_direct_pay ORDER BY id;
SELECT * FROM cap_direct_events ORDER BY payment_key;
SELECT * FROM cap_direct_errors ORDER BY payment_key;
ROLLBACK;
