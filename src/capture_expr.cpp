// Capture: checking and compiling the DBA's SQL expressions.
//
// Each expression is parsed alone by PostgreSQL's own grammar (RAW_PARSE_PLPGSQL_EXPR, the
// PL/pgSQL expression mode) and must come out as exactly one target with no FROM, WHERE, GROUP,
// ORDER, LIMIT, locking or alias: nothing can be smuggled into the statements it is compiled into.
// It is then analysed against the table's columns (exposed as parameters, the way PL/pgSQL exposes
// NEW.x) to check names, type and the absence of aggregates / window / set-returning functions.
#include "capture.hpp"

extern "C" {
#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parser.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
}

namespace nps {
namespace capture {

const char *const expr_arg_name[X_COUNT] = {"customer", "payment_key", "succeeded_when", "failed_when",
                                            "amount",   "currency",    "paid_at",        "attributes",
                                            "recipient", "locale",     "time_zone"};

// Resolve a column reference of the payment row to a parameter. Called after PostgreSQL's own
// lookup: a name found in a FROM of a subquery (var != NULL) keeps SQL's scoping (inner wins).
static Node *post_columnref(ParseState *pstate, ColumnRef *cref, Node *var) {
    if (var != NULL)
        return NULL;
    RowShape *shape = static_cast<RowShape *>(pstate->p_ref_hook_state);
    const char *colname = NULL;
    int nfields = list_length(cref->fields);
    Node *last = static_cast<Node *>(llast(cref->fields));
    if (!IsA(last, String))
        return NULL;  // "x.*": not supported, PostgreSQL reports it
    if (nfields == 1)
        colname = strVal(last);
    else if (nfields == 2 && (strcmp(strVal(linitial(cref->fields)), NameStr(shape->relname)) == 0 ||
                              strcmp(strVal(linitial(cref->fields)), ROW_ALIAS) == 0))
        colname = strVal(last);
    else
        return NULL;
    TupleDesc desc = shape->tupdesc;
    for (int i = 0; i < desc->natts; i++) {
        Form_pg_attribute att = TupleDescAttr(desc, i);
        if (att->attisdropped || strcmp(NameStr(att->attname), colname) != 0)
            continue;
        Param *p = makeNode(Param);
        p->paramkind = PARAM_EXTERN;
        p->paramid = att->attnum;
        p->paramtype = att->atttypid;
        p->paramtypmod = att->atttypmod;
        p->paramcollid = att->attcollation;
        p->location = cref->location;
        return reinterpret_cast<Node *>(p);
    }
    return NULL;  // PostgreSQL raises 42703 "column ... does not exist"
}

void parser_setup(ParseState *pstate, void *arg) {
    pstate->p_post_columnref_hook = post_columnref;
    pstate->p_ref_hook_state = arg;
}

RowShape *make_shape(MemoryContext cxt, const char *relname, TupleDesc desc) {
    MemoryContext old = MemoryContextSwitchTo(cxt);
    RowShape *shape = static_cast<RowShape *>(palloc0(sizeof(RowShape)));
    namestrcpy(&shape->relname, relname);
    shape->tupdesc = CreateTupleDescCopy(desc);
    MemoryContextSwitchTo(old);
    return shape;
}

// Error context: which argument of track_payments an error is about; a syntax error's position
// points into the expression text (as for a function body), not into the calling statement.
static void expr_context(void *arg) {
    ExprErrCtx *c = static_cast<ExprErrCtx *>(arg);
    int pos = geterrposition();
    if (pos > 0) {
        errposition(0);
        internalerrposition(pos);
        internalerrquery(c->text);
    }
    errcontext("%s expression of track_payments", c->argname);
}

static Oid slot_type(ExprSlot slot) {
    switch (slot) {
        case X_SUCCEEDED:
        case X_FAILED:
            return BOOLOID;
        case X_AMOUNT:
            return NUMERICOID;
        case X_PAID_AT:
            return TIMESTAMPTZOID;
        case X_ATTRIBUTES:
            return JSONBOID;
        default:
            return TEXTOID;
    }
}

Node *parse_single(ExprSlot slot, const char *text) {
    const char *argname = expr_arg_name[slot];
    List *raw = raw_parser(text, RAW_PARSE_PLPGSQL_EXPR);
    if (list_length(raw) != 1 || !IsA(linitial(raw), RawStmt))
        ereport(ERROR, (errcode(ERRCODE_SYNTAX_ERROR), errmsg("%s must be a single SQL expression", argname)));
    Node *stmt = static_cast<RawStmt *>(linitial(raw))->stmt;
    if (!IsA(stmt, SelectStmt))
        ereport(ERROR, (errcode(ERRCODE_SYNTAX_ERROR), errmsg("%s must be a single SQL expression", argname)));
    SelectStmt *sel = reinterpret_cast<SelectStmt *>(stmt);
    if (list_length(sel->targetList) != 1)
        ereport(ERROR, (errcode(ERRCODE_SYNTAX_ERROR),
                        errmsg("%s must be exactly one SQL expression, not %d", argname,
                               list_length(sel->targetList))));
    if (sel->distinctClause || sel->intoClause || sel->fromClause || sel->whereClause || sel->groupClause ||
        sel->havingClause || sel->windowClause || sel->valuesLists || sel->sortClause || sel->limitOffset ||
        sel->limitCount || sel->lockingClause || sel->withClause || sel->op != SETOP_NONE)
        ereport(ERROR, (errcode(ERRCODE_SYNTAX_ERROR),
                        errmsg("%s must be a single SQL expression without FROM, WHERE or other clauses", argname),
                        errhint("Use a scalar subquery in parentheses to read another table.")));
    ResTarget *rt = static_cast<ResTarget *>(linitial(sel->targetList));
    if (rt->name != NULL)
        ereport(ERROR, (errcode(ERRCODE_SYNTAX_ERROR), errmsg("%s must not carry an alias", argname)));
    if (IsA(rt->val, ColumnRef) && IsA(llast(reinterpret_cast<ColumnRef *>(rt->val)->fields), A_Star))
        ereport(ERROR, (errcode(ERRCODE_SYNTAX_ERROR), errmsg("%s must be a single SQL expression, not *", argname)));

    return rt->val;
}

void push_expr_context(ErrorContextCallback *cb, ExprErrCtx *ectx, ExprSlot slot, const char *text) {
    ectx->argname = expr_arg_name[slot];
    ectx->text = text;
    cb->callback = expr_context;
    cb->arg = ectx;
    cb->previous = error_context_stack;
    error_context_stack = cb;
}

void check_expression(ExprSlot slot, const char *text, RowShape *shape) {
    (void)analyze_expression(slot, text, shape, NULL);
}

Expr *analyze_expression(ExprSlot slot, const char *text, RowShape *shape, bool *has_sublink) {
    if (text == NULL)
        return NULL;
    const char *argname = expr_arg_name[slot];
    ExprErrCtx ectx = {argname, text};
    ErrorContextCallback cb;
    cb.callback = expr_context;
    cb.arg = &ectx;
    cb.previous = error_context_stack;
    error_context_stack = &cb;

    Node *raw = parse_single(slot, text);
    ParseState *pstate = make_parsestate(NULL);
    pstate->p_sourcetext = text;
    parser_setup(pstate, shape);
    Node *expr = transformExpr(pstate, raw, EXPR_KIND_SELECT_TARGET);
    if (pstate->p_hasAggs || pstate->p_hasWindowFuncs || pstate->p_hasTargetSRFs)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("%s must not use aggregate, window or set-returning functions", argname),
                        errdetail("The expression is evaluated once per payment row.")));
    check_not_volatile(slot, expr);
    Oid type = exprType(expr);
    Oid target = InvalidOid;
    CoercionContext ctx = COERCION_ASSIGNMENT;
    const char *want = NULL;
    switch (slot) {
        case X_CUSTOMER:
        case X_PAYMENT_KEY:
            target = TEXTOID, ctx = COERCION_EXPLICIT, want = "a type castable to text";
            break;
        case X_SUCCEEDED:
        case X_FAILED:
            target = BOOLOID, ctx = COERCION_IMPLICIT, want = "boolean";
            break;
        case X_AMOUNT:
            target = NUMERICOID, want = "numeric (or a number type assignable to numeric)";
            break;
        case X_CURRENCY:
        case X_RECIPIENT:
        case X_LOCALE:
        case X_TIME_ZONE:
            target = TEXTOID, want = "text";
            break;
        case X_PAID_AT:
            target = TIMESTAMPTZOID, want = "timestamp with time zone (or timestamp / date)";
            break;
        case X_ATTRIBUTES:
            target = JSONBOID, want = "jsonb";
            break;
        case X_COUNT:
            break;
    }
    if (!can_coerce_type(1, &type, &target, ctx))
        ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
                        errmsg("%s expression must be %s, not %s", argname, want, format_type_be(type))));
    // What the compiled statement does: (expr)::<slot type>, collations assigned.
    assign_expr_collations(pstate, expr);
    Node *coerced = coerce_to_target_type(pstate, expr, type, slot_type(slot), -1, COERCION_EXPLICIT,
                                          COERCE_EXPLICIT_CAST, -1);
    if (coerced == NULL)
        ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
                        errmsg("%s expression must be %s, not %s", argname, want, format_type_be(type))));
    if (has_sublink)
        *has_sublink = pstate->p_hasSubLinks;
    free_parsestate(pstate);
    error_context_stack = cb.previous;
    return reinterpret_cast<Expr *>(coerced);
}

// "(\n<expr>\n)": the newlines end a trailing "--" comment inside the checked expression.
static void append_wrapped(StringInfo buf, const char *expr, const char *cast) {
    appendStringInfo(buf, "(\n%s\n)%s", expr, cast);
}

char *eval_sql(const char *const exprs[X_COUNT], const char *set_relname) {
    StringInfoData buf;
    initStringInfo(&buf);
    appendStringInfoString(&buf, "SELECT * FROM (SELECT CASE WHEN ");
    append_wrapped(&buf, exprs[X_SUCCEEDED], "");
    appendStringInfoString(&buf, " THEN 'succeeded'::pg_catalog.text");
    if (exprs[X_FAILED]) {
        appendStringInfoString(&buf, " WHEN ");
        append_wrapped(&buf, exprs[X_FAILED], "");
        appendStringInfoString(&buf, " THEN 'failed'::pg_catalog.text");
    }
    appendStringInfoString(&buf, " END AS kind, ");
    append_wrapped(&buf, exprs[X_CUSTOMER], "::pg_catalog.text AS customer, ");
    append_wrapped(&buf, exprs[X_PAYMENT_KEY], "::pg_catalog.text AS payment_key, ");
    if (exprs[X_AMOUNT])
        append_wrapped(&buf, exprs[X_AMOUNT], "::pg_catalog.numeric AS amount, ");
    else
        appendStringInfoString(&buf, "NULL::pg_catalog.numeric AS amount, ");
    if (exprs[X_CURRENCY])
        append_wrapped(&buf, exprs[X_CURRENCY], "::pg_catalog.text AS currency, ");
    else
        appendStringInfoString(&buf, "NULL::pg_catalog.text AS currency, ");
    if (exprs[X_PAID_AT]) {
        appendStringInfoString(&buf, "COALESCE(");
        append_wrapped(&buf, exprs[X_PAID_AT], "::pg_catalog.timestamptz, pg_catalog.now()) AS occurred_at, ");
    } else
        appendStringInfoString(&buf, "pg_catalog.now() AS occurred_at, ");
    if (exprs[X_ATTRIBUTES])
        append_wrapped(&buf, exprs[X_ATTRIBUTES], "::pg_catalog.jsonb AS attributes, ");
    else
        appendStringInfoString(&buf, "NULL::pg_catalog.jsonb AS attributes, ");
    static const char *const contact[3] = {"recipient", "locale", "time_zone"};
    for (int i = 0; i < 3; i++) {
        const char *e = exprs[X_RECIPIENT + i];
        if (e)
            append_wrapped(&buf, e, "::pg_catalog.text AS ");
        else
            appendStringInfoString(&buf, "NULL::pg_catalog.text AS ");
        appendStringInfoString(&buf, contact[i]);
        if (i < 2)
            appendStringInfoString(&buf, ", ");
    }
    if (set_relname)
        appendStringInfo(&buf, " FROM nps_new AS %s", quote_identifier(set_relname));
    appendStringInfoString(&buf, ") nps_row WHERE nps_row.kind IS NOT NULL");
    return buf.data;
}

char *key_sql(const char *key_expr) {
    StringInfoData buf;
    initStringInfo(&buf);
    appendStringInfoString(&buf, "SELECT ");
    append_wrapped(&buf, key_expr, "::pg_catalog.text");
    return buf.data;
}

// Looked up on each use (two syscache probes): a cached OID would go stale when the extension is
// dropped and created again in the same backend.
Oid ext_namespace() { return get_namespace_oid("nps_billing", false); }

Oid ext_owner() {
    HeapTuple tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(ext_namespace()));
    if (!HeapTupleIsValid(tup))
        elog(ERROR, "cache lookup failed for schema nps_billing");
    Oid owner = reinterpret_cast<Form_pg_namespace>(GETSTRUCT(tup))->nspowner;
    ReleaseSysCache(tup);
    return owner;
}

}  // namespace capture
}  // namespace nps
