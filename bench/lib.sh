# Helpers for bench/p*.sh: time SQL statements with psql and take medians.
# ms "SQL" -> elapsed milliseconds of one execution (client-side timing of the statement).
ms() {
  psql -qAtX -c '\timing on' -c "$1" 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
# row ID "measurement" RATIO "<= 1.10" -> prints a result row; met is yes/no by the comparison
row() {
  met=$(awk -v r="$3" -v t="$4" 'BEGIN { split(t, p, " "); v = p[2] + 0;
        if (p[1] == "<=") print (r <= v ? "yes" : "NO"); else if (p[1] == ">=") print (r >= v ? "yes" : "NO"); else print "-" }')
  echo "$1|$2|$3|$4|$met"
}
