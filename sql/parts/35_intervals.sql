-- Interval arguments are checked for what they do to a time, not by comparing them with another
-- interval: interval comparison counts a month as 30 days and lets parts of opposite signs cancel,
-- so '1000 years -359999 days' compares equal to '1 day' but adds 5,243 days to now(), and
-- '1 mon -30 days 1 microsecond' compares as positive but moves 31 January back to 30 January.
--
-- interval_within(i, lo, hi): no part of i (months, days, time) is negative, so adding i moves
-- every time forward or nowhere (and subtracting it, backward or nowhere), from any start; and
-- lo <= i <= hi. For such an interval the comparison bounds are within a day of the real span
-- (a month is 28..31 days, a day 23..25 hours across a DST change). Every function taking an
-- interval and the policy columns of payment_source use it. IMMUTABLE: CHECK constraints may.
CREATE FUNCTION @extschema@.interval_within(i interval, lo interval, hi interval) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT i IS NOT NULL AND isfinite(i)
         -- year/month come from the months part, hour/minute/second from the time part; each
         -- keeps its part's sign (truncating division), so one negative part shows here
         AND least(extract(year FROM i), extract(month FROM i), extract(day FROM i),
                   extract(hour FROM i), extract(minute FROM i), extract(second FROM i)) >= 0
         AND i >= lo AND i <= hi
$$;
COMMENT ON FUNCTION @extschema@.interval_within(interval, interval, interval) IS
  'true when no part (months, days, time) of the interval is negative and lo <= i <= hi: adding it moves any time forward, by about that much';
