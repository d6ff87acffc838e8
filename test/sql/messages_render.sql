-- Survey messages (docs/messages.md): contact data captured from the billing row, templates by
-- source / channel / locale with their fallback, rendering (amounts by currency, dates in the
-- recipient's zone and language, HTML escaping of hostile values), links, render_survey's lease
-- check, opt_out_by_token. Everything in one transaction, rolled back at the end.
BEGIN;
-- the surveys of other tests are not this test's business
DELETE FROM nps_billing.survey;
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

CREATE TABLE msg_pay (id text PRIMARY KEY, cust text, email text, lang text, tz text,
                      amount numeric, cur text, plan text, paid timestamptz, status text);
SELECT nps_billing.track_payments('msg_pay', 'cust', 'id', $$status = 'paid'$$,
  amount => 'amount', currency => 'cur', paid_at => 'paid',
  attributes => $$jsonb_build_object('plan', plan)$$, name => 'shop',
  recipient => 'email', locale => 'lang', time_zone => 'tz') > 0 AS tracked;
UPDATE nps_billing.payment_source SET delay = '0', answer_base_url = 'https://nps.example.com/a/'
 WHERE name = 'shop';
CREATE TABLE msg_sms (id text PRIMARY KEY, cust text, phone text, lang text, amount numeric, cur text, ok boolean);
SELECT nps_billing.track_payments('msg_sms', 'cust', 'id', 'ok', amount => 'amount', currency => 'cur',
  name => 'sms_shop', recipient => 'phone', locale => 'lang') > 0 AS tracked;
UPDATE nps_billing.payment_source SET delay = '0', channel = 'sms', answer_base_url = 'https://nps.example.com'
 WHERE name = 'sms_shop';

-- templates: the built-in ones (en, de, fr, es) and a few of the DBA's
SELECT channel, locale, subject FROM nps_billing.message_template_builtin ORDER BY channel, locale;
INSERT INTO nps_billing.message_template (source_id, channel, locale, subject, body_text, body_html)
SELECT NULL::integer, 'email', 'en', 'Your {{attributes.plan}} plan: how did we do?',
       E'You paid {{amount}} at {{paid_at}} ({{attributes.plan}}).\n{{score_links}}\nAnswer later: {{answer_url}}\nUnsubscribe: {{unsubscribe_url}}',
       E'<p>Plan: <b>{{attributes.plan}}</b>, paid {{paid_at}}</p>\n<p title="{{attributes.plan}}">{{amount}}</p>\n<a href="{{score_url.10}}">10</a> <a href="{{unsubscribe_url}}">Unsubscribe</a>'
UNION ALL
SELECT NULL, 'email', 'ja', 'ご意見をお聞かせください',
       E'{{amount}}のお支払い（{{paid_at}}）ありがとうございました。\n{{score_links}}\n配信停止: {{unsubscribe_url}}', NULL
UNION ALL
SELECT p.id, 'email', 'pt', 'Sua opinião', E'Pagamento de {{amount}} em {{paid_date}}. {{answer_url}}', NULL
  FROM nps_billing.payment_source p WHERE p.name = 'shop';

-- templates are checked when saved
SELECT pg_temp.try($$INSERT INTO nps_billing.message_template (channel, subject, body_text) VALUES ('email', 'Hi', 'Paid {{amont}}')$$) AS unknown_placeholder;
SELECT pg_temp.try($$INSERT INTO nps_billing.message_template (channel, subject, body_text) VALUES ('email', 'Hi', 'Paid {{amount')$$) AS unterminated;
SELECT pg_temp.try($$INSERT INTO nps_billing.message_template (channel, subject, body_text) VALUES ('email', 'Hi', '{{}}')$$) AS empty_placeholder;
SELECT pg_temp.try($$INSERT INTO nps_billing.message_template (channel, subject, body_text) VALUES ('email', 'Rate {{score_links}}', 'x')$$) AS links_in_subject;
SELECT pg_temp.try($$INSERT INTO nps_billing.message_template (channel, subject, body_text) VALUES ('email', E'Hi\nBcc: all@example.com', 'x')$$) AS subject_line_break;
SELECT pg_temp.try($$INSERT INTO nps_billing.message_template (channel, body_text, body_html) VALUES ('email', 'x', '<p>{{attributes.plan}}</p>')$$) AS email_without_subject;
SELECT pg_temp.try($$INSERT INTO nps_billing.message_template (channel, subject, body_text) VALUES ('sms', 'Hi', 'x')$$) AS sms_with_subject;
SELECT pg_temp.try($$INSERT INTO nps_billing.message_template (channel, locale, body_text) VALUES ('sms', 'EN_us', 'x')$$) AS locale_not_normalised;
SELECT pg_temp.try($$INSERT INTO nps_billing.message_template (channel, locale, subject, body_text) VALUES ('email', 'en', 'dup', 'x')$$) AS duplicate;
SELECT pg_temp.try($$UPDATE nps_billing.message_template SET body_text = body_text || ' {{attributes.}}' WHERE locale = 'ja'$$) AS update_checked_too;
SELECT pg_temp.try($$INSERT INTO nps_billing.message_template (channel, body_text) VALUES ('sms', '{{open_braces}}literal}} {{ amount }} {{score_url.11}}')$$) AS score_url_11;

-- payments: two across New York's DST change, two across Berlin's, JPY, KWD, rounding,
-- a hostile attribute, values capture cannot use
INSERT INTO msg_pay VALUES
  ('p1',  'm-ny1', 'ny1@example.com',   'en-US', 'America/New_York', 1234.5,   'usd', 'pro',   '2025-03-09 06:30+00', 'paid'),
  ('p2',  'm-ny2', 'ny2@example.com',   'en_us', 'america/new_york', 1234.5,   'USD', 'pro',   '2025-03-09 07:30+00', 'paid'),
  ('p3',  'm-de1', 'de1@example.com',   'de',    'Europe/Berlin',    1234.5,   'EUR', 'basic', '2025-03-30 00:30+00', 'paid'),
  ('p4',  'm-de2', 'de2@example.com',   'de-DE', 'Europe/Berlin',    0.5,      'EUR', 'basic', '2025-03-30 01:30+00', 'paid'),
  ('p5',  'm-ja',  'ja@example.com',    'ja-JP', 'Asia/Tokyo',       1234.5,   'JPY', 'pro',   '2025-01-15 23:59+00', 'paid'),
  ('p6',  'm-kw',  'kw@example.com',    'fr',    'Asia/Kuwait',      12.3456,  'KWD', 'pro',   '2025-06-01 12:00+00', 'paid'),
  ('p7',  'm-mx',  'mx@example.com',    'es-MX', 'America/Mexico_City', 99.995, 'MXN', 'pro',  '2025-06-01 12:00+00', 'paid'),
  ('p8',  'm-br',  'br@example.com',    'pt-BR', 'America/Sao_Paulo', 1000000, 'BRL', 'pro',   '2025-06-01 12:00+00', 'paid'),
  ('p9',  'm-gb',  ' gb@example.com  ', 'en-GB', 'Europe/London',    19,       'GBP', $$<script>alert("x")</script> & 'co'$$, '2025-07-01 12:00+00', 'paid'),
  ('p10', 'm-bad', 'bad@example.com',   'not a locale!', 'Mars/Olympus', 5,    'XYZ', 'pro',   '2025-06-01 12:00+00', 'paid'),
  ('p11', 'm-norcpt', '   ',            'en',    'UTC',              5,        'USD', 'pro',   '2025-06-01 12:00+00', 'paid'),
  ('p12', 'm-inj', E'a@example.com\r\nBcc: all@example.com', 'en', 'UTC',  5,  'USD', 'pro',   '2025-06-01 12:00+00', 'paid'),
  ('p13', 'm-nul', NULL,                'en',    'UTC',              5,        'USD', 'pro',   '2025-06-01 12:00+00', 'paid');
INSERT INTO msg_sms VALUES ('s1', 's-de', '+49 30 1234567', 'de', 42, 'EUR', true),
                           ('s2', 's-fr', '+33 1 23 45 67 89', 'fr-CA', 1999.99, 'CAD', true),
                           ('s3', 's-en', '+1 212 555 0100', NULL, 7, 'USD', true);

-- what capture kept: cleaned values, NULL for the unusable ones; no survey without a recipient
SELECT e.customer_id, e.skip_reason, v.recipient, v.locale, v.time_zone
  FROM nps_billing.payment_event e LEFT JOIN nps_billing.survey v ON v.id = e.survey_id
 ORDER BY e.customer_id COLLATE "C";
SELECT count(*) AS capture_errors FROM nps_billing.capture_error c
  JOIN nps_billing.payment_source p ON p.id = c.source_id WHERE p.name IN ('shop', 'sms_shop');

-- the messages, as a sender gets them (tokens shown as <token>)
CREATE TEMP TABLE msgs AS
SELECT m.customer_id, m.channel, m.recipient, m.locale, m.source,
       replace(m.subject, m.token, '<token>') AS subject,
       replace(m.body_text, m.token, '<token>') AS body_text,
       replace(m.body_html, m.token, '<token>') AS body_html, m.id, m.token
  FROM nps_billing.claim_messages('w1', 100) m;
\pset format unaligned
\pset tuples_only on
SELECT '== ' || customer_id || ' (' || source || ', ' || channel || ', ' || coalesce(locale, 'no locale') || ') to '
       || coalesce(recipient, '-') || E'\n' || coalesce('Subject: ' || subject || E'\n', '')
       || body_text || coalesce(E'\n-- html --\n' || body_html, '') || E'\n'
  FROM msgs ORDER BY customer_id COLLATE "C";
\pset format aligned
\pset tuples_only off

-- render_survey: the same message for the lease holder
SELECT (SELECT r.body_text FROM nps_billing.render_survey(m.id, 'w1') r) = replace(m.body_text, '<token>', m.token) AS same_text,
       (SELECT r.body_html FROM nps_billing.render_survey(m.id) r) = replace(m.body_html, '<token>', m.token) AS same_html
  FROM msgs m WHERE m.customer_id = 'm-de1';
-- not held: one error for all (another worker, unknown id, already reported)
SELECT nps_billing.mark_sent(id, 'w1') FROM msgs WHERE customer_id = 'm-de2';
SELECT replace(pg_temp.try(format('SELECT * FROM nps_billing.render_survey(%s, %L)', id, 'w2')), id::text, '<id>') AS other_worker
  FROM msgs WHERE customer_id = 'm-de1';
SELECT pg_temp.try('SELECT * FROM nps_billing.render_survey(-1, ''w1'')') AS unknown_id;
SELECT replace(pg_temp.try(format('SELECT * FROM nps_billing.render_survey(%s, %L)', id, 'w1')), id::text, '<id>') AS reported
  FROM msgs WHERE customer_id = 'm-de2';
SELECT pg_temp.try('SELECT * FROM nps_billing.render_survey(NULL)') AS null_id;
SELECT pg_temp.try('SELECT * FROM nps_billing.claim_messages(NULL)') AS null_worker,
       pg_temp.try('SELECT * FROM nps_billing.claim_messages(''w1'', 0)') AS zero_max;
-- links need the source's answer_base_url
UPDATE nps_billing.payment_source SET answer_base_url = NULL WHERE name = 'sms_shop';
SELECT pg_temp.try(format('SELECT * FROM nps_billing.render_survey(%s)', id)) AS no_base_url FROM msgs WHERE customer_id = 's-fr';
SELECT pg_temp.try($$UPDATE nps_billing.payment_source SET answer_base_url = 'https://x.example/"><script>' WHERE name = 'sms_shop'$$) AS hostile_base_url;
SELECT pg_temp.try($$UPDATE nps_billing.payment_source SET answer_base_url = 'javascript:alert(1)' WHERE name = 'sms_shop'$$) AS not_http;

-- the unsubscribe link: opts the customer out, idempotent, the same for an unknown token
INSERT INTO msg_pay VALUES ('p14', 'm-ny1', 'ny1@example.com', 'en', 'UTC', 1, 'USD', 'pro', now(), 'paid');
SELECT nps_billing.opt_out_by_token(token) AS first, nps_billing.opt_out_by_token(token) AS again,
       nps_billing.opt_out_by_token('no-such-token') AS unknown
  FROM msgs WHERE customer_id = 'm-ny1';
SELECT customer_id FROM nps_billing.opt_out WHERE customer_id LIKE 'm-%' ORDER BY 1;
SELECT pg_temp.try('SELECT nps_billing.opt_out_by_token(NULL)') AS null_token;
-- a later payment of the opted-out customer is not surveyed
INSERT INTO msg_pay VALUES ('p15', 'm-ny1', 'ny1@example.com', 'en', 'UTC', 1, 'USD', 'pro', now(), 'paid');
SELECT payment_key, skip_reason FROM nps_billing.payment_event WHERE payment_key IN ('p14', 'p15') ORDER BY 1;

-- the same contact data through the set path (a statement of more than 8 rows)
INSERT INTO msg_pay SELECT 'b' || g, 'm-bulk' || g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'bulk' || g || '@example.com' END,
       CASE g % 2 WHEN 0 THEN 'pt_br' ELSE 'xx yy' END, CASE g % 2 WHEN 0 THEN 'Europe/Paris' ELSE 'Nowhere/Else' END,
       10, 'EUR', 'pro', '2025-06-01', 'paid' FROM generate_series(1, 12) g;
SELECT e.skip_reason, v.recipient IS NOT NULL AS has_recipient, v.locale, v.time_zone, count(*)
  FROM nps_billing.payment_event e LEFT JOIN nps_billing.survey v ON v.id = e.survey_id
 WHERE e.customer_id LIKE 'm-bulk%' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4;
ROLLBACK;
