// The 0.1 aggregate support functions (state type internal), kept so that a database still at
// 0.1 can load the 0.2 library and run its aggregates until ALTER EXTENSION nps_billing UPDATE
// (0.2 uses agg_state.cpp). Hardened like the 0.2 ones: the inverse re-checks its argument,
// counts and weights never wrap or overflow, deserialized states are checked.
#include "npsagg.hpp"

extern "C" {
#include "libpq/pqformat.h"
#include "utils/builtins.h"
}

using namespace nps;

namespace {

struct AggState {
    Summary s;
    int64 inputs;  // non-NULL inputs seen (rollup: summaries; others: scored rows)
};

inline AggState *state_arg(FunctionCallInfo fcinfo, const char *fname) {
    if (!PG_ARGISNULL(0)) return reinterpret_cast<AggState *>(PG_GETARG_POINTER(0));
    MemoryContext aggcxt;
    if (!AggCheckCallContext(fcinfo, &aggcxt)) elog(ERROR, "%s called in non-aggregate context", fname);
    return static_cast<AggState *>(MemoryContextAllocZero(aggcxt, sizeof(AggState)));
}

inline AggState *existing_state(FunctionCallInfo fcinfo) {
    return PG_ARGISNULL(0) ? nullptr : reinterpret_cast<AggState *>(PG_GETARG_POINTER(0));
}

// One more response for score (0..10 checked by the caller); 22003 instead of wrapping.
inline void count_one(AggState *st, int64 score) {
    if (unlikely(pg_add_s64_overflow(st->s.counts[score], 1, &st->s.counts[score]))) count_overflow();
    st->inputs++;
}

template <typename T>
inline Datum forward(FunctionCallInfo fcinfo, T score) {
    AggState *st = state_arg(fcinfo, "nps transition");
    if (static_cast<uint64>(static_cast<int64>(score)) > 10) score_out_of_range(score);
    count_one(st, score);
    PG_RETURN_POINTER(st);
}

// The argument is evaluated again when a row leaves the frame, so it is checked again: a
// score out of range, or one the frame does not hold, raises (never indexes or wraps).
template <typename T>
inline Datum inverse(FunctionCallInfo fcinfo, T score) {
    AggState *st = existing_state(fcinfo);
    if (st == nullptr) elog(ERROR, "nps inverse transition without state");
    if (static_cast<uint64>(static_cast<int64>(score)) > 10) score_out_of_range(score);
    if (unlikely(st->s.counts[score] <= 0 || st->inputs <= 0)) inverse_not_in_frame(score);
    st->s.counts[score]--;
    st->inputs--;
    PG_RETURN_POINTER(st);
}

template <typename T>
inline Datum weighted(FunctionCallInfo fcinfo, T score) {
    AggState *st = state_arg(fcinfo, "weighted nps transition");
    if (PG_ARGISNULL(2)) PG_RETURN_POINTER(st);
    double w = PG_GETARG_FLOAT8(2);
    if (static_cast<uint64>(static_cast<int64>(score)) > 10) score_out_of_range(score);
    if (!(w >= 0) || std::isinf(w)) bad_weight(w);
    count_one(st, score);
    st->s.weights[score] += w;
    st->s.weight_sq += w * w;
    // A finite sum of squares bounds every weight sum (sum w <= sqrt(n * sum w^2)).
    if (unlikely(std::isinf(st->s.weight_sq))) weight_overflow();
    PG_RETURN_POINTER(st);
}

// Unweighted states carry counts only: every response weighs 1. (The total count is
// checked by make_npsagg.)
Summary unit_weighted(const Summary &in) {
    Summary s = in;
    double n = 0;
    for (int i = 0; i < kScores; i++) {
        s.weights[i] = static_cast<double>(s.counts[i]);
        n += s.weights[i];
    }
    s.weight_sq = n;
    return s;
}


}  // namespace

// Forward transitions: NULL scores are skipped here (the functions are not strict because the
// state is internal).
#define NPS_TRANSITIONS(suffix, getter, ctype)                                                     \
    NPS_FUNCTION(nps_trans_##suffix) {                                                             \
        if (PG_ARGISNULL(1))                                                                       \
            return PG_ARGISNULL(0) ? PointerGetDatum(state_arg(fcinfo, "nps")) : PG_GETARG_DATUM(0); \
        return forward<ctype>(fcinfo, getter(1));                                                  \
    }                                                                                              \
    NPS_FUNCTION(nps_inv_##suffix) {                                                               \
        if (PG_ARGISNULL(1)) return PG_GETARG_DATUM(0);                                            \
        return inverse<ctype>(fcinfo, getter(1));                                                  \
    }                                                                                              \
    NPS_FUNCTION(nps_wtrans_##suffix) {                                                            \
        if (PG_ARGISNULL(1))                                                                       \
            return PG_ARGISNULL(0) ? PointerGetDatum(state_arg(fcinfo, "nps")) : PG_GETARG_DATUM(0); \
        return weighted<ctype>(fcinfo, getter(1));                                                 \
    }

NPS_TRANSITIONS(int2, PG_GETARG_INT16, int16)
NPS_TRANSITIONS(int4, PG_GETARG_INT32, int32)
NPS_TRANSITIONS(int8, PG_GETARG_INT64, int64)

NPS_FUNCTION(nps_rollup_trans) {
    AggState *st = state_arg(fcinfo, "rollup");
    if (!PG_ARGISNULL(1)) {
        add_into(st->s, arg_summary(fcinfo, 1));
        st->inputs++;
    }
    PG_RETURN_POINTER(st);
}

// Combine and deserialize see states that crossed a process boundary: they are checked as
// npsagg values are (counts >= 0, totals in range, weights finite), never trusted.
NPS_FUNCTION(nps_combine) {
    AggState *a = existing_state(fcinfo);
    AggState *b = PG_ARGISNULL(1) ? nullptr : reinterpret_cast<AggState *>(PG_GETARG_POINTER(1));
    if (b == nullptr) return PG_ARGISNULL(0) ? (Datum)0 : PG_GETARG_DATUM(0);
    if (a == nullptr) {
        MemoryContext aggcxt;
        if (!AggCheckCallContext(fcinfo, &aggcxt)) elog(ERROR, "nps_combine called in non-aggregate context");
        a = static_cast<AggState *>(MemoryContextAlloc(aggcxt, sizeof(AggState)));
        *a = *b;
        PG_RETURN_POINTER(a);
    }
    add_into(a->s, b->s);
    if (pg_add_s64_overflow(a->inputs, b->inputs, &a->inputs)) count_overflow();
    PG_RETURN_POINTER(a);
}

NPS_FUNCTION(nps_serialize) {
    const AggState *st = reinterpret_cast<const AggState *>(PG_GETARG_POINTER(0));
    bytea *out = static_cast<bytea *>(palloc(VARHDRSZ + sizeof(AggState)));
    SET_VARSIZE(out, VARHDRSZ + sizeof(AggState));
    memcpy(VARDATA(out), st, sizeof(AggState));
    PG_RETURN_BYTEA_P(out);
}

NPS_FUNCTION(nps_deserialize) {
    bytea *in = PG_GETARG_BYTEA_PP(0);
    if (VARSIZE_ANY_EXHDR(in) != sizeof(AggState))
        ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION), errmsg("invalid serialized nps state: wrong size")));
    MemoryContext aggcxt;
    if (!AggCheckCallContext(fcinfo, &aggcxt)) elog(ERROR, "nps_deserialize called in non-aggregate context");
    AggState tmp;
    memcpy(&tmp, VARDATA_ANY(in), sizeof(AggState));
    Verdict v = check(tmp.s);
    if (v.status != Status::ok) raise_invalid(v, "serialized nps state");
    if (tmp.inputs < 0)
        ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION), errmsg("invalid serialized nps state: negative input count")));
    auto *st = static_cast<AggState *>(MemoryContextAlloc(aggcxt, sizeof(AggState)));
    *st = tmp;
    PG_RETURN_POINTER(st);
}

// nps(score): 100 * (promoters - detractors) / responses, NULL without responses.
NPS_FUNCTION(nps_final) {
    const AggState *st = existing_state(fcinfo);
    double v;
    if (st == nullptr || checked_responses(st->s) == 0 || !nps_of_counts(st->s, &v)) PG_RETURN_NULL();
    PG_RETURN_FLOAT8(v);
}

// nps(score, weight): 100 * (W_promoters - W_detractors) / W, NULL when W is 0.
NPS_FUNCTION(nps_wfinal) {
    const AggState *st = existing_state(fcinfo);
    double v;
    if (st == nullptr || st->inputs == 0 || checked_responses(st->s) == 0 || !weighted_nps_of(st->s, &v)) PG_RETURN_NULL();
    PG_RETURN_FLOAT8(v);
}

NPS_FUNCTION(npsagg_final) {
    const AggState *st = existing_state(fcinfo);
    if (st == nullptr || checked_responses(st->s) == 0) PG_RETURN_NULL();
    PG_RETURN_POINTER(make_npsagg(unit_weighted(st->s)));
}

NPS_FUNCTION(npsagg_wfinal) {
    const AggState *st = existing_state(fcinfo);
    if (st == nullptr || st->inputs == 0) PG_RETURN_NULL();
    PG_RETURN_POINTER(make_npsagg(st->s));
}

NPS_FUNCTION(nps_rollup_final) {
    const AggState *st = existing_state(fcinfo);
    if (st == nullptr || st->inputs == 0) PG_RETURN_NULL();
    PG_RETURN_POINTER(make_npsagg(st->s));
}
