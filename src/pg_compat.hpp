// Every difference between the PostgreSQL majors this tree builds on (15, 16, 17, 18) lives
// here, as inline wrappers, so the rest of the code reads as one version. Add a wrapper here
// rather than a PG_VERSION_NUM test anywhere else. Included by pg_boundary.hpp, so by every
// file: keep its includes light (no executor/execnodes.h, whose names such as AggState collide
// with ours); a wrapper that needs heavy headers is defined in pg_compat.cpp.
#pragma once

extern "C" {
#include "postgres.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"  // VARSIZE, VARDATA, SET_VARSIZE: no longer in postgres.h
#endif
#include "access/genam.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
}

struct EState;

#if PG_VERSION_NUM < 150000
#error "nps_billing needs PostgreSQL 15 or later"
#endif

namespace nps::compat {

// Whether role owns relation relid (16 replaced pg_class_ownercheck by object_ownercheck).
inline bool class_ownercheck(Oid relid, Oid role) {
#if PG_VERSION_NUM >= 160000
    return object_ownercheck(RelationRelationId, relid, role);
#else
    return pg_class_ownercheck(relid, role);
#endif
}

// The executor's range table holding the single relation rte (index 1), for inserts made without
// the planner; with its permission info from 16 on (pg_compat.cpp).
void init_range_table(EState *estate, RangeTblEntry *rte);

// index_beginscan without instrumentation (18 added the argument).
inline IndexScanDesc index_beginscan(Relation heap, Relation index, Snapshot snapshot, int nkeys, int norderbys) {
#if PG_VERSION_NUM >= 180000
    return ::index_beginscan(heap, index, snapshot, NULL, nkeys, norderbys);
#else
    return ::index_beginscan(heap, index, snapshot, nkeys, norderbys);
#endif
}

// search_path = pg_catalog, <nsp> until pop_search_path(the returned level), also on error
// (call it from PG_FINALLY). Up to 16 the override-path stack, which leaves the temporary
// schema out; 17 removed it, so there a GUC nest level sets the path with pg_temp last
// (searched only for relations no listed schema has; never for functions or operators).
inline int push_search_path(Oid nsp) {
#if PG_VERSION_NUM >= 170000
    const char *name = get_namespace_name(nsp);
    if (name == NULL)
        elog(ERROR, "cache lookup failed for namespace %u", nsp);
    char *path = psprintf("pg_catalog, %s, pg_temp", quote_identifier(name));
    int level = NewGUCNestLevel();
    (void)set_config_option("search_path", path, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
    pfree(path);
    return level;
#else
    OverrideSearchPath p;
    p.schemas = list_make1_oid(nsp);
    p.addCatalog = true;
    p.addTemp = false;
    p.generation = 0;
    PushOverrideSearchPath(&p);
    return 0;
#endif
}

inline void pop_search_path(int level) {
#if PG_VERSION_NUM >= 170000
    AtEOXact_GUC(true, level);
#else
    (void)level;
    PopOverrideSearchPath();
#endif
}

// expression_tree_walker: a function over an untyped callback up to 15, a macro over a typed one
// from 16 on.
inline bool expression_walk(Node *node, bool (*walker)(Node *, void *), void *context) {
#if PG_VERSION_NUM >= 160000
    return expression_tree_walker_impl(node, walker, context);
#else
    // (through void (*)(): the generic function pointer type -Wcast-function-type accepts)
    return expression_tree_walker(node, reinterpret_cast<bool (*)()>(reinterpret_cast<void (*)()>(walker)), context);
#endif
}

}  // namespace nps::compat
