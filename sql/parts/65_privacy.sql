-- Privacy: erasure of one person (forget_customer) and retention (purge).
--
-- Both keep the aggregate NPS history true: a response loses everything that points to a
-- person (customer id, comment, survey link, channel) but keeps its score, category and dates.
-- SECURITY DEFINER so that a privacy officer's role needs EXECUTE only; fixed search_path and
-- schema-qualified names. Errors never echo the customer id.

CREATE FUNCTION @extschema@.forget_customer(customer text,
                                            OUT events integer, OUT surveys integer,
                                            OUT responses integer)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  survey_ids bigint[];
  -- the id as a whole word (bounded by non-alphanumerics) in free text: capture errors quote
  -- the offending value; '42' matches 'cust-42-x' but not '142'
  word text;
BEGIN
  IF customer IS NULL THEN
    RAISE EXCEPTION 'forget_customer: customer must not be NULL' USING ERRCODE = '22004';
  END IF;
  IF customer = '' THEN
    RAISE EXCEPTION 'forget_customer: customer must not be empty' USING ERRCODE = '22023';
  END IF;
  -- (a very long id is matched as a plain substring: too long for a regular expression, and
  -- too long to be part of another id by chance)
  IF length(customer) <= 256 THEN
    word := '(^|[^[:alnum:]])' || regexp_replace(customer, '([^[:alnum:][:space:]])', '\\\1', 'g')
            || '($|[^[:alnum:]])';
  END IF;

  -- Serialise with the capture trigger's throttle on this customer (its lock point).
  PERFORM 1 FROM @extschema@.customer_contact c WHERE c.customer_id = customer FOR UPDATE;

  -- Lock the person's surveys first: an answer arriving meanwhile (record_response locks the
  -- survey row) either committed before (and is anonymised below) or waits and finds no survey.
  SELECT coalesce(array_agg(x.id), '{}') INTO survey_ids
    FROM (SELECT s.id FROM @extschema@.survey s WHERE s.customer_id = customer FOR UPDATE) x;

  -- Responses: anonymise, keep score / category / dates so NPS history stays true.
  UPDATE @extschema@.response r
     SET customer_id = NULL, comment = NULL, survey_id = NULL, channel = NULL
   WHERE (r.customer_id = customer OR r.survey_id = ANY (survey_ids));
  GET DIAGNOSTICS responses = ROW_COUNT;

  -- Capture errors of the customer (by id, by their payments' keys, or quoting the id).
  DELETE FROM @extschema@.capture_error ce
   WHERE ce.customer_id = customer
      OR EXISTS (SELECT 1 FROM @extschema@.payment_event e
                  WHERE e.customer_id = customer
                    AND e.source_id = ce.source_id AND e.payment_key = ce.payment_key)
      OR (strpos(ce.error, customer) > 0 AND (word IS NULL OR ce.error ~ word))
      OR (strpos(ce.payment_key, customer) > 0 AND (word IS NULL OR ce.payment_key ~ word));

  -- Payment events: keep the fact, amount and date (revenue stays true), drop who and what.
  -- A payment key that embeds the id (e.g. 'cust42-2024-07') is replaced by a neutral one.
  UPDATE @extschema@.payment_event e
     SET customer_id = NULL, attributes = NULL, survey_id = NULL,
         payment_key = CASE WHEN strpos(e.payment_key, customer) > 0
                            THEN 'forgotten-' || e.id ELSE e.payment_key END
   WHERE e.customer_id = customer;
  GET DIAGNOSTICS events = ROW_COUNT;
  -- Any other event still pointing at one of these surveys (found through survey.event_id: the
  -- primary key, not a scan of payment_event).
  UPDATE @extschema@.payment_event e SET survey_id = NULL
   WHERE e.id IN (SELECT s.event_id FROM @extschema@.survey s WHERE s.id = ANY (survey_ids))
     AND e.survey_id = ANY (survey_ids);

  -- Surveys and their tokens go entirely.
  DELETE FROM @extschema@.survey s WHERE s.id = ANY (survey_ids);
  GET DIAGNOSTICS surveys = ROW_COUNT;

  DELETE FROM @extschema@.customer_contact c WHERE c.customer_id = customer;
  -- The opt-out goes too: the contract promises no copy of the id anywhere (see README.md (Privacy)
  -- for how to keep honouring an opt-out of a person who stays a paying customer).
  DELETE FROM @extschema@.opt_out o WHERE o.customer_id = customer;
END
$fn$;
COMMENT ON FUNCTION @extschema@.forget_customer(text) IS
  'Erases a person: deletes their surveys (tokens), contact, opt-out and capture errors, '
  'removes id and attributes from their payment events and id/comment/survey/channel from '
  'their responses (scores stay, so NPS history is unchanged); idempotent';

CREATE FUNCTION @extschema@.purge(older_than interval,
                                  OUT events integer, OUT surveys integer, OUT responses integer,
                                  OUT capture_errors integer, OUT contacts integer)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  cutoff timestamptz;
  longest_throttle interval;
  gone_ids bigint[];
  gone_events bigint[];
  gone_customers text[];
BEGIN
  IF older_than IS NULL THEN
    RAISE EXCEPTION 'purge: older_than must not be NULL' USING ERRCODE = '22004';
  END IF;
  -- Checked for what it does (35_intervals.sql): no negative part, at least a day (a shorter
  -- retention would delete surveys still being delivered), and the cutoff really is in the past.
  IF @extschema@.interval_within(older_than, '1 day', '1000 years') THEN
    cutoff := now() - older_than;
  END IF;
  IF cutoff IS NULL OR cutoff >= now() - interval '23 hours' THEN
    RAISE EXCEPTION 'purge: older_than % must be positive, at least 1 day and at most 1000 years, with no negative part', older_than
      USING ERRCODE = '22023';
  END IF;

  -- Surveys created before the cutoff, whatever their state (live ones that old are overdue).
  -- The links to them are cleared by the next statements, whose fresh snapshots also see an
  -- answer that was being recorded while the DELETE waited for its row lock.
  WITH gone AS (
    DELETE FROM @extschema@.survey s WHERE s.created_at < cutoff RETURNING s.id, s.event_id
  )
  SELECT count(*), coalesce(array_agg(gone.id), '{}'), coalesce(array_agg(gone.event_id), '{}')
    INTO surveys, gone_ids, gone_events FROM gone;
  UPDATE @extschema@.response r SET survey_id = NULL WHERE r.survey_id = ANY (gone_ids);
  UPDATE @extschema@.payment_event e SET survey_id = NULL
   WHERE e.id = ANY (gone_events) AND e.survey_id = ANY (gone_ids);

  -- Events before the cutoff, except those a still-live survey needs for its message.
  WITH gone AS (
    DELETE FROM @extschema@.payment_event e
     WHERE e.occurred_at < cutoff
       AND NOT EXISTS (SELECT 1 FROM @extschema@.survey s
                        WHERE s.event_id = e.id AND s.status IN ('pending', 'sending'))
    RETURNING e.customer_id
  )
  SELECT count(*), coalesce(array_agg(DISTINCT gone.customer_id) FILTER (WHERE gone.customer_id IS NOT NULL), '{}')
    INTO events, gone_customers FROM gone;

  -- Old responses lose comment and links to a person; score, category, channel and dates stay.
  UPDATE @extschema@.response r
     SET comment = NULL, customer_id = NULL, survey_id = NULL
   WHERE r.responded_at < cutoff
     AND (r.comment IS NOT NULL OR r.customer_id IS NOT NULL OR r.survey_id IS NOT NULL);
  GET DIAGNOSTICS responses = ROW_COUNT;
  -- Later answers of those customers lose the context the removed events gave them (their
  -- stored attributes too); the older ones lost it with their customer id above.
  IF cardinality(gone_customers) > 0 THEN
    PERFORM @extschema@.refresh_response_context(cutoff, 'infinity', gone_customers);
  END IF;

  DELETE FROM @extschema@.capture_error ce WHERE ce.at < cutoff;
  GET DIAGNOSTICS capture_errors = ROW_COUNT;

  -- A contact row is the throttle's memory: drop it only when no source's throttle needs it.
  SELECT max(p.throttle) INTO longest_throttle FROM @extschema@.payment_source p;
  DELETE FROM @extschema@.customer_contact c
   WHERE c.last_survey_at < now() - greatest(older_than, coalesce(longest_throttle, interval '0'));
  GET DIAGNOSTICS contacts = ROW_COUNT;
END
$fn$;
COMMENT ON FUNCTION @extschema@.purge(interval) IS
  'Retention: deletes surveys, payment events and capture errors older than older_than and '
  'anonymises older responses (comment, customer id, survey link removed; scores kept)';
