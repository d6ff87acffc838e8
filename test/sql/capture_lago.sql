-- Capture on Lago (examples/schemas/lago.sql, a copy of the contract's examples/lago.sql).
-- Rails inserts a provider payment as pending and updates payable_payment_status when the
-- provider's webhook arrives; manual payments are inserted already succeeded; ids are uuids and
-- created_at is a timestamp without time zone holding UTC.
\set QUIET on
\set ECHO none
SET client_min_messages = warning;
\i examples/schemas/lago.sql
RESET client_min_messages;
\set ECHO all
\set QUIET off

SELECT nps_billing.track_payments(
  source         => 'public.payments',
  customer       => 'customer_id::text',
  payment_key    => 'id::text',
  succeeded_when => $$payable_payment_status = 'succeeded'$$,
  failed_when    => $$payable_payment_status = 'failed'$$,
  amount         => 'amount_cents / 100.0',
  currency       => 'amount_currency',
  paid_at        => $$created_at AT TIME ZONE 'UTC'$$,
  attributes     => $$jsonb_build_object('payment_type', payment_type, 'provider_status', status)$$,
  name           => 'lago',
  recipient      => '(SELECT c.email FROM public.customers c WHERE c.id = customer_id)',
  locale         => '(SELECT c.document_locale FROM public.customers c WHERE c.id = customer_id)',
  time_zone      => '(SELECT c.timezone FROM public.customers c WHERE c.id = customer_id)') > 0 AS tracked;

-- customers c1..c3 of one organization
\set org '''00000000-0000-0000-0000-0000000000aa'''
-- their rows in customers (e-mail, document locale, time zone), and the batch customers d0..d2
INSERT INTO public.customers (id, external_id, organization_id, billing_entity_id, created_at, updated_at,
                              email, document_locale, timezone)
SELECT (p || n)::uuid, p || n, :org, :org, '2024-01-01', '2024-01-01', e, l, z
  FROM (VALUES ('00000000-0000-0000-0000-c0000000000', '1', 'c1@example.com', 'fr', 'Europe/Paris'),
               ('00000000-0000-0000-0000-c0000000000', '2', 'c2@example.com', 'de', 'Europe/Berlin'),
               ('00000000-0000-0000-0000-c0000000000', '3', 'c3@example.com', 'en', 'America/New_York'),
               ('00000000-0000-0000-0000-d0000000000', '0', 'd0@example.com', NULL, 'UTC'),
               ('00000000-0000-0000-0000-d0000000000', '1', NULL, 'nl', 'Europe/Amsterdam'),
               ('00000000-0000-0000-0000-d0000000000', '2', 'd2@example.com', 'it', 'Not/AZone')) v(p, n, e, l, z);
PREPARE pay(int, int, bigint, text, text, public.payment_payable_payment_status, text) AS
  INSERT INTO public.payments (id, organization_id, customer_id, amount_cents, amount_currency, status,
                               payable_payment_status, payment_type, created_at, updated_at)
  VALUES (('00000000-0000-0000-0000-' || lpad($1::text, 12, '0'))::uuid, '00000000-0000-0000-0000-0000000000aa',
          ('00000000-0000-0000-0000-c0000000000' || $2)::uuid, $3, $4, $5, $6, $7::public.payment_type,
          timestamp '2024-03-01 08:00' + $1 * interval '1 minute', now());

-- provider payments: pending, then the webhook
EXECUTE pay(1, 1, 4900, 'EUR', 'pending', 'pending', 'provider');
EXECUTE pay(2, 2, 9900, 'EUR', 'pending', 'processing', 'provider');
EXECUTE pay(3, 3, 1500, 'USD', 'pending', 'pending', 'provider');
SELECT count(*) AS events_while_pending FROM nps_billing.payment_event e
JOIN nps_billing.payment_source s ON s.id = e.source_id WHERE s.name = 'lago';
UPDATE public.payments SET status = 'succeeded', payable_payment_status = 'succeeded', updated_at = now()
WHERE id = '00000000-0000-0000-0000-000000000001';
UPDATE public.payments SET status = 'failed', payable_payment_status = 'failed', error_code = 'card_declined'
WHERE id = '00000000-0000-0000-0000-000000000002';
-- the retry of c2 succeeds (a new payment row)
EXECUTE pay(4, 2, 9900, 'EUR', 'succeeded', 'succeeded', 'provider');
-- webhook replayed: nothing new
UPDATE public.payments SET updated_at = now() WHERE id IN ('00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000004');
-- a manual payment of c1 inserted succeeded (throttled: c1 was surveyed)
EXECUTE pay(5, 1, 2000, 'EUR', 'succeeded', 'succeeded', 'manual');
-- payment 3 stays pending for ever

-- a month-end job settles 30 payments of 3 new customers in one UPDATE (set path)
INSERT INTO public.payments (id, organization_id, customer_id, amount_cents, amount_currency, status,
                             payable_payment_status, created_at, updated_at)
SELECT ('00000000-0000-0000-0000-' || lpad((100 + g)::text, 12, '0'))::uuid, :org,
       ('00000000-0000-0000-0000-d0000000000' || (g % 3))::uuid, 100 * g, 'EUR', 'pending', 'pending',
       timestamp '2024-03-31 00:00' + g * interval '1 second', now()
FROM generate_series(1, 30) g;
UPDATE public.payments SET payable_payment_status = CASE WHEN amount_cents % 500 = 0 THEN 'failed' ELSE 'succeeded' END::public.payment_payable_payment_status,
       status = 'settled'
WHERE created_at >= '2024-03-31';

SELECT e.payment_key, e.kind, e.customer_id, e.amount, e.currency, e.occurred_at, e.attributes,
       e.survey_id IS NOT NULL AS surveyed, e.skip_reason
FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
WHERE s.name = 'lago' AND e.occurred_at < '2024-03-30'
ORDER BY e.payment_key;
SELECT e.customer_id, e.kind, count(*) AS events, sum(e.amount) AS amount, count(e.survey_id) AS surveyed,
       string_agg(DISTINCT e.skip_reason, ',') AS skip_reasons
FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
WHERE s.name = 'lago' AND e.occurred_at >= '2024-03-30'
GROUP BY 1, 2 ORDER BY 1, 2;
-- the survey of each batch customer goes with its earliest succeeded payment
SELECT v.customer_id, e.payment_key, e.occurred_at
FROM nps_billing.survey v JOIN nps_billing.payment_event e ON e.id = v.event_id
JOIN nps_billing.payment_source s ON s.id = v.source_id
WHERE s.name = 'lago' ORDER BY v.customer_id;

-- the surveys keep the customer's address, locale and time zone (an unknown zone: none); d1 has
-- no address: its payments are skipped with no_recipient
SELECT v.customer_id, v.recipient, v.locale, v.time_zone
FROM nps_billing.survey v JOIN nps_billing.payment_source s ON s.id = v.source_id
WHERE s.name = 'lago' ORDER BY v.customer_id;
SELECT e.customer_id, e.skip_reason, count(*) FROM nps_billing.payment_event e
JOIN nps_billing.payment_source s ON s.id = e.source_id
WHERE s.name = 'lago' AND e.customer_id LIKE '%d00000000001' GROUP BY 1, 2 ORDER BY 2;

\set QUIET on
SELECT nps_billing.untrack_payments('public.payments');
DELETE FROM nps_billing.survey WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'lago');
DELETE FROM nps_billing.customer_contact WHERE customer_id LIKE '00000000-0000-0000-0000-%';
DELETE FROM nps_billing.payment_event WHERE source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'lago');
DELETE FROM nps_billing.payment_source WHERE name = 'lago';
DROP TABLE public.payments, public.invoices, public.customers;
DROP TYPE public.payment_payable_payment_status, public.payment_type, public.customer_type,
  public.customer_account_type, public.tax_status, public.subscription_invoice_issuing_date_anchors,
  public.subscription_invoice_issuing_date_adjustments;
\set QUIET off
