-- NPS aggregates. The transition state is an npsagg (a real, fixed-size type), updated in place
-- in the aggregate context: PostgreSQL runs every aggregate in parallel through its combine
-- function, with no serialize/deserialize, and Citus pushes them down to its workers (partial
-- aggregates there, combined on the coordinator), which it does only for such states.
-- nps(score) and nps_agg(score) also have inverse transitions so sliding windows cost O(1) per
-- row. The transition functions take NULLs themselves (a NULL score or weight skips the row; one
-- step less per row than a STRICT function); the others are STRICT.
CREATE FUNCTION @extschema@.nps_state_merge(@extschema@.npsagg, @extschema@.npsagg) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_state_nps(@extschema@.npsagg) RETURNS float8
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_state_weighted_nps(@extschema@.npsagg) RETURNS float8
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_state_summary(@extschema@.npsagg) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_state_weighted_summary(@extschema@.npsagg) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_state_rollup(@extschema@.npsagg) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

DO $do$
DECLARE
  t record;
  -- the empty summary: every aggregate but rollup starts from it
  zero constant text := '{"counts":[0,0,0,0,0,0,0,0,0,0,0],"weights":[0,0,0,0,0,0,0,0,0,0,0],"weight_sq":0}';
BEGIN
  FOR t IN SELECT * FROM (VALUES ('int2', 'smallint'), ('int4', 'integer'), ('int8', 'bigint')) v(sfx, typ) LOOP
    EXECUTE format($f$
      CREATE FUNCTION @extschema@.nps_state_%1$s(@extschema@.npsagg, %2$s) RETURNS @extschema@.npsagg
        AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;
      CREATE FUNCTION @extschema@.nps_state_inv_%1$s(@extschema@.npsagg, %2$s) RETURNS @extschema@.npsagg
        AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;
      CREATE FUNCTION @extschema@.nps_state_weighted_%1$s(@extschema@.npsagg, %2$s, float8) RETURNS @extschema@.npsagg
        AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE;

      CREATE AGGREGATE @extschema@.nps(score %2$s) (
        SFUNC = @extschema@.nps_state_%1$s, STYPE = @extschema@.npsagg, SSPACE = 200, INITCOND = %3$L,
        FINALFUNC = @extschema@.nps_state_nps, COMBINEFUNC = @extschema@.nps_state_merge,
        MSFUNC = @extschema@.nps_state_%1$s, MINVFUNC = @extschema@.nps_state_inv_%1$s,
        MSTYPE = @extschema@.npsagg, MSSPACE = 200, MINITCOND = %3$L, MFINALFUNC = @extschema@.nps_state_nps,
        PARALLEL = SAFE);
      CREATE AGGREGATE @extschema@.nps(score %2$s, weight float8) (
        SFUNC = @extschema@.nps_state_weighted_%1$s, STYPE = @extschema@.npsagg, SSPACE = 200, INITCOND = %3$L,
        FINALFUNC = @extschema@.nps_state_weighted_nps, COMBINEFUNC = @extschema@.nps_state_merge,
        PARALLEL = SAFE);
      CREATE AGGREGATE @extschema@.nps_agg(score %2$s) (
        SFUNC = @extschema@.nps_state_%1$s, STYPE = @extschema@.npsagg, SSPACE = 200, INITCOND = %3$L,
        FINALFUNC = @extschema@.nps_state_summary, COMBINEFUNC = @extschema@.nps_state_merge,
        MSFUNC = @extschema@.nps_state_%1$s, MINVFUNC = @extschema@.nps_state_inv_%1$s,
        MSTYPE = @extschema@.npsagg, MSSPACE = 200, MINITCOND = %3$L, MFINALFUNC = @extschema@.nps_state_summary,
        PARALLEL = SAFE);
      CREATE AGGREGATE @extschema@.nps_agg(score %2$s, weight float8) (
        SFUNC = @extschema@.nps_state_weighted_%1$s, STYPE = @extschema@.npsagg, SSPACE = 200, INITCOND = %3$L,
        FINALFUNC = @extschema@.nps_state_weighted_summary, COMBINEFUNC = @extschema@.nps_state_merge,
        PARALLEL = SAFE);
      COMMENT ON AGGREGATE @extschema@.nps(%2$s) IS 'Net Promoter Score (-100..100) of 0..10 scores';
      COMMENT ON AGGREGATE @extschema@.nps(%2$s, float8) IS 'Weighted Net Promoter Score';
      COMMENT ON AGGREGATE @extschema@.nps_agg(%2$s) IS 'NPS summary (npsagg) of 0..10 scores';
      COMMENT ON AGGREGATE @extschema@.nps_agg(%2$s, float8) IS 'Weighted NPS summary (npsagg)';
    $f$, t.sfx, t.typ, zero);
  END LOOP;
END
$do$;

CREATE AGGREGATE @extschema@.rollup(@extschema@.npsagg) (
  SFUNC = @extschema@.nps_state_merge, STYPE = @extschema@.npsagg, SSPACE = 200,
  FINALFUNC = @extschema@.nps_state_rollup, COMBINEFUNC = @extschema@.nps_state_merge,
  PARALLEL = SAFE);
COMMENT ON AGGREGATE @extschema@.rollup(@extschema@.npsagg) IS 'Merges npsagg summaries (e.g. days into months)';
