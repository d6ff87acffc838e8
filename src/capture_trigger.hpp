// Capture: what the files of the capture trigger share (src/capture_source.cpp: the per-backend
// source cache and the shared owner-side plans; src/capture_direct.cpp: the direct writes;
// src/capture_row.cpp: the row path; src/capture_set.cpp: the set path; src/capture_trigger.cpp:
// the trigger entry point). Plain C-style data in PostgreSQL memory, as in capture.hpp.
#pragma once

#include "capture.hpp"

extern "C" {
#include "commands/trigger.h"
#include "executor/spi.h"
#include "nodes/execnodes.h"
#include "utils/tuplestore.h"
}

namespace nps {
namespace capture {

// One tracked table, cached per backend; invalidated by relcache callbacks (payment_source
// changes send one through its statement trigger; ALTER TABLE of the payments table sends one).
struct Source {
    Source *next;
    Oid relid;
    bool valid;
    // Trigger invocations of this backend using it now (nested statements run by an expression
    // fire the trigger again). An invalidated source is unlinked from the cache but freed only
    // once no invocation uses it (zombies, freed by the next get_source()).
    int pins;
    bool tracked;  // false: the trigger exists but no tracked source row (nothing to do)
    MemoryContext cxt;
    int32 id;
    char *name;
    bool enabled, raise, on_succeeded, on_failed;
    Datum min_amount;  // numeric
    double sample_rate;
    Datum throttle, delay, expires_after;  // interval
    char *channel;
    char *exprs[X_COUNT];
    bool contact;          // a recipient, locale or time zone expression: surveys get them
    bool needs_recipient;  // a recipient expression and a channel that sends to it (email, sms)
    Oid nspoid;       // the table's schema
    Oid table_owner;  // expressions run with its rights, in a security-restricted operation
    // The expressions are stored bound (schema-qualified) and read under EVAL_PATH; a database
    // still at 0.1 stores them as written: pg_catalog, then the table's schema (legacy_path).
    char *legacy_path;
    // The expressions do not compile any more (a column dropped or retyped, a function gone, ...):
    // every row records this error (or raises it with on_error = 'raise'); the payment commits.
    char *broken_msg;
    int broken_code;
    RowShape *shape;
    SPIPlanPtr row_plan, set_plan, key_plan;
    // Row path without SPI when no expression has a subquery: planned expressions evaluated with
    // ExprStates, compiled once as the table's owner (ExecInitExpr checks EXECUTE rights).
    bool fast;
    ExprState *xs[X_COUNT];
    // Fast, direct, record mode, and every expression settings_free(): single-row statements run
    // under pin_settings_lean(), and only the rare statements (a survey, an error) pin the rest.
    bool lean;
    Oid survey_seq;
    // Direct row path (no SPI for the common case): catalog objects resolved at load.
    bool direct;
    Oid ev_rel, ev_seq, ev_uniq, oo_rel, oo_idx, cc_rel, cc_idx;
    AttrNumber ev_att[11];  // id, source_id, payment_key, kind, customer_id, amount, currency,
                            // occurred_at, attributes, survey_id, skip_reason
    AttrNumber cc_last;     // customer_contact.last_survey_at
};

// The key of the row whose capture raised (on_error = 'raise'), for the error message.
extern char raise_key[64];

// Shared owner-side plans (the policy is passed as parameters), prepared by get_source().
extern SPIPlanPtr plan_load, plan_contact, plan_event, plan_unsurvey, plan_survey, plan_survey_contact, plan_error,
    plan_set, plan_set_contact;
// A saved SPI plan of sql (elog ERROR when it does not prepare).
SPIPlanPtr keep(const char *sql, int nargs, Oid *types, int opts);

// ---- The source cache (src/capture_source.cpp) ----
// search_path for reading the source's expressions (inside the trigger's pinned settings).
void use_eval_path(Source *s);
// The valid cached entry of relid, or NULL (an invalid one is freed).
Source *find_source(Oid relid);
// The cached source of rel, loaded (as the owner) when missing or invalidated.
Source *get_source(Relation rel, Oid owner, Oid extnsp);

// ---- The direct writes (src/capture_direct.cpp) ----
// Resolves what the direct row path needs; any surprise (a renamed index, a missing column)
// leaves it off (s->direct false) and the SPI statements do the work.
void resolve_direct(Source *s, Oid nsp);

// ---- The row path (src/capture_row.cpp) ----
// One evaluated row, copied out of SPI memory into the row context.
struct Eval {
    const char *kind;
    const char *customer;  // NULL: no_customer
    const char *key;
    const char *contact[3];  // recipient, locale, time zone as evaluated, then as kept (NULL: none)
    bool amount_null, currency_null, attributes_null;
    Datum amount, currency, occurred_at, attributes;
};

struct RowCtx {
    Source *s;
    bool inserted;          // rows of an INSERT (or COPY): no earlier event to look for first
    bool fast;              // evaluate with the source's ExprStates (eval_fast)
    bool lean;              // only pin_settings_lean() holds: pin the rest before any SPI statement
    ExprContext *econtext;  // for eval_fast
    Oid owner, extnsp;
    ParamListInfo params;  // the payment row's columns as $attnum
    const char *key;       // known once evaluated (for capture_error)
    const char *customer;
};

// The owner's part of the row path without SPI (record mode): probes by index, event inserted
// directly. Returns false when it could not run (payment_event has triggers): use the SQL path.
bool owner_direct(RowCtx *rc, Eval *ev, const char *pre, bool sampled_out, MemoryContext rowcxt);
// A survey is due for event eid (survey id sid, customer cust): the throttle lock row, then the
// survey (or the event says 'throttled'). Runs as the owner.
void survey_after_event(RowCtx *rc, const Eval *ev, int64 eid, int64 sid, Datum cust, MemoryContext rowcxt);
// What capture says about an error: never the row's values (the message template, arguments "...").
char *scrubbed_message(const Source *s, const ErrorData *ed);
// The rows of ts one by one (record mode: each in a subtransaction, an error becomes a
// capture_error row).
void run_row_path(Source *s, Relation rel, Tuplestorestate *ts, Oid owner, Oid extnsp, bool inserted, bool nested,
                  bool lean = false);

// ---- The set path (src/capture_set.cpp) ----
// Every row of the statement evaluated into a tuplestore as the writer, then one data-modifying
// statement as the owner. Returns the number of NULL payment keys met.
int64 run_set_path(Source *s, Relation rel, Oid owner, Oid extnsp);
// The scan of the evaluated rows (src/capture_set_scan.cpp): passes them on to inner and, while
// the payment keys are distinct, collects each customer's candidate.
DestReceiver *set_scan_begin(const Source *s, DestReceiver *inner);
// The candidates (rows of desc: customer, payment_key, kind) in customer "C" order, *n of them,
// and the NULL keys met; NULL when the scan gave up (a repeated key, memory past
// maintenance_work_mem).
Tuplestorestate *set_scan_candidates(DestReceiver *scan, TupleDesc desc, int64 *n, int64 *nullkeys);
void set_scan_end(DestReceiver *scan);
// A payment's identity in the set path (src/capture_set_scan.cpp): "C" order of two strings
// (text under COLLATE "C": bytes, then length), whether a kind is 'failed', and the 64-bit
// hash of (payment key, kind) the scan and the ids use (never 0).
int c_order(const char *a, int alen, const char *b, int blen);
bool kind_is_failed(const char *kind, int len);
uint64 payment_hash(const char *key, int klen, bool failed);
// The set path's ids (src/capture_set_ids.cpp): the granted surveys' survey and event ids by
// (payment key, kind), read by _capture_set_id() while pushed.
struct SetIds;
SetIds *set_ids_create(uint64 n, Oid event_seq);
void set_ids_add(SetIds *t, const char *key, int klen, bool failed, int64 sid, int64 eid, bool recorded);
bool set_ids_recorded(const SetIds *t, const char *key, int klen, bool failed);
void set_ids_push(SetIds *t);
void set_ids_pop(SetIds *t);

}  // namespace capture
}  // namespace nps
