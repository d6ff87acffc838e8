-- Comment themes with PostgreSQL full-text search: which terms are over-represented in the
-- comments of one NPS category compared with the others (docs/churn.md#comment_terms).
--
-- Terms are the lexemes of to_tsvector(config, comment): stemmed, stop words removed, in any
-- language PostgreSQL has a text search configuration for. Each answer counts once per term (as
-- ts_stat's ndoc; unnest(tsvector) gives the same counts without building a query string).
-- The score is the log-odds ratio with an informative Dirichlet prior of Monroe, Colaresi and
-- Quinn (2008), "Fightin' Words", eq. 16 and 20: with y the term's answers and n all term
-- mentions in the category (i) and in the other categories (j), and the prior alpha_w = the
-- term's mentions in both, alpha_0 = all mentions in both,
--   delta = ln((y_i + a_w) / (n_i + a_0 - y_i - a_w)) - ln((y_j + a_w) / (n_j + a_0 - y_j - a_w))
--   z     = delta / sqrt(1 / (y_i + a_w) + 1 / (y_j + a_w))
-- so a term rises because it is over-represented there, not because it is common.
--
-- Privacy: the function reads comments (SECURITY DEFINER) and returns only terms that at least
-- min_answers (>= 3, default 5) answers of the category in the range contain: a word that one
-- person wrote (a name, an e-mail address, an order number) never comes out.

-- The commented answers by time: comment_terms reads the comments of its range and nothing else.
CREATE INDEX response_commented_idx ON @extschema@.response (responded_at) WHERE comment IS NOT NULL;

CREATE FUNCTION @extschema@.comment_terms(category @extschema@.nps_category,
                                          since timestamptz DEFAULT '-infinity',
                                          until timestamptz DEFAULT 'infinity',
                                          config regconfig DEFAULT 'english',
                                          min_answers integer DEFAULT 5)
RETURNS TABLE (term text, answers bigint, share float8, other_answers bigint, other_share float8,
               log_odds float8, z float8)
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  WITH docs AS MATERIALIZED (
    SELECT r.category = comment_terms.category AS inside,
           pg_catalog.to_tsvector(config, r.comment) AS v
      FROM @extschema@.response r
     WHERE r.comment IS NOT NULL
       AND r.responded_at >= since AND r.responded_at < until
       AND @extschema@.check_argument(comment_terms.category IS NOT NULL AND since IS NOT NULL AND until IS NOT NULL
                                      AND config IS NOT NULL AND min_answers IS NOT NULL,
             '22004', 'comment_terms: category, since, until, config and min_answers must not be NULL')
       AND @extschema@.check_argument(since IS NULL OR until IS NULL OR since <= until,
             '22023', format('comment_terms: since %s must not be after until %s', since, until))
       AND @extschema@.check_argument(min_answers IS NULL OR min_answers >= 3,
             '22023', format('comment_terms: min_answers %s must be at least 3 (fewer could single out one answer)', min_answers))
  ), n AS (
    SELECT count(*) FILTER (WHERE d.inside) AS docs_i, count(*) FILTER (WHERE NOT d.inside) AS docs_j FROM docs d
  ), tf AS (
    SELECT l.lexeme AS term, count(*) FILTER (WHERE d.inside) AS y_i, count(*) FILTER (WHERE NOT d.inside) AS y_j
      FROM docs d CROSS JOIN LATERAL unnest(d.v) AS l
     GROUP BY 1
  ), tot AS (
    SELECT sum(tf.y_i)::float8 AS n_i, sum(tf.y_j)::float8 AS n_j FROM tf
  ), scored AS (
    SELECT tf.term, tf.y_i, tf.y_j, (tf.y_i + tf.y_j)::float8 AS a_w, tot.n_i + tot.n_j AS a_0, tot.n_i, tot.n_j
      FROM tf, tot
     WHERE tf.y_i >= min_answers
  )
  SELECT s.term, s.y_i, s.y_i::float8 / nullif(n.docs_i, 0), s.y_j, s.y_j::float8 / nullif(n.docs_j, 0),
         ln((s.y_i + s.a_w) / nullif(s.n_i + s.a_0 - s.y_i - s.a_w, 0)) - ln((s.y_j + s.a_w) / nullif(s.n_j + s.a_0 - s.y_j - s.a_w, 0)),
         (ln((s.y_i + s.a_w) / nullif(s.n_i + s.a_0 - s.y_i - s.a_w, 0)) - ln((s.y_j + s.a_w) / nullif(s.n_j + s.a_0 - s.y_j - s.a_w, 0)))
           / sqrt(1 / (s.y_i + s.a_w) + 1 / (s.y_j + s.a_w))
    FROM scored s, n
   ORDER BY 7 DESC, 1
$$;
COMMENT ON FUNCTION @extschema@.comment_terms(@extschema@.nps_category, timestamptz, timestamptz, regconfig, integer) IS
  'Full-text-search terms of the comments of one NPS category in [since, until) that at least min_answers (>= 3) of its answers contain: '
  'answers and share there and in the other categories, log-odds ratio with an informative Dirichlet prior and its z-score; most over-represented first';
