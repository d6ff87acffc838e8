-- Send windows: send_window_next() across DST changes, at the boundaries, per zone; and the
-- errors of the window columns. Times are printed in UTC and in the window's zone.
SET TimeZone = 'UTC';
SET search_path = nps_billing, public;
-- Mon-Fri 09:00-17:00 in Europe/Berlin around the spring change (Sun 2026-03-29, 02:00 CET ->
-- 03:00 CEST) and the autumn one (Sun 2026-10-25, 03:00 CEST -> 02:00 CET).
SELECT t, n AS next_send_at, n AT TIME ZONE 'Europe/Berlin' AS local, n = t AS inside
  FROM (VALUES (timestamptz '2026-03-27 07:59:59.999999+00'),  -- Fri 08:59:59.999999 CET: just before
               ('2026-03-27 08:00:00+00'),                     -- Fri 09:00 CET: the opening is inside
               ('2026-03-27 15:59:59+00'),                     -- Fri 16:59:59 CET: inside
               ('2026-03-27 16:00:00+00'),                     -- Fri 17:00 CET: closed (half-open)
               ('2026-03-28 12:00:00+00'),                     -- Saturday
               ('2026-03-29 12:00:00+00'),                     -- Sunday, the change day
               ('2026-03-30 06:59:59+00'),                     -- Mon 08:59:59 CEST
               ('2026-03-30 15:00:00+00'),                     -- Mon 17:00 CEST: closed
               ('2026-10-23 14:30:00+00'),                     -- Fri 16:30 CEST: inside
               ('2026-10-23 15:00:00+00'),                     -- Fri 17:00 CEST: to Monday 09:00 CET
               ('2026-10-26 07:59:00+00'),                     -- Mon 08:59 CET
               ('2026-10-26 15:59:00+00')) v(t)                -- Mon 16:59 CET: inside
 CROSS JOIN LATERAL (SELECT send_window_next(v.t, 'Europe/Berlin', '{1,2,3,4,5}', '09:00', '17:00') AS n) x
 ORDER BY t;
-- Every day 09:00-17:00 in America/New_York across its changes (2026-03-08, 2026-11-01): the
-- window is 8 hours of UTC on each side, the opening moves by an hour.
SELECT d::date AS day, n AS opens, n AT TIME ZONE 'America/New_York' AS local,
       (send_window_next(n + interval '8 hours', 'America/New_York', '{1,2,3,4,5,6,7}', '09:00', '17:00') - n) AS until_next
  FROM generate_series(timestamptz '2026-03-07 05:00+00', '2026-03-09 05:00+00', interval '1 day') d
 CROSS JOIN LATERAL (SELECT send_window_next(d, 'America/New_York', '{1,2,3,4,5,6,7}', '09:00', '17:00') AS n) x
UNION ALL
SELECT d::date, n, n AT TIME ZONE 'America/New_York',
       (send_window_next(n + interval '8 hours', 'America/New_York', '{1,2,3,4,5,6,7}', '09:00', '17:00') - n)
  FROM generate_series(timestamptz '2026-10-31 05:00+00', '2026-11-02 05:00+00', interval '1 day') d
 CROSS JOIN LATERAL (SELECT send_window_next(d, 'America/New_York', '{1,2,3,4,5,6,7}', '09:00', '17:00') AS n) x
 ORDER BY 1;
-- A window from 02:30 on the night Berlin skips 02:00-03:00: the bound is read as PostgreSQL
-- reads that local time (standard time: 03:30 summer time).
SELECT send_window_next('2026-03-28 23:00+00', 'Europe/Berlin', '{7}', '02:30', '04:00') AT TIME ZONE 'Europe/Berlin' AS opens_local;
-- The same moment in zones a day apart; unknown zones; a window of one weekday
SELECT z, send_window_next('2026-06-01 12:00+00', z, '{1}', '09:00', '10:00') AS next_send_at
  FROM (VALUES ('Pacific/Kiritimati'), ('Pacific/Pago_Pago'), ('UTC'), ('Asia/Kolkata')) v(z) ORDER BY z;
SELECT left(z, 20) AS z, length(z), time_zone_ok(z) FROM (VALUES ('Europe/Berlin'), ('europe/berlin'), ('UTC'), ('Mars/Olympus'), (''), (repeat('x', 300))) v(z) ORDER BY z COLLATE "C";
SELECT send_window_next('2026-06-01 12:00+00', 'Mars/Olympus', '{1}', '09:00', '10:00');  -- 22023, the zone not echoed
SELECT send_window_next('infinity', 'UTC', '{1}', '09:00', '10:00'), send_window_next(NULL, 'UTC', '{1}', '09:00', '10:00');
SELECT send_zone('Asia/Tokyo', 'Europe/Berlin'), send_zone('Mars/Olympus', 'Europe/Berlin'), send_zone(NULL, NULL);
SELECT next_local_midnight('2026-03-28 23:30+00', 'Europe/Berlin') AS berlin_after_spring_change_day;
-- the window columns refuse what they cannot mean
\set VERBOSITY terse
CREATE TABLE sw_pay (id int);
INSERT INTO payment_source (name, relid, customer_expr, payment_key_expr, succeeded_expr)
VALUES ('sw', 'sw_pay', 'x', 'y', 'z');
UPDATE payment_source SET time_zone = 'Mars/Olympus' WHERE name = 'sw';
UPDATE payment_source SET send_days = '{0,1}' WHERE name = 'sw';
UPDATE payment_source SET send_days = '{}' WHERE name = 'sw';
UPDATE payment_source SET send_from = '17:00', send_until = '09:00' WHERE name = 'sw';
UPDATE payment_source SET reminders = 11 WHERE name = 'sw';
UPDATE payment_source SET reminder_after = '30 seconds' WHERE name = 'sw';
UPDATE payment_source SET daily_cap = -1 WHERE name = 'sw';
UPDATE payment_source SET time_zone = 'America/Sao_Paulo', send_days = '{1,2,3,4,5}', send_from = '08:30',
       send_until = '18:00', reminders = 2, reminder_after = '2 days', daily_cap = 500 WHERE name = 'sw'
RETURNING time_zone, send_days, send_from, send_until, reminders, reminder_after, daily_cap;
DELETE FROM payment_source WHERE name = 'sw';
DROP TABLE sw_pay;
