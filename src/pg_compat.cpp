// The wrappers of pg_compat.hpp that need the executor's headers.
#include "pg_compat.hpp"

extern "C" {
#include "executor/executor.h"
#if PG_VERSION_NUM >= 160000
#include "parser/parse_relation.h"  // addRTEPermissionInfo
#endif
}

namespace nps::compat {

// The executor's range table holding the single relation rte, for inserts made without the
// planner (rte gets index 1). From 16 on an RTE carries its permission info separately: without
// it, a failing constraint check cannot name the columns and raises "invalid perminfoindex".
// 18 added the set of unpruned relations.
void init_range_table(EState *estate, RangeTblEntry *rte) {
#if PG_VERSION_NUM >= 180000
    List *perminfos = NIL;
    addRTEPermissionInfo(&perminfos, rte);
    ExecInitRangeTable(estate, list_make1(rte), perminfos, bms_make_singleton(1));
#elif PG_VERSION_NUM >= 160000
    List *perminfos = NIL;
    addRTEPermissionInfo(&perminfos, rte);
    ExecInitRangeTable(estate, list_make1(rte), perminfos);
#else
    ExecInitRangeTable(estate, list_make1(rte));
#endif
}

}  // namespace nps::compat
