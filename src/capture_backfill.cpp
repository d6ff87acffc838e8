// Capture: backfill_payments(source regclass, since timestamptz, last_surveys regclass).
//
// Records the rows a tracked table already held as payment events, the way the capture trigger's
// set path records a bulk INSERT, but creating no survey: every event gets skip_reason
// 'backfilled'. Two statements for the whole table:
//   1. the source's expressions over every row (the set path's evaluation statement, eval_sql,
//      with the table in place of the transition table), as the table's owner inside a
//      security-restricted operation, into a tuplestore;
//   2. one data-modifying statement as the extension's owner: the events (a payment counts once
//      per (source, payment_key, kind), so a second call records nothing new) and the throttle
//      seed (customer_contact raised to the customer's last survey: imported answers in
//      nps_billing.response and, when given, the DBA's table of last survey dates).
// Only the table's owner or a superuser may call it (as for track_payments). The optional table
// of survey dates is read with the caller's own rights.
#include "capture.hpp"

extern "C" {
#include "access/table.h"
#include "catalog/pg_class.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tstoreReceiver.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
}

using namespace nps::capture;

namespace {

// Events and the throttle seed in one statement (as the extension owner). $1 source id.
// nps_eval: the evaluated rows (kind, customer, payment_key, amount, currency, occurred_at,
// attributes); nps_seed: (customer_id text, last_survey_at timestamptz) from the DBA's table.
// Recorded payments are left out by ON CONFLICT DO NOTHING on the event's unique key (which also
// waits for a payment the trigger records at the same moment), not by an anti-join: a freshly
// installed payment_event has statistics saying it is empty, and the planner then rescans the
// table being filled for every row (measured: 200,000 rows did not finish in a minute).
const char *BACKFILL_SQL =
    "WITH ev AS ("
    "  SELECT DISTINCT ON (e.payment_key COLLATE \"C\", e.kind COLLATE \"C\") e.* FROM nps_eval e"
    "  WHERE e.payment_key IS NOT NULL"
    "  ORDER BY e.payment_key COLLATE \"C\", e.kind COLLATE \"C\", e.occurred_at"
    "), ins AS ("
    "  INSERT INTO nps_billing.payment_event AS pe (source_id, payment_key, kind, customer_id, amount, currency,"
    "                                               occurred_at, attributes, survey_id, skip_reason)"
    "  SELECT $1, ev.payment_key, ev.kind, ev.customer, ev.amount, ev.currency, ev.occurred_at, ev.attributes,"
    "         NULL, 'backfilled'"
    "  FROM ev ON CONFLICT DO NOTHING RETURNING 1"
    "), last AS ("
    "  SELECT l.customer_id, max(l.at) AS at FROM ("
    "    SELECT n.customer_id, n.last_survey_at AS at FROM nps_seed n"
    "    UNION ALL"
    "    SELECT r.customer_id, r.responded_at FROM nps_billing.response r WHERE r.survey_id IS NULL"
    "  ) l WHERE l.customer_id IS NOT NULL AND l.at <= now() GROUP BY l.customer_id"
    "), seeded AS ("
    "  INSERT INTO nps_billing.customer_contact AS cc (customer_id, last_survey_at)"
    "  SELECT last.customer_id, last.at FROM last ORDER BY last.customer_id COLLATE \"C\""
    "  ON CONFLICT (customer_id) DO UPDATE SET last_survey_at = excluded.last_survey_at"
    "  WHERE cc.last_survey_at < excluded.last_survey_at"
    "  RETURNING 1"
    ") SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM seeded),"
    "         (SELECT count(*) FROM nps_eval e WHERE e.payment_key IS NULL)";

// Runs a prepared SELECT into a new tuplestore.
Tuplestorestate *select_into_store(SPIPlanPtr plan, ParamListInfo params) {
    Tuplestorestate *ts = tuplestore_begin_heap(false, false, work_mem);
    DestReceiver *dest = CreateDestReceiver(DestTuplestore);
    SetTuplestoreDestReceiverParams(dest, ts, CurrentMemoryContext, false, NULL, NULL);
    SPIExecuteOptions opt;
    memset(&opt, 0, sizeof opt);
    opt.params = params;
    opt.read_only = false;
    opt.dest = dest;
    if (SPI_execute_plan_extended(plan, &opt) != SPI_OK_SELECT)
        elog(ERROR, "nps_billing: backfill evaluation failed");
    dest->rDestroy(dest);
    return ts;
}

// A SELECT of the caller's (no change of rights) into a tuplestore, with search_path = pg_catalog.
Tuplestorestate *read_with_catalog_path(const char *sql) {
    Tuplestorestate *volatile ts = NULL;
    int level = push_path(PG_CATALOG_NAMESPACE);
    PG_TRY();
    {
        SPIPlanPtr p = SPI_prepare(sql, 0, NULL);
        if (p == NULL)
            elog(ERROR, "nps_billing: could not read last_surveys");
        ts = select_into_store(p, NULL);
    }
    PG_FINALLY();
    {
        nps::compat::pop_search_path(level);
    }
    PG_END_TRY();
    return ts;
}

// Runs fn as the table's owner inside a security-restricted operation (as PostgreSQL runs index
// expressions), under the same settings and search_path as the capture trigger.
template <typename F>
void as_table_owner_sro(Oid relowner, Oid tablensp, bool legacy, F &&fn) {
    Oid save_uid;
    int save_sec;
    GetUserIdAndSecContext(&save_uid, &save_sec);
    SetUserIdAndSecContext(relowner, save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
    // Bound expressions read under the trigger's pinned settings; a source still as written in 0.1
    // (not yet rebound) under pg_catalog and its table's schema, as the trigger reads it.
    int level = legacy ? push_path(tablensp) : pin_settings();
    if (!legacy)
        set_search_path(EVAL_PATH);
    PG_TRY();
    {
        fn();
    }
    PG_CATCH();
    {
        // The abort undoes the settings; the user id is ours to restore.
        SetUserIdAndSecContext(save_uid, save_sec);
        PG_RE_THROW();
    }
    PG_END_TRY();
    if (legacy)
        nps::compat::pop_search_path(level);
    else
        unpin_settings(level);
    SetUserIdAndSecContext(save_uid, save_sec);
}

}  // namespace

// backfill_payments(source regclass, since timestamptz DEFAULT '-infinity',
//                   last_surveys regclass DEFAULT NULL) RETURNS bigint: events recorded.
NPS_FUNCTION(nps_backfill_payments) {
    for (int i = 0; i < 2; i++)
        if (PG_ARGISNULL(i))
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                            errmsg("backfill_payments: %s must not be NULL", i == 0 ? "source" : "since")));
    Oid relid = PG_GETARG_OID(0);
    TimestampTz since = PG_GETARG_TIMESTAMPTZ(1);
    Oid seedrel = PG_ARGISNULL(2) ? InvalidOid : PG_GETARG_OID(2);

    // Concurrent payments go on: what they write is the trigger's to capture.
    Relation rel = table_open(relid, AccessShareLock);
    const char *relname = RelationGetRelationName(rel);
    if (rel->rd_rel->relkind != RELKIND_RELATION && rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
        ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
                        errmsg("cannot backfill \"%s\": only tables can be tracked", relname)));
    if (!nps::compat::class_ownercheck(relid, GetUserId()))
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("must be owner of table %s to backfill it", relname)));
    if (OidIsValid(seedrel) && pg_class_aclcheck(seedrel, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("backfill_payments: permission denied for last_surveys table %s",
                               get_rel_name(seedrel) ? get_rel_name(seedrel) : "?")));
    Oid relowner = rel->rd_rel->relowner;
    Oid tablensp = RelationGetNamespace(rel);
    const char *qrel = quote_qualified_identifier(get_namespace_name(tablensp), relname);
    bool only = rel->rd_rel->relkind == RELKIND_RELATION;  // the trigger of a plain table sees its own rows
    table_close(rel, NoLock);

    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "nps_billing: SPI_connect failed");
    Oid owner = ext_owner();
    Oid extnsp = ext_namespace();

    // The source: its id, name and expressions (read as the extension's owner).
    int32 source_id = 0;
    char *source_name = NULL;
    const char *exprs[X_COUNT] = {};
    bool found = false, legacy = false;
    as_owner(owner, extnsp, [&] {
        Oid t[] = {OIDOID};
        Datum a[] = {ObjectIdGetDatum(relid)};
        if (SPI_execute_with_args("SELECT id, name, customer_expr, payment_key_expr, succeeded_expr, failed_expr, "
                                  "amount_expr, currency_expr, paid_at_expr, attributes_expr, "
                                  "expressions_as_written IS NULL "
                                  "FROM nps_billing.payment_source WHERE relid = $1 AND tracked",
                                  1, t, a, NULL, true, 1) != SPI_OK_SELECT)
            elog(ERROR, "nps_billing: could not read payment_source");
        if (SPI_processed == 0)
            return;
        found = true;
        HeapTuple tup = SPI_tuptable->vals[0];
        TupleDesc desc = SPI_tuptable->tupdesc;
        bool isnull;
        source_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
        source_name = SPI_getvalue(tup, desc, 2);
        // (the contact expressions stay NULL: a backfilled payment makes no survey)
        for (int i = 0; i < X_EVENT_COUNT; i++)
            exprs[i] = SPI_getvalue(tup, desc, 3 + i);  // NULL for a NULL column
        legacy = DatumGetBool(SPI_getbinval(tup, desc, 3 + X_EVENT_COUNT, &isnull)) && !isnull;
    });
    if (!found)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("table %s is not tracked", relname),
                        errhint("Call nps_billing.track_payments() on it first.")));

    // 1. The expressions over every row, as the table's owner.
    static const char *const eval_names[] = {"kind",        "customer",   "payment_key", "amount",    "currency",
                                             "occurred_at", "attributes", "recipient",   "locale",    "time_zone"};
    static const Oid eval_types[] = {TEXTOID,        TEXTOID,  TEXTOID, NUMERICOID, TEXTOID,
                                     TIMESTAMPTZOID, JSONBOID, TEXTOID, TEXTOID,    TEXTOID};
    static_assert(sizeof eval_types / sizeof eval_types[0] == EVAL_NCOLS, "eval_sql's columns");
    Tuplestorestate *evald = NULL;
    {
        StringInfoData sql;
        initStringInfo(&sql);
        appendStringInfo(&sql, "WITH nps_new AS (SELECT * FROM %s%s) SELECT * FROM (%s) nps_b WHERE nps_b.occurred_at >= $1",
                         only ? "ONLY " : "", qrel, eval_sql(exprs, legacy ? relname : ROW_ALIAS));
        ParamListInfo params = makeParamList(1);
        params->params[0].value = TimestampTzGetDatum(since);
        params->params[0].isnull = false;
        params->params[0].pflags = PARAM_FLAG_CONST;
        params->params[0].ptype = TIMESTAMPTZOID;
        ErrorContextCallback cb;
        cb.callback = [](void *arg) { errcontext("backfill of payment source \"%s\"", static_cast<const char *>(arg)); };
        cb.arg = source_name;
        cb.previous = error_context_stack;
        error_context_stack = &cb;
        as_table_owner_sro(relowner, tablensp, legacy, [&] {
            Oid t[] = {TIMESTAMPTZOID};
            SPIPlanPtr p = SPI_prepare(sql.data, 1, t);
            if (p == NULL)
                elog(ERROR, "nps_billing: could not prepare the backfill of source %d", source_id);
            evald = select_into_store(p, params);
        });
        error_context_stack = cb.previous;
    }
    register_store("nps_eval", make_desc(EVAL_NCOLS, eval_names, eval_types), evald);

    // The DBA's last survey dates, read with the caller's rights.
    static const char *const seed_names[] = {"customer_id", "last_survey_at"};
    static const Oid seed_types[] = {TEXTOID, TIMESTAMPTZOID};
    Tuplestorestate *seed;
    if (OidIsValid(seedrel)) {
        const char *qseed = quote_qualified_identifier(get_namespace_name(get_rel_namespace(seedrel)), get_rel_name(seedrel));
        char *sql = psprintf("SELECT customer_id::pg_catalog.text, last_survey_at::pg_catalog.timestamptz FROM %s", qseed);
        seed = read_with_catalog_path(sql);
    } else {
        seed = tuplestore_begin_heap(false, false, work_mem);
    }
    register_store("nps_seed", make_desc(2, seed_names, seed_types), seed);

    // 2. Events and the throttle seed, as the extension's owner.
    int64 events = 0, nullkeys = 0;
    as_owner(owner, extnsp, [&] {
        Oid t[] = {INT4OID};
        Datum a[] = {Int32GetDatum(source_id)};
        if (SPI_execute_with_args(BACKFILL_SQL, 1, t, a, NULL, false, 0) != SPI_OK_SELECT)
            elog(ERROR, "nps_billing: backfill failed");
        bool isnull;
        events = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
        nullkeys = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
    });
    SPI_unregister_relation("nps_eval");
    SPI_unregister_relation("nps_seed");
    tuplestore_end(evald);
    tuplestore_end(seed);
    SPI_finish();
    if (nullkeys > 0)
        ereport(WARNING, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                          errmsg("backfill_payments: %lld row(s) of %s skipped: the payment_key expression returned NULL",
                                 (long long)nullkeys, relname)));
    PG_RETURN_INT64(events);
}
