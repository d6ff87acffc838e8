-- nps_billing install script (assembled from sql/parts/ by the Makefile).
\echo Use "CREATE EXTENSION nps_billing" to load this file. \quit

-- Nothing is granted to PUBLIC: roles get exactly what the README's role recipes grant.
REVOKE ALL ON SCHEMA @extschema@ FROM PUBLIC;
