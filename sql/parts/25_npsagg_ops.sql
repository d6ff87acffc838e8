-- Arithmetic on stored summaries (rollup tables kept up to date answer by answer). NULL is the
-- empty summary; a sum that overflows or a subtraction below zero raises 22003.
CREATE FUNCTION @extschema@.npsagg_add(a @extschema@.npsagg, b @extschema@.npsagg) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME', 'npsagg_add_agg' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_sub(a @extschema@.npsagg, b @extschema@.npsagg) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME', 'npsagg_sub_agg' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_add(a @extschema@.npsagg, score integer, weight float8 DEFAULT 1)
  RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME', 'npsagg_add_score' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_remove(a @extschema@.npsagg, score integer, weight float8 DEFAULT 1)
  RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME', 'npsagg_remove_score' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.npsagg_add(@extschema@.npsagg, @extschema@.npsagg) IS
  'Sum of two summaries (NULL = empty); 22003 on count overflow';
COMMENT ON FUNCTION @extschema@.npsagg_sub(@extschema@.npsagg, @extschema@.npsagg) IS
  'a minus b (NULL = empty); 22003 if b holds answers a does not';
COMMENT ON FUNCTION @extschema@.npsagg_add(@extschema@.npsagg, integer, float8) IS
  'The summary with one more answer (score, weight); NULL score or weight adds nothing';
COMMENT ON FUNCTION @extschema@.npsagg_remove(@extschema@.npsagg, integer, float8) IS
  'The summary with one answer (score, weight) less; 22003 if it has no answer of that score';
