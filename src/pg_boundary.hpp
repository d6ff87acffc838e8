// The one rule at the C++/PostgreSQL boundary, in one place:
//
//  1. No C++ exception unwinds into PostgreSQL. Every extern "C" entry point runs its body in
//     nps::guarded(), which turns nps::sql_error / std::exception into ereport(ERROR) with a
//     SQLSTATE -- after the catch block has ended, so no exception object is alive.
//  2. ereport(ERROR) is a longjmp and must never jump over a live C++ object with a
//     destructor. Code that holds such objects calls PostgreSQL through nps::pg_call(), which
//     catches the error with PG_TRY, throws it as nps::pg_error (destructors run), and
//     guarded() re-raises the original ErrorData once the stack is plain again.
//  Hot paths (aggregate transitions) hold no C++ objects and may ereport directly.
#pragma once

extern "C" {
#include "postgres.h"
#include "fmgr.h"
#include "utils/elog.h"
#include "utils/memutils.h"
}
#include "pg_compat.hpp"  // every PostgreSQL version difference

#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <utility>

namespace nps {

// An error meant for the user: SQLSTATE + message (fixed buffer: no allocation, no destructor).
class sql_error : public std::exception {
  public:
    sql_error(int sqlstate, const char *fmt, ...) __attribute__((format(printf, 3, 4)))
        : code_(sqlstate) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg_, sizeof msg_, fmt, ap);
        va_end(ap);
    }
    const char *what() const noexcept override { return msg_; }
    int code() const noexcept { return code_; }

  private:
    int code_;
    char msg_[512];
};

// A PostgreSQL error caught by pg_call(), carried across C++ frames to be re-raised.
class pg_error : public std::exception {
  public:
    explicit pg_error(ErrorData *e) : edata_(e) {}
    const char *what() const noexcept override { return edata_->message ? edata_->message : "error"; }
    ErrorData *edata() const noexcept { return edata_; }

  private:
    ErrorData *edata_;
};

// Run PostgreSQL code that may ereport(ERROR) while C++ objects with destructors are alive.
template <typename F>
inline void pg_call(F &&fn) {
    MemoryContext volatile oldcxt = CurrentMemoryContext;
    ErrorData *volatile edata = nullptr;
    PG_TRY();
    {
        fn();
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(oldcxt);
        edata = CopyErrorData();
        FlushErrorState();
    }
    PG_END_TRY();
    if (edata)
        throw pg_error(edata);
}

// Body of every extern "C" entry point that may meet a C++ exception.
template <typename F>
inline Datum guarded(F &&fn) {
    int code = 0;
    char msg[512];
    ErrorData *edata = nullptr;
    try {
        return fn();
    } catch (const pg_error &e) {
        edata = e.edata();
    } catch (const sql_error &e) {
        code = e.code();
        strlcpy(msg, e.what(), sizeof msg);
    } catch (const std::bad_alloc &) {
        code = ERRCODE_OUT_OF_MEMORY;
        strlcpy(msg, "out of memory", sizeof msg);
    } catch (const std::exception &e) {
        code = ERRCODE_INTERNAL_ERROR;
        snprintf(msg, sizeof msg, "nps_billing internal error: %s", e.what());
    } catch (...) {
        code = ERRCODE_INTERNAL_ERROR;
        strlcpy(msg, "nps_billing internal error: unknown exception", sizeof msg);
    }
    // Only plain locals are alive here.
    if (edata)
        ReThrowError(edata);
    ereport(ERROR, (errcode(code), errmsg("%s", msg)));
    pg_unreachable();
}

}  // namespace nps

// Declares an SQL-callable function with C linkage whose body runs inside nps::guarded():
//   NPS_FUNCTION(my_func) { ... PG_GETARG_INT32(0) ... }
// The try block costs nothing on the normal path (table-based unwinding).
#define NPS_FUNCTION(name)                                                             \
    static Datum name##_body(FunctionCallInfo fcinfo);                                 \
    extern "C" {                                                                       \
    PG_FUNCTION_INFO_V1(name);                                                         \
    }                                                                                  \
    extern "C" Datum name(PG_FUNCTION_ARGS) {                                          \
        return nps::guarded([fcinfo]() -> Datum { return name##_body(fcinfo); });      \
    }                                                                                  \
    static Datum name##_body(FunctionCallInfo fcinfo)

// An SQL-callable function whose body calls only C code and ereport(): no C++ exception can
// arise in it (noexcept says so), so it runs without guarded()'s frame. For the aggregates'
// per-row transition functions, where guarded()'s 700-byte frame and stack canary were most of
// the function's own cost.
#define NPS_LEAF_FUNCTION(name)                                                        \
    static Datum name##_body(FunctionCallInfo fcinfo) noexcept;                        \
    extern "C" {                                                                       \
    PG_FUNCTION_INFO_V1(name);                                                         \
    }                                                                                  \
    extern "C" Datum name(PG_FUNCTION_ARGS) { return name##_body(fcinfo); }            \
    static Datum name##_body(FunctionCallInfo fcinfo) noexcept
