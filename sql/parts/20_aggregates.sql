-- NPS aggregates. All are parallel (combine + serialize); nps(score) and nps_agg(score) also
-- have inverse transitions so sliding windows cost O(1) per row.
CREATE FUNCTION @extschema@.nps_combine(internal, internal) RETURNS internal
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_serialize(internal) RETURNS bytea
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_deserialize(bytea, internal) RETURNS internal
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_final(internal) RETURNS float8
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_wfinal(internal) RETURNS float8
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_final(internal) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_wfinal(internal) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_rollup_trans(internal, @extschema@.npsagg) RETURNS internal
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_rollup_final(internal) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;

DO $do$
DECLARE
  t record;
BEGIN
  FOR t IN SELECT * FROM (VALUES ('int2', 'smallint'), ('int4', 'integer'), ('int8', 'bigint')) v(sfx, typ) LOOP
    EXECUTE format($f$
      CREATE FUNCTION @extschema@.nps_trans_%1$s(internal, %2$s) RETURNS internal
        AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
      CREATE FUNCTION @extschema@.nps_inv_%1$s(internal, %2$s) RETURNS internal
        AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;
      CREATE FUNCTION @extschema@.nps_wtrans_%1$s(internal, %2$s, float8) RETURNS internal
        AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE PARALLEL SAFE;

      CREATE AGGREGATE @extschema@.nps(score %2$s) (
        SFUNC = @extschema@.nps_trans_%1$s, STYPE = internal, SSPACE = 200,
        FINALFUNC = @extschema@.nps_final,
        COMBINEFUNC = @extschema@.nps_combine,
        SERIALFUNC = @extschema@.nps_serialize, DESERIALFUNC = @extschema@.nps_deserialize,
        MSFUNC = @extschema@.nps_trans_%1$s, MINVFUNC = @extschema@.nps_inv_%1$s,
        MSTYPE = internal, MSSPACE = 200, MFINALFUNC = @extschema@.nps_final,
        PARALLEL = SAFE);
      CREATE AGGREGATE @extschema@.nps(score %2$s, weight float8) (
        SFUNC = @extschema@.nps_wtrans_%1$s, STYPE = internal, SSPACE = 200,
        FINALFUNC = @extschema@.nps_wfinal,
        COMBINEFUNC = @extschema@.nps_combine,
        SERIALFUNC = @extschema@.nps_serialize, DESERIALFUNC = @extschema@.nps_deserialize,
        PARALLEL = SAFE);
      CREATE AGGREGATE @extschema@.nps_agg(score %2$s) (
        SFUNC = @extschema@.nps_trans_%1$s, STYPE = internal, SSPACE = 200,
        FINALFUNC = @extschema@.npsagg_final,
        COMBINEFUNC = @extschema@.nps_combine,
        SERIALFUNC = @extschema@.nps_serialize, DESERIALFUNC = @extschema@.nps_deserialize,
        MSFUNC = @extschema@.nps_trans_%1$s, MINVFUNC = @extschema@.nps_inv_%1$s,
        MSTYPE = internal, MSSPACE = 200, MFINALFUNC = @extschema@.npsagg_final,
        PARALLEL = SAFE);
      CREATE AGGREGATE @extschema@.nps_agg(score %2$s, weight float8) (
        SFUNC = @extschema@.nps_wtrans_%1$s, STYPE = internal, SSPACE = 200,
        FINALFUNC = @extschema@.npsagg_wfinal,
        COMBINEFUNC = @extschema@.nps_combine,
        SERIALFUNC = @extschema@.nps_serialize, DESERIALFUNC = @extschema@.nps_deserialize,
        PARALLEL = SAFE);
      COMMENT ON AGGREGATE @extschema@.nps(%2$s) IS 'Net Promoter Score (-100..100) of 0..10 scores';
      COMMENT ON AGGREGATE @extschema@.nps(%2$s, float8) IS 'Weighted Net Promoter Score';
      COMMENT ON AGGREGATE @extschema@.nps_agg(%2$s) IS 'NPS summary (npsagg) of 0..10 scores';
      COMMENT ON AGGREGATE @extschema@.nps_agg(%2$s, float8) IS 'Weighted NPS summary (npsagg)';
    $f$, t.sfx, t.typ);
  END LOOP;
END
$do$;

CREATE AGGREGATE @extschema@.rollup(@extschema@.npsagg) (
  SFUNC = @extschema@.nps_rollup_trans, STYPE = internal, SSPACE = 200,
  FINALFUNC = @extschema@.nps_rollup_final,
  COMBINEFUNC = @extschema@.nps_combine,
  SERIALFUNC = @extschema@.nps_serialize, DESERIALFUNC = @extschema@.nps_deserialize,
  PARALLEL = SAFE);
COMMENT ON AGGREGATE @extschema@.rollup(@extschema@.npsagg) IS 'Merges npsagg summaries (e.g. days into months)';
