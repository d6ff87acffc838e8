// Capture: the trigger turning payment rows into payment events and survey requests.
//
// Shape (chosen by measurement, see README.md (Capture)): two AFTER ... FOR EACH STATEMENT triggers
// (INSERT and UPDATE; PostgreSQL allows a transition table only on single-event triggers) with
// REFERENCING NEW TABLE AS nps_new, both calling nps_capture_trigger(). Per statement:
//   - few rows (the OLTP case): the row path, per row = 3 cached SPI statements in the common
//     case (evaluate expressions, look up dedup/opt-out/throttle, insert the event);
//   - many rows (INSERT ... SELECT, COPY): the set path = 2 cached statements for the whole
//     statement (evaluate all rows into a tuplestore, then one data-modifying CTE).
// Expressions run with the rights of the writing role; our tables are written with the rights of
// the extension's owner (SetUserIdAndSecContext), with a fixed search_path for both.
// In on_error = 'record' mode every row runs inside a subtransaction (the pattern PL/pgSQL uses
// for EXCEPTION blocks) and a failing row lands in capture_error while the payment commits; the
// set path runs in one subtransaction and falls back to the row path if it fails.
#include "capture.hpp"
#include "contact.hpp"

extern "C" {
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "access/genam.h"
#include "access/relscan.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "rewrite/rewriteHandler.h"
#include "utils/fmgroids.h"
#include "utils/numeric.h"
#include "utils/snapmgr.h"
#include "storage/bufmgr.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "access/xact.h"
#include "executor/spi.h"
#include "executor/tstoreReceiver.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
}

using namespace nps::capture;

namespace {

// Statements with at most this many rows take the row path (measured: bench/p6_p8_capture.sh).
constexpr int64 ROW_PATH_MAX = 8;

// One tracked table, cached per backend; invalidated by relcache callbacks (payment_source
// changes send one through its statement trigger; ALTER TABLE of the payments table sends one).
struct Source {
    Source *next;
    Oid relid;
    bool valid;
    // Trigger invocations of this backend using it now (nested statements run by an expression
    // fire the trigger again). An invalidated source is unlinked from the cache but freed only
    // once no invocation uses it (zombies, freed by the next get_source()).
    int pins;
    bool tracked;  // false: the trigger exists but no tracked source row (nothing to do)
    MemoryContext cxt;
    int32 id;
    char *name;
    bool enabled, raise, on_succeeded, on_failed;
    Datum min_amount;  // numeric
    double sample_rate;
    Datum throttle, delay, expires_after;  // interval
    char *channel;
    char *exprs[X_COUNT];
    bool contact;          // a recipient, locale or time zone expression: surveys get them
    bool needs_recipient;  // a recipient expression and a channel that sends to it (email, sms)
    Oid nspoid;       // the table's schema
    Oid table_owner;  // expressions run with its rights, in a security-restricted operation
    // The expressions are stored bound (schema-qualified) and read under EVAL_PATH; a database
    // still at 0.1 stores them as written: pg_catalog, then the table's schema (legacy_path).
    char *legacy_path;
    // The expressions do not compile any more (a column dropped or retyped, a function gone, ...):
    // every row records this error (or raises it with on_error = 'raise'); the payment commits.
    char *broken_msg;
    int broken_code;
    RowShape *shape;
    SPIPlanPtr row_plan, set_plan, key_plan;
    // Row path without SPI when no expression has a subquery: planned expressions evaluated with
    // ExprStates, compiled once as the table's owner (ExecInitExpr checks EXECUTE rights).
    bool fast;
    ExprState *xs[X_COUNT];
    Oid survey_seq;
    // Direct row path (no SPI for the common case): catalog objects resolved at load.
    bool direct;
    Oid ev_rel, ev_seq, ev_uniq, oo_rel, oo_idx, cc_rel, cc_idx;
    AttrNumber ev_att[11];  // id, source_id, payment_key, kind, customer_id, amount, currency,
                            // occurred_at, attributes, survey_id, skip_reason
    AttrNumber cc_last;     // customer_contact.last_survey_at
};

Source *sources = NULL;
Source *zombies = NULL;  // invalidated while pinned
// The key of the row whose capture raised (on_error = 'raise'), for the error message.
char raise_key[64];
Oid payment_source_relid = InvalidOid;
bool callback_registered = false;

// Shared owner-side plans (the policy is passed as parameters).
SPIPlanPtr plan_load, plan_contact, plan_event, plan_unsurvey, plan_survey, plan_survey_contact, plan_error, plan_set,
    plan_set_contact;

void relcache_callback(Datum, Oid relid) {
    for (Source *s = sources; s; s = s->next)
        if (relid == InvalidOid || relid == s->relid || relid == payment_source_relid)
            s->valid = false;
}

void free_source(Source *s) {
    if (s->row_plan)
        SPI_freeplan(s->row_plan);
    if (s->set_plan)
        SPI_freeplan(s->set_plan);
    if (s->key_plan)
        SPI_freeplan(s->key_plan);
    MemoryContextDelete(s->cxt);
}

SPIPlanPtr keep(const char *sql, int nargs, Oid *types, int opts) {
    SPIPlanPtr p = SPI_prepare_cursor(sql, nargs, types, opts);
    if (p == NULL)
        elog(ERROR, "nps_billing: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
    SPI_keepplan(p);
    return p;
}

void prepare_shared_plans() {
    if (plan_load)
        return;
    Oid t_load[] = {OIDOID};
    plan_load = keep(
        "SELECT id, name, enabled, on_error = 'raise', 'succeeded' = ANY (survey_on), 'failed' = ANY (survey_on), "
        "min_amount, sample_rate, throttle, delay, expires_after, channel, customer_expr, payment_key_expr, "
        "succeeded_expr, failed_expr, amount_expr, currency_expr, paid_at_expr, attributes_expr, "
        // read by name: a database still at 0.1 has no such columns
        "pg_catalog.to_jsonb(p) OPERATOR(pg_catalog.->>) 'recipient_expr', "
        "pg_catalog.to_jsonb(p) OPERATOR(pg_catalog.->>) 'locale_expr', "
        "pg_catalog.to_jsonb(p) OPERATOR(pg_catalog.->>) 'time_zone_expr', "
        "'nps_billing.payment_source'::regclass::oid, 'nps_billing.survey_id_seq'::regclass::oid, "
        "(SELECT extversion = '0.1' FROM pg_catalog.pg_extension WHERE extname = 'nps_billing') "
        "FROM nps_billing.payment_source p WHERE relid = $1 AND tracked",
        1, t_load, 0);
    // The event, with every policy decision that needs a lookup taken in the same statement
    // (opt-out, minimum amount, a recent survey of the customer). A candidate for a survey gets
    // a survey id; ON CONFLICT DO NOTHING makes a payment count once per (source, key, kind).
    Oid t_event[] = {INT4OID, TEXTOID, TEXTOID, TEXTOID, NUMERICOID, TEXTOID, TIMESTAMPTZOID, JSONBOID,
                     TEXTOID, BOOLOID, INTERVALOID, NUMERICOID};
    plan_event = keep(
        "INSERT INTO nps_billing.payment_event (source_id, payment_key, kind, customer_id, amount, currency, "
        "occurred_at, attributes, survey_id, skip_reason) "
        "SELECT $1, $2, $3, $4, $5, $6, $7, $8, "
        "       CASE WHEN d.skip IS NULL THEN nextval('nps_billing.survey_id_seq') END, d.skip "
        "FROM (SELECT COALESCE($9, CASE"
        "        WHEN EXISTS (SELECT 1 FROM nps_billing.opt_out o WHERE o.customer_id = $4) THEN 'opted_out'"
        "        WHEN COALESCE($5, 0) < $12 THEN 'below_min_amount'"
        "        WHEN $10 THEN 'sampled_out'"
        "        WHEN EXISTS (SELECT 1 FROM nps_billing.customer_contact c"
        "                     WHERE c.customer_id = $4 AND c.last_survey_at >= now() - $11) THEN 'throttled'"
        "      END) AS skip OFFSET 0) d "  // OFFSET 0: d.skip is used twice; evaluate the lookups once
        "ON CONFLICT DO NOTHING RETURNING id, survey_id",
        12, t_event, CURSOR_OPT_GENERIC_PLAN);
    // The throttle's lock point: concurrent transactions of one customer serialize on this row.
    Oid t_contact[] = {TEXTOID, INTERVALOID};
    plan_contact = keep(
        "INSERT INTO nps_billing.customer_contact AS cc (customer_id, last_survey_at) VALUES ($1, now()) "
        "ON CONFLICT (customer_id) DO UPDATE SET last_survey_at = excluded.last_survey_at "
        "WHERE cc.last_survey_at < now() - $2 RETURNING true",
        2, t_contact, CURSOR_OPT_GENERIC_PLAN);
    // Lost the throttle race after the event was written: the event says so.
    Oid t_unsurvey[] = {INT8OID};
    plan_unsurvey = keep(
        "UPDATE nps_billing.payment_event SET survey_id = NULL, skip_reason = 'throttled' WHERE id = $1",
        1, t_unsurvey, CURSOR_OPT_GENERIC_PLAN);
    Oid t_survey[] = {INT8OID, TEXTOID, INT4OID, INT8OID, TEXTOID, TEXTOID, INTERVALOID, INTERVALOID};
    plan_survey = keep(
        "INSERT INTO nps_billing.survey (id, token, source_id, event_id, customer_id, channel, send_after, expires_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, now() + $7, now() + $7 + $8)",
        8, t_survey, CURSOR_OPT_GENERIC_PLAN);
    Oid t_error[] = {INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
    plan_error = keep(
        "INSERT INTO nps_billing.capture_error (source_id, payment_key, customer_id, error, sqlstate) "
        "VALUES ($1, $2, $3, $4, $5)",
        5, t_error, CURSOR_OPT_GENERIC_PLAN);
}

// The set statement over nps_eval (the evaluated rows of one statement). It needs nps_eval
// registered when it is prepared. Events already recorded are filtered out (NOT EXISTS) and the
// statement's own duplicates removed (DISTINCT ON), so the event insert needs no ON CONFLICT
// (measured: ~15% of P8); a concurrent transaction recording the same payment at the same moment
// makes it fail with 23505, and the statement is then redone row by row (ON CONFLICT DO NOTHING).
// Sorts use COLLATE "C": ids need a consistent order, not a linguistic one.
const char *SET_SQL =
    "WITH ev AS ("
    "  SELECT DISTINCT ON (e.payment_key COLLATE \"C\", e.kind COLLATE \"C\") e.* FROM nps_eval e"
    "  WHERE e.payment_key IS NOT NULL"
    "  ORDER BY e.payment_key COLLATE \"C\", e.kind COLLATE \"C\", e.occurred_at"
    "), fresh AS ("
    "  SELECT ev.*, CASE"
    "    WHEN NOT $2 THEN 'disabled'"
    "    WHEN NOT CASE ev.kind WHEN 'succeeded' THEN $3 ELSE $4 END THEN 'not_surveyed_kind'"
    "    WHEN ev.customer IS NULL THEN 'no_customer'"
    "    WHEN EXISTS (SELECT 1 FROM nps_billing.opt_out o WHERE o.customer_id = ev.customer) THEN 'opted_out'"
    "    WHEN COALESCE(ev.amount, 0) < $5 THEN 'below_min_amount'"
    "    WHEN nps_billing.sample_point(ev.customer, ev.payment_key) >= $6 THEN 'sampled_out'"
    "    WHEN EXISTS (SELECT 1 FROM nps_billing.customer_contact c"
    "                 WHERE c.customer_id = ev.customer AND c.last_survey_at >= now() - $7) THEN 'throttled'"
    "  END AS skip"
    "  FROM ev WHERE NOT EXISTS (SELECT 1 FROM nps_billing.payment_event pe"
    "                            WHERE pe.source_id = $1 AND pe.payment_key = ev.payment_key AND pe.kind = ev.kind)"
    "), cand AS ("
    "  SELECT DISTINCT ON (f.customer COLLATE \"C\") f.customer, f.payment_key, f.kind FROM fresh f"
    "  WHERE f.skip IS NULL ORDER BY f.customer COLLATE \"C\", f.occurred_at, f.payment_key COLLATE \"C\""
    "), granted AS ("
    "  INSERT INTO nps_billing.customer_contact AS cc (customer_id, last_survey_at)"
    "  SELECT cand.customer, now() FROM cand ORDER BY cand.customer COLLATE \"C\""
    "  ON CONFLICT (customer_id) DO UPDATE SET last_survey_at = excluded.last_survey_at"
    "  WHERE cc.last_survey_at < now() - $7"
    "  RETURNING cc.customer_id"
    "), ids AS ("
    "  SELECT cand.payment_key, cand.kind, nextval('nps_billing.survey_id_seq') AS sid"
    "  FROM cand JOIN granted g ON g.customer_id = cand.customer"
    "), evs AS ("
    "  INSERT INTO nps_billing.payment_event AS pe (source_id, payment_key, kind, customer_id, amount, currency,"
    "                                               occurred_at, attributes, survey_id, skip_reason)"
    "  SELECT $1, f.payment_key, f.kind, f.customer, f.amount, f.currency, f.occurred_at, f.attributes, i.sid,"
    "         CASE WHEN i.sid IS NULL THEN COALESCE(f.skip, 'throttled') END"
    "  FROM fresh f LEFT JOIN ids i ON i.payment_key = f.payment_key AND i.kind = f.kind"
    "  RETURNING pe.id, pe.survey_id, pe.customer_id"
    "), svs AS ("
    "  INSERT INTO nps_billing.survey (id, token, source_id, event_id, customer_id, channel, send_after, expires_at)"
    "  SELECT e.survey_id, nps_billing.new_token(), $1, e.id, e.customer_id, $8, now() + $9, now() + $9 + $10"
    "  FROM evs e WHERE e.survey_id IS NOT NULL"
    "  RETURNING 1"
    "), nullkeys AS ("
    "  INSERT INTO nps_billing.capture_error (source_id, error, sqlstate)"
    "  SELECT $1, 'payment_key expression returned NULL', '22004' FROM nps_eval e WHERE e.payment_key IS NULL"
    "  RETURNING 1"
    ") SELECT (SELECT count(*) FROM svs), (SELECT count(*) FROM nullkeys)";

// The same for a source with contact expressions: the values as capture keeps them (cleaned), a
// survey without the recipient its channel needs is skipped (no_recipient, when $11), and the
// surveys get recipient, locale and time zone.
const char *SET_SQL_CONTACT =
    "WITH ev AS ("
    "  SELECT DISTINCT ON (e.payment_key COLLATE \"C\", e.kind COLLATE \"C\") e.kind, e.customer, e.payment_key,"
    "         e.amount, e.currency, e.occurred_at, e.attributes, nps_billing._clean_recipient(e.recipient) AS recipient,"
    "         nps_billing._clean_locale(e.locale) AS locale, nps_billing._clean_time_zone(e.time_zone) AS time_zone"
    "  FROM nps_eval e"
    "  WHERE e.payment_key IS NOT NULL"
    "  ORDER BY e.payment_key COLLATE \"C\", e.kind COLLATE \"C\", e.occurred_at"
    "), fresh AS ("
    "  SELECT ev.*, CASE"
    "    WHEN NOT $2 THEN 'disabled'"
    "    WHEN NOT CASE ev.kind WHEN 'succeeded' THEN $3 ELSE $4 END THEN 'not_surveyed_kind'"
    "    WHEN ev.customer IS NULL THEN 'no_customer'"
    "    WHEN $11 AND ev.recipient IS NULL THEN 'no_recipient'"
    "    WHEN EXISTS (SELECT 1 FROM nps_billing.opt_out o WHERE o.customer_id = ev.customer) THEN 'opted_out'"
    "    WHEN COALESCE(ev.amount, 0) < $5 THEN 'below_min_amount'"
    "    WHEN nps_billing.sample_point(ev.customer, ev.payment_key) >= $6 THEN 'sampled_out'"
    "    WHEN EXISTS (SELECT 1 FROM nps_billing.customer_contact c"
    "                 WHERE c.customer_id = ev.customer AND c.last_survey_at >= now() - $7) THEN 'throttled'"
    "  END AS skip"
    "  FROM ev WHERE NOT EXISTS (SELECT 1 FROM nps_billing.payment_event pe"
    "                            WHERE pe.source_id = $1 AND pe.payment_key = ev.payment_key AND pe.kind = ev.kind)"
    "), cand AS ("
    "  SELECT DISTINCT ON (f.customer COLLATE \"C\") f.customer, f.payment_key, f.kind FROM fresh f"
    "  WHERE f.skip IS NULL ORDER BY f.customer COLLATE \"C\", f.occurred_at, f.payment_key COLLATE \"C\""
    "), granted AS ("
    "  INSERT INTO nps_billing.customer_contact AS cc (customer_id, last_survey_at)"
    "  SELECT cand.customer, now() FROM cand ORDER BY cand.customer COLLATE \"C\""
    "  ON CONFLICT (customer_id) DO UPDATE SET last_survey_at = excluded.last_survey_at"
    "  WHERE cc.last_survey_at < now() - $7"
    "  RETURNING cc.customer_id"
    "), ids AS ("
    "  SELECT cand.payment_key, cand.kind, nextval('nps_billing.survey_id_seq') AS sid"
    "  FROM cand JOIN granted g ON g.customer_id = cand.customer"
    "), evs AS ("
    "  INSERT INTO nps_billing.payment_event AS pe (source_id, payment_key, kind, customer_id, amount, currency,"
    "                                               occurred_at, attributes, survey_id, skip_reason)"
    "  SELECT $1, f.payment_key, f.kind, f.customer, f.amount, f.currency, f.occurred_at, f.attributes, i.sid,"
    "         CASE WHEN i.sid IS NULL THEN COALESCE(f.skip, 'throttled') END"
    "  FROM fresh f LEFT JOIN ids i ON i.payment_key = f.payment_key AND i.kind = f.kind"
    "  RETURNING pe.id, pe.survey_id, pe.customer_id, pe.payment_key, pe.kind"
    "), svs AS ("
    "  INSERT INTO nps_billing.survey (id, token, source_id, event_id, customer_id, channel, send_after, expires_at,"
    "                                 recipient, locale, time_zone)"
    "  SELECT e.survey_id, nps_billing.new_token(), $1, e.id, e.customer_id, $8, now() + $9, now() + $9 + $10,"
    "         f.recipient, f.locale, f.time_zone"
    "  FROM evs e JOIN fresh f ON f.payment_key = e.payment_key AND f.kind = e.kind WHERE e.survey_id IS NOT NULL"
    "  RETURNING 1"
    "), nullkeys AS ("
    "  INSERT INTO nps_billing.capture_error (source_id, error, sqlstate)"
    "  SELECT $1, 'payment_key expression returned NULL', '22004' FROM nps_eval e WHERE e.payment_key IS NULL"
    "  RETURNING 1"
    ") SELECT (SELECT count(*) FROM svs), (SELECT count(*) FROM nullkeys)";

TupleDesc eval_desc() {
    static TupleDesc desc = NULL;
    if (desc == NULL) {
        MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
        TupleDesc d = CreateTemplateTupleDesc(EVAL_NCOLS);
        TupleDescInitEntry(d, 1, "kind", TEXTOID, -1, 0);
        TupleDescInitEntry(d, 2, "customer", TEXTOID, -1, 0);
        TupleDescInitEntry(d, 3, "payment_key", TEXTOID, -1, 0);
        TupleDescInitEntry(d, 4, "amount", NUMERICOID, -1, 0);
        TupleDescInitEntry(d, 5, "currency", TEXTOID, -1, 0);
        TupleDescInitEntry(d, 6, "occurred_at", TIMESTAMPTZOID, -1, 0);
        TupleDescInitEntry(d, 7, "attributes", JSONBOID, -1, 0);
        TupleDescInitEntry(d, 8, "recipient", TEXTOID, -1, 0);
        TupleDescInitEntry(d, 9, "locale", TEXTOID, -1, 0);
        TupleDescInitEntry(d, 10, "time_zone", TEXTOID, -1, 0);
        MemoryContextSwitchTo(old);
        desc = d;
    }
    return desc;
}

char *dup_text(MemoryContext cxt, HeapTuple tup, TupleDesc desc, int col) {
    bool isnull;
    Datum d = SPI_getbinval(tup, desc, col, &isnull);
    if (isnull)
        return NULL;
    return MemoryContextStrdup(cxt, TextDatumGetCString(d));
}

Datum dup_datum(MemoryContext cxt, HeapTuple tup, TupleDesc desc, int col, bool byval, int len) {
    bool isnull;
    Datum d = SPI_getbinval(tup, desc, col, &isnull);
    MemoryContext old = MemoryContextSwitchTo(cxt);
    Datum r = datumCopy(d, byval, len);
    MemoryContextSwitchTo(old);
    return r;
}

// Resolves what the direct row path needs; any surprise (a renamed index, a missing column)
// leaves it off and the SPI statements do the work.
void resolve_direct(Source *s, Oid nsp) {
    static const char *const ev_cols[11] = {"id", "source_id", "payment_key", "kind", "customer_id", "amount",
                                            "currency", "occurred_at", "attributes", "survey_id", "skip_reason"};
    s->direct = false;
    s->ev_rel = get_relname_relid("payment_event", nsp);
    s->ev_seq = get_relname_relid("payment_event_id_seq", nsp);
    s->ev_uniq = get_relname_relid("payment_event_source_id_payment_key_kind_key", nsp);
    s->oo_rel = get_relname_relid("opt_out", nsp);
    s->oo_idx = get_relname_relid("opt_out_pkey", nsp);
    s->cc_rel = get_relname_relid("customer_contact", nsp);
    s->cc_idx = get_relname_relid("customer_contact_pkey", nsp);
    if (!OidIsValid(s->ev_rel) || !OidIsValid(s->ev_seq) || !OidIsValid(s->ev_uniq) || !OidIsValid(s->oo_rel) ||
        !OidIsValid(s->oo_idx) || !OidIsValid(s->cc_rel) || !OidIsValid(s->cc_idx))
        return;
    for (int i = 0; i < 11; i++)
        if ((s->ev_att[i] = get_attnum(s->ev_rel, ev_cols[i])) == InvalidAttrNumber)
            return;
    if ((s->cc_last = get_attnum(s->cc_rel, "last_survey_at")) == InvalidAttrNumber)
        return;
    contact_memo_attach(s->cc_rel);
    s->direct = true;
}

// An equality probe of a btree index (keys: int4 / text columns in index order). Returns whether
// a row visible to the active snapshot matches; *ts gets column ts_att of it (a timestamptz) and
// *own whether this transaction wrote that row version.
bool probe(Oid relid, Oid indexid, int nkeys, const Datum *vals, const Oid *procs, AttrNumber ts_att, TimestampTz *ts,
           bool *own = NULL) {
    Relation heap = table_open(relid, AccessShareLock);
    Relation idx = index_open(indexid, AccessShareLock);
    ScanKeyData keys[3];
    for (int i = 0; i < nkeys; i++)
        ScanKeyEntryInitialize(&keys[i], 0, i + 1, BTEqualStrategyNumber, InvalidOid, idx->rd_indcollation[i],
                               procs[i], vals[i]);
    IndexScanDesc scan = nps::compat::index_beginscan(heap, idx, GetActiveSnapshot(), nkeys, 0);
    index_rescan(scan, keys, nkeys, NULL, 0);
    TupleTableSlot *slot = table_slot_create(heap, NULL);
    bool found = index_getnext_slot(scan, ForwardScanDirection, slot);
    if (found && ts) {
        bool isnull;
        Datum d = slot_getattr(slot, ts_att, &isnull);
        *ts = isnull ? DT_NOBEGIN : DatumGetTimestampTz(d);
        if (own) {
            bool should_free;
            HeapTuple tup = ExecFetchSlotHeapTuple(slot, false, &should_free);
            *own = TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(tup->t_data));
            if (should_free)
                heap_freetuple(tup);
        }
    }
    index_endscan(scan);
    ExecDropSingleTupleTableSlot(slot);
    index_close(idx, NoLock);
    table_close(heap, NoLock);
    return found;
}

// Inserts one payment_event row without the planner (as logical replication's apply does):
// heap, indexes (a concurrent duplicate raises 23505 from the unique index), column defaults.
// False when payment_event has triggers or was partitioned: the caller uses the SQL statement.
bool insert_event_direct(Source *s, const Datum *vals, const bool *nulls) {
    Relation rel = table_open(s->ev_rel, RowExclusiveLock);
    if (rel->trigdesc != NULL || rel->rd_rel->relkind != RELKIND_RELATION) {
        table_close(rel, NoLock);
        return false;
    }
    EState *estate = CreateExecutorState();
    RangeTblEntry *rte = makeNode(RangeTblEntry);
    rte->rtekind = RTE_RELATION;
    rte->relid = s->ev_rel;
    rte->relkind = RELKIND_RELATION;
    rte->rellockmode = RowExclusiveLock;
    nps::compat::init_range_table(estate, rte);
    ResultRelInfo *rri = makeNode(ResultRelInfo);
    InitResultRelInfo(rri, rel, 1, NULL, 0);
    estate->es_output_cid = GetCurrentCommandId(true);
    ExecOpenIndices(rri, false);
    TupleDesc desc = RelationGetDescr(rel);
    TupleTableSlot *slot = ExecInitExtraTupleSlot(estate, desc, &TTSOpsVirtual);
    ExecClearTuple(slot);
    for (int i = 0; i < desc->natts; i++) {
        slot->tts_values[i] = (Datum)0;
        slot->tts_isnull[i] = true;
    }
    for (int c = 0; c < 11; c++) {
        slot->tts_values[s->ev_att[c] - 1] = vals[c];
        slot->tts_isnull[s->ev_att[c] - 1] = nulls[c];
    }
    // Columns added by others (e.g. created_at DEFAULT now()) get their defaults.
    for (int i = 0; i < desc->natts; i++) {
        Form_pg_attribute att = TupleDescAttr(desc, i);
        bool ours = false;
        for (int c = 0; c < 11; c++)
            ours = ours || s->ev_att[c] == att->attnum;
        if (ours || att->attisdropped || !att->atthasdef || att->attgenerated)
            continue;
        Node *def = build_column_default(rel, att->attnum);
        if (def) {
            ExprState *es = ExecPrepareExpr(reinterpret_cast<Expr *>(def), estate);
            slot->tts_values[i] = ExecEvalExpr(es, GetPerTupleExprContext(estate), &slot->tts_isnull[i]);
        }
    }
    ExecStoreVirtualTuple(slot);
    ExecSimpleRelationInsert(rri, estate, slot);
    ExecCloseIndices(rri);
    ExecResetTupleTable(estate->es_tupleTable, false);
    FreeExecutorState(estate);
    table_close(rel, NoLock);
    return true;
}

// search_path for reading the source's expressions (inside the trigger's pinned settings).
void use_eval_path(Source *s) { set_search_path(s->legacy_path ? s->legacy_path : EVAL_PATH); }

// The valid cached entry of relid, or NULL (an invalid one is freed).
__attribute__((noinline)) Source *find_source(Oid relid) {
    Source **pp = &sources;
    for (Source *s = sources; s; pp = &s->next, s = s->next) {
        if (s->relid != relid)
            continue;
        if (s->valid)
            return s;
        *pp = s->next;
        if (s->pins == 0) {
            free_source(s);
        } else {
            s->next = zombies;
            zombies = s;
        }
        break;
    }
    return NULL;
}

// The cached source of relid, loaded (as the owner) when missing or invalidated.
Source *get_source(Relation rel, Oid owner, Oid extnsp) {
    Oid relid = RelationGetRelid(rel);
    for (Source **zp = &zombies; *zp;) {
        Source *z = *zp;
        if (z->pins > 0) {
            zp = &z->next;
            continue;
        }
        *zp = z->next;
        free_source(z);
    }
    Source *found = find_source(relid);
    if (found)
        return found;
    if (!callback_registered) {
        CacheRegisterRelcacheCallback(relcache_callback, (Datum)0);
        callback_registered = true;
    }
    MemoryContext cxt = AllocSetContextCreate(CacheMemoryContext, "nps_billing capture source", ALLOCSET_SMALL_SIZES);
    Source *s = static_cast<Source *>(MemoryContextAllocZero(cxt, sizeof(Source)));
    s->cxt = cxt;
    s->relid = relid;
    s->nspoid = RelationGetNamespace(rel);
    s->table_owner = rel->rd_rel->relowner;
    // Known before the lookup: a new source row must invalidate a "not tracked" answer too.
    payment_source_relid = get_relname_relid("payment_source", extnsp);
    as_owner(owner, extnsp, [&] {
        prepare_shared_plans();
        Datum arg = ObjectIdGetDatum(relid);
        if (SPI_execute_plan(plan_load, &arg, NULL, true, 1) != SPI_OK_SELECT)
            elog(ERROR, "nps_billing: could not read payment_source");
        if (SPI_processed == 0) {
            s->tracked = false;
        } else {
            HeapTuple t = SPI_tuptable->vals[0];
            TupleDesc d = SPI_tuptable->tupdesc;
            bool isnull;
            s->tracked = true;
            s->id = DatumGetInt32(SPI_getbinval(t, d, 1, &isnull));
            s->name = dup_text(cxt, t, d, 2);
            s->enabled = DatumGetBool(SPI_getbinval(t, d, 3, &isnull));
            s->raise = DatumGetBool(SPI_getbinval(t, d, 4, &isnull));
            s->on_succeeded = DatumGetBool(SPI_getbinval(t, d, 5, &isnull));
            s->on_failed = DatumGetBool(SPI_getbinval(t, d, 6, &isnull));
            s->min_amount = dup_datum(cxt, t, d, 7, false, -1);
            s->sample_rate = DatumGetFloat8(SPI_getbinval(t, d, 8, &isnull));
            s->throttle = dup_datum(cxt, t, d, 9, false, sizeof(Interval));
            s->delay = dup_datum(cxt, t, d, 10, false, sizeof(Interval));
            s->expires_after = dup_datum(cxt, t, d, 11, false, sizeof(Interval));
            s->channel = dup_text(cxt, t, d, 12);
            for (int i = 0; i < X_COUNT; i++)
                s->exprs[i] = dup_text(cxt, t, d, 13 + i);
            payment_source_relid = DatumGetObjectId(SPI_getbinval(t, d, 13 + X_COUNT, &isnull));
            s->survey_seq = DatumGetObjectId(SPI_getbinval(t, d, 14 + X_COUNT, &isnull));
            s->contact = s->exprs[X_RECIPIENT] || s->exprs[X_LOCALE] || s->exprs[X_TIME_ZONE];
            s->needs_recipient = s->exprs[X_RECIPIENT] && strcmp(s->channel, "in_app") != 0;
            if (DatumGetBool(SPI_getbinval(t, d, 15 + X_COUNT, &isnull)) && !isnull)
                s->legacy_path = MemoryContextStrdup(
                    cxt, psprintf("pg_catalog, %s", quote_identifier(get_namespace_name(s->nspoid))));
            resolve_direct(s, extnsp);
        }
        SPI_freetuptable(SPI_tuptable);
    });
    if (s->tracked) {
        s->shape = make_shape(cxt, RelationGetRelationName(rel), RelationGetDescr(rel));
        // Compiled as the table's owner under the evaluation settings. If the expressions no longer
        // compile, the source is broken: its rows record the error, the payments commit.
        MemoryContext callercxt = CurrentMemoryContext;
        ErrorData *ed = in_subtransaction([&] {
            use_eval_path(s);
            as_table_owner(s->table_owner, [&] {
                MemoryContext old = MemoryContextSwitchTo(cxt);
                Expr *fx[X_COUNT];
                bool fast = true;
                for (int i = 0; i < X_COUNT; i++) {
                    bool sub = false;
                    Expr *e = analyze_expression(static_cast<ExprSlot>(i), s->exprs[i], s->shape, &sub);
                    fast = fast && !sub;
                    fx[i] = e;
                }
                if (fast)
                    for (int i = 0; i < X_COUNT; i++)
                        s->xs[i] = fx[i] ? ExecInitExpr(expression_planner(fx[i]), NULL) : NULL;
                s->fast = fast;
                MemoryContextSwitchTo(old);
                SPIPlanPtr p = SPI_prepare_params(eval_sql(s->exprs, NULL), parser_setup, s->shape, CURSOR_OPT_GENERIC_PLAN);
                if (p == NULL)
                    elog(ERROR, "nps_billing: could not prepare the expressions of source %d", s->id);
                SPI_keepplan(p);
                s->row_plan = p;
            });
        });
        MemoryContextSwitchTo(callercxt);
        if (ed) {
            s->fast = false;
            s->broken_code = ed->sqlerrcode;
            s->broken_msg = MemoryContextStrdup(cxt, ed->message ? ed->message : "unknown error");
            FreeErrorData(ed);
        }
    }
    s->valid = true;
    s->next = sources;
    sources = s;
    return s;
}

// One evaluated row, copied out of SPI memory into the row context.
struct Eval {
    const char *kind;
    const char *customer;  // NULL: no_customer
    const char *key;
    const char *contact[3];  // recipient, locale, time zone as evaluated, then as kept (NULL: none)
    bool amount_null, currency_null, attributes_null;
    Datum amount, currency, occurred_at, attributes;
};

struct RowCtx {
    Source *s;
    bool inserted;          // rows of an INSERT (or COPY): no earlier event to look for first
    bool fast;              // evaluate with the source's ExprStates (eval_fast)
    ExprContext *econtext;  // for eval_fast
    Oid owner, extnsp;
    ParamListInfo params;  // the payment row's columns as $attnum
    const char *key;       // known once evaluated (for capture_error)
    const char *customer;
};

// Evaluates the expressions of a subquery-free source on the row in rc->params, without SPI.
// False: the row is neither succeeded nor failed.
bool eval_fast(RowCtx *rc, Eval *ev) {
    Source *s = rc->s;
    ExprContext *ec = rc->econtext;
    ResetExprContext(ec);
    ec->ecxt_param_list_info = rc->params;
    bool isnull;
    Datum d = ExecEvalExprSwitchContext(s->xs[X_SUCCEEDED], ec, &isnull);
    if (!isnull && DatumGetBool(d))
        ev->kind = "succeeded";
    else {
        if (s->xs[X_FAILED] == NULL)
            return false;
        d = ExecEvalExprSwitchContext(s->xs[X_FAILED], ec, &isnull);
        if (isnull || !DatumGetBool(d))
            return false;
        ev->kind = "failed";
    }
    d = ExecEvalExprSwitchContext(s->xs[X_CUSTOMER], ec, &isnull);
    ev->customer = isnull ? NULL : TextDatumGetCString(d);
    d = ExecEvalExprSwitchContext(s->xs[X_PAYMENT_KEY], ec, &isnull);
    ev->key = isnull ? NULL : TextDatumGetCString(d);
    ev->amount_null = ev->currency_null = ev->attributes_null = true;
    ev->amount = ev->currency = ev->attributes = (Datum)0;
    if (s->xs[X_AMOUNT]) {
        d = ExecEvalExprSwitchContext(s->xs[X_AMOUNT], ec, &ev->amount_null);
        ev->amount = ev->amount_null ? (Datum)0 : datumCopy(d, false, -1);
    }
    if (s->xs[X_CURRENCY]) {
        d = ExecEvalExprSwitchContext(s->xs[X_CURRENCY], ec, &ev->currency_null);
        ev->currency = ev->currency_null ? (Datum)0 : datumCopy(d, false, -1);
    }
    ev->occurred_at = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
    if (s->xs[X_PAID_AT]) {
        d = ExecEvalExprSwitchContext(s->xs[X_PAID_AT], ec, &isnull);
        if (!isnull)
            ev->occurred_at = d;
    }
    if (s->xs[X_ATTRIBUTES]) {
        d = ExecEvalExprSwitchContext(s->xs[X_ATTRIBUTES], ec, &ev->attributes_null);
        ev->attributes = ev->attributes_null ? (Datum)0 : datumCopy(d, false, -1);
    }
    for (int i = 0; i < 3; i++) {
        ev->contact[i] = NULL;
        if (s->xs[X_RECIPIENT + i]) {
            d = ExecEvalExprSwitchContext(s->xs[X_RECIPIENT + i], ec, &isnull);
            ev->contact[i] = isnull ? NULL : TextDatumGetCString(d);
        }
    }
    return true;
}

// A survey is due for event eid (survey id sid, customer cust): take the customer's throttle lock
// row; if another transaction took it first the event says 'throttled', else the survey is written
// and senders are woken. Runs as the owner.
void survey_after_event(RowCtx *rc, const Eval *ev, int64 eid, int64 sid, Datum cust, MemoryContext rowcxt) {
    Source *s = rc->s;
    Datum ca[2] = {cust, s->throttle};
    if (SPI_execute_plan(plan_contact, ca, NULL, false, 1) != SPI_OK_INSERT_RETURNING)
        elog(ERROR, "nps_billing: throttle update failed");
    MemoryContextSwitchTo(rowcxt);
    bool granted = SPI_processed == 1;
    SPI_freetuptable(SPI_tuptable);
    if (!granted) {
        Datum ua[1] = {Int64GetDatum(eid)};
        if (SPI_execute_plan(plan_unsurvey, ua, NULL, false, 0) != SPI_OK_UPDATE)
            elog(ERROR, "nps_billing: event update failed");
        MemoryContextSwitchTo(rowcxt);
        return;
    }
    char tok[23];
    make_token(tok);
    Datum sa[11] = {Int64GetDatum(sid), CStringGetTextDatum(tok),        Int32GetDatum(s->id), Int64GetDatum(eid),
                    cust,               CStringGetTextDatum(s->channel), s->delay,             s->expires_after};
    if (s->contact && plan_survey_contact == NULL) {
        // With the contact data (prepared when first needed: a database still at 0.1 has no such
        // columns, and no source with contact expressions).
        Oid t_survey_c[] = {INT8OID, TEXTOID, INT4OID, INT8OID, TEXTOID, TEXTOID, INTERVALOID, INTERVALOID,
                            TEXTOID, TEXTOID, TEXTOID};
        plan_survey_contact = keep(
            "INSERT INTO nps_billing.survey (id, token, source_id, event_id, customer_id, channel, send_after, "
            "expires_at, recipient, locale, time_zone) "
            "VALUES ($1, $2, $3, $4, $5, $6, now() + $7, now() + $7 + $8, $9, $10, $11)",
            11, t_survey_c, CURSOR_OPT_GENERIC_PLAN);
    }
    char sn[12] = "           ";
    for (int i = 0; i < 3; i++) {
        sa[8 + i] = ev->contact[i] ? CStringGetTextDatum(ev->contact[i]) : (Datum)0;
        sn[8 + i] = ev->contact[i] ? ' ' : 'n';
    }
    if (SPI_execute_plan(s->contact ? plan_survey_contact : plan_survey, sa, sn, false, 0) != SPI_OK_INSERT)
        elog(ERROR, "nps_billing: survey insert failed");
    MemoryContextSwitchTo(rowcxt);
    Async_Notify("nps_billing_survey", s->name);
}

// The owner's part of the row path without SPI (record mode): probes by index, event inserted
// directly. Returns false when it could not run (payment_event has triggers): use the SQL path.
bool owner_direct(RowCtx *rc, Eval *ev, const char *pre, bool sampled_out, MemoryContext rowcxt) {
    Source *s = rc->s;
    static const Oid p_ev[3] = {F_INT4EQ, F_TEXTEQ, F_TEXTEQ};
    static const Oid p_txt[1] = {F_TEXTEQ};
    uint64 memo_gen = contact_memo_generation();  // before the snapshot (see capture_memo.cpp)
    CommandCounterIncrement();  // see this transaction's earlier rows, as an SPI statement would
    PushActiveSnapshot(GetTransactionSnapshot());
    Datum key = CStringGetTextDatum(ev->key);
    Datum kind = CStringGetTextDatum(ev->kind);
    Datum k3[3] = {Int32GetDatum(s->id), key, kind};
    // Updated rows are often re-updates of recorded payments: look first. A new row rarely repeats
    // a recorded key; if it does, the unique index refuses the event (23505, not an error).
    if (!rc->inserted && probe(s->ev_rel, s->ev_uniq, 3, k3, p_ev, 0, NULL)) {
        PopActiveSnapshot();
        return true;  // already recorded: a payment counts once per (source, key, kind)
    }
    Datum cust = ev->customer ? CStringGetTextDatum(ev->customer) : (Datum)0;
    const char *skip = pre;
    if (!skip && !opt_out_is_empty(s->oo_rel) && probe(s->oo_rel, s->oo_idx, 1, &cust, p_txt, 0, NULL))
        skip = "opted_out";
    if (!skip) {
        Datum amt = ev->amount_null ? NumericGetDatum(int64_to_numeric(0)) : ev->amount;
        if (DatumGetBool(DirectFunctionCall2(numeric_lt, amt, s->min_amount)))
            skip = "below_min_amount";
    }
    if (!skip && sampled_out)
        skip = "sampled_out";
    if (!skip) {
        TimestampTz last;
        bool own = false;
        TimestampTz since = DatumGetTimestampTz(DirectFunctionCall2(
            timestamptz_mi_interval, TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()), s->throttle));
        int custlen = strlen(ev->customer);
        if (contact_memo_get(ev->customer, custlen, &last) && last >= since) {
            skip = "throttled";  // surveyed recently, as a committed customer_contact row said
        } else if (probe(s->cc_rel, s->cc_idx, 1, &cust, p_txt, s->cc_last, &last, &own)) {
            if (!own)
                contact_memo_put(memo_gen, ev->customer, custlen, last);
            if (last >= since)
                skip = "throttled";
        }
    }
    int64 sid = skip ? 0 : nextval_internal(s->survey_seq, false);
    int64 eid = nextval_internal(s->ev_seq, false);
    Datum v[11] = {Int64GetDatum(eid), Int32GetDatum(s->id), key, kind, cust, ev->amount, ev->currency,
                   ev->occurred_at, ev->attributes, Int64GetDatum(sid), skip ? CStringGetTextDatum(skip) : (Datum)0};
    bool nl[11] = {false, false, false, false, ev->customer == NULL, ev->amount_null, ev->currency_null,
                   false, ev->attributes_null, sid == 0, skip == NULL};
    bool ok = insert_event_direct(s, v, nl);
    PopActiveSnapshot();
    if (!ok)
        return false;
    if (sid != 0)
        survey_after_event(rc, ev, eid, sid, cust, rowcxt);
    return true;
}

// The row path for one payment row whose columns are in rc->params.
void process_row(RowCtx *rc) {
    Source *s = rc->s;
    MemoryContext rowcxt = CurrentMemoryContext;  // SPI calls return in SPI's context: come back
    Eval ev;
    bool have = false;
    if (s->broken_msg)
        ereport(ERROR, (errcode(s->broken_code), errmsg("%s", s->broken_msg)));
    if (rc->fast)
        as_table_owner(s->table_owner, [&] { have = eval_fast(rc, &ev); });
    else
    as_table_owner(s->table_owner, [&] {
        if (SPI_execute_plan_with_paramlist(s->row_plan, rc->params, false, 0) != SPI_OK_SELECT)
            elog(ERROR, "nps_billing: expression evaluation failed");
        MemoryContextSwitchTo(rowcxt);
        if (SPI_processed == 0)
            return;  // neither succeeded nor failed (yet)
        if (SPI_processed > 1)
            elog(ERROR, "nps_billing: expression evaluation returned %d rows", (int)SPI_processed);
        HeapTuple t = SPI_tuptable->vals[0];
        TupleDesc d = SPI_tuptable->tupdesc;
        bool isnull;
        ev.kind = TextDatumGetCString(SPI_getbinval(t, d, 1, &isnull));
        Datum c = SPI_getbinval(t, d, 2, &isnull);
        ev.customer = isnull ? NULL : TextDatumGetCString(c);
        Datum k = SPI_getbinval(t, d, 3, &isnull);
        ev.key = isnull ? NULL : TextDatumGetCString(k);
        ev.amount = SPI_getbinval(t, d, 4, &ev.amount_null);
        ev.amount = ev.amount_null ? (Datum)0 : datumCopy(ev.amount, false, -1);
        ev.currency = SPI_getbinval(t, d, 5, &ev.currency_null);
        ev.currency = ev.currency_null ? (Datum)0 : datumCopy(ev.currency, false, -1);
        ev.occurred_at = SPI_getbinval(t, d, 6, &isnull);
        ev.attributes = SPI_getbinval(t, d, 7, &ev.attributes_null);
        ev.attributes = ev.attributes_null ? (Datum)0 : datumCopy(ev.attributes, false, -1);
        for (int i = 0; i < 3; i++) {
            Datum v = SPI_getbinval(t, d, 8 + i, &isnull);
            ev.contact[i] = isnull ? NULL : TextDatumGetCString(v);
        }
        SPI_freetuptable(SPI_tuptable);
        have = true;
    });
    if (!have)
        return;
    rc->key = ev.key;
    if (ev.key && s->raise)
        strlcpy(raise_key, ev.key, sizeof raise_key);
    rc->customer = ev.customer;
    if (ev.key == NULL)
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("payment_key expression returned NULL")));
    bool succeeded = strcmp(ev.kind, "succeeded") == 0;

    // Decisions that need no lookup are taken here; the others in the event's statement.
    const char *pre = NULL;
    if (!s->enabled)
        pre = "disabled";
    else if (!(succeeded ? s->on_succeeded : s->on_failed))
        pre = "not_surveyed_kind";
    else if (ev.customer == NULL)
        pre = "no_customer";
    // The contact data as the survey keeps it: a value capture cannot use is dropped (NULL), the
    // payment is never refused for it.
    ev.contact[0] = nps::contact::clean_recipient(ev.contact[0]);
    ev.contact[1] = nps::contact::clean_locale(ev.contact[1]);
    ev.contact[2] = nps::contact::clean_time_zone(ev.contact[2]);
    if (pre == NULL && s->needs_recipient && ev.contact[0] == NULL)
        pre = "no_recipient";
    bool sampled_out = pre == NULL && s->sample_rate < 1.0 &&  // every point is < 1: no hashing then
                       !(sample_point(ev.customer, strlen(ev.customer), ev.key, strlen(ev.key)) < s->sample_rate);

    if (s->direct && !s->raise) {
        bool done = false;
        as_owner(rc->owner, rc->extnsp, [&] { done = owner_direct(rc, &ev, pre, sampled_out, rowcxt); });
        if (done)
            return;
    }
    as_owner(rc->owner, rc->extnsp, [&] {
        Datum a[12];
        char n[13];
        a[0] = Int32GetDatum(s->id);
        a[1] = CStringGetTextDatum(ev.key);
        a[2] = CStringGetTextDatum(ev.kind);
        a[3] = ev.customer ? CStringGetTextDatum(ev.customer) : (Datum)0;
        a[4] = ev.amount;
        a[5] = ev.currency;
        a[6] = ev.occurred_at;
        a[7] = ev.attributes;
        a[8] = pre ? CStringGetTextDatum(pre) : (Datum)0;
        a[9] = BoolGetDatum(sampled_out);
        a[10] = s->throttle;
        a[11] = s->min_amount;
        memset(n, ' ', sizeof n);
        n[12] = '\0';
        if (!ev.customer)
            n[3] = 'n';
        if (ev.amount_null)
            n[4] = 'n';
        if (ev.currency_null)
            n[5] = 'n';
        if (ev.attributes_null)
            n[7] = 'n';
        if (!pre)
            n[8] = 'n';
        if (SPI_execute_plan(plan_event, a, n, false, 1) != SPI_OK_INSERT_RETURNING)
            elog(ERROR, "nps_billing: event insert failed");
        MemoryContextSwitchTo(rowcxt);
        if (SPI_processed == 0)
            return;  // already recorded: a payment counts once per (source, key, kind)
        bool isnull;
        int64 eid = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
        Datum sidd = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
        int64 sid = isnull ? 0 : DatumGetInt64(sidd);
        SPI_freetuptable(SPI_tuptable);
        if (sid == 0)
            return;
        survey_after_event(rc, &ev, eid, sid, a[3], rowcxt);
    });
}

// What capture says about an error: never the row's values. PostgreSQL's messages may quote an
// input value ('invalid input syntax for type integer: "<the customer id>"'), so a row's error is
// told by its message template with every argument written as "...". The errors of a broken
// source come from its stored expressions, not from a row: they are kept whole.
char *scrubbed_message(const Source *s, const ErrorData *ed) {
    if (s->broken_msg)
        return pstrdup(s->broken_msg);
    const char *t = ed->message_id ? ed->message_id : "error";
    StringInfoData buf;
    initStringInfo(&buf);
    for (const char *c = t; *c; c++) {
        if (*c != '%') {
            appendStringInfoChar(&buf, *c);
            continue;
        }
        if (c[1] == '%') {
            appendStringInfoChar(&buf, '%');
            c++;
            continue;
        }
        // skip the conversion: flags, width, precision, length, then the conversion letter
        c++;
        while (*c && strchr("0123456789.-+ #*lhzjtqL", *c))
            c++;
        appendStringInfoString(&buf, "...");
        if (*c == '\0')
            break;
    }
    return buf.data;
}

// Record a row's error (as the owner). The key is recomputed alone when the evaluation failed.
void record_error(RowCtx *rc, ErrorData *ed) {
    Source *s = rc->s;
    const char *key = rc->key;
    if (key == NULL && s->exprs[X_PAYMENT_KEY]) {
        MemoryContext oldcxt = CurrentMemoryContext;
        // Best effort: if the key cannot be computed either, the error is recorded without it.
        ErrorData *kerr = in_subtransaction([&] {
            as_table_owner(s->table_owner, [&] {
                if (s->key_plan == NULL) {
                    SPIPlanPtr p = SPI_prepare_params(key_sql(s->exprs[X_PAYMENT_KEY]), parser_setup, s->shape,
                                                      CURSOR_OPT_GENERIC_PLAN);
                    if (p == NULL)
                        elog(ERROR, "nps_billing: could not prepare the payment_key expression");
                    SPI_keepplan(p);
                    s->key_plan = p;
                }
                if (SPI_execute_plan_with_paramlist(s->key_plan, rc->params, false, 1) == SPI_OK_SELECT &&
                    SPI_processed == 1) {
                    bool isnull;
                    Datum k = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
                    if (!isnull) {
                        MemoryContext o = MemoryContextSwitchTo(oldcxt);
                        key = TextDatumGetCString(k);
                        MemoryContextSwitchTo(o);
                    }
                }
            });
        });
        if (kerr)
            FreeErrorData(kerr);
    }
    as_owner(rc->owner, rc->extnsp, [&] {
        // The message only (no DETAIL / CONTEXT): PostgreSQL's messages may quote an input value.
        Datum a[5] = {Int32GetDatum(s->id), key ? CStringGetTextDatum(key) : (Datum)0,
                      rc->customer ? CStringGetTextDatum(rc->customer) : (Datum)0,
                      CStringGetTextDatum(scrubbed_message(s, ed)),
                      CStringGetTextDatum(unpack_sql_state(ed->sqlerrcode))};
        const char n[] = {' ', static_cast<char>(key ? ' ' : 'n'), static_cast<char>(rc->customer ? ' ' : 'n'), ' ',
                          ' ', '\0'};
        if (SPI_execute_plan(plan_error, a, n, false, 0) != SPI_OK_INSERT)
            elog(ERROR, "nps_billing: could not record a capture error");
    });
}

// The row path inside a subtransaction: an error becomes a capture_error row.
void process_row_guarded(RowCtx *rc) {
    rc->key = NULL;
    rc->customer = NULL;
    ErrorData *ed = in_subtransaction([&] { process_row(rc); });
    if (ed == NULL)
        return;
    // A concurrent transaction recorded the same payment first (direct path): not an error.
    if (!(ed->sqlerrcode == ERRCODE_UNIQUE_VIOLATION && ed->constraint_name &&
          strcmp(ed->constraint_name, "payment_event_source_id_payment_key_kind_key") == 0))
        record_error(rc, ed);
    FreeErrorData(ed);
}

void run_row_path(Source *s, Relation rel, Tuplestorestate *ts, Oid owner, Oid extnsp, bool inserted, bool nested) {
    TupleDesc desc = RelationGetDescr(rel);
    int natts = desc->natts;
    MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext, "nps_billing capture row", ALLOCSET_DEFAULT_SIZES);
    MemoryContext old;
    RowCtx rc;
    rc.s = s;
    rc.inserted = inserted;
    // A nested invocation on a source in use evaluates through SPI: an ExprState is not reentrant.
    rc.fast = s->fast && !nested;
    rc.owner = owner;
    rc.extnsp = extnsp;
    rc.params = makeParamList(natts);
    rc.econtext = CreateStandaloneExprContext();
    for (int i = 0; i < natts; i++) {
        ParamExternData *p = &rc.params->params[i];
        Form_pg_attribute att = TupleDescAttr(desc, i);
        p->ptype = att->attisdropped ? InvalidOid : att->atttypid;
        p->pflags = PARAM_FLAG_CONST;
        p->isnull = true;
        p->value = (Datum)0;
    }
    TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
    int ptr = tuplestore_alloc_read_pointer(ts, EXEC_FLAG_REWIND);
    tuplestore_select_read_pointer(ts, ptr);
    tuplestore_rescan(ts);
    for (;;) {
        MemoryContextReset(rowcxt);
        old = MemoryContextSwitchTo(rowcxt);
        tuplestore_select_read_pointer(ts, ptr);
        bool got = tuplestore_gettupleslot(ts, true, true, slot);
        if (!got) {
            MemoryContextSwitchTo(old);
            break;
        }
        slot_getallattrs(slot);
        for (int i = 0; i < natts; i++) {
            rc.params->params[i].value = slot->tts_values[i];
            rc.params->params[i].isnull = slot->tts_isnull[i];
        }
        rc.key = NULL;
        rc.customer = NULL;
        raise_key[0] = '\0';
        if (s->raise)
            process_row(&rc);
        else
            process_row_guarded(&rc);
        MemoryContextSwitchTo(old);
        ExecClearTuple(slot);
    }
    ExecDropSingleTupleTableSlot(slot);
    FreeExprContext(rc.econtext, true);
    MemoryContextDelete(rowcxt);
}

// The set path: evaluate every row of the statement as the writer into a tuplestore, then one
// data-modifying statement as the owner. Returns the number of NULL payment keys met.
int64 run_set_path(Source *s, Relation rel, Oid owner, Oid extnsp) {
    Tuplestorestate *evald = tuplestore_begin_heap(false, false, work_mem);
    as_table_owner(s->table_owner, [&] {
        if (s->set_plan == NULL) {
            SPIPlanPtr p = SPI_prepare(eval_sql(s->exprs, s->legacy_path ? RelationGetRelationName(rel) : ROW_ALIAS), 0, NULL);
            if (p == NULL)
                elog(ERROR, "nps_billing: could not prepare the set evaluation of source %d", s->id);
            SPI_keepplan(p);
            s->set_plan = p;
        }
        DestReceiver *dest = CreateDestReceiver(DestTuplestore);
        SetTuplestoreDestReceiverParams(dest, evald, CurrentMemoryContext, false, NULL, NULL);
        SPIExecuteOptions opt;
        memset(&opt, 0, sizeof opt);
        opt.read_only = false;
        opt.dest = dest;
        if (SPI_execute_plan_extended(s->set_plan, &opt) != SPI_OK_SELECT)
            elog(ERROR, "nps_billing: set evaluation failed");
        dest->rDestroy(dest);
    });
    EphemeralNamedRelation enr = static_cast<EphemeralNamedRelation>(palloc0(sizeof(EphemeralNamedRelationData)));
    enr->md.name = const_cast<char *>("nps_eval");
    enr->md.reliddesc = InvalidOid;
    enr->md.tupdesc = eval_desc();
    enr->md.enrtype = ENR_NAMED_TUPLESTORE;
    enr->md.enrtuples = tuplestore_tuple_count(evald);
    enr->reldata = evald;
    if (SPI_register_relation(enr) != SPI_OK_REL_REGISTER)
        elog(ERROR, "nps_billing: could not register the evaluated rows");
    int64 surveys = 0, nullkeys = 0;
    as_owner(owner, extnsp, [&] {
        Oid t[] = {INT4OID, BOOLOID, BOOLOID, BOOLOID, NUMERICOID, FLOAT8OID, INTERVALOID, TEXTOID, INTERVALOID,
                   INTERVALOID, BOOLOID};
        if (plan_set == NULL && !s->contact)
            plan_set = keep(SET_SQL, 10, t, CURSOR_OPT_CUSTOM_PLAN);
        if (plan_set_contact == NULL && s->contact)
            plan_set_contact = keep(SET_SQL_CONTACT, 11, t, CURSOR_OPT_CUSTOM_PLAN);
        Datum a[11] = {Int32GetDatum(s->id),         BoolGetDatum(s->enabled),      BoolGetDatum(s->on_succeeded),
                       BoolGetDatum(s->on_failed),   s->min_amount,                 Float8GetDatum(s->sample_rate),
                       s->throttle,                  CStringGetTextDatum(s->channel), s->delay,
                       s->expires_after,             BoolGetDatum(s->needs_recipient)};
        if (SPI_execute_plan(s->contact ? plan_set_contact : plan_set, a, NULL, false, 0) != SPI_OK_SELECT)
            elog(ERROR, "nps_billing: set capture failed");
        bool isnull;
        surveys = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
        nullkeys = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
        SPI_freetuptable(SPI_tuptable);
    });
    SPI_unregister_relation("nps_eval");
    tuplestore_end(evald);
    if (surveys > 0)
        Async_Notify("nps_billing_survey", s->name);
    return nullkeys;
}

// One statement's rows through the row or the set path (s is pinned by the caller).
void capture_statement(Source *s, TriggerData *td, int64 n, Oid owner, Oid extnsp, bool nested) {
    Tuplestorestate *ts = td->tg_newtable;
    if (SPI_register_trigger_data(td) != SPI_OK_TD_REGISTER)
        elog(ERROR, "nps_billing: could not register the transition table");
    if (s->raise) {
        // The error goes to the payment's writer: say which source raised it, not our statements.
        MemoryContext oldcxt = CurrentMemoryContext;
        PG_TRY();
        {
            if (n <= ROW_PATH_MAX || s->broken_msg) {
                run_row_path(s, td->tg_relation, ts, owner, extnsp, TRIGGER_FIRED_BY_INSERT(td->tg_event), nested);
            } else {
                int64 nullkeys = run_set_path(s, td->tg_relation, owner, extnsp);
                if (nullkeys > 0)
                    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                                    errmsg("payment_key expression returned NULL for %lld row(s)", (long long)nullkeys)));
            }
        }
        PG_CATCH();
        {
            MemoryContextSwitchTo(oldcxt);
            ErrorData *ed = CopyErrorData();
            FlushErrorState();  // the original (which may quote the row's values) is never reported
            int code = ed->sqlerrcode;
            char *msg = scrubbed_message(s, ed);
            ereport(ERROR, (errcode(code),
                            raise_key[0] ? errmsg("capture of payment source \"%s\" failed for payment key \"%s\": %s",
                                                  s->name, raise_key, msg)
                                         : errmsg("capture of payment source \"%s\" failed: %s", s->name, msg),
                            errdetail("SQLSTATE %s (on_error = raise). The row's values are not shown.",
                                      unpack_sql_state(code))));
        }
        PG_END_TRY();
    } else if (n <= ROW_PATH_MAX || s->broken_msg) {
        run_row_path(s, td->tg_relation, ts, owner, extnsp, TRIGGER_FIRED_BY_INSERT(td->tg_event), nested);
    } else {
        // One subtransaction for the whole set; if anything in it fails, redo the statement row
        // by row so that only the bad rows land in capture_error.
        ErrorData *failed = in_subtransaction([&] { run_set_path(s, td->tg_relation, owner, extnsp); });
        if (failed) {
            FreeErrorData(failed);
            SPI_unregister_relation("nps_eval");  // may still be registered (result ignored)
            run_row_path(s, td->tg_relation, ts, owner, extnsp, TRIGGER_FIRED_BY_INSERT(td->tg_event), nested);
        }
    }
}

}  // namespace

// capture() RETURNS trigger: AFTER INSERT / AFTER UPDATE ... REFERENCING NEW TABLE AS nps_new
// FOR EACH STATEMENT on a tracked table.
NPS_FUNCTION(nps_capture_trigger) {
    if (!CALLED_AS_TRIGGER(fcinfo))
        ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                        errmsg("nps_billing.capture() must be called as a trigger")));
    TriggerData *td = reinterpret_cast<TriggerData *>(fcinfo->context);
    if (!TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) ||
        td->tg_trigger->tgnewtable == NULL || strcmp(td->tg_trigger->tgnewtable, "nps_new") != 0)
        ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                        errmsg("nps_billing.capture() must be an AFTER ... FOR EACH STATEMENT trigger with "
                               "REFERENCING NEW TABLE AS nps_new"),
                        errhint("Use nps_billing.track_payments() to create it.")));
    Tuplestorestate *ts = td->tg_newtable;
    if (ts == NULL || tuplestore_tuple_count(ts) == 0)
        return PointerGetDatum(NULL);
    int64 n = tuplestore_tuple_count(ts);
    Oid extnsp = ext_namespace();
    Oid owner = ext_owner();
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "nps_billing: SPI_connect failed");
    // Whatever the writer's session says, expressions read and run under fixed settings; nothing
    // they change outlives this invocation (on error, the (sub)transaction abort undoes it all).
    int gucs = pin_settings();
    Source *s = get_source(td->tg_relation, owner, extnsp);
    if (!s->tracked) {
        unpin_settings(gucs);
        warn_untracked_capture(td->tg_relation);  // a Citus shard, a table restored without its source
        SPI_finish();
        return PointerGetDatum(NULL);
    }
    // Pinned for the whole invocation, also when an error unwinds it: an expression may run a
    // statement that fires this trigger again and invalidates the source meanwhile.
    s->pins++;
    bool nested = s->pins > 1;
    use_eval_path(s);
    PG_TRY();
    {
        capture_statement(s, td, n, owner, extnsp, nested);
    }
    PG_FINALLY();
    {
        s->pins--;
    }
    PG_END_TRY();
    unpin_settings(gucs);
    SPI_finish();
    return PointerGetDatum(NULL);
}

// _capture_cache_changed(): trigger on payment_source, customer_contact and opt_out; the relcache
// invalidation of the table makes every backend drop what it cached from it (capture sources,
// the memos of src/capture_memo.cpp) once the change commits.
NPS_FUNCTION(nps_capture_cache_changed) {
    if (!CALLED_AS_TRIGGER(fcinfo))
        ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                        errmsg("must be called as a trigger")));
    TriggerData *td = reinterpret_cast<TriggerData *>(fcinfo->context);
    CacheInvalidateRelcacheByRelid(RelationGetRelid(td->tg_relation));
    return PointerGetDatum(NULL);
}
