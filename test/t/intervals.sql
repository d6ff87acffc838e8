-- Every interval argument is checked for what it does to a time (sql/parts/35_intervals.sql):
-- no negative part, bounded; mixed-sign intervals that compare as "in range" but move a time far
-- or backwards are refused. Each reproducer was accepted by 0.1; two or more variants each.
BEGIN;
SELECT plan(47);
SET LOCAL search_path = nps_billing, public;
-- a regression must fail the test, not hang it (0.1's nps_trend looped forever on one of these)
SET LOCAL statement_timeout = '20s';
SET LOCAL IntervalStyle = 'postgres';

CREATE TEMP TABLE iv_pay (id int);
INSERT INTO payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES ('iv', 'iv_pay', 'x', 'y', 'z');
INSERT INTO survey (id, token, source_id, customer_id, channel, send_after, expires_at, created_at)
SELECT 6600 + g, 'iv-token-' || g, p.id, 'iv-cust-' || g, 'email', now() - interval '1 hour' + g * interval '1 second', now() + interval '1 day',
       now() - interval '1 second'
  FROM payment_source p, generate_series(1, 3) g WHERE p.name = 'iv';

-- claim_surveys(lease)
SELECT throws_ok($$SELECT * FROM claim_surveys('iv-w', 10, '1000 years -359999 days')$$, '22023',
                 'claim_surveys: lease 1000 years -359999 days is out of range (0, 1 day] or has a negative part',
                 'claim_surveys: the 5,243-day lease that compares as 1 day is refused');
SELECT is((SELECT count(*)::int FROM survey WHERE token LIKE 'iv-token-%' AND status <> 'pending'), 0, '... and nothing was leased');
SELECT throws_ok($$SELECT * FROM claim_surveys('iv-w', 10, '1 mon -29 days')$$, '22023', NULL, 'lease 1 mon -29 days (compares as 1 day, adds 1..2 days): 22023');
SELECT throws_ok($$SELECT * FROM claim_surveys('iv-w', 10, '-1 day 25 hours')$$, '22023', NULL, 'lease -1 day 25 hours: 22023');
SELECT throws_ok($$SELECT * FROM claim_surveys('iv-w', 10, '1 day -1 microsecond')$$, '22023', NULL, 'lease with a negative time part: 22023');
SELECT throws_ok($$SELECT * FROM claim_surveys('iv-w', 10, '100000000 years')$$, '22023', NULL, 'a lease that would overflow: 22023, not 22008');
SELECT throws_ok($$SELECT * FROM claim_surveys('iv-w', 10, '-1 microsecond')$$, '22023', NULL, 'a negative lease: 22023');
SELECT is((SELECT count(*)::int FROM claim_surveys('iv-w', 1, '24 hours')), 1, 'a 24-hour lease is accepted');
SELECT ok((SELECT lease_until <= now() + interval '24 hours' AND lease_until > now() + interval '23 hours'
             FROM survey WHERE token LIKE 'iv-token-%' AND status = 'sending'), '... and leases for 24 hours');
SELECT is((SELECT count(*)::int FROM claim_surveys('iv-w', 1, '1 day')), 1, 'a 1-day lease is accepted');

-- mark_failed(retry_after), single and batch
SELECT throws_ok($$SELECT mark_failed(6601, 'iv-w', 'x', '-1 mon 31 days')$$, '22023',
                 'mark_failed: retry_after -1 mons +31 days is out of range [0, 1 year] or has a negative part',
                 'retry_after -1 mon 31 days (compares as +1 day): 22023');
SELECT throws_ok($$SELECT mark_failed(6601, 'iv-w', 'x', '1 day -1 second')$$, '22023', NULL, 'retry_after with a negative time part: 22023');
SELECT throws_ok($$SELECT mark_failed(6601, 'iv-w', 'x', '10 years')$$, '22023', NULL, 'retry_after over a year: 22023');
SELECT throws_ok($$SELECT * FROM mark_failed(ARRAY[6601::bigint], 'iv-w', 'x', '1000 years -365000 days')$$, '22023', NULL,
                 'the batch mark_failed checks retry_after the same way');
SELECT is(mark_failed(6601, 'iv-w', 'x', '0'), 'pending', 'retry_after 0 is accepted');
SELECT is(mark_failed(6602, 'iv-w', 'x', '1 year'), 'pending', 'retry_after 1 year is accepted');

-- purge(older_than)
SELECT throws_ok($$SELECT * FROM purge('-1 mon 30 days 1 second')$$, '22023',
                 'purge: older_than -1 mons +30 days 00:00:01 must be positive, at least 1 day and at most 1000 years, with no negative part',
                 'purge: the interval that passed as positive is refused');
SELECT is((SELECT count(*)::int FROM survey WHERE token LIKE 'iv-token-%'), 3, '... and the survey created a second ago is still there');
SELECT throws_ok($$SELECT * FROM purge('1 year -365 days 1 second')$$, '22023', NULL, 'purge 1 year -365 days 1 second: 22023');
SELECT throws_ok($$SELECT * FROM purge('1 hour')$$, '22023', NULL, 'purge of less than a day: 22023');
SELECT throws_ok($$SELECT * FROM purge('100000 years')$$, '22023', NULL, 'purge beyond 1000 years: 22023, not 22008');
SELECT is((SELECT surveys FROM purge('2 days')), 0, 'purge(2 days) runs and keeps recent surveys');

-- nps_trend(bucket)
SELECT throws_ok($$SELECT count(*) FROM nps_trend('1 mon -30 days 1 microsecond', '2026-01-01', '2026-12-31')$$, '22023',
                 'nps_trend: bucket 1 mon -30 days +00:00:00.000001 must be a positive interval of at most 100 years with no negative part',
                 'nps_trend: the bucket that never ended is refused');
SELECT throws_ok($$SELECT count(*) FROM nps_trend('1 day -23 hours', '2026-01-01', '2026-01-31')$$, '22023', NULL, 'bucket 1 day -23 hours: 22023');
SELECT throws_ok($$SELECT count(*) FROM nps_trend('-1 mon 31 days', '2026-01-01', '2026-12-31')$$, '22023', NULL, 'bucket -1 mon 31 days: 22023');
SELECT throws_ok($$SELECT count(*) FROM nps_trend('1000 years', '2026-01-01', '2026-12-31')$$, '22023', NULL, 'bucket over 100 years: 22023');
SELECT throws_ok($$SELECT count(*) FROM nps_trend('1 microsecond', '2026-01-01', '2026-01-02')$$, '54000', NULL, 'too many buckets: 54000');
SELECT is((SELECT count(*)::int FROM nps_trend('1 mon', '2026-01-31', '2026-05-01')), 4, 'monthly buckets from 31 January advance every time');
SELECT is((SELECT count(*)::int FROM nps_trend('1 day 12 hours', '2026-01-01', '2026-01-04')), 2, 'a bucket with day and time parts works');

-- nps_failed_payments(window), nps_alerts(window)
SELECT throws_ok($$SELECT * FROM nps_failed_payments('1 mon -30 days 1 microsecond')$$, '22023', NULL, 'nps_failed_payments window with a negative part: 22023');
SELECT throws_ok($$SELECT * FROM nps_failed_payments('2 mon -59 days')$$, '22023', NULL, 'nps_failed_payments window 2 mon -59 days: 22023');
SELECT throws_ok($$SELECT * FROM nps_failed_payments('200 years')$$, '22023', NULL, 'nps_failed_payments window over 100 years: 22023');
SELECT lives_ok($$SELECT * FROM nps_failed_payments('1 mon')$$, 'nps_failed_payments(1 mon) works');
SELECT throws_ok($$SELECT * FROM nps_alerts('1 mon -30 days 1 microsecond', 10)$$, '22023', NULL, 'nps_alerts window with a negative part: 22023');
SELECT throws_ok($$SELECT * FROM nps_alerts('7 days -1 microsecond', 10)$$, '22023', NULL, 'nps_alerts window 7 days -1 microsecond: 22023');
SELECT throws_ok($$SELECT * FROM nps_alerts('1000 years', 10)$$, '22023', NULL, 'nps_alerts window over 100 years: 22023');
SELECT lives_ok($$SELECT * FROM nps_alerts('1 mon', 10)$$, 'nps_alerts(1 mon) works');

-- payment_source policy intervals: CHECK constraints
SELECT throws_ok($$UPDATE payment_source SET delay = '1 mon -31 days' WHERE name = 'iv'$$, '23514', NULL, 'delay 1 mon -31 days: 23514');
SELECT throws_ok($$UPDATE payment_source SET delay = '-1 hour' WHERE name = 'iv'$$, '23514', NULL, 'negative delay: 23514');
SELECT throws_ok($$UPDATE payment_source SET delay = '2 years' WHERE name = 'iv'$$, '23514', NULL, 'delay over a year: 23514');
SELECT throws_ok($$UPDATE payment_source SET throttle = '1000 years -359999 days' WHERE name = 'iv'$$, '23514', NULL, 'throttle 1000 years -359999 days: 23514');
SELECT throws_ok($$UPDATE payment_source SET throttle = '-1 day' WHERE name = 'iv'$$, '23514', NULL, 'negative throttle: 23514');
SELECT throws_ok($$UPDATE payment_source SET expires_after = '0' WHERE name = 'iv'$$, '23514', NULL, 'expires_after 0: 23514');
SELECT throws_ok($$UPDATE payment_source SET expires_after = '1 mon -30 days 1 second' WHERE name = 'iv'$$, '23514', NULL, 'expires_after with a negative part: 23514');
SELECT throws_ok($$INSERT INTO payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr, delay)
                   VALUES ('iv2', 'iv_pay', 'x', 'y', 'z', '1 day -25 hours')$$, '23514', NULL, 'a new source with a backwards delay: 23514');
SELECT lives_ok($$UPDATE payment_source SET delay = '0', throttle = '0', expires_after = '1 mon' WHERE name = 'iv'$$, 'zero delay and throttle, a month of expiry are accepted');
SELECT ok(interval_within('1 mon 2 days 03:04:05', '0', '1 year') AND NOT interval_within('1 mon -1 second', '0', '1 year')
          AND NOT interval_within(NULL, '0', '1 year'), 'interval_within: non-negative parts only, NULL is not within');
SELECT * FROM finish();
ROLLBACK;
