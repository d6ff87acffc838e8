// Capture: the trigger turning payment rows into payment events and survey requests.
//
// Shape (chosen by measurement, see README.md (Capture)): two AFTER ... FOR EACH STATEMENT triggers
// (INSERT and UPDATE; PostgreSQL allows a transition table only on single-event triggers) with
// REFERENCING NEW TABLE AS nps_new, both calling nps_capture_trigger(). Per statement:
//   - few rows (the OLTP case): the row path, per row = 3 cached SPI statements in the common
//     case (evaluate expressions, look up dedup/opt-out/throttle, insert the event);
//   - many rows (INSERT ... SELECT, COPY): the set path = 2 cached statements for the whole
//     statement (evaluate all rows into a tuplestore, then one data-modifying CTE).
// Expressions run with the rights of the writing role; our tables are written with the rights of
// the extension's owner (SetUserIdAndSecContext), with a fixed search_path for both.
// In on_error = 'record' mode every row runs inside a subtransaction (the pattern PL/pgSQL uses
// for EXCEPTION blocks) and a failing row lands in capture_error while the payment commits; the
// set path runs in one subtransaction and falls back to the row path if it fails.
#include "capture_trigger.hpp"

extern "C" {
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/rel.h"
}

using namespace nps::capture;

namespace {

// Statements with at most this many rows take the row path (measured: bench/p6_p8_capture.sh).
constexpr int64 ROW_PATH_MAX = 8;

// One statement's rows through the row or the set path (s is pinned by the caller).
void capture_statement(Source *s, TriggerData *td, int64 n, Oid owner, Oid extnsp, bool nested, bool lean) {
    Tuplestorestate *ts = td->tg_newtable;
    if (SPI_register_trigger_data(td) != SPI_OK_TD_REGISTER)
        elog(ERROR, "nps_billing: could not register the transition table");
    if (s->raise) {
        // The error goes to the payment's writer: say which source raised it, not our statements.
        MemoryContext oldcxt = CurrentMemoryContext;
        PG_TRY();
        {
            if (n <= ROW_PATH_MAX || s->broken_msg) {
                run_row_path(s, td->tg_relation, ts, owner, extnsp, TRIGGER_FIRED_BY_INSERT(td->tg_event), nested);
            } else {
                int64 nullkeys = run_set_path(s, td->tg_relation, owner, extnsp);
                if (nullkeys > 0)
                    ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                                    errmsg("payment_key expression returned NULL for %lld row(s)", (long long)nullkeys)));
            }
        }
        PG_CATCH();
        {
            MemoryContextSwitchTo(oldcxt);
            ErrorData *ed = CopyErrorData();
            FlushErrorState();  // the original (which may quote the row's values) is never reported
            int code = ed->sqlerrcode;
            char *msg = scrubbed_message(s, ed);
            ereport(ERROR, (errcode(code),
                            raise_key[0] ? errmsg("capture of payment source \"%s\" failed for payment key \"%s\": %s",
                                                  s->name, raise_key, msg)
                                         : errmsg("capture of payment source \"%s\" failed: %s", s->name, msg),
                            errdetail("SQLSTATE %s (on_error = raise). The row's values are not shown.",
                                      unpack_sql_state(code))));
        }
        PG_END_TRY();
    } else if (n <= ROW_PATH_MAX || s->broken_msg) {
        run_row_path(s, td->tg_relation, ts, owner, extnsp, TRIGGER_FIRED_BY_INSERT(td->tg_event), nested, lean);
    } else {
        // One subtransaction for the whole set; if anything in it fails, redo the statement row
        // by row so that only the bad rows land in capture_error.
        ErrorData *failed = in_subtransaction([&] { run_set_path(s, td->tg_relation, owner, extnsp); });
        if (failed) {
            FreeErrorData(failed);
            SPI_unregister_relation("nps_eval");  // may still be registered (result ignored)
            SPI_unregister_relation("nps_cand");
            SPI_unregister_relation("nps_granted");
            run_row_path(s, td->tg_relation, ts, owner, extnsp, TRIGGER_FIRED_BY_INSERT(td->tg_event), nested);
        }
    }
}

}  // namespace

// capture() RETURNS trigger: AFTER INSERT / AFTER UPDATE ... REFERENCING NEW TABLE AS nps_new
// FOR EACH STATEMENT on a tracked table.
NPS_FUNCTION(nps_capture_trigger) {
    if (!CALLED_AS_TRIGGER(fcinfo))
        ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                        errmsg("nps_billing.capture() must be called as a trigger")));
    TriggerData *td = reinterpret_cast<TriggerData *>(fcinfo->context);
    if (!TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) ||
        td->tg_trigger->tgnewtable == NULL || strcmp(td->tg_trigger->tgnewtable, "nps_new") != 0)
        ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                        errmsg("nps_billing.capture() must be an AFTER ... FOR EACH STATEMENT trigger with "
                               "REFERENCING NEW TABLE AS nps_new"),
                        errhint("Use nps_billing.track_payments() to create it.")));
    Tuplestorestate *ts = td->tg_newtable;
    if (ts == NULL || tuplestore_tuple_count(ts) == 0)
        return PointerGetDatum(NULL);
    int64 n = tuplestore_tuple_count(ts);
    Oid extnsp = ext_namespace();
    Oid owner = ext_owner();
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "nps_billing: SPI_connect failed");
    // Whatever the writer's session says, expressions read and run under fixed settings; nothing
    // they change outlives this invocation (on error, the (sub)transaction abort undoes it all).
    // A few rows of a cached lean source: only the settings its expressions can read.
    Source *s = find_source(RelationGetRelid(td->tg_relation));
    bool lean = s && s->tracked && s->lean && s->pins == 0 && n <= ROW_PATH_MAX;
    int gucs = lean ? pin_settings_lean() : pin_settings();
    if (!lean)
        s = get_source(td->tg_relation, owner, extnsp);
    if (!s->tracked) {
        unpin_settings(gucs);
        warn_untracked_capture(td->tg_relation);  // a Citus shard, a table restored without its source
        SPI_finish();
        return PointerGetDatum(NULL);
    }
    // Pinned for the whole invocation, also when an error unwinds it: an expression may run a
    // statement that fires this trigger again and invalidates the source meanwhile.
    s->pins++;
    bool nested = s->pins > 1;
    if (!lean)
        use_eval_path(s);
    PG_TRY();
    {
        capture_statement(s, td, n, owner, extnsp, nested, lean);
    }
    PG_FINALLY();
    {
        s->pins--;
    }
    PG_END_TRY();
    unpin_settings(gucs);
    SPI_finish();
    return PointerGetDatum(NULL);
}

// _capture_cache_changed(): trigger on payment_source, customer_contact and opt_out; the relcache
// invalidation of the table makes every backend drop what it cached from it (capture sources,
// the memos of src/capture_memo.cpp) once the change commits.
NPS_FUNCTION(nps_capture_cache_changed) {
    if (!CALLED_AS_TRIGGER(fcinfo))
        ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                        errmsg("must be called as a trigger")));
    TriggerData *td = reinterpret_cast<TriggerData *>(fcinfo->context);
    CacheInvalidateRelcacheByRelid(RelationGetRelid(td->tg_relation));
    return PointerGetDatum(NULL);
}
