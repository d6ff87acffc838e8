// The npsagg summary without PostgreSQL: its layout, its validity rule, its text and binary
// forms and the shares the statistics use. Plain C++ (no backend headers, no allocation, no
// errors thrown): the extension wraps it (npsagg_type.cpp raises the SQLSTATE), and the
// libFuzzer harness (test/fuzz/) compiles it alone.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nps {

constexpr int kScores = 11;
constexpr int kPromoterMin = 9;
constexpr int kDetractorMax = 6;

// Counts and weight sums per score 0..10; the payload of the npsagg datum and the aggregate
// transition state.
struct Summary {
    int64_t counts[kScores];
    double weights[kScores];
    double weight_sq;  // sum of squared weights, for Kish's effective sample size
};

enum class Status {
    ok,
    syntax,        // 22P02: not an npsagg (malformed, negative, NaN, inconsistent)
    out_of_range,  // 22003: a count or weight beyond bigint/float8
};
struct Verdict {
    Status status;
    const char *reason;  // static text; nullptr when ok
};
constexpr Verdict kOk{Status::ok, nullptr};

// The validity rule: every npsagg value satisfies it (input, recv and every aggregate check it,
// so every value prints as text that reads back).
//  - counts >= 0 and their total fits in bigint;
//  - weights finite, >= 0, zero where the count is zero, and their total W finite;
//  - weight_sq finite, >= 0, and consistent with the weights: 0 when W is 0, otherwise
//    W^2/n <= weight_sq <= W^2 (n the total count; the bounds of a sum of n squares of
//    non-negative numbers summing to W) up to rounding: relative 1e-9 + 4 n DBL_EPSILON, and
//    n DBL_MIN absolute for underflow.
Verdict check(const Summary &s);

// Text form {"counts":[...11 integers],"weights":[...11 numbers],"weight_sq":x}, keys in any
// order, JSON whitespace; "weight_sq" may be omitted (then derived as if weights were equal
// within each score: sum of W_i^2 / c_i). Fills *out and checks it.
Verdict parse_text(const char *input, Summary *out);

// Largest text format_text() writes, NUL included.
constexpr size_t kTextMax = 64 + 11 * 21 + 12 * 25;
// Shortest round-trip decimal form; returns the length.
size_t format_text(const Summary &s, char *buf);

// Binary form (send/recv): int32 version 1, 11 int64 counts, 11 float8 weights, float8
// weight_sq, all big-endian.
constexpr int32_t kWireVersion = 1;
constexpr size_t kWireSize = 4 + kScores * 8 * 2 + 8;
Verdict decode_binary(const unsigned char *data, size_t len, Summary *out);
void encode_binary(const Summary &s, unsigned char out[kWireSize]);

inline int64_t responses(const Summary &s) {
    int64_t n = 0;
    for (int i = 0; i < kScores; i++) n += s.counts[i];
    return n;
}
inline int64_t promoters(const Summary &s) { return s.counts[9] + s.counts[10]; }
inline int64_t passives(const Summary &s) { return s.counts[7] + s.counts[8]; }
inline int64_t detractors(const Summary &s) {
    int64_t d = 0;
    for (int i = 0; i <= kDetractorMax; i++) d += s.counts[i];
    return d;
}

inline double clamp100(double x) { return x < -100.0 ? -100.0 : x > 100.0 ? 100.0 : x; }

// 100 * (promoters - detractors) / n, n = responses(s) > 0 as the caller counted it (correctly
// rounded for counts below 2^53; beyond, rounding cannot leave -100..100).
inline double nps_of_total(const Summary &s, int64_t n) {
    return clamp100(100.0 * static_cast<double>(promoters(s) - detractors(s)) / static_cast<double>(n));
}
// The same, counting the total; false without responses.
inline bool nps_of_counts(const Summary &s, double *out) {
    int64_t n = responses(s);
    if (n == 0) return false;
    *out = nps_of_total(s, n);
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

// 100 * (W_promoters - W_detractors) / W; false when the total weight is 0. Weights near the
// float8 limit are divided before the scaling so nothing overflows.
inline bool weighted_nps_of(const Summary &s, double *out) {
    WeightSums w = weight_sums(s);
    if (w.total == 0) return false;
    double diff = w.promoters - w.detractors;
    *out = clamp100(diff > -1e300 && diff < 1e300 ? 100.0 * diff / w.total : 100.0 * (diff / w.total));
    return true;
}

// Shares and sample size the statistics work on. For unit weights this is exactly the
// unweighted p, d and n; for real weights, weighted shares and Kish's n_eff = W^2/weight_sq,
// kept within its mathematical range [1, n] (rounding and underflow cannot leave it).
struct Shares {
    double p, d, n;
};
bool shares(const Summary &s, Shares *out);

}  // namespace nps
