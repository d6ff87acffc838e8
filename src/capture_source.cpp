// Capture: the per-backend cache of payment sources (loaded as the owner, compiled as the table
// owner, invalidated by relcache callbacks) and the owner-side plans the trigger shares.
#include "capture_trigger.hpp"

extern "C" {
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "optimizer/optimizer.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
}

namespace nps {
namespace capture {

namespace {

Source *sources = NULL;
Source *zombies = NULL;  // invalidated while pinned
Oid payment_source_relid = InvalidOid;
bool callback_registered = false;

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

}  // namespace

SPIPlanPtr plan_load, plan_contact, plan_event, plan_unsurvey, plan_survey, plan_survey_contact, plan_error, plan_set,
    plan_set_contact;

SPIPlanPtr keep(const char *sql, int nargs, Oid *types, int opts) {
    SPIPlanPtr p = SPI_prepare_cursor(sql, nargs, types, opts);
    if (p == NULL)
        elog(ERROR, "nps_billing: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
    SPI_keepplan(p);
    return p;
}

namespace {

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

}  // namespace

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
                bool lean = fast;
                if (fast)
                    for (int i = 0; i < X_COUNT; i++) {
                        Expr *planned = fx[i] ? expression_planner(fx[i]) : NULL;
                        lean = lean && (planned == NULL || settings_free(reinterpret_cast<Node *>(planned)));
                        s->xs[i] = planned ? ExecInitExpr(planned, NULL) : NULL;
                    }
                s->fast = fast;
                s->lean = lean && s->direct && !s->raise && s->legacy_path == NULL;
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

}  // namespace capture
}  // namespace nps
