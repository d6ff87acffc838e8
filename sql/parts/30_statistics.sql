-- Accessors and statistics over npsagg.
CREATE FUNCTION @extschema@.nps(agg @extschema@.npsagg) RETURNS float8
  AS 'MODULE_PATHNAME', 'npsagg_nps' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.weighted_nps(agg @extschema@.npsagg) RETURNS float8
  AS 'MODULE_PATHNAME', 'npsagg_weighted_nps' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.responses(agg @extschema@.npsagg) RETURNS bigint
  AS 'MODULE_PATHNAME', 'npsagg_responses' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.promoters(agg @extschema@.npsagg) RETURNS bigint
  AS 'MODULE_PATHNAME', 'npsagg_promoters' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.passives(agg @extschema@.npsagg) RETURNS bigint
  AS 'MODULE_PATHNAME', 'npsagg_passives' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.detractors(agg @extschema@.npsagg) RETURNS bigint
  AS 'MODULE_PATHNAME', 'npsagg_detractors' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.score_histogram(agg @extschema@.npsagg) RETURNS bigint[]
  AS 'MODULE_PATHNAME', 'npsagg_histogram' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.mean_score(agg @extschema@.npsagg) RETURNS float8
  AS 'MODULE_PATHNAME', 'npsagg_mean_score' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_stderr(agg @extschema@.npsagg) RETURNS float8
  AS 'MODULE_PATHNAME', 'npsagg_stderr' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_ci(agg @extschema@.npsagg, confidence float8 DEFAULT 0.95,
                                   method text DEFAULT 'adjusted_wald',
                                   OUT low float8, OUT high float8)
  AS 'MODULE_PATHNAME', 'npsagg_ci' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.nps_compare(a @extschema@.npsagg, b @extschema@.npsagg,
                                        OUT difference float8, OUT stderr float8,
                                        OUT z float8, OUT p_value float8)
  AS 'MODULE_PATHNAME', 'npsagg_compare' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION @extschema@.nps(@extschema@.npsagg) IS 'NPS of a summary (unweighted); NULL when empty';
COMMENT ON FUNCTION @extschema@.weighted_nps(@extschema@.npsagg) IS 'Weighted NPS of a summary; NULL when empty';
COMMENT ON FUNCTION @extschema@.responses(@extschema@.npsagg) IS 'Number of responses';
COMMENT ON FUNCTION @extschema@.promoters(@extschema@.npsagg) IS 'Responses scoring 9-10';
COMMENT ON FUNCTION @extschema@.passives(@extschema@.npsagg) IS 'Responses scoring 7-8';
COMMENT ON FUNCTION @extschema@.detractors(@extschema@.npsagg) IS 'Responses scoring 0-6';
COMMENT ON FUNCTION @extschema@.score_histogram(@extschema@.npsagg) IS 'Counts per score; element 1 is score 0';
COMMENT ON FUNCTION @extschema@.mean_score(@extschema@.npsagg) IS 'Mean 0..10 score';
COMMENT ON FUNCTION @extschema@.nps_stderr(@extschema@.npsagg) IS 'Standard error of NPS (Kish effective n when weighted)';
COMMENT ON FUNCTION @extschema@.nps_ci(@extschema@.npsagg, float8, text) IS 'Confidence interval of NPS: wald or adjusted_wald';
COMMENT ON FUNCTION @extschema@.nps_compare(@extschema@.npsagg, @extschema@.npsagg) IS 'Two-sided z-test of the NPS difference of two independent samples';
