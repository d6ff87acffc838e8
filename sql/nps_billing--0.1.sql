-- nps_billing 0.1 install script (assembled from sql/parts/ by the Makefile).
\echo Use "CREATE EXTENSION nps_billing" to load this file. \quit

-- Nothing is granted to PUBLIC: roles get exactly what the README's role recipes grant.
REVOKE ALL ON SCHEMA @extschema@ FROM PUBLIC;
-- Scores, categories and the npsagg summary type.
CREATE TYPE @extschema@.nps_category AS ENUM ('detractor', 'passive', 'promoter');
COMMENT ON TYPE @extschema@.nps_category IS 'NPS answer category: 0-6 detractor, 7-8 passive, 9-10 promoter';

CREATE DOMAIN @extschema@.nps_score AS smallint CHECK (VALUE BETWEEN 0 AND 10);
COMMENT ON DOMAIN @extschema@.nps_score IS 'An NPS answer, 0..10';

CREATE FUNCTION @extschema@.category(score smallint) RETURNS @extschema@.nps_category
  AS 'MODULE_PATHNAME', 'nps_category_int2' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.category(score integer) RETURNS @extschema@.nps_category
  AS 'MODULE_PATHNAME', 'nps_category_int4' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.category(score bigint) RETURNS @extschema@.nps_category
  AS 'MODULE_PATHNAME', 'nps_category_int8' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.category(integer) IS 'NPS category of a 0..10 score; 22003 outside that range';

CREATE TYPE @extschema@.npsagg;
CREATE FUNCTION @extschema@.npsagg_in(cstring) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_out(@extschema@.npsagg) RETURNS cstring
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_recv(internal) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_send(@extschema@.npsagg) RETURNS bytea
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE TYPE @extschema@.npsagg (
  INPUT = @extschema@.npsagg_in, OUTPUT = @extschema@.npsagg_out,
  RECEIVE = @extschema@.npsagg_recv, SEND = @extschema@.npsagg_send,
  INTERNALLENGTH = VARIABLE, ALIGNMENT = double, STORAGE = main);
COMMENT ON TYPE @extschema@.npsagg IS 'NPS summary: count and weight sum per score 0..10 (JSON text form)';

CREATE FUNCTION @extschema@.npsagg_eq(@extschema@.npsagg, @extschema@.npsagg) RETURNS boolean
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_ne(@extschema@.npsagg, @extschema@.npsagg) RETURNS boolean
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE OPERATOR @extschema@.= (LEFTARG = @extschema@.npsagg, RIGHTARG = @extschema@.npsagg,
  PROCEDURE = @extschema@.npsagg_eq, COMMUTATOR = OPERATOR(@extschema@.=),
  NEGATOR = OPERATOR(@extschema@.<>), RESTRICT = eqsel, JOIN = eqjoinsel);
CREATE OPERATOR @extschema@.<> (LEFTARG = @extschema@.npsagg, RIGHTARG = @extschema@.npsagg,
  PROCEDURE = @extschema@.npsagg_ne, COMMUTATOR = OPERATOR(@extschema@.<>),
  NEGATOR = OPERATOR(@extschema@.=), RESTRICT = neqsel, JOIN = neqjoinsel);
-- NPS aggregates. All are parallel (combine + serialize); nps(score) and nps_agg(score) also
-- have inverse transitions so sliding windows cost O(1) per row.
CREATE FUNCTION @extschema@.nps_combine(internal, internal) RETURNS internal
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_serialize(internal) RETURNS bytea
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_deserialize(bytea, internal) RETURNS internal
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_final(internal) RETURNS float8
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_wfinal(internal) RETURNS float8
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_final(internal) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_wfinal(internal) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_rollup_trans(internal, @extschema@.npsagg) RETURNS internal
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_rollup_final(internal) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;

DO $do$
DECLARE
  t record;
BEGIN
  FOR t IN SELECT * FROM (VALUES ('int2', 'smallint'), ('int4', 'integer'), ('int8', 'bigint')) v(sfx, typ) LOOP
    EXECUTE format($f$
      CREATE FUNCTION @extschema@.nps_trans_%1$s(internal, %2$s) RETURNS internal
        AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
      CREATE FUNCTION @extschema@.nps_inv_%1$s(internal, %2$s) RETURNS internal
        AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
      CREATE FUNCTION @extschema@.nps_wtrans_%1$s(internal, %2$s, float8) RETURNS internal
        AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;

      CREATE AGGREGATE @extschema@.nps(score %2$s) (
        SFUNC = @extschema@.nps_trans_%1$s, STYPE = internal, SSPACE = 200,
        FINALFUNC = @extschema@.nps_final,
        COMBINEFUNC = @extschema@.nps_combine,
        SERIALFUNC = @extschema@.nps_serialize, DESERIALFUNC = @extschema@.nps_deserialize,
        MSFUNC = @extschema@.nps_trans_%1$s, MINVFUNC = @extschema@.nps_inv_%1$s,
        MSTYPE = internal, MSSPACE = 200, MFINALFUNC = @extschema@.nps_final,
        PARALLEL = SAFE);
      CREATE AGGREGATE @extschema@.nps(score %2$s, weight float8) (
        SFUNC = @extschema@.nps_wtrans_%1$s, STYPE = internal, SSPACE = 200,
        FINALFUNC = @extschema@.nps_wfinal,
        COMBINEFUNC = @extschema@.nps_combine,
        SERIALFUNC = @extschema@.nps_serialize, DESERIALFUNC = @extschema@.nps_deserialize,
        PARALLEL = SAFE);
      CREATE AGGREGATE @extschema@.nps_agg(score %2$s) (
        SFUNC = @extschema@.nps_trans_%1$s, STYPE = internal, SSPACE = 200,
        FINALFUNC = @extschema@.npsagg_final,
        COMBINEFUNC = @extschema@.nps_combine,
        SERIALFUNC = @extschema@.nps_serialize, DESERIALFUNC = @extschema@.nps_deserialize,
        MSFUNC = @extschema@.nps_trans_%1$s, MINVFUNC = @extschema@.nps_inv_%1$s,
        MSTYPE = internal, MSSPACE = 200, MFINALFUNC = @extschema@.npsagg_final,
        PARALLEL = SAFE);
      CREATE AGGREGATE @extschema@.nps_agg(score %2$s, weight float8) (
        SFUNC = @extschema@.nps_wtrans_%1$s, STYPE = internal, SSPACE = 200,
        FINALFUNC = @extschema@.npsagg_wfinal,
        COMBINEFUNC = @extschema@.nps_combine,
        SERIALFUNC = @extschema@.nps_serialize, DESERIALFUNC = @extschema@.nps_deserialize,
        PARALLEL = SAFE);
      COMMENT ON AGGREGATE @extschema@.nps(%2$s) IS 'Net Promoter Score (-100..100) of 0..10 scores';
      COMMENT ON AGGREGATE @extschema@.nps(%2$s, float8) IS 'Weighted Net Promoter Score';
      COMMENT ON AGGREGATE @extschema@.nps_agg(%2$s) IS 'NPS summary (npsagg) of 0..10 scores';
      COMMENT ON AGGREGATE @extschema@.nps_agg(%2$s, float8) IS 'Weighted NPS summary (npsagg)';
    $f$, t.sfx, t.typ);
  END LOOP;
END
$do$;

CREATE AGGREGATE @extschema@.rollup(@extschema@.npsagg) (
  SFUNC = @extschema@.nps_rollup_trans, STYPE = internal, SSPACE = 200,
  FINALFUNC = @extschema@.nps_rollup_final,
  COMBINEFUNC = @extschema@.nps_combine,
  SERIALFUNC = @extschema@.nps_serialize, DESERIALFUNC = @extschema@.nps_deserialize,
  PARALLEL = SAFE);
COMMENT ON AGGREGATE @extschema@.rollup(@extschema@.npsagg) IS 'Merges npsagg summaries (e.g. days into months)';
-- Accessors and statistics over npsagg.
CREATE FUNCTION @extschema@.nps(agg @extschema@.npsagg) RETURNS float8
  AS 'MODULE_PATHNAME', 'npsagg_nps' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.weighted_nps(agg @extschema@.npsagg) RETURNS float8
  AS 'MODULE_PATHNAME', 'npsagg_weighted_nps' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.responses(agg @extschema@.npsagg) RETURNS bigint
  AS 'MODULE_PATHNAME', 'npsagg_responses' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.promoters(agg @extschema@.npsagg) RETURNS bigint
  AS 'MODULE_PATHNAME', 'npsagg_promoters' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.passives(agg @extschema@.npsagg) RETURNS bigint
  AS 'MODULE_PATHNAME', 'npsagg_passives' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.detractors(agg @extschema@.npsagg) RETURNS bigint
  AS 'MODULE_PATHNAME', 'npsagg_detractors' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.score_histogram(agg @extschema@.npsagg) RETURNS bigint[]
  AS 'MODULE_PATHNAME', 'npsagg_histogram' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.mean_score(agg @extschema@.npsagg) RETURNS float8
  AS 'MODULE_PATHNAME', 'npsagg_mean_score' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_stderr(agg @extschema@.npsagg) RETURNS float8
  AS 'MODULE_PATHNAME', 'npsagg_stderr' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_ci(agg @extschema@.npsagg, confidence float8 DEFAULT 0.95,
                                   method text DEFAULT 'adjusted_wald',
                                   OUT low float8, OUT high float8)
  AS 'MODULE_PATHNAME', 'npsagg_ci' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_compare(a @extschema@.npsagg, b @extschema@.npsagg,
                                        OUT difference float8, OUT stderr float8,
                                        OUT z float8, OUT p_value float8)
  AS 'MODULE_PATHNAME', 'npsagg_compare' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.nps(@extschema@.npsagg) IS 'NPS of a summary (unweighted); NULL when empty';
COMMENT ON FUNCTION @extschema@.weighted_nps(@extschema@.npsagg) IS 'Weighted NPS of a summary; NULL when empty';
COMMENT ON FUNCTION @extschema@.responses(@extschema@.npsagg) IS 'Number of responses';
COMMENT ON FUNCTION @extschema@.promoters(@extschema@.npsagg) IS 'Responses scoring 9-10';
COMMENT ON FUNCTION @extschema@.passives(@extschema@.npsagg) IS 'Responses scoring 7-8';
COMMENT ON FUNCTION @extschema@.detractors(@extschema@.npsagg) IS 'Responses scoring 0-6';
COMMENT ON FUNCTION @extschema@.score_histogram(@extschema@.npsagg) IS 'Counts per score; element 1 is score 0';
COMMENT ON FUNCTION @extschema@.mean_score(@extschema@.npsagg) IS 'Mean 0..10 score';
COMMENT ON FUNCTION @extschema@.nps_stderr(@extschema@.npsagg) IS 'Standard error of NPS (Kish effective n when weighted)';
COMMENT ON FUNCTION @extschema@.nps_ci(@extschema@.npsagg, float8, text) IS 'Confidence interval of NPS: wald or adjusted_wald';
COMMENT ON FUNCTION @extschema@.nps_compare(@extschema@.npsagg, @extschema@.npsagg) IS 'Two-sided z-test of the NPS difference of two independent samples';
-- Tables of capture, delivery and responses. The DBA may read and tune them; the trigger and
-- the functions write them. All are registered with pg_extension_config_dump so pg_dump keeps
-- their rows.

CREATE TABLE @extschema@.payment_source (
  id              serial PRIMARY KEY,
  name            text NOT NULL UNIQUE,
  relid           regclass NOT NULL,
  customer_expr   text NOT NULL,
  payment_key_expr text NOT NULL,
  succeeded_expr  text NOT NULL,
  failed_expr     text,
  amount_expr     text,
  currency_expr   text,
  paid_at_expr    text,
  attributes_expr text,
  on_error        text NOT NULL DEFAULT 'record' CHECK (on_error IN ('record', 'raise')),
  -- survey policy
  survey_on       text[] NOT NULL DEFAULT '{succeeded}' CHECK (survey_on <@ '{succeeded,failed}'),
  delay           interval NOT NULL DEFAULT '1 hour',
  throttle        interval NOT NULL DEFAULT '90 days',
  sample_rate     float8 NOT NULL DEFAULT 1.0 CHECK (sample_rate >= 0 AND sample_rate <= 1),
  min_amount      numeric NOT NULL DEFAULT 0,
  channel         text NOT NULL DEFAULT 'email' CHECK (channel IN ('email', 'in_app', 'sms')),
  expires_after   interval NOT NULL DEFAULT '14 days',
  max_attempts    integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),  -- delivery tries per survey
  enabled         boolean NOT NULL DEFAULT true,
  tracked         boolean NOT NULL DEFAULT true,
  created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE @extschema@.payment_event (
  id          bigserial PRIMARY KEY,
  source_id   integer NOT NULL,
  payment_key text NOT NULL,
  kind        text NOT NULL,  -- 'succeeded' / 'failed' (written only by the capture trigger)
  customer_id text,
  amount      numeric,
  currency    text,
  occurred_at timestamptz NOT NULL,
  attributes  jsonb,
  survey_id   bigint,
  -- throttled, sampled_out, below_min_amount, opted_out, no_customer, not_surveyed_kind, disabled.
  -- No CHECK constraints on this table: PostgreSQL re-reads a CHECK's expression tree from text in
  -- every INSERT statement, which cost the capture trigger ~10% of single-row throughput (P6);
  -- the trigger is the only writer and writes only these values (README.md (Capture)).
  skip_reason text,
  UNIQUE (source_id, payment_key, kind)
);
CREATE INDEX payment_event_customer_idx ON @extschema@.payment_event (customer_id, occurred_at);

CREATE TABLE @extschema@.survey (
  id          bigserial PRIMARY KEY,
  token       text NOT NULL UNIQUE,
  source_id   integer NOT NULL,
  event_id    bigint,
  customer_id text,
  channel     text NOT NULL CHECK (channel IN ('email', 'in_app', 'sms')),
  status      text NOT NULL DEFAULT 'pending'
              CHECK (status IN ('pending', 'sending', 'sent', 'responded', 'expired', 'failed', 'cancelled')),
  send_after  timestamptz NOT NULL,
  expires_at  timestamptz NOT NULL,
  attempts    integer NOT NULL DEFAULT 0,
  lease_owner text,
  lease_until timestamptz,
  sent_at     timestamptz,
  last_error  text,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX survey_customer_idx ON @extschema@.survey (customer_id);
-- The queue: only live surveys are indexed.
CREATE INDEX survey_queue_idx ON @extschema@.survey (send_after) WHERE status IN ('pending', 'sending');
-- expire_surveys() finds open surveys past their deadline.
CREATE INDEX survey_expiry_idx ON @extschema@.survey (expires_at) WHERE status IN ('pending', 'sending', 'sent');

-- One row per surveyed customer: the throttle's lock point, shared by every source.
CREATE TABLE @extschema@.customer_contact (
  customer_id    text PRIMARY KEY,
  last_survey_at timestamptz NOT NULL
);

CREATE TABLE @extschema@.opt_out (
  customer_id text PRIMARY KEY,
  since       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE @extschema@.capture_error (
  id          bigserial PRIMARY KEY,
  source_id   integer NOT NULL,
  payment_key text,
  customer_id text,           -- when the customer expression could be evaluated (forget_customer erases it)
  error       text NOT NULL,
  sqlstate    text,
  at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE @extschema@.response (
  id           bigserial PRIMARY KEY,
  survey_id    bigint UNIQUE,
  customer_id  text,
  score        @extschema@.nps_score NOT NULL,
  category     @extschema@.nps_category GENERATED ALWAYS AS (@extschema@.category(score)) STORED,
  comment      text,
  channel      text,
  responded_at timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz
);
CREATE INDEX response_responded_at_idx ON @extschema@.response (responded_at);
CREATE INDEX response_customer_idx ON @extschema@.response (customer_id, responded_at);

-- One call per statement: each call updates pg_extension's row.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.payment_source', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.payment_source_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.payment_event', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.payment_event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.survey', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.survey_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.customer_contact', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.opt_out', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.capture_error', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.capture_error_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.response', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.response_id_seq', '');
-- Capture: payment rows of any billing schema become payment events and survey requests.
-- See README.md (Capture). The trigger function and track_payments() are C++ (src/capture_*.cpp).

CREATE FUNCTION @extschema@.sample_point(customer text, payment_key text) RETURNS float8
  AS 'MODULE_PATHNAME', 'nps_sample_point' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.sample_point(text, text) IS
  'Deterministic sampling point in [0, 1) of a customer and payment key: the payment is kept for a survey when sample_point < payment_source.sample_rate';

CREATE FUNCTION @extschema@.new_token() RETURNS text
  AS 'MODULE_PATHNAME', 'nps_new_token' LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.new_token() IS
  'A survey token: 128 bits from pg_strong_random, base64url without padding (22 characters)';

CREATE FUNCTION @extschema@.capture() RETURNS trigger
  AS 'MODULE_PATHNAME', 'nps_capture_trigger' LANGUAGE C;
COMMENT ON FUNCTION @extschema@.capture() IS
  'Trigger function created by track_payments(): AFTER INSERT / AFTER UPDATE ... REFERENCING NEW TABLE AS nps_new FOR EACH STATEMENT';

CREATE FUNCTION @extschema@._capture_cache_changed() RETURNS trigger
  AS 'MODULE_PATHNAME', 'nps_capture_cache_changed' LANGUAGE C;
COMMENT ON FUNCTION @extschema@._capture_cache_changed() IS
  'Internal: makes every backend drop what the capture trigger cached from this table (payment sources, the customer_contact and opt_out memos) once the change commits';
CREATE TRIGGER payment_source_changed
  AFTER INSERT OR UPDATE OR DELETE ON @extschema@.payment_source
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._capture_cache_changed();
CREATE TRIGGER payment_source_truncated
  AFTER TRUNCATE ON @extschema@.payment_source
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._capture_cache_changed();
-- The throttle memo (src/capture_memo.cpp) may keep a customer's last_survey_at; only
-- changes that remove or lower one need to reach it. Raising it (every new survey) does not.
CREATE TRIGGER customer_contact_removed
  AFTER DELETE ON @extschema@.customer_contact
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._capture_cache_changed();
CREATE TRIGGER customer_contact_truncated
  AFTER TRUNCATE ON @extschema@.customer_contact
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._capture_cache_changed();
CREATE TRIGGER customer_contact_lowered
  AFTER UPDATE ON @extschema@.customer_contact FOR EACH ROW
  WHEN (NEW.last_survey_at < OLD.last_survey_at OR NEW.customer_id IS DISTINCT FROM OLD.customer_id)
  EXECUTE FUNCTION @extschema@._capture_cache_changed();
-- The same memo knows whether opt_out is empty; only rows arriving change that.
CREATE TRIGGER opt_out_added
  AFTER INSERT OR UPDATE ON @extschema@.opt_out
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._capture_cache_changed();

CREATE FUNCTION @extschema@.track_payments(
    source regclass, customer text, payment_key text, succeeded_when text,
    failed_when text DEFAULT NULL, amount text DEFAULT NULL, currency text DEFAULT NULL,
    paid_at text DEFAULT NULL, attributes text DEFAULT NULL, name text DEFAULT NULL,
    on_error text DEFAULT 'record') RETURNS integer
  AS 'MODULE_PATHNAME', 'nps_track_payments' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION @extschema@.track_payments(regclass, text, text, text, text, text, text, text, text, text, text) IS
  'Track a payments table: SQL expressions over its rows say who paid, which payment, whether it succeeded or failed; returns the payment_source id';

CREATE FUNCTION @extschema@.untrack_payments(source regclass) RETURNS void
  AS 'MODULE_PATHNAME', 'nps_untrack_payments' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION @extschema@.untrack_payments(regclass) IS
  'Stop tracking a payments table: drops its capture triggers, keeps events, surveys and the source row (tracked = false)';

CREATE FUNCTION @extschema@.opt_out(customer text) RETURNS boolean
  LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  added boolean;
BEGIN
  IF customer IS NULL THEN
    RAISE EXCEPTION 'customer must not be NULL' USING ERRCODE = '22004';
  END IF;
  INSERT INTO @extschema@.opt_out (customer_id) VALUES (customer) ON CONFLICT (customer_id) DO NOTHING;
  added := FOUND;
  -- Surveys not yet handed to a sender are withdrawn.
  UPDATE @extschema@.survey SET status = 'cancelled'
   WHERE survey.customer_id = customer AND survey.status = 'pending';
  RETURN added;
END $$;
COMMENT ON FUNCTION @extschema@.opt_out(text) IS
  'The customer gets no more surveys (events still record opted_out); pending surveys are cancelled. True when newly opted out';

CREATE FUNCTION @extschema@.opt_in(customer text) RETURNS boolean
  LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF customer IS NULL THEN
    RAISE EXCEPTION 'customer must not be NULL' USING ERRCODE = '22004';
  END IF;
  DELETE FROM @extschema@.opt_out WHERE opt_out.customer_id = customer;
  RETURN FOUND;
END $$;
COMMENT ON FUNCTION @extschema@.opt_in(text) IS
  'Undo opt_out(): the customer may be surveyed again (future payments only). True when the customer was opted out';
-- Delivery: the survey queue (claim / mark_sent / mark_failed / expire) and responses.
--
-- The queue follows pgmq's visibility-timeout model: claim_surveys() leases due surveys with
-- FOR UPDATE SKIP LOCKED, so concurrent senders never block each other and never get the same
-- survey while its lease holds; a crashed sender's lease runs out and the survey is claimed
-- again (at-least-once delivery, attempts counted, max_attempts per source).
--
-- All functions are SECURITY DEFINER (senders and collectors get EXECUTE on them and nothing on
-- the tables) with a fixed search_path and schema-qualified names. Error messages name survey
-- ids and statuses, never customer ids, tokens or comments.

CREATE TYPE @extschema@.claimed_survey AS (
  id          bigint,       -- survey id: pass it to mark_sent / mark_failed
  token       text,         -- the URL-safe token to put in the survey link
  customer_id text,
  channel     text,         -- email / in_app / sms
  attempts    integer,      -- 1 on the first delivery attempt
  lease_until timestamptz,  -- call mark_sent before this
  expires_at  timestamptz,  -- the link stops accepting answers at this time
  source      text,         -- payment_source.name
  kind        text,         -- succeeded / failed (the payment event that triggered it)
  amount      numeric,
  currency    text,
  occurred_at timestamptz,
  attributes  jsonb
);
COMMENT ON TYPE @extschema@.claimed_survey IS
  'A survey leased by claim_surveys(), with the payment context a message needs';
REVOKE USAGE ON TYPE @extschema@.claimed_survey FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.claim_surveys(worker text, max integer DEFAULT 100,
                                          lease interval DEFAULT '5 minutes')
RETURNS SETOF @extschema@.claimed_survey
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  -- Not STRICT: a NULL argument is a caller bug and gets 22004, not a silent empty result.
  IF worker IS NULL OR max IS NULL OR lease IS NULL THEN
    RAISE EXCEPTION 'claim_surveys: % must not be NULL',
      CASE WHEN worker IS NULL THEN 'worker' WHEN max IS NULL THEN 'max' ELSE 'lease' END
      USING ERRCODE = '22004';
  END IF;
  IF worker = '' OR length(worker) > 200 THEN
    RAISE EXCEPTION 'claim_surveys: worker name must have 1..200 characters, got %', length(worker)
      USING ERRCODE = '22023';
  END IF;
  IF max <= 0 OR max > 10000 THEN
    RAISE EXCEPTION 'claim_surveys: max % is out of range 1..10000', max USING ERRCODE = '22023';
  END IF;
  IF lease <= interval '0' OR lease > interval '1 day' THEN
    RAISE EXCEPTION 'claim_surveys: lease % is out of range (0, 1 day]', lease USING ERRCODE = '22023';
  END IF;
  RETURN QUERY
  WITH picked AS (
    SELECT s.id
      FROM @extschema@.survey s
     WHERE s.status IN ('pending', 'sending')
       AND s.send_after <= now()
       AND s.expires_at > now()
       AND (s.status = 'pending'
            OR (s.lease_until <= now()
                AND s.attempts < (SELECT p.max_attempts FROM @extschema@.payment_source p
                                   WHERE p.id = s.source_id)))
     ORDER BY s.send_after  -- the queue index's order: no sort of the whole backlog
     LIMIT claim_surveys.max
       FOR UPDATE OF s SKIP LOCKED
  ), claimed AS (
    UPDATE @extschema@.survey s
       SET status = 'sending',
           lease_owner = claim_surveys.worker,
           lease_until = now() + claim_surveys.lease,
           attempts = s.attempts + 1
      FROM picked
     WHERE s.id = picked.id
    RETURNING s.id, s.token, s.customer_id, s.channel, s.attempts, s.lease_until, s.expires_at,
              s.source_id, s.event_id, s.send_after
  )
  SELECT c.id, c.token, c.customer_id, c.channel, c.attempts, c.lease_until, c.expires_at,
         p.name, e.kind, e.amount, e.currency, e.occurred_at, e.attributes
    FROM claimed c
    LEFT JOIN @extschema@.payment_source p ON p.id = c.source_id
    LEFT JOIN @extschema@.payment_event e ON e.id = c.event_id
   ORDER BY c.send_after, c.id;
END
$fn$;
COMMENT ON FUNCTION @extschema@.claim_surveys(text, integer, interval) IS
  'Leases up to max due surveys (pending, or sending with a lapsed lease) to worker for lease; '
  'FOR UPDATE SKIP LOCKED: concurrent workers never get the same survey while a lease holds';

-- ---------------------------------------------------------------------------------------------
-- The lease check shared by mark_sent and mark_failed: locks the survey row and returns it, or
-- raises P0002 (no such survey) / 55000 (not leased by this worker any more).
CREATE FUNCTION @extschema@.lease_check(survey_id bigint, worker text, caller text)
RETURNS @extschema@.survey
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  s @extschema@.survey;
BEGIN
  IF survey_id IS NULL OR worker IS NULL THEN
    RAISE EXCEPTION '%: % must not be NULL', caller,
      CASE WHEN survey_id IS NULL THEN 'survey_id' ELSE 'worker' END USING ERRCODE = '22004';
  END IF;
  SELECT * INTO s FROM @extschema@.survey x WHERE x.id = lease_check.survey_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION '%: survey % does not exist', caller, survey_id USING ERRCODE = 'P0002';
  END IF;
  -- The owner may still report after its lease lapsed as long as nobody re-claimed the survey:
  -- the message most likely went out, and recording it prevents a second send.
  IF s.lease_owner IS DISTINCT FROM worker OR s.status NOT IN ('sending', 'responded') THEN
    RAISE EXCEPTION '%: survey % is not leased by worker "%"', caller, survey_id, worker
      USING ERRCODE = '55000',
            DETAIL = CASE
              WHEN s.status = 'sending' THEN 'Another worker holds its lease (a lapsed lease is re-claimed).'
              ELSE format('Its status is %s.', s.status) END,
            HINT = 'Do not report a survey twice; claim it again with claim_surveys().';
  END IF;
  RETURN s;
END
$fn$;
REVOKE ALL ON FUNCTION @extschema@.lease_check(bigint, text, text) FROM PUBLIC;
COMMENT ON FUNCTION @extschema@.lease_check(bigint, text, text) IS
  'Internal: locks a survey and checks that worker holds its lease; grant nobody';

CREATE FUNCTION @extschema@.mark_sent(survey_id bigint, worker text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  s @extschema@.survey;
BEGIN
  s := @extschema@.lease_check(survey_id, worker, 'mark_sent');
  -- An answer can arrive before the sender reports (in-app surveys): keep 'responded'.
  UPDATE @extschema@.survey x
     SET status = CASE WHEN x.status = 'responded' THEN 'responded' ELSE 'sent' END,
         sent_at = now(), lease_owner = NULL, lease_until = NULL
   WHERE x.id = s.id;
END
$fn$;
COMMENT ON FUNCTION @extschema@.mark_sent(bigint, text) IS
  'Reports a claimed survey as sent; only the worker holding its lease (55000 otherwise)';

CREATE FUNCTION @extschema@.mark_failed(survey_id bigint, worker text, error text,
                                        retry_after interval DEFAULT '15 minutes')
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  s @extschema@.survey;
  max_attempts integer;
  new_status text;
BEGIN
  IF error IS NULL OR retry_after IS NULL THEN
    RAISE EXCEPTION 'mark_failed: % must not be NULL',
      CASE WHEN error IS NULL THEN 'error' ELSE 'retry_after' END USING ERRCODE = '22004';
  END IF;
  IF retry_after < interval '0' THEN
    RAISE EXCEPTION 'mark_failed: retry_after % is negative', retry_after USING ERRCODE = '22023';
  END IF;
  s := @extschema@.lease_check(survey_id, worker, 'mark_failed');
  SELECT p.max_attempts INTO max_attempts FROM @extschema@.payment_source p WHERE p.id = s.source_id;
  new_status := CASE WHEN s.status = 'responded' THEN 'responded'
                     WHEN s.attempts >= coalesce(max_attempts, 5) THEN 'failed'
                     ELSE 'pending' END;
  UPDATE @extschema@.survey x
     SET status = new_status,
         send_after = CASE WHEN new_status = 'pending' THEN now() + retry_after ELSE x.send_after END,
         last_error = left(error, 2000),
         lease_owner = NULL, lease_until = NULL
   WHERE x.id = s.id;
  RETURN new_status;
END
$fn$;
COMMENT ON FUNCTION @extschema@.mark_failed(bigint, text, text, interval) IS
  'Reports a failed delivery: back to pending after retry_after, or failed once attempts reach '
  'the source''s max_attempts (default 5); returns the new status';

CREATE FUNCTION @extschema@.expire_surveys()
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  expired integer;
  exhausted integer;
BEGIN
  -- 'sent' too: an unanswered survey expires (sent_at still tells it was delivered).
  UPDATE @extschema@.survey s
     SET status = 'expired', lease_owner = NULL, lease_until = NULL
   WHERE s.status IN ('pending', 'sending', 'sent') AND s.expires_at <= now();
  GET DIAGNOSTICS expired = ROW_COUNT;
  -- Leases that ran out max_attempts times (a sender that crashes on this survey every time)
  -- are never claimed again: close them as failed.
  UPDATE @extschema@.survey s
     SET status = 'failed', lease_owner = NULL, lease_until = NULL,
         last_error = coalesce(s.last_error, 'lease ran out ' || s.attempts || ' times')
    FROM @extschema@.payment_source p
   WHERE s.status = 'sending' AND s.lease_until <= now()
     AND p.id = s.source_id AND s.attempts >= p.max_attempts;
  GET DIAGNOSTICS exhausted = ROW_COUNT;
  RETURN expired + exhausted;
END
$fn$;
COMMENT ON FUNCTION @extschema@.expire_surveys() IS
  'Marks overdue pending/sending/sent surveys expired (and lapsed leases past max_attempts failed); '
  'returns how many surveys it closed. Schedule it (pg_cron or cron).';

-- ---------------------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.record_response(token text, score integer, comment text DEFAULT NULL,
                                            responded_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  s @extschema@.survey;
  rid bigint;
BEGIN
  IF token IS NULL OR score IS NULL OR responded_at IS NULL THEN
    RAISE EXCEPTION 'record_response: % must not be NULL',
      CASE WHEN token IS NULL THEN 'token' WHEN score IS NULL THEN 'score' ELSE 'responded_at' END
      USING ERRCODE = '22004';
  END IF;
  IF score < 0 OR score > 10 THEN
    RAISE EXCEPTION 'NPS score % is out of range 0..10', score USING ERRCODE = '22003';
  END IF;
  IF NOT isfinite(responded_at) THEN
    RAISE EXCEPTION 'record_response: responded_at % is not a finite time', responded_at
      USING ERRCODE = '22023';
  END IF;
  IF length(comment) > 10000 THEN
    RAISE EXCEPTION 'record_response: comment has % characters, at most 10000 are kept', length(comment)
      USING ERRCODE = '22001';
  END IF;
  -- Lock the survey: concurrent answers and expire_surveys() serialise on this row.
  SELECT * INTO s FROM @extschema@.survey x WHERE x.token = record_response.token FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'record_response: no survey has this token' USING ERRCODE = 'P0002';
  END IF;
  IF s.status IN ('expired', 'cancelled') THEN
    RAISE EXCEPTION 'record_response: survey % is %', s.id, s.status USING ERRCODE = '22023';
  END IF;
  IF responded_at >= s.expires_at THEN
    RAISE EXCEPTION 'record_response: survey % is expired (it closed at %)', s.id, s.expires_at
      USING ERRCODE = '22023', DETAIL = format('Its status is %s.', s.status);
  END IF;
  INSERT INTO @extschema@.response AS r (survey_id, customer_id, score, comment, channel, responded_at)
  VALUES (s.id, s.customer_id, score, comment, s.channel, responded_at)
  ON CONFLICT (survey_id) DO UPDATE
     SET score = excluded.score, comment = excluded.comment,
         responded_at = excluded.responded_at, updated_at = now()
  RETURNING r.id INTO rid;
  UPDATE @extschema@.survey x SET status = 'responded'
   WHERE x.id = s.id AND x.status <> 'responded';
  RETURN rid;
END
$fn$;
COMMENT ON FUNCTION @extschema@.record_response(text, integer, text, timestamptz) IS
  'Stores the answer to a survey (by its token) and returns the response id; a second answer '
  'replaces the first. Unknown token P0002, expired/cancelled survey 22023, score 22003';
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
BEGIN
  IF older_than IS NULL THEN
    RAISE EXCEPTION 'purge: older_than must not be NULL' USING ERRCODE = '22004';
  END IF;
  IF older_than <= interval '0' THEN
    RAISE EXCEPTION 'purge: older_than % must be positive', older_than USING ERRCODE = '22023';
  END IF;
  cutoff := now() - older_than;

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
  DELETE FROM @extschema@.payment_event e
   WHERE e.occurred_at < cutoff
     AND NOT EXISTS (SELECT 1 FROM @extschema@.survey s
                      WHERE s.event_id = e.id AND s.status IN ('pending', 'sending'));
  GET DIAGNOSTICS events = ROW_COUNT;

  -- Old responses lose comment and links to a person; score, category, channel and dates stay.
  UPDATE @extschema@.response r
     SET comment = NULL, customer_id = NULL, survey_id = NULL
   WHERE r.responded_at < cutoff
     AND (r.comment IS NOT NULL OR r.customer_id IS NOT NULL OR r.survey_id IS NOT NULL);
  GET DIAGNOSTICS responses = ROW_COUNT;

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
-- Analysis for BI tools: every answer tied to the payment behaviour around it.
-- The functions are plain LANGUAGE sql, STABLE and not STRICT so PostgreSQL inlines them into
-- the caller's query: the planner sees the real arguments (time ranges become index ranges) and
-- EXPLAIN SELECT * FROM nps_trend(...) shows the actual plan. They run with the caller's rights
-- and read only what the analyst role of README.md (Privacy) may read (response scores and dates,
-- the views). The three that must look at customer ids, payment events or surveys
-- (nps_failed_payments, revenue_at_risk, survey_funnel) are SECURITY DEFINER and return only
-- aggregates: no id, comment or token ever leaves them.

-- Argument validation usable inside an inlined SQL function: a condition with no column
-- references becomes a one-time filter (or is folded at plan time), so it raises before any
-- row is read. IMMUTABLE: the outcome depends only on the arguments.
CREATE FUNCTION @extschema@.check_argument(ok boolean, sqlstate text, message text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
  IF ok IS NOT TRUE THEN
    RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message;
  END IF;
  RETURN true;
END
$$;
COMMENT ON FUNCTION @extschema@.check_argument(boolean, text, text) IS
  'Raises the given SQLSTATE and message unless ok is true; used to validate analysis function arguments';

-- Builds an unweighted summary from a score histogram (element 1 = score 0), the inverse of
-- score_histogram(). nps_by() uses it for "all other segments" (total minus one segment)
-- without a second pass over the rows.
CREATE FUNCTION @extschema@.npsagg_from_histogram(histogram bigint[]) RETURNS @extschema@.npsagg
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
  SELECT CASE WHEN @extschema@.check_argument(
                     array_ndims(histogram) = 1 AND cardinality(histogram) = 11
                     AND array_position(histogram, NULL) IS NULL AND 0 <= ALL (histogram),
                     '22023', format('npsagg_from_histogram: %s must be 11 non-negative counts', histogram))
              THEN format('{"counts":[%1$s],"weights":[%1$s],"weight_sq":%2$s}',
                          array_to_string(histogram, ','),
                          (SELECT sum(c) FROM unnest(histogram) c))::@extschema@.npsagg
         END
$$;
COMMENT ON FUNCTION @extschema@.npsagg_from_histogram(bigint[]) IS
  'Unweighted npsagg from 11 score counts (element 1 = score 0); inverse of score_histogram()';

-- Surveys by creation time: survey_funnel(since) reads a recent range.
CREATE INDEX survey_created_at_idx ON @extschema@.survey (created_at);

CREATE VIEW @extschema@.response_context AS
-- No customer id, comment or survey link: the analyst role may read every view (README.md (Privacy)),
-- so this one carries scores, dates and payment context only. Join response on response_id
-- (with the rights to read it) for comments.
SELECT r.id            AS response_id,
       r.score,
       r.category,
       r.channel,
       r.responded_at,
       e.id            AS event_id,
       ps.name         AS source,
       e.kind,
       e.amount,
       e.currency,
       e.occurred_at   AS payment_at,
       e.attributes,
       -- whole days elapsed (24 h periods, time-zone independent): 0 = within a day of paying
       floor(extract(epoch FROM r.responded_at - e.occurred_at) / 86400)::integer AS days_since_payment,
       CASE WHEN r.customer_id IS NOT NULL THEN
         EXISTS (SELECT 1 FROM @extschema@.payment_event f
                 WHERE f.customer_id = r.customer_id AND f.kind = 'failed'
                   AND f.occurred_at > r.responded_at - interval '30 days'
                   AND f.occurred_at <= r.responded_at)
       END             AS failed_payment_30d
FROM @extschema@.response r
LEFT JOIN LATERAL (
  -- the customer's last payment event (succeeded or failed) at or before the answer;
  -- one backward step on payment_event_customer_idx
  SELECT e.id, e.source_id, e.kind, e.amount, e.currency, e.occurred_at, e.attributes
  FROM @extschema@.payment_event e
  WHERE e.customer_id = r.customer_id AND e.occurred_at <= r.responded_at
  ORDER BY e.occurred_at DESC, e.id DESC
  LIMIT 1) e ON true
LEFT JOIN @extschema@.payment_source ps ON ps.id = e.source_id;

COMMENT ON VIEW @extschema@.response_context IS
  'Each response with its customer''s last payment event at or before it (NULL payment columns when none); no customer id or comment';
COMMENT ON COLUMN @extschema@.response_context.source IS 'payment_source.name of the last payment event';
COMMENT ON COLUMN @extschema@.response_context.kind IS 'succeeded or failed: the last payment event''s kind';
COMMENT ON COLUMN @extschema@.response_context.payment_at IS 'when the last payment event occurred';
COMMENT ON COLUMN @extschema@.response_context.attributes IS 'the last payment event''s attributes (plan, method, ...)';
COMMENT ON COLUMN @extschema@.response_context.days_since_payment IS
  'whole 24-hour periods between the last payment event and the answer (0 = within a day)';
COMMENT ON COLUMN @extschema@.response_context.failed_payment_30d IS
  'a failed payment of this customer in the 30 days up to the answer; NULL when the customer is unknown';

CREATE FUNCTION @extschema@.nps_trend(bucket interval, since timestamptz, until timestamptz)
RETURNS TABLE (bucket_start timestamptz, responses bigint, nps float8, ci_low float8, ci_high float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT b.bucket_start,
         coalesce(@extschema@.responses(s.a), 0),
         @extschema@.nps(s.a), ci.low, ci.high
  FROM generate_series(since, until, bucket) AS b(bucket_start)
  CROSS JOIN LATERAL (
    SELECT @extschema@.nps_agg(r.score) AS a
    FROM @extschema@.response r
    WHERE r.responded_at >= b.bucket_start
      AND r.responded_at < least(b.bucket_start + bucket, until)) s
  LEFT JOIN LATERAL @extschema@.nps_ci(s.a) ci ON true
  WHERE b.bucket_start < until
    AND @extschema@.check_argument(bucket IS NOT NULL AND since IS NOT NULL AND until IS NOT NULL,
          '22004', 'nps_trend: bucket, since and until must not be NULL')
    AND @extschema@.check_argument(bucket IS NULL OR bucket > interval '0',
          '22023', format('nps_trend: bucket %s must be a positive interval', bucket))
    AND @extschema@.check_argument(since IS NULL OR until IS NULL
                                   OR (isfinite(since) AND isfinite(until) AND since <= until),
          '22023', format('nps_trend: since %s and until %s must be finite with since <= until', since, until))
    AND @extschema@.check_argument(bucket IS NULL OR since IS NULL OR until IS NULL
                                   OR NOT isfinite(since) OR NOT isfinite(until) OR bucket <= interval '0'
                                   OR extract(epoch FROM until - since) / extract(epoch FROM bucket) <= 100000,
          '54000', format('nps_trend: buckets of %s between %s and %s exceed the limit of 100000 buckets',
                          bucket, since, until))
  ORDER BY b.bucket_start
$$;
COMMENT ON FUNCTION @extschema@.nps_trend(interval, timestamptz, timestamptz) IS
  'NPS per time bucket in [since, until) with a 95% adjusted Wald CI; empty buckets have 0 responses and NULL NPS';

CREATE FUNCTION @extschema@.nps_by(attribute text,
                                   since timestamptz DEFAULT '-infinity',
                                   until timestamptz DEFAULT 'infinity',
                                   min_responses integer DEFAULT 30)
RETURNS TABLE (value text, responses bigint, nps float8, ci_low float8, ci_high float8,
               difference float8, p_value float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  WITH seg AS (
    SELECT c.attributes ->> attribute AS value, @extschema@.nps_agg(c.score) AS a
    FROM @extschema@.response_context c
    WHERE c.responded_at >= since AND c.responded_at < until
      AND @extschema@.check_argument(attribute IS NOT NULL AND since IS NOT NULL AND until IS NOT NULL
                                     AND min_responses IS NOT NULL,
            '22004', 'nps_by: attribute, since, until and min_responses must not be NULL')
      AND @extschema@.check_argument(min_responses IS NULL OR min_responses >= 1,
            '22023', format('nps_by: min_responses %s must be at least 1', min_responses))
    GROUP BY 1
  ), total AS (
    SELECT @extschema@.score_histogram(@extschema@.rollup(seg.a)) AS h FROM seg
  ), cmp AS (
    SELECT seg.value, seg.a,
           @extschema@.npsagg_from_histogram(ARRAY(
             SELECT t - s FROM unnest(total.h, @extschema@.score_histogram(seg.a)) AS u(t, s))) AS rest
    FROM seg, total
  )
  SELECT cmp.value,
         @extschema@.responses(cmp.a),
         CASE WHEN big THEN @extschema@.nps(cmp.a) END,
         CASE WHEN big THEN ci.low END,
         CASE WHEN big THEN ci.high END,
         CASE WHEN big AND rest_big THEN d.difference END,
         CASE WHEN big AND rest_big THEN d.p_value END
  FROM cmp
  CROSS JOIN LATERAL (SELECT @extschema@.responses(cmp.a) >= min_responses AS big,
                             @extschema@.responses(cmp.rest) >= min_responses AS rest_big) k
  LEFT JOIN LATERAL @extschema@.nps_ci(cmp.a) ci ON true
  LEFT JOIN LATERAL @extschema@.nps_compare(cmp.a, cmp.rest) d ON true
  ORDER BY 2 DESC, 1 NULLS LAST
$$;
COMMENT ON FUNCTION @extschema@.nps_by(text, timestamptz, timestamptz, integer) IS
  'NPS per value of a payment attribute (e.g. method, plan) for answers in [since, until): CI, difference vs all other answers, p-value; statistics NULL below min_responses';

CREATE FUNCTION @extschema@.nps_by_days_since_payment(max_days integer DEFAULT 30)
RETURNS TABLE (day integer, responses bigint, nps float8, ci_low float8, ci_high float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT d.day, coalesce(@extschema@.responses(s.a), 0), @extschema@.nps(s.a), ci.low, ci.high
  FROM generate_series(0, max_days) AS d(day)
  LEFT JOIN (
    SELECT c.days_since_payment AS day, @extschema@.nps_agg(c.score) AS a
    FROM @extschema@.response_context c
    WHERE c.days_since_payment <= max_days
    GROUP BY 1) s ON s.day = d.day
  LEFT JOIN LATERAL @extschema@.nps_ci(s.a) ci ON true
  WHERE @extschema@.check_argument(max_days IS NOT NULL, '22004',
          'nps_by_days_since_payment: max_days must not be NULL')
    AND @extschema@.check_argument(max_days IS NULL OR max_days BETWEEN 0 AND 3660, '22023',
          format('nps_by_days_since_payment: max_days %s must be between 0 and 3660', max_days))
  ORDER BY d.day
$$;
COMMENT ON FUNCTION @extschema@.nps_by_days_since_payment(integer) IS
  'NPS by whole days between the last payment event and the answer (0..max_days, empty days included)';

CREATE FUNCTION @extschema@.nps_failed_payments("window" interval DEFAULT '30 days')
RETURNS TABLE (failed_payment boolean, responses bigint, nps float8, ci_low float8, ci_high float8,
               difference float8, p_value float8)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  WITH g AS (
    SELECT EXISTS (SELECT 1 FROM @extschema@.payment_event f
                   WHERE f.customer_id = r.customer_id AND f.kind = 'failed'
                     AND f.occurred_at > r.responded_at - "window"
                     AND f.occurred_at <= r.responded_at) AS failed,
           @extschema@.nps_agg(r.score) AS a
    FROM @extschema@.response r
    -- answers tied to a payment: the customer had a payment event at or before the answer
    WHERE EXISTS (SELECT 1 FROM @extschema@.payment_event e
                  WHERE e.customer_id = r.customer_id AND e.occurred_at <= r.responded_at)
      AND @extschema@.check_argument("window" IS NOT NULL, '22004',
            'nps_failed_payments: window must not be NULL')
      AND @extschema@.check_argument("window" IS NULL OR "window" > interval '0', '22023',
            format('nps_failed_payments: window %s must be a positive interval', "window"))
    GROUP BY 1
  )
  SELECT v.failed_payment, coalesce(@extschema@.responses(g.a), 0), @extschema@.nps(g.a),
         ci.low, ci.high, d.difference, d.p_value
  FROM (VALUES (true), (false)) AS v(failed_payment)
  LEFT JOIN g ON g.failed = v.failed_payment
  LEFT JOIN LATERAL @extschema@.nps_ci(g.a) ci ON true
  LEFT JOIN LATERAL @extschema@.nps_compare(
    g.a, (SELECT o.a FROM g o WHERE o.failed <> v.failed_payment)) d ON true
  ORDER BY v.failed_payment DESC
$$;
COMMENT ON FUNCTION @extschema@.nps_failed_payments(interval) IS
  'NPS of answers with and without a failed payment of the customer in the window before the answer; difference (this row minus the other) and p-value';

CREATE FUNCTION @extschema@.revenue_at_risk(since timestamptz)
RETURNS TABLE (category @extschema@.nps_category, currency text, customers bigint, payments bigint,
               amount numeric)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  WITH latest AS (
    -- each customer's latest answer decides their category
    SELECT DISTINCT ON (r.customer_id) r.customer_id, r.category
    FROM @extschema@.response r
    WHERE r.customer_id IS NOT NULL
    ORDER BY r.customer_id, r.responded_at DESC, r.id DESC
  )
  SELECT l.category, p.currency, count(*), sum(p.payments)::bigint, sum(p.amount)
  FROM latest l
  CROSS JOIN LATERAL (
    SELECT e.currency, count(*) AS payments, sum(e.amount) AS amount
    FROM @extschema@.payment_event e
    WHERE e.customer_id = l.customer_id AND e.kind = 'succeeded' AND e.occurred_at >= since
    GROUP BY e.currency) p
  WHERE l.category IN ('detractor', 'passive')
    AND @extschema@.check_argument(since IS NOT NULL, '22004', 'revenue_at_risk: since must not be NULL')
  GROUP BY l.category, p.currency
  ORDER BY p.currency NULLS LAST, l.category
$$;
COMMENT ON FUNCTION @extschema@.revenue_at_risk(timestamptz) IS
  'Succeeded payments since a time of customers whose latest answer is detractor or passive, by category and currency';

CREATE FUNCTION @extschema@.survey_funnel(since timestamptz)
RETURNS TABLE (created bigint, sent bigint, responded bigint, expired bigint, failed bigint,
               response_rate float8, median_time_to_answer interval)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT count(*),
         count(*) FILTER (WHERE s.sent_at IS NOT NULL OR r.id IS NOT NULL),
         count(r.id),
         count(*) FILTER (WHERE s.status = 'expired'),
         count(*) FILTER (WHERE s.status = 'failed'),
         count(r.id)::float8 / nullif(count(*) FILTER (WHERE s.sent_at IS NOT NULL OR r.id IS NOT NULL), 0),
         percentile_cont(0.5) WITHIN GROUP (ORDER BY r.responded_at - s.sent_at)
  FROM @extschema@.survey s
  -- an answer never predates its survey: the extra range lets the planner read only recent
  -- answers (response_responded_at_idx) instead of every answer ever given
  LEFT JOIN @extschema@.response r ON r.survey_id = s.id AND r.responded_at >= since
  WHERE s.created_at >= since
    AND @extschema@.check_argument(since IS NOT NULL, '22004', 'survey_funnel: since must not be NULL')
$$;
COMMENT ON FUNCTION @extschema@.survey_funnel(timestamptz) IS
  'Surveys created since a time: how many were sent, answered, expired, failed; response rate (answered/sent) and median time from sending to answer';

CREATE FUNCTION @extschema@.nps_alerts("window" interval, drop_threshold float8,
                                       attributes text[] DEFAULT '{plan,method}',
                                       min_responses integer DEFAULT 30,
                                       as_of timestamptz DEFAULT now())
RETURNS TABLE (dimension text, value text, previous_responses bigint, previous_nps float8,
               current_responses bigint, current_nps float8, nps_drop float8, p_value float8)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  WITH w AS (
    SELECT c.score, c.responded_at >= as_of - "window" AS is_current, c.source, c.attributes
    FROM @extschema@.response_context c
    WHERE c.responded_at >= (as_of - "window") - "window" AND c.responded_at < as_of
      AND @extschema@.check_argument("window" IS NOT NULL AND drop_threshold IS NOT NULL
                                     AND nps_alerts.attributes IS NOT NULL AND min_responses IS NOT NULL
                                     AND as_of IS NOT NULL,
            '22004', 'nps_alerts: no argument may be NULL')
      AND @extschema@.check_argument("window" IS NULL OR "window" > interval '0', '22023',
            format('nps_alerts: window %s must be a positive interval', "window"))
      AND @extschema@.check_argument(drop_threshold IS NULL
                                     OR (drop_threshold >= 0 AND drop_threshold < 'infinity'), '22023',
            format('nps_alerts: drop_threshold %s must be a finite number >= 0', drop_threshold))
      AND @extschema@.check_argument(min_responses IS NULL OR min_responses >= 1, '22023',
            format('nps_alerts: min_responses %s must be at least 1', min_responses))
      AND @extschema@.check_argument(as_of IS NULL OR isfinite(as_of), '22023',
            format('nps_alerts: as_of %s must be finite', as_of))
  ), seg AS (
    SELECT d.dimension, d.value,
           @extschema@.nps_agg(w.score) FILTER (WHERE w.is_current) AS cur,
           @extschema@.nps_agg(w.score) FILTER (WHERE NOT w.is_current) AS prev
    FROM w
    CROSS JOIN LATERAL (
      SELECT 'overall'::text, NULL::text
      UNION ALL SELECT 'source', w.source WHERE w.source IS NOT NULL
      UNION ALL SELECT k.key, w.attributes ->> k.key
                FROM unnest(nps_alerts.attributes) AS k(key) WHERE w.attributes ->> k.key IS NOT NULL
    ) AS d(dimension, value)
    GROUP BY 1, 2
  )
  SELECT seg.dimension, seg.value,
         @extschema@.responses(seg.prev), @extschema@.nps(seg.prev),
         @extschema@.responses(seg.cur), @extschema@.nps(seg.cur),
         @extschema@.nps(seg.prev) - @extschema@.nps(seg.cur),
         cmp.p_value
  FROM seg
  CROSS JOIN LATERAL @extschema@.nps_compare(seg.cur, seg.prev) cmp
  WHERE @extschema@.responses(seg.cur) >= min_responses
    AND @extschema@.responses(seg.prev) >= min_responses
    AND @extschema@.nps(seg.prev) - @extschema@.nps(seg.cur) > drop_threshold
  ORDER BY cmp.p_value, 7 DESC, 1, 2
$$;
COMMENT ON FUNCTION @extschema@.nps_alerts(interval, float8, text[], integer, timestamptz) IS
  'Segments (overall, source, each listed attribute) whose NPS in [as_of - window, as_of) fell by more than drop_threshold points versus the window before, with p-value';
-- Nothing is granted to PUBLIC (functions and types default to PUBLIC; take that back).
-- The README's role recipes grant exactly what each role needs.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE USAGE ON TYPE @extschema@.nps_category, @extschema@.nps_score, @extschema@.npsagg FROM PUBLIC;
