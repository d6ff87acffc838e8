-- End to end: payments written to a tracked table become surveys (capture trigger), a sender
-- claims and reports them, the customer answers by token, and the person can be erased.
BEGIN;
SELECT plan(13);
SET LOCAL search_path = nps_billing, public;

CREATE TABLE public.de_payments (
  id bigserial PRIMARY KEY, customer text, amount_cents integer, currency text,
  status text, method text, created timestamptz NOT NULL DEFAULT now());
SELECT lives_ok($$SELECT nps_billing.track_payments('public.de_payments',
    customer => 'customer', payment_key => 'id::text', succeeded_when => $q$status = 'succeeded'$q$,
    amount => 'amount_cents / 100.0', currency => 'currency', paid_at => 'created',
    attributes => $q$jsonb_build_object('method', method)$q$, name => 'de_stripe')$$, 'track_payments on a payments table');
-- surveys due at once (the default delay is an hour)
UPDATE payment_source SET delay = '0' WHERE name = 'de_stripe';

INSERT INTO public.de_payments (customer, amount_cents, currency, status, method)
VALUES ('de-ada-e2e', 4900, 'EUR', 'succeeded', 'card'), ('de-bob-e2e', 1900, 'USD', 'pending', 'sepa_debit');
UPDATE public.de_payments SET status = 'succeeded' WHERE customer = 'de-bob-e2e';

CREATE TEMP TABLE claimed AS SELECT * FROM claim_surveys('e2e-sender', 10);
SELECT results_eq($$SELECT customer_id, channel, source, kind, amount, currency, attributes->>'method', attempts FROM claimed ORDER BY customer_id$$,
  $$VALUES ('de-ada-e2e'::text, 'email'::text, 'de_stripe'::text, 'succeeded'::text, 49.00::numeric, 'EUR'::text, 'card'::text, 1),
           ('de-bob-e2e', 'email', 'de_stripe', 'succeeded', 19.00, 'USD', 'sepa_debit', 1)$$,
  'both captured payments are claimed with their payment context');
SELECT ok((SELECT bool_and(token ~ '^[A-Za-z0-9_-]{22,}$') FROM claimed), 'tokens are URL-safe');
SELECT is((SELECT count(*)::int FROM claim_surveys('e2e-other', 10)), 0, 'a second sender gets nothing');
SELECT lives_ok($$SELECT mark_sent(id, 'e2e-sender') FROM claimed$$, 'the sender reports both sent');
SELECT is((SELECT count(*)::int FROM survey s JOIN claimed c USING (id) WHERE s.status = 'sent'), 2, 'both surveys are sent');

SELECT ok(record_response((SELECT token FROM claimed WHERE customer_id = 'de-ada-e2e'), 10, 'smooth checkout') > 0, 'ada answers 10');
SELECT ok(record_response((SELECT token FROM claimed WHERE customer_id = 'de-bob-e2e'), 3, 'double charge?') > 0, 'bob answers 3');
SELECT results_eq($$SELECT customer_id, score::int, category::text FROM response WHERE survey_id IN (SELECT id FROM claimed) ORDER BY customer_id$$,
  $$VALUES ('de-ada-e2e'::text, 10, 'promoter'::text), ('de-bob-e2e', 3, 'detractor')$$, 'responses stored against the captured surveys');

-- a second succeeded payment within the throttle window: no new survey
INSERT INTO public.de_payments (customer, amount_cents, currency, status, method) VALUES ('de-ada-e2e', 4900, 'EUR', 'succeeded', 'card');
SELECT is((SELECT count(*)::int FROM claim_surveys('e2e-sender', 10)), 0, 'throttled: no second survey for ada');

-- erase ada: nothing of her left in the extension's tables, bob untouched, NPS unchanged
CREATE TEMP TABLE nps_before AS SELECT nps(score) AS v FROM response WHERE survey_id IN (SELECT id FROM claimed) OR survey_id IS NULL;
CREATE TEMP TABLE ada_secrets AS SELECT 'de-ada-e2e'::text AS s UNION ALL SELECT token FROM claimed WHERE customer_id = 'de-ada-e2e' UNION ALL SELECT 'smooth checkout';
SELECT results_eq($$SELECT events, surveys, responses FROM forget_customer('de-ada-e2e')$$, $$VALUES (2, 1, 1)$$,
                  'forget_customer erases her two events, one survey, one response');
SELECT is_empty($$
  SELECT c.relname, a.s FROM pg_class c, ada_secrets a
   WHERE c.relnamespace = 'nps_billing'::regnamespace AND c.relkind IN ('r', 'p', 'm')
     AND (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM nps_billing.%I x WHERE strpos(x::text, %L) > 0', c.relname, a.s), false, true, '')))[1]::text::int > 0$$,
  'no table of the schema contains her id, token or comment');
SELECT is((SELECT count(*)::int FROM response WHERE customer_id = 'de-bob-e2e' AND comment = 'double charge?'), 1, 'bob''s response is untouched');

SELECT * FROM finish();
ROLLBACK;
