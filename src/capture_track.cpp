// Capture: track_payments() / untrack_payments().
//
// Both run with the caller's rights for every check (only the table's owner or a superuser may
// track it; the expressions are checked against the table) and switch to the extension owner only
// to write payment_source and create / drop the triggers, so callers need no grant on our tables.
#include "capture.hpp"

extern "C" {
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"
#include "utils/rel.h"
}

using namespace nps::capture;

namespace {

char *arg_text(FunctionCallInfo fcinfo, int i) {
    // (a database still at 0.1 declares fewer arguments)
    return i >= PG_NARGS() || PG_ARGISNULL(i) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(i));
}

// Opens the table for (un)tracking and checks the caller may do it.
Relation open_tracked_table(Oid relid, LOCKMODE lock, const char *what) {
    Relation rel = table_open(relid, lock);
    if (rel->rd_rel->relkind != RELKIND_RELATION && rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
        ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
                        errmsg("cannot %s \"%s\": only tables can be tracked", what, RelationGetRelationName(rel))));
    if (!nps::compat::class_ownercheck(relid, GetUserId()))
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("must be owner of table %s to %s it", RelationGetRelationName(rel), what)));
    return rel;
}

const char *qualified(Relation rel) {
    return quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)), RelationGetRelationName(rel));
}

void spi_exec(const char *sql) {
    int rc = SPI_execute(sql, false, 0);
    if (rc < 0)
        elog(ERROR, "nps_billing: SPI_execute failed: %s", SPI_result_code_string(rc));
}

// $12 (the texts as written, in argument order) as {"customer": ..., ...}, absent ones left out.
#define WRITTEN_JSON                                                                                           \
    "(SELECT pg_catalog.jsonb_object_agg(u.k, u.v) FROM ROWS FROM (pg_catalog.unnest('{customer,"             \
    "payment_key,succeeded_when,failed_when,amount,currency,paid_at,attributes,recipient,locale,time_zone}'"    \
    "::pg_catalog.text[]), pg_catalog.unnest($12)) AS u(k, v) WHERE u.v IS NOT NULL)"

// The argument of track_payments holding expression slot i: customer .. attributes are $2..$9,
// then name and on_error, then recipient, locale, time_zone ($12..$14).
int expr_arg(int slot) { return slot < X_EVENT_COUNT ? slot + 1 : slot + 3; }

}  // namespace

// track_payments(source regclass, customer text, payment_key text, succeeded_when text,
//                failed_when text, amount text, currency text, paid_at text, attributes text,
//                name text, on_error text, recipient text, locale text, time_zone text)
//                RETURNS integer
NPS_FUNCTION(nps_track_payments) {
    static const char *const required[] = {"source", "customer", "payment_key", "succeeded_when"};
    for (int i = 0; i < 4; i++)
        if (PG_ARGISNULL(i))
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("%s must not be NULL", required[i])));
    Oid relid = PG_GETARG_OID(0);
    const char *exprs[X_COUNT];
    for (int i = 0; i < X_COUNT; i++)
        exprs[i] = arg_text(fcinfo, expr_arg(i));
    char *name = arg_text(fcinfo, 9);
    char *on_error = arg_text(fcinfo, 10);
    if (on_error == NULL || (strcmp(on_error, "record") != 0 && strcmp(on_error, "raise") != 0))
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("on_error must be 'record' or 'raise', not %s", on_error ? quote_literal_cstr(on_error) : "NULL")));
    if (name != NULL && name[0] == '\0')
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("name must not be empty")));

    // ShareRowExclusiveLock: what CREATE TRIGGER takes; no writer can slip in between.
    Relation rel = open_tracked_table(relid, ShareRowExclusiveLock, "track");
    if (name == NULL)
        name = pstrdup(RelationGetRelationName(rel));
    RowShape *shape = make_shape(CurrentMemoryContext, RelationGetRelationName(rel), RelationGetDescr(rel));
    const char *qrel = qualified(rel);
    Oid tablensp = RelationGetNamespace(rel);
    refuse_citus_table(rel, qrel);

    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "nps_billing: SPI_connect failed");
    if (SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'nps_billing' AND extversion = '0.1'", true,
                    1) != SPI_OK_SELECT)
        elog(ERROR, "nps_billing: could not read pg_extension");
    // A database still at 0.1 (the library was updated first): expressions are stored as written,
    // read as 0.1 reads them, and bound by ALTER EXTENSION nps_billing UPDATE.
    bool legacy = SPI_processed > 0;
    // The settings the trigger evaluates under (standard_conforming_strings, ...), whatever the
    // caller's session says; names in the text resolve in pg_catalog, then the table's schema.
    int gucs = pin_settings();
    set_search_path(psprintf("pg_catalog, %s", quote_identifier(get_namespace_name(tablensp))));
    for (int i = 0; i < X_COUNT; i++)
        check_expression(static_cast<ExprSlot>(i), exprs[i], shape);
    // Bound: schema-qualified, read back the same under the trigger's search_path.
    const char *bound[X_COUNT];
    for (int i = 0; i < X_COUNT; i++)
        bound[i] = legacy ? exprs[i] : bind_expression(static_cast<ExprSlot>(i), exprs[i], rel);
    // The compiled statement as a whole (defence in depth: exactly the 7 columns we build).
    if (!legacy)
        set_search_path(EVAL_PATH);
    {
        SPIPlanPtr plan = SPI_prepare_params(eval_sql(bound, NULL), parser_setup, shape, 0);
        if (plan == NULL)
            elog(ERROR, "nps_billing: could not compile the expressions: %s", SPI_result_code_string(SPI_result));
        List *sources = SPI_plan_get_plan_sources(plan);
        if (list_length(sources) != 1 ||
            static_cast<CachedPlanSource *>(linitial(sources))->resultDesc == NULL ||
            static_cast<CachedPlanSource *>(linitial(sources))->resultDesc->natts != EVAL_NCOLS)
            ereport(ERROR, (errcode(ERRCODE_SYNTAX_ERROR), errmsg("the expressions do not compile into one evaluation")));
        SPI_freeplan(plan);
    }
    // The text as written, for people (what runs is the bound text).
    Datum written;
    {
        Datum vals[X_COUNT];
        bool nulls[X_COUNT];
        for (int i = 0; i < X_COUNT; i++) {
            nulls[i] = exprs[i] == NULL;
            vals[i] = nulls[i] ? (Datum)0 : CStringGetTextDatum(exprs[i]);
        }
        int dims[1] = {X_COUNT}, lbs[1] = {1};
        written = PointerGetDatum(construct_md_array(vals, nulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
    }

    int32 id = 0;
    as_owner(ext_owner(), ext_namespace(), [&] {
        Oid t1[] = {OIDOID};
        Datum a1[] = {ObjectIdGetDatum(relid)};
        if (SPI_execute_with_args("SELECT name FROM nps_billing.payment_source WHERE relid = $1 AND tracked", 1, t1,
                                  a1, NULL, true, 1) != SPI_OK_SELECT)
            elog(ERROR, "nps_billing: could not read payment_source");
        if (SPI_processed > 0)
            ereport(ERROR, (errcode(ERRCODE_DUPLICATE_OBJECT),
                            errmsg("table %s is already tracked by payment source \"%s\"", qrel,
                                   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
                            errhint("Call nps_billing.untrack_payments() first to change its expressions.")));
        Oid t2[] = {TEXTOID, OIDOID};
        Datum a2[] = {CStringGetTextDatum(name), ObjectIdGetDatum(relid)};
        if (SPI_execute_with_args("SELECT id, relid = $2, tracked FROM nps_billing.payment_source WHERE name = $1",
                                  2, t2, a2, NULL, true, 1) != SPI_OK_SELECT)
            elog(ERROR, "nps_billing: could not read payment_source");
        bool reactivate = false;
        if (SPI_processed > 0) {
            bool isnull;
            bool same = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
            if (!same)
                ereport(ERROR, (errcode(ERRCODE_DUPLICATE_OBJECT),
                                errmsg("payment source \"%s\" already exists", name),
                                errhint("Pass another name => to track_payments().")));
            reactivate = true;  // the same table tracked again under its old name: history continues
        }
        // $1 relid, $2..$9 expressions, $10 name, $11 on_error, $12 as written, $13..$15 contact
        Oid t[15] = {OIDOID,  TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,      TEXTOID, TEXTOID,
                     TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID, TEXTOID, TEXTOID};
        Datum a[15];
        char n[16];
        a[0] = ObjectIdGetDatum(relid);
        n[0] = ' ';
        // $2..$9 the payment's expressions, $13..$15 the contact expressions
        for (int i = 0; i < X_COUNT; i++) {
            int k = i < X_EVENT_COUNT ? i + 1 : i + 4;
            a[k] = bound[i] ? CStringGetTextDatum(bound[i]) : (Datum)0;
            n[k] = bound[i] ? ' ' : 'n';
        }
        a[9] = CStringGetTextDatum(name);
        n[9] = ' ';
        a[10] = CStringGetTextDatum(on_error);
        n[10] = ' ';
        a[11] = written;
        n[11] = ' ';
        n[15] = '\0';
        const char *sql =
            legacy && reactivate
                ? "UPDATE nps_billing.payment_source SET customer_expr = $2, payment_key_expr = $3, succeeded_expr = $4, "
                  "failed_expr = $5, amount_expr = $6, currency_expr = $7, paid_at_expr = $8, attributes_expr = $9, "
                  "on_error = $11, tracked = true WHERE name = $10 AND relid = $1 AND $12 IS NOT NULL RETURNING id"
            : legacy
                ? "INSERT INTO nps_billing.payment_source (relid, customer_expr, payment_key_expr, succeeded_expr, "
                  "failed_expr, amount_expr, currency_expr, paid_at_expr, attributes_expr, name, on_error) "
                  "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 WHERE $12 IS NOT NULL RETURNING id"
            : reactivate
                ? "UPDATE nps_billing.payment_source SET customer_expr = $2, payment_key_expr = $3, succeeded_expr = $4, "
                  "failed_expr = $5, amount_expr = $6, currency_expr = $7, paid_at_expr = $8, attributes_expr = $9, "
                  "recipient_expr = $13, locale_expr = $14, time_zone_expr = $15, "
                  "on_error = $11, tracked = true, expressions_as_written = " WRITTEN_JSON " "
                  "WHERE name = $10 AND relid = $1 RETURNING id"
                : "INSERT INTO nps_billing.payment_source (relid, customer_expr, payment_key_expr, succeeded_expr, "
                  "failed_expr, amount_expr, currency_expr, paid_at_expr, attributes_expr, name, on_error, "
                  "expressions_as_written, recipient_expr, locale_expr, time_zone_expr) "
                  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, " WRITTEN_JSON ", $13, $14, $15) RETURNING id";
        // (a 0.1 database: the legacy statements ignore $13..$15, which are NULL there)
        if (SPI_execute_with_args(sql, legacy ? 12 : 15, t, a, n, false, 1) < 0 || SPI_processed != 1)
            elog(ERROR, "nps_billing: could not write payment_source");
        bool isnull;
        id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
        // PostgreSQL allows a transition table only on a single-event trigger: one per event.
        StringInfoData buf;
        initStringInfo(&buf);
        appendStringInfo(&buf,
                         "CREATE TRIGGER nps_billing_capture_insert AFTER INSERT ON %s "
                         "REFERENCING NEW TABLE AS nps_new FOR EACH STATEMENT EXECUTE FUNCTION nps_billing.capture()",
                         qrel);
        spi_exec(buf.data);
        resetStringInfo(&buf);
        appendStringInfo(&buf,
                         "CREATE TRIGGER nps_billing_capture_update AFTER UPDATE ON %s "
                         "REFERENCING NEW TABLE AS nps_new FOR EACH STATEMENT EXECUTE FUNCTION nps_billing.capture()",
                         qrel);
        spi_exec(buf.data);
    });
    unpin_settings(gucs);
    SPI_finish();
    table_close(rel, NoLock);
    PG_RETURN_INT32(id);
}

// untrack_payments(source regclass) RETURNS void: drops the triggers, keeps the history.
NPS_FUNCTION(nps_untrack_payments) {
    if (PG_ARGISNULL(0))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("source must not be NULL")));
    Oid relid = PG_GETARG_OID(0);
    Relation rel = open_tracked_table(relid, AccessExclusiveLock, "untrack");
    const char *qrel = qualified(rel);
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "nps_billing: SPI_connect failed");
    as_owner(ext_owner(), ext_namespace(), [&] {
        Oid t[] = {OIDOID};
        Datum a[] = {ObjectIdGetDatum(relid)};
        if (SPI_execute_with_args("UPDATE nps_billing.payment_source SET tracked = false WHERE relid = $1 AND tracked "
                                  "RETURNING id",
                                  1, t, a, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
            elog(ERROR, "nps_billing: could not update payment_source");
        if (SPI_processed == 0)
            ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("table %s is not tracked", qrel)));
        StringInfoData buf;
        initStringInfo(&buf);
        appendStringInfo(&buf, "DROP TRIGGER IF EXISTS nps_billing_capture_insert ON %s", qrel);
        spi_exec(buf.data);
        resetStringInfo(&buf);
        appendStringInfo(&buf, "DROP TRIGGER IF EXISTS nps_billing_capture_update ON %s", qrel);
        spi_exec(buf.data);
    });
    SPI_finish();
    table_close(rel, NoLock);
    PG_RETURN_VOID();
}

// _capture_rebind() RETURNS integer: called once by the 0.1 -> 0.2 upgrade step. Expressions of
// 0.1 sources were stored as written and resolved names at every use (pg_catalog, then the
// table's schema); they are bound now as track_payments() binds them. A source whose expressions
// no longer compile keeps its text (with a WARNING): its payments record capture errors until the
// table is tracked again. Returns the number of sources bound.
NPS_FUNCTION(nps_capture_rebind) {
    (void)fcinfo;
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "nps_billing: SPI_connect failed");
    // Sources of dropped tables: untracked (a later table could get the OID).
    if (SPI_execute("UPDATE nps_billing.payment_source SET tracked = false WHERE tracked AND NOT EXISTS "
                    "(SELECT FROM pg_catalog.pg_class c WHERE c.oid = relid::pg_catalog.oid)",
                    false, 0) != SPI_OK_UPDATE)
        elog(ERROR, "nps_billing: could not update payment_source");
    if (SPI_execute("SELECT id, name, relid::pg_catalog.oid, customer_expr, payment_key_expr, succeeded_expr, "
                    "failed_expr, amount_expr, currency_expr, paid_at_expr, attributes_expr "
                    "FROM nps_billing.payment_source WHERE tracked ORDER BY id",
                    false, 0) != SPI_OK_SELECT)
        elog(ERROR, "nps_billing: could not read payment_source");
    SPITupleTable *rows = SPI_tuptable;
    uint64 nrows = SPI_processed;
    int32 bound_count = 0;
    for (uint64 r = 0; r < nrows; r++) {
        HeapTuple t = rows->vals[r];
        bool isnull;
        int32 id = DatumGetInt32(SPI_getbinval(t, rows->tupdesc, 1, &isnull));
        char *name = SPI_getvalue(t, rows->tupdesc, 2);
        Oid relid = DatumGetObjectId(SPI_getbinval(t, rows->tupdesc, 3, &isnull));
        const char *exprs[X_EVENT_COUNT];
        const char *bound[X_EVENT_COUNT];
        for (int i = 0; i < X_EVENT_COUNT; i++)
            exprs[i] = SPI_getvalue(t, rows->tupdesc, 4 + i);
        MemoryContext cxt = CurrentMemoryContext;
        ErrorData *ed = in_subtransaction([&] {
            Relation rel = table_open(relid, AccessShareLock);
            int gucs = pin_settings();
            set_search_path(psprintf("pg_catalog, %s", quote_identifier(get_namespace_name(RelationGetNamespace(rel)))));
            RowShape *shape = make_shape(CurrentMemoryContext, RelationGetRelationName(rel), RelationGetDescr(rel));
            for (int i = 0; i < X_EVENT_COUNT; i++)
                check_expression(static_cast<ExprSlot>(i), exprs[i], shape);
            MemoryContext old = MemoryContextSwitchTo(cxt);
            for (int i = 0; i < X_EVENT_COUNT; i++)
                bound[i] = bind_expression(static_cast<ExprSlot>(i), exprs[i], rel);
            MemoryContextSwitchTo(old);
            unpin_settings(gucs);
            table_close(rel, NoLock);
        });
        MemoryContextSwitchTo(cxt);
        Datum vals[X_EVENT_COUNT];
        bool nulls[X_EVENT_COUNT];
        for (int i = 0; i < X_EVENT_COUNT; i++) {
            nulls[i] = exprs[i] == NULL;
            vals[i] = nulls[i] ? (Datum)0 : CStringGetTextDatum(exprs[i]);
        }
        int dims[1] = {X_EVENT_COUNT}, lbs[1] = {1};
        Datum written = PointerGetDatum(construct_md_array(vals, nulls, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
        if (ed) {
            ereport(WARNING, (errmsg("payment source \"%s\" could not be bound: %s", name, ed->message),
                              errhint("Its payments are recorded in nps_billing.capture_error until the table is "
                                      "tracked again (untrack_payments, then track_payments).")));
            FreeErrorData(ed);
            for (int i = 0; i < X_EVENT_COUNT; i++)
                bound[i] = exprs[i];
        } else {
            bound_count++;
        }
        Oid types[10] = {INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID};
        Datum a[10];
        char n[11];
        a[0] = Int32GetDatum(id);
        n[0] = ' ';
        for (int i = 0; i < X_EVENT_COUNT; i++) {
            a[i + 1] = bound[i] ? CStringGetTextDatum(bound[i]) : (Datum)0;
            n[i + 1] = bound[i] ? ' ' : 'n';
        }
        a[9] = written;
        n[9] = ' ';
        n[10] = '\0';
        if (SPI_execute_with_args("UPDATE nps_billing.payment_source SET customer_expr = $2, payment_key_expr = $3, "
                                  "succeeded_expr = $4, failed_expr = $5, amount_expr = $6, currency_expr = $7, "
                                  "paid_at_expr = $8, attributes_expr = $9, expressions_as_written = "
                                  "(SELECT pg_catalog.jsonb_object_agg(u.k, u.v) FROM ROWS FROM (pg_catalog.unnest('{customer,"
                                  "payment_key,succeeded_when,failed_when,amount,currency,paid_at,attributes}'"
                                  "::pg_catalog.text[]), pg_catalog.unnest($10)) AS u(k, v) WHERE u.v IS NOT NULL) "
                                  "WHERE id = $1",
                                  10, types, a, n, false, 0) != SPI_OK_UPDATE)
            elog(ERROR, "nps_billing: could not update payment_source");
    }
    SPI_finish();
    PG_RETURN_INT32(bound_count);
}
