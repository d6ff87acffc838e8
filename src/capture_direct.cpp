// Capture: the direct writes of the row path (record mode, no SPI in the common case): index
// probes of opt_out, customer_contact and payment_event, and the event inserted without the planner.
#include "capture_trigger.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_class.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "rewrite/rewriteHandler.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

namespace nps {
namespace capture {

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

namespace {

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

}  // namespace

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
        // In UTC whatever TimeZone says (timestamp arithmetic on the same instant): as pinned.
        TimestampTz since = DatumGetTimestampTz(DirectFunctionCall2(
            timestamp_mi_interval, TimestampGetDatum(GetCurrentTransactionStartTimestamp()), s->throttle));
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

}  // namespace capture
}  // namespace nps
