-- nps_drivers (Benjamini-Hochberg q-values) and comment_terms (log-odds with an informative
-- Dirichlet prior) on hand-built data. Expected values computed independently in Python
-- (math.erfc) from the formulas of docs/churn.md:
--   NPS stderr 100 sqrt((p + d - (p - d)^2) / n), z = difference / sqrt(se1^2 + se2^2),
--   p = erfc(|z| / sqrt 2); BH q_(i) = min over j >= i of p_(j) m / j.
-- Rolled back at the end.
SET search_path = nps_billing, public;
SET TimeZone = 'UTC';
BEGIN;
DELETE FROM response; DELETE FROM survey; DELETE FROM payment_event; DELETE FROM payment_source;
INSERT INTO payment_source (id, name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES (1, 'hand', 'pg_class', 'c', 'k', 's');
-- cells (plan, method): promoters / passives / detractors
--   a card 7/2/1, a bank 5/2/3, b card 2/2/6, b bank 2/2/6, c card 1/1/1   (43 answers)
CREATE TEMP TABLE cell (plan text, method text, score int, n int);
INSERT INTO cell VALUES
  ('a', 'card', 10, 7), ('a', 'card', 8, 2), ('a', 'card', 3, 1),
  ('a', 'bank', 9, 5), ('a', 'bank', 7, 2), ('a', 'bank', 0, 3),
  ('b', 'card', 10, 2), ('b', 'card', 8, 2), ('b', 'card', 6, 6),
  ('b', 'bank', 9, 2), ('b', 'bank', 7, 2), ('b', 'bank', 2, 6),
  ('c', 'card', 10, 1), ('c', 'card', 8, 1), ('c', 'card', 1, 1);
CREATE TEMP TABLE one AS
SELECT row_number() OVER (ORDER BY plan, method, score) AS i, plan, method, score
FROM cell, generate_series(1, n);
INSERT INTO payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
SELECT 1, 'k' || i, 'succeeded', 'x' || i, 10, 'usd', timestamptz '2026-03-01 00:00' + i * interval '1 minute',
       jsonb_build_object('plan', plan, 'method', method)
FROM one;
INSERT INTO response (customer_id, score, responded_at)
SELECT 'x' || i, score, timestamptz '2026-03-02 00:00' + i * interval '1 minute' FROM one ORDER BY i;

-- plan a: NPS 40 vs rest -27.2 -> difference 74.782609, p 0.00241594; plan b the mirror image;
-- plan c has 3 answers (< 5): listed without statistics, in the rest of the others;
-- method card 8.695652 vs bank -10: difference 18.695652, p 0.489552 (both rows).
-- m = 4 tests: q = 0.00241594 * 4/2 = 0.00483189 for a and b; 0.489552 * 4/4 for the methods.
-- impact = responses x difference: 1495.652174, -1495.652174, 430.0, -373.913043; largest |impact| first.
SELECT attribute, value, responses, round(nps::numeric, 6) AS nps, round(difference::numeric, 6) AS difference,
       round(p_value::numeric, 8) AS p_value, round(q_value::numeric, 8) AS q_value, round(impact::numeric, 6) AS impact,
       ci_low IS NOT NULL AS has_ci
FROM nps_drivers(ARRAY['plan', 'method'], min_responses => 5);
-- a single attribute: m = 2 (plan a and b) -> q = p = 0.00241594 * 2/2
SELECT attribute, value, round(p_value::numeric, 8) AS p_value, round(q_value::numeric, 8) AS q_value
FROM nps_drivers('{plan}', min_responses => 5) ORDER BY value;
-- the same attribute twice counts once; an attribute nobody has: one NULL segment, no test
SELECT attribute, value, responses, q_value FROM nps_drivers('{plan,plan,nothing}', min_responses => 5)
WHERE attribute = 'nothing' OR value = 'c' ORDER BY attribute;
-- same values as nps_by for each attribute (nps_by has no correction)
SELECT count(*) AS differing FROM nps_drivers('{plan,method}', min_responses => 5) d
JOIN LATERAL (SELECT * FROM nps_by(d.attribute, min_responses => 5)) b ON b.value IS NOT DISTINCT FROM d.value
WHERE (b.responses, b.nps, b.difference, b.p_value) IS DISTINCT FROM (d.responses, d.nps, d.difference, d.p_value);

-- nps_alerts: the same correction across the segments it tests. Window 1: the answers above
-- (2026-03-02); window 2: the same customers a week later, all detractors for plan b.
INSERT INTO response (customer_id, score, responded_at)
SELECT 'x' || i, CASE WHEN plan = 'b' THEN 0 ELSE score END, timestamptz '2026-03-09 00:00' + i * interval '1 minute' FROM one ORDER BY i;
-- By hand: every segment with >= 5 answers in both windows is a test (overall, source, plan a,
-- plan b, card, bank: m = 6; plan c has 3), its p-value from nps_compare on the raw groups, and
-- q = min over the tests with p' >= p of p' m / rank(p') (the set form of Benjamini-Hochberg).
-- plan a did not change (p = 1) and is not shown (no drop), but it counts in m.
CREATE TEMP TABLE raw AS
SELECT d.dimension, d.value, r.score, r.responded_at >= '2026-03-09' AS cur
FROM response r JOIN one o ON r.customer_id = 'x' || o.i
CROSS JOIN LATERAL (VALUES ('overall', NULL), ('source', 'hand'), ('plan', o.plan), ('method', o.method)) d(dimension, value);
CREATE TEMP TABLE tests AS
SELECT dimension, value,
       (nps_compare(nps_agg(score) FILTER (WHERE cur), nps_agg(score) FILTER (WHERE NOT cur))).p_value AS p
FROM raw GROUP BY 1, 2
HAVING count(*) FILTER (WHERE cur) >= 5 AND count(*) FILTER (WHERE NOT cur) >= 5;
CREATE TEMP TABLE ranked AS
SELECT t.*, row_number() OVER (ORDER BY p, dimension, value) AS rk, (SELECT count(*) FROM tests) AS m FROM tests t;
SELECT m AS tests FROM ranked LIMIT 1;
SELECT a.dimension, a.value, round(a.nps_drop::numeric, 6) AS nps_drop, round(a.p_value::numeric, 8) AS p_value,
       round(a.q_value::numeric, 8) AS q_value,
       round(least(1, (SELECT min(x.p * x.m / x.rk) FROM ranked x WHERE x.p >= h.p))::numeric, 8) AS q_by_hand
FROM nps_alerts('7 days', 0, min_responses => 5, as_of => '2026-03-16') a
JOIN ranked h ON h.dimension = a.dimension AND h.value IS NOT DISTINCT FROM a.value
ORDER BY a.p_value, a.dimension, a.value;
-- the threshold filters what is shown, not what is counted: the q-values do not change
SELECT dimension, value, round(q_value::numeric, 8) AS q_value
FROM nps_alerts('7 days', 30, min_responses => 5, as_of => '2026-03-16') ORDER BY dimension, value;
ROLLBACK;

-- comment_terms
BEGIN;
DELETE FROM response; DELETE FROM survey; DELETE FROM payment_event; DELETE FROM payment_source;
INSERT INTO response (customer_id, score, comment, responded_at)
SELECT 'c' || g, s, c, timestamptz '2026-04-01' + g * interval '1 hour'
FROM (SELECT v.s, v.c, row_number() OVER () AS g FROM (VALUES (0, 'Unclear charge'), (1, 'unclear charges!'), (2, 'UNCLEAR charge'),
             (3, 'Unexpected charge'), (4, 'an unexpected charge'), (5, 'slow support'), (6, 'John was rude'),
             (10, 'love it'), (10, 'Love it'), (9, 'loved it'), (10, 'love it'),
             (9, 'great support'), (9, 'Great support'), (10, 'great support'), (9, 'charge fine'),
             (8, NULL), (7, ''), (3, NULL)) v(s, c)) x;
-- detractors: 7 commented answers, 14 term mentions: charg 5, unclear 3, unexpect 2, slow,
-- support, john, rude 1 each (shares of 7); the others: 9 commented answers (a passive's ''
-- has no term but is a comment), 12 mentions: love 4, great 3, support 3, charg 1, fine 1.
-- Prior a_w = the term's mentions in both, a_0 = 26:
--   charg:   delta = ln(10/(14+26-5-6)) - ln(7/(12+26-1-6)) = 0.518676, z = 1.072768
--   unclear: delta = ln(6/(14+26-3-3)) - ln(3/(12+26-0-3)) = 0.722135, z = 1.021253
-- Only terms at least min_answers (3) detractors wrote: john (1 answer) never comes out.
SELECT term, answers, round(share::numeric, 6) AS share, other_answers, round(other_share::numeric, 6) AS other_share,
       round(log_odds::numeric, 6) AS log_odds, round(z::numeric, 6) AS z
FROM comment_terms('detractor', min_answers => 3);
-- promoters: love (loved stems to love) 4, great 3, support 3 (1 among the others)
SELECT term, answers, other_answers, round(log_odds::numeric, 6) AS log_odds, round(z::numeric, 6) AS z
FROM comment_terms('promoter', min_answers => 3);
-- the default threshold (5 answers) keeps only charg; 'simple' (no stemming): charge 4 + charges 1
SELECT term, answers FROM comment_terms('detractor');
SELECT term, answers FROM comment_terms('detractor', config => 'simple', min_answers => 3);
-- a range: only the first three answers (hours 1..3)
SELECT term, answers, other_answers FROM comment_terms('detractor', '2026-04-01', '2026-04-01 03:30', min_answers => 3);
ROLLBACK;

-- errors (SQLSTATE and a message naming the value)
\set VERBOSITY terse
SELECT * FROM comment_terms('detractor', min_answers => 2);
SELECT * FROM comment_terms(NULL);
SELECT * FROM comment_terms('detractor', '2026-05-01', '2026-04-01');
SELECT * FROM comment_terms('detractor', config => NULL);
SELECT * FROM nps_drivers(NULL);
SELECT * FROM nps_drivers('{}');
SELECT * FROM nps_drivers('{plan,NULL}');
SELECT * FROM nps_drivers('{plan}', min_responses => 0);
