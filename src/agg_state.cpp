// The aggregates' transition functions (0.2): the state is an npsagg datum -- a real, fixed-size
// type, so Citus pushes the aggregates down (partial aggregates on the workers, combined on the
// coordinator) and PostgreSQL runs them in parallel without serialize/deserialize.
//
// The transition functions take NULL inputs themselves (a NULL score or weight adds nothing) and
// the aggregates have an all-zero INITCOND (rollup: strict, no initcond, the first summary
// becomes the state): PostgreSQL then runs one step less per row than for a strict function. The
// state is PostgreSQL's own copy in the aggregate context; inside an aggregate (AggCheckCallContext,
// remembered in fn_extra so the hot path tests one pointer) it is updated in place: no allocation
// per row. A NULL state (an aggregate of the user's without an initcond) starts from the empty
// summary. Called as a plain function, the argument may be a constant or a buffer page: it is
// copied first.
#include "npsagg.hpp"

extern "C" {
#include "utils/builtins.h"
}

#include <cfloat>
#include <type_traits>

using namespace nps;

namespace {

char in_aggregate_marker;

// Calls the update on the state: in place inside an aggregate, else on a copy that is then
// checked like any npsagg value (a plain call's result is a value like any other).
template <typename F>
__attribute__((noinline, cold)) NpsAggDatum *update_state_slow(FunctionCallInfo fcinfo, F update) {
    if (PG_ARGISNULL(0)) {
        // PostgreSQL copies a new state into the aggregate context itself.
        Summary s{};
        update(s);
        return make_npsagg(s);
    }
    struct varlena *v = reinterpret_cast<struct varlena *>(DatumGetPointer(PG_GETARG_DATUM(0)));
    if (AggCheckCallContext(fcinfo, nullptr)) {
        // PostgreSQL's own copy in the aggregate context (never toasted, never short).
        if (VARATT_IS_EXTENDED(v) || VARSIZE(v) != sizeof(NpsAggDatum))
            ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED), errmsg("npsagg aggregate state has the wrong form")));
        fcinfo->flinfo->fn_extra = &in_aggregate_marker;
        auto *st = reinterpret_cast<NpsAggDatum *>(v);
        update(st->s);
        return st;
    }
    const Summary &s = arg_summary(fcinfo, 0);
    Summary copy = s;
    update(copy);
    return make_npsagg(copy);  // checks
}

template <typename F>
inline Datum update_state(FunctionCallInfo fcinfo, F &&update) {
    if (likely(fcinfo->flinfo->fn_extra == &in_aggregate_marker && !PG_ARGISNULL(0))) {
        auto *st = reinterpret_cast<NpsAggDatum *>(DatumGetPointer(PG_GETARG_DATUM(0)));
        update(st->s);
        PG_RETURN_POINTER(st);
    }
    PG_RETURN_POINTER(update_state_slow(fcinfo, update));
}

inline bool score_ok(int64 score) { return static_cast<uint64>(score) <= 10; }

template <typename T>
inline Datum forward(FunctionCallInfo fcinfo, T score) {
    if (unlikely(!score_ok(score))) score_out_of_range(score);
    return update_state(fcinfo, [score](Summary &s) {
        if (unlikely(pg_add_s64_overflow(s.counts[score], 1, &s.counts[score]))) count_overflow();
    });
}

// The argument is evaluated again when a row leaves a moving frame, so it is checked again: a
// score out of range, or one the frame does not hold, raises (never indexes or wraps).
// Moving states are unweighted (weights 0): a weighted one is refused, as removing a count
// from it would leave weights without their responses.
template <typename T>
inline Datum inverse(FunctionCallInfo fcinfo, T score) {
    if (unlikely(!score_ok(score))) score_out_of_range(score);
    return update_state(fcinfo, [score](Summary &s) {
        if (unlikely(s.counts[score] <= 0)) inverse_not_in_frame(score);
        if (unlikely(s.weight_sq != 0))
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("the inverse NPS transition applies to unweighted states only")));
        s.counts[score]--;
    });
}

template <typename T>
inline Datum weighted(FunctionCallInfo fcinfo, T score) {
    double w = PG_GETARG_FLOAT8(2);
    if (unlikely(!score_ok(score))) score_out_of_range(score);
    // one test for negative, NaN and infinite weights
    if (unlikely(!(w >= 0 && w <= DBL_MAX))) bad_weight(w);
    return update_state(fcinfo, [score, w](Summary &s) {
        if (unlikely(pg_add_s64_overflow(s.counts[score], 1, &s.counts[score]))) count_overflow();
        s.weights[score] += w;
        double sq = s.weight_sq + w * w;
        s.weight_sq = sq;
        // A finite sum of squares bounds every weight sum (sum w <= sqrt(n * sum w^2)).
        if (unlikely(!(sq <= DBL_MAX))) weight_overflow();
    });
}

// A NULL score or weight: the state as it is (NULL stays NULL).
inline Datum skip(FunctionCallInfo fcinfo) {
    if (PG_ARGISNULL(0)) PG_RETURN_NULL();
    PG_RETURN_DATUM(PG_GETARG_DATUM(0));
}

// Final functions read the state, never write it (FINALFUNC_MODIFY = READ_ONLY).
inline const Summary &state_of(FunctionCallInfo fcinfo) { return arg_summary(fcinfo, 0); }

}  // namespace

namespace nps {

// dst += src for valid summaries; 22003 when a count, the total count, a weight sum, the total
// weight or weight_sq would overflow, so the result is again a valid summary.
void add_into(Summary &dst, const Summary &src) {
    int64 n = 0;
    double w = 0;
    for (int i = 0; i < kScores; i++) {
        if (pg_add_s64_overflow(dst.counts[i], src.counts[i], &dst.counts[i])) count_overflow();
        if (pg_add_s64_overflow(n, dst.counts[i], &n)) count_overflow();
        dst.weights[i] += src.weights[i];
        w += dst.weights[i];
    }
    dst.weight_sq += src.weight_sq;
    if (!(dst.weight_sq <= DBL_MAX) || !(w <= DBL_MAX)) weight_overflow();
}

// The total count of a state; 22003 when it does not fit in bigint.
int64 checked_responses(const Summary &s) {
    int64 n = 0;
    for (int i = 0; i < kScores; i++)
        if (pg_add_s64_overflow(n, s.counts[i], &n)) count_overflow();
    return n;
}

}  // namespace nps

#define NPS_STATE_TRANSITIONS(suffix, getter)                                            \
    NPS_LEAF_FUNCTION(nps_state_##suffix) {                                              \
        return PG_ARGISNULL(1) ? skip(fcinfo) : forward(fcinfo, getter(1));              \
    }                                                                                    \
    NPS_LEAF_FUNCTION(nps_state_inv_##suffix) {                                          \
        return PG_ARGISNULL(1) ? skip(fcinfo) : inverse(fcinfo, getter(1));              \
    }                                                                                    \
    NPS_LEAF_FUNCTION(nps_state_weighted_##suffix) {                                     \
        return PG_ARGISNULL(1) || PG_ARGISNULL(2) ? skip(fcinfo) : weighted(fcinfo, getter(1)); \
    }

NPS_STATE_TRANSITIONS(int2, PG_GETARG_INT16)
NPS_STATE_TRANSITIONS(int4, PG_GETARG_INT32)
NPS_STATE_TRANSITIONS(int8, PG_GETARG_INT64)

// rollup's transition and every aggregate's combine function: a + b.
// Without an initial value (rollup) PostgreSQL's first state is a copy of the first input, which
// may be stored compressed: then the merge goes into a new datum, which PostgreSQL adopts.
namespace {
__attribute__((noinline, cold)) Datum merge_into_new(FunctionCallInfo fcinfo, const Summary &b) {
    Summary s = arg_summary(fcinfo, 0);
    add_into(s, b);
    PG_RETURN_POINTER(make_npsagg(s));
}
}  // namespace

NPS_LEAF_FUNCTION(nps_state_merge) {
    const Summary &b = arg_summary(fcinfo, 1);
    if (unlikely(VARATT_IS_EXTENDED(DatumGetPointer(PG_GETARG_DATUM(0))))) return merge_into_new(fcinfo, b);
    return update_state(fcinfo, [&b](Summary &s) { add_into(s, b); });
}

// Final functions hold no C++ object with a destructor (Summary is plain data), so they are leaf
// functions like the transitions: a moving window calls its final function once per row.
static_assert(std::is_trivially_destructible<Summary>::value, "final functions may ereport");

// nps(score): 100 * (promoters - detractors) / responses, NULL without responses; the total is
// counted once (22003 past bigint).
NPS_LEAF_FUNCTION(nps_state_nps) {
    const Summary &s = state_of(fcinfo);
    int64 n = checked_responses(s);
    if (n == 0) PG_RETURN_NULL();
    PG_RETURN_FLOAT8(nps_of_total(s, n));
}

// nps(score, weight): 100 * (W_promoters - W_detractors) / W, NULL when W is 0.
NPS_LEAF_FUNCTION(nps_state_weighted_nps) {
    const Summary &s = state_of(fcinfo);
    double v;
    if (checked_responses(s) == 0 || !weighted_nps_of(s, &v)) PG_RETURN_NULL();
    PG_RETURN_FLOAT8(v);
}

// nps_agg(score): unweighted states carry counts only; every response weighs 1.
NPS_LEAF_FUNCTION(nps_state_summary) {
    const Summary &in = state_of(fcinfo);
    if (checked_responses(in) == 0) PG_RETURN_NULL();
    Summary s = in;
    double n = 0;
    for (int i = 0; i < kScores; i++) {
        s.weights[i] = static_cast<double>(s.counts[i]);
        n += s.weights[i];
    }
    s.weight_sq = n;
    PG_RETURN_POINTER(make_npsagg(s));
}

// nps_agg(score, weight): the state, checked; NULL without responses.
NPS_LEAF_FUNCTION(nps_state_weighted_summary) {
    const Summary &s = state_of(fcinfo);
    if (checked_responses(s) == 0) PG_RETURN_NULL();
    PG_RETURN_POINTER(make_npsagg(s));
}

// rollup(npsagg): the merged summaries, checked (a rollup of empty summaries is empty, not NULL).
NPS_LEAF_FUNCTION(nps_state_rollup) { PG_RETURN_POINTER(make_npsagg(state_of(fcinfo))); }
