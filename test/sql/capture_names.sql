-- Names in expressions are bound when the table is tracked: objects created afterwards in any
-- schema (the table's schema, public, the writer's pg_temp) do not change which function,
-- operator or type runs, on any evaluation path (including SQL functions the fast path inlines).
SET client_min_messages = warning;
CREATE ROLE regress_cap_bob;
CREATE ROLE regress_cap_mallory;
CREATE SCHEMA shop AUTHORIZATION regress_cap_bob;
GRANT CREATE, USAGE ON SCHEMA shop TO regress_cap_mallory;
GRANT CREATE, USAGE ON SCHEMA public TO regress_cap_mallory;
GRANT USAGE ON SCHEMA nps_billing TO regress_cap_bob;
GRANT EXECUTE ON FUNCTION nps_billing.track_payments(regclass, text, text, text, text, text, text, text, text, text, text, text, text, text),
                          nps_billing.untrack_payments(regclass) TO regress_cap_bob;
RESET client_min_messages;
CREATE VIEW names_events AS
  SELECT s.name, e.payment_key, e.customer_id, e.amount FROM nps_billing.payment_event e
  JOIN nps_billing.payment_source s ON s.id = e.source_id WHERE s.name LIKE 'names%';

SET ROLE regress_cap_bob;
CREATE TABLE shop.payments (id serial PRIMARY KEY, customer_id varchar(40), status varchar(20), cents int);
CREATE TABLE shop.payments2 (LIKE shop.payments INCLUDING ALL);
GRANT INSERT ON shop.payments, shop.payments2 TO PUBLIC;
GRANT USAGE ON SEQUENCE shop.payments_id_seq TO PUBLIC;
CREATE FUNCTION shop.norm(c text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT lower(c)';
CREATE FUNCTION shop.to_major(c int) RETURNS numeric LANGUAGE sql IMMUTABLE AS 'SELECT c / 100.0';
SELECT nps_billing.track_payments('shop.payments', 'lower(customer_id)', 'id::text', $$status = 'succeeded'$$,
                                  amount => 'to_major(cents)', name => 'names_shop') > 0 AS tracked;
-- fast path: no subquery; the same expressions through SPI (a subquery) and the set path below
SELECT nps_billing.track_payments('shop.payments2', 'norm(customer_id) || (SELECT $q$$q$)', 'id::text',
                                  $$status = 'succeeded'$$, amount => 'to_major(cents)', name => 'names_sub') > 0 AS tracked;
RESET ROLE;
-- what runs is stored schema-qualified; the text as written is kept beside it
SELECT name, customer_expr, succeeded_expr, amount_expr, expressions_as_written
FROM nps_billing.payment_source WHERE name LIKE 'names%' ORDER BY name;

-- mallory, with CREATE on shop and public, plants look-alikes of everything the expressions use
SET ROLE regress_cap_mallory;
CREATE FUNCTION shop.lower(varchar) RETURNS text LANGUAGE sql IMMUTABLE AS $$SELECT 'hijacked-lower'$$;
CREATE FUNCTION shop.norm(varchar) RETURNS text LANGUAGE sql IMMUTABLE AS $$SELECT 'hijacked-norm'$$;
CREATE FUNCTION shop.to_major(bigint) RETURNS numeric LANGUAGE sql IMMUTABLE AS 'SELECT 666';
CREATE FUNCTION shop.eq(varchar, varchar) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE OPERATOR shop.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = shop.eq);
CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE sql IMMUTABLE AS $$SELECT 'hijacked-public'$$;
CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE sql IMMUTABLE AS $$SELECT 'hijacked-public'$$;
CREATE FUNCTION public.eq(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.eq);
RESET ROLE;

-- a writer whose search_path puts public and shop first, with its own pg_temp look-alikes
CREATE ROLE regress_cap_writer;
GRANT USAGE ON SCHEMA shop TO regress_cap_writer;
SET ROLE regress_cap_writer;
SET search_path = shop, public, pg_catalog;
CREATE FUNCTION pg_temp.lower(varchar) RETURNS text LANGUAGE sql IMMUTABLE AS $$SELECT 'hijacked-temp'$$;
CREATE FUNCTION pg_temp.norm(text) RETURNS text LANGUAGE sql IMMUTABLE AS $$SELECT 'hijacked-temp'$$;
INSERT INTO shop.payments (customer_id, status, cents) VALUES ('Row-1', 'succeeded', 1250);
INSERT INTO shop.payments (customer_id, status, cents) VALUES ('Row-2', 'pending', 100);  -- shop.= would say succeeded
INSERT INTO shop.payments (customer_id, status, cents)
SELECT 'Set-' || g, CASE WHEN g % 2 = 0 THEN 'succeeded' ELSE 'pending' END, g * 100 FROM generate_series(1, 12) g;
INSERT INTO shop.payments2 (customer_id, status, cents) VALUES ('Row-1', 'succeeded', 1250);
INSERT INTO shop.payments2 (customer_id, status, cents) VALUES ('Row-2', 'pending', 100);
INSERT INTO shop.payments2 (customer_id, status, cents)
SELECT 'Set-' || g, CASE WHEN g % 2 = 0 THEN 'succeeded' ELSE 'pending' END, g * 100 FROM generate_series(1, 12) g;
DROP FUNCTION pg_temp.lower(varchar), pg_temp.norm(text);
RESET search_path;
RESET ROLE;
SELECT name, count(*) AS events, count(*) FILTER (WHERE customer_id LIKE '%hijacked%') AS hijacked,
       count(*) FILTER (WHERE amount = 666) AS hijacked_amount, min(customer_id), max(customer_id)
FROM names_events GROUP BY name ORDER BY name;
SELECT count(*) AS errors FROM nps_billing.capture_error c JOIN nps_billing.payment_source s ON s.id = c.source_id
WHERE s.name LIKE 'names%';

-- a superuser's writes in a session where public comes first: the same
SET search_path = public, pg_catalog;
INSERT INTO shop.payments (customer_id, status, cents) VALUES ('Row-3', 'succeeded', 300);
INSERT INTO shop.payments2 (customer_id, status, cents) VALUES ('Row-3', 'succeeded', 300);
RESET search_path;
SELECT name, customer_id, amount FROM names_events WHERE customer_id = 'row-3' ORDER BY name;

\set QUIET on
SET ROLE regress_cap_bob;
SELECT nps_billing.untrack_payments('shop.payments');
SELECT nps_billing.untrack_payments('shop.payments2');
RESET ROLE;
DELETE FROM nps_billing.survey WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'names%');
DELETE FROM nps_billing.payment_event WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'names%');
DELETE FROM nps_billing.capture_error WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'names%');
DELETE FROM nps_billing.customer_contact WHERE customer_id ~ '^(row|set)-[0-9]+';
DELETE FROM nps_billing.payment_source WHERE name LIKE 'names%';
DROP VIEW names_events;
DROP SCHEMA shop CASCADE;
DROP OPERATOR public.= (text, text);
DROP FUNCTION public.eq(text, text), public.lower(text), public.lower(varchar);
REVOKE ALL ON SCHEMA public FROM regress_cap_mallory;
REVOKE ALL ON SCHEMA nps_billing FROM regress_cap_bob;
REVOKE ALL ON FUNCTION nps_billing.track_payments(regclass, text, text, text, text, text, text, text, text, text, text, text, text, text),
                       nps_billing.untrack_payments(regclass) FROM regress_cap_bob;
DROP ROLE regress_cap_bob;
DROP ROLE regress_cap_mallory;
DROP ROLE regress_cap_writer;
\set QUIET off
