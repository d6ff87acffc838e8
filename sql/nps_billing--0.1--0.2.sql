-- nps_billing 0.1 -> 0.2 (ALTER EXTENSION nps_billing UPDATE).
-- Every schema change in sql/parts/ since 0.1 has its step here, in the same order, so that an
-- updated database has the same catalog as a fresh 0.2 install (test/upgrade.sh checks it).
\echo Use "ALTER EXTENSION nps_billing UPDATE" to load this file. \quit
