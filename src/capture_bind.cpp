// Capture: the fixed settings expressions are evaluated under, and binding an expression's names
// when the table is tracked (a schema-qualified deparse, the way pg_dump writes views).
#include "capture.hpp"

extern "C" {
#include "access/table.h"
#include "catalog/pg_proc.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_relation.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
}

namespace nps {
namespace capture {

namespace {

struct Pin {
    const char *name;
    const char *value;  // as SHOW prints it (compared first: nothing is set when already so)
};

// Everything that changes how an expression's text parses or what a built-in function returns.
const Pin pins[] = {
    {"search_path", EVAL_PATH},
    {"standard_conforming_strings", "on"},
    {"transform_null_equals", "off"},
    {"array_nulls", "on"},
    {"DateStyle", "ISO, MDY"},
    {"IntervalStyle", "postgres"},
    {"TimeZone", "UTC"},
    {"timezone_abbreviations", "Default"},
    {"extra_float_digits", "1"},
    {"bytea_output", "hex"},
    {"xmloption", "content"},
    {"lc_monetary", "C"},
    {"lc_numeric", "C"},
    {"lc_time", "C"},
    {"default_text_search_config", "pg_catalog.simple"},
    {"quote_all_identifiers", "off"},
};

void set_guc(const char *name, const char *value) {
    (void)set_config_option(name, value, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

}  // namespace

int pin_settings() {
    int level = NewGUCNestLevel();
    for (const Pin &p : pins) {
        const char *cur = GetConfigOption(p.name, true, false);
        if (cur == NULL || strcmp(cur, p.value) != 0)
            set_guc(p.name, p.value);
    }
    return level;
}

void unpin_settings(int level) { AtEOXact_GUC(false, level); }

void set_search_path(const char *path) {
    const char *cur = GetConfigOption("search_path", true, false);
    if (cur == NULL || strcmp(cur, path) != 0)
        set_guc("search_path", path);
}

void check_not_volatile(ExprSlot slot, Node *expr) {
    if (!contain_volatile_functions(expr))
        return;
    ereport(ERROR, (errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
                    errmsg("%s expression must not call a volatile function", expr_arg_name[slot]),
                    errdetail("A function it calls (or an operator or cast it uses) is declared VOLATILE."),
                    errhint("Capture expressions run once per payment row and must have no side effects.")));
}

// The expression analysed against the table itself (columns are Vars of one range table entry
// whose alias is alias), collations assigned, not coerced to its slot's type.
static Node *analyze_over(ExprSlot slot, const char *text, Relation rel, const char *alias) {
    Node *raw = parse_single(slot, text);
    ParseState *pstate = make_parsestate(NULL);
    pstate->p_sourcetext = text;
    ParseNamespaceItem *nsi =
        addRangeTableEntryForRelation(pstate, rel, AccessShareLock, makeAlias(alias, NIL), false, true);
    addNSItemToQuery(pstate, nsi, true, true, true);
    Node *expr = transformExpr(pstate, raw, EXPR_KIND_SELECT_TARGET);
    assign_expr_collations(pstate, expr);
    free_parsestate(pstate);
    return expr;
}

static char *deparse(Node *expr, Relation rel) {
    set_search_path("");
    return deparse_expression(expr, deparse_context_for(ROW_ALIAS, RelationGetRelid(rel)), false, true);
}

char *bind_expression(ExprSlot slot, const char *text, Relation rel) {
    if (text == NULL)
        return NULL;
    ExprErrCtx ectx;
    ErrorContextCallback cb;
    push_expr_context(&cb, &ectx, slot, text);
    const char *nsp = get_namespace_name(RelationGetNamespace(rel));
    set_search_path(psprintf("pg_catalog, %s", quote_identifier(nsp)));
    Node *expr = analyze_over(slot, text, rel, RelationGetRelationName(rel));
    char *bound = deparse(expr, rel);
    // What the trigger will read must deparse to itself once analysed again under EVAL_PATH (a
    // first read-back may still differ in form: ARRAY[...]::text[] becomes ARRAY[x::text, ...]).
    char *check = NULL;
    for (int round = 0; round < 3; round++) {
        set_search_path(EVAL_PATH);
        ectx.text = bound;
        check = deparse(analyze_over(slot, bound, rel, ROW_ALIAS), rel);
        if (strcmp(check, bound) == 0)
            break;
        bound = check;
        check = NULL;
    }
    set_search_path(EVAL_PATH);
    if (check == NULL)
        ereport(ERROR, (errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
                        errmsg("%s expression cannot be bound to the objects it names", expr_arg_name[slot]),
                        errdetail("Its schema-qualified form does not read back to itself: %s", bound)));
    error_context_stack = cb.previous;
    return bound;
}

}  // namespace capture
}  // namespace nps
