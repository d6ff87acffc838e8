-- The payment context of an answer, fixed when the answer is recorded.
--
-- Every response row carries its context (columns payment_* etc. of table response): the
-- customer's last payment event at or before the answer (any kind; a tie on occurred_at goes to
-- the larger event id), the whole 24-hour periods since it, whether the customer had a failed
-- payment in the 720 hours up to the answer, the event's attributes and their projection on
-- the source's dimensions, and the payment event of the answer's survey. record_response
-- computes it in its INSERT; a BEFORE trigger computes it for every other INSERT (plain COPY
-- of historical answers) unless the row comes with one (context_at set: a restored dump keeps
-- its context), and again when an answer's customer, time or survey changes. Facts written
-- later (payments backfilled or re-tracked, events inserted by hand) do not reach recorded
-- answers by themselves: refresh_response_context() brings a range of answers up to date;
-- purge() calls it.

-- The context of one answer, for set-based refreshes. Also what the trigger computes.
CREATE FUNCTION @extschema@.context_of(customer text, survey bigint, at timestamptz,
                                       old_survey_event bigint DEFAULT NULL)
RETURNS TABLE (survey_event_id bigint, payment_event_id bigint, payment_source_id integer,
               payment_kind text, payment_amount numeric, payment_currency text,
               payment_at timestamptz, payment_attributes jsonb, payment_dimensions jsonb,
               days_since_payment integer, failed_payment_30d boolean)
-- a one-row table function, inlined into refresh_response_context()'s UPDATE (no SET clause)
LANGUAGE sql STABLE PARALLEL SAFE ROWS 1
AS $$
  SELECT CASE WHEN customer IS NOT NULL THEN
           coalesce((SELECT s.event_id FROM @extschema@.survey s WHERE s.id = survey),
                    (SELECT x.id FROM @extschema@.payment_event x WHERE x.id = old_survey_event)) END,
         e.id, e.source_id, e.kind, e.amount, e.currency, e.occurred_at, e.attributes,
         CASE WHEN e.id IS NOT NULL THEN
           coalesce((SELECT jsonb_object_agg(k.key, e.attributes -> k.key)
                       FROM @extschema@.payment_source p, unnest(p.dimensions) AS k(key)
                      WHERE p.id = e.source_id), '{}') END,
         floor(extract(epoch FROM at - e.occurred_at) / 86400)::integer,
         CASE WHEN customer IS NOT NULL THEN
           EXISTS (SELECT 1 FROM @extschema@.payment_event f
                    WHERE f.customer_id = customer AND f.kind = 'failed'
                      AND f.occurred_at > at - interval '720 hours' AND f.occurred_at <= at) END
  FROM (SELECT) one
  LEFT JOIN LATERAL (
    SELECT e.id, e.source_id, e.kind, e.amount, e.currency, e.occurred_at, e.attributes
      FROM @extschema@.payment_event e
     WHERE e.customer_id = customer AND e.occurred_at <= at
     ORDER BY e.occurred_at DESC, e.id DESC
     LIMIT 1) e ON true
$$;
REVOKE ALL ON FUNCTION @extschema@.context_of(text, bigint, timestamptz, bigint) FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.context_of(text, bigint, timestamptz, bigint) IS
  'Internal: the payment context of an answer of customer at a time (what table response stores)';

CREATE FUNCTION @extschema@.response_context_fill() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.context_at IS NOT NULL THEN RETURN NEW; END IF;
  ELSIF NEW.context_at IS NOT NULL
        AND NEW.customer_id IS NOT DISTINCT FROM OLD.customer_id
        AND NEW.responded_at = OLD.responded_at
        AND (NEW.survey_id IS NULL OR NEW.survey_id IS NOT DISTINCT FROM OLD.survey_id) THEN
    -- an answer unlinked from its survey (forget_customer, purge) leaves the funnel's median
    IF NEW.survey_id IS NULL THEN
      NEW.answered_after := NULL; NEW.funnel_at := NULL;
    END IF;
    RETURN NEW;
  END IF;
  IF NEW.customer_id IS NULL THEN
    -- no context; the survey's times (survey_funnel's median) still count
    SELECT NEW.responded_at - s.sent_at, least(s.created_at, NEW.responded_at)
      INTO NEW.answered_after, NEW.funnel_at
      FROM @extschema@.survey s WHERE s.id = NEW.survey_id;
    NEW.survey_event_id := NULL; NEW.payment_event_id := NULL; NEW.payment_source_id := NULL;
    NEW.payment_kind := NULL; NEW.payment_amount := NULL; NEW.payment_currency := NULL;
    NEW.payment_at := NULL; NEW.payment_attributes := NULL; NEW.payment_dimensions := NULL;
    NEW.days_since_payment := NULL; NEW.failed_payment_30d := NULL;
  ELSE
    -- the body of context_of() and the survey's times, inline and in one statement (plpgsql
    -- keeps its plan), straight into the row
    SELECT s.event_id, e.id, e.source_id, e.kind, e.amount, e.currency, e.occurred_at, e.attributes,
           CASE WHEN e.id IS NOT NULL THEN
             coalesce((SELECT jsonb_object_agg(k.key, e.attributes -> k.key)
                         FROM @extschema@.payment_source p, unnest(p.dimensions) AS k(key)
                        WHERE p.id = e.source_id), '{}') END,
           floor(extract(epoch FROM NEW.responded_at - e.occurred_at) / 86400)::integer,
           EXISTS (SELECT 1 FROM @extschema@.payment_event f
                    WHERE f.customer_id = NEW.customer_id AND f.kind = 'failed'
                      AND f.occurred_at > NEW.responded_at - interval '720 hours'
                      AND f.occurred_at <= NEW.responded_at),
           NEW.responded_at - s.sent_at,
           CASE WHEN s.id IS NOT NULL THEN least(s.created_at, NEW.responded_at) END
      INTO NEW.survey_event_id, NEW.payment_event_id, NEW.payment_source_id, NEW.payment_kind,
           NEW.payment_amount, NEW.payment_currency, NEW.payment_at, NEW.payment_attributes,
           NEW.payment_dimensions, NEW.days_since_payment, NEW.failed_payment_30d,
           NEW.answered_after, NEW.funnel_at
      FROM (SELECT) one
      LEFT JOIN @extschema@.survey s ON s.id = NEW.survey_id
      LEFT JOIN LATERAL (
        SELECT e.id, e.source_id, e.kind, e.amount, e.currency, e.occurred_at, e.attributes
          FROM @extschema@.payment_event e
         WHERE e.customer_id = NEW.customer_id AND e.occurred_at <= NEW.responded_at
         ORDER BY e.occurred_at DESC, e.id DESC
         LIMIT 1) e ON true;
    -- (a survey deleted since: the answer keeps the payment event it was sent for)
    IF NEW.survey_event_id IS NULL AND TG_OP = 'UPDATE' THEN
      NEW.survey_event_id := OLD.survey_event_id;
    END IF;
  END IF;
  NEW.context_at := now();
  RETURN NEW;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.response_context_fill() FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.response_context_fill() IS
  'Trigger: stores the payment context of an answer when it is recorded (or its customer, time or survey changes)';
-- (an INSERT that brings its context, record_response's among them, does not call the function)
CREATE TRIGGER response_context_fill
  BEFORE INSERT ON @extschema@.response
  FOR EACH ROW WHEN (NEW.context_at IS NULL) EXECUTE FUNCTION @extschema@.response_context_fill();
CREATE TRIGGER response_context_refill
  BEFORE UPDATE ON @extschema@.response
  FOR EACH ROW EXECUTE FUNCTION @extschema@.response_context_fill();

-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.refresh_response_context(since timestamptz DEFAULT '-infinity',
                                                     until timestamptz DEFAULT 'infinity',
                                                     customers text[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  n bigint;
BEGIN
  IF since IS NULL OR until IS NULL THEN
    RAISE EXCEPTION 'refresh_response_context: % must not be NULL',
      CASE WHEN since IS NULL THEN 'since' ELSE 'until' END USING ERRCODE = '22004';
  END IF;
  IF since > until THEN
    RAISE EXCEPTION 'refresh_response_context: since % is after until %', since, until USING ERRCODE = '22023';
  END IF;
  -- Only answers whose context differs are rewritten; the rollups follow through the
  -- response triggers (old context out, new one in).
  UPDATE @extschema@.response r
     SET survey_event_id = c.survey_event_id, payment_event_id = c.payment_event_id,
         payment_source_id = c.payment_source_id, payment_kind = c.payment_kind,
         payment_amount = c.payment_amount, payment_currency = c.payment_currency,
         payment_at = c.payment_at, payment_attributes = c.payment_attributes,
         payment_dimensions = c.payment_dimensions, days_since_payment = c.days_since_payment,
         failed_payment_30d = c.failed_payment_30d, answered_after = t.answered_after,
         funnel_at = t.funnel_at, context_at = now()
    FROM @extschema@.response o
   CROSS JOIN LATERAL @extschema@.context_of(o.customer_id, o.survey_id, o.responded_at, o.survey_event_id) c
   CROSS JOIN LATERAL (SELECT o.responded_at - s.sent_at AS answered_after,
                              CASE WHEN s.id IS NOT NULL THEN least(s.created_at, o.responded_at) END AS funnel_at
                         FROM (SELECT) one LEFT JOIN @extschema@.survey s ON s.id = o.survey_id) t
   WHERE r.id = o.id
     AND o.responded_at >= since AND o.responded_at < until
     AND (customers IS NULL OR o.customer_id = ANY (customers))
     AND (o.survey_event_id, o.payment_event_id, o.payment_source_id, o.payment_kind, o.payment_amount,
          o.payment_currency, o.payment_at, o.payment_attributes, o.payment_dimensions,
          o.days_since_payment, o.failed_payment_30d, o.answered_after, o.funnel_at)
         IS DISTINCT FROM
         (c.survey_event_id, c.payment_event_id, c.payment_source_id, c.payment_kind, c.payment_amount,
          c.payment_currency, c.payment_at, c.payment_attributes, c.payment_dimensions,
          c.days_since_payment, c.failed_payment_30d, t.answered_after, t.funnel_at);
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END
$fn$;
COMMENT ON FUNCTION @extschema@.refresh_response_context(timestamptz, timestamptz, text[]) IS
  'Recomputes the stored payment context of answers given in [since, until) (only of these customers '
  'when given) from the payment events as they are now, e.g. after older payments were backfilled; '
  'updates the rollups with them; returns how many answers changed';
