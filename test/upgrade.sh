#!/bin/sh
# Upgrade from the previous release: install it exactly as released, fill it as a user would
# (test/upgrade_fill.sql), run ALTER EXTENSION nps_billing UPDATE, and check that
#   - the current shared library served the old database before the update (aggregates, capture),
#   - no row of the extension's tables, the user's tables or the user's views changed,
#   - the user's objects and grants survive (no CASCADE needed) and still work,
#   - capture and the queue carry on (new payment captured, survey claimed, sent, answered),
#   - the updated catalog equals a fresh install (test/upgrade_catalog.sh), and that comparison
#     notices a changed comment, default, column, volatility, grant or constraint.
# Runs against the cluster of the environment (scripts/run-tests.sh's pg_virtualenv); prints
# "ok"/"not ok" lines with a diff for each difference; exits non-zero on any failure.
set -u
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
cd "$(dirname "$0")/.."
old=${NPS_UPGRADE_FROM:-0.1}
new=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" nps_billing.control)
upd=nps_upg_updated_$$; fresh=nps_upg_fresh_$$; probe=nps_upg_probe_$$
tmp=$(mktemp -d); status=0
role=nps_upgrade_analyst
cleanup() {
  for d in "$upd" "$fresh" "$probe" "${probe}_x"; do psql -qX -d postgres -c "DROP DATABASE IF EXISTS $d" >/dev/null 2>&1; done
  psql -qX -d postgres -c "DROP ROLE IF EXISTS $role" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
q() { psql -qAtX -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
ok() { echo "ok - $1"; }
notok() { echo "not ok - $1"; status=1; }
# show <file>: a diff or an error, indented so the runner's line counting ignores it
show() { head -n 150 "$1" | sed 's/^/#   /'; }
. test/lib/catalog.sh

psql -qX -d postgres -c "DROP ROLE IF EXISTS $role" -c "CREATE ROLE $role" >/dev/null
psql -qX -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $upd" -c "CREATE DATABASE $fresh" >/dev/null || exit 1

paths=$(q postgres "SELECT path FROM pg_extension_update_paths('nps_billing') WHERE source = '$old' AND target = '$new'")
if [ -n "$paths" ]; then ok "update path $old -> $new: $paths"; else notok "no update path from $old to $new"; fi

# --- the previous release, filled with the current shared library ---------------------------
if ! psql -qX -v ON_ERROR_STOP=1 -d "$upd" -c "CREATE EXTENSION nps_billing VERSION '$old'" >"$tmp/err" 2>&1; then
  notok "CREATE EXTENSION nps_billing VERSION '$old'"; show "$tmp/err"; exit 1
fi
if psql -qX -d "$upd" -f test/upgrade_fill.sql >"$tmp/err" 2>&1; then
  ok "a $old database filled with the $new library (capture, queue, responses, user objects)"
else
  if grep -q 'ALTER EXTENSION nps_billing UPDATE' "$tmp/err"; then
    notok "the $new library refuses the $old database (clearly, but the fill cannot go on)"
  else
    notok "the $new library fails on a $old database without saying to run ALTER EXTENSION nps_billing UPDATE"
  fi
  show "$tmp/err"; exit 1
fi
# aggregates of the old catalog on the new library equal the SQL formula
a=$(q "$upd" "SELECT nps_billing.nps(s::smallint)::numeric(12,6) || ' ' || nps_billing.nps(nps_billing.rollup(x))::numeric(12,6)
              FROM (SELECT g % 11 AS s, nps_billing.nps_agg(g % 11) AS x FROM generate_series(1, 1000) g GROUP BY g) t")
f=$(q "$upd" "SELECT v || ' ' || v FROM (SELECT (100.0 * (count(*) FILTER (WHERE g % 11 >= 9) - count(*) FILTER (WHERE g % 11 <= 6)) / count(*))::numeric(12,6) AS v
              FROM generate_series(1, 1000) g) t")
if [ "$a" = "$f" ]; then ok "$old aggregates on the $new library equal the formula ($a)"; else notok "$old aggregates on the $new library: $a, formula $f"; fi
c=$(q "$upd" "SELECT count(*) FILTER (WHERE survey_id IS NOT NULL) || '/' || count(*) FROM nps_billing.payment_event")
st=$(q "$upd" "SELECT string_agg(status || '=' || n, ' ' ORDER BY status) FROM (SELECT status, count(*) n FROM nps_billing.survey GROUP BY 1) s")
want='cancelled=1 expired=3 failed=2 pending=15 responded=8 sending=5 sent=7'
if [ "$c" = "41/82" ] && [ "$st" = "$want" ]; then ok "$old capture on the $new library: $c events with a survey; $st"
else notok "$old capture on the $new library: events with survey/all $c (want 41/82); surveys $st (want $want)"; fi

user_schema() { pg_dump --schema-only -n public -d "$upd" | sed '/^\\\(un\)\{0,1\}restrict /d'; }
# --- snapshot: every table of the old catalog (its columns), the user's tables and views -------
snapshot() {  # snapshot <db> <out>: one line per relation, count and md5 of its rows on the old columns
  psql -qAtX -v ON_ERROR_STOP=1 -d "$1" -f "$tmp/snap.sql" >"$2" 2>&1
}
q "$upd" "SELECT format('SELECT %L || '' '' || count(*) || '' '' || coalesce(md5(string_agg(t::text, ''|'' ORDER BY t::text)), ''-'') FROM (SELECT %s FROM %s) t;',
                        c.oid::regclass::text, string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum), c.oid::regclass::text)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          WHERE n.nspname IN ('nps_billing', 'public') AND c.relkind IN ('r', 'v', 'p')
            -- the update binds the capture expressions (checked below); every other column is kept
            AND NOT (c.oid = 'nps_billing.payment_source'::regclass AND a.attname LIKE '%\_expr')
          GROUP BY c.oid ORDER BY c.oid::regclass::text" >"$tmp/snap.sql"
exprs_before=$(q "$upd" "SELECT string_agg(concat_ws('|', name, customer_expr, payment_key_expr, succeeded_expr, failed_expr,
                  amount_expr, currency_expr, paid_at_expr, attributes_expr), ';' ORDER BY id) FROM nps_billing.payment_source")
q "$upd" "SELECT format('SELECT %L || '' '' || last_value || '' '' || is_called FROM %s;', c.oid::regclass::text, c.oid::regclass::text)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname IN ('nps_billing', 'public') AND c.relkind = 'S' ORDER BY 1" >>"$tmp/snap.sql"
snapshot "$upd" "$tmp/before"
user_schema >"$tmp/userobjs_before"
q "$upd" "SELECT c.oid::regclass || ' ' || array_to_string(c.relacl, ',') FROM pg_class c WHERE c.relacl IS NOT NULL AND c.relnamespace IN ('nps_billing'::regnamespace, 'public'::regnamespace)
          UNION ALL SELECT p.oid::regprocedure || ' ' || array_to_string(p.proacl, ',') FROM pg_proc p WHERE p.proacl IS NOT NULL AND p.pronamespace IN ('nps_billing'::regnamespace, 'public'::regnamespace)
          UNION ALL SELECT 'schema nps_billing ' || array_to_string(nspacl, ',') FROM pg_namespace WHERE nspname = 'nps_billing'
          ORDER BY 1" | grep "$role" >"$tmp/grants_before"

# --- the update ----------------------------------------------------------------------------
if psql -qX -v ON_ERROR_STOP=1 -d "$upd" -c "ALTER EXTENSION nps_billing UPDATE" >"$tmp/err" 2>&1; then
  v=$(q "$upd" "SELECT extversion FROM pg_extension WHERE extname = 'nps_billing'")
  if [ "$v" = "$new" ]; then ok "ALTER EXTENSION nps_billing UPDATE: $old -> $v with the user's objects in place"
  else notok "ALTER EXTENSION nps_billing UPDATE left version $v, want $new"; fi
else
  notok "ALTER EXTENSION nps_billing UPDATE fails on a filled $old database"; show "$tmp/err"; exit 1
fi
[ -s "$tmp/err" ] && { echo "# the update printed:"; show "$tmp/err"; }

snapshot "$upd" "$tmp/after"
if diff -u "$tmp/before" "$tmp/after" >"$tmp/diff"; then
  ok "nothing lost: $(grep -c . "$tmp/before") relations and sequences keep every row (counts and contents)"
else notok "rows changed by the update (relation count md5 on the $old columns)"; show "$tmp/diff"; fi
exprs_kept=$(q "$upd" "SELECT string_agg(concat_ws('|', name, expressions_as_written->>'customer', expressions_as_written->>'payment_key',
                expressions_as_written->>'succeeded_when', expressions_as_written->>'failed_when', expressions_as_written->>'amount',
                expressions_as_written->>'currency', expressions_as_written->>'paid_at', expressions_as_written->>'attributes'), ';' ORDER BY id)
              FROM nps_billing.payment_source")
bound=$(q "$upd" "SELECT amount_expr FROM nps_billing.payment_source WHERE name = 'shop'")
if [ "$exprs_before" = "$exprs_kept" ] && [ "$bound" = '(((amount_cents)::numeric / 100.0) + ((0 * (1 / amount_cents)))::numeric)' ]; then
  ok "capture expressions are bound by the update, the text as written kept in expressions_as_written"
else notok "capture expressions after the update: kept '$exprs_kept' (was '$exprs_before'), bound amount '$bound'"; fi
user_schema >"$tmp/userobjs_after"
if diff -u "$tmp/userobjs_before" "$tmp/userobjs_after" >"$tmp/diff"; then
  ok "the user's schema is unchanged ($(grep -c '^-- Name: ' "$tmp/userobjs_before") objects: tables with npsagg and domain columns, views over the aggregates and response_context, a BEGIN ATOMIC function, the capture trigger, grants)"
else notok "the user's schema changed (pg_dump -s -n public before/after)"; show "$tmp/diff"; fi
q "$upd" "SELECT c.oid::regclass || ' ' || array_to_string(c.relacl, ',') FROM pg_class c WHERE c.relacl IS NOT NULL AND c.relnamespace IN ('nps_billing'::regnamespace, 'public'::regnamespace)
          UNION ALL SELECT p.oid::regprocedure || ' ' || array_to_string(p.proacl, ',') FROM pg_proc p WHERE p.proacl IS NOT NULL AND p.pronamespace IN ('nps_billing'::regnamespace, 'public'::regnamespace)
          UNION ALL SELECT 'schema nps_billing ' || array_to_string(nspacl, ',') FROM pg_namespace WHERE nspname = 'nps_billing'
          ORDER BY 1" | grep "$role" >"$tmp/grants_after"
if [ -s "$tmp/grants_before" ] && diff -u "$tmp/grants_before" "$tmp/grants_after" >"$tmp/diff"; then
  ok "the analyst's $(grep -c . "$tmp/grants_before") grants survive"
else notok "grants on the extension's objects changed"; show "$tmp/diff"; fi

# --- the answers of 0.1 got their stored context, and the rollups hold them ---------------------
ctx=$(q "$upd" "SELECT count(*) FILTER (WHERE context_at IS NULL) || '/' || count(*)
                     || ' ' || ((SELECT coalesce(nps_billing.rollup(agg)::text, '') FROM nps_billing.rollup_segment)
                                = (SELECT coalesce(nps_billing.nps_agg(score)::text, '') FROM nps_billing.response))
                     || ' ' || (SELECT count(*) FROM nps_billing.response r
                                 CROSS JOIN LATERAL nps_billing.context_of(r.customer_id, r.survey_id, r.responded_at, r.survey_event_id) c
                                 WHERE (r.payment_event_id, r.days_since_payment, r.failed_payment_30d, r.payment_dimensions)
                                       IS DISTINCT FROM (c.payment_event_id, c.days_since_payment, c.failed_payment_30d, c.payment_dimensions))
                     || ' ' || (SELECT count(*) FROM nps_billing.customer_latest_answer)
                     || ' ' || ((SELECT coalesce(sum(surveys), 0) FROM nps_billing.survey_funnel_day)
                                = (SELECT count(*) FROM nps_billing.survey))
                FROM nps_billing.response" 2>&1)
case "$ctx" in
  0/*" true 0 "*" true") ok "the update stored the context of every 0.1 answer and filled the rollups (${ctx%% *} without context)";;
  *) notok "stored contexts / rollups after the update: $ctx";;
esac
# --- follow-ups start with the update: the 0.1 answers (recent detractors among them) get none ---
fu=$(q "$upd" "SELECT (SELECT count(*) FROM nps_billing.follow_up) || ' ' || count(*) FROM nps_billing.response
               WHERE category = 'detractor' AND customer_id IS NOT NULL AND responded_at > now() - interval '30 days'" 2>&1)
case "$fu" in
  "0 0"|"0 "*[!0-9]*) notok "follow-ups after the update: $fu (want none, with recent 0.1 detractors to prove it)";;
  "0 "*) ok "the update opens no follow-up for the ${fu#0 } recent 0.1 detractor answers";;
  *) notok "follow-ups after the update: $fu (want none)";;
esac
# ... and the survey times behind survey_funnel's median, and their rollup
times=$(q "$upd" "SELECT count(*) FILTER (WHERE r.answered_after IS NOT NULL) || ' '
                     || count(*) FILTER (WHERE (r.answered_after, r.funnel_at) IS DISTINCT FROM
                          (r.responded_at - s.sent_at, CASE WHEN s.id IS NOT NULL THEN least(s.created_at, r.responded_at) END)) || ' '
                     || ((SELECT coalesce(sum(answers), 0) FROM nps_billing.rollup_answer_delay)
                         = count(*) FILTER (WHERE r.answered_after IS NOT NULL AND r.funnel_at IS NOT NULL))
                FROM nps_billing.response r LEFT JOIN nps_billing.survey s ON s.id = r.survey_id" 2>&1)
case "$times" in
  0" "*) notok "no 0.1 answer got its time to answer after the update: $times";;
  *" 0 true") ok "the update stored the time to answer of the 0.1 answers (${times%% *}) and counted them by delay";;
  *) notok "stored times to answer / delay rollup after the update: $times";;
esac

# --- the user's objects and the whole pipeline work after the update ---------------------------
if psql -qX -v ON_ERROR_STOP=1 -d "$upd" >"$tmp/err" 2>&1 <<'SQL'
DO $$
DECLARE n bigint; sid bigint; tok text; ids bigint[]; old_lease bigint;
BEGIN
  PERFORM * FROM public.nps_overall; PERFORM * FROM public.nps_monthly; PERFORM * FROM public.my_context;
  IF public.score_label(9) <> 'promoter' THEN RAISE EXCEPTION 'score_label(9) = %', public.score_label(9); END IF;
  SELECT nps_billing.responses(nps_billing.rollup(summary)) INTO n FROM public.nps_daily;
  IF n <> 20 * 50 + 10 THEN RAISE EXCEPTION 'rollup over the user''s npsagg column: % responses', n; END IF;
  INSERT INTO public.nps_daily SELECT '2025-03-01', nps_billing.nps_agg(score) FROM public.manual_scores;
  -- capture: one new payment gets a survey, a bulk insert is captured
  INSERT INTO public.payments (customer_id, amount_cents, currency, status, plan) VALUES ('cus_new', 4200, 'usd', 'succeeded', 'pro');
  INSERT INTO public.payments (customer_id, amount_cents, currency, status, plan)
  SELECT 'cus_bulk_' || g, 100, 'usd', 'succeeded', 'basic' FROM generate_series(1, 5) g;
  SELECT count(*) INTO n FROM nps_billing.payment_event WHERE customer_id LIKE 'cus_new' OR customer_id LIKE 'cus_bulk_%';
  IF n <> 6 THEN RAISE EXCEPTION 'capture after the update: % events, want 6', n; END IF;
  SELECT survey_id INTO sid FROM nps_billing.payment_event WHERE customer_id = 'cus_new';
  IF sid IS NULL THEN RAISE EXCEPTION 'capture after the update: no survey for a new customer'; END IF;
  -- the due queue (survey_queue) holds exactly the surveys queued and leased before the update
  -- (and the new ones), each visible when it may be claimed
  SELECT count(*) INTO n FROM nps_billing.survey s FULL JOIN nps_billing.survey_queue q ON q.survey_id = s.id
   WHERE q.visible_at IS DISTINCT FROM nps_billing.queue_visible_at(s.status, s.send_after, s.lease_until);
  IF n <> 0 OR (SELECT count(*) FROM nps_billing.survey_queue) <> 15 + 5 + 6 THEN
    RAISE EXCEPTION 'survey_queue after the update: % rows wrong, % rows (want 0 wrong, 26)', n, (SELECT count(*) FROM nps_billing.survey_queue);
  END IF;
  -- a new worker claims every due survey: those queued before the update and the new one
  SELECT array_agg(c.id) INTO ids FROM nps_billing.claim_surveys('w2', 1000) c;
  IF NOT sid = ANY (ids) THEN RAISE EXCEPTION 'claim after the update did not return the new survey'; END IF;
  IF cardinality(ids) <> 15 + 6 OR EXISTS (SELECT 1 FROM nps_billing.survey WHERE status = 'pending') THEN
    RAISE EXCEPTION 'claim after the update: % surveys, want the 15 pending before it and the 6 new ones', cardinality(ids);
  END IF;
  -- a lease taken before the update runs out: claimed again by another worker, its old owner refused
  SELECT min(id) INTO old_lease FROM nps_billing.survey WHERE status = 'sending' AND lease_owner = 'w1';
  UPDATE nps_billing.survey SET lease_until = now() - interval '1 second' WHERE id = old_lease;
  PERFORM 1 FROM nps_billing.claim_surveys('w3', 10) c WHERE c.id = old_lease AND c.attempts = 2;
  IF NOT FOUND THEN RAISE EXCEPTION 'a lapsed lease of before the update is not claimed again'; END IF;
  IF (SELECT ok FROM nps_billing.mark_sent(ARRAY[old_lease], 'w1')) THEN RAISE EXCEPTION 'the old owner reported a re-claimed survey'; END IF;
  IF NOT (SELECT ok FROM nps_billing.mark_sent(ARRAY[old_lease], 'w3')) THEN RAISE EXCEPTION 'the new owner could not report'; END IF;
  -- the worker that claimed before the update finishes its batch
  SELECT count(*) INTO n FROM nps_billing.survey WHERE status = 'sending' AND lease_owner = 'w1';
  PERFORM nps_billing.mark_sent(id, 'w1') FROM nps_billing.survey WHERE status = 'sending' AND lease_owner = 'w1';
  IF n <> 4 OR EXISTS (SELECT 1 FROM nps_billing.survey WHERE lease_owner = 'w1') THEN
    RAISE EXCEPTION 'the leases of before the update: % reported, want 4', n;
  END IF;
  -- the new survey is sent, the customer answers
  PERFORM nps_billing.mark_sent(sid, 'w2');
  SELECT token INTO tok FROM nps_billing.survey WHERE id = sid;
  PERFORM nps_billing.record_response(tok, 10, 'after the update');
  IF (SELECT status FROM nps_billing.survey WHERE id = sid) <> 'responded' THEN RAISE EXCEPTION 'survey not responded'; END IF;
  SELECT count(*) INTO n FROM public.my_context WHERE score = 10 AND source = 'shop' AND amount = 42;
  IF n <> 1 THEN RAISE EXCEPTION 'the new answer in the user''s view over response_context: % rows', n; END IF;
  -- an answer to a survey sent before the update
  PERFORM nps_billing.record_response(s.token, 6) FROM nps_billing.survey s WHERE s.status = 'sent' AND s.lease_owner IS DISTINCT FROM 'w2' ORDER BY s.id LIMIT 1;
  PERFORM nps_billing.opt_out('cus_new');
  PERFORM nps_billing.expire_surveys();
END $$;
SQL
then ok "after the update: user views, npsagg column, BEGIN ATOMIC function; the due queue holds the surveys queued and leased before it; they are claimed, a lapsed old lease re-claimed, old leases reported; a payment is captured, claimed, sent, answered"
else notok "the updated database does not carry on"; show "$tmp/err"; fi

# --- catalog: updated equals fresh ---------------------------------------------------------
psql -qX -v ON_ERROR_STOP=1 -d "$fresh" >"$tmp/err" 2>&1 <<SQL || { notok "fresh install"; show "$tmp/err"; }
CREATE EXTENSION nps_billing;
GRANT USAGE ON SCHEMA nps_billing TO $role;
GRANT SELECT ON nps_billing.response_context TO $role;
GRANT EXECUTE ON FUNCTION nps_billing.nps_trend(interval, timestamptz, timestamptz) TO $role;
SQL
if catalog_diff "$fresh" "$upd" "$tmp/diff"; then
  ok "updated catalog equals a fresh $new install ($(catalog_summary "$fresh"))"
else notok "updated catalog differs from a fresh $new install (- fresh, + updated)"; show "$tmp/diff"; fi

# --- the comparison is sensitive: each change to a fresh copy is noticed -------------------------
# a template with a fresh install; each change is made in a copy of it
psql -qX -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $probe" >/dev/null
psql -qX -v ON_ERROR_STOP=1 -d "$probe" -c "CREATE EXTENSION nps_billing" -c "GRANT USAGE ON SCHEMA nps_billing TO $role" \
  -c "GRANT SELECT ON nps_billing.response_context TO $role" -c "GRANT EXECUTE ON FUNCTION nps_billing.nps_trend(interval, timestamptz, timestamptz) TO $role" >/dev/null
missed=''
while IFS='|' read -r what change; do
  psql -qX -d postgres -c "CREATE DATABASE ${probe}_x TEMPLATE $probe" >/dev/null
  if q "${probe}_x" "$change" >/dev/null 2>"$tmp/err"; then
    catalog_diff "$fresh" "${probe}_x" "$tmp/diff"; r=$?
    [ $r = 0 ] && missed="$missed; $what"; [ $r = 2 ] && missed="$missed; $what (comparison failed: $(head -1 "$tmp/diff"))"
  else missed="$missed; cannot apply $what: $(head -1 "$tmp/err")"; fi
  psql -qX -d postgres -c "DROP DATABASE ${probe}_x" >/dev/null
done <<'EOF'
a function comment|COMMENT ON FUNCTION nps_billing.category(integer) IS 'x'
a column default|ALTER TABLE nps_billing.payment_source ALTER COLUMN delay SET DEFAULT '2 hours'
a column too many|ALTER TABLE nps_billing.opt_out ADD COLUMN x int
a function's volatility|ALTER FUNCTION nps_billing.mean_score(nps_billing.npsagg) STABLE
a function body|CREATE OR REPLACE FUNCTION nps_billing.opt_in(customer text) RETURNS boolean LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS 'BEGIN RETURN true; END'
a grant to PUBLIC|GRANT EXECUTE ON FUNCTION nps_billing.record_response(text, integer, text, timestamptz) TO PUBLIC
a check constraint|ALTER TABLE nps_billing.survey DROP CONSTRAINT survey_status_check
an index|CREATE INDEX probe_idx ON nps_billing.opt_out (since)
a table left out of pg_dump|UPDATE pg_extension SET extconfig = extconfig[2:], extcondition = extcondition[2:] WHERE extname = 'nps_billing'
EOF
if [ -z "$missed" ]; then ok "the catalog comparison notices a changed comment, default, column, volatility, body, grant, constraint, index, dump config"
else notok "the catalog comparison misses${missed}"; fi

exit $status
