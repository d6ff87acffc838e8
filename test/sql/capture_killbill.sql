-- Capture on Kill Bill (examples/schemas/killbill.sql, a copy of the contract's examples/killbill.sql).
-- Kill Bill inserts each payment transaction with status UNKNOWN and UPDATEs it to its final
-- status. payment_transactions has no account column: the customer is found with a scalar
-- subquery on payments. Amounts are numeric major units; dates are "datetime" (timestamp, UTC).
\set QUIET on
CREATE SCHEMA killbill;
SET search_path = killbill, public;
SET client_min_messages = warning;
\set ECHO none
\i examples/schemas/killbill.sql
RESET client_min_messages;
\set ECHO all
RESET search_path;
\set QUIET off

SELECT nps_billing.track_payments(
  source         => 'killbill.payment_transactions',
  customer       => '(SELECT account_id FROM payments p WHERE p.id = payment_id)',
  payment_key    => 'id',
  succeeded_when => $$transaction_status = 'SUCCESS' AND transaction_type IN ('PURCHASE', 'CAPTURE')$$,
  failed_when    => $$transaction_status = 'PAYMENT_FAILURE'$$,
  amount         => 'amount',
  currency       => 'currency',
  paid_at        => $$effective_date AT TIME ZONE 'UTC'$$,
  attributes     => $$jsonb_build_object('type', transaction_type, 'plugin',
                       (SELECT pm.plugin_name FROM payments p JOIN payment_methods pm ON pm.id = p.payment_method_id
                        WHERE p.id = payment_id))$$,
  name           => 'killbill',
  recipient      => '(SELECT a.email FROM payments p JOIN accounts a ON a.id = p.account_id WHERE p.id = payment_id)',
  locale         => '(SELECT a.locale FROM payments p JOIN accounts a ON a.id = p.account_id WHERE p.id = payment_id)',
  time_zone      => '(SELECT a.time_zone FROM payments p JOIN accounts a ON a.id = p.account_id WHERE p.id = payment_id)') > 0 AS tracked;

SET search_path = killbill, public;
-- the accounts (Kill Bill locales are written en_US; acc-3 has no e-mail)
INSERT INTO accounts (id, external_key, email, reference_time, time_zone, locale, created_date, created_by)
VALUES ('acc-1', 'acc-1', 'one@example.com', '2024-05-01', 'America/Los_Angeles', 'en_US', '2024-05-01', 'test'),
       ('acc-2', 'acc-2', 'two@example.com', '2024-05-01', 'Europe/Paris', 'fr_FR', '2024-05-01', 'test'),
       ('acc-3', 'acc-3', NULL, '2024-05-01', 'UTC', 'de_DE', '2024-05-01', 'test');
INSERT INTO payment_methods (id, external_key, account_id, plugin_name, created_by, created_date, updated_by, updated_date, account_record_id)
VALUES ('pm-1', 'pm-1', 'acc-1', 'killbill-stripe', 'test', '2024-05-01', 'test', '2024-05-01', 1),
       ('pm-2', 'pm-2', 'acc-2', '__EXTERNAL_PAYMENT__', 'test', '2024-05-01', 'test', '2024-05-01', 2),
       ('pm-3', 'pm-3', 'acc-3', 'killbill-adyen', 'test', '2024-05-01', 'test', '2024-05-01', 3);
INSERT INTO payments (id, account_id, payment_method_id, external_key, state_name, created_by, created_date, updated_by, updated_date, account_record_id)
VALUES ('pay-1', 'acc-1', 'pm-1', 'pay-1', 'PURCHASE_INIT', 'test', '2024-05-02', 'test', '2024-05-02', 1),
       ('pay-2', 'acc-2', 'pm-2', 'pay-2', 'PURCHASE_INIT', 'test', '2024-05-02', 'test', '2024-05-02', 2),
       ('pay-3', 'acc-3', 'pm-3', 'pay-3', 'AUTH_INIT', 'test', '2024-05-02', 'test', '2024-05-02', 3);

PREPARE tx(text, text, text, text, numeric, text) AS
  INSERT INTO payment_transactions (id, transaction_external_key, transaction_type, effective_date, transaction_status,
                                    amount, currency, payment_id, created_by, created_date, updated_by, updated_date,
                                    account_record_id)
  VALUES ($1, $1, $2, timestamp '2024-05-02 12:00' + (substr($1, 4)::int * interval '1 hour'), $3, $5, $6, $4,
          'test', '2024-05-02', 'test', '2024-05-02', 1);
PREPARE settle(text, text) AS
  UPDATE payment_transactions SET transaction_status = $2, updated_date = '2024-05-03' WHERE id = $1;

EXECUTE tx('tx-1', 'PURCHASE', 'UNKNOWN', 'pay-1', 10.5, 'USD');
SELECT count(*) AS events_while_unknown FROM nps_billing.payment_event e
JOIN nps_billing.payment_source s ON s.id = e.source_id WHERE s.name = 'killbill';
EXECUTE settle('tx-1', 'SUCCESS');
EXECUTE tx('tx-2', 'PURCHASE', 'UNKNOWN', 'pay-2', 99, 'EUR');
EXECUTE settle('tx-2', 'PAYMENT_FAILURE');
EXECUTE tx('tx-3', 'PURCHASE', 'UNKNOWN', 'pay-2', 99, 'EUR');   -- the retry
EXECUTE settle('tx-3', 'SUCCESS');
EXECUTE settle('tx-3', 'SUCCESS');                              -- the same status again: nothing new
EXECUTE tx('tx-4', 'AUTHORIZE', 'SUCCESS', 'pay-3', 5, 'USD');  -- an authorization is not a payment here
EXECUTE tx('tx-5', 'CAPTURE', 'UNKNOWN', 'pay-3', 5, 'USD');
EXECUTE settle('tx-5', 'SUCCESS');
EXECUTE tx('tx-6', 'REFUND', 'SUCCESS', 'pay-1', 10.5, 'USD');  -- a refund: no event
EXECUTE tx('tx-7', 'PURCHASE', 'PENDING', 'pay-1', 1, 'USD');   -- stays pending
EXECUTE tx('tx-8', 'PURCHASE', 'SUCCESS', 'pay-404', 7, 'USD'); -- no such payment: no customer

-- a batch of 24 purchases over the three accounts, inserted in one statement, settled in another
INSERT INTO payment_transactions (id, transaction_external_key, transaction_type, effective_date, transaction_status,
                                  amount, currency, payment_id, created_by, created_date, updated_by, updated_date,
                                  account_record_id)
SELECT 'tx-' || (100 + g), 'tx-' || (100 + g), 'PURCHASE', timestamp '2024-06-01' + g * interval '1 day', 'UNKNOWN',
       g, 'USD', 'pay-' || (1 + g % 3), 'test', '2024-06-01', 'test', '2024-06-01', 1
FROM generate_series(1, 24) g;
UPDATE payment_transactions SET transaction_status = CASE WHEN amount::int % 4 = 0 THEN 'PAYMENT_FAILURE' ELSE 'SUCCESS' END
WHERE id ~ '^tx-1[0-9][0-9]$';
RESET search_path;
-- the surveys keep the account's address, locale (en_US -> en-US) and time zone; acc-3's
-- payments are skipped with no_recipient
SELECT v.customer_id, v.recipient, v.locale, v.time_zone
FROM nps_billing.survey v JOIN nps_billing.payment_source s ON s.id = v.source_id
WHERE s.name = 'killbill' ORDER BY v.customer_id;
SELECT e.customer_id, e.skip_reason, count(*) FROM nps_billing.payment_event e
JOIN nps_billing.payment_source s ON s.id = e.source_id
WHERE s.name = 'killbill' AND e.customer_id = 'acc-3' GROUP BY 1, 2 ORDER BY 2;

SELECT e.payment_key, e.kind, e.customer_id, e.amount, e.currency, e.occurred_at, e.attributes,
       e.survey_id IS NOT NULL AS surveyed, e.skip_reason
FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
WHERE s.name = 'killbill' AND e.payment_key ~ '^tx-[0-9]$'
ORDER BY e.payment_key COLLATE "C", e.kind;
SELECT e.customer_id, e.kind, count(*) AS events, sum(e.amount) AS amount,
       count(e.survey_id) AS surveyed, string_agg(DISTINCT e.skip_reason, ',') AS skip_reasons
FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
WHERE s.name = 'killbill' AND e.payment_key ~ '^tx-1[0-9][0-9]$'
GROUP BY 1, 2 ORDER BY 1, 2;
SELECT v.customer_id, e.payment_key, v.status FROM nps_billing.survey v
JOIN nps_billing.payment_event e ON e.id = v.event_id JOIN nps_billing.payment_source s ON s.id = v.source_id
WHERE s.name = 'killbill' ORDER BY v.customer_id;

-- Rights. A billing role with INSERT on payment_transactions only: it needs no grant on
-- nps_billing and cannot read surveys. The expressions run with the rights of the table's owner,
-- not the writer's: the customer subquery reads payments, which the writer may not read.
CREATE ROLE regress_cap_kb_writer;
GRANT USAGE ON SCHEMA killbill TO regress_cap_kb_writer;
GRANT INSERT ON killbill.payment_transactions TO regress_cap_kb_writer;
GRANT USAGE ON SEQUENCE killbill.payment_transactions_record_id_seq TO regress_cap_kb_writer;
SET ROLE regress_cap_kb_writer;
INSERT INTO killbill.payment_transactions (id, transaction_external_key, transaction_type, effective_date, transaction_status,
                                           amount, currency, payment_id, created_by, created_date, updated_by, updated_date, account_record_id)
VALUES ('tx-r1', 'tx-r1', 'PURCHASE', '2024-07-01', 'SUCCESS', 3, 'USD', 'pay-1', 'app', '2024-07-01', 'app', '2024-07-01', 1);
SELECT count(*) FROM nps_billing.survey;
RESET ROLE;
SELECT c.payment_key, c.customer_id, c.sqlstate, c.error FROM nps_billing.capture_error c
JOIN nps_billing.payment_source s ON s.id = c.source_id WHERE s.name = 'killbill';
SELECT count(*) AS committed FROM killbill.payment_transactions WHERE id = 'tx-r1';
SELECT e.payment_key, e.customer_id, e.attributes, e.skip_reason FROM nps_billing.payment_event e
JOIN nps_billing.payment_source s ON s.id = e.source_id WHERE s.name = 'killbill' AND e.payment_key LIKE 'tx-r%';

\set QUIET on
SELECT nps_billing.untrack_payments('killbill.payment_transactions');
DELETE FROM nps_billing.survey WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'killbill');
DELETE FROM nps_billing.customer_contact WHERE customer_id LIKE 'acc-%';
DELETE FROM nps_billing.payment_event WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'killbill');
DELETE FROM nps_billing.capture_error WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'killbill');
DELETE FROM nps_billing.payment_source WHERE name = 'killbill';
DROP SCHEMA killbill CASCADE;
DROP ROLE regress_cap_kb_writer;
\set QUIET off
