#!/bin/sh
# P1-P5: NPS aggregates against count()/sum() and the hand-written formula, side by side.
. "$(dirname "$0")/lib.sh"
ROWS=${NPS_BENCH_ROWS:-10000000}
REPS=${NPS_BENCH_REPS:-9}
psql -qX >/dev/null <<SQL
DROP TABLE IF EXISTS bench_scores, bench_window;
CREATE TABLE bench_scores AS
  SELECT (random() * 10)::int AS score, random() * 100 AS weight FROM generate_series(1, $ROWS);
CREATE TABLE bench_window AS
  SELECT g AS id, (random() * 10)::int AS score FROM generate_series(1, 1000000) g;
VACUUM ANALYZE bench_scores; VACUUM ANALYZE bench_window;
SQL
serial='SET max_parallel_workers_per_gather = 0; SET search_path = nps_billing, public;'
par='SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0; SET search_path = nps_billing, public;'
formula='100.0 * (count(*) FILTER (WHERE score >= 9) - count(*) FILTER (WHERE score <= 6)) / count(score)'
# warm the cache
ms "$serial SELECT count(score) FROM bench_scores" >/dev/null
tmp=$(mktemp -d)
# Each ratio is taken within one repetition, between runs next to each other (the order of the
# pair alternates from one repetition to the next), and the median of those ratios is printed:
# on a shared 2-core VM a whole query's time drifts by 10-20% from minute to minute, which
# medians of separate series do not cancel.
pair() { # name sql_a sql_b: appends a/b of this repetition to $tmp/name, a and b to their files
  if [ $((i % 2)) -eq 0 ]; then a=$(ms "$2"); b=$(ms "$3"); else b=$(ms "$3"); a=$(ms "$2"); fi
  echo "$a" >>"$tmp/$1.a"; echo "$b" >>"$tmp/$1.b"; echo "$(ratio "$a" "$b")" >>"$tmp/$1"
}
i=0
while [ $i -lt "$REPS" ]; do
  pair p1 "$serial SELECT nps(score) FROM bench_scores" "$serial SELECT count(score) FROM bench_scores"
  pair p2 "$serial SELECT $formula FROM bench_scores" "$serial SELECT nps(score) FROM bench_scores"
  pair p3 "$serial SELECT nps(score, weight) FROM bench_scores" "$serial SELECT sum(weight) FROM bench_scores"
  # P4: serial/parallel of nps over serial/parallel of count, all four in this repetition
  pair p4n "$serial SELECT nps(score) FROM bench_scores" "$par SELECT nps(score) FROM bench_scores"
  pair p4c "$serial SELECT count(score) FROM bench_scores" "$par SELECT count(score) FROM bench_scores"
  echo "$(ratio "$(tail -1 "$tmp/p4n")" "$(tail -1 "$tmp/p4c")")" >>"$tmp/p4"
  pair p5 "$serial SELECT sum(x) FROM (SELECT nps(score) OVER (ORDER BY id ROWS BETWEEN 999 PRECEDING AND CURRENT ROW) x FROM bench_window) s" \
          "$serial SELECT sum(x) FROM (SELECT count(score) OVER (ORDER BY id ROWS BETWEEN 999 PRECEDING AND CURRENT ROW) x FROM bench_window) s"
  i=$((i + 1))
done
for f in p1 p2 p3 p4n p4c p4 p5; do echo "# $f per repetition: $(tr '\n' ' ' <"$tmp/$f")" >&2; done
echo "# medians ms: nps $(median <"$tmp/p1.a"), count $(median <"$tmp/p1.b"), formula $(median <"$tmp/p2.a"), nps(score, weight) $(median <"$tmp/p3.a"), sum(weight) $(median <"$tmp/p3.b"), parallel nps $(median <"$tmp/p4n.b"), parallel count $(median <"$tmp/p4c.b"), window nps $(median <"$tmp/p5.a"), window count $(median <"$tmp/p5.b")" >&2
row P1 "nps(score) vs count(score), $ROWS rows, serial" "$(median <"$tmp/p1")" "<= 1.10"
row P2 "SQL formula vs nps(score) (formula is slower by)" "$(median <"$tmp/p2")" ">= 1.15"
row P3 "nps(score, weight) vs sum(weight)" "$(median <"$tmp/p3")" "<= 1.25"
row P4 "parallel speed-up nps ($(median <"$tmp/p4n") x) / count ($(median <"$tmp/p4c") x), 2 workers" "$(median <"$tmp/p4")" ">= 0.90"
row P5 "window of 1000 rows over 1M rows: nps vs count" "$(median <"$tmp/p5")" "<= 1.5"
rm -rf "$tmp"
psql -qX -c 'DROP TABLE bench_scores, bench_window' >/dev/null
