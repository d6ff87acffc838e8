-- Nothing is granted to PUBLIC (functions and types default to PUBLIC; take that back).
-- The README's role recipes grant exactly what each role needs.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE USAGE ON TYPE @extschema@.nps_category, @extschema@.nps_score, @extschema@.npsagg FROM PUBLIC;
