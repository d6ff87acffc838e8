-- The survey queue: claim_surveys / mark_sent / mark_failed / expire_surveys, their errors.
BEGIN;
SELECT plan(53);
SET LOCAL search_path = nps_billing, public;

CREATE TEMP TABLE dq_pay (id int);
INSERT INTO payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr, max_attempts)
VALUES ('dq', 'dq_pay', 'x', 'y', 'z', 3);
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT p.id, 'dq-' || g, 'succeeded', 'dq-cust-' || g, 10 * g, 'EUR', now() - interval '2 hours',
       jsonb_build_object('plan', 'pro', 'method', 'card')
  FROM payment_source p, generate_series(1, 6) g WHERE p.name = 'dq';
-- 1..4 due, 5 not yet due, 6 already past its expiry
INSERT INTO survey (token, source_id, event_id, customer_id, channel, send_after, expires_at)
SELECT 'dq-token-' || e.payment_key, e.source_id, e.id, e.customer_id, 'email',
       CASE WHEN e.payment_key = 'dq-5' THEN now() + interval '1 hour' ELSE now() - interval '1 hour' + (e.amount || ' seconds')::interval END,
       CASE WHEN e.payment_key = 'dq-6' THEN now() - interval '1 minute' ELSE now() + interval '14 days' END
  FROM payment_event e JOIN payment_source p ON p.id = e.source_id WHERE p.name = 'dq';
CREATE TEMP TABLE ids AS
  SELECT s.customer_id AS c, s.id FROM survey s WHERE s.customer_id LIKE 'dq-cust-%';
CREATE FUNCTION pg_temp.sid(n int) RETURNS bigint LANGUAGE sql AS $$ SELECT id FROM ids WHERE c = 'dq-cust-' || n $$;

-- claim
CREATE TEMP TABLE c1 AS SELECT * FROM claim_surveys('w1', 2);
SELECT is((SELECT array_agg(customer_id ORDER BY id) FROM c1), ARRAY['dq-cust-1', 'dq-cust-2'],
          'claim_surveys returns the oldest due surveys first, up to max');
SELECT is((SELECT row(source, kind, amount, currency, attributes->>'plan', attempts, channel)::text FROM c1 WHERE customer_id = 'dq-cust-1'),
          '(dq,succeeded,10,EUR,pro,1,email)', 'a claimed survey carries its payment context and attempt number');
SELECT ok((SELECT bool_and(token LIKE 'dq-token-%' AND lease_until > now() + interval '4 minutes') FROM c1),
          'token and a 5-minute default lease are returned');
SELECT results_eq($$SELECT status, lease_owner, attempts FROM survey WHERE id = pg_temp.sid(1)$$,
                  $$VALUES ('sending'::text, 'w1'::text, 1)$$, 'the claimed survey is sending, leased to w1');
CREATE TEMP TABLE c2 AS SELECT * FROM claim_surveys('w2', 10, '1 minute');
SELECT is((SELECT array_agg(customer_id ORDER BY id) FROM c2), ARRAY['dq-cust-3', 'dq-cust-4'],
          'a second worker gets only the rest: not the leased ones, not the undue one, not the expired one');
SELECT is((SELECT count(*)::int FROM claim_surveys('w3')), 0, 'nothing left to claim');

-- mark_sent
SELECT lives_ok($$SELECT mark_sent(pg_temp.sid(1), 'w1')$$, 'the lease owner marks its survey sent');
SELECT results_eq($$SELECT status, sent_at IS NOT NULL, lease_owner FROM survey WHERE id = pg_temp.sid(1)$$,
                  $$VALUES ('sent'::text, true, NULL::text)$$, 'sent, sent_at set, lease released');
SELECT throws_ok($$SELECT mark_sent(pg_temp.sid(1), 'w1')$$, '55000', NULL, 'marking a sent survey again fails with 55000');
SELECT throws_ok($$SELECT mark_sent(pg_temp.sid(2), 'w2')$$, '55000', NULL, 'another worker cannot mark a survey it does not hold');
SELECT throws_ok($$SELECT mark_sent(pg_temp.sid(5), 'w1')$$, '55000', NULL, 'a pending (unclaimed) survey cannot be marked sent');
SELECT throws_ok($$SELECT mark_sent(-1, 'w1')$$, '55000', 'mark_sent: survey -1 is not leased by worker "w1"', 'unknown survey id: the same 55000 (nothing revealed)');
SELECT throws_ok($$SELECT mark_sent(NULL::bigint, 'w1')$$, '22004', 'mark_sent: survey_id must not be NULL', 'NULL survey id: 22004');
SELECT throws_ok($$SELECT mark_sent(pg_temp.sid(2), NULL)$$, '22004', 'mark_sent: worker must not be NULL', 'NULL worker: 22004');

-- lapsed lease: re-claimed by another worker, the old owner is refused
UPDATE survey SET lease_until = now() - interval '1 second' WHERE id = pg_temp.sid(2);
SELECT is((SELECT array_agg(customer_id) FROM claim_surveys('w9')), ARRAY['dq-cust-2'], 'a lapsed lease is claimed again');
SELECT results_eq($$SELECT lease_owner, attempts FROM survey WHERE id = pg_temp.sid(2)$$,
                  $$VALUES ('w9'::text, 2)$$, 'new owner, attempts counted');
SELECT throws_ok($$SELECT mark_sent(pg_temp.sid(2), 'w1')$$, '55000', format('mark_sent: survey %s is not leased by worker "w1"', pg_temp.sid(2)),
                 'the old owner''s mark_sent is refused after a re-claim');
-- a lapsed lease nobody re-claimed: the owner may still report (the message most likely went out)
UPDATE survey SET lease_until = now() - interval '1 second' WHERE id = pg_temp.sid(3);
SELECT lives_ok($$SELECT mark_sent(pg_temp.sid(3), 'w2')$$, 'owner of a lapsed but untaken lease may still mark it sent');

-- mark_failed: retries then failed after max_attempts (3 for this source)
SELECT is(mark_failed(pg_temp.sid(2), 'w9', 'smtp 451', '10 minutes'), 'pending', 'mark_failed below max_attempts: back to pending');
SELECT results_eq($$SELECT status, last_error, lease_owner, send_after > now() + interval '9 minutes' FROM survey WHERE id = pg_temp.sid(2)$$,
                  $$VALUES ('pending'::text, 'smtp 451'::text, NULL::text, true)$$, 'retry later, error kept, lease released');
SELECT is((SELECT count(*)::int FROM claim_surveys('w1')), 0, 'a survey waiting for its retry is not due');
UPDATE survey SET send_after = now() - interval '1 second' WHERE id = pg_temp.sid(2);
SELECT is((SELECT attempts FROM claim_surveys('w1')), 3, 'third attempt claimed after the retry delay');
SELECT is(mark_failed(pg_temp.sid(2), 'w1', 'smtp 550 mailbox unavailable'), 'failed', 'at max_attempts mark_failed gives failed');
SELECT is((SELECT status FROM survey WHERE id = pg_temp.sid(2)), 'failed', 'survey is failed');
SELECT throws_ok($$SELECT mark_failed(pg_temp.sid(2), 'w1', 'x')$$, '55000', NULL, 'a failed survey cannot be failed again');
SELECT throws_ok($$SELECT mark_failed(pg_temp.sid(4), 'w1', 'x')$$, '55000', NULL, 'mark_failed by a worker not holding the lease: 55000');
SELECT throws_ok($$SELECT mark_failed(-1, 'w2', 'x')$$, '55000', NULL, 'mark_failed unknown id: the same 55000');
SELECT throws_ok($$SELECT mark_failed(NULL::bigint, 'w2', 'x')$$, '22004', NULL, 'mark_failed NULL id: 22004');
SELECT throws_ok($$SELECT mark_failed(pg_temp.sid(4), NULL, 'x')$$, '22004', NULL, 'mark_failed NULL worker: 22004');
SELECT throws_ok($$SELECT mark_failed(pg_temp.sid(4), 'w2', NULL)$$, '22004', 'mark_failed: error must not be NULL', 'mark_failed NULL error: 22004');
SELECT throws_ok($$SELECT mark_failed(pg_temp.sid(4), 'w2', 'x', NULL)$$, '22004', NULL, 'mark_failed NULL retry_after: 22004');
SELECT throws_ok($$SELECT mark_failed(pg_temp.sid(4), 'w2', 'x', '-1 minute')$$, '22023', 'mark_failed: retry_after -00:01:00 is out of range [0, 1 year] or has a negative part', 'negative retry_after: 22023');
SELECT is(mark_failed(pg_temp.sid(4), 'w2', repeat('e', 5000), '0'), 'pending', 'a huge error text is accepted ...');
SELECT is((SELECT length(last_error) FROM survey WHERE id = pg_temp.sid(4)), 2000, '... and kept to 2000 characters');

-- claim_surveys bad inputs
SELECT throws_ok($$SELECT * FROM claim_surveys(NULL)$$, '22004', 'claim_surveys: worker must not be NULL', 'NULL worker: 22004');
SELECT throws_ok($$SELECT * FROM claim_surveys('w', NULL)$$, '22004', 'claim_surveys: max must not be NULL', 'NULL max: 22004');
SELECT throws_ok($$SELECT * FROM claim_surveys('w', 10, NULL)$$, '22004', 'claim_surveys: lease must not be NULL', 'NULL lease: 22004');
SELECT throws_ok($$SELECT * FROM claim_surveys('w', 0)$$, '22023', 'claim_surveys: max 0 is out of range 1..10000', 'max 0: 22023');
SELECT throws_ok($$SELECT * FROM claim_surveys('w', -5)$$, '22023', NULL, 'negative max: 22023');
SELECT throws_ok($$SELECT * FROM claim_surveys('w', 10001)$$, '22023', NULL, 'huge max: 22023');
SELECT throws_ok($$SELECT * FROM claim_surveys('w', 10, '0')$$, '22023', NULL, 'zero lease: 22023');
SELECT throws_ok($$SELECT * FROM claim_surveys('w', 10, '2 days')$$, '22023', NULL, 'lease over a day: 22023');
SELECT throws_ok($$SELECT * FROM claim_surveys('', 10)$$, '22023', NULL, 'empty worker name: 22023');
SELECT throws_ok($$SELECT * FROM claim_surveys(repeat('w', 201), 10)$$, '22023', NULL, 'worker name over 200 characters: 22023');

-- a lease that lapsed max_attempts times is not claimed again; expire_surveys closes it as failed
SELECT is((SELECT count(*)::int FROM claim_surveys('w1')), 1, 'claim the retried survey 4 (attempt 2)');
UPDATE survey SET lease_until = now() - interval '1 second' WHERE id = pg_temp.sid(4);
SELECT is((SELECT attempts FROM claim_surveys('w1')), 3, 'lapsed lease re-claimed: attempt 3 of 3');
UPDATE survey SET lease_until = now() - interval '1 second' WHERE id = pg_temp.sid(4);
SELECT is((SELECT count(*)::int FROM claim_surveys('w1')), 0, 'a lease that lapsed at max_attempts is not claimed again');

-- expire_surveys: overdue pending/sending -> expired; exhausted lapsed lease -> failed
SELECT is(expire_surveys(), 2, 'expire_surveys closes the overdue survey and the exhausted lease');
SELECT results_eq($$SELECT c, status FROM ids JOIN survey USING (id) ORDER BY c$$,
  $$VALUES ('dq-cust-1'::text, 'sent'::text), ('dq-cust-2', 'failed'), ('dq-cust-3', 'sent'),
           ('dq-cust-4', 'failed'), ('dq-cust-5', 'pending'), ('dq-cust-6', 'expired')$$,
  'final states');
SELECT is((SELECT last_error FROM survey WHERE id = pg_temp.sid(4)), repeat('e', 2000), 'a failed survey keeps its last reported error');
SELECT is(expire_surveys(), 0, 'expire_surveys is idempotent');
-- a sent survey nobody answered expires too, keeping its sent_at; failed and responded stay
UPDATE survey SET expires_at = now() - interval '1 second' WHERE id IN (pg_temp.sid(1), pg_temp.sid(2));
SELECT is(expire_surveys(), 1, 'an overdue sent survey expires (a failed one does not)');
SELECT results_eq($$SELECT status, sent_at IS NOT NULL FROM survey WHERE id = pg_temp.sid(1)$$,
                  $$VALUES ('expired'::text, true)$$, 'expired, sent_at kept: it was delivered but not answered');
SELECT * FROM finish();
ROLLBACK;
