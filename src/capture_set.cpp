// Capture: the set path (INSERT ... SELECT, COPY): the statement's rows evaluated into a
// tuplestore, then one data-modifying statement as the owner.
#include "capture_trigger.hpp"

extern "C" {
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/sequence.h"
#include "executor/tuptable.h"
#include "utils/lsyscache.h"
#include "executor/spi.h"
#include "executor/tstoreReceiver.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"
}

namespace nps {
namespace capture {

TupleDesc make_desc(int n, const char *const *names, const Oid *types) {
    TupleDesc d = CreateTemplateTupleDesc(n);
    for (int i = 0; i < n; i++)
        TupleDescInitEntry(d, static_cast<AttrNumber>(i + 1), names[i], types[i], -1, 0);
    return d;
}

void register_store(const char *name, TupleDesc desc, Tuplestorestate *ts) {
    EphemeralNamedRelation enr = static_cast<EphemeralNamedRelation>(palloc0(sizeof(EphemeralNamedRelationData)));
    enr->md.name = pstrdup(name);
    enr->md.reliddesc = InvalidOid;
    enr->md.tupdesc = desc;
    enr->md.enrtype = ENR_NAMED_TUPLESTORE;
    enr->md.enrtuples = tuplestore_tuple_count(ts);
    enr->reldata = ts;
    if (SPI_register_relation(enr) != SPI_OK_REL_REGISTER)
        elog(ERROR, "nps_billing: could not register %s", name);
}


namespace {

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

// When the statement's payment keys are distinct (checked by the scan of the evaluated rows,
// src/capture_set_scan.cpp), each customer's candidate (nps_cand, in customer order) is the
// earliest row passing the row-level checks. Then the work is a few statements under one snapshot,
// none of which joins the statement's rows with anything the planner must guess the size of:
// - which of the statement's payments are recorded already (FAST_RECORDED_SQL, read only: an
//   anti-join inside the event insert can be planned as a scan of payment_event per row, while
//   the insert grows it); a recorded candidate: the general statement (the customer's candidate
//   is then its earliest row not recorded);
// - grant the throttle to the candidates (FAST_GRANT_SQL), number the granted ones in C (survey
//   and event ids in customer order, src/capture_set_ids.cpp);
// - insert the events (FAST_EVENTS_SQL: ids and "recorded" looked up per row in C, no join) and
//   the surveys (FAST_SURVEYS_SQL, from nps_granted).
// $11: opt_out may have rows (planned as a constant: when false, no opt-out probe); sample_point
// is left out when the rate is 1 (it is below 1). $12: some payments are recorded.
// (At most FAST_RECORDED_MAX recorded payments, or the general statement: a reload of a whole batch.)
const int64 FAST_RECORDED_MAX = 100000;
const char *FAST_RECORDED_SQL =
    "SELECT e.payment_key, e.kind FROM nps_eval e"
    " WHERE EXISTS (SELECT 1 FROM nps_billing.payment_event pe"
    "               WHERE pe.source_id = $1 AND pe.payment_key = e.payment_key AND pe.kind = e.kind)";

// (the customer-level checks of the set statement; a throttled customer's row is not locked)
const char *FAST_GRANT_SQL =
    "INSERT INTO nps_billing.customer_contact AS cc (customer_id, last_survey_at)"
    " SELECT c.customer, now() FROM nps_cand c WHERE CASE"
    "   WHEN $11 AND EXISTS (SELECT 1 FROM nps_billing.opt_out o WHERE o.customer_id = c.customer) THEN false"
    "   WHEN EXISTS (SELECT 1 FROM nps_billing.customer_contact x"
    "                WHERE x.customer_id = c.customer AND x.last_survey_at >= now() - $7) THEN false"
    "   ELSE true END"
    " ORDER BY c.customer COLLATE \"C\""
    " ON CONFLICT (customer_id) DO UPDATE SET last_survey_at = excluded.last_survey_at"
    " WHERE cc.last_survey_at < now() - $7"
    " RETURNING cc.customer_id";

// A row that passes the row-level checks and has no survey lost to its customer's candidate, or
// its customer is throttled: 'throttled', as COALESCE(skip, 'throttled') in SET_SQL. The ids come
// from _capture_set_id() (src/capture_set_ids.cpp), not a join: it is VOLATILE, so the subquery
// stays as it is and calls it once per row and column.
const char *FAST_EVENTS_SQL =
    "INSERT INTO nps_billing.payment_event AS pe (id, source_id, payment_key, kind, customer_id, amount, currency,"
    "                                             occurred_at, attributes, survey_id, skip_reason)"
    " SELECT f.eid, $1, f.payment_key, f.kind, f.customer, f.amount, f.currency, f.occurred_at, f.attributes, f.sid,"
    "        CASE WHEN f.sid IS NULL THEN CASE"
    "    WHEN NOT $2 THEN 'disabled'"
    "    WHEN NOT CASE f.kind WHEN 'succeeded' THEN $3 ELSE $4 END THEN 'not_surveyed_kind'"
    "    WHEN f.customer IS NULL THEN 'no_customer'"
    "    WHEN $11 AND EXISTS (SELECT 1 FROM nps_billing.opt_out o WHERE o.customer_id = f.customer) THEN 'opted_out'"
    "    WHEN COALESCE(f.amount, 0) < $5 THEN 'below_min_amount'"
    "    WHEN $6 < 1 AND nps_billing.sample_point(f.customer, f.payment_key) >= $6 THEN 'sampled_out'"
    "    ELSE 'throttled' END END"
    " FROM (SELECT e.*, nps_billing._capture_set_id(e.payment_key, e.kind, 1) AS eid,"
    "              nps_billing._capture_set_id(e.payment_key, e.kind, 2) AS sid"
    "       FROM nps_eval e WHERE e.payment_key IS NOT NULL"
    "       AND NOT ($12 AND nps_billing._capture_set_id(e.payment_key, e.kind, 0) IS NOT NULL)) f";

const char *FAST_SURVEYS_SQL =
    "INSERT INTO nps_billing.survey (id, token, source_id, event_id, customer_id, channel, send_after, expires_at)"
    " SELECT g.sid, nps_billing.new_token(), $1, g.eid, g.customer, $8, now() + $9, now() + $9 + $10"
    " FROM nps_granted g";

const char *NULL_KEYS_SQL =
    "INSERT INTO nps_billing.capture_error (source_id, error, sqlstate)"
    " SELECT $1, 'payment_key expression returned NULL', '22004' FROM generate_series(1, $2)";

SPIPlanPtr plan_fast_recorded, plan_fast_grant, plan_fast_events, plan_fast_surveys, plan_null_keys;

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

// A tuple descriptor of text-like columns, built once (TopMemoryContext).
TupleDesc kept_desc(TupleDesc *slot, int n, const char *const *names, const Oid *types) {
    if (*slot == NULL) {
        MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
        *slot = make_desc(n, names, types);
        MemoryContextSwitchTo(old);
    }
    return *slot;
}

TupleDesc eval_desc() {
    static const char *const names[EVAL_NCOLS] = {"kind", "customer", "payment_key", "amount", "currency",
                                                  "occurred_at", "attributes", "recipient", "locale", "time_zone"};
    static const Oid types[EVAL_NCOLS] = {TEXTOID, TEXTOID, TEXTOID, NUMERICOID, TEXTOID,
                                          TIMESTAMPTZOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID};
    static TupleDesc desc = NULL;
    return kept_desc(&desc, EVAL_NCOLS, names, types);
}

// nps_cand: a customer's candidate row (customer, payment_key, kind).
TupleDesc cand_desc() {
    static const char *const names[] = {"customer", "payment_key", "kind"};
    static const Oid types[] = {TEXTOID, TEXTOID, TEXTOID};
    static TupleDesc desc = NULL;
    return kept_desc(&desc, 3, names, types);
}

// nps_granted: the granted candidates with their survey and event ids.
TupleDesc granted_desc() {
    static const char *const names[] = {"customer", "payment_key", "kind", "sid", "eid"};
    static const Oid types[] = {TEXTOID, TEXTOID, TEXTOID, INT8OID, INT8OID};
    static TupleDesc desc = NULL;
    return kept_desc(&desc, 5, names, types);
}

struct Bytes {
    const char *p;
    int len;
};

Bytes text_bytes(Datum d) {
    struct varlena *t = pg_detoast_datum_packed(reinterpret_cast<struct varlena *>(DatumGetPointer(d)));
    return Bytes{VARDATA_ANY(t), static_cast<int>(VARSIZE_ANY_EXHDR(t))};
}

int bytes_cmp(const Bytes &a, const Bytes &b) {
    return c_order(a.p, a.len, b.p, b.len);
}

int bytes_qsort_cmp(const void *a, const void *b) {
    return bytes_cmp(*static_cast<const Bytes *>(a), *static_cast<const Bytes *>(b));
}

Oid sequence_oid(const char *name, Oid extnsp) {
    Oid seq = get_relname_relid(name, extnsp);
    if (!OidIsValid(seq))
        elog(ERROR, "nps_billing: sequence %s is missing", name);
    return seq;
}

// The candidates (nps_cand, customer order) whose customer is among the n granted ones of tt,
// numbered in that order: a survey id, then its event's id, as SET_SQL numbers them.
void number_granted(Tuplestorestate *cands, SPITupleTable *tt, uint64 n, Oid eseq, Oid extnsp, Tuplestorestate *out,
                    SetIds *ids) {
    Bytes *g = static_cast<Bytes *>(palloc_extended((n + 1) * sizeof(Bytes), MCXT_ALLOC_HUGE));
    uint64 ng = 0;
    for (uint64 i = 0; i < n; i++) {
        bool isnull;
        Datum d = SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull);
        if (!isnull)
            g[ng++] = text_bytes(d);
    }
    qsort(g, ng, sizeof(Bytes), bytes_qsort_cmp);
    Oid sseq = sequence_oid("survey_id_seq", extnsp);
    TupleTableSlot *slot = MakeSingleTupleTableSlot(cand_desc(), &TTSOpsMinimalTuple);
    tuplestore_select_read_pointer(cands, 0);
    tuplestore_rescan(cands);
    uint64 gi = 0;
    while (gi < ng && tuplestore_gettupleslot(cands, true, false, slot)) {
        slot_getallattrs(slot);
        Bytes c = text_bytes(slot->tts_values[0]);
        while (gi < ng && bytes_cmp(g[gi], c) < 0)
            gi++;
        if (gi == ng || bytes_cmp(g[gi], c) != 0)
            continue;
        int64 sid = nextval_internal(sseq, true), eid = nextval_internal(eseq, true);
        Datum v[5] = {slot->tts_values[0], slot->tts_values[1], slot->tts_values[2], Int64GetDatum(sid),
                      Int64GetDatum(eid)};
        bool nulls[5] = {false, false, false, false, false};
        tuplestore_putvalues(out, granted_desc(), v, nulls);
        Bytes k = text_bytes(slot->tts_values[1]), kind = text_bytes(slot->tts_values[2]);
        set_ids_add(ids, k.p, k.len, kind_is_failed(kind.p, kind.len), sid, eid, false);
        gi++;
    }
    ExecDropSingleTupleTableSlot(slot);
    pfree(g);
}

void read_counts(int64 *surveys, int64 *nullkeys) {
    bool isnull;
    *surveys = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
    *nullkeys = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
    SPI_freetuptable(SPI_tuptable);
}

// Whether a candidate (nps_cand) is among the recorded payments of ids.
bool candidate_recorded(Tuplestorestate *cands, const SetIds *ids) {
    TupleTableSlot *slot = MakeSingleTupleTableSlot(cand_desc(), &TTSOpsMinimalTuple);
    tuplestore_select_read_pointer(cands, 0);
    tuplestore_rescan(cands);
    bool found = false;
    while (!found && tuplestore_gettupleslot(cands, true, false, slot)) {
        slot_getallattrs(slot);
        Bytes k = text_bytes(slot->tts_values[1]), kind = text_bytes(slot->tts_values[2]);
        found = set_ids_recorded(ids, k.p, k.len, kind_is_failed(kind.p, kind.len));
    }
    ExecDropSingleTupleTableSlot(slot);
    return found;
}

// The fast path over nps_eval and nps_cand (see FAST_RECORDED_SQL), as the owner, all under one
// snapshot: what the check saw recorded is what the event insert leaves out.
void run_fast(const Source *s, Datum *a, Oid *t, Tuplestorestate *cands, int64 ncand, int64 nullkeys_seen,
              Oid extnsp, int64 *surveys, int64 *nullkeys) {
    if (plan_fast_recorded == NULL)
        plan_fast_recorded = keep(FAST_RECORDED_SQL, 1, t, CURSOR_OPT_CUSTOM_PLAN);
    if (plan_fast_grant == NULL)
        plan_fast_grant = keep(FAST_GRANT_SQL, 11, t, CURSOR_OPT_CUSTOM_PLAN);
    if (plan_null_keys == NULL) {
        Oid nt[] = {INT4OID, INT8OID};
        plan_null_keys = keep(NULL_KEYS_SQL, 2, nt, CURSOR_OPT_CUSTOM_PLAN);
    }
    Oid eseq = sequence_oid("payment_event_id_seq", extnsp);
    Snapshot snap = RegisterSnapshot(GetTransactionSnapshot());
    auto run = [&](SPIPlanPtr p, Datum *args, int want, int64 limit) {
        if (SPI_execute_snapshot(p, args, NULL, snap, InvalidSnapshot, false, true, limit) != want)
            elog(ERROR, "nps_billing: set capture failed");
    };
    run(plan_fast_recorded, a, SPI_OK_SELECT, FAST_RECORDED_MAX);
    uint64 nrec = SPI_processed;
    SetIds *ids = NULL;
    if (nrec < static_cast<uint64>(FAST_RECORDED_MAX)) {
        ids = set_ids_create(nrec + ncand, eseq);
        for (uint64 i = 0; i < nrec; i++) {
            bool n1, n2;
            Bytes k = text_bytes(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &n1));
            Bytes kind = text_bytes(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &n2));
            set_ids_add(ids, k.p, k.len, kind_is_failed(kind.p, kind.len), 0, 0, true);
        }
    }
    SPI_freetuptable(SPI_tuptable);
    if (ids == NULL || (nrec > 0 && candidate_recorded(cands, ids))) {
        run(plan_set, a, SPI_OK_SELECT, 0);
        read_counts(surveys, nullkeys);
        UnregisterSnapshot(snap);
        return;
    }
    a[10] = BoolGetDatum(!(s->direct && OidIsValid(s->oo_rel) && opt_out_is_empty(s->oo_rel)));
    a[11] = BoolGetDatum(nrec > 0);
    Tuplestorestate *granted = tuplestore_begin_heap(false, false, work_mem);
    if (ncand > 0) {
        run(plan_fast_grant, a, SPI_OK_INSERT_RETURNING, 0);
        number_granted(cands, SPI_tuptable, SPI_processed, eseq, extnsp, granted, ids);
        SPI_freetuptable(SPI_tuptable);
    }
    int64 ng = tuplestore_tuple_count(granted);
    register_store("nps_granted", granted_desc(), granted);
    // (prepared once nps_granted is registered: the parser needs it)
    if (plan_fast_events == NULL)
        plan_fast_events = keep(FAST_EVENTS_SQL, 12, t, CURSOR_OPT_CUSTOM_PLAN);
    if (plan_fast_surveys == NULL)
        plan_fast_surveys = keep(FAST_SURVEYS_SQL, 10, t, CURSOR_OPT_CUSTOM_PLAN);
    set_ids_push(ids);
    PG_TRY();
    {
        run(plan_fast_events, a, SPI_OK_INSERT, 0);
    }
    PG_FINALLY();
    {
        set_ids_pop(ids);
    }
    PG_END_TRY();
    if (ng > 0)
        run(plan_fast_surveys, a, SPI_OK_INSERT, 0);
    if (nullkeys_seen > 0) {
        Datum na[2] = {a[0], Int64GetDatum(nullkeys_seen)};
        run(plan_null_keys, na, SPI_OK_INSERT, 0);
    }
    SPI_unregister_relation("nps_granted");
    tuplestore_end(granted);
    UnregisterSnapshot(snap);
    *surveys = ng;
    *nullkeys = nullkeys_seen;
}

}  // namespace

// The set path: evaluate every row of the statement as the writer into a tuplestore, then one
// data-modifying statement as the owner. Returns the number of NULL payment keys met.
int64 run_set_path(Source *s, Relation rel, Oid owner, Oid extnsp) {
    Tuplestorestate *evald = tuplestore_begin_heap(false, false, work_mem);
    DestReceiver *dest = CreateDestReceiver(DestTuplestore);
    SetTuplestoreDestReceiverParams(dest, evald, CurrentMemoryContext, false, NULL, NULL);
    // (a contact source's candidates also depend on its cleaned recipient: the general statement)
    DestReceiver *scan = s->contact ? NULL : set_scan_begin(s, dest);
    as_table_owner(s->table_owner, [&] {
        if (s->set_plan == NULL) {
            SPIPlanPtr p = SPI_prepare(eval_sql(s->exprs, s->legacy_path ? RelationGetRelationName(rel) : ROW_ALIAS), 0, NULL);
            if (p == NULL)
                elog(ERROR, "nps_billing: could not prepare the set evaluation of source %d", s->id);
            SPI_keepplan(p);
            s->set_plan = p;
        }
        SPIExecuteOptions opt;
        memset(&opt, 0, sizeof opt);
        opt.read_only = false;
        opt.dest = scan ? scan : dest;
        if (SPI_execute_plan_extended(s->set_plan, &opt) != SPI_OK_SELECT)
            elog(ERROR, "nps_billing: set evaluation failed");
    });
    dest->rDestroy(dest);
    int64 ncand = 0, nullkeys_seen = 0;
    Tuplestorestate *cands = NULL;
    if (scan) {
        cands = set_scan_candidates(scan, cand_desc(), &ncand, &nullkeys_seen);
        set_scan_end(scan);
    }
    register_store("nps_eval", eval_desc(), evald);
    if (cands)
        register_store("nps_cand", cand_desc(), cands);
    int64 surveys = 0, nullkeys = 0;
    as_owner(owner, extnsp, [&] {
        Oid t[] = {INT4OID, BOOLOID, BOOLOID, BOOLOID, NUMERICOID, FLOAT8OID, INTERVALOID, TEXTOID, INTERVALOID,
                   INTERVALOID, BOOLOID, BOOLOID};
        if (plan_set == NULL)
            plan_set = keep(SET_SQL, 10, t, CURSOR_OPT_CUSTOM_PLAN);
        if (plan_set_contact == NULL && s->contact)
            plan_set_contact = keep(SET_SQL_CONTACT, 11, t, CURSOR_OPT_CUSTOM_PLAN);
        Datum a[12] = {Int32GetDatum(s->id),         BoolGetDatum(s->enabled),      BoolGetDatum(s->on_succeeded),
                       BoolGetDatum(s->on_failed),   s->min_amount,                 Float8GetDatum(s->sample_rate),
                       s->throttle,                  CStringGetTextDatum(s->channel), s->delay,
                       s->expires_after,             BoolGetDatum(s->needs_recipient)};
        if (cands) {
            run_fast(s, a, t, cands, ncand, nullkeys_seen, extnsp, &surveys, &nullkeys);
            return;
        }
        if (SPI_execute_plan(s->contact ? plan_set_contact : plan_set, a, NULL, false, 0) != SPI_OK_SELECT)
            elog(ERROR, "nps_billing: set capture failed");
        read_counts(&surveys, &nullkeys);
    });
    SPI_unregister_relation("nps_eval");
    tuplestore_end(evald);
    if (cands) {
        SPI_unregister_relation("nps_cand");
        tuplestore_end(cands);
    }
    if (surveys > 0)
        Async_Notify("nps_billing_survey", s->name);
    return nullkeys;
}

}  // namespace capture
}  // namespace nps
