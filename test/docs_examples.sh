#!/bin/sh
# The SQL examples of README.md and docs/*.md run as documented. In each page, every ```sql
# block preceded by a `<!-- test -->` line runs, in page order, in one fresh database per page
# (CREATE EXTENSION nps_billing first) and one psql session, with ON_ERROR_STOP. A block marked
# `<!-- test: error -->` must raise an error instead (the page goes on after it). When the next
# fenced block is ```text, the block's psql output (aligned, no row-count footer, errors
# included) must equal it; trailing spaces and blank lines are ignored. A page with a
# `<!-- test-continues: docs/x.md -->` line runs the examples of docs/x.md first, in the same
# session. A block marked `<!-- same-as: path -->` is not run: its text must appear verbatim in
# that file (the test or example that runs it). Runs against the cluster of the environment (PGHOST/PGPORT, e.g. inside
# scripts/run-tests.sh's pg_virtualenv); prints one "ok"/"not ok" line per page.
set -u
cd "$(dirname "$0")/.."
work=$(mktemp -d)
db=nps_docs_$$
cleanup() { psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
failed=0

# Split a page into $dir/NNN.sql (+ NNN.mode, NNN.line, NNN.expected). Fences may be indented
# (inside a list); the indentation of the opening fence is removed from the block's lines.
extract() {
  awk -v dir="$2" '
    {
      line = $0
      if (!infence) {
        if (line ~ /^[ \t]*<!-- test(: error)? -->[ \t]*$/) {
          mode = (line ~ /error/) ? "error" : "run"; pending = 1; next
        }
        if (line ~ /^[ \t]*<!-- same-as: [^ ]+ -->[ \t]*$/) {
          mode = "same"; path = line; sub(/^[ \t]*<!-- same-as: /, "", path); sub(/ -->.*$/, "", path)
          pending = 1; next
        }
        if (match(line, /^[ \t]*```/)) {
          indent = RLENGTH - 3
          lang = substr(line, RLENGTH + 1); gsub(/[ \t]/, "", lang)
          infence = 1
          if (pending && lang == "sql") {
            n++; cur = sprintf("%s/%03d", dir, n); kind = "sql"
            printf "%s\n", mode > (cur ".mode"); close(cur ".mode")
            if (mode == "same") { printf "%s\n", path > (cur ".path"); close(cur ".path") }
            printf "%d\n", NR > (cur ".line"); close(cur ".line")
            printf "" > (cur ".sql")
          } else if (lang == "text" && lastsql != "") {
            cur = lastsql; kind = "text"; printf "" > (cur ".expected")
          } else { kind = "skip" }
          pending = 0; lastsql = ""
          next
        }
        if (line !~ /^[ \t]*$/) { lastsql = ""; if (pending) pending = 0 }
        next
      }
      if (match(line, /^[ \t]*```[ \t]*$/)) {
        infence = 0
        if (kind == "sql") { lastsql = cur; close(cur ".sql") }
        if (kind == "text") close(cur ".expected")
        next
      }
      if (indent > 0 && substr(line, 1, indent) ~ /^[ ]*$/) line = substr(line, indent + 1)
      if (kind == "sql") print line >> (cur ".sql")
      else if (kind == "text") print line >> (cur ".expected")
    }' "$1"
}

# Compared: the lines, without trailing spaces, blank lines, psql's "psql:file:line: " prefix
# and the "CONTEXT:  PL/pgSQL function ... line N" lines of errors raised in PL/pgSQL functions.
normalize() {
  sed -e 's/[ \t]*$//' -e 's/^psql:[^:]*:[0-9]*: //' "$1" | grep -v -e '^$' -e '^CONTEXT:  PL/pgSQL function ' -e '^PL/pgSQL function '
}

for page in README.md docs/*.md; do
  # NPS_DOCS_SKIP="docs/x.md ...": pages whose shown outputs are not checked in this run (said
  # so in the output; make test-matrix uses it for outputs taken from PostgreSQL 15 data).
  case " ${NPS_DOCS_SKIP:-} " in *" $page "*) echo "# skip - docs examples: $page (NPS_DOCS_SKIP)"; continue;; esac
  dir="$work/$(echo "$page" | tr '/.' '__')"; mkdir -p "$dir"
  extract "$page" "$dir"
  blocks=$(ls "$dir"/*.sql 2>/dev/null | wc -l)
  [ "$blocks" -eq 0 ] && continue
  # A page whose examples continue another page's (`<!-- test-continues: docs/x.md -->`) runs
  # that page's blocks first, in the same session, without comparing their output.
  pre=$(sed -n 's/^<!-- test-continues: \([^ ]*\) -->$/\1/p' "$page" | head -1)
  : >"$dir/page.psql"
  if [ -n "$pre" ]; then
    mkdir -p "$dir/pre"; extract "$pre" "$dir/pre"
    for sql in "$dir"/pre/*.sql; do
      b=${sql%.sql}
      [ "$(cat "$b.mode")" = same ] && continue
      if [ "$(cat "$b.mode")" = error ]; then stop=0; else stop=1; fi
      printf '%s\n' "\\set ON_ERROR_STOP $stop"
      cat "$sql"; printf '\n'
    done >>"$dir/page.psql"
  fi
  # One session per page, as a reader would type it: settings and psql variables carry over.
  for sql in "$dir"/*.sql; do
    b=${sql%.sql}
    [ "$(cat "$b.mode")" = same ] && continue
    printf '%s\n' "\\echo @@block $(basename "$b")@@"
    if [ "$(cat "$b.mode")" = error ]; then stop=0; else stop=1; fi
    printf '%s\n' "\\set ON_ERROR_STOP $stop"
    cat "$sql"; printf '\n'
  done >>"$dir/page.psql"
  psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
  psql -qX -v ON_ERROR_STOP=1 -d "$db" -c 'CREATE EXTENSION nps_billing' >/dev/null
  PGDATABASE=$db psql -qX -P footer=off -v ON_ERROR_STOP=1 -f "$dir/page.psql" >"$dir/page.out" 2>&1; rc=$?
  awk -v dir="$dir" '/^@@block [0-9]+@@$/ { f = dir "/" substr($2, 1, 3) ".out"; printf "" > f; next }
                     f != "" { print >> f }' "$dir/page.out"
  bad=""
  for sql in "$dir"/*.sql; do
    b=${sql%.sql}; at="$page:$(cat "$b.line")"
    if [ "$(cat "$b.mode")" = same ]; then
      # A recipe the page says a test or example file runs: its text is in that file verbatim
      # (whitespace runs collapsed, a final semicolon optional).
      src=$(cat "$b.path")
      if ! tr -s ' \t\n' '   ' <"$src" | grep -qF -- "$(tr -s ' \t\n' '   ' <"$sql" | sed 's/[ ;]*$//')"; then
        bad="$at: not found verbatim in $src"; break
      fi
      continue
    fi
    if [ ! -f "$b.out" ]; then bad="$at: not reached"; break; fi
    if [ "$(cat "$b.mode")" = error ]; then
      grep -q 'ERROR:' "$b.out" || { bad="$at: expected an error, got none"; break; }
    elif grep -q 'ERROR:' "$b.out"; then
      bad="$at: $(grep -m1 'ERROR:' "$b.out" | sed 's/^psql:[^:]*:[0-9]*: //')"; break
    fi
    if [ -f "$b.expected" ]; then
      normalize "$b.expected" >"$b.want"; normalize "$b.out" >"$b.got"
      if ! diff -u "$b.want" "$b.got" >"$b.diff"; then
        [ -n "${NPS_DOCS_KEEP:-}" ] && cp "$b.out" "$NPS_DOCS_KEEP/$(basename "$dir")-$(basename "$b").out"
        bad="$at: output differs from the page"; cat "$b.diff"; break
      fi
    fi
  done
  [ -z "$bad" ] && [ $rc -ne 0 ] && bad="psql exited $rc"
  if [ -n "$bad" ]; then echo "not ok - docs examples: $bad"; failed=1
  else echo "ok - docs examples: $page ($blocks blocks)"; fi
done
exit $failed
