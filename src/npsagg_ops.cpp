// Arithmetic on stored npsagg summaries, for rollup tables kept up to date row by row:
//   npsagg_add(a, b) / npsagg_sub(a, b)               -- a + b, a - b (summary by summary)
//   npsagg_add(a, score, weight) / npsagg_remove(...)  -- one answer in or out
// NULL stands for the empty summary (so a rollup row can start from nothing). A sum that
// overflows, or a subtraction that would leave a negative count, raises 22003: a rollup that
// reaches that state does not match its answers and must be rebuilt. Counts are exact; weight
// sums of unit weights stay exact integers, so add-then-sub gives back the same summary.
#include "npsagg.hpp"

namespace {

using nps::kScores;
using nps::Summary;

void load(FunctionCallInfo fcinfo, int argno, Summary *s) {
    if (PG_ARGISNULL(argno))
        *s = Summary{};
    else
        *s = nps::arg_summary(fcinfo, argno);
}

[[noreturn]] void overflow(const char *fn) {
    ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
                    errmsg("%s: npsagg count overflows bigint", fn)));
    pg_unreachable();
}

[[noreturn]] void below_zero(const char *fn, int score) {
    ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
                    errmsg("%s: the summary has fewer answers of score %d than are removed", fn, score),
                    errhint("A rollup row that does not match its answers is rebuilt with rebuild_rollups().")));
    pg_unreachable();
}

// A weight sum after removing answers: exactly 0 once no answer of that score is left, and
// never a negative rounding residue.
double settle(double w, int64 count) {
    if (count == 0 || w < 0) return 0;
    return w;
}

// Rounding in a +/- b can leave weight_sq just outside the range its weights allow,
// (sum w)^2 / n <= weight_sq <= (sum w)^2 -- after removing a large weight, the difference of
// the squares can even be 0 while a small weight remains. It is moved to the nearest bound, so
// the result is again a valid summary and the rollup row can still be updated.
// n is the summary's total count, which the caller has already added up.
void settle_weight_sq(Summary *a, int64 n) {
    double w = 0;
    for (int i = 0; i < kScores; i++) w += a->weights[i];
    if (n == 0 || w == 0) {
        a->weight_sq = 0;
        return;
    }
    double lo = (w / static_cast<double>(n)) * w, hi = w * w;
    if (a->weight_sq < lo) a->weight_sq = lo;
    if (a->weight_sq > hi) a->weight_sq = hi;
}

void add_into(Summary *a, const Summary &b, const char *fn) {
    for (int i = 0; i < kScores; i++) {
        if (pg_add_s64_overflow(a->counts[i], b.counts[i], &a->counts[i])) overflow(fn);
        a->weights[i] += b.weights[i];
    }
    a->weight_sq += b.weight_sq;
    int64 n = 0;
    for (int i = 0; i < kScores; i++)
        if (pg_add_s64_overflow(n, a->counts[i], &n)) overflow(fn);
    settle_weight_sq(a, n);
}

void sub_from(Summary *a, const Summary &b, const char *fn) {
    int64 n = 0;
    for (int i = 0; i < kScores; i++) {
        if (b.counts[i] > a->counts[i]) below_zero(fn, i);
        a->counts[i] -= b.counts[i];
        a->weights[i] = settle(a->weights[i] - b.weights[i], a->counts[i]);
        n += a->counts[i];
    }
    a->weight_sq -= b.weight_sq;
    settle_weight_sq(a, n);  // 0 without answers or weight; a negative residue to the lower bound
}

int score_arg(FunctionCallInfo fcinfo, int argno) {
    int64 score = PG_GETARG_INT32(argno);
    if (score < 0 || score > 10) nps::score_out_of_range(score);
    return static_cast<int>(score);
}

double weight_arg(FunctionCallInfo fcinfo, int argno) {
    double w = PG_GETARG_FLOAT8(argno);
    if (!std::isfinite(w) || w < 0) nps::bad_weight(w);
    return w;
}

}  // namespace

// npsagg_add(a npsagg, b npsagg): NULL is empty; both NULL -> NULL.
NPS_FUNCTION(npsagg_add_agg) {
    if (PG_ARGISNULL(0) && PG_ARGISNULL(1)) PG_RETURN_NULL();
    Summary a, b;
    load(fcinfo, 0, &a);
    load(fcinfo, 1, &b);
    add_into(&a, b, "npsagg_add");
    PG_RETURN_POINTER(nps::make_npsagg(a));
}

// npsagg_sub(a npsagg, b npsagg): a minus b; NULL is empty; 22003 if b is not part of a.
NPS_FUNCTION(npsagg_sub_agg) {
    if (PG_ARGISNULL(0) && PG_ARGISNULL(1)) PG_RETURN_NULL();
    Summary a, b;
    load(fcinfo, 0, &a);
    load(fcinfo, 1, &b);
    sub_from(&a, b, "npsagg_sub");
    PG_RETURN_POINTER(nps::make_npsagg(a));
}

namespace {

// One answer in or out of argument 0: a NULL score or weight changes nothing (like the
// aggregates, which skip them).
template <typename Op>
Datum one_answer(FunctionCallInfo fcinfo, Op op) {
    Summary a;
    load(fcinfo, 0, &a);
    if (PG_ARGISNULL(1) || PG_ARGISNULL(2)) {
        if (PG_ARGISNULL(0)) PG_RETURN_NULL();
        PG_RETURN_POINTER(nps::make_npsagg(a));
    }
    int i = score_arg(fcinfo, 1);
    double w = weight_arg(fcinfo, 2);
    Summary one{};
    one.counts[i] = 1;
    one.weights[i] = w;
    one.weight_sq = w * w;
    op(&a, one);
    PG_RETURN_POINTER(nps::make_npsagg(a));
}

}  // namespace

// npsagg_add(a npsagg, score integer, weight float8): one answer more.
NPS_FUNCTION(npsagg_add_score) {
    return one_answer(fcinfo, [](Summary *a, const Summary &one) { add_into(a, one, "npsagg_add"); });
}

// npsagg_remove(a npsagg, score integer, weight float8): one answer less; 22003 if a has none
// of that score.
NPS_FUNCTION(npsagg_remove_score) {
    return one_answer(fcinfo, [](Summary *a, const Summary &one) { sub_from(a, one, "npsagg_remove"); });
}
