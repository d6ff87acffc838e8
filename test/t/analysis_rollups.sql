-- The rollups (and the stored contexts, latest answers, funnel counts) always equal a
-- recomputation from the raw rows, on random data of many seeds, after each kind of change:
-- new answers (imported and recorded), replaced / re-scored / deleted answers, a backfill of
-- older payments (then refresh_response_context()), forget_customer, purge, a source's
-- dimensions changed, rebuild_rollups(); answered surveys sent, re-dated or deleted afterwards
-- (the stored times behind survey_funnel's median); answers added in several rollup shards (as
-- from concurrent sessions) and leaving them. And the analysis functions, which read the
-- rollups, answer exactly what the same questions asked of the raw answers answer.
BEGIN;
SELECT plan(8 * 8 + 9);
SET LOCAL search_path = nps_billing, public;
SET LOCAL TimeZone = 'UTC';
DELETE FROM response; DELETE FROM survey; DELETE FROM payment_event; DELETE FROM payment_source;

-- NULL when every derived table matches its recomputation, else what differs
CREATE FUNCTION pg_temp.rollup_mismatch() RETURNS text LANGUAGE sql AS $$
  WITH seg_have AS (SELECT day, source_id, dims, failed_30d, nps_billing.rollup(agg)::text AS a FROM nps_billing.rollup_segment GROUP BY 1, 2, 3, 4),
  seg_want AS (SELECT nps_billing.utc_day(responded_at) AS day, coalesce(payment_source_id, 0) AS source_id,
                      coalesce(payment_dimensions, '{}') AS dims, coalesce(failed_payment_30d, false) AS failed_30d,
                      nps_billing.nps_agg(score)::text AS a
                 FROM nps_billing.response GROUP BY 1, 2, 3, 4),
  days_have AS (SELECT day, days_since, nps_billing.rollup(agg)::text AS a FROM nps_billing.rollup_days GROUP BY 1, 2),
  days_want AS (SELECT nps_billing.utc_day(responded_at) AS day, days_since_payment AS days_since,
                       nps_billing.nps_agg(score)::text AS a
                  FROM nps_billing.response WHERE days_since_payment IS NOT NULL GROUP BY 1, 2),
  latest_have AS (SELECT customer_id, response_id, responded_at, category FROM nps_billing.customer_latest_answer),
  latest_want AS (SELECT DISTINCT ON (customer_id) customer_id, id AS response_id, responded_at, category
                    FROM nps_billing.response WHERE customer_id IS NOT NULL
                   ORDER BY customer_id, responded_at DESC, id DESC),
  delay_have AS (SELECT day, bucket, sum(answers) AS answers FROM nps_billing.rollup_answer_delay GROUP BY 1, 2 HAVING sum(answers) <> 0),
  delay_want AS (SELECT nps_billing.utc_day(funnel_at) AS day, nps_billing.delay_bucket(answered_after) AS bucket,
                        count(*) AS answers
                   FROM nps_billing.response WHERE answered_after IS NOT NULL AND funnel_at IS NOT NULL GROUP BY 1, 2),
  funnel_have AS (SELECT day, outcome, sent, sum(surveys) AS surveys FROM nps_billing.survey_funnel_day GROUP BY 1, 2, 3 HAVING sum(surveys) <> 0),
  funnel_want AS (SELECT nps_billing.utc_day(created_at) AS day, nps_billing.funnel_outcome(status) AS outcome,
                         sent_at IS NOT NULL OR status = 'responded' AS sent, count(*) AS surveys
                    FROM nps_billing.survey GROUP BY 1, 2, 3)
  SELECT nullif(concat_ws('; ',
    (SELECT 'rollup_segment: ' || count(*) || ' rows differ' FROM
       ((SELECT * FROM seg_have EXCEPT SELECT * FROM seg_want) UNION ALL (SELECT * FROM seg_want EXCEPT SELECT * FROM seg_have)) x
     HAVING count(*) > 0),
    (SELECT 'rollup_days: ' || count(*) || ' rows differ' FROM
       ((SELECT * FROM days_have EXCEPT SELECT * FROM days_want) UNION ALL (SELECT * FROM days_want EXCEPT SELECT * FROM days_have)) x
     HAVING count(*) > 0),
    (SELECT 'customer_latest_answer: ' || count(*) || ' rows differ' FROM
       ((SELECT * FROM latest_have EXCEPT SELECT * FROM latest_want) UNION ALL (SELECT * FROM latest_want EXCEPT SELECT * FROM latest_have)) x
     HAVING count(*) > 0),
    (SELECT 'survey_funnel_day: ' || count(*) || ' rows differ' FROM
       ((SELECT * FROM funnel_have EXCEPT SELECT * FROM funnel_want) UNION ALL (SELECT * FROM funnel_want EXCEPT SELECT * FROM funnel_have)) x
     HAVING count(*) > 0),
    (SELECT 'rollup_answer_delay: ' || count(*) || ' rows differ' FROM
       ((SELECT * FROM delay_have EXCEPT SELECT * FROM delay_want) UNION ALL (SELECT * FROM delay_want EXCEPT SELECT * FROM delay_have)) x
     HAVING count(*) > 0),
    (SELECT 'stored survey times differ from the surveys for ' || count(*) || ' answers'
       FROM nps_billing.response r LEFT JOIN nps_billing.survey s ON s.id = r.survey_id
      WHERE (r.answered_after, r.funnel_at) IS DISTINCT FROM
            (r.responded_at - s.sent_at, CASE WHEN s.id IS NOT NULL THEN least(s.created_at, r.responded_at) END)
     HAVING count(*) > 0),
    (SELECT 'empty rollup rows: ' || count(*) FROM nps_billing.rollup_segment WHERE nps_billing.responses(agg) = 0 HAVING count(*) > 0),
    (SELECT 'stored context differs from the events for ' || count(*) || ' answers'
       FROM nps_billing.response r
      CROSS JOIN LATERAL nps_billing.context_of(r.customer_id, r.survey_id, r.responded_at, r.survey_event_id) c
      WHERE (r.payment_event_id, r.payment_source_id, r.payment_kind, r.payment_amount, r.payment_currency,
             r.payment_at, r.payment_attributes, r.payment_dimensions, r.days_since_payment, r.failed_payment_30d)
            IS DISTINCT FROM
            (c.payment_event_id, c.payment_source_id, c.payment_kind, c.payment_amount, c.payment_currency,
             c.payment_at, c.payment_attributes, c.payment_dimensions, c.days_since_payment, c.failed_payment_30d)
     HAVING count(*) > 0)), '')
$$;

-- NULL when each analysis function answers what the raw answers answer, over [s, u) (two
-- random, unaligned times) and over the whole history
CREATE FUNCTION pg_temp.function_mismatch(s timestamptz, u timestamptz) RETURNS text LANGUAGE sql AS $$
  SELECT nullif(concat_ws('; ',
    (SELECT 'nps_by(' || k || ', ' || lo || ', ' || hi || ')' FROM
       (VALUES ('plan', s, u), ('method', s, u), ('plan', '-infinity'::timestamptz, 'infinity'::timestamptz),
               ('method', '-infinity', 'infinity'), ('coupon', s, u)) v(k, lo, hi)
      WHERE EXISTS (
        (SELECT f.value, f.responses, f.nps, f.ci_low, f.p_value FROM nps_billing.nps_by(k, lo, hi, 1) f
         EXCEPT
         SELECT x.value, nps_billing.responses(x.a), nps_billing.nps(x.a), (nps_billing.nps_ci(x.a)).low,
                (nps_billing.nps_compare(x.a, nps_billing.npsagg_sub(t.a, x.a))).p_value
           FROM (SELECT c.attributes ->> k AS value, nps_billing.nps_agg(c.score) AS a FROM nps_billing.response_context c
                  WHERE c.responded_at >= lo AND c.responded_at < hi GROUP BY 1) x,
                (SELECT nps_billing.nps_agg(c.score) AS a FROM nps_billing.response_context c
                  WHERE c.responded_at >= lo AND c.responded_at < hi) t)
        UNION ALL
        (SELECT c.attributes ->> k, count(*), NULL::float8, NULL::float8, NULL::float8 FROM nps_billing.response_context c
          WHERE c.responded_at >= lo AND c.responded_at < hi GROUP BY 1
         EXCEPT SELECT f.value, f.responses, NULL, NULL, NULL FROM nps_billing.nps_by(k, lo, hi, 1) f))
      LIMIT 1),
    (SELECT 'nps_trend(' || b || ')' FROM (VALUES (interval '1 day'), (interval '5 hours'), (interval '3 days')) v(b)
      WHERE EXISTS (
        SELECT t.bucket_start, t.responses, t.nps, t.ci_low FROM nps_billing.nps_trend(b, s, u) t
        EXCEPT
        SELECT g.t, coalesce(nps_billing.responses(x.a), 0), nps_billing.nps(x.a), (nps_billing.nps_ci(x.a)).low
          FROM generate_series(s, u, b) g(t),
          LATERAL (SELECT nps_billing.nps_agg(r.score) AS a FROM nps_billing.response r
                    WHERE r.responded_at >= g.t AND r.responded_at < least(g.t + b, u)) x
         WHERE g.t < u)
      LIMIT 1),
    (SELECT 'nps_by_days_since_payment' WHERE EXISTS (
        SELECT f.day, f.responses, f.nps FROM nps_billing.nps_by_days_since_payment(30) f
        EXCEPT
        SELECT d, count(c.score), nps_billing.nps(c.score)
          FROM generate_series(0, 30) d LEFT JOIN nps_billing.response_context c ON c.days_since_payment = d GROUP BY d)),
    (SELECT 'nps_failed_payments' WHERE EXISTS (
        SELECT f.failed_payment, f.responses, f.nps, f.p_value FROM nps_billing.nps_failed_payments() f
        EXCEPT
        SELECT v, count(c.score), nps_billing.nps(c.score),
               (nps_billing.nps_compare(
                  (SELECT nps_billing.nps_agg(i.score) FROM nps_billing.response_context i WHERE i.event_id IS NOT NULL AND i.failed_payment_30d = v),
                  (SELECT nps_billing.nps_agg(o.score) FROM nps_billing.response_context o WHERE o.event_id IS NOT NULL AND o.failed_payment_30d <> v))).p_value
          FROM (VALUES (true), (false)) w(v)
          LEFT JOIN nps_billing.response_context c ON c.event_id IS NOT NULL AND c.failed_payment_30d = v GROUP BY v)),
    (SELECT 'revenue_at_risk' WHERE EXISTS (
        (SELECT * FROM nps_billing.revenue_at_risk(s)
         EXCEPT
         SELECT l.category, e.currency, count(DISTINCT l.customer_id), count(*), sum(e.amount)
           FROM (SELECT DISTINCT ON (customer_id) customer_id, category FROM nps_billing.response
                  WHERE customer_id IS NOT NULL ORDER BY customer_id, responded_at DESC, id DESC) l
           JOIN nps_billing.payment_event e ON e.customer_id = l.customer_id AND e.kind = 'succeeded' AND e.occurred_at >= s
          WHERE l.category IN ('detractor', 'passive') GROUP BY 1, 2))),
    (SELECT 'survey_funnel(' || f || ')' FROM unnest(ARRAY[s, '-infinity', nps_billing.utc_floor(s), u - interval '36 hours']) f
      WHERE EXISTS (
        SELECT * FROM nps_billing.survey_funnel(f)
        EXCEPT
        SELECT count(*), count(*) FILTER (WHERE x.sent_at IS NOT NULL OR r.id IS NOT NULL), count(r.id),
               count(*) FILTER (WHERE x.status = 'expired'), count(*) FILTER (WHERE x.status = 'failed'),
               count(r.id)::float8 / nullif(count(*) FILTER (WHERE x.sent_at IS NOT NULL OR r.id IS NOT NULL), 0),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY r.responded_at - x.sent_at)
          FROM nps_billing.survey x LEFT JOIN nps_billing.response r ON r.survey_id = x.id AND r.responded_at >= f
         WHERE x.created_at >= f)
      LIMIT 1)), '')
$$;

-- Random data: two sources (one keeps plan and method, one plan only), 40 customers with
-- payments over 40 days, surveys answered through record_response, imported answers.
CREATE FUNCTION pg_temp.generate(seed int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := date_trunc('hour', now()) - interval '40 days';
BEGIN
  PERFORM setseed(seed / 1000.0);
  DELETE FROM nps_billing.response; DELETE FROM nps_billing.survey;
  DELETE FROM nps_billing.payment_event; DELETE FROM nps_billing.payment_source;
  INSERT INTO nps_billing.payment_source (id, name, relid, customer_expr, payment_key_expr, succeeded_expr, dimensions)
  VALUES (71, 'rs_a', 'pg_class', 'c', 'k', 's', '{plan,method}'), (72, 'rs_b', 'pg_class', 'c', 'k', 's', '{plan}');
  INSERT INTO nps_billing.payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
  SELECT 71 + (random() < 0.4)::int, 'k' || g, CASE WHEN random() < 0.15 THEN 'failed' ELSE 'succeeded' END,
         'rc' || (1 + floor(random() * 40))::int, (1 + floor(random() * 5)) * 10, (ARRAY['usd', 'eur'])[1 + (random() < 0.3)::int],
         t0 + random() * interval '38 days',
         CASE WHEN random() < 0.9 THEN jsonb_build_object('plan', (ARRAY['pro', 'basic', 'team'])[1 + floor(random() * 3)::int],
                                                          'method', (ARRAY['card', 'sepa'])[1 + (random() < 0.3)::int]) END
    FROM generate_series(1, 200) g;
  INSERT INTO nps_billing.survey (token, source_id, event_id, customer_id, channel, status, send_after, expires_at, sent_at, created_at)
  SELECT 'rt' || e.id, e.source_id, e.id, e.customer_id, 'email',
         (ARRAY['sent', 'sent', 'sent', 'pending', 'expired', 'failed'])[1 + floor(random() * 6)::int],
         e.occurred_at, now() + interval '30 days', e.occurred_at + interval '1 hour', e.occurred_at
    FROM nps_billing.payment_event e WHERE e.kind = 'succeeded' AND random() < 0.6;
  UPDATE nps_billing.survey SET sent_at = NULL WHERE status IN ('pending', 'failed') AND random() < 0.7;
  -- each answer from another rollup shard (as from many sessions), so that rows of one day and
  -- segment have several shards to sum and to gather when an answer leaves
  PERFORM set_config('nps_billing.rollup_shard', floor(random() * 8)::int::text, true),
          nps_billing.record_response(s.token, floor(random() * 11)::int, NULL,
                                      least(s.created_at + random() * interval '5 days', now() - interval '1 minute'))
     FROM nps_billing.survey s WHERE s.status IN ('sent', 'pending') AND random() < 0.8;
  PERFORM set_config('nps_billing.rollup_shard', '3', true);
  INSERT INTO nps_billing.response (customer_id, score, responded_at)
  SELECT CASE WHEN random() < 0.9 THEN 'rc' || (1 + floor(random() * 45))::int END, floor(random() * 11)::int,
         t0 + random() * interval '40 days'
    FROM generate_series(1, 60);
  PERFORM set_config('nps_billing.rollup_shard', '5', true);
  INSERT INTO nps_billing.response (customer_id, score, responded_at)
  SELECT CASE WHEN random() < 0.9 THEN 'rc' || (1 + floor(random() * 45))::int END, floor(random() * 11)::int,
         t0 + random() * interval '40 days'
    FROM generate_series(1, 60);
  PERFORM set_config('nps_billing.rollup_shard', (seed % 8)::text, true);
END $$;

CREATE FUNCTION pg_temp.window_of(seed int, OUT s timestamptz, OUT u timestamptz) LANGUAGE sql AS $$
  SELECT date_trunc('hour', now()) - interval '40 days' + (seed % 7) * interval '1 day' + (seed % 5) * interval '3 hours 17 minutes',
         date_trunc('hour', now()) - interval '3 days' - (seed % 3) * interval '5 hours 3 minutes' $$;

-- 8 seeds x 8 checks
CREATE TEMP TABLE tap_out (n serial, line text);
DO $$
DECLARE seed int; s timestamptz; u timestamptz; who text[];
BEGIN
  FOR seed IN SELECT unnest(ARRAY[1, 2, 3, 5, 8, 13, 21, 34]) LOOP
    SELECT * INTO s, u FROM pg_temp.window_of(seed);
    PERFORM pg_temp.generate(seed);
    INSERT INTO tap_out (line) SELECT is(pg_temp.rollup_mismatch(), NULL, format('seed %s: rollups match the answers', seed));
    INSERT INTO tap_out (line) SELECT is(pg_temp.function_mismatch(s, u), NULL, format('seed %s: functions answer what the answers answer', seed));
    -- replaced answers (record_response again), re-scored, re-dated and deleted ones
    PERFORM setseed(seed / 999.0);
    PERFORM set_config('nps_billing.rollup_shard', ((seed + 1) % 8)::text, true);
    PERFORM nps_billing.record_response(s.token, floor(random() * 11)::int, 'again',
                                        least(s.created_at + random() * interval '9 days', now() - interval '1 minute'))
       FROM nps_billing.survey s WHERE s.status = 'responded' AND random() < 0.5;
    UPDATE nps_billing.response SET score = floor(random() * 11)::int WHERE survey_id IS NULL AND random() < 0.3;
    UPDATE nps_billing.response SET responded_at = responded_at - interval '2 days' WHERE survey_id IS NULL AND random() < 0.2;
    -- (answers of surveys stay: the funnel counts a survey in status responded as answered)
    DELETE FROM nps_billing.response WHERE survey_id IS NULL AND random() < 0.1;
    -- answered surveys reported sent afterwards (in-app answers), re-dated, or deleted by hand
    UPDATE nps_billing.survey SET sent_at = coalesce(sent_at, created_at) + random() * interval '2 days'
     WHERE status = 'responded' AND random() < 0.3;
    UPDATE nps_billing.survey SET created_at = created_at - interval '20 hours' WHERE status = 'responded' AND random() < 0.1;
    DELETE FROM nps_billing.survey WHERE status = 'responded' AND random() < 0.05;
    INSERT INTO tap_out (line) SELECT is(pg_temp.rollup_mismatch(), NULL, format('seed %s: rollups match after replaced, changed and deleted answers', seed));
    -- a backfill of older payments (succeeded and failed) written after the answers
    INSERT INTO nps_billing.payment_event (source_id, payment_key, kind, customer_id, amount, currency, occurred_at, attributes)
    SELECT 72, 'bf' || g, CASE WHEN g % 3 = 0 THEN 'failed' ELSE 'succeeded' END, 'rc' || (1 + floor(random() * 40))::int, 10, 'usd',
           date_trunc('hour', now()) - interval '40 days' + random() * interval '38 days', '{"plan":"legacy"}'
      FROM generate_series(1, 40) g;
    PERFORM nps_billing.refresh_response_context();
    INSERT INTO tap_out (line) SELECT is(pg_temp.rollup_mismatch(), NULL, format('seed %s: rollups and contexts match after a backfill and refresh_response_context()', seed));
    INSERT INTO tap_out (line) SELECT is(pg_temp.function_mismatch(s, u), NULL, format('seed %s: functions still answer what the answers answer', seed));
    -- forget three customers; purge what is older than 20 days
    SELECT array_agg(c) INTO who FROM (SELECT 'rc' || (1 + floor(random() * 40))::int AS c FROM generate_series(1, 3)) x;
    PERFORM nps_billing.forget_customer(c) FROM unnest(who) c;
    INSERT INTO tap_out (line) SELECT is(pg_temp.rollup_mismatch(), NULL, format('seed %s: rollups match after forget_customer', seed));
    PERFORM nps_billing.purge('20 days');
    INSERT INTO tap_out (line) SELECT is(pg_temp.rollup_mismatch(), NULL, format('seed %s: rollups and contexts match after purge', seed));
    -- a source keeps other dimensions: its answers move to their new segments
    UPDATE nps_billing.payment_source SET dimensions = CASE WHEN seed % 2 = 0 THEN '{method}'::text[] ELSE '{plan,method,coupon}' END
     WHERE id = 72;
    INSERT INTO tap_out (line) SELECT is(coalesce(pg_temp.rollup_mismatch(), '') || coalesce(pg_temp.function_mismatch(s, u), ''), '',
                                         format('seed %s: rollups and functions match after a change of dimensions', seed));
  END LOOP;
END $$;
SELECT line FROM tap_out ORDER BY n;

-- forget_customer leaves no row of the person in the latest-answer table
SELECT is(pg_temp.generate(99)::text, '', 'seed 99 generated');
SELECT ok((SELECT count(*) FROM (SELECT 1 FROM rollup_segment GROUP BY day, source_id, dims, failed_30d HAVING count(*) > 1) x) > 0
          AND (SELECT count(*) FROM (SELECT 1 FROM rollup_answer_delay GROUP BY day, bucket HAVING count(*) > 1) x) > 0,
          'answers of one day and segment are kept in several shards (which the checks above sum)');
SELECT ok((SELECT count(*) FROM customer_latest_answer WHERE customer_id = 'rc7') = 1, 'rc7 has a latest answer');
SELECT is((SELECT responses FROM nps_billing.forget_customer('rc7')) > 0, true, 'rc7 is forgotten');
SELECT is((SELECT count(*)::int FROM customer_latest_answer WHERE customer_id = 'rc7'), 0, 'forget_customer removes the latest answer row');

-- rebuild_rollups() after the rollups were emptied behind the triggers' back gives them back
CREATE TEMP TABLE before_rebuild AS SELECT day, source_id, dims, failed_30d, rollup(agg)::text AS a FROM rollup_segment GROUP BY 1, 2, 3, 4;
DELETE FROM rollup_segment; DELETE FROM rollup_days; DELETE FROM customer_latest_answer; DELETE FROM survey_funnel_day;
DELETE FROM rollup_answer_delay;
SELECT ok(nps_billing.rebuild_rollups() > 0, 'rebuild_rollups() writes rows');
SELECT is(pg_temp.rollup_mismatch(), NULL, 'rebuild_rollups() restores every rollup');
SELECT is((SELECT count(*)::int FROM ((SELECT * FROM before_rebuild EXCEPT SELECT day, source_id, dims, failed_30d, agg::text FROM rollup_segment)
                                      UNION ALL (SELECT day, source_id, dims, failed_30d, agg::text FROM rollup_segment EXCEPT SELECT * FROM before_rebuild)) x),
          0, 'the rebuilt rows (one per segment, shard 0) are the sums of the shards kept incrementally');
-- a rebuild of a day range leaves the other days alone
SELECT is((SELECT nps_billing.rebuild_rollups(current_date - 5, current_date) >= 0 AND pg_temp.rollup_mismatch() IS NULL), true,
          'rebuild_rollups(from_day, to_day) keeps every rollup right');

SELECT * FROM finish();
ROLLBACK;
