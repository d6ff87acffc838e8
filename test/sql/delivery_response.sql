-- Responses: exact messages of record_response, historical import with plain COPY.
SET search_path = nps_billing, public;
CREATE TABLE delivery_regress_pay (id int);
INSERT INTO payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES ('delivery_regress', 'delivery_regress_pay', 'x', 'y', 'z');
-- explicit ids: messages name them, and other files may have used the sequence
INSERT INTO survey (id, token, source_id, customer_id, channel, status, send_after, expires_at)
SELECT i, t, p.id, 'reg-cust-' || t, 'email', st, now() - interval '1 day', now() + interval '1 day'
  FROM payment_source p, (VALUES (8001, 'reg-a', 'sent'), (8002, 'reg-b', 'expired'), (8003, 'reg-c', 'cancelled')) v(i, t, st)
 WHERE p.name = 'delivery_regress';

-- error messages name the value or the status, never the token or the customer
\set VERBOSITY default
SELECT record_response('reg-a', 11);
SELECT record_response('reg-unknown-token', 5);
SELECT record_response('reg-b', 5) IS NOT NULL;
SELECT record_response('reg-c', 5) IS NOT NULL;
SELECT record_response('reg-a', 9, 'Clear invoice, thanks') IS NOT NULL AS recorded;
SELECT record_response('reg-a', 6, 'Why was I charged twice?') IS NOT NULL AS replaced;
SELECT s.status, r.score, r.category, r.comment, r.channel, r.updated_at IS NOT NULL AS replaced
  FROM response r JOIN survey s ON s.id = r.survey_id WHERE s.token = 'reg-a';

-- historical answers load with plain COPY: no survey, category generated
COPY response (customer_id, score, comment, channel, responded_at) FROM STDIN;
hist-1	10	Love it	email	2024-01-05 10:00:00+00
hist-2	7	\N	sms	2024-01-06 11:30:00+00
hist-3	3	Too expensive	in_app	2024-02-01 09:15:00+00
\.
SELECT customer_id, survey_id, score, category, comment, channel, responded_at, updated_at
  FROM response WHERE customer_id LIKE 'hist-%' ORDER BY customer_id;
SELECT nps(score) FROM response WHERE customer_id LIKE 'hist-%';
-- a bad historical score is refused by the nps_score domain, the whole COPY with it
COPY response (customer_id, score, responded_at) FROM STDIN;
hist-4	9	2024-03-01 00:00:00+00
hist-5	11	2024-03-01 00:00:00+00
\.
SELECT count(*) FROM response WHERE customer_id IN ('hist-4', 'hist-5');
-- the category cannot be supplied
-- (no inline data: psql minor versions differ in what they do with data after a failed COPY)
COPY response (customer_id, score, category, responded_at) FROM '/dev/null';

DELETE FROM response WHERE customer_id LIKE 'hist-%' OR customer_id LIKE 'reg-cust-%';
DELETE FROM survey WHERE token LIKE 'reg-%';
DELETE FROM payment_source WHERE name = 'delivery_regress';
DROP TABLE delivery_regress_pay;
