// Accessors and statistics over npsagg: standard error, confidence intervals, two-sample test.
// Formulas are in README.md ("Statistics").
#include "npsagg.hpp"

extern "C" {
#include "access/htup_details.h"
#include "catalog/pg_type_d.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
}

using namespace nps;

namespace {

double normal_cdf(double x) { return 0.5 * std::erfc(-x / M_SQRT2); }

// Two-sided critical value z with P(|Z| <= z) = confidence, by bisection on the exact CDF
// (erfc): full double precision without tabulated coefficients.
double z_for(double confidence) {
    double target = 1.0 - (1.0 - confidence) / 2.0;
    double lo = 0.0, hi = 40.0;
    for (int i = 0; i < 200 && lo < hi; i++) {
        double mid = 0.5 * (lo + hi);
        if (mid == lo || mid == hi) break;
        if (normal_cdf(mid) < target)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

double nps_of(const Shares &sh) { return 100.0 * (sh.p - sh.d); }
double stderr_of(const Shares &sh) {
    double v = (sh.p + sh.d - (sh.p - sh.d) * (sh.p - sh.d)) / sh.n;
    return 100.0 * std::sqrt(v < 0 ? 0 : v);
}

Datum make_record(FunctionCallInfo fcinfo, const Datum *values, const bool *nulls) {
    TupleDesc tupdesc;
    if (get_call_result_type(fcinfo, nullptr, &tupdesc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "return type must be a row type");
    tupdesc = BlessTupleDesc(tupdesc);
    return HeapTupleGetDatum(heap_form_tuple(tupdesc, const_cast<Datum *>(values), const_cast<bool *>(nulls)));
}

}  // namespace

NPS_FUNCTION(npsagg_nps) {
    double v;
    if (!nps_of_counts(arg_summary(fcinfo, 0), &v)) PG_RETURN_NULL();
    PG_RETURN_FLOAT8(v);
}

NPS_FUNCTION(npsagg_weighted_nps) {
    const Summary &s = arg_summary(fcinfo, 0);
    double v;
    if (responses(s) == 0 || !weighted_nps_of(s, &v)) PG_RETURN_NULL();
    PG_RETURN_FLOAT8(v);
}

NPS_FUNCTION(npsagg_responses) { PG_RETURN_INT64(responses(arg_summary(fcinfo, 0))); }
NPS_FUNCTION(npsagg_promoters) { PG_RETURN_INT64(promoters(arg_summary(fcinfo, 0))); }
NPS_FUNCTION(npsagg_passives) { PG_RETURN_INT64(passives(arg_summary(fcinfo, 0))); }
NPS_FUNCTION(npsagg_detractors) { PG_RETURN_INT64(detractors(arg_summary(fcinfo, 0))); }

NPS_FUNCTION(npsagg_histogram) {
    const Summary &s = arg_summary(fcinfo, 0);
    Datum elems[kScores];
    for (int i = 0; i < kScores; i++) elems[i] = Int64GetDatum(s.counts[i]);
    PG_RETURN_ARRAYTYPE_P(construct_array(elems, kScores, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

NPS_FUNCTION(npsagg_mean_score) {
    const Summary &s = arg_summary(fcinfo, 0);
    int64 n = responses(s);
    if (n == 0) PG_RETURN_NULL();
    double total = 0;
    for (int i = 0; i < kScores; i++) total += static_cast<double>(s.counts[i]) * i;
    PG_RETURN_FLOAT8(total / static_cast<double>(n));
}

NPS_FUNCTION(npsagg_stderr) {
    Shares sh;
    if (!shares(arg_summary(fcinfo, 0), &sh)) PG_RETURN_NULL();
    PG_RETURN_FLOAT8(stderr_of(sh));
}

NPS_FUNCTION(npsagg_ci) {
    const Summary &s = arg_summary(fcinfo, 0);
    double conf = PG_GETARG_FLOAT8(1);
    const char *method = text_to_cstring(PG_GETARG_TEXT_PP(2));
    if (!(conf > 0 && conf < 1))
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("confidence %g is out of range: it must be between 0 and 1 exclusive", conf)));
    bool adjusted;
    if (strcmp(method, "adjusted_wald") == 0)
        adjusted = true;
    else if (strcmp(method, "wald") == 0)
        adjusted = false;
    else
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("unknown confidence interval method \"%s\"", method),
                        errhint("Use \"wald\" or \"adjusted_wald\".")));
    Datum values[2] = {0, 0};
    bool nulls[2] = {true, true};
    Shares sh;
    if (shares(s, &sh)) {
        if (adjusted) {
            // Pseudo-count of 3/4 per category, n + 3 in all.
            double n = sh.n + 3.0;
            sh.p = (sh.p * sh.n + 0.75) / n;
            sh.d = (sh.d * sh.n + 0.75) / n;
            sh.n = n;
        }
        double centre = nps_of(sh), half = z_for(conf) * stderr_of(sh);
        values[0] = Float8GetDatum(clamp100(centre - half));
        values[1] = Float8GetDatum(clamp100(centre + half));
        nulls[0] = nulls[1] = false;
    }
    return make_record(fcinfo, values, nulls);
}

NPS_FUNCTION(npsagg_compare) {
    Shares a, b;
    Datum values[4] = {0, 0, 0, 0};
    bool nulls[4] = {true, true, true, true};
    if (shares(arg_summary(fcinfo, 0), &a) && shares(arg_summary(fcinfo, 1), &b)) {
        double diff = nps_of(a) - nps_of(b);
        double se = std::sqrt(std::pow(stderr_of(a), 2) + std::pow(stderr_of(b), 2));
        values[0] = Float8GetDatum(diff);
        values[1] = Float8GetDatum(se);
        nulls[0] = nulls[1] = false;
        if (se > 0) {
            double z = diff / se;
            values[2] = Float8GetDatum(z);
            values[3] = Float8GetDatum(std::erfc(std::fabs(z) / M_SQRT2));
            nulls[2] = nulls[3] = false;
        }
    }
    return make_record(fcinfo, values, nulls);
}

// The standard normal distribution, for the tests of the analysis functions written in SQL
// (churn rates, Wilson intervals, Kaplan-Meier bands): the CDF from erfc (full double precision)
// and its inverse by bisection on it.
NPS_FUNCTION(nps_normal_cdf) {
    double x = PG_GETARG_FLOAT8(0);
    if (std::isnan(x))
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("normal_cdf: x must not be NaN")));
    PG_RETURN_FLOAT8(normal_cdf(x));
}

NPS_FUNCTION(nps_normal_quantile) {
    double p = PG_GETARG_FLOAT8(0);
    if (!(p > 0 && p < 1))
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("normal_quantile: p %g is out of range: it must be between 0 and 1 exclusive", p)));
    // P(Z <= x) = p  <=>  the two-sided critical value for confidence |2p - 1|, signed
    double z = (p == 0.5) ? 0.0 : z_for(std::fabs(2.0 * p - 1.0));
    PG_RETURN_FLOAT8(p < 0.5 ? -z : z);
}
