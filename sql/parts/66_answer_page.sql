-- The answer page of nps-billing-agent (agent/): what the page needs to know about a survey,
-- by its token, for the collector role.

CREATE FUNCTION @extschema@.survey_for_token(token text)
RETURNS TABLE (status text, locale text, closed boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
BEGIN
  IF token IS NULL THEN
    RAISE EXCEPTION 'survey_for_token: token must not be NULL' USING ERRCODE = '22004';
  END IF;
  -- closed = record_response would refuse an answer now.
  RETURN QUERY
  SELECT s.status, s.locale,
         s.status IN ('expired', 'cancelled') OR s.expires_at <= pg_catalog.now()
    FROM @extschema@.survey s
   WHERE s.token = survey_for_token.token;
END
$fn$;
COMMENT ON FUNCTION @extschema@.survey_for_token(text) IS
  'The answer page''s lookup: status, locale and whether answers are refused (closed) of the survey '
  'with this token; no row for an unknown token. VOLATILE so that the analyst recipe (non-volatile '
  'functions) does not get it';
REVOKE ALL ON FUNCTION @extschema@.survey_for_token(text) FROM PUBLIC;
