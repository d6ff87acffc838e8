// Capture on tables Citus manages: refused at track time, and a capture trigger that fires on a
// table with no payment source (a shard that got the trigger through
// citus.enable_unsafe_triggers, a table restored without its source) says so once per backend.
//
// Capture writes payment_event / survey / customer_contact rows on the node where the trigger
// fires. On a Citus shard that is a worker whose payment_source is empty (the source row lives
// on the coordinator and names the distributed table, not the shard), so nothing would be
// recorded: refusing is the honest answer until capture is distributed (docs/scale-out.md).
//
// Citus is detected through its catalog only (no Citus header, no Citus function): the tables
// pg_catalog.pg_dist_partition (one row per distributed, reference or Citus local table) and
// pg_catalog.pg_dist_shard (one row per shard; a shard is named <table>_<shardid>). Where Citus
// is absent the cost is one syscache miss per track_payments() call and nothing per payment.
#include "capture.hpp"

extern "C" {
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
}

using namespace nps::capture;

namespace {

bool has_catalog(const char *name) {
    return OidIsValid(get_relname_relid(name, PG_CATALOG_NAMESPACE));
}

// What Citus calls the table (pg_dist_partition): NULL when it does not manage it.
const char *citus_table_kind(Oid relid) {
    if (!has_catalog("pg_dist_partition"))
        return NULL;
    const char *kind = NULL;
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "nps_billing: SPI_connect failed");
    Oid t[] = {OIDOID};
    Datum a[] = {ObjectIdGetDatum(relid)};
    // partmethod 'n' (no distribution column): replicated to every node ('t') = reference table,
    // one shard on one node = Citus local table (or a table of a distributed schema).
    if (SPI_execute_with_args("SELECT CASE WHEN p.partmethod <> 'n' THEN 'a distributed table' "
                              "WHEN p.repmodel = 't' THEN 'a reference table' ELSE 'a Citus local table' END "
                              "FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = $1::pg_catalog.regclass",
                              1, t, a, NULL, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "nps_billing: could not read pg_dist_partition");
    if (SPI_processed > 0)
        kind = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
    if (kind)
        kind = MemoryContextStrdup(TopTransactionContext, kind);  // outlives SPI_finish
    SPI_finish();
    return kind;
}

// The Citus table whose shard rel is (pg_dist_shard; shards are named <table>_<shardid> in the
// table's schema), or NULL; *table_oid its oid.
const char *citus_shard_of(Relation rel, Oid *table_oid = NULL) {
    if (!has_catalog("pg_dist_shard"))
        return NULL;
    const char *relname = RelationGetRelationName(rel);
    const char *us = strrchr(relname, '_');
    if (us == NULL || us[1] == '\0' || strspn(us + 1, "0123456789") != strlen(us + 1) || strlen(us + 1) > 18)
        return NULL;
    int64 shardid = strtoll(us + 1, NULL, 10);
    const char *table = NULL;
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "nps_billing: SPI_connect failed");
    Oid t[] = {INT8OID, OIDOID, TEXTOID};
    Datum a[] = {Int64GetDatum(shardid), ObjectIdGetDatum(RelationGetNamespace(rel)),
                 CStringGetTextDatum(relname)};
    // Long names are truncated by Citus before the suffix: the schema and the shard id decide.
    if (SPI_execute_with_args("SELECT s.logicalrelid::pg_catalog.text, s.logicalrelid::pg_catalog.oid "
                              "FROM pg_catalog.pg_dist_shard s "
                              "JOIN pg_catalog.pg_class c ON c.oid = s.logicalrelid "
                              "WHERE s.shardid = $1 AND c.relnamespace = $2 "
                              "AND (c.relname::pg_catalog.text || '_' || s.shardid = $3 "
                              "     OR pg_catalog.length($3) >= 60)",
                              3, t, a, NULL, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "nps_billing: could not read pg_dist_shard");
    if (SPI_processed > 0) {
        bool isnull;
        table = MemoryContextStrdup(TopTransactionContext, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
        if (table_oid)
            *table_oid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
    }
    SPI_finish();
    return table;
}

List *warned = NIL;  // relids looked at in this backend, and Citus tables warned about (TopMemoryContext)

}  // namespace

namespace nps {
namespace capture {

void refuse_citus_table(Relation rel, const char *qrel) {
    const char *kind = citus_table_kind(RelationGetRelid(rel));
    if (kind)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("cannot track %s: it is %s of Citus", qrel, kind),
                        errdetail("Capture records payments on the node whose table fires the trigger; on Citus "
                                  "those are the shards on the workers, which have no payment source."),
                        errhint("Keep the payments table a plain PostgreSQL table (not distributed, reference or "
                                "Citus local) and track that; see docs/scale-out.md.")));
    const char *table = citus_shard_of(rel);
    if (table)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("cannot track %s: it is a shard of the Citus table %s", qrel, table),
                        errhint("Track payments on a plain PostgreSQL table; see docs/scale-out.md.")));
}

void warn_untracked_capture(Relation rel) {
    Oid relid = RelationGetRelid(rel);
    if (list_member_oid(warned, relid))
        return;
    MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
    warned = lappend_oid(warned, relid);
    MemoryContextSwitchTo(old);
    Oid table_oid = InvalidOid;
    const char *table = citus_shard_of(rel, &table_oid);
    if (table && list_member_oid(warned, table_oid))
        return;  // one warning per Citus table, not one per shard
    if (table) {
        old = MemoryContextSwitchTo(TopMemoryContext);
        warned = lappend_oid(warned, table_oid);
        MemoryContextSwitchTo(old);
        ereport(WARNING, (errcode(ERRCODE_WARNING),
                          errmsg("payments written to the Citus table %s are not captured", table),
                          errdetail("Its shards (here \"%s\") have the capture trigger but no payment source; "
                                    "this warning is shown once per session.",
                                    RelationGetRelationName(rel)),
                          errhint("Drop the triggers nps_billing_capture_insert and nps_billing_capture_update of "
                                  "%s and track a plain PostgreSQL table; see docs/scale-out.md.",
                                  table)));
    }    else
        ereport(WARNING, (errcode(ERRCODE_WARNING),
                          errmsg("payments written to \"%s\" are not captured: it has the capture trigger but no "
                                 "payment source",
                                 RelationGetRelationName(rel)),
                          errdetail("This warning is shown once per session."),
                          errhint("Call nps_billing.track_payments() for the table, or drop its triggers "
                                  "nps_billing_capture_insert and nps_billing_capture_update.")));
}

}  // namespace capture
}  // namespace nps
