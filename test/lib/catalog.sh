# Sourced by test/upgrade.sh. catalog_diff <expected-db> <db> <out>: compares what the extension
# owns in two databases in two independent ways and writes unified diffs to <out>; returns 0 when
# both agree.
#  1. test/lib/catalog.sql: every member object and each of its properties from the catalogs
#     (columns in order, types, defaults, constraints, indexes, triggers, functions and their
#     bodies and settings, aggregates, types, operators, comments, ACLs, initial privileges,
#     pg_extension_config_dump, objects left in the schema that are not members).
#  2. pg_dump --schema-only --binary-upgrade, the mode pg_upgrade uses, which (unlike a normal
#     dump) writes the extension's member objects one by one; entries of other schemas (the
#     user's objects) and the oids/xids/LSNs a dump of two clusters never shares are removed.
catalog_lines() { psql -qAtX -v ON_ERROR_STOP=1 -d "$1" -f test/lib/catalog.sql; }
catalog_dump() { pg_dump --schema-only --binary-upgrade -d "$1" 2>&1; }
catalog_normalise() {
  awk '
    /^-- (Name|Data for Name): / { keep = ($0 !~ /; Schema: public; / && $0 !~ /; Type: (STATISTICS DATA|SEQUENCE SET); /) }
    NR == 1 || /^-- PostgreSQL database dump complete/ { keep = 1 }
    keep' |
  sed -e '/^\\\(un\)\{0,1\}restrict /d' \
      -e '/binary_upgrade_set_next_/d' \
      -e "s/relfrozenxid = '[0-9]*', relminmxid = '[0-9]*'/relfrozenxid = N, relminmxid = N/" \
      -e "s/WHERE oid = '[0-9]*';/WHERE oid = N;/" \
      -e "s/\(binary_upgrade_create_empty_extension('[^']*', '[^']*', [a-z]*, '[^']*', \)'{[0-9,]*}'/\1'{oids}'/"
}
catalog_diff() {
  _a=$(mktemp); _b=$(mktemp); _s=0
  : >"$3"
  if catalog_lines "$1" >"$_a" 2>>"$3" && catalog_lines "$2" >"$_b" 2>>"$3" && [ -s "$_a" ]; then
    diff -U 0 "$_a" "$_b" >>"$3" || _s=1
  else echo "catalog query failed" >>"$3"; _s=2; fi
  catalog_dump "$1" | catalog_normalise >"$_a"; catalog_dump "$2" | catalog_normalise >"$_b"
  if [ ! -s "$_a" ] || [ ! -s "$_b" ]; then echo "pg_dump failed" >>"$3"; _s=2
  elif ! diff -U 3 "$_a" "$_b" >>"$3"; then _s=1; fi
  rm -f "$_a" "$_b"
  return $_s
}
catalog_summary() {
  psql -qAtX -d "$1" -c "SELECT count(*) || ' members, ' || (SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                           WHERE c.relnamespace = 'nps_billing'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped) || ' columns'
                         FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
                           AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'nps_billing')"
}
