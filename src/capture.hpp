// Capture: shared declarations of the payment-capture area (track_payments, the trigger, the
// survey policy helpers). Everything here is plain C-style data in PostgreSQL memory: the trigger
// is a hot path and holds no C++ objects with destructors, so it may ereport directly.
#pragma once

#include "pg_boundary.hpp"

extern "C" {
#include "access/tupdesc.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/relcache.h"
#include "utils/resowner.h"
#include "utils/tuplestore.h"
#include "nodes/parsenodes.h"
#include "nodes/primnodes.h"
#include "parser/parse_node.h"
}

namespace nps {
namespace capture {

// Column references in an expression resolve to the payment row: the row's columns become
// PARAM_EXTERN parameters numbered by attribute number (the way PL/pgSQL resolves NEW.x).
struct RowShape {
    NameData relname;     // the table's name: "relname.col" is accepted too
    TupleDesc tupdesc;    // copy of the table's descriptor at compile time
};

// The expressions of one source, in the order of track_payments' arguments.
enum ExprSlot {
    X_CUSTOMER = 0,
    X_PAYMENT_KEY,
    X_SUCCEEDED,
    X_FAILED,
    X_AMOUNT,
    X_CURRENCY,
    X_PAID_AT,
    X_ATTRIBUTES,
    X_RECIPIENT,  // the survey's contact data (personal data: never in errors or logs)
    X_LOCALE,
    X_TIME_ZONE,
    X_COUNT
};
// The slots whose values go to the survey only (not to the payment event).
constexpr int X_EVENT_COUNT = X_RECIPIENT;
extern const char *const expr_arg_name[X_COUNT];

// Parser hook installing the column-to-parameter resolution (arg is a RowShape *).
void parser_setup(ParseState *pstate, void *arg);

// RowShape copied into cxt from the relation's descriptor.
RowShape *make_shape(MemoryContext cxt, const char *relname, TupleDesc desc);

// The raw parse tree of one expression: exactly one SQL expression, no clause smuggled in (42601).
Node *parse_single(ExprSlot slot, const char *text);
// Error context naming the argument of track_payments; a syntax error's position points into text.
struct ExprErrCtx {
    const char *argname;
    const char *text;
};
void push_expr_context(ErrorContextCallback *cb, ExprErrCtx *ectx, ExprSlot slot, const char *text);

// Checks one expression: exactly one SQL expression, columns of the table only, a type fitting its
// slot. Raises 42601 / 42703 / 42804 / 0A000 naming the argument. NULL text is allowed for the
// optional slots (returns without checking).
void check_expression(ExprSlot slot, const char *text, RowShape *shape);
// The same, returning the analysed expression coerced to its slot's type (column references are
// PARAM_EXTERN parameters), and whether it contains a subquery. NULL text: NULL.
Expr *analyze_expression(ExprSlot slot, const char *text, RowShape *shape, bool *has_sublink);

// The evaluation statement of a source. Output columns, always in this order and with these types:
//   kind text ('succeeded'/'failed'), customer text, payment_key text, amount numeric,
//   currency text, occurred_at timestamptz, attributes jsonb, recipient text, locale text,
//   time_zone text
// Only rows whose kind is not NULL come out. set_relname NULL: row mode (columns are parameters,
// no FROM); otherwise the rows come from the transition table nps_new aliased as set_relname.
char *eval_sql(const char *const exprs[X_COUNT], const char *set_relname);
// The statement computing only the payment key (row mode), used to label capture_error rows.
char *key_sql(const char *key_expr);
constexpr int EVAL_NCOLS = 10;

// Deterministic sampling point in [0, 1) of (customer, payment key): a payment is kept when
// sample_point < sample_rate. Same bytes, same point, on every platform and every replay.
double sample_point(const char *cust, int custlen, const char *key, int keylen);

// 128 random bits from pg_strong_random as unpadded base64url: 22 characters + NUL.
void make_token(char out[23]);

// Backend-local memo of customer_contact (src/capture_memo.cpp). attach: the table's oid
// (its relcache invalidations empty the memo). put: only with the generation noted before the
// snapshot the value was read under, and only for rows of other, committed transactions.
void contact_memo_attach(Oid relid);
uint64 contact_memo_generation();
bool contact_memo_get(const char *cust, int len, TimestampTz *last);
void contact_memo_put(uint64 gen, const char *cust, int len, TimestampTz last);
// Whether opt_out holds no rows at all (memoized until an INSERT or UPDATE on it commits).
bool opt_out_is_empty(Oid relid);

// Tables Citus manages (src/capture_citus.cpp), detected by catalog only. refuse: 0A000 when
// rel is a distributed, reference or Citus local table, or a shard. warn: the trigger fired on
// rel but it has no payment source; one WARNING per table and backend.
void refuse_citus_table(Relation rel, const char *qrel);
void warn_untracked_capture(Relation rel);

// The extension's schema and its owner (the rights the trigger writes our tables with).
Oid ext_namespace();
Oid ext_owner();

// search_path = pg_catalog, <nsp> until compat::pop_search_path(the returned level).
inline int push_path(Oid nsp) { return compat::push_search_path(nsp); }

// Runs fn with the extension owner's rights and search_path (pg_catalog, nps_billing), restoring
// the caller's user and search path even on error.
template <typename F>
void as_owner(Oid owner, Oid extnsp, F &&fn) {
    Oid save_uid;
    int save_sec;
    GetUserIdAndSecContext(&save_uid, &save_sec);
    SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
    int path_level = push_path(extnsp);
    PG_TRY();
    {
        fn();
    }
    PG_FINALLY();
    {
        compat::pop_search_path(path_level);
        SetUserIdAndSecContext(save_uid, save_sec);
    }
    PG_END_TRY();
}

// Tuplestores passed to SPI statements as named relations (src/capture_set.cpp): a descriptor
// of n columns, and the tuplestore registered under name for the statements that follow.
TupleDesc make_desc(int n, const char *const *names, const Oid *types);
void register_store(const char *name, TupleDesc desc, Tuplestorestate *ts);

// Runs fn in an internal subtransaction (PL/pgSQL's EXCEPTION-block pattern). NULL when fn
// succeeded; otherwise the subtransaction is rolled back and its error returned, copied into the
// caller's memory context (FreeErrorData it).
template <typename F>
ErrorData *in_subtransaction(F &&fn) {
    MemoryContext oldcxt = CurrentMemoryContext;
    ResourceOwner oldowner = CurrentResourceOwner;
    ErrorData *volatile ed = NULL;
    BeginInternalSubTransaction(NULL);
    MemoryContextSwitchTo(oldcxt);
    PG_TRY();
    {
        fn();
        ReleaseCurrentSubTransaction();
        MemoryContextSwitchTo(oldcxt);
        CurrentResourceOwner = oldowner;
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(oldcxt);
        ed = CopyErrorData();
        FlushErrorState();
        RollbackAndReleaseCurrentSubTransaction();  // also restores the writer's user id
        MemoryContextSwitchTo(oldcxt);
        CurrentResourceOwner = oldowner;
    }
    PG_END_TRY();
    // A cancel (or statement_timeout) is the writer's, not a capture failure: it ends the
    // statement instead of being recorded or redone row by row.
    if (ed != NULL && ed->sqlerrcode == ERRCODE_QUERY_CANCELED)
        ReThrowError(ed);
    return ed;
}

}  // namespace capture
}  // namespace nps

namespace nps {
namespace capture {

// ---- Evaluation context (src/capture_bind.cpp) ----------------------------------------------
// Expressions are evaluated under fixed settings, whatever the writer's session says, so the same
// row gives the same event everywhere: search_path = pg_catalog, pg_temp (pg_temp last), DateStyle
// ISO, MDY, IntervalStyle postgres, TimeZone UTC, extra_float_digits 1, lc_monetary / lc_numeric /
// lc_time C, standard_conforming_strings on, ... pin_settings() opens a GUC nest level and sets
// them; unpin_settings(level) undoes every setting made since (the pins and anything an
// expression changed). On error, the (sub)transaction abort undoes them.
constexpr const char *EVAL_PATH = "pg_catalog, pg_temp";
int pin_settings();
void unpin_settings(int level);
// The settings a built-in IMMUTABLE function can read (DateStyle, IntervalStyle,
// extra_float_digits, bytea_output, ...), compared through their C variables; -1 when they all
// hold already (no nest level opened). Enough for expressions that are settings_free.
int pin_settings_lean();
// Whether an analysed expression calls only built-in IMMUTABLE functions over built-in types (and
// enums), with no subquery, domain check or SQL value function: nothing in it reads search_path,
// TimeZone, the lc_* settings or the text search configuration, and no user code runs.
bool settings_free(Node *expr);
// search_path inside a pinned level (text as for SET search_path).
void set_search_path(const char *path);
// The alias of the payment row in bound expressions: outer references inside a subquery are
// written nps_row.<column>; the set path's transition table is aliased so.
constexpr const char *ROW_ALIAS = "nps_row";

// Runs fn with the rights of the tracked table's owner inside a security-restricted operation (as
// PostgreSQL runs index expressions), restoring the caller's user and context even on error.
template <typename F>
void as_table_owner(Oid relowner, F &&fn) {
    Oid save_uid;
    int save_sec;
    GetUserIdAndSecContext(&save_uid, &save_sec);
    SetUserIdAndSecContext(relowner, save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
    PG_TRY();
    {
        fn();
    }
    PG_FINALLY();
    {
        SetUserIdAndSecContext(save_uid, save_sec);
    }
    PG_END_TRY();
}

// Binds one expression of track_payments to what its names resolve to now: the text is analysed
// against the table (search_path = pg_catalog, <the table's schema>, columns as the table's) and
// deparsed with an empty search_path, so that everything outside pg_catalog is schema-qualified
// and operators are written OPERATOR(schema.op) where needed (as pg_dump writes views); implicit
// casts are written out, so overloads added later never match better. The result is checked to
// read back to itself under EVAL_PATH. Must run inside pin_settings(). NULL text: NULL.
char *bind_expression(ExprSlot slot, const char *text, Relation rel);

// Refuses (42P17, naming the argument) an analysed expression that calls a VOLATILE function.
void check_not_volatile(ExprSlot slot, Node *expr);

}  // namespace capture
}  // namespace nps
