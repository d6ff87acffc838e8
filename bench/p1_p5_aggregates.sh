#!/bin/sh
# P1-P5: NPS aggregates against count()/sum() and the hand-written formula, side by side.
. "$(dirname "$0")/lib.sh"
ROWS=${NPS_BENCH_ROWS:-10000000}
REPS=${NPS_BENCH_REPS:-5}
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
i=0
while [ $i -lt "$REPS" ]; do
  ms "$serial SELECT count(score) FROM bench_scores" >>"$tmp/count"
  ms "$serial SELECT nps(score) FROM bench_scores" >>"$tmp/nps"
  ms "$serial SELECT $formula FROM bench_scores" >>"$tmp/formula"
  ms "$serial SELECT sum(weight) FROM bench_scores" >>"$tmp/sum"
  ms "$serial SELECT nps(score, weight) FROM bench_scores" >>"$tmp/wnps"
  ms "$par SELECT count(score) FROM bench_scores" >>"$tmp/pcount"
  ms "$par SELECT nps(score) FROM bench_scores" >>"$tmp/pnps"
  ms "$serial SELECT sum(x) FROM (SELECT count(score) OVER (ORDER BY id ROWS BETWEEN 999 PRECEDING AND CURRENT ROW) x FROM bench_window) s" >>"$tmp/wcount"
  ms "$serial SELECT sum(x) FROM (SELECT nps(score) OVER (ORDER BY id ROWS BETWEEN 999 PRECEDING AND CURRENT ROW) x FROM bench_window) s" >>"$tmp/wwnps"
  i=$((i + 1))
done
for f in count nps formula sum wnps pcount pnps wcount wwnps; do eval "m_$f=$(median <"$tmp/$f")"; echo "# median $f: $(eval echo \$m_$f) ms" >&2; done
row P1 "nps(score) vs count(score), $ROWS rows, serial" "$(ratio "$m_nps" "$m_count")" "<= 1.10"
row P2 "SQL formula vs nps(score) (formula is slower by)" "$(ratio "$m_formula" "$m_nps")" ">= 1.15"
row P3 "nps(score, weight) vs sum(weight)" "$(ratio "$m_wnps" "$m_sum")" "<= 1.25"
sp_count=$(ratio "$m_count" "$m_pcount"); sp_nps=$(ratio "$m_nps" "$m_pnps")
row P4 "parallel speed-up nps ($sp_nps x) / count ($sp_count x), 2 workers" "$(ratio "$sp_nps" "$sp_count")" ">= 0.90"
row P5 "window of 1000 rows over 1M rows: nps vs count" "$(ratio "$m_wwnps" "$m_wcount")" "<= 1.5"
rm -rf "$tmp"
psql -qX -c 'DROP TABLE bench_scores, bench_window' >/dev/null
