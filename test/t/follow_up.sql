-- Follow-ups: who may change whose follow-up (agent name and login role), leases, planted
-- look-alike functions, erasure and retention, and the metrics on hand-built data.
BEGIN;
SELECT plan(33);
SET LOCAL search_path = nps_billing, public;

-- two login roles that may work follow-ups (the customer success recipe's functions)
CREATE ROLE fu_login_1 NOLOGIN;
CREATE ROLE fu_login_2 NOLOGIN;
GRANT USAGE ON SCHEMA nps_billing TO fu_login_1, fu_login_2;
GRANT EXECUTE ON FUNCTION nps_billing.claim_follow_ups(text, integer, interval),
                          nps_billing.update_follow_up(bigint, text, text, text),
                          nps_billing.resolve_follow_up(bigint, text, text, text),
                          nps_billing.release_follow_up(bigint, text) TO fu_login_1, fu_login_2;
-- run a statement as another *login* role: session_user changes (SET ROLE would not change it)
CREATE FUNCTION pg_temp.as_login(r text, q text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('SET LOCAL SESSION AUTHORIZATION %I', r);
  EXECUTE q;
  RESET SESSION AUTHORIZATION;
END $$;

CREATE TEMP TABLE fu_pay (id int);
INSERT INTO payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES ('fu', 'fu_pay', 'x', 'y', 'z');
INSERT INTO survey (token, source_id, customer_id, channel, status, send_after, expires_at)
SELECT 'fu-tap-' || g, p.id, 'fu-tap-cust-' || g, 'email', 'sent', now() - interval '1 hour', now() + interval '1 day'
  FROM payment_source p, generate_series(1, 4) g WHERE p.name = 'fu';
CREATE TEMP TABLE fu_r AS SELECT record_response('fu-tap-' || g, g) FROM generate_series(1, 4) g;
CREATE TEMP TABLE fu_ids AS
  SELECT r.customer_id, f.id FROM follow_up f JOIN response r ON r.id = f.response_id WHERE r.customer_id LIKE 'fu-tap-cust-%';
SELECT is((SELECT count(*)::int FROM fu_ids), 4, 'four detractor answers, four follow-ups');

-- login role 1 claims as "alice"; login role 2 using the same agent name is refused
SELECT lives_ok($$SELECT pg_temp.as_login('fu_login_1', $q$SELECT count(*) FROM nps_billing.claim_follow_ups('alice', 2)$q$)$$,
                'login role 1 claims two follow-ups as alice');
SELECT is((SELECT count(*)::int FROM follow_up f JOIN fu_ids USING (id) WHERE f.assignee = 'alice' AND f.lease_role = 'fu_login_1'::regrole),
          2, 'they are held by alice of login role 1');
CREATE TEMP TABLE fu_held AS SELECT f.id FROM follow_up f JOIN fu_ids USING (id) WHERE f.assignee = 'alice' ORDER BY f.id;
SELECT throws_ok(format($$SELECT pg_temp.as_login('fu_login_2', 'SELECT nps_billing.update_follow_up(%s, ''alice'', ''contacted'')')$$, (SELECT min(id) FROM fu_held)),
                 '55000', NULL, 'another login role cannot update it, even with the same agent name');
SELECT throws_ok(format($$SELECT pg_temp.as_login('fu_login_2', 'SELECT nps_billing.resolve_follow_up(%s, ''alice'')')$$, (SELECT min(id) FROM fu_held)),
                 '55000', NULL, '... nor resolve it');
SELECT throws_ok(format($$SELECT pg_temp.as_login('fu_login_2', 'SELECT nps_billing.release_follow_up(%s, ''alice'')')$$, (SELECT min(id) FROM fu_held)),
                 '55000', NULL, '... nor release it');
SELECT throws_ok(format($$SELECT pg_temp.as_login('fu_login_1', 'SELECT nps_billing.update_follow_up(%s, ''bob'', ''contacted'')')$$, (SELECT min(id) FROM fu_held)),
                 '55000', NULL, 'the same login role under another agent name cannot either');
SELECT throws_ok($$SELECT pg_temp.as_login('fu_login_2', 'INSERT INTO nps_billing.follow_up_note (follow_up_id, author, author_role, body) VALUES (1, ''x'', ''y'', ''z'')')$$,
                 '42501', NULL, 'notes cannot be written around the functions');
SELECT throws_ok($$SELECT pg_temp.as_login('fu_login_2', 'UPDATE nps_billing.follow_up SET assignee = ''mallory''')$$,
                 '42501', NULL, 'follow-ups cannot be re-assigned around the functions');
SELECT lives_ok(format($$SELECT pg_temp.as_login('fu_login_1', 'SELECT nps_billing.update_follow_up(%s, ''alice'', ''contacted'', ''called'')')$$, (SELECT min(id) FROM fu_held)),
                'the holder updates it');
SELECT results_eq($$SELECT n.author, n.author_role, n.status, n.body FROM follow_up_note n WHERE n.follow_up_id = (SELECT min(id) FROM fu_held)$$,
                  $$VALUES ('alice'::text, 'fu_login_1'::text, 'contacted'::text, 'called'::text)$$, 'the note records agent, login role, status and text');
SELECT is((SELECT count(*)::int FROM follow_up_note n WHERE n.follow_up_id IN (SELECT id FROM fu_ids)), 1, 'refused calls wrote no note');

-- a lapsed lease: the holder may still write until someone else claims it
UPDATE follow_up SET lease_until = now() - interval '1 second' WHERE id IN (SELECT id FROM fu_held);
SELECT lives_ok(format($$SELECT pg_temp.as_login('fu_login_1', 'SELECT nps_billing.update_follow_up(%s, ''alice'', note => ''still mine'')')$$, (SELECT max(id) FROM fu_held)),
                'after the lease lapsed, the holder may still write while nobody re-claimed it');
SELECT lives_ok($$SELECT pg_temp.as_login('fu_login_2', $q$SELECT count(*) FROM nps_billing.claim_follow_ups('bob', 10)$q$)$$,
                'login role 2 claims as bob: it gets the lapsed ones too');
SELECT is((SELECT count(*)::int FROM follow_up f JOIN fu_ids USING (id) WHERE f.assignee = 'bob'), 4, 'bob holds all four');
SELECT throws_ok(format($$SELECT pg_temp.as_login('fu_login_1', 'SELECT nps_billing.update_follow_up(%s, ''alice'', note => ''too late'')')$$, (SELECT max(id) FROM fu_held)),
                 '55000', NULL, 'alice''s lapsed lease is gone once bob re-claimed');

-- planted look-alike: the trigger runs with search_path = pg_catalog, pg_temp
CREATE FUNCTION public.follow_up_needed(c nps_billing.nps_category, t text, cs nps_billing.nps_category[], w boolean)
RETURNS boolean LANGUAGE sql AS 'SELECT true';
SET LOCAL search_path = public, nps_billing;
INSERT INTO survey (token, source_id, customer_id, channel, status, send_after, expires_at)
SELECT 'fu-tap-planted', p.id, 'fu-tap-planted', 'email', 'sent', now() - interval '1 hour', now() + interval '1 day'
  FROM payment_source p WHERE p.name = 'fu';
SELECT ok(record_response('fu-tap-planted', 10) > 0, 'a promoter answers with a planted follow_up_needed() first on the search path');
SELECT is((SELECT count(*)::int FROM follow_up f JOIN response r ON r.id = f.response_id WHERE r.customer_id = 'fu-tap-planted'), 0,
          '... and gets no follow-up: the planted function is not called');
SET LOCAL search_path = nps_billing, public;

-- erasure: forget_customer takes the follow-up and its notes (and the replaced answer's follow-up)
SELECT lives_ok(format($$SELECT pg_temp.as_login('fu_login_2', 'SELECT nps_billing.update_follow_up(%s, ''bob'', note => ''fu-tap-cust-1 said: refund'')')$$,
                       (SELECT id FROM fu_ids WHERE customer_id = 'fu-tap-cust-1')), 'a note that quotes the customer id');
CREATE TEMP TABLE fu_x AS SELECT id FROM fu_ids WHERE customer_id = 'fu-tap-cust-1';
SELECT lives_ok($$SELECT * FROM forget_customer('fu-tap-cust-1')$$, 'forget_customer');
SELECT is((SELECT count(*)::int FROM follow_up WHERE id IN (SELECT id FROM fu_x)) + (SELECT count(*)::int FROM follow_up_note WHERE follow_up_id IN (SELECT id FROM fu_x)),
          0, 'the follow-up and its notes are gone');
SELECT is((SELECT count(*)::int FROM follow_up WHERE id IN (SELECT id FROM fu_ids WHERE customer_id <> 'fu-tap-cust-1')), 3, 'the other follow-ups stay');

-- ---- metrics on hand-built data --------------------------------------------------------------
-- Source fm: follow-ups for answers up to 1000 days old. Detractors m1..m6 answered 100 days
-- ago (judged with after = 45 days), m7 10 days ago (not judged), promoter p1 100 days ago.
--   m1 contacted, paid +30 d   -> followed up, paid again
--   m2 resolved,  paid +44 d   -> followed up, paid again     (closed 1 day after creation, within the 2-day SLA)
--   m3 resolved,  paid +46 d   -> followed up, not paid        (closed after 3 days: outside)
--   m4 wont_fix,  paid +10 d   -> not followed up, paid again  (closed after 12 hours: within)
--   m5 open,      no payment   -> not followed up, not paid
--   m6 open,      failed +5 d  -> not followed up, not paid (a failed payment is no payment)
-- followed up 2/3, not 1/3, difference 1/3; two-sided unpooled z-test:
-- z = (2/3 - 1/3) / sqrt((2/3)(1/3)/3 + (1/3)(2/3)/3) = 0.8660254, p = erfc(z / sqrt 2) = 0.3864762
-- (python: math.erfc(0.8660254037844386 / math.sqrt(2))). Times to close 1 d, 3 d, 12 h: median 1 day.
-- (the follow-ups of the first part go with their answers: deleting an answer deletes its follow-up)
DELETE FROM response WHERE customer_id LIKE 'fu-tap-%';
SELECT is((SELECT count(*)::int FROM follow_up WHERE id IN (SELECT id FROM fu_ids)), 0, 'deleted answers took their follow-ups along');
CREATE TEMP TABLE fm_pay (id int);
INSERT INTO payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr) VALUES ('fm', 'fm_pay', 'x', 'y', 'z');
INSERT INTO follow_up_policy (source_id, max_age) SELECT id, '1000 days' FROM payment_source WHERE name = 'fm';
CREATE TEMP TABLE fm (c text, score int, ago interval);
INSERT INTO fm VALUES ('m1', 0, '100 days'), ('m2', 1, '100 days'), ('m3', 2, '100 days'), ('m4', 3, '100 days'),
                      ('m5', 4, '100 days'), ('m6', 5, '100 days'), ('m7', 6, '10 days'), ('p1', 10, '100 days');
-- a payment before each answer (so the answer's context is source fm), then the ones after
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, occurred_at)
SELECT p.id, 'fm-before-' || fm.c, 'succeeded', 'fm-' || fm.c, 10, now() - fm.ago - interval '30 days' FROM payment_source p, fm WHERE p.name = 'fm';
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, occurred_at)
SELECT p.id, 'fm-after-' || v.c, v.k, 'fm-' || v.c, 10, now() - interval '100 days' + v.d FROM payment_source p,
  (VALUES ('m1', 'succeeded', interval '30 days'), ('m2', 'succeeded', '44 days'), ('m3', 'succeeded', '46 days'),
          ('m4', 'succeeded', '10 days'), ('m6', 'failed', '5 days')) v(c, k, d) WHERE p.name = 'fm';
INSERT INTO response (customer_id, score, responded_at) SELECT 'fm-' || c, score, now() - ago FROM fm;
CREATE TEMP TABLE fm_fu AS
  SELECT substr(r.customer_id, 4) AS c, f.id, r.responded_at FROM follow_up f JOIN response r ON r.id = f.response_id WHERE r.customer_id LIKE 'fm-%';
SELECT is((SELECT array_agg(c ORDER BY c) FROM fm_fu), ARRAY['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7'],
          'imported answers up to the source''s max_age get follow-ups (detractors only)');
SELECT is((SELECT count(*)::int FROM follow_up f JOIN fm_fu USING (id) WHERE f.due_at = fm_fu.responded_at + interval '48 hours'), 7, 'due 2 days (48 hours, in UTC) after the answer');
-- work them as agent fm
CREATE TEMP TABLE fm_w1 AS SELECT * FROM claim_follow_ups('fm', 1000);
CREATE TEMP TABLE fm_w2 AS SELECT update_follow_up(id, 'fm', 'contacted') FROM fm_fu WHERE c = 'm1';
CREATE TEMP TABLE fm_w3 AS SELECT resolve_follow_up(id, 'fm') FROM fm_fu WHERE c IN ('m2', 'm3');
CREATE TEMP TABLE fm_w4 AS SELECT resolve_follow_up(id, 'fm', 'wont_fix') FROM fm_fu WHERE c = 'm4';
-- the times of a real history (created an hour after the answer, closed after 1 d / 3 d / 12 h)
UPDATE follow_up f SET created_at = x.responded_at + interval '1 hour',
       closed_at = x.responded_at + interval '1 hour' + CASE x.c WHEN 'm2' THEN interval '24 hours' WHEN 'm3' THEN interval '72 hours' ELSE interval '12 hours' END
  FROM fm_fu x WHERE f.id = x.id AND x.c IN ('m2', 'm3', 'm4');
UPDATE follow_up f SET created_at = x.responded_at + interval '1 hour' FROM fm_fu x WHERE f.id = x.id AND x.c IN ('m1', 'm5', 'm6');
SELECT results_eq($$SELECT follow_ups, open, overdue, resolved, wont_fix, median_time_to_close, round(closed_within_sla::numeric, 6)
                      FROM follow_up_metrics(now() - interval '200 days', now() + interval '1 day')$$,
  $$VALUES (7::bigint, 4::bigint, 4::bigint, 2::bigint, 1::bigint, interval '1 day', 0.666667)$$,
  'metrics: 7 follow-ups, 4 open and overdue (m1 m5 m6 m7), 2 resolved, 1 wont_fix, median 1 day, 2/3 within SLA');
SELECT results_eq($$SELECT detractors_judged, followed_up, followed_up_paid_again, not_followed_up, not_followed_up_paid_again,
                           round(followed_up_retention::numeric, 6), round(not_followed_up_retention::numeric, 6),
                           round(retention_difference::numeric, 6), round(p_value::numeric, 6)
                      FROM follow_up_metrics(now() - interval '200 days', now() + interval '1 day')$$,
  $$VALUES (6::bigint, 3::bigint, 2::bigint, 3::bigint, 1::bigint, 0.666667, 0.333333, 0.333333, 0.386476)$$,
  'retention: 6 judged detractors; followed up 2/3 paid again, not followed up 1/3; p = 0.386476');
SELECT results_eq($$SELECT followed_up_paid_again, round(followed_up_retention::numeric, 6)
                      FROM follow_up_metrics(now() - interval '200 days', now() + interval '1 day', '50 days')$$,
  $$VALUES (3::bigint, 1.000000)$$, 'after = 50 days: m3''s payment at +46 days counts');
SELECT results_eq($$SELECT follow_ups, detractors_judged, median_time_to_close, p_value
                      FROM follow_up_metrics(now() + interval '1 day', now() + interval '2 days')$$,
  $$VALUES (0::bigint, 0::bigint, NULL::interval, NULL::float8)$$, 'an empty window: zeros and NULLs');

-- retention: purge removes follow-ups (and notes) of the answers it anonymises
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, occurred_at)
SELECT p.id, 'fm-before-old', 'succeeded', 'fm-old', 10, now() - interval '430 days' FROM payment_source p WHERE p.name = 'fm';
INSERT INTO response (customer_id, score, responded_at) VALUES ('fm-old', 0, now() - interval '400 days');
SELECT is((SELECT count(*)::int FROM claim_follow_ups('fm', 1000) c WHERE c.customer_id = 'fm-old'), 1,
          'an answer of 400 days ago (source fm: max_age 1000 days) got a follow-up');
CREATE TEMP TABLE fm_old AS SELECT f.id FROM follow_up f JOIN response r ON r.id = f.response_id WHERE r.customer_id = 'fm-old';
CREATE TEMP TABLE fm_w5 AS SELECT update_follow_up(id, 'fm', note => 'old note') FROM fm_old;
CREATE TEMP TABLE fm_w6 AS SELECT * FROM purge('365 days');
SELECT is((SELECT count(*)::int FROM follow_up f JOIN response r ON r.id = f.response_id WHERE r.responded_at < now() - interval '365 days'), 0,
          'purge(365 days): no follow-up of an answer before the cutoff is left');
SELECT is((SELECT count(*)::int FROM follow_up_note WHERE follow_up_id IN (SELECT id FROM fm_old)), 0, '... nor its notes');
SELECT is((SELECT count(*)::int FROM fm_fu JOIN follow_up USING (id)), 7, 'the younger follow-ups stay');
SELECT * FROM finish();
ROLLBACK;
