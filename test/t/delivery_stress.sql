-- Queue correctness under concurrency: 20,000 due surveys drained by 4 reference senders
-- (examples/sender/sender.pl --once) running at the same time. No timing is asserted.
-- The fixture is committed (the senders are other sessions) and removed at the end.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE TABLE public.delivery_stress_pay (id int);
INSERT INTO nps_billing.payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES ('delivery_stress', 'public.delivery_stress_pay', 'x', 'y', 'z');
INSERT INTO nps_billing.payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at)
SELECT p.id, 'ds-' || g, 'succeeded', 'ds-cust-' || g, g % 100, 'EUR', now() - interval '2 hours'
  FROM nps_billing.payment_source p, generate_series(1, 20003) g WHERE p.name = 'delivery_stress';
INSERT INTO nps_billing.survey (token, source_id, event_id, customer_id, channel, send_after, expires_at)
SELECT 'ds-tok-' || e.id, e.source_id, e.id, e.customer_id,
       CASE WHEN e.payment_key IN ('ds-20001', 'ds-20002', 'ds-20003') THEN 'sms' ELSE 'email' END,
       CASE WHEN e.payment_key IN ('ds-20001', 'ds-20002', 'ds-20003') THEN now() + interval '1 day' ELSE now() - interval '1 hour' END,
       now() + interval '14 days'
  FROM nps_billing.payment_event e JOIN nps_billing.payment_source p ON p.id = e.source_id WHERE p.name = 'delivery_stress';

-- the senders connect as a role with exactly the sender grants of README.md (Privacy)
CREATE ROLE nps_stress_sender LOGIN PASSWORD 'stress-test-only';
GRANT USAGE ON SCHEMA nps_billing TO nps_stress_sender;
GRANT EXECUTE ON FUNCTION nps_billing.claim_surveys(text, integer, interval),
                          nps_billing.mark_sent(bigint, text),
                          nps_billing.mark_failed(bigint, text, text, interval),
                          nps_billing.mark_sent(bigint[], text),
                          nps_billing.mark_failed(bigint[], text, text, interval) TO nps_stress_sender;
\setenv PGUSER nps_stress_sender
\setenv PGPASSWORD stress-test-only
-- a directory of this run's own (several clusters may run the suite at once)
SELECT '/tmp/nps_delivery_stress_' || current_setting('port') || '_' || pg_backend_pid() AS outdir \gset
\setenv NPS_STRESS_DIR :outdir
\! rm -rf "$NPS_STRESS_DIR" && mkdir -p "$NPS_STRESS_DIR"
\! for i in 1 2 3 4; do perl examples/sender/sender.pl --once --worker stress-$i --batch 200 --outbox "$NPS_STRESS_DIR/out$i" 2>"$NPS_STRESS_DIR/err$i" & done; wait

CREATE TEMP TABLE outbox (sent_at text, worker text, survey_id bigint, customer text, link text, source text, amount numeric, currency text);
\copy outbox FROM PROGRAM 'cat "$NPS_STRESS_DIR"/out*/*.tsv'

-- the three sms surveys become due now; one sender with an sms outage reports them failed
UPDATE nps_billing.survey SET send_after = now() - interval '1 second' WHERE channel = 'sms' AND token LIKE 'ds-tok-%';
\! perl examples/sender/sender.pl --once --worker stress-sms --fail-channel sms --retry-after '2 hours' --outbox "$NPS_STRESS_DIR/out-sms" 2>"$NPS_STRESS_DIR/err-sms"

-- a sender that cannot claim (here: --batch 0) says why and exits non-zero
\! perl examples/sender/sender.pl --once --batch 0 --outbox "$NPS_STRESS_DIR/out-bad" 2>"$NPS_STRESS_DIR/err-bad"; echo $? >"$NPS_STRESS_DIR/rc-bad"

BEGIN;
SELECT plan(12);
SELECT is((SELECT count(*)::int FROM nps_billing.survey WHERE token LIKE 'ds-tok-%' AND channel = 'email' AND status = 'sent'), 20000,
          'all 20,000 surveys are sent');
SELECT is((SELECT count(*)::int FROM nps_billing.survey WHERE token LIKE 'ds-tok-%' AND channel = 'email' AND status <> 'sent'), 0,
          'none left behind (pending or sending)');
SELECT is((SELECT count(*)::int FROM nps_billing.survey WHERE token LIKE 'ds-tok-%' AND channel = 'email' AND attempts <> 1), 0,
          'every survey was claimed exactly once (attempts = 1)');
SELECT is((SELECT count(*)::int FROM outbox), 20000, 'the senders sent 20,000 messages');
SELECT is((SELECT count(DISTINCT survey_id)::int FROM outbox), 20000, '... to 20,000 distinct surveys: no survey sent twice');
SELECT is_empty($$SELECT id FROM nps_billing.survey WHERE token LIKE 'ds-tok-%' AND channel = 'email'
                  EXCEPT SELECT survey_id FROM outbox$$, 'every survey is in the outbox');
SELECT is_empty($$SELECT o.survey_id FROM outbox o JOIN nps_billing.survey s ON s.id = o.survey_id
                  WHERE o.link <> 'https://nps.example.com/r/' || s.token OR o.customer <> s.customer_id OR o.source <> 'delivery_stress'$$,
                'each message carries its own token, customer and source');
SELECT is((SELECT count(*)::int FROM nps_billing.survey WHERE token LIKE 'ds-tok-%' AND channel = 'email' AND lease_owner IS NOT NULL), 0,
          'no lease is left held');
SELECT results_eq($$SELECT status, attempts, last_error, send_after > now() + interval '1 hour' FROM nps_billing.survey WHERE channel = 'sms' AND token LIKE 'ds-tok-%'$$,
  $$VALUES ('pending'::text, 1, 'simulated sms provider outage'::text, true), ('pending', 1, 'simulated sms provider outage', true),
           ('pending', 1, 'simulated sms provider outage', true)$$,
  'a failed send goes back to pending with the error and the sender''s retry delay');
SELECT is((SELECT string_agg(w, '') FROM (SELECT pg_read_file(:'outdir' || '/' || f) w FROM unnest(ARRAY['err1', 'err2', 'err3', 'err4', 'err-sms']) f) x), '',
          'the senders reported no error');
SELECT is(pg_read_file(:'outdir' || '/rc-bad'), E'1\n', 'a sender whose claim fails exits with status 1 ...');
SELECT matches(pg_read_file(:'outdir' || '/err-bad'), 'claim_surveys: max 0 is out of range 1..10000', '... and shows the error');
SELECT diag('surveys per worker: ' || string_agg(worker || '=' || n, ', ' ORDER BY worker)) FROM (SELECT worker, count(*) n FROM outbox GROUP BY worker) x;
SELECT * FROM finish();
ROLLBACK;

DELETE FROM nps_billing.survey WHERE token LIKE 'ds-tok-%';
DELETE FROM nps_billing.payment_event WHERE payment_key LIKE 'ds-%' AND source_id = (SELECT id FROM nps_billing.payment_source WHERE name = 'delivery_stress');
DELETE FROM nps_billing.payment_source WHERE name = 'delivery_stress';
DROP TABLE public.delivery_stress_pay;
\! rm -rf "$NPS_STRESS_DIR"
DROP OWNED BY nps_stress_sender;
DROP ROLE nps_stress_sender;
