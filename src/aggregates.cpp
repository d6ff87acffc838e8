// Aggregate support: transition (forward and inverse), combine, serialize, final functions.
// The state is one Summary per group, allocated once in the aggregate memory context; the
// per-row path touches one counter and allocates nothing.
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

template <typename T>
inline Datum forward(FunctionCallInfo fcinfo, T score) {
    AggState *st = state_arg(fcinfo, "nps transition");
    if (static_cast<uint64>(static_cast<int64>(score)) > 10) score_out_of_range(score);
    st->s.counts[score]++;
    st->inputs++;
    PG_RETURN_POINTER(st);
}

template <typename T>
inline Datum inverse(FunctionCallInfo fcinfo, T score) {
    AggState *st = existing_state(fcinfo);
    if (st == nullptr) elog(ERROR, "nps inverse transition without state");
    st->s.counts[score]--;  // only rows that went through forward() come back here
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
    st->s.counts[score]++;
    st->s.weights[score] += w;
    st->s.weight_sq += w * w;
    if (unlikely(std::isinf(st->s.weight_sq)))
        ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE), errmsg("NPS weights are too large: their sum of squares overflows float8")));
    st->inputs++;
    PG_RETURN_POINTER(st);
}

void add_into(Summary &dst, const Summary &src) {
    for (int i = 0; i < kScores; i++) {
        if (pg_add_s64_overflow(dst.counts[i], src.counts[i], &dst.counts[i]))
            ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE), errmsg("npsagg count out of range")));
        dst.weights[i] += src.weights[i];
    }
    dst.weight_sq += src.weight_sq;
    if (std::isinf(dst.weight_sq))
        ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE), errmsg("NPS weights are too large: their sum of squares overflows float8")));
}

// Unweighted states carry counts only: every response weighs 1.
Summary unit_weighted(const Summary &in) {
    Summary s = in;
    int64 n = 0;
    for (int i = 0; i < kScores; i++) {
        s.weights[i] = static_cast<double>(s.counts[i]);
        n += s.counts[i];
    }
    s.weight_sq = static_cast<double>(n);
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
    a->inputs += b->inputs;
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
    if (VARSIZE_ANY_EXHDR(in) != sizeof(AggState)) elog(ERROR, "invalid serialized nps state");
    MemoryContext aggcxt;
    if (!AggCheckCallContext(fcinfo, &aggcxt)) elog(ERROR, "nps_deserialize called in non-aggregate context");
    auto *st = static_cast<AggState *>(MemoryContextAlloc(aggcxt, sizeof(AggState)));
    memcpy(st, VARDATA_ANY(in), sizeof(AggState));
    PG_RETURN_POINTER(st);
}

// nps(score): 100 * (promoters - detractors) / responses, NULL without responses.
NPS_FUNCTION(nps_final) {
    const AggState *st = existing_state(fcinfo);
    double v;
    if (st == nullptr || !nps_of_counts(st->s, &v)) PG_RETURN_NULL();
    PG_RETURN_FLOAT8(v);
}

// nps(score, weight): 100 * (W_promoters - W_detractors) / W, NULL when W is 0.
NPS_FUNCTION(nps_wfinal) {
    const AggState *st = existing_state(fcinfo);
    double v;
    if (st == nullptr || st->inputs == 0 || !weighted_nps_of(st->s, &v)) PG_RETURN_NULL();
    PG_RETURN_FLOAT8(v);
}

NPS_FUNCTION(npsagg_final) {
    const AggState *st = existing_state(fcinfo);
    if (st == nullptr || responses(st->s) == 0) PG_RETURN_NULL();
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
