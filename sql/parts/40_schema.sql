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
  -- policy intervals: no negative part (they are added to payment times), bounded (35_intervals.sql)
  delay           interval NOT NULL DEFAULT '1 hour'
                  CHECK (@extschema@.interval_within(delay, '0', '1 year')),
  throttle        interval NOT NULL DEFAULT '90 days'
                  CHECK (@extschema@.interval_within(throttle, '0', '100 years')),
  sample_rate     float8 NOT NULL DEFAULT 1.0 CHECK (sample_rate >= 0 AND sample_rate <= 1),
  min_amount      numeric NOT NULL DEFAULT 0,
  channel         text NOT NULL DEFAULT 'email' CHECK (channel IN ('email', 'in_app', 'sms')),
  expires_after   interval NOT NULL DEFAULT '14 days'
                  CHECK (@extschema@.interval_within(expires_after, '1 minute', '10 years')),
  max_attempts    integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),  -- delivery tries per survey
  enabled         boolean NOT NULL DEFAULT true,
  tracked         boolean NOT NULL DEFAULT true,
  created_at      timestamptz NOT NULL DEFAULT now(),
  -- attribute keys the analysis rollups keep per day (segments of nps_by, nps_alerts)
  dimensions      text[] NOT NULL DEFAULT '{plan,method}',
  -- The *_expr columns hold the expressions bound at track time (schema-qualified, what runs);
  -- this keeps the text as it was written, keyed by track_payments' argument names.
  expressions_as_written jsonb,
  -- Survey messages (docs/messages.md): the contact expressions (bound like the others; their
  -- values are personal data, kept on the survey only) and where the answer and unsubscribe
  -- links of the messages point: <answer_base_url>/<token>/<score>, <answer_base_url>/u/<token>.
  recipient_expr  text,
  locale_expr     text,
  time_zone_expr  text,
  answer_base_url text CHECK (answer_base_url ~ '^https?://[A-Za-z0-9._~%!$&()*+,;=:@/-]+$'),
  -- Sending policy (61_send_policy.sql). The source's own time zone: the recipient's when the
  -- survey has none, and the one its daily cap counts days in. NULL: UTC.
  time_zone       text CHECK (@extschema@.time_zone_ok(time_zone)),
  -- The send window, in the recipient's local time: ISO weekdays (1 = Monday .. 7 = Sunday)
  -- and the hours [send_from, send_until) of each; the defaults are always open.
  send_days       integer[] NOT NULL DEFAULT '{1,2,3,4,5,6,7}'
                  CHECK (cardinality(send_days) BETWEEN 1 AND 7 AND send_days <@ '{1,2,3,4,5,6,7}'
                         AND array_ndims(send_days) = 1),
  send_from       time NOT NULL DEFAULT '00:00',
  send_until      time NOT NULL DEFAULT '24:00'
                  CONSTRAINT payment_source_send_window_check CHECK (send_from < send_until),
  -- Reminders: how many after the first send, each reminder_after the previous send.
  reminders       integer NOT NULL DEFAULT 0 CHECK (reminders BETWEEN 0 AND 10),
  reminder_after  interval NOT NULL DEFAULT '3 days'
                  CHECK (@extschema@.interval_within(reminder_after, '1 minute', '1 year')),
  -- At most daily_cap sends claimed per day of the source's time zone (NULL: no cap).
  daily_cap       integer CHECK (daily_cap >= 0)
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
  -- throttled, sampled_out, below_min_amount, opted_out, no_customer, no_recipient,
  -- not_surveyed_kind, disabled, backfilled (recorded by backfill_payments from rows that were there before tracking).
  -- No CHECK constraints on this table: PostgreSQL re-reads a CHECK's expression tree from text in
  -- every INSERT statement, which cost the capture trigger ~10% of single-row throughput (P6);
  -- the trigger is the only writer and writes only these values (README.md (Capture)).
  skip_reason text,
  UNIQUE (source_id, payment_key, kind)
);
-- (kind, currency and amount included: revenue_at_risk and the failed-payment check of an
-- answer's context read the index alone)
CREATE INDEX payment_event_customer_idx ON @extschema@.payment_event (customer_id, occurred_at)
  INCLUDE (kind, currency, amount);

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
  created_at  timestamptz NOT NULL DEFAULT now(),
  -- the login role (session_user's oid; read it as lease_role::regrole) that took the lease:
  -- with lease_owner it decides who may report the survey (60_delivery.sql)
  lease_role  oid,
  -- Derived from status: queued (pending or sending: it has a row in survey_queue, the due
  -- queue of 59_survey_queue.sql) and live (survey_expiry_idx holds it). No index of survey
  -- depends on a status change between pending, sending and sent, so a claim and a report
  -- touch no index of survey: PostgreSQL updates the row in place (HOT) when the page has room.
  queued      boolean GENERATED ALWAYS AS (status IN ('pending', 'sending')) STORED,
  live        boolean GENERATED ALWAYS AS (status IN ('pending', 'sending', 'sent')) STORED,
  recipient   text,            -- email address or phone number (personal data)
  locale      text,            -- e.g. 'de', 'pt-BR' (NULL: source default / 'en')
  time_zone   text,            -- IANA name (NULL: the source's time zone)
  -- Sending bookkeeping (61_send_policy.sql):
  reminder       integer NOT NULL DEFAULT 0,  -- the send under way or queued: 0 the first, n the n-th reminder
  reminders_sent integer NOT NULL DEFAULT 0,  -- reminders reported sent (before an answer)
  due_at         timestamptz,                 -- when it fell due, if a send window or the daily cap put it off to send_after
  cap_deferrals  integer NOT NULL DEFAULT 0   -- days it waited because its source's daily cap was reached
) WITH (fillfactor = 34);  -- room on each page for in-place (HOT) updates of claims and reports:
  -- a survey gets two new versions (claim, report) in quick succession, and with concurrent
  -- senders the original often cannot be pruned yet when the report comes (another session's
  -- snapshot still sees it), so the page must hold all three. At 50 a quarter of the reports
  -- with 4 senders moved to another page and added an entry to each index; once the surveys
  -- are sent, the table and its indexes are no larger at 34 than at 50.
CREATE INDEX survey_customer_idx ON @extschema@.survey (customer_id);
-- (The queue is the table survey_queue, 59_survey_queue.sql.)
-- expire_surveys() finds open surveys past their deadline.
CREATE INDEX survey_expiry_idx ON @extschema@.survey (expires_at) WHERE live;

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
  updated_at   timestamptz,
  -- The answer's payment context, fixed when the answer is recorded (trigger
  -- response_context_fill; refresh_response_context() after facts change). NULL: none.
  survey_event_id    bigint,       -- the payment event its survey was sent for
  payment_event_id   bigint,       -- the customer's last payment event at or before the answer
  payment_source_id  integer,
  payment_kind       text,
  payment_amount     numeric,
  payment_currency   text,
  payment_at         timestamptz,
  payment_attributes jsonb,
  payment_dimensions jsonb,        -- payment_attributes reduced to its source's dimensions
  days_since_payment integer,      -- whole 24-hour periods since payment_at
  failed_payment_30d boolean,      -- a failed payment in the 720 hours up to the answer
  context_at         timestamptz,  -- when the context was computed; an INSERT that sets it keeps its context
  -- Its survey's times (survey_funnel's median): kept by the response and survey triggers.
  answered_after     interval,     -- responded_at - survey.sent_at (NULL: no survey, or not sent)
  funnel_at          timestamptz   -- least(survey.created_at, responded_at) (NULL: no survey)
);
CREATE INDEX response_responded_at_idx ON @extschema@.response (responded_at);
-- (id and category too: nps_churn and nps_retention read each customer's first answer in
-- customer order from the index alone, without sorting the answers)
CREATE INDEX response_customer_idx ON @extschema@.response (customer_id, responded_at, id) INCLUDE (category);
-- refresh_response_context() after purge finds the answers whose payment event went
CREATE INDEX response_payment_event_idx ON @extschema@.response (payment_event_id) WHERE payment_event_id IS NOT NULL;

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
