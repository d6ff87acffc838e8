-- record_response: answers by token, replacement, which statuses accept answers, errors.
BEGIN;
SELECT plan(36);
SET LOCAL search_path = nps_billing, public;

CREATE TEMP TABLE dr_pay (id int);
INSERT INTO payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES ('dr', 'dr_pay', 'x', 'y', 'z');
INSERT INTO survey (token, source_id, customer_id, channel, status, send_after, expires_at)
SELECT 'dr-tok-' || st, p.id, 'dr-cust-' || st, 'sms', st, now() - interval '1 day', now() + interval '1 day'
  FROM payment_source p, unnest(ARRAY['pending', 'sending', 'sent', 'failed', 'expired', 'cancelled']) st
 WHERE p.name = 'dr';
INSERT INTO survey (token, source_id, customer_id, channel, status, send_after, expires_at)
SELECT 'dr-tok-overdue', p.id, 'dr-cust-overdue', 'email', 'sent', now() - interval '20 days', now() - interval '1 hour'
  FROM payment_source p WHERE p.name = 'dr';
UPDATE survey SET created_at = now() - interval '20 days' WHERE token = 'dr-tok-overdue';

-- a first answer
SELECT ok(record_response('dr-tok-sent', 9, 'clear invoice') > 0, 'record_response returns the response id');
SELECT results_eq($$SELECT r.customer_id, r.score::int, r.category::text, r.comment, r.channel, r.updated_at IS NULL, s.status
                      FROM response r JOIN survey s ON s.id = r.survey_id WHERE s.token = 'dr-tok-sent'$$,
  $$VALUES ('dr-cust-sent'::text, 9, 'promoter'::text, 'clear invoice'::text, 'sms'::text, true, 'responded'::text)$$,
  'the answer is stored with the survey''s customer and channel, category generated, survey responded');
-- a second answer replaces the first: same row, updated_at set
SELECT is(record_response('dr-tok-sent', 4, 'changed my mind', now() + interval '1 minute'),
          (SELECT r.id FROM response r JOIN survey s ON s.id = r.survey_id WHERE s.token = 'dr-tok-sent'),
          'a second answer keeps the same response id');
SELECT results_eq($$SELECT count(*)::int, max(score)::int, max(category::text), max(comment), bool_and(updated_at IS NOT NULL)
                      FROM response r JOIN survey s ON s.id = r.survey_id WHERE s.token = 'dr-tok-sent'$$,
  $$VALUES (1, 4, 'detractor'::text, 'changed my mind'::text, true)$$, 'one row, latest answer kept, updated_at set');
SELECT is(record_response('dr-tok-sent', 8), (SELECT r.id FROM response r JOIN survey s ON s.id = r.survey_id WHERE s.token = 'dr-tok-sent'),
          'a third answer without comment ...');
SELECT is((SELECT comment FROM response r JOIN survey s ON s.id = r.survey_id WHERE s.token = 'dr-tok-sent'), NULL,
          '... replaces the comment too (the latest answer is the answer)');

-- statuses that accept an answer: never drop an answer that arrives before mark_sent
SELECT lives_ok($$SELECT record_response('dr-tok-pending', 10)$$, 'a pending survey (answered before it was sent) accepts an answer');
SELECT lives_ok($$SELECT record_response('dr-tok-sending', 0)$$, 'a sending survey accepts an answer');
SELECT lives_ok($$SELECT record_response('dr-tok-failed', 7)$$, 'a failed survey (the message got through anyway) accepts an answer');
SELECT results_eq($$SELECT token, status FROM survey WHERE token IN ('dr-tok-pending', 'dr-tok-sending', 'dr-tok-failed') ORDER BY token$$,
  $$VALUES ('dr-tok-failed'::text, 'responded'::text), ('dr-tok-pending', 'responded'), ('dr-tok-sending', 'responded')$$,
  'each became responded');

-- errors
SELECT throws_ok($$SELECT record_response('dr-tok-expired', 9)$$, '22023', NULL, 'expired survey: 22023');
SELECT throws_ok($$SELECT record_response('dr-tok-cancelled', 9)$$, '22023', NULL, 'cancelled survey: 22023');
SELECT throws_ok($$SELECT record_response('dr-tok-overdue', 9)$$, '22023', NULL,
                 'a survey past expires_at that expire_surveys has not closed yet: 22023');
SELECT lives_ok($$SELECT record_response('dr-tok-overdue', 9, NULL, now() - interval '2 hours')$$,
                'an answer given before expires_at and delivered late (SMS webhook) is accepted');
SELECT throws_ok($$SELECT record_response('no-such-token', 9)$$, 'P0002', 'record_response: no survey has this token',
                 'unknown token: P0002, the token is not echoed');
SELECT throws_ok($$SELECT record_response('dr-tok-sent', 11)$$, '22003', 'NPS score 11 is out of range 0..10', 'score 11: 22003');
SELECT throws_ok($$SELECT record_response('dr-tok-sent', -1)$$, '22003', 'NPS score -1 is out of range 0..10', 'score -1: 22003');
SELECT throws_ok($$SELECT record_response(NULL, 9)$$, '22004', 'record_response: token must not be NULL', 'NULL token: 22004');
SELECT throws_ok($$SELECT record_response('dr-tok-sent', NULL)$$, '22004', 'record_response: score must not be NULL', 'NULL score: 22004');
SELECT throws_ok($$SELECT record_response('dr-tok-sent', 9, NULL, NULL)$$, '22004', NULL, 'NULL responded_at: 22004');
SELECT throws_ok($$SELECT record_response('dr-tok-sent', 9, NULL, 'infinity')$$, '22023', NULL, 'infinite responded_at: 22023');
SELECT throws_ok($$SELECT record_response('dr-tok-sent', 9, repeat('x', 10001))$$, '22001', NULL, 'a comment over 10000 characters: 22001');
SELECT throws_ok($$SELECT record_response('dr-tok-sent', 2147483647)$$, '22003', NULL, 'huge score: 22003');
SELECT throws_ok($$SELECT record_response(repeat('t', 1000000), 9)$$, 'P0002', 'record_response: no survey has this token', 'a 1 MB token: P0002, not echoed');
-- responded_at: not before the survey was created, not in the future (5 minutes of clock skew either way)
SELECT throws_ok($$SELECT record_response('dr-tok-sent', 9, NULL, now() - interval '1 hour')$$, '22023',
                 format('record_response: responded_at %s is before survey %s was created', now() - interval '1 hour',
                        (SELECT id FROM survey WHERE token = 'dr-tok-sent')),
                 'an answer dated before its survey existed: 22023');
SELECT throws_ok($$SELECT record_response('dr-tok-sent', 9, NULL, '2001-01-01')$$, '22023', NULL, 'an answer dated years before: 22023');
SELECT throws_ok($$SELECT record_response('dr-tok-sent', 9, NULL, now() + interval '1 day')$$, '22023',
                 format('record_response: responded_at %s is in the future (more than 5 minutes after now())', now() + interval '1 day'),
                 'an answer dated tomorrow: 22023');
SELECT throws_ok($$SELECT record_response('dr-tok-sent', 9, NULL, now() + interval '5 minutes 1 second')$$, '22023', NULL,
                 'just beyond the 5-minute skew: 22023');
SELECT throws_ok($$SELECT record_response('no-such-token', 9, NULL, now() + interval '1 year')$$, '22023', NULL,
                 'a future time is refused before the token is looked up');
SELECT lives_ok($$SELECT record_response('dr-tok-sent', 8, NULL, now() + interval '4 minutes')$$, 'within the skew after now: accepted');
SELECT lives_ok($$SELECT record_response('dr-tok-sent', 8, NULL, now() - interval '4 minutes')$$,
                'within the skew before the survey was created: accepted');
SELECT is((SELECT score::int FROM response r JOIN survey s ON s.id = r.survey_id WHERE s.token = 'dr-tok-sent'), 8,
          'failed calls changed nothing');
SELECT lives_ok($$INSERT INTO response (customer_id, score, channel, responded_at) VALUES ('dr-hist', 9, 'email', '2001-01-01')$$,
                'historical answers still load straight into response (the COPY path), whatever their date');

-- a responded survey that is then claimed and sent keeps 'responded' (the answer is not lost)
UPDATE survey SET status = 'sending', lease_owner = 'w', lease_role = to_regrole(quote_ident(session_user)), lease_until = now() + interval '1 minute' WHERE token = 'dr-tok-pending';
SELECT lives_ok($$SELECT record_response('dr-tok-pending', 9)$$, 'answered while its sender still holds the lease');
SELECT lives_ok($$SELECT mark_sent((SELECT id FROM survey WHERE token = 'dr-tok-pending'), 'w')$$, '... the sender reports it sent');
SELECT results_eq($$SELECT status, sent_at IS NOT NULL, lease_owner FROM survey WHERE token = 'dr-tok-pending'$$,
  $$VALUES ('responded'::text, true, NULL::text)$$, 'status stays responded, sent_at recorded, lease released');
SELECT * FROM finish();
ROLLBACK;
