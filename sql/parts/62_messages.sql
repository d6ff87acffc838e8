-- Survey messages: templates per source, channel and locale, checked when saved (docs/messages.md).
--
-- message_template holds the DBA's templates (dumped with the database); message_template_builtin
-- the ones the extension ships (English, German, French, Spanish; re-created by CREATE EXTENSION,
-- so not dumped). A survey takes the first match of: its locale exactly, its language, the
-- default (locale NULL) - among the DBA's templates (its source's before those for every source),
-- then among the built-in ones (ending with English).

-- true, or the template's problem raised: 42601 a placeholder not closed, 42704 an unknown
-- placeholder, 22023 a placeholder not allowed in that field (src/render.cpp).
CREATE FUNCTION @extschema@._template_ok(template text, field text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'nps_template_ok' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._template_ok(text, text) IS
  'Internal: checks a message template field (subject, body_text, body_html) when it is saved; raises 42601 / 42704 / 22023';

CREATE TABLE @extschema@.message_template (
  id         serial PRIMARY KEY,
  source_id  integer,          -- payment_source.id; NULL: every source
  channel    text NOT NULL CHECK (channel IN ('email', 'in_app', 'sms')),
  locale     text              -- 'de', 'pt-BR' (as _clean_locale writes it); NULL: the default
             CHECK (locale = @extschema@._clean_locale(locale)),
  subject    text CHECK (@extschema@._template_ok(subject, 'subject')),
  body_text  text NOT NULL CHECK (@extschema@._template_ok(body_text, 'body_text')),
  body_html  text CHECK (@extschema@._template_ok(body_html, 'body_html')),
  updated_at timestamptz NOT NULL DEFAULT now(),
  -- email: a subject, a text body and optionally an HTML body; sms / in_app: one short text
  CONSTRAINT message_template_fields_check
    CHECK (CASE WHEN channel = 'email' THEN subject IS NOT NULL ELSE subject IS NULL AND body_html IS NULL END),
  CONSTRAINT message_template_key UNIQUE NULLS NOT DISTINCT (source_id, channel, locale)
);
COMMENT ON TABLE @extschema@.message_template IS
  'Message templates per source (NULL: all), channel and locale (NULL: default); they take precedence over message_template_builtin';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.message_template', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.message_template_id_seq', '');

CREATE TABLE @extschema@.message_template_builtin (
  channel    text NOT NULL CHECK (channel IN ('email', 'in_app', 'sms')),
  locale     text NOT NULL CHECK (locale = @extschema@._clean_locale(locale)),
  subject    text CHECK (@extschema@._template_ok(subject, 'subject')),
  body_text  text NOT NULL CHECK (@extschema@._template_ok(body_text, 'body_text')),
  body_html  text CHECK (@extschema@._template_ok(body_html, 'body_html')),
  PRIMARY KEY (channel, locale)
);
COMMENT ON TABLE @extschema@.message_template_builtin IS
  'The message templates shipped with the extension (en, de, fr, es); copy one into message_template to change it';

INSERT INTO @extschema@.message_template_builtin (channel, locale, subject, body_text, body_html)
SELECT c.channel, w.locale,
       CASE WHEN c.channel = 'email' THEN w.subject END,
       CASE c.channel
         WHEN 'email' THEN pg_catalog.format(E'%s\n\n%s\n\n%s\n%s\n\n{{score_links}}\n\n%s {{unsubscribe_url}}\n',
                                             w.hello, w.thanks, w.question, w.scale, w.unsubscribe)
         WHEN 'sms' THEN w.sms
         ELSE w.question END,
       CASE WHEN c.channel = 'email' THEN pg_catalog.format(
         E'<!DOCTYPE html>\n<html lang="%s"><body style="font-family:sans-serif;color:#222222">\n'
          '<p>%s</p>\n<p>%s</p>\n<p>%s</p>\n{{score_links}}\n'
          '<p style="font-size:12px;color:#555555">%s</p>\n'
          '<p style="font-size:12px;color:#555555"><a href="{{unsubscribe_url}}">%s</a></p>\n</body></html>\n',
         w.locale, w.hello, w.thanks, w.question, w.legend, w.unsubscribe_link) END
  FROM (VALUES ('email'), ('sms'), ('in_app')) c(channel),
       (VALUES
  ('en', 'How likely are you to recommend us?', 'Hello,',
   'Thank you for your payment of {{amount}} on {{paid_date}}.',
   'How likely are you to recommend us to a friend or colleague?',
   'Choose a score from 0 (not at all likely) to 10 (extremely likely):',
   '0 = not at all likely, 10 = extremely likely', 'Do not want these emails? Unsubscribe:', 'Unsubscribe',
   'Thanks for your payment of {{amount}}. How likely are you to recommend us (0-10)? {{answer_url}} Stop: {{unsubscribe_url}}'),
  ('de', 'Wie wahrscheinlich ist es, dass Sie uns weiterempfehlen?', 'Guten Tag,',
   'vielen Dank für Ihre Zahlung über {{amount}} am {{paid_date}}.',
   'Wie wahrscheinlich ist es, dass Sie uns einem Freund oder Kollegen empfehlen?',
   'Wählen Sie einen Wert von 0 (sehr unwahrscheinlich) bis 10 (sehr wahrscheinlich):',
   '0 = sehr unwahrscheinlich, 10 = sehr wahrscheinlich', 'Keine solchen E-Mails mehr? Abmelden:', 'Abmelden',
   'Danke für Ihre Zahlung über {{amount}}. Wie wahrscheinlich empfehlen Sie uns weiter (0-10)? {{answer_url}} Abmelden: {{unsubscribe_url}}'),
  ('fr', 'Quelle est la probabilité que vous nous recommandiez ?', 'Bonjour,',
   'merci pour votre paiement de {{amount}} du {{paid_date}}.',
   'Quelle est la probabilité que vous nous recommandiez à un ami ou un collègue ?',
   'Choisissez une note de 0 (pas du tout probable) à 10 (très probable) :',
   '0 = pas du tout probable, 10 = très probable', 'Vous ne souhaitez plus recevoir ces e-mails ? Se désabonner :', 'Se désabonner',
   'Merci pour votre paiement de {{amount}}. Nous recommanderiez-vous (0-10) ? {{answer_url}} Désabonnement : {{unsubscribe_url}}'),
  ('es', '¿Qué probabilidad hay de que nos recomiende?', 'Hola:',
   'gracias por su pago de {{amount}} del {{paid_date}}.',
   '¿Qué probabilidad hay de que nos recomiende a un amigo o colega?',
   'Elija una puntuación de 0 (nada probable) a 10 (muy probable):',
   '0 = nada probable, 10 = muy probable', '¿No desea recibir estos correos? Darse de baja:', 'Darse de baja',
   'Gracias por su pago de {{amount}}. ¿Nos recomendaría (0-10)? {{answer_url}} Baja: {{unsubscribe_url}}')
       ) w(locale, subject, hello, thanks, question, scale, legend, unsubscribe, unsubscribe_link, sms);

-- The template of a survey of source src, channel ch and locale loc (see the top of this file).
CREATE FUNCTION @extschema@._template_for(src integer, ch text, loc text,
                                          OUT t_subject text, OUT t_text text, OUT t_html text)
RETURNS record
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT x.subject, x.body_text, x.body_html FROM (
    SELECT 0 AS tier,
           CASE WHEN m.locale = loc THEN 0 WHEN m.locale = split_part(loc, '-', 1) THEN 1 ELSE 2 END AS rank,
           (m.source_id IS NULL)::integer AS generic, m.subject, m.body_text, m.body_html
      FROM @extschema@.message_template m
     WHERE m.channel = ch AND (m.source_id = src OR m.source_id IS NULL)
       AND (m.locale IS NULL OR m.locale = loc OR m.locale = split_part(loc, '-', 1))
    UNION ALL
    SELECT 1, CASE WHEN b.locale = loc THEN 0 WHEN b.locale = split_part(loc, '-', 1) THEN 1 ELSE 2 END, 0,
           b.subject, b.body_text, b.body_html
      FROM @extschema@.message_template_builtin b
     WHERE b.channel = ch AND (b.locale = 'en' OR b.locale = loc OR b.locale = split_part(loc, '-', 1))
  ) x
  ORDER BY x.tier, x.rank, x.generic
  LIMIT 1
$fn$;
COMMENT ON FUNCTION @extschema@._template_for(integer, text, text) IS
  'Internal: the message template a survey of this source, channel and locale gets';
