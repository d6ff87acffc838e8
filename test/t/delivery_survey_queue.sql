-- The due queue survey_queue: one row per pending or sending survey, visible from send_after
-- (pending) or the lease's end (sending), kept by the triggers on survey whoever writes it; claims
-- and reports then update survey in place (HOT) and leave its indexes alone.
BEGIN;
SELECT plan(36);
SET LOCAL search_path = nps_billing, public;

-- rows of survey whose queue row is missing, superfluous or wrong (the invariant)
CREATE FUNCTION pg_temp.queue_wrong() RETURNS bigint LANGUAGE sql AS $$
  SELECT count(*) FROM nps_billing.survey s
    FULL JOIN nps_billing.survey_queue q ON q.survey_id = s.id
   WHERE q.visible_at IS DISTINCT FROM nps_billing.queue_visible_at(s.status, s.send_after, s.lease_until) $$;
CREATE FUNCTION pg_temp.q(sid bigint) RETURNS timestamptz LANGUAGE sql AS $$
  SELECT visible_at FROM nps_billing.survey_queue WHERE survey_id = sid $$;

CREATE TEMP TABLE sq_pay (id int);
INSERT INTO payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr, max_attempts)
VALUES ('sq', 'sq_pay', 'x', 'y', 'z', 2);
-- every status; 7105 leased until a minute ago, 7106 leased with no end
INSERT INTO survey (id, token, source_id, customer_id, channel, status, send_after, expires_at, lease_owner, lease_until, attempts)
SELECT 7100 + g, 'sq-token-' || g, p.id, 'sq-cust-' || g, 'email',
       (ARRAY['pending', 'pending', 'sending', 'sent', 'sending', 'sending', 'responded', 'expired', 'failed', 'cancelled'])[g],
       now() - interval '1 hour' + g * interval '1 second', now() + interval '1 day',
       CASE WHEN g IN (3, 5, 6) THEN 'w0' END,
       CASE g WHEN 3 THEN now() + interval '1 hour' WHEN 5 THEN now() - interval '1 minute' END,
       CASE WHEN g IN (3, 5, 6) THEN 1 ELSE 0 END
  FROM payment_source p, generate_series(1, 10) g WHERE p.name = 'sq';
SELECT is(pg_temp.queue_wrong(), 0::bigint, 'inserted surveys: the pending and sending ones are queued, visible when claimable');
SELECT results_eq($$SELECT survey_id FROM survey_queue WHERE survey_id BETWEEN 7101 AND 7110 ORDER BY 1$$,
                  ARRAY[7101, 7102, 7103, 7105, 7106]::bigint[], 'exactly the pending and sending surveys have a queue row');
SELECT is(pg_temp.q(7106), 'infinity'::timestamptz, 'a sending survey without lease end is never visible');
SELECT is(pg_temp.q(7103), (SELECT lease_until FROM survey WHERE id = 7103), 'a leased survey is visible when its lease ends');

-- a claim: HOT updates of survey, the queue rows move to the lease's end
CREATE TEMP TABLE hot0 AS SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relid = 'nps_billing.survey'::regclass;
CREATE TEMP TABLE c1 AS SELECT * FROM claim_surveys('w1', 10, '10 minutes');
SELECT results_eq($$SELECT id FROM c1 ORDER BY id$$, ARRAY[7101, 7102, 7105]::bigint[],
                  'the claim takes the due pending surveys and the lapsed lease');
SELECT results_eq($$SELECT x.n_tup_upd - h.n_tup_upd, x.n_tup_hot_upd - h.n_tup_hot_upd
                      FROM pg_stat_xact_user_tables x, hot0 h WHERE x.relid = 'nps_billing.survey'::regclass$$,
                  $$VALUES (3::bigint, 3::bigint)$$, 'the claim updated survey in place (HOT: no index of survey touched)');
SELECT is(pg_temp.q(7101), (SELECT lease_until FROM c1 WHERE id = 7101), 'a claimed survey is visible again when its lease ends');
SELECT is(pg_temp.queue_wrong(), 0::bigint, 'after the claim the queue is right');
SELECT is((SELECT count(*)::int FROM claim_surveys('w2', 10)), 0, 'nothing more to claim: the leases hold');

-- a report: a HOT update too; the survey leaves the queue
DROP TABLE hot0;
CREATE TEMP TABLE hot0 AS SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relid = 'nps_billing.survey'::regclass;
SELECT results_eq($$SELECT survey_id, ok, status FROM mark_sent(ARRAY[7101, 7102]::bigint[], 'w1')$$,
                  $$VALUES (7101::bigint, true, 'sent'::text), (7102, true, 'sent')$$, 'two reported sent');
SELECT results_eq($$SELECT x.n_tup_upd - h.n_tup_upd, x.n_tup_hot_upd - h.n_tup_hot_upd
                      FROM pg_stat_xact_user_tables x, hot0 h WHERE x.relid = 'nps_billing.survey'::regclass$$,
                  $$VALUES (2::bigint, 2::bigint)$$, 'the report updated survey in place (HOT)');
SELECT ok(pg_temp.q(7101) IS NULL AND pg_temp.q(7102) IS NULL, 'sent surveys left the queue');
-- a failure with a retry: visible at the retry; at max_attempts (2): out
SELECT is((SELECT status FROM mark_failed(ARRAY[7105]::bigint[], 'w1', 'smtp 451', '20 minutes')), 'failed',
          'the lapsed lease had its second attempt: failed');
SELECT ok(pg_temp.q(7105) IS NULL, 'a failed survey left the queue');
UPDATE survey SET status = 'pending', attempts = 0, lease_owner = NULL, lease_until = NULL WHERE id = 7105;
SELECT is(pg_temp.q(7105), (SELECT send_after FROM survey WHERE id = 7105), 'put back to pending by hand: queued again');
CREATE TEMP TABLE c2 AS SELECT * FROM claim_surveys('w1', 1);
SELECT is((SELECT status FROM mark_failed(ARRAY[7105]::bigint[], 'w1', 'smtp 451', '20 minutes')), 'pending', 'a retry');
SELECT ok(pg_temp.q(7105) BETWEEN now() + interval '19 minutes' AND now() + interval '21 minutes', 'visible at the retry');

-- a DBA's updates: the lease lapses, send_after moves, the status changes, the id changes
UPDATE survey SET lease_until = now() - interval '1 second' WHERE id = 7103;
SELECT is(pg_temp.q(7103), now() - interval '1 second', 'a lease ended by hand: visible at once');
SELECT results_eq($$SELECT id, attempts FROM claim_surveys('w3', 10)$$, $$VALUES (7103::bigint, 2)$$, 'and claimed again');
UPDATE survey SET send_after = now() - interval '3 hours' WHERE id = 7105;
SELECT is(pg_temp.q(7105), now() - interval '3 hours', 'send_after moved: the queue row follows');
UPDATE survey SET status = 'cancelled' WHERE id = 7105;
SELECT ok(pg_temp.q(7105) IS NULL, 'cancelled: out of the queue');
UPDATE survey SET status = 'pending' WHERE id = 7110;
UPDATE survey SET id = 7199 WHERE id = 7110;
SELECT ok(pg_temp.q(7110) IS NULL AND pg_temp.q(7199) = (SELECT send_after FROM survey WHERE id = 7199),
          'a survey whose id changed is queued under its new id');
-- an opt-out cancels; an answer takes a sent survey with a reminder out; a delete takes it out
CREATE TEMP TABLE oo AS SELECT opt_out('sq-cust-2') AS a, opt_out('sq-cust-10') AS b;
SELECT ok(pg_temp.q(7199) IS NULL, 'opted out: the pending survey is cancelled and out of the queue');
SELECT is(pg_temp.queue_wrong(), 0::bigint, 'after the DBA''s updates the queue is right');
DELETE FROM survey WHERE id = 7106;
SELECT ok(pg_temp.q(7106) IS NULL, 'a deleted survey leaves the queue');
-- reminders: a sent survey with reminders left is queued for the reminder
UPDATE payment_source SET reminders = 1, reminder_after = '2 days' WHERE name = 'sq';
INSERT INTO survey (id, token, source_id, customer_id, channel, send_after, expires_at)
SELECT 7120, 'sq-token-20', p.id, 'sq-cust-20', 'email', now() - interval '1 minute', now() + interval '10 days'
  FROM payment_source p WHERE p.name = 'sq';
CREATE TEMP TABLE c3 AS SELECT * FROM claim_surveys('w1', 1);
SELECT results_eq($$SELECT status FROM mark_sent(ARRAY[7120]::bigint[], 'w1')$$, ARRAY['pending'], 'sent, a reminder left');
SELECT ok(pg_temp.q(7120) BETWEEN now() + interval '47 hours' AND now() + interval '49 hours',
          'the reminder is queued, visible when it is due');

-- claim_messages: the reminder number; a survey whose template has links its source has no
-- answer_base_url for is reported failed (retried in an hour), the others of the call go out
INSERT INTO payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr, answer_base_url)
VALUES ('sqb', 'sq_pay', 'x', 'y', 'z', 'https://nps.example.com');
INSERT INTO survey (id, token, source_id, customer_id, channel, send_after, expires_at, recipient)
SELECT 7130 + g, 'sq-token-3' || g, p.id, 'sq-cust-3' || g, 'email', now() - interval '1 minute' + g * interval '1 second',
       now() + interval '10 days', 'm' || g || '@example.com'
  FROM payment_source p, generate_series(0, 1) g WHERE p.name = CASE WHEN g = 0 THEN 'sq' ELSE 'sqb' END;
CREATE TEMP TABLE m1 AS SELECT * FROM claim_messages('wm', 10);
SELECT results_eq($$SELECT id, reminder, body_text LIKE '%https://nps.example.com/sq-token-31/10%' FROM m1$$,
                  $$VALUES (7131::bigint, 0, true)$$, 'claim_messages returns the renderable survey, with its reminder number');
SELECT results_eq($$SELECT status, attempts, lease_owner, split_part(last_error, ':', 1), send_after > now() + interval '59 minutes'
                      FROM survey WHERE id = 7130$$,
                  $$VALUES ('pending'::text, 1, NULL::text, 'no_answer_base_url'::text, true)$$,
                  'the survey of the source without answer_base_url is reported failed, retried in an hour');
SELECT is(pg_temp.queue_wrong(), 0::bigint, 'the queue is right at the end');

-- rebuild_survey_queue(): the queue made right again after the triggers were bypassed
INSERT INTO survey (id, token, source_id, customer_id, channel, send_after, expires_at)
SELECT 7141, 'sq-token-41', p.id, 'sq-cust-41', 'email', now() - interval '1 minute', now() + interval '1 day'
  FROM payment_source p WHERE p.name = 'sq';
SELECT is(rebuild_survey_queue(), 0::bigint, 'rebuild_survey_queue changes nothing in a right queue');
SET LOCAL session_replication_role = replica;  -- (as pg_restore --disable-triggers loads rows)
INSERT INTO survey (id, token, source_id, customer_id, channel, send_after, expires_at)
SELECT 7140, 'sq-token-40', p.id, 'sq-cust-40', 'email', now() - interval '1 minute', now() + interval '1 day'
  FROM payment_source p WHERE p.name = 'sq';
UPDATE survey SET status = 'cancelled' WHERE id = 7141;
UPDATE survey SET send_after = now() - interval '2 minutes' WHERE id = 7120;
RESET session_replication_role;
SELECT is(pg_temp.queue_wrong(), 3::bigint, 'with the triggers bypassed: one survey missing, one superfluous, one moved');
SELECT is(rebuild_survey_queue(), 4::bigint, 'rebuild_survey_queue adds one row, removes one, moves one (out and in)');
SELECT is(pg_temp.queue_wrong(), 0::bigint, 'and the queue is right again');
SELECT results_eq($$SELECT id FROM claim_surveys('w9', 10) WHERE id IN (7140, 7120, 7141) ORDER BY id$$,
                  ARRAY[7120, 7140]::bigint[], 'the surveys it queued are claimed, the cancelled one is not');
CREATE ROLE regress_sq_plain;
GRANT USAGE ON SCHEMA nps_billing TO regress_sq_plain;
SET LOCAL ROLE regress_sq_plain;
SELECT throws_ok($$SELECT nps_billing.rebuild_survey_queue()$$, '42501', NULL, 'a role without a grant may not call it');
RESET ROLE;
SELECT * FROM finish();
ROLLBACK;
