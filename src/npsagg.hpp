// The NPS summary: counts and weight sums per score 0..10, shared by the npsagg type, the
// aggregate transition state and the statistics.
#pragma once

#include "pg_boundary.hpp"

extern "C" {
#include "common/int.h"
}

#include <cmath>

namespace nps {

constexpr int kScores = 11;
constexpr int kPromoterMin = 9;
constexpr int kDetractorMax = 6;

// Aggregate transition state (palloc'ed once per group in the aggregate context) and the
// payload of the npsagg datum.
struct Summary {
    int64 counts[kScores];
    double weights[kScores];
    double weight_sq;  // sum of squared weights, for Kish's effective sample size
};

// On-disk npsagg: a varlena so later versions can grow it.
struct NpsAggDatum {
    int32 vl_len_;
    int32 version;
    Summary s;
};
constexpr int32 kNpsAggVersion = 1;

inline int64 responses(const Summary &s) {
    int64 n = 0;
    for (int i = 0; i < kScores; i++) n += s.counts[i];
    return n;
}
inline int64 promoters(const Summary &s) { return s.counts[9] + s.counts[10]; }
inline int64 passives(const Summary &s) { return s.counts[7] + s.counts[8]; }
inline int64 detractors(const Summary &s) {
    int64 d = 0;
    for (int i = 0; i <= kDetractorMax; i++) d += s.counts[i];
    return d;
}

// 100 * (promoters - detractors) / responses; false without responses.
inline bool nps_of_counts(const Summary &s, double *out) {
    int64 n = responses(s);
    if (n == 0) return false;
    *out = 100.0 * static_cast<double>(promoters(s) - detractors(s)) / static_cast<double>(n);
    return true;
}

struct WeightSums {
    double total, promoters, detractors;
};
inline WeightSums weight_sums(const Summary &s) {
    WeightSums w{0, 0, 0};
    for (int i = 0; i < kScores; i++) w.total += s.weights[i];
    for (int i = kPromoterMin; i < kScores; i++) w.promoters += s.weights[i];
    for (int i = 0; i <= kDetractorMax; i++) w.detractors += s.weights[i];
    return w;
}

// 100 * (W_promoters - W_detractors) / W; false when the total weight is 0.
inline bool weighted_nps_of(const Summary &s, double *out) {
    WeightSums w = weight_sums(s);
    if (w.total == 0) return false;
    *out = 100.0 * (w.promoters - w.detractors) / w.total;
    return true;
}

// Shares and sample size the statistics work on. For unit weights this is exactly the
// unweighted p, d and n; for real weights, weighted shares and Kish's n_eff = (Σw)²/Σw².
struct Shares {
    double p, d, n;
};
bool shares(const Summary &s, Shares *out);

// Raises 22003 naming the value.
[[noreturn]] void score_out_of_range(int64 score);
[[noreturn]] void bad_weight(double w);

NpsAggDatum *make_npsagg(const Summary &s);
inline const Summary &summary_of(Datum d) {
    return reinterpret_cast<const NpsAggDatum *>(DatumGetPointer(d))->s;
}
// Detoasts the argument; validates nothing (input functions validate).
const Summary &arg_summary(FunctionCallInfo fcinfo, int argno);

// 22P02 reason if the summary is not a possible one, else nullptr.
const char *invalid_reason(const Summary &s);

}  // namespace nps
