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
#include "parser/parser.h"
#include "catalog/pg_type.h"
#include "utils/fmgroids.h"
#include "utils/builtins.h"
#include "utils/bytea.h"
#include "utils/float.h"
#include "utils/guc.h"
#include "utils/xml.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
}

namespace nps {
namespace capture {

namespace {

// Everything that changes how an expression's text parses or what a built-in function returns.
// The first settings are read through their C variables (no lookup by name): they are all a
// built-in IMMUTABLE function can depend on (output formats, literal parsing). The rest
// (lookup_pins) only STABLE functions, the parser and name lookup read.
struct CheapPin {
    const char *name;
    const char *value;
    bool (*holds)();
};
const CheapPin cheap_pins[] = {
    {"standard_conforming_strings", "on", [] { return standard_conforming_strings; }},
    {"transform_null_equals", "off", [] { return !Transform_null_equals; }},
    {"array_nulls", "on", [] { return Array_nulls; }},
    {"DateStyle", "ISO, MDY", [] { return DateStyle == USE_ISO_DATES && DateOrder == DATEORDER_MDY; }},
    {"IntervalStyle", "postgres", [] { return IntervalStyle == INTSTYLE_POSTGRES; }},
    {"extra_float_digits", "1", [] { return extra_float_digits == 1; }},
    {"bytea_output", "hex", [] { return bytea_output == BYTEA_OUTPUT_HEX; }},
    {"xmloption", "content", [] { return xmloption == XMLOPTION_CONTENT; }},
    {"quote_all_identifiers", "off", [] { return !quote_all_identifiers; }},
};

struct Pin {
    const char *name;
    const char *value;  // as SHOW prints it (compared first: nothing is set when already so)
};
const Pin lookup_pins[] = {
    {"search_path", EVAL_PATH},
    {"TimeZone", "UTC"},
    {"timezone_abbreviations", "Default"},
    {"lc_monetary", "C"},
    {"lc_numeric", "C"},
    {"lc_time", "C"},
    {"default_text_search_config", "pg_catalog.simple"},
};

void set_guc(const char *name, const char *value) {
    (void)set_config_option(name, value, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
}

// Sets the cheap settings that do not hold; opens the nest level first when level < 0.
int pin_cheap(int level) {
    for (const CheapPin &p : cheap_pins)
        if (!p.holds()) {
            if (level < 0)
                level = NewGUCNestLevel();
            set_guc(p.name, p.value);
        }
    return level;
}

// Built-in functions that are STABLE only because some argument types print according to settings
// (a timestamptz in json follows TimeZone): settings-free over the types of json_safe_type. And the
// enum I/O functions, STABLE because they read pg_enum, which no setting changes.
bool json_builder(Oid f) {
    switch (f) {
        case F_JSONB_BUILD_OBJECT_ANY:
        case F_JSONB_BUILD_OBJECT_:
        case F_JSONB_BUILD_ARRAY_ANY:
        case F_JSONB_BUILD_ARRAY_:
        case F_JSON_BUILD_OBJECT_ANY:
        case F_JSON_BUILD_OBJECT_:
        case F_JSON_BUILD_ARRAY_ANY:
        case F_JSON_BUILD_ARRAY_:
        case F_TO_JSONB:
        case F_TO_JSON:
            return true;
        default:
            return false;
    }
}

// Types whose json form depends on no setting but the cheap ones (floats: extra_float_digits).
bool json_safe_type(Oid t) {
    switch (t) {
        case TEXTOID: case VARCHAROID: case BPCHAROID: case NAMEOID: case UNKNOWNOID:
        case INT2OID: case INT4OID: case INT8OID: case NUMERICOID: case FLOAT4OID: case FLOAT8OID:
        case BOOLOID: case JSONBOID: case JSONOID: case UUIDOID:
            return true;
        default:
            return OidIsValid(t) && get_typtype(t) == TYPTYPE_ENUM;
    }
}

bool lean_function(Oid f, void *) {
    if (f == F_ENUM_OUT || f == F_ENUM_IN)
        return false;
    return f >= FirstGenbkiObjectId || func_volatile(f) != PROVOLATILE_IMMUTABLE;
}

// Whether a node may be evaluated under pin_settings_lean(): built-in types only (enums too: their
// I/O and order run no user code) and built-in IMMUTABLE functions only, nothing that reads a
// setting or runs user code behind the tree's back (domain checks, subqueries, SQL value
// functions such as current_schema).
bool lean_walker(Node *node, void *) {
    if (node == NULL)
        return false;
    if (IsA(node, SubLink) || IsA(node, CoerceToDomain) || IsA(node, SQLValueFunction) || IsA(node, XmlExpr) ||
        IsA(node, NextValueExpr) || IsA(node, CurrentOfExpr) || IsA(node, Aggref) || IsA(node, WindowFunc))
        return true;
    if (IsA(node, Param) && reinterpret_cast<Param *>(node)->paramkind != PARAM_EXTERN)
        return true;
    Oid type = exprType(node);
    if (OidIsValid(type) && type >= FirstGenbkiObjectId && get_typtype(type) != TYPTYPE_ENUM)
        return true;
    if (IsA(node, FuncExpr) && json_builder(reinterpret_cast<FuncExpr *>(node)->funcid)) {
        ListCell *lc;
        foreach (lc, reinterpret_cast<FuncExpr *>(node)->args)
            if (!json_safe_type(exprType(static_cast<Node *>(lfirst(lc)))))
                return true;
    } else if (check_functions_in_node(node, lean_function, NULL)) {
        return true;
    }
    return compat::expression_walk(node, lean_walker, NULL);
}

}  // namespace

int pin_settings() {
    int level = pin_cheap(NewGUCNestLevel());
    for (const Pin &p : lookup_pins) {
        const char *cur = GetConfigOption(p.name, true, false);
        if (cur == NULL || strcmp(cur, p.value) != 0)
            set_guc(p.name, p.value);
    }
    return level;
}

int pin_settings_lean() { return pin_cheap(-1); }

bool settings_free(Node *expr) { return !lean_walker(expr, NULL); }

void unpin_settings(int level) {
    if (level >= 0)
        AtEOXact_GUC(false, level);
}

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
