-- Survey messages: rendering (render_survey, claim_messages) and the unsubscribe link's action
-- (opt_out_by_token). See docs/messages.md. The renderer is C++ (src/render.cpp,
-- src/render_core.cpp); these functions find each survey's template and context set-based.

-- One message: the template fields (NULL stays NULL) over a survey's context.
CREATE FUNCTION @extschema@._render(t_subject text, t_text text, t_html text, token text, base_url text,
                                    locale text, time_zone text, amount numeric, currency text,
                                    paid_at timestamptz, attributes jsonb, source text,
                                    OUT subject text, OUT body_text text, OUT body_html text)
RETURNS record
  AS 'MODULE_PATHNAME', 'nps_render' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._render(text, text, text, text, text, text, text, numeric, text, timestamptz, jsonb, text) IS
  'Internal: renders one message from template fields and a survey''s context (22023 when links are needed and base_url is NULL)';

-- The messages of these surveys, in one statement: the template of each (source, channel,
-- locale) looked up once, the payment context by primary key. Not SECURITY DEFINER and not
-- granted: render_survey and claim_messages call it with their checks.
CREATE FUNCTION @extschema@._messages(survey_ids bigint[])
RETURNS TABLE (survey_id bigint, recipient text, locale text, subject text, body_text text, body_html text)
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
  WITH s AS MATERIALIZED (
    SELECT x.id, x.token, x.source_id, x.channel, x.recipient, x.locale, x.time_zone, x.event_id
      FROM @extschema@.survey x WHERE x.id = ANY (survey_ids)
  ), g AS MATERIALIZED (  -- one template lookup per group, not per survey
    -- (the source's default time zone is read by name: payment_source.time_zone, where the send
    -- window settings define it; UTC otherwise)
    SELECT k.source_id, k.channel, k.locale, t.t_subject, t.t_text, t.t_html, p.name, p.answer_base_url,
           pg_catalog.to_jsonb(p) OPERATOR(pg_catalog.->>) 'time_zone' AS source_time_zone
      FROM (SELECT DISTINCT s.source_id, s.channel, s.locale FROM s) k
      CROSS JOIN LATERAL @extschema@._template_for(k.source_id, k.channel, k.locale) t
      LEFT JOIN @extschema@.payment_source p ON p.id = k.source_id
  )
  SELECT s.id, s.recipient, s.locale, r.subject, r.body_text, r.body_html
    FROM s
    JOIN g ON g.source_id = s.source_id AND g.channel = s.channel AND g.locale IS NOT DISTINCT FROM s.locale
    LEFT JOIN LATERAL (SELECT e.amount, e.currency, e.occurred_at, e.attributes
                         FROM @extschema@.payment_event e WHERE e.id = s.event_id LIMIT 1) e ON true
   CROSS JOIN LATERAL @extschema@._render(g.t_subject, g.t_text, g.t_html, s.token, g.answer_base_url, s.locale,
                                          coalesce(s.time_zone, g.source_time_zone, 'UTC'), e.amount, e.currency, e.occurred_at,
                                          e.attributes, g.name) r
$fn$;
COMMENT ON FUNCTION @extschema@._messages(bigint[]) IS
  'Internal: the rendered messages of these surveys (recipient, locale, subject, text, HTML); no lease check';

-- Who holds a lease: as for mark_sent (60_delivery.sql). Every survey the caller does not hold
-- gets the same 55000 and the same message.
CREATE FUNCTION @extschema@.render_survey(survey_id bigint, worker text DEFAULT NULL)
RETURNS TABLE (recipient text, subject text, body_text text, body_html text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  caller oid := pg_catalog.to_regrole(pg_catalog.quote_ident(session_user));
BEGIN
  IF survey_id IS NULL THEN
    RAISE EXCEPTION 'render_survey: survey_id must not be NULL' USING ERRCODE = '22004';
  END IF;
  PERFORM 1 FROM @extschema@.survey x
   WHERE x.id = render_survey.survey_id
     AND x.lease_owner IS NOT NULL
     AND (render_survey.worker IS NULL OR x.lease_owner = render_survey.worker)
     AND (x.lease_role = caller OR (x.lease_role IS NULL AND x.lease_owner = render_survey.worker))
     AND x.status IN ('sending', 'responded');
  IF NOT FOUND THEN
    RAISE EXCEPTION 'render_survey: survey % is not leased by %', survey_id,
      coalesce('worker "' || worker || '"', 'this session''s role')
      USING ERRCODE = '55000',
            HINT = 'Render only surveys this worker claimed with claim_surveys() and has not reported yet.';
  END IF;
  RETURN QUERY SELECT m.recipient, m.subject, m.body_text, m.body_html
                 FROM @extschema@._messages(ARRAY[render_survey.survey_id]) m;
END
$fn$;
COMMENT ON FUNCTION @extschema@.render_survey(bigint, text) IS
  'The message of a survey the caller holds the lease of (its login role; and worker when given): '
  'recipient, subject, text and HTML body; 55000 for every survey the caller does not hold';

CREATE TYPE @extschema@.claimed_message AS (
  id          bigint,
  token       text,
  customer_id text,
  channel     text,
  attempts    integer,
  lease_until timestamptz,
  expires_at  timestamptz,
  source      text,
  kind        text,
  amount      numeric,
  currency    text,
  occurred_at timestamptz,
  attributes  jsonb,
  recipient   text,         -- email address or phone number (NULL: the source has no recipient expression)
  locale      text,
  subject     text,         -- email only
  body_text   text,         -- the text body (email) or the whole message (sms, in_app)
  body_html   text,         -- email only (NULL when the template has no HTML body)
  reminder    integer       -- 0: the first send; n: the n-th reminder (as claimed_survey.reminder)
);
COMMENT ON TYPE @extschema@.claimed_message IS
  'A survey leased by claim_messages(): claimed_survey''s fields and the rendered message';
REVOKE USAGE ON TYPE @extschema@.claimed_message FROM PUBLIC;

-- Whether a template field's links need its source's answer_base_url (src/render.cpp).
CREATE FUNCTION @extschema@._template_links(template text, field text) RETURNS boolean
  AS 'MODULE_PATHNAME', 'nps_template_links' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@._template_links(text, text) IS
  'Internal: whether a message template field has links (answer_url, unsubscribe_url, score_links, score_url.N)';

-- A claimed survey whose message cannot be rendered - its source has no answer_base_url and its
-- template has links - is reported failed at once, as mark_failed does (error
-- 'no_answer_base_url: ...', retried after an hour, failed at max_attempts), and not returned:
-- the other surveys of the call go out.
CREATE FUNCTION @extschema@.claim_messages(worker text, max integer DEFAULT 100,
                                           lease interval DEFAULT '5 minutes')
RETURNS SETOF @extschema@.claimed_message
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  claimed @extschema@.claimed_survey[];
  ids bigint[];
  unrenderable bigint[];
  src record;
BEGIN
  -- (claim_surveys checks the values; the NULLs are named here for this function)
  IF worker IS NULL OR max IS NULL OR lease IS NULL THEN
    RAISE EXCEPTION 'claim_messages: % must not be NULL',
      CASE WHEN worker IS NULL THEN 'worker' WHEN max IS NULL THEN 'max' ELSE 'lease' END
      USING ERRCODE = '22004';
  END IF;
  SELECT coalesce(array_agg(x.s ORDER BY x.ord), '{}'), coalesce(array_agg((x.s).id), '{}')
    INTO claimed, ids
    FROM (SELECT c, pg_catalog.row_number() OVER ()
            FROM @extschema@.claim_surveys(claim_messages.worker, claim_messages.max, claim_messages.lease) c) x(s, ord);
  -- surveys of sources without answer_base_url whose template has links (one check per template)
  IF cardinality(ids) > 0 AND EXISTS (SELECT 1 FROM @extschema@.payment_source p WHERE p.answer_base_url IS NULL) THEN
    SELECT coalesce(array_agg(s.id), '{}') INTO unrenderable
      FROM @extschema@.survey s
      JOIN (SELECT k.source_id, k.channel, k.locale
              FROM (SELECT DISTINCT x.source_id, x.channel, x.locale FROM @extschema@.survey x WHERE x.id = ANY (ids)) k
              JOIN @extschema@.payment_source p ON p.id = k.source_id AND p.answer_base_url IS NULL
             CROSS JOIN LATERAL @extschema@._template_for(k.source_id, k.channel, k.locale) t
             WHERE @extschema@._template_links(t.t_subject, 'subject') OR @extschema@._template_links(t.t_text, 'body_text')
                OR @extschema@._template_links(t.t_html, 'body_html')) g
        ON g.source_id = s.source_id AND g.channel = s.channel AND g.locale IS NOT DISTINCT FROM s.locale
     WHERE s.id = ANY (ids);
    IF cardinality(unrenderable) > 0 THEN
      FOR src IN SELECT p.name, array_agg(s.id ORDER BY s.id) AS ids FROM @extschema@.survey s
                   JOIN @extschema@.payment_source p ON p.id = s.source_id
                  WHERE s.id = ANY (unrenderable) GROUP BY p.name ORDER BY p.name LOOP
        PERFORM @extschema@.mark_failed(src.ids, claim_messages.worker,
          pg_catalog.format('no_answer_base_url: payment source "%s" has no answer_base_url, which its message template''s links need',
                            src.name),
          interval '1 hour');
      END LOOP;
    END IF;
  END IF;
  RETURN QUERY
  WITH c AS MATERIALIZED (
    SELECT u.*, u.ordinality AS ord FROM unnest(claimed) WITH ORDINALITY AS u
     WHERE unrenderable IS NULL OR u.id <> ALL (unrenderable)
  ), m AS (
    SELECT * FROM @extschema@._messages(ARRAY(SELECT c.id FROM c))
  )
  SELECT c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at, c.source,
         c.kind, c.amount, c.currency, c.occurred_at, c.attributes,
         m.recipient, m.locale, m.subject, m.body_text, m.body_html, c.reminder
    FROM c LEFT JOIN m ON m.survey_id = c.id
   ORDER BY c.ord;
END
$fn$;
COMMENT ON FUNCTION @extschema@.claim_messages(text, integer, interval) IS
  'claim_surveys with the rendered message: leases due surveys as claim_surveys() does and returns '
  'each with its recipient, locale, subject, text and HTML body; a survey whose template needs '
  'links its source has no answer_base_url for is reported failed (no_answer_base_url) instead';

-- The unsubscribe link's action. The same (empty) result whatever the token: a token that is
-- unknown, expired or of an erased customer reveals nothing. Idempotent.
CREATE FUNCTION @extschema@.opt_out_by_token(token text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  who text;
BEGIN
  IF token IS NULL THEN
    RAISE EXCEPTION 'opt_out_by_token: token must not be NULL' USING ERRCODE = '22004';
  END IF;
  -- Locked like record_response: forget_customer (which locks the person's surveys first)
  -- either erased the survey before, or waits and then erases the opt-out too.
  SELECT x.customer_id INTO who FROM @extschema@.survey x
   WHERE x.token = opt_out_by_token.token FOR UPDATE;
  IF who IS NOT NULL THEN
    PERFORM @extschema@.opt_out(who);
  END IF;
END
$fn$;
COMMENT ON FUNCTION @extschema@.opt_out_by_token(text) IS
  'The unsubscribe link: opts out the customer of the survey with this token (pending surveys '
  'cancelled); idempotent; the same result for an unknown token';
