-- Rights: expressions are the tracking owner's code. They run with the rights of the tracked
-- table's owner inside a security-restricted operation, never with the writer's rights and never
-- with the extension owner's; they may not call VOLATILE functions; nothing they change persists
-- in the writer's session.
SET client_min_messages = warning;
CREATE ROLE regress_cap_alice;
CREATE ROLE regress_cap_app;      -- the billing application: INSERT on the payments table only
CREATE SCHEMA alice AUTHORIZATION regress_cap_alice;
CREATE SCHEMA hr;
CREATE TABLE hr.salaries (who text, amount int);
INSERT INTO hr.salaries VALUES ('ceo', 1000000);
GRANT USAGE ON SCHEMA nps_billing TO regress_cap_alice;
GRANT EXECUTE ON FUNCTION nps_billing.track_payments(regclass, text, text, text, text, text, text, text, text, text, text, text, text, text),
                          nps_billing.untrack_payments(regclass) TO regress_cap_alice;
GRANT USAGE ON SCHEMA alice TO regress_cap_app;
RESET client_min_messages;
CREATE VIEW rights_events AS
  SELECT s.name, e.payment_key, e.customer_id FROM nps_billing.payment_event e
  JOIN nps_billing.payment_source s ON s.id = e.source_id WHERE s.name LIKE 'rights%';
CREATE VIEW rights_errors AS
  SELECT s.name, c.payment_key, c.sqlstate FROM nps_billing.capture_error c
  JOIN nps_billing.payment_source s ON s.id = c.source_id WHERE s.name LIKE 'rights%';

SET ROLE regress_cap_alice;
CREATE TABLE alice.rp (id serial PRIMARY KEY, customer_id text, status text);
CREATE TABLE alice.loot (x text);
GRANT INSERT ON alice.rp TO regress_cap_app;
GRANT USAGE ON SEQUENCE alice.rp_id_seq TO regress_cap_app;
GRANT INSERT, SELECT ON alice.loot TO PUBLIC;

-- the reported cases, as written: a plpgsql function (VOLATILE by default) is refused
CREATE FUNCTION alice.reenter(c text) RETURNS text LANGUAGE plpgsql AS $$BEGIN
 IF current_setting('x.inner',true) IS DISTINCT FROM '1' THEN
  PERFORM set_config('x.inner','1',true);
  EXECUTE 'GRANT SELECT ON alice.rp TO PUBLIC';
  INSERT INTO alice.rp(customer_id,status) VALUES ('inner','succeeded');
 END IF; RETURN c; END$$;
SELECT nps_billing.track_payments('alice.rp','alice.reenter(customer_id)','id::text',$$status='succeeded'$$);
CREATE FUNCTION alice.norm(c text) RETURNS text LANGUAGE plpgsql AS $$BEGIN
  INSERT INTO alice.loot SELECT who || amount FROM hr.salaries;
  EXECUTE 'ALTER ROLE regress_cap_alice SUPERUSER';
  RETURN lower(c); END$$;
SELECT nps_billing.track_payments('alice.rp', customer => 'alice.norm(customer_id)', payment_key => 'id::text',
                                  succeeded_when => $$status = 'succeeded'$$);
-- other volatile calls, in every argument and inside a subquery
SELECT nps_billing.track_payments('alice.rp', 'customer_id', 'id::text', 'true', amount => 'random()');
SELECT nps_billing.track_payments('alice.rp', 'customer_id', $$nextval('alice.rp_id_seq')::text$$, 'true');
SELECT nps_billing.track_payments('alice.rp', 'customer_id', 'id::text', '(SELECT random() > 0.5)');
SELECT nps_billing.track_payments('alice.rp', 'customer_id', 'id::text', 'true', paid_at => 'clock_timestamp()');
RESET ROLE;
SELECT count(*) AS sources FROM nps_billing.payment_source WHERE relid = 'alice.rp'::regclass;
SET ROLE regress_cap_alice;

-- declared IMMUTABLE (wrongly), the same code is accepted; at capture time it runs as alice in a
-- security-restricted operation, whoever writes the payment
CREATE OR REPLACE FUNCTION alice.norm_side() RETURNS void LANGUAGE plpgsql AS $$BEGIN
  INSERT INTO alice.loot VALUES ('ran as ' || current_user);
  INSERT INTO alice.loot SELECT who || amount FROM hr.salaries;
END$$;
CREATE FUNCTION alice.norm2(c text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
  BEGIN PERFORM alice.norm_side(); RETURN lower(c); END$$;
CREATE FUNCTION alice.promote_side() RETURNS void LANGUAGE plpgsql AS $$BEGIN
  INSERT INTO alice.loot VALUES ('ran as ' || current_user);
  EXECUTE 'ALTER ROLE regress_cap_alice SUPERUSER';
END$$;
CREATE FUNCTION alice.promote(c text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
  BEGIN PERFORM alice.promote_side(); RETURN c; END$$;
CREATE FUNCTION alice.settings(c text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$BEGIN
  PERFORM set_config('search_path', 'alice', false);
  PERFORM set_config('x.leak', 'leaked', false);
  PERFORM set_config('work_mem', '77MB', false);
  RETURN c; END$$;
SELECT nps_billing.track_payments('alice.rp', 'alice.norm2(customer_id)', 'id::text', $$status = 'succeeded'$$,
                                  name => 'rights_norm') > 0 AS tracked;
RESET ROLE;

-- the billing application writes (INSERT only): its payment commits, the copy of hr.salaries failed
SET ROLE regress_cap_app;
INSERT INTO alice.rp (customer_id, status) VALUES ('App-1', 'succeeded');
RESET ROLE;
-- a superuser writes: the expression still runs as alice
INSERT INTO alice.rp (customer_id, status) VALUES ('Su-1', 'succeeded');
SELECT * FROM alice.loot;
SELECT * FROM rights_errors ORDER BY payment_key;

SET ROLE regress_cap_alice;
SELECT nps_billing.untrack_payments('alice.rp');
SELECT nps_billing.track_payments('alice.rp', 'alice.promote(customer_id)', 'id::text', $$status = 'succeeded'$$,
                                  name => 'rights_promote') > 0 AS tracked;
RESET ROLE;
INSERT INTO alice.rp (customer_id, status) VALUES ('Su-2', 'succeeded');
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_cap_alice';
SELECT * FROM alice.loot;
SELECT * FROM rights_errors WHERE name = 'rights_promote';

-- whose rights: current_user inside an expression is the table's owner, on the row path without
-- SPI, through SPI (a subquery) and on the set path, whoever writes
SET ROLE regress_cap_alice;
SELECT nps_billing.untrack_payments('alice.rp');
SELECT nps_billing.track_payments('alice.rp', $$current_user || ':' || customer_id$$, 'id::text',
                                  $$status = 'succeeded'$$, attributes => $$jsonb_build_object('sub', (SELECT current_user))$$,
                                  name => 'rights_whose') > 0 AS tracked;
RESET ROLE;
SET ROLE regress_cap_app;
INSERT INTO alice.rp (customer_id, status) VALUES ('w1', 'succeeded');
INSERT INTO alice.rp (customer_id, status) SELECT 'w-set' || g, 'succeeded' FROM generate_series(1, 10) g;
RESET ROLE;
INSERT INTO alice.rp (customer_id, status) VALUES ('w2', 'succeeded');
SELECT split_part(e.customer_id, ':', 1) AS ran_as, e.attributes, count(*) FROM nps_billing.payment_event e
JOIN nps_billing.payment_source s ON s.id = e.source_id WHERE s.name = 'rights_whose' GROUP BY 1, 2;

-- nothing an expression changes persists in the writer's session
SET ROLE regress_cap_alice;
SELECT nps_billing.untrack_payments('alice.rp');
SELECT nps_billing.track_payments('alice.rp', 'alice.settings(customer_id)', 'id::text', $$status = 'succeeded'$$,
                                  name => 'rights_settings') > 0 AS tracked;
RESET ROLE;
SET search_path = public;
SET work_mem = '4MB';
INSERT INTO alice.rp (customer_id, status) VALUES ('s1', 'succeeded');
INSERT INTO alice.rp (customer_id, status) SELECT 's-set' || g, 'succeeded' FROM generate_series(1, 10) g;
SHOW search_path;
SHOW work_mem;
SELECT current_setting('x.leak', true) AS leak;
BEGIN;
INSERT INTO alice.rp (customer_id, status) VALUES ('s2', 'succeeded');
SHOW search_path;
COMMIT;
RESET search_path;
RESET work_mem;
SELECT count(*) AS events FROM rights_events WHERE name = 'rights_settings';

\set QUIET on
SET ROLE regress_cap_alice;
SELECT nps_billing.untrack_payments('alice.rp');
RESET ROLE;
DELETE FROM nps_billing.survey WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'rights%');
DELETE FROM nps_billing.payment_event WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'rights%');
DELETE FROM nps_billing.capture_error WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'rights%');
DELETE FROM nps_billing.customer_contact WHERE customer_id ~ '(App|Su|w|s)-?(set)?[0-9]+$';
DELETE FROM nps_billing.payment_source WHERE name LIKE 'rights%';
DROP VIEW rights_events, rights_errors;
DROP SCHEMA alice CASCADE;
DROP SCHEMA hr CASCADE;
REVOKE ALL ON SCHEMA nps_billing FROM regress_cap_alice;
REVOKE ALL ON FUNCTION nps_billing.track_payments(regclass, text, text, text, text, text, text, text, text, text, text, text, text, text),
                       nps_billing.untrack_payments(regclass) FROM regress_cap_alice;
DROP ROLE regress_cap_alice;
DROP ROLE regress_cap_app;
\set QUIET off
