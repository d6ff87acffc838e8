-- Reports (mark_sent / mark_failed, single and batch): a lease belongs to the worker name and the
-- login role (session_user) that took it; a survey the caller does not hold gets one and the
-- same error whatever its state; batches report per id in one statement.
BEGIN;
SELECT plan(37);
SET LOCAL search_path = nps_billing, public;

-- two sender roles with the sender grants, each "logging in" with SET SESSION AUTHORIZATION
CREATE ROLE nps_rep_a NOLOGIN;
CREATE ROLE nps_rep_b NOLOGIN;
GRANT USAGE ON SCHEMA nps_billing TO nps_rep_a, nps_rep_b;
GRANT EXECUTE ON FUNCTION claim_surveys(text, integer, interval), mark_sent(bigint, text),
                          mark_failed(bigint, text, text, interval), mark_sent(bigint[], text),
                          mark_failed(bigint[], text, text, interval) TO nps_rep_a, nps_rep_b;
CREATE FUNCTION pg_temp.as_login(r text, q text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('SET SESSION AUTHORIZATION %I', r);
  EXECUTE q;
  RESET SESSION AUTHORIZATION;
END $$;
-- the error a call raises, with the survey id replaced by N: (sqlstate, message, detail, hint)
CREATE FUNCTION pg_temp.err(r text, q text, id bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; m text; d text; h text;
BEGIN
  PERFORM pg_temp.as_login(r, q);
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT, d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  RETURN concat_ws(' | ', st, replace(m, id::text, 'N'), d, h);
END $$;

CREATE TEMP TABLE rp_pay (id int);
INSERT INTO payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr, max_attempts)
VALUES ('rp', 'rp_pay', 'x', 'y', 'z', 3);
INSERT INTO survey (id, token, source_id, customer_id, channel, send_after, expires_at)
SELECT 6700 + g, 'rp-token-' || g, p.id, 'rp-cust-' || g, 'email', now() - interval '1 hour' + g * interval '1 second', now() + interval '1 day'
  FROM payment_source p, generate_series(1, 12) g WHERE p.name = 'rp';
-- 6712 is left pending (never claimed)
UPDATE survey SET send_after = now() + interval '1 hour' WHERE id = 6712;

-- role a claims 6701..6706 as worker 'w'; role b claims 6707..6711 as worker 'w' too
SELECT lives_ok($$SELECT pg_temp.as_login('nps_rep_a', $q$SELECT count(*) FROM nps_billing.claim_surveys('w', 6)$q$)$$, 'role a claims six surveys as worker w');
SELECT lives_ok($$SELECT pg_temp.as_login('nps_rep_b', $q$SELECT count(*) FROM nps_billing.claim_surveys('w', 5)$q$)$$, 'role b claims five as worker w too');
SELECT results_eq($$SELECT (lease_role::regrole::text COLLATE "default"), count(*)::int FROM survey WHERE id BETWEEN 6701 AND 6711 GROUP BY 1 ORDER BY 1$$,
                  $$VALUES ('nps_rep_a'::text, 6), ('nps_rep_b', 5)$$, 'each lease records the login role that took it');

-- another role with the same worker name cannot complete or fail the lease
SELECT throws_ok($$SELECT pg_temp.as_login('nps_rep_b', 'SELECT nps_billing.mark_sent(6701, ''w'')')$$, '55000',
                 'mark_sent: survey 6701 is not leased by worker "w"', 'role b cannot mark role a''s survey sent');
SELECT throws_ok($$SELECT pg_temp.as_login('nps_rep_b', 'SELECT nps_billing.mark_failed(6701, ''w'', ''x'')')$$, '55000',
                 'mark_failed: survey 6701 is not leased by worker "w"', 'role b cannot fail it');
SELECT results_eq($$SELECT status, (lease_role::regrole::text COLLATE "default") FROM survey WHERE id = 6701$$, $$VALUES ('sending'::text, 'nps_rep_a'::text)$$,
                  'the survey is still leased to role a');
SELECT lives_ok($$SELECT pg_temp.as_login('nps_rep_a', 'SELECT nps_billing.mark_sent(6701, ''w'')')$$, 'role a marks it sent');
SELECT results_eq($$SELECT status, lease_owner, (lease_role::regrole::text COLLATE "default") FROM survey WHERE id = 6701$$, $$VALUES ('sent'::text, NULL::text, NULL::text)$$,
                  'sent, lease (worker and role) released');

-- the same error for every survey the caller does not hold
UPDATE survey SET lease_until = now() - interval '1 second' WHERE id = 6703;                  -- a's lapsed lease ...
SELECT lives_ok($$SELECT pg_temp.as_login('nps_rep_b', $q$SELECT count(*) FROM nps_billing.claim_surveys('w2', 10)$q$)$$, '... re-claimed by role b as w2');
UPDATE survey SET status = 'expired', lease_owner = NULL, lease_until = NULL, lease_role = NULL WHERE id = 6704;
UPDATE survey SET status = 'failed', lease_owner = NULL, lease_until = NULL, lease_role = NULL WHERE id = 6705;
CREATE TEMP TABLE errs AS
SELECT c.what, pg_temp.err('nps_rep_a', format('SELECT nps_billing.%s(%s, ''w''%s)', f, c.id, CASE f WHEN 'mark_failed' THEN ', ''x''' ELSE '' END), c.id) AS e, f
  FROM (VALUES ('unknown id', -7), ('another role''s lease', 6707), ('lease re-claimed by another', 6703), ('already sent', 6701),
               ('expired', 6704), ('failed', 6705), ('never claimed', 6712), ('no such id, huge', 9223372036854775807)) c(what, id),
       unnest(ARRAY['mark_sent', 'mark_failed']) f;
SELECT is((SELECT count(DISTINCT e)::int FROM errs WHERE f = 'mark_sent'), 1, 'mark_sent: one error for all eight cases ...');
SELECT is((SELECT min(e) FROM errs WHERE f = 'mark_sent'),
          '55000 | mark_sent: survey N is not leased by worker "w" |  | Report only surveys this worker claimed with claim_surveys(), once each.',
          '... 55000, no detail about the survey');
SELECT is((SELECT count(DISTINCT e)::int FROM errs WHERE f = 'mark_failed'), 1, 'mark_failed: one error for all eight cases ...');
SELECT is((SELECT min(e) FROM errs WHERE f = 'mark_failed'),
          '55000 | mark_failed: survey N is not leased by worker "w" |  | Report only surveys this worker claimed with claim_surveys(), once each.',
          '... the same for mark_failed');
SELECT results_eq($$SELECT id, status FROM survey WHERE id IN (6704, 6705, 6712) ORDER BY id$$,
                  $$VALUES (6704::bigint, 'expired'::text), (6705, 'failed'), (6712, 'pending')$$, 'refused reports changed nothing');
-- a lapsed lease nobody re-claimed is still its owner's to report (unchanged from 0.1)
UPDATE survey SET lease_until = now() - interval '1 second' WHERE id = 6702;
SELECT lives_ok($$SELECT pg_temp.as_login('nps_rep_a', 'SELECT nps_billing.mark_sent(6702, ''w'')')$$, 'the owner reports a lapsed, untaken lease');

-- batches
SELECT results_eq($$SELECT * FROM nps_billing.mark_sent(ARRAY[6706, 6707, 6706, -1, 6701]::bigint[], 'w')$$,
                  $$VALUES (6706::bigint, false, NULL::text), (6707, false, NULL), (-1, false, NULL), (6701, false, NULL)$$,
                  'the superuser session (another login) holds none of them: one row per distinct id, in order, all refused');
SELECT lives_ok($$SELECT pg_temp.as_login('nps_rep_b',
  $q$CREATE TEMP TABLE rb AS SELECT * FROM nps_billing.mark_sent(ARRAY[6708, 6707, 6701, 6708, 6709]::bigint[], 'w')$q$)$$,
  'role b reports a batch in one call');
SELECT results_eq($$SELECT survey_id, ok, status FROM rb$$,
                  $$VALUES (6708::bigint, true, 'sent'::text), (6707, true, 'sent'), (6701, false, NULL), (6709, true, 'sent')$$,
                  'per-id results: its own leases sent, role a''s survey refused, the duplicate reported once');
SELECT results_eq($$SELECT id, status, lease_owner FROM survey WHERE id IN (6707, 6708, 6709) ORDER BY id$$,
                  $$VALUES (6707::bigint, 'sent'::text, NULL::text), (6708, 'sent', NULL), (6709, 'sent', NULL)$$, 'the batch was applied');
SELECT lives_ok($$SELECT pg_temp.as_login('nps_rep_b',
  $q$CREATE TEMP TABLE rb2 AS SELECT * FROM nps_billing.mark_sent(ARRAY[6708]::bigint[], 'w')$q$)$$, 'reporting the batch again ...');
SELECT results_eq($$SELECT survey_id, ok, status FROM rb2$$, $$VALUES (6708::bigint, false, NULL::text)$$, '... is refused per id');

-- batch mark_failed: pending below max_attempts (3), failed at it; responded stays responded
UPDATE survey SET status = 'responded' WHERE id = 6711;
UPDATE survey SET attempts = 3 WHERE id = 6710;
SELECT lives_ok($$SELECT pg_temp.as_login('nps_rep_b',
  $q$CREATE TEMP TABLE rf AS SELECT * FROM nps_billing.mark_failed(ARRAY[6703, 6710, 6711, 6706]::bigint[], 'w2', 'smtp 451', '10 minutes')$q$)$$,
  'role b fails a batch as w2');
SELECT results_eq($$SELECT survey_id, ok, status FROM rf$$,
                  $$VALUES (6703::bigint, true, 'pending'::text), (6710, false, NULL), (6711, false, NULL), (6706, false, NULL)$$,
                  'only surveys leased to w2 by role b are failed');
SELECT lives_ok($$SELECT pg_temp.as_login('nps_rep_b',
  $q$CREATE TEMP TABLE rf2 AS SELECT * FROM nps_billing.mark_failed(ARRAY[6710, 6711]::bigint[], 'w', 'smtp 550', '10 minutes')$q$)$$,
  'role b fails its w leases');
SELECT results_eq($$SELECT survey_id, ok, status FROM rf2$$,
                  $$VALUES (6710::bigint, true, 'failed'::text), (6711, true, 'responded')$$,
                  'at max_attempts: failed; an answered survey stays responded');
SELECT results_eq($$SELECT id, status, last_error, send_after > now() + interval '9 minutes', lease_owner FROM survey WHERE id IN (6703, 6710, 6711) ORDER BY id$$,
                  $$VALUES (6703::bigint, 'pending'::text, 'smtp 451'::text, true, NULL::text), (6710, 'failed', 'smtp 550', false, NULL),
                           (6711, 'responded', 'smtp 550', false, NULL)$$,
                  'retry later, error kept, leases released');

-- batch argument errors
SELECT throws_ok($$SELECT * FROM mark_sent(NULL::bigint[], 'w')$$, '22004', 'mark_sent: survey_ids must not be NULL', 'NULL array: 22004');
SELECT throws_ok($$SELECT * FROM mark_sent(ARRAY[1, NULL]::bigint[], 'w')$$, '22004', 'mark_sent: survey_ids must not contain NULL', 'an array with a NULL: 22004');
SELECT throws_ok($$SELECT * FROM mark_sent(ARRAY[1]::bigint[], NULL)$$, '22004', 'mark_sent: worker must not be NULL', 'NULL worker: 22004');
SELECT throws_ok($$SELECT * FROM mark_sent(ARRAY(SELECT generate_series(1, 10001)::bigint), 'w')$$, '54000', NULL, 'more than 10000 ids: 54000');
SELECT throws_ok($$SELECT * FROM mark_failed(ARRAY[1, NULL]::bigint[], 'w', 'x')$$, '22004', NULL, 'mark_failed: an array with a NULL: 22004');
SELECT throws_ok($$SELECT * FROM mark_failed(ARRAY[1]::bigint[], 'w', NULL)$$, '22004', 'mark_failed: error must not be NULL', 'mark_failed: NULL error: 22004');
SELECT throws_ok($$SELECT * FROM mark_failed(ARRAY(SELECT generate_series(1, 10001)::bigint), 'w', 'x')$$, '54000', NULL, 'mark_failed: more than 10000 ids: 54000');
SELECT is((SELECT count(*)::int FROM mark_sent('{}'::bigint[], 'w')), 0, 'an empty batch reports nothing');

-- a claim changes no indexed value (the queue is survey_queue; live stays true): an in-place HOT
-- update when its page has room (fillfactor 50 leaves room); so is a report (delivery_survey_queue)
INSERT INTO survey (id, token, source_id, customer_id, channel, send_after, expires_at)
SELECT 6790, 'rp-token-hot', p.id, 'rp-cust-hot', 'email', now() - interval '2 hours', now() + interval '1 day'
  FROM payment_source p WHERE p.name = 'rp';
CREATE TEMP TABLE hot0 AS SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relid = 'nps_billing.survey'::regclass;
SELECT is((SELECT id FROM claim_surveys('w-hot', 1)), 6790::bigint, 'the oldest due survey is claimed');
SELECT results_eq($$SELECT x.n_tup_upd - h.n_tup_upd, x.n_tup_hot_upd - h.n_tup_hot_upd
                      FROM pg_stat_xact_user_tables x, hot0 h WHERE x.relid = 'nps_billing.survey'::regclass$$,
                  $$VALUES (1::bigint, 1::bigint)$$, 'the claim was a HOT update (no index touched)');
SELECT results_eq($$SELECT queued, live FROM survey WHERE id = 6790$$, $$VALUES (true, true)$$, 'a leased survey is queued and live');
SELECT * FROM finish();
ROLLBACK;
