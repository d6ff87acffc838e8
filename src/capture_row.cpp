// Capture: the row path (statements of few rows): each row evaluated (ExprStates or SPI), its
// policy decided, its event and survey written; in record mode an error becomes a capture_error row.
#include "capture_trigger.hpp"
#include "contact.hpp"

extern "C" {
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
}

namespace nps {
namespace capture {

// The key of the row whose capture raised (on_error = 'raise'), for the error message.
char raise_key[64];

namespace {

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

}  // namespace

// A survey is due for event eid (survey id sid, customer cust): take the customer's throttle lock
// row; if another transaction took it first the event says 'throttled', else the survey is written
// and senders are woken. Runs as the owner.
void survey_after_event(RowCtx *rc, const Eval *ev, int64 eid, int64 sid, Datum cust, MemoryContext rowcxt) {
    Source *s = rc->s;
    int gucs = rc->lean ? pin_settings() : -1;  // its statements add intervals in UTC
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
        unpin_settings(gucs);
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
    unpin_settings(gucs);
    Async_Notify("nps_billing_survey", s->name);
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

namespace {

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
    int gucs = rc->lean ? pin_settings() : -1;  // payment_event has triggers now: SQL path, settings pinned
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
    unpin_settings(gucs);
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
          strcmp(ed->constraint_name, "payment_event_source_id_payment_key_kind_key") == 0)) {
        // The key may be recomputed through SPI: under every pinned setting and EVAL_PATH.
        int gucs = -1;
        if (rc->lean) {
            gucs = pin_settings();
            use_eval_path(rc->s);
        }
        record_error(rc, ed);
        unpin_settings(gucs);
    }
    FreeErrorData(ed);
}

}  // namespace


void run_row_path(Source *s, Relation rel, Tuplestorestate *ts, Oid owner, Oid extnsp, bool inserted, bool nested,
                  bool lean) {
    TupleDesc desc = RelationGetDescr(rel);
    int natts = desc->natts;
    MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext, "nps_billing capture row", ALLOCSET_DEFAULT_SIZES);
    MemoryContext old;
    RowCtx rc;
    rc.s = s;
    rc.inserted = inserted;
    // A nested invocation on a source in use evaluates through SPI: an ExprState is not reentrant.
    rc.fast = s->fast && !nested;
    rc.lean = lean;
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

}  // namespace capture
}  // namespace nps
