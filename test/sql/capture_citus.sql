-- Capture on tables Citus manages is refused, and a capture trigger firing on a table with no
-- payment source warns once per session instead of recording nothing silently.
-- Citus cannot run here: its catalog is detected by name (pg_catalog.pg_dist_partition,
-- pg_catalog.pg_dist_shard), so stand-ins with Citus' columns drive the detection.

-- no Citus: tracking works, nothing is looked up per payment
SELECT to_regclass('pg_catalog.pg_dist_partition') IS NULL AS no_citus;
CREATE TABLE cit_plain (id int PRIMARY KEY, cust text, st text);
SELECT nps_billing.track_payments('cit_plain', 'cust', 'id::text', $$st = 'ok'$$, name => 'cit_plain') > 0 AS tracked;
INSERT INTO cit_plain VALUES (1, 'C1', 'ok');
SELECT count(*) AS events FROM nps_billing.payment_event e JOIN nps_billing.payment_source s ON s.id = e.source_id
WHERE s.name = 'cit_plain';

-- a trigger left on a table with no source (e.g. restored without its payment_source row):
-- one WARNING per session and table, the payment commits
CREATE TABLE cit_orphan (id int PRIMARY KEY, cust text, st text);
CREATE TRIGGER nps_billing_capture_insert AFTER INSERT ON cit_orphan
  REFERENCING NEW TABLE AS nps_new FOR EACH STATEMENT EXECUTE FUNCTION nps_billing.capture();
INSERT INTO cit_orphan VALUES (1, 'C1', 'ok');
INSERT INTO cit_orphan VALUES (2, 'C2', 'ok');
INSERT INTO cit_orphan SELECT g, 'C' || g, 'ok' FROM generate_series(3, 30) g;
SELECT count(*) AS committed FROM cit_orphan;

-- stand-ins for Citus' catalog (same names and columns as Citus 13)
SET allow_system_table_mods = on;
CREATE TABLE pg_catalog.pg_dist_partition (logicalrelid regclass, partmethod "char", partkey text,
  colocationid int, repmodel "char", autoconverted boolean);
CREATE TABLE pg_catalog.pg_dist_shard (logicalrelid regclass, shardid bigint, shardstorage "char",
  shardminvalue text, shardmaxvalue text);
RESET allow_system_table_mods;
CREATE TABLE cit_dist (id int, cust text, st text);
CREATE TABLE cit_ref (id int, cust text, st text);
CREATE TABLE cit_local (id int, cust text, st text);
CREATE TABLE cit_dist_102008 (id int, cust text, st text);
CREATE TABLE cit_dist_102009 (id int, cust text, st text);
INSERT INTO pg_catalog.pg_dist_partition VALUES
  ('cit_dist', 'h', NULL, 1, 's', false),
  ('cit_ref', 'n', NULL, 2, 't', false),
  ('cit_local', 'n', NULL, 0, 's', false);
INSERT INTO pg_catalog.pg_dist_shard VALUES ('cit_dist', 102008, 't', '-2147483648', '-2013265921'),
  ('cit_dist', 102009, 't', '-2013265920', '-1879048193');

-- 0A000 for a distributed, a reference and a Citus local table, and for a shard
SELECT nps_billing.track_payments('cit_dist', 'cust', 'id::text', $$st = 'ok'$$);
SELECT nps_billing.track_payments('cit_ref', 'cust', 'id::text', $$st = 'ok'$$);
SELECT nps_billing.track_payments('cit_local', 'cust', 'id::text', $$st = 'ok'$$);
SELECT nps_billing.track_payments('cit_dist_102008', 'cust', 'id::text', $$st = 'ok'$$);
SELECT count(*) AS sources FROM nps_billing.payment_source WHERE relid::text LIKE 'cit_dist%' OR relid::text IN ('cit_ref', 'cit_local');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid IN ('cit_dist'::regclass, 'cit_ref'::regclass, 'cit_local'::regclass, 'cit_dist_102008'::regclass);

-- shards that got the trigger (citus.enable_unsafe_triggers copies it): one warning per session
-- naming the distributed table, not one per shard
CREATE TRIGGER nps_billing_capture_insert AFTER INSERT ON cit_dist_102008
  REFERENCING NEW TABLE AS nps_new FOR EACH STATEMENT EXECUTE FUNCTION nps_billing.capture();
CREATE TRIGGER nps_billing_capture_insert AFTER INSERT ON cit_dist_102009
  REFERENCING NEW TABLE AS nps_new FOR EACH STATEMENT EXECUTE FUNCTION nps_billing.capture();
INSERT INTO cit_dist_102008 VALUES (1, 'C1', 'ok');
INSERT INTO cit_dist_102008 VALUES (2, 'C2', 'ok');
INSERT INTO cit_dist_102009 VALUES (3, 'C3', 'ok');
SELECT (SELECT count(*) FROM cit_dist_102008) + (SELECT count(*) FROM cit_dist_102009) AS committed;

-- a plain table is still tracked with the Citus catalog present
CREATE TABLE cit_plain2 (id int PRIMARY KEY, cust text, st text);
SELECT nps_billing.track_payments('cit_plain2', 'cust', 'id::text', $$st = 'ok'$$, name => 'cit_plain2') > 0 AS tracked;
-- a table named like a shard whose id is not a shard of it is not refused
CREATE TABLE cit_other_102008 (id int PRIMARY KEY, cust text, st text);
SELECT nps_billing.track_payments('cit_other_102008', 'cust', 'id::text', $$st = 'ok'$$, name => 'cit_other') > 0 AS tracked;

-- clean up (the stand-ins must not outlive this test)
SET allow_system_table_mods = on;
DROP TABLE pg_catalog.pg_dist_partition, pg_catalog.pg_dist_shard;
RESET allow_system_table_mods;
SELECT nps_billing.untrack_payments(t) FROM unnest('{cit_plain,cit_plain2,cit_other_102008}'::regclass[]) t;
DELETE FROM nps_billing.payment_event WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'cit\_%');
DELETE FROM nps_billing.survey WHERE source_id IN (SELECT id FROM nps_billing.payment_source WHERE name LIKE 'cit\_%');
DELETE FROM nps_billing.customer_contact WHERE customer_id IN ('C1', 'C2');
DELETE FROM nps_billing.payment_source WHERE name LIKE 'cit\_%';
DROP TABLE cit_plain, cit_plain2, cit_other_102008, cit_orphan, cit_dist, cit_ref, cit_local, cit_dist_102008, cit_dist_102009;
