-- Send windows, daily caps and reminders: what claim_surveys, mark_sent, mark_failed,
-- expire_surveys, opt_out and record_response do with them; send_backlog, send_funnel and
-- reschedule_surveys. One transaction: now() does not move, "later" is simulated by moving
-- send_after back. Windows are built around now() so the test holds at any time of day.
BEGIN;
SELECT plan(65);
SET LOCAL search_path = nps_billing, public;
SET LOCAL TimeZone = 'UTC';

CREATE TEMP TABLE sp_pay (id int);
INSERT INTO payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr, max_attempts)
VALUES ('sp', 'sp_pay', 'x', 'y', 'z', 2);
CREATE FUNCTION pg_temp.src() RETURNS integer LANGUAGE sql AS $$ SELECT id FROM nps_billing.payment_source WHERE name = 'sp' $$;
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at)
SELECT pg_temp.src(), 'sp-' || g, 'succeeded', 'sp-cust-' || g, 10, 'EUR', now() - interval '2 hours'
  FROM generate_series(1, 12) g;
-- surveys 1..12, due one second apart; 1..3 in Pacific/Kiritimati (UTC+14), 4..6 in
-- Pacific/Pago_Pago (UTC-11: always on an earlier date), the rest without a zone (the source's)
INSERT INTO survey (id, token, source_id, event_id, customer_id, channel, send_after, expires_at, time_zone)
SELECT 7100 + g, 'sp-token-' || g, pg_temp.src(), e.id, e.customer_id, 'email',
       now() - interval '1 hour' + g * interval '1 second', now() + interval '14 days',
       CASE WHEN g <= 3 THEN 'Pacific/Kiritimati' WHEN g <= 6 THEN 'Pacific/Pago_Pago' END
  FROM generate_series(1, 12) g JOIN payment_event e ON e.payment_key = 'sp-' || g;
CREATE FUNCTION pg_temp.dow(z text) RETURNS integer LANGUAGE sql AS $$ SELECT extract(isodow FROM now() AT TIME ZONE z)::int $$;

-- ---- defaults: the always-open window, no cap, no reminders
SELECT results_eq($$SELECT time_zone, send_days, send_from, send_until, reminders, reminder_after, daily_cap
                      FROM payment_source WHERE name = 'sp'$$,
                  $$VALUES (NULL::text, '{1,2,3,4,5,6,7}'::int[], '00:00'::time, '24:00'::time, 0, '3 days'::interval, NULL::int)$$,
                  'defaults: no time zone (UTC), every day 00:00-24:00, no reminders (3 days apart), no cap');
SELECT ok(window_always_open('{7,6,5,4,3,2,1}', '00:00', '24:00') AND NOT window_always_open('{1,2,3,4,5}', '00:00', '24:00')
          AND NOT window_always_open('{1,2,3,4,5,6,7}', '00:00', '23:59'), 'window_always_open: every day, all day');

-- ---- windows: only today's weekday in Kiritimati, all day; Pago Pago is on an earlier date
UPDATE payment_source SET time_zone = 'Pacific/Kiritimati', send_days = ARRAY[pg_temp.dow('Pacific/Kiritimati')] WHERE name = 'sp';
CREATE TEMP TABLE k1 AS SELECT * FROM claim_surveys('w1', 5);
SELECT is((SELECT array_agg(id ORDER BY id) FROM k1), ARRAY[7101, 7102, 7103, 7107, 7108]::bigint[],
          'inside the window: Kiritimati recipients and those in the source zone (Kiritimati); Pago Pago ones are not claimed');
SELECT is((SELECT array_agg(reminder) FROM k1), ARRAY[0, 0, 0, 0, 0], 'first sends: reminder 0');
SELECT results_eq($$SELECT id, status, send_after, due_at FROM survey WHERE id BETWEEN 7104 AND 7106 ORDER BY id$$,
                  $$SELECT 7100 + g::bigint, 'pending'::text,
                           (((now() AT TIME ZONE 'Pacific/Pago_Pago')::date
                             + ((pg_temp.dow('Pacific/Kiritimati') - pg_temp.dow('Pacific/Pago_Pago') + 7) % 7)) + time '00:00')
                             AT TIME ZONE 'Pacific/Pago_Pago',
                           now() - interval '1 hour' + g * interval '1 second'
                      FROM generate_series(4, 6) g$$,
                  'outside the window: put off to the window''s opening in the recipient''s zone; due_at keeps when they fell due');
SELECT is((SELECT count(*)::int FROM claim_surveys('w2', 10)), 4, 'the next claim takes the rest inside the window (9..12), not the put-off ones');
SELECT is((SELECT count(*)::int FROM claim_surveys('w2', 10)), 0, 'nothing else is due');
SELECT results_eq($$SELECT state, surveys FROM send_backlog WHERE source = 'sp' ORDER BY state$$,
                  $$VALUES ('leased'::text, 9::bigint), ('scheduled', 3)$$, 'send_backlog: nine leased, three scheduled for their opening');
SELECT is((SELECT next_send_at FROM send_backlog WHERE source = 'sp' AND state = 'scheduled'),
          (SELECT min(send_after) FROM survey WHERE id BETWEEN 7104 AND 7106), 'send_backlog shows when the put-off ones go out');

-- a window change moves them back to when they fell due; the next claim judges them again
UPDATE payment_source SET send_days = '{1,2,3,4,5,6,7}' WHERE name = 'sp';
SELECT results_eq($$SELECT count(*)::int, bool_and(due_at IS NULL), bool_and(send_after < now()) FROM survey WHERE id BETWEEN 7104 AND 7106$$,
                  $$VALUES (3, true, true)$$, 'changing the window reschedules the put-off surveys to when they fell due');
SELECT is((SELECT array_agg(id ORDER BY id) FROM claim_surveys('w3', 10)), ARRAY[7104, 7105, 7106]::bigint[],
          'now open everywhere: they are claimed');
-- an unknown zone on a survey falls back to the source's zone (the claim never raises for it)
UPDATE survey SET status = 'pending', attempts = 0, lease_owner = NULL, lease_until = NULL, lease_role = NULL,
       time_zone = 'Mars/Olympus' WHERE id = 7104;
UPDATE payment_source SET send_days = ARRAY[pg_temp.dow('Pacific/Kiritimati')] WHERE name = 'sp';
SELECT is((SELECT array_agg(id) FROM claim_surveys('w3', 10)), ARRAY[7104]::bigint[],
          'a survey with an unknown time zone is judged in the source''s zone (open here)');
-- a lapsed lease outside the window is not re-claimed: back to pending, put off
UPDATE payment_source SET send_days = ARRAY[(pg_temp.dow('Pacific/Kiritimati') % 7) + 1] WHERE name = 'sp';
UPDATE survey SET lease_until = now() - interval '1 second' WHERE id = 7101;
SELECT is((SELECT count(*)::int FROM claim_surveys('w4', 10)), 0, 'a lapsed lease outside its window is not claimed');
SELECT results_eq($$SELECT status, lease_owner, attempts, send_after > now() FROM survey WHERE id = 7101$$,
                  $$VALUES ('pending'::text, NULL::text, 1, true)$$, 'it goes back to pending for the next opening (attempts kept)');
SELECT is(reschedule_surveys('sp'), 1::bigint, 'reschedule_surveys(source) moves it back and says how many');
SELECT throws_ok($$SELECT reschedule_surveys('no-such-source')$$, '42704', NULL, 'reschedule_surveys: unknown source 42704');

-- report what is out, start the cap part from a clean state
UPDATE payment_source SET send_days = '{1,2,3,4,5,6,7}' WHERE name = 'sp';
SELECT ok((SELECT bool_and(ok) FROM mark_sent(ARRAY(SELECT id FROM survey WHERE source_id = pg_temp.src() AND status = 'sending'), 'w1')) IS NOT TRUE,
          'only the holder reports (w1 holds some of them)');
DELETE FROM survey WHERE source_id = pg_temp.src();

-- ---- daily cap: 3 a day in the source's zone
UPDATE payment_source SET daily_cap = 3 WHERE name = 'sp';
INSERT INTO survey (id, token, source_id, customer_id, channel, send_after, expires_at)
SELECT 7200 + g, 'sp-cap-' || g, pg_temp.src(), 'sp-cap-cust-' || g, 'email',
       now() - interval '1 hour' + g * interval '1 second', now() + interval '14 days'
  FROM generate_series(1, 6) g;
SELECT is((SELECT array_agg(id ORDER BY id) FROM claim_surveys('w1', 2)), ARRAY[7201, 7202]::bigint[], 'two of the cap of 3');
SELECT is((SELECT array_agg(id ORDER BY id) FROM claim_surveys('w1', 10)), ARRAY[7203]::bigint[], 'then only one more: the cap is reached');
SELECT results_eq($$SELECT day, claimed, deferred FROM send_day WHERE source_id = pg_temp.src()$$,
                  $$VALUES ((now() AT TIME ZONE 'Pacific/Kiritimati')::date, 3, 3)$$,
                  'send_day counts the day in the source''s zone: 3 claimed, 3 put off');
SELECT results_eq($$SELECT count(*)::int, min(send_after), bool_and(cap_deferrals = 1), bool_and(due_at IS NOT NULL)
                      FROM survey WHERE id BETWEEN 7204 AND 7206$$,
                  $$VALUES (3, next_local_midnight(now(), 'Pacific/Kiritimati'), true, true)$$,
                  'over the cap: put off to the start of the next day in the source''s zone, counted in cap_deferrals');
SELECT is((SELECT state FROM send_backlog WHERE source = 'sp' AND state <> 'leased'), 'scheduled', 'they wait for tomorrow');
-- a retry does not count again (the cap counts claims of a send, not attempts)
SELECT is(mark_failed(7201, 'w1', 'smtp 451', '0'), 'pending', 'a retry is pending again');
SELECT is((SELECT array_agg(id) FROM claim_surveys('w1', 10)), ARRAY[7201]::bigint[], 'and claimed again although the cap is used up');
UPDATE survey SET lease_until = now() - interval '1 second' WHERE id = 7202;
SELECT is((SELECT array_agg(id) FROM claim_surveys('w1', 10)), ARRAY[7202]::bigint[], 'so is a lapsed lease');
SELECT is((SELECT claimed FROM send_day WHERE source_id = pg_temp.src()), 3, 'still 3 counted');
-- while the cap is used up, due first sends are shown as waiting for it
UPDATE survey SET send_after = now() - interval '1 minute', due_at = NULL WHERE id = 7204;
SELECT is((SELECT surveys FROM send_backlog WHERE source = 'sp' AND state = 'daily_cap'), 1::bigint,
          'send_backlog: a due first send waits for the daily cap');
SELECT is((SELECT next_send_at FROM send_backlog WHERE source = 'sp' AND state = 'daily_cap'),
          next_local_midnight(now(), 'Pacific/Kiritimati'), 'until the next day');
-- raising the cap lets them through today
UPDATE payment_source SET daily_cap = 10 WHERE name = 'sp';
SELECT is((SELECT array_agg(id ORDER BY id) FROM claim_surveys('w1', 10)), ARRAY[7204, 7205, 7206]::bigint[],
          'a higher cap: the put-off ones are claimed today');
SELECT is((SELECT claimed FROM send_day WHERE source_id = pg_temp.src()), 6, '6 counted');
UPDATE payment_source SET daily_cap = 0 WHERE name = 'sp';
INSERT INTO survey (id, token, source_id, customer_id, channel, send_after, expires_at)
VALUES (7207, 'sp-cap-7', pg_temp.src(), 'sp-cap-cust-7', 'email', now() - interval '1 minute', now() + interval '14 days');
SELECT is((SELECT count(*)::int FROM claim_surveys('w1', 10)), 0, 'daily_cap 0 pauses a source');
UPDATE payment_source SET daily_cap = NULL WHERE name = 'sp';
SELECT is((SELECT array_agg(id) FROM claim_surveys('w1', 10)), ARRAY[7207]::bigint[], 'no cap: claimed');
SELECT ok((SELECT bool_and(ok) FROM mark_sent(ARRAY(SELECT id FROM survey WHERE source_id = pg_temp.src()), 'w1')), 'all reported');

-- ---- reminders: 2, a day apart
UPDATE payment_source SET reminders = 2, reminder_after = '1 day' WHERE name = 'sp';
INSERT INTO survey (id, token, source_id, customer_id, channel, send_after, expires_at)
VALUES (7301, 'sp-rem-1', pg_temp.src(), 'sp-rem-cust-1', 'email', now() - interval '1 minute', now() + interval '14 days'),
       (7302, 'sp-rem-2', pg_temp.src(), 'sp-rem-cust-2', 'email', now() - interval '1 minute', now() + interval '14 days'),
       (7303, 'sp-rem-3', pg_temp.src(), 'sp-rem-cust-3', 'email', now() - interval '1 minute', now() + interval '20 hours'),
       (7304, 'sp-rem-4', pg_temp.src(), 'sp-rem-cust-4', 'email', now() - interval '1 minute', now() + interval '14 days');
SELECT is((SELECT count(*)::int FROM claim_surveys('w1', 10)), 4, 'first sends claimed');
SELECT ok((SELECT bool_and(ok AND status = 'pending') FROM mark_sent(ARRAY[7301, 7302, 7304]::bigint[], 'w1')),
          'mark_sent with reminders left: pending again (queued for the reminder)');
SELECT is(mark_sent(7303, 'w1')::text, '', 'mark_sent one by one works the same');
SELECT results_eq($$SELECT id, status, reminder, attempts, send_after = now() + interval '1 day', sent_at = now() FROM survey WHERE id BETWEEN 7301 AND 7304 ORDER BY id$$,
                  $$VALUES (7301::bigint, 'pending'::text, 1, 0, true, true), (7302, 'pending', 1, 0, true, true),
                           (7303, 'sent', 0, 1, false, true), (7304, 'pending', 1, 0, true, true)$$,
                  'reminder 1 due a day after the send (attempts start again); none for a survey closing before it');
SELECT results_eq($$SELECT state, surveys FROM send_backlog WHERE source = 'sp' ORDER BY 1$$,
                  $$VALUES ('reminder'::text, 3::bigint)$$, 'send_backlog: three waiting for a reminder');
SELECT is((SELECT count(*)::int FROM claim_surveys('w1', 10)), 0, 'not before its time');
UPDATE survey SET send_after = now() - interval '1 second' WHERE id IN (7301, 7302, 7304);
-- the answer stops the reminder
SELECT ok(record_response('sp-rem-2', 9) IS NOT NULL, 'survey 7302 is answered while its reminder waits');
SELECT results_eq($$SELECT id, reminder, attempts FROM claim_surveys('w1', 10) ORDER BY id$$,
                  $$VALUES (7301::bigint, 1, 1), (7304, 1, 1)$$, 'the due reminders are claimed with reminder = 1; not the answered one');
SELECT is(mark_failed(7304, 'w1', 'smtp 451', '0'), 'pending', 'a failed reminder is retried');
UPDATE survey SET send_after = now() - interval '1 second' WHERE id = 7304;
SELECT is((SELECT attempts FROM claim_surveys('w1', 10)), 2, 'attempt 2 of the reminder');
SELECT is(mark_failed(7304, 'w1', 'smtp 550'), 'sent', 'at max_attempts a reminder is given up: the survey stays sent, not failed');
SELECT results_eq($$SELECT status, reminder, reminders_sent, sent_at = now(), last_error FROM survey WHERE id = 7304$$,
                  $$VALUES ('sent'::text, 1, 0, true, 'smtp 550'::text)$$, 'its first send stays recorded; no further reminder');
SELECT is((SELECT status FROM mark_sent(ARRAY[7301]::bigint[], 'w1')), 'pending', 'reminder 1 sent: reminder 2 queued');
SELECT results_eq($$SELECT reminder, reminders_sent, send_after = now() + interval '1 day' FROM survey WHERE id = 7301$$,
                  $$VALUES (2, 1, true)$$, 'reminders_sent 1, reminder 2 due a day later');
UPDATE survey SET send_after = now() - interval '1 second' WHERE id = 7301;
SELECT is((SELECT reminder FROM claim_surveys('w1', 10)), 2, 'reminder 2 claimed');
-- the answer arrives between the claim and the report: the reminder was not what brought it
SELECT ok(record_response('sp-rem-1', 4) IS NOT NULL, 'answered while reminder 2 is being sent');
SELECT is(mark_sent(7301, 'w1')::text, '', 'the sender reports it');
SELECT results_eq($$SELECT status, reminder, reminders_sent FROM survey WHERE id = 7301$$,
                  $$VALUES ('responded'::text, 2, 1)$$, 'still responded; a reminder reported after the answer is not counted');
-- a lapsed lease of a reminder at max_attempts: expire_surveys gives the reminder up
INSERT INTO survey (id, token, source_id, customer_id, channel, status, send_after, expires_at, attempts, reminder,
                    lease_owner, lease_until, sent_at)
VALUES (7305, 'sp-rem-5', pg_temp.src(), 'sp-rem-cust-5', 'email', 'sending', now() - interval '1 hour',
        now() + interval '14 days', 2, 1, 'crashed', now() - interval '1 second', now() - interval '1 day');
SELECT ok(expire_surveys() >= 1, 'expire_surveys closes the exhausted lease');
SELECT is((SELECT status FROM survey WHERE id = 7305), 'sent', 'an exhausted reminder goes back to sent, not failed');
-- opting out stops a waiting reminder; the survey stays sent and answerable
INSERT INTO survey (id, token, source_id, customer_id, channel, status, send_after, expires_at, reminder, sent_at)
VALUES (7306, 'sp-rem-6', pg_temp.src(), 'sp-rem-cust-6', 'email', 'pending', now() + interval '1 day',
        now() + interval '14 days', 1, now() - interval '1 day'),
       (7307, 'sp-rem-7', pg_temp.src(), 'sp-rem-cust-6', 'email', 'pending', now() + interval '1 day',
        now() + interval '14 days', 0, NULL);
SELECT ok(opt_out('sp-rem-cust-6'), 'the customer opts out');
SELECT results_eq($$SELECT id, status FROM survey WHERE id IN (7306, 7307) ORDER BY id$$,
                  $$VALUES (7306::bigint, 'sent'::text), (7307, 'cancelled')$$,
                  'a waiting reminder is dropped (sent), an unsent survey cancelled');
SELECT ok(record_response('sp-rem-6', 7) IS NOT NULL, 'the sent one still takes an answer');
-- fewer reminders: queued ones beyond the new number are dropped
INSERT INTO survey (id, token, source_id, customer_id, channel, status, send_after, expires_at, reminder, reminders_sent, sent_at)
VALUES (7308, 'sp-rem-8', pg_temp.src(), 'sp-rem-cust-8', 'email', 'pending', now() + interval '1 day',
        now() + interval '14 days', 2, 1, now() - interval '2 days'),
       (7309, 'sp-rem-9', pg_temp.src(), 'sp-rem-cust-9', 'email', 'pending', now() + interval '1 day',
        now() + interval '14 days', 1, 0, now() - interval '1 day');
UPDATE payment_source SET reminders = 1 WHERE name = 'sp';
SELECT results_eq($$SELECT id, status FROM survey WHERE id IN (7308, 7309) ORDER BY id$$,
                  $$VALUES (7308::bigint, 'sent'::text), (7309, 'pending')$$,
                  'lowering reminders to 1 drops the queued second reminder, keeps the first');
UPDATE payment_source SET reminders = 2 WHERE name = 'sp';
SELECT is((SELECT status FROM survey WHERE id = 7309), 'pending', 'raising it changes nothing queued');

-- ---- send_funnel: reminders, the answers after one, caps
SELECT results_eq($$SELECT created, sent, reminders, reminded, responded, responded_after_reminder, capped
                      FROM send_funnel(now() - interval '1 day')$$,
                  $$SELECT count(*), count(*) FILTER (WHERE sent_at IS NOT NULL OR status = 'responded'),
                           sum(reminders_sent), count(*) FILTER (WHERE reminders_sent > 0),
                           count(*) FILTER (WHERE status = 'responded'),
                           count(*) FILTER (WHERE status = 'responded' AND reminders_sent > 0),
                           count(*) FILTER (WHERE cap_deferrals > 0)
                      FROM survey WHERE created_at >= now() - interval '1 day'$$,
                  'send_funnel equals the counts over the surveys');
SELECT results_eq($$SELECT reminders, reminded, responded_after_reminder, capped FROM send_funnel(now() - interval '1 day')$$,
                  $$VALUES (2::bigint, 2::bigint, 1::bigint, 4::bigint)$$,
                  'two reminders sent (two surveys), one answer after one, four surveys put off by the cap');
SELECT is((SELECT reminders FROM send_funnel(now() + interval '1 day')), 0::bigint, 'nothing created since tomorrow');
SELECT throws_ok($$SELECT * FROM send_funnel(NULL)$$, '22004', 'send_funnel: since must not be NULL', 'send_funnel: NULL since 22004');
SELECT is(rebuild_rollups() >= 0, true, 'rebuild_rollups runs');
SELECT results_eq($$SELECT reminders, reminded, responded_after_reminder, capped FROM send_funnel(now() - interval '1 day')$$,
                  $$VALUES (2::bigint, 2::bigint, 1::bigint, 4::bigint)$$, 'and rebuilds the same counts');

-- ---- catalog
SELECT is((SELECT array_agg(attname ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'nps_billing.claimed_survey'::regclass AND attnum > 0),
          ARRAY['id', 'token', 'customer_id', 'channel', 'attempts', 'lease_until', 'expires_at', 'source', 'kind',
                'amount', 'currency', 'occurred_at', 'attributes', 'reminder']::name[], 'claimed_survey ends with reminder');
SELECT * FROM finish();
ROLLBACK;
