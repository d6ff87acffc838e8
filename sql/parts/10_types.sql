-- Scores, categories and the npsagg summary type.
CREATE TYPE @extschema@.nps_category AS ENUM ('detractor', 'passive', 'promoter');
COMMENT ON TYPE @extschema@.nps_category IS 'NPS answer category: 0-6 detractor, 7-8 passive, 9-10 promoter';

CREATE DOMAIN @extschema@.nps_score AS smallint CHECK (VALUE BETWEEN 0 AND 10);
COMMENT ON DOMAIN @extschema@.nps_score IS 'An NPS answer, 0..10';

CREATE FUNCTION @extschema@.category(score smallint) RETURNS @extschema@.nps_category
  AS 'MODULE_PATHNAME', 'nps_category_int2' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.category(score integer) RETURNS @extschema@.nps_category
  AS 'MODULE_PATHNAME', 'nps_category_int4' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.category(score bigint) RETURNS @extschema@.nps_category
  AS 'MODULE_PATHNAME', 'nps_category_int8' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.category(integer) IS 'NPS category of a 0..10 score; 22003 outside that range';

CREATE TYPE @extschema@.npsagg;
CREATE FUNCTION @extschema@.npsagg_in(cstring) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_out(@extschema@.npsagg) RETURNS cstring
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_recv(internal) RETURNS @extschema@.npsagg
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_send(@extschema@.npsagg) RETURNS bytea
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE TYPE @extschema@.npsagg (
  INPUT = @extschema@.npsagg_in, OUTPUT = @extschema@.npsagg_out,
  RECEIVE = @extschema@.npsagg_recv, SEND = @extschema@.npsagg_send,
  INTERNALLENGTH = VARIABLE, ALIGNMENT = double, STORAGE = main);
COMMENT ON TYPE @extschema@.npsagg IS 'NPS summary: count and weight sum per score 0..10 (JSON text form)';

CREATE FUNCTION @extschema@.npsagg_eq(@extschema@.npsagg, @extschema@.npsagg) RETURNS boolean
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.npsagg_ne(@extschema@.npsagg, @extschema@.npsagg) RETURNS boolean
  AS 'MODULE_PATHNAME' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE OPERATOR @extschema@.= (LEFTARG = @extschema@.npsagg, RIGHTARG = @extschema@.npsagg,
  PROCEDURE = @extschema@.npsagg_eq, COMMUTATOR = OPERATOR(@extschema@.=),
  NEGATOR = OPERATOR(@extschema@.<>), RESTRICT = eqsel, JOIN = eqjoinsel);
CREATE OPERATOR @extschema@.<> (LEFTARG = @extschema@.npsagg, RIGHTARG = @extschema@.npsagg,
  PROCEDURE = @extschema@.npsagg_ne, COMMUTATOR = OPERATOR(@extschema@.<>),
  NEGATOR = OPERATOR(@extschema@.=), RESTRICT = neqsel, JOIN = neqjoinsel);
