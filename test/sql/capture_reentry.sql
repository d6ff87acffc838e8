-- Re-entry: an expression's function writes into a tracked table again (the capture trigger fires
-- nested, inside the outer one's evaluation) and invalidates the cached source meanwhile (GRANT
-- sends a relcache invalidation of the table). The outer invocation keeps using its source: it
-- is freed only when no invocation uses it, also when an error unwinds one of them.
SET client_min_messages = warning;
CREATE ROLE regress_cap_alice;
CREATE SCHEMA alice AUTHORIZATION regress_cap_alice;
GRANT USAGE ON SCHEMA nps_billing TO regress_cap_alice;
GRANT EXECUTE ON FUNCTION nps_billing.track_payments(regclass, text, text, text, text, text, text, text, text, text, text, text, text, text),
                          nps_billing.untrack_payments(regclass) TO regress_cap_alice;
RESET client_min_messages;
CREATE VIEW reent_events AS
  SELECT s.name, e.customer_id FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
  WHERE s.name LIKE 'reent%';
CREATE VIEW reent_errors AS
  SELECT s.name, c.payment_key IS NOT NULL AS has_key, c.sqlstate FROM nps_billing.capture_error c
  JOIN nps_billing.payment_source s ON s.id = c.source_id WHERE s.name LIKE 'reent%';
GRANT SELECT ON reent_events, reent_errors TO regress_cap_alice;

SET ROLE regress_cap_alice;
CREATE TABLE alice.rp (id serial PRIMARY KEY, customer_id text, status text);
CREATE TABLE alice.rp2 (id serial PRIMARY KEY, customer_id text, status text);
-- once per transaction: invalidate rp's cache entry, then write one more payment into table t
CREATE FUNCTION alice.side(c text, t text) RETURNS void LANGUAGE plpgsql AS $$BEGIN
  IF current_setting('x.inner', true) IS DISTINCT FROM '1' THEN
    PERFORM set_config('x.inner', '1', true);
    EXECUTE 'GRANT SELECT ON alice.rp TO PUBLIC';
    EXECUTE format('INSERT INTO %s (customer_id, status) VALUES (%L, %L)', t, 'inner-' || c, 'succeeded');
  END IF; END$$;
-- declared IMMUTABLE (wrongly): the side effects happen when the payment is captured
CREATE FUNCTION alice.reenter(c text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
  BEGIN PERFORM alice.side(c, 'alice.rp'); RETURN c; END$$;
CREATE FUNCTION alice.via_rp2(c text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
  BEGIN PERFORM alice.side(c, 'alice.rp2'); RETURN c; END$$;
CREATE FUNCTION alice.back_to_rp(c text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$BEGIN
  IF current_setting('x.back', true) IS DISTINCT FROM '1' THEN
    PERFORM alice.back_side(c);
  END IF; RETURN c; END$$;
CREATE FUNCTION alice.back_side(c text) RETURNS void LANGUAGE plpgsql AS $$BEGIN
  PERFORM set_config('x.back', '1', true);
  INSERT INTO alice.rp (customer_id, status) VALUES ('back-' || c, 'succeeded'); END$$;
CREATE FUNCTION alice.boom(c text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
  BEGIN PERFORM alice.side(c, 'alice.rp'); RAISE EXCEPTION 'boom' USING ERRCODE = 'P0001'; END$$;

-- the reported case: row path without SPI (no subquery)
SELECT nps_billing.track_payments('alice.rp', 'alice.reenter(customer_id)', 'id::text', $$status = 'succeeded'$$,
                                  name => 'reent_fast') > 0 AS tracked;
INSERT INTO alice.rp (customer_id, status) VALUES ('outer', 'succeeded');
-- an UPDATE making a row succeeded
INSERT INTO alice.rp (customer_id, status) VALUES ('upd', 'pending');
UPDATE alice.rp SET status = 'succeeded' WHERE customer_id = 'upd';
-- the set path (more than 8 rows in one statement)
INSERT INTO alice.rp (customer_id, status) SELECT 'set' || g, 'succeeded' FROM generate_series(1, 10) g;
SELECT nps_billing.untrack_payments('alice.rp');

-- row path through SPI (a subquery)
SELECT nps_billing.track_payments('alice.rp', '(SELECT alice.reenter(customer_id))', 'id::text', $$status = 'succeeded'$$,
                                  name => 'reent_spi') > 0 AS tracked;
INSERT INTO alice.rp (customer_id, status) VALUES ('spi', 'succeeded');
SELECT nps_billing.untrack_payments('alice.rp');

-- nested through another tracked table: rp's expression writes rp2, whose expression writes rp
SELECT nps_billing.track_payments('alice.rp', 'alice.via_rp2(customer_id)', 'id::text', $$status = 'succeeded'$$,
                                  name => 'reent_a') > 0 AS tracked;
SELECT nps_billing.track_payments('alice.rp2', 'alice.back_to_rp(customer_id)', 'id::text', $$status = 'succeeded'$$,
                                  name => 'reent_b') > 0 AS tracked;
INSERT INTO alice.rp (customer_id, status) VALUES ('two', 'succeeded');
SELECT nps_billing.untrack_payments('alice.rp');
SELECT nps_billing.untrack_payments('alice.rp2');

-- error unwinding: the expression fails after the nested capture ran; the row lands in capture_error
SELECT nps_billing.track_payments('alice.rp', 'alice.boom(customer_id)', 'id::text', $$status = 'succeeded'$$,
                                  name => 'reent_boom') > 0 AS tracked;
INSERT INTO alice.rp (customer_id, status) VALUES ('b1', 'succeeded');
INSERT INTO alice.rp (customer_id, status) VALUES ('b2', 'succeeded'), ('b3', 'succeeded');
SELECT nps_billing.untrack_payments('alice.rp');
-- and with on_error => 'raise' the payment statement fails; the session goes on capturing
SELECT nps_billing.track_payments('alice.rp', 'alice.boom(customer_id)', 'id::text', $$status = 'succeeded'$$,
                                  name => 'reent_raise', on_error => 'raise') > 0 AS tracked;
\set VERBOSITY terse
INSERT INTO alice.rp (customer_id, status) VALUES ('r1', 'succeeded');
\set VERBOSITY default
SELECT nps_billing.untrack_payments('alice.rp');
SELECT nps_billing.track_payments('alice.rp', 'alice.reenter(customer_id)', 'id::text', $$status = 'succeeded'$$,
                                  name => 'reent_after') > 0 AS tracked;
INSERT INTO alice.rp (customer_id, status) VALUES ('after', 'succeeded');
SELECT nps_billing.untrack_payments('alice.rp');
RESET ROLE;

SELECT name, customer_id FROM reent_events ORDER BY name, customer_id;
SELECT name, has_key, sqlstate, count(*) FROM reent_errors GROUP BY 1, 2, 3 ORDER BY 1;
SELECT count(*) AS payments FROM alice.rp;

\set QUIET on
DELETE FROM nps_billing.survey WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'reent%');
DELETE FROM nps_billing.payment_event WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'reent%');
DELETE FROM nps_billing.capture_error WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'reent%');
DELETE FROM nps_billing.customer_contact WHERE customer_id ~ '^(inner-|back-)?(outer|upd|set[0-9]+|spi|two|b[0-9]|r1|after)';
DELETE FROM nps_billing.payment_source WHERE name LIKE 'reent%';
DROP VIEW reent_events, reent_errors;
DROP SCHEMA alice CASCADE;
REVOKE ALL ON SCHEMA nps_billing FROM regress_cap_alice;
REVOKE ALL ON FUNCTION nps_billing.track_payments(regclass, text, text, text, text, text, text, text, text, text, text, text, text, text),
                       nps_billing.untrack_payments(regclass) FROM regress_cap_alice;
DROP ROLE regress_cap_alice;
\set QUIET off
