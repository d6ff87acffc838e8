-- forget_customer leaves no trace of the person in any table of the schema; purge retention.
BEGIN;
SELECT plan(33);
SET LOCAL search_path = nps_billing, public;

-- every table (and materialized view) of the schema, searched as text, found from the catalog
CREATE FUNCTION pg_temp.traces(needle text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE t regclass; n bigint;
BEGIN
  FOR t IN SELECT c.oid FROM pg_class c
            WHERE c.relnamespace = 'nps_billing'::regnamespace AND c.relkind IN ('r', 'p', 'm') ORDER BY c.relname LOOP
    EXECUTE format('SELECT count(*) FROM %s x WHERE strpos(x::text, $1) > 0', t) INTO n USING needle;
    IF n > 0 THEN RETURN NEXT 'nps_billing.' || (SELECT relname FROM pg_class WHERE oid = t); END IF;
  END LOOP;
END $$;

CREATE TEMP TABLE pf_pay (id int);
INSERT INTO payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES ('pf', 'pf_pay', 'x', 'y', 'z');
-- X = 'erase-me-7f3a' and two other customers; events with personal attributes
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT p.id, 'pf-pay-' || c || '-' || g, CASE WHEN g = 3 THEN 'failed' ELSE 'succeeded' END, c, 10 * g, 'EUR',
       now() - g * interval '1 day', jsonb_build_object('plan', 'pro', 'email', c || '@example.com')
  FROM payment_source p, unnest(ARRAY['erase-me-7f3a', 'keep-one', 'keep-two']) c, generate_series(1, 3) g
 WHERE p.name = 'pf';
INSERT INTO survey (token, source_id, event_id, customer_id, channel, status, send_after, expires_at, last_error)
SELECT 'pf-token-' || e.customer_id || '-' || e.payment_key, e.source_id, e.id, e.customer_id, 'email',
       CASE WHEN e.amount = 10 THEN 'pending' ELSE 'sent' END, now() - interval '1 hour', now() + interval '1 day',
       'bounce for ' || e.customer_id || '@example.com'
  FROM payment_event e JOIN payment_source p ON p.id = e.source_id WHERE p.name = 'pf' AND e.kind = 'succeeded';
UPDATE payment_event e SET survey_id = s.id FROM survey s WHERE s.event_id = e.id;
CREATE TEMP TABLE pf_resp AS SELECT record_response(s.token, CASE s.customer_id WHEN 'erase-me-7f3a' THEN 3 WHEN 'keep-one' THEN 10 ELSE 8 END,
                       'comment-of-' || s.customer_id)
  FROM survey s WHERE s.token LIKE 'pf-token-%' AND s.status = 'sent';
-- an imported historical answer of X (no survey)
INSERT INTO response (customer_id, score, comment, channel, responded_at)
VALUES ('erase-me-7f3a', 9, 'old comment-of-erase-me-7f3a', 'sms', '2024-01-01'), ('keep-two', 0, 'old keep', 'sms', '2024-01-01');
INSERT INTO customer_contact VALUES ('erase-me-7f3a', now()), ('keep-one', now());
INSERT INTO opt_out (customer_id) VALUES ('erase-me-7f3a'), ('keep-two');
INSERT INTO capture_error (source_id, payment_key, customer_id, error, sqlstate)
SELECT p.id, k, c, e, '22P02' FROM payment_source p,
  (VALUES ('pf-raw-1', NULL, 'invalid input syntax for type bigint: "erase-me-7f3a"'),
          ('pf-pay-erase-me-7f3a-9', NULL, 'amount: division by zero'),
          ('pf-raw-7', 'erase-me-7f3a', 'amount: division by zero'),
          ('pf-raw-2', NULL, 'invalid input syntax for type bigint: "keep-one"'),
          ('pf-raw-8', 'keep-two', 'amount: division by zero')) v(k, c, e)
 WHERE p.name = 'pf';

-- X's detractor answer got a follow-up; an agent's notes quote the id and the comment
CREATE TEMP TABLE pf_claimed AS SELECT * FROM claim_follow_ups('pf-agent', 1000);
CREATE TEMP TABLE pf_noted AS
  SELECT update_follow_up(c.id, 'pf-agent', 'contacted', 'called erase-me-7f3a about comment-of-erase-me-7f3a')
    FROM pf_claimed c WHERE c.customer_id = 'erase-me-7f3a';
CREATE TEMP TABLE x_follow_ups AS SELECT id FROM pf_claimed WHERE customer_id = 'erase-me-7f3a';
CREATE TEMP TABLE x_events AS SELECT id FROM payment_event WHERE customer_id = 'erase-me-7f3a';
CREATE TEMP TABLE x_secrets AS
  SELECT token AS s FROM survey WHERE customer_id = 'erase-me-7f3a'
  UNION ALL SELECT comment FROM response WHERE customer_id = 'erase-me-7f3a';
-- what the others have, table by table, before
CREATE FUNCTION pg_temp.others() RETURNS SETOF text LANGUAGE sql AS $$
  SELECT 'event ' || (e.payment_key, e.kind, e.customer_id, e.amount, e.attributes, e.survey_id IS NOT NULL)::text FROM nps_billing.payment_event e WHERE e.customer_id LIKE 'keep-%'
  UNION ALL SELECT 'survey ' || s::text FROM nps_billing.survey s WHERE s.customer_id LIKE 'keep-%'
  UNION ALL SELECT 'response ' || r::text FROM nps_billing.response r WHERE r.customer_id LIKE 'keep-%'
  UNION ALL SELECT 'contact ' || c::text FROM nps_billing.customer_contact c WHERE c.customer_id LIKE 'keep-%'
  UNION ALL SELECT 'opt_out ' || o::text FROM nps_billing.opt_out o WHERE o.customer_id LIKE 'keep-%'
  UNION ALL SELECT 'error ' || (ce.payment_key, ce.error)::text FROM nps_billing.capture_error ce WHERE ce.payment_key IN ('pf-raw-2', 'pf-raw-8') $$;
CREATE TEMP TABLE others_before AS SELECT * FROM pg_temp.others() o;
CREATE TEMP TABLE nps_before AS
  SELECT nps(score) AS nps, count(*) AS n, array_agg(score ORDER BY responded_at, score) AS scores, array_agg(category::text ORDER BY responded_at, score) AS cats FROM response;

-- the search finds X everywhere before, so it can fail
SELECT set_eq($$SELECT * FROM pg_temp.traces('erase-me-7f3a')$$,
  ARRAY['nps_billing.capture_error', 'nps_billing.customer_contact', 'nps_billing.customer_latest_answer',
        'nps_billing.follow_up_note', 'nps_billing.opt_out', 'nps_billing.payment_event', 'nps_billing.response', 'nps_billing.survey'],
  'before: the id is found in eight tables (a follow-up note quotes it)');
SELECT is((SELECT count(*)::int FROM x_follow_ups), 1, 'fixture: X''s detractor answer has a follow-up');
SELECT is((SELECT count(*)::int FROM x_secrets), 4, 'fixture: X has 2 tokens and 2 comments');
SELECT is((SELECT count(survey_id)::int FROM payment_event WHERE id IN (SELECT id FROM x_events)), 2, 'fixture: 2 of its events link to its surveys');

SELECT results_eq($$SELECT * FROM forget_customer('erase-me-7f3a')$$, $$VALUES (3, 2, 2)$$,
                  'forget_customer returns (events, surveys, responses) it erased');
SELECT is_empty($$SELECT * FROM pg_temp.traces('erase-me-7f3a')$$, 'after: no column of any table contains the id');
SELECT is((SELECT count(*)::int FROM follow_up WHERE id IN (SELECT id FROM x_follow_ups))
          + (SELECT count(*)::int FROM follow_up_note WHERE follow_up_id IN (SELECT id FROM x_follow_ups)), 0,
          'after: its follow-up and the follow-up''s notes are gone');
SELECT is_empty($$SELECT t FROM x_secrets, pg_temp.traces(x_secrets.s) t$$, 'after: no table contains its tokens or comments');
SELECT set_eq($$SELECT * FROM pg_temp.others()$$, $$SELECT * FROM others_before$$, 'other customers'' rows are unchanged');
SELECT results_eq($$SELECT nps(score), count(*), array_agg(score ORDER BY responded_at, score), array_agg(category::text ORDER BY responded_at, score) FROM response$$,
                  $$SELECT * FROM nps_before$$, 'NPS, count, scores and categories over all responses unchanged');
SELECT results_eq($$SELECT score::int, category::text, customer_id, comment, survey_id, channel FROM response WHERE customer_id IS NULL AND comment IS NULL ORDER BY responded_at$$,
                  $$VALUES (9, 'promoter'::text, NULL::text, NULL::text, NULL::bigint, NULL::text), (3, 'detractor', NULL, NULL, NULL, NULL)$$,
                  'its responses keep only score, category and dates');
SELECT results_eq($$SELECT kind, amount, customer_id, attributes, survey_id, payment_key = 'forgotten-' || id FROM payment_event WHERE id IN (SELECT id FROM x_events) ORDER BY amount$$,
  $$VALUES ('succeeded'::text, 10::numeric, NULL::text, NULL::jsonb, NULL::bigint, true), ('succeeded', 20, NULL, NULL, NULL, true), ('failed', 30, NULL, NULL, NULL, true)$$,
  'its payment events keep kind, amount and date; id, attributes and a payment key embedding the id gone');
SELECT is((SELECT array_agg(payment_key ORDER BY payment_key) FROM capture_error WHERE payment_key LIKE 'pf-%'), ARRAY['pf-raw-2', 'pf-raw-8'],
          'its capture errors (by customer id, payment key or quoting the id) are gone, the others'' stay');
SELECT results_eq($$SELECT * FROM forget_customer('erase-me-7f3a')$$, $$VALUES (0, 0, 0)$$, 'a second call finds nothing: idempotent');
SELECT results_eq($$SELECT * FROM forget_customer('never-seen')$$, $$VALUES (0, 0, 0)$$, 'an unknown customer is not an error');
SELECT throws_ok($$SELECT * FROM forget_customer(NULL)$$, '22004', 'forget_customer: customer must not be NULL', 'NULL customer: 22004');
SELECT throws_ok($$SELECT * FROM forget_customer('')$$, '22023', 'forget_customer: customer must not be empty', 'empty customer: 22023');
-- ids with regex metacharacters are matched literally
INSERT INTO capture_error (source_id, payment_key, error) SELECT id, 'pf-raw-4', 'bad value "a.b*"' FROM payment_source WHERE name = 'pf';
INSERT INTO capture_error (source_id, payment_key, error) SELECT id, 'pf-raw-5', 'bad value "axbbb"' FROM payment_source WHERE name = 'pf';
INSERT INTO capture_error (source_id, payment_key, error) SELECT id, 'pf-raw-6', 'bad value "a.b*c"' FROM payment_source WHERE name = 'pf';
SELECT lives_ok($$SELECT * FROM forget_customer('a.b*')$$, 'an id with regex metacharacters');
INSERT INTO capture_error (source_id, payment_key, error) SELECT id, 'pf-raw-9', 'bad value "' || repeat('z', 100000) || '"' FROM payment_source WHERE name = 'pf';
SELECT results_eq($$SELECT * FROM forget_customer(repeat('z', 100000))$$, $$VALUES (0, 0, 0)$$, 'a 100,000-character id works');
SELECT is((SELECT count(*)::int FROM capture_error WHERE payment_key = 'pf-raw-9'), 0, '... and its capture error is erased');
SELECT is((SELECT array_agg(payment_key ORDER BY payment_key) FROM capture_error WHERE payment_key IN ('pf-raw-4', 'pf-raw-5', 'pf-raw-6')), ARRAY['pf-raw-5', 'pf-raw-6'],
          'is matched literally and as a whole word (a longer id that starts like it is someone else)');

-- purge: retention
CREATE TEMP TABLE pp_pay (id int);
INSERT INTO payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr, throttle)
VALUES ('pp', 'pp_pay', 'x', 'y', 'z', '30 days');
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, occurred_at)
SELECT p.id, 'pp-' || d, 'succeeded', 'pp-cust-' || d, d, now() - d * interval '1 day'
  FROM payment_source p, unnest(ARRAY[5, 10, 200, 400, 500]) d WHERE p.name = 'pp';
INSERT INTO survey (token, source_id, event_id, customer_id, channel, status, send_after, expires_at, created_at)
SELECT 'pp-tok-' || e.amount, e.source_id, e.id, e.customer_id, 'email',
       CASE WHEN e.amount = 500 THEN 'pending' ELSE 'responded' END,
       e.occurred_at, now() + interval '1 day',
       CASE WHEN e.amount = 500 THEN now()                       -- 500: a live survey for an old event
            WHEN e.amount = 5 THEN now() - interval '400 days'   -- 5: an old survey, a recent event and answer
            ELSE e.occurred_at END
  FROM payment_event e WHERE e.payment_key LIKE 'pp-%';
UPDATE payment_event e SET survey_id = s.id FROM survey s WHERE s.event_id = e.id AND s.token LIKE 'pp-tok-%';
INSERT INTO response (survey_id, customer_id, score, comment, channel, responded_at)
SELECT s.id, s.customer_id, (s.id % 11)::int, 'pp comment ' || s.customer_id, 'email', e.occurred_at + interval '1 hour'
  FROM survey s JOIN payment_event e ON e.id = s.event_id WHERE s.token LIKE 'pp-tok-%' AND s.status = 'responded';
INSERT INTO capture_error (source_id, payment_key, error, at)
SELECT id, 'pp-err-' || d, 'e', now() - d * interval '1 day' FROM payment_source, unnest(ARRAY[10, 400]) d WHERE name = 'pp';
INSERT INTO customer_contact SELECT 'pp-cust-' || d, now() - d * interval '1 day' FROM unnest(ARRAY[10, 200, 400]) d;
CREATE TEMP TABLE nps_before_purge AS SELECT nps(score), count(*) FROM response;
SELECT throws_ok($$SELECT * FROM purge(NULL)$$, '22004', 'purge: older_than must not be NULL', 'purge NULL: 22004');
SELECT throws_ok($$SELECT * FROM purge('0')$$, '22023', 'purge: older_than 00:00:00 must be positive, at least 1 day and at most 1000 years, with no negative part', 'purge zero: 22023');
SELECT throws_ok($$SELECT * FROM purge('-1 day')$$, '22023', NULL, 'purge negative: 22023');
SELECT results_eq($$SELECT * FROM purge('365 days')$$, $$VALUES (1, 2, 2, 1, 1)$$,
  'purge(365 days): (events, surveys, responses, capture_errors, contacts)');
SELECT results_eq($$SELECT payment_key FROM payment_event WHERE payment_key LIKE 'pp-%' ORDER BY amount$$,
  $$VALUES ('pp-5'::text), ('pp-10'), ('pp-200'), ('pp-500')$$, 'the old event is gone; the event of a live survey is kept');
SELECT results_eq($$SELECT e.payment_key, e.survey_id IS NULL, r.survey_id IS NULL, r.comment FROM payment_event e JOIN response r ON r.customer_id = e.customer_id WHERE e.payment_key = 'pp-5'$$,
  $$VALUES ('pp-5'::text, true, true, 'pp comment pp-cust-5'::text)$$, 'links to a purged survey are cleared; a recent answer keeps its comment');
SELECT results_eq($$SELECT token FROM survey WHERE token LIKE 'pp-tok-%' ORDER BY token$$,
  $$VALUES ('pp-tok-10'::text), ('pp-tok-200'), ('pp-tok-500')$$, 'the old surveys are gone');
SELECT is((SELECT count(*)::int FROM response WHERE comment LIKE 'pp comment %'), 3, 'recent comments stay');
SELECT is((SELECT count(*)::int FROM response r WHERE r.responded_at < now() - interval '365 days' AND (comment IS NOT NULL OR customer_id IS NOT NULL OR survey_id IS NOT NULL)), 0,
          'old responses are anonymised (no comment, customer, survey)');
SELECT results_eq($$SELECT nps(score), count(*) FROM response$$, $$SELECT * FROM nps_before_purge$$, 'purge keeps every score: NPS unchanged');
SELECT results_eq($$SELECT customer_id FROM customer_contact WHERE customer_id LIKE 'pp-%' ORDER BY 1$$,
  $$VALUES ('pp-cust-10'::text), ('pp-cust-200')$$, 'contacts younger than the retention (or a throttle) stay');
SELECT results_eq($$SELECT * FROM purge('365 days')$$, $$VALUES (0, 0, 0, 0, 0)$$, 'purge is idempotent');
SELECT * FROM finish();
ROLLBACK;
