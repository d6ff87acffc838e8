-- Copied from the nps_billing contract (shared spec, examples/stripe.sql) so the demo, the tests and
-- the README recipes run from a plain clone of this repository. Keep it identical to the spec copy.
-- Stripe data as synced into PostgreSQL by Supabase's stripe-sync-engine
-- (github.com/supabase/stripe-sync-engine, commit e3eeb363b4f17103bcba46cbe803980f746ebe9b).
-- Shape taken from packages/sync-engine/src/database/migrations/:
--   0002_customers.sql, 0006_charges.sql, 0012_add_updated_at.sql, 0015_add_customer_deleted.sql,
--   0017_drop_charges_unavailable_columns.sql, 0021_payment_intent.sql, 0033_add_last_synced_at.sql
-- Tables live in schema "stripe" (created by the migration runner, not by a migration).
-- Keys are Stripe object ids as text (ch_..., pi_..., cus_...). Amounts are bigint/integer in the
-- currency's minor unit; currency is lower-case ISO ('usd'). "created" is a Unix epoch in seconds
-- stored as integer, not a timestamp. There are no foreign keys between these tables.
-- Rows are written with INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE last_synced_at is older,
-- so the same charge arrives first as an INSERT and later as UPDATEs (status pending -> succeeded).

CREATE SCHEMA IF NOT EXISTS stripe;

-- Trigger function shared by the synced tables (0012_add_updated_at.sql; created in the default schema).
CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$;

CREATE TABLE IF NOT EXISTS stripe.customers (
    id                    text PRIMARY KEY,
    object                text,
    address               jsonb,
    description           text,
    email                 text,
    metadata              jsonb,
    name                  text,
    phone                 text,
    shipping              jsonb,
    balance               integer,
    created               integer,
    currency              text,
    default_source        text,
    delinquent            boolean,
    discount              jsonb,
    invoice_prefix        text,
    invoice_settings      jsonb,
    livemode              boolean,
    next_invoice_sequence integer,
    preferred_locales     jsonb,
    tax_exempt            text,
    updated_at            timestamptz DEFAULT timezone('utc'::text, now()) NOT NULL,
    deleted               boolean DEFAULT false NOT NULL,
    last_synced_at        timestamptz
);
CREATE TRIGGER handle_updated_at BEFORE UPDATE ON stripe.customers
    FOR EACH ROW EXECUTE PROCEDURE set_updated_at();

-- Charges. status: 'succeeded' | 'pending' | 'failed'; also paid (boolean), captured, refunded.
-- customer may be NULL (guest charges); receipt_email is the only e-mail on the row.
CREATE TABLE IF NOT EXISTS stripe.charges (
    id                     text PRIMARY KEY,
    object                 text,
    paid                   boolean,
    "order"                text,
    amount                 bigint,
    review                 text,
    source                 jsonb,
    status                 text,
    created                integer,
    dispute                text,
    invoice                text,
    outcome                jsonb,
    refunds                jsonb,
    updated                integer,
    captured               boolean,
    currency               text,
    customer               text,
    livemode               boolean,
    metadata               jsonb,
    refunded               boolean,
    shipping               jsonb,
    application            text,
    description            text,
    destination            text,
    failure_code           text,
    on_behalf_of           text,
    fraud_details          jsonb,
    receipt_email          text,
    payment_intent         text,
    receipt_number         text,
    transfer_group         text,
    amount_refunded        bigint,
    application_fee        text,
    failure_message        text,
    source_transfer        text,
    balance_transaction    text,
    statement_descriptor   text,
    payment_method_details jsonb,
    updated_at             timestamptz DEFAULT timezone('utc'::text, now()) NOT NULL,
    last_synced_at         timestamptz
);
CREATE TRIGGER handle_updated_at BEFORE UPDATE ON stripe.charges
    FOR EACH ROW EXECUTE PROCEDURE set_updated_at();

-- PaymentIntents. status: requires_payment_method | requires_confirmation | requires_action |
-- processing | requires_capture | canceled | succeeded. Amounts are integer here (not bigint).
-- No updated_at column and no trigger on this table.
CREATE TABLE IF NOT EXISTS stripe.payment_intents (
    id                          text PRIMARY KEY,
    object                      text,
    amount                      integer,
    amount_capturable           integer,
    amount_details              jsonb,
    amount_received             integer,
    application                 text,
    application_fee_amount      integer,
    automatic_payment_methods   text,
    canceled_at                 integer,
    cancellation_reason         text,
    capture_method              text,
    client_secret               text,
    confirmation_method         text,
    created                     integer,
    currency                    text,
    customer                    text,
    description                 text,
    invoice                     text,
    last_payment_error          text,
    livemode                    boolean,
    metadata                    jsonb,
    next_action                 text,
    on_behalf_of                text,
    payment_method              text,
    payment_method_options      jsonb,
    payment_method_types        jsonb,
    processing                  text,
    receipt_email               text,
    review                      text,
    setup_future_usage          text,
    shipping                    jsonb,
    statement_descriptor        text,
    statement_descriptor_suffix text,
    status                      text,
    transfer_data               jsonb,
    transfer_group              text,
    last_synced_at              timestamptz
);
CREATE INDEX stripe_payment_intents_customer_idx ON stripe.payment_intents USING btree (customer);
CREATE INDEX stripe_payment_intents_invoice_idx ON stripe.payment_intents USING btree (invoice);
