// The NPS summary inside the backend: the npsagg datum, shared by the type, the aggregates and
// the statistics. The summary itself, its validity rule and its text/binary forms are plain
// C++ in npsagg_core.hpp (also built into the fuzz harness).
#pragma once

#include "pg_boundary.hpp"
#include "npsagg_core.hpp"

extern "C" {
#include "common/int.h"
}

#include <cmath>

namespace nps {

// On-disk npsagg: a varlena so later versions can grow it.
struct NpsAggDatum {
    int32 vl_len_;
    int32 version;
    Summary s;
};
constexpr int32 kNpsAggVersion = 1;
static_assert(sizeof(NpsAggDatum) == 8 + sizeof(Summary), "npsagg datum layout");

// Raise 22003 naming the value.
[[noreturn]] void score_out_of_range(int64 score);
[[noreturn]] void bad_weight(double w);
// 22003: a count or weight sum of an aggregate would overflow.
[[noreturn]] void count_overflow();
[[noreturn]] void weight_overflow();
// 22000: a moving aggregate's inverse removes a score that is not in its frame.
[[noreturn]] void inverse_not_in_frame(int64 score);
// Raises the verdict of check()/parse as an error about an npsagg value (22P02 / 22003).
[[noreturn]] void raise_invalid(const Verdict &v, const char *what);

// dst += src for valid summaries; 22003 (never a wrapped count or an infinite weight) when
// the result would not be a valid summary.
void add_into(Summary &dst, const Summary &src);
// The total count; 22003 when it does not fit in bigint.
int64 checked_responses(const Summary &s);

// Validates s (check()) and returns it as a new datum; raises on an invalid summary.
NpsAggDatum *make_npsagg(const Summary &s);
// Detoasts the argument and checks its size; npsagg values are valid by construction.
const Summary &arg_summary(FunctionCallInfo fcinfo, int argno);

}  // namespace nps
