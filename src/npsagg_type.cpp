// The npsagg type: JSON text I/O, binary send/recv, equality; and category().
#include "npsagg.hpp"

extern "C" {
#include "catalog/pg_type_d.h"
#include "common/shortest_dec.h"
#include "mb/pg_wchar.h"
#include "lib/stringinfo.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
}

#include <cerrno>
#include <cstdlib>

namespace nps {

void score_out_of_range(int64 score) {
    ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
                    errmsg("NPS score " INT64_FORMAT " is out of range 0..10", score)));
    pg_unreachable();
}

void bad_weight(double w) {
    char buf[DOUBLE_SHORTEST_DECIMAL_LEN];
    if (std::isnan(w))
        strlcpy(buf, "NaN", sizeof buf);
    else if (std::isinf(w))
        strlcpy(buf, w > 0 ? "Infinity" : "-Infinity", sizeof buf);
    else
        double_to_shortest_decimal_buf(w, buf);
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("NPS weight %s is invalid", buf),
                    errdetail("Weights must be finite and non-negative; a NULL weight skips the row.")));
    pg_unreachable();
}

void count_overflow() {
    ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE), errmsg("NPS response count out of range for bigint")));
    pg_unreachable();
}

void weight_overflow() {
    ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
                    errmsg("NPS weights are too large: their sum or sum of squares overflows float8")));
    pg_unreachable();
}

void inverse_not_in_frame(int64 score) {
    ereport(ERROR, (errcode(ERRCODE_DATA_EXCEPTION),
                    errmsg("moving NPS aggregate: score " INT64_FORMAT " leaves the window frame but is not in it", score),
                    errhint("The aggregate's argument is evaluated again when a row leaves the frame; it must give the same value both times (no volatile expressions).")));
    pg_unreachable();
}

void raise_invalid(const Verdict &v, const char *what) {
    ereport(ERROR, (errcode(v.status == Status::out_of_range ? ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE : ERRCODE_INVALID_TEXT_REPRESENTATION),
                    errmsg("invalid %s", what), errdetail("%s", v.reason)));
    pg_unreachable();
}

NpsAggDatum *make_npsagg(const Summary &s) {
    Verdict v = check(s);
    if (unlikely(v.status != Status::ok)) {
        if (v.status == Status::out_of_range)
            ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE), errmsg("npsagg out of range"), errdetail("%s", v.reason)));
        raise_invalid(v, "npsagg summary");
    }
    auto *r = static_cast<NpsAggDatum *>(palloc(sizeof(NpsAggDatum)));
    SET_VARSIZE(r, sizeof(NpsAggDatum));
    r->version = kNpsAggVersion;
    r->s = s;
    return r;
}

const Summary &arg_summary(FunctionCallInfo fcinfo, int argno) {
    struct varlena *v = PG_DETOAST_DATUM(PG_GETARG_DATUM(argno));
    if (VARSIZE(v) != sizeof(NpsAggDatum))
        ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED), errmsg("npsagg datum has wrong size %u", (unsigned)VARSIZE(v))));
    return reinterpret_cast<const NpsAggDatum *>(v)->s;
}

namespace {

// At most 40 characters of a (possibly huge) input, cut on a character boundary.
const char *quoted_prefix(const char *input) {
    constexpr int kMax = 40;
    size_t len = strnlen(input, kMax + 1);
    if (len <= kMax) return input;
    int cut = pg_mbcliplen(input, static_cast<int>(len), kMax);
    char *r = static_cast<char *>(palloc(cut + 4));
    memcpy(r, input, cut);
    memcpy(r + cut, "...", 4);
    return r;
}

}  // namespace
}  // namespace nps

using namespace nps;

NPS_FUNCTION(npsagg_in) {
    const char *input = PG_GETARG_CSTRING(0);
    Summary s;
    Verdict v = parse_text(input, &s);
    if (v.status == Status::out_of_range)
        ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
                        errmsg("value \"%s\" is out of range for type npsagg", quoted_prefix(input)), errdetail("%s", v.reason)));
    if (v.status != Status::ok)
        ereport(ERROR, (errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
                        errmsg("invalid input syntax for type npsagg: \"%s\"", quoted_prefix(input)), errdetail("%s", v.reason)));
    PG_RETURN_POINTER(make_npsagg(s));
}

NPS_FUNCTION(npsagg_out) {
    const Summary &s = arg_summary(fcinfo, 0);
    char *buf = static_cast<char *>(palloc(kTextMax));
    format_text(s, buf);
    PG_RETURN_CSTRING(buf);
}

NPS_FUNCTION(npsagg_send) {
    const Summary &s = arg_summary(fcinfo, 0);
    bytea *out = static_cast<bytea *>(palloc(VARHDRSZ + kWireSize));
    SET_VARSIZE(out, VARHDRSZ + kWireSize);
    encode_binary(s, reinterpret_cast<unsigned char *>(VARDATA(out)));
    PG_RETURN_BYTEA_P(out);
}

NPS_FUNCTION(npsagg_recv) {
    StringInfo buf = reinterpret_cast<StringInfo>(PG_GETARG_POINTER(0));
    int avail = buf->len - buf->cursor;
    if (avail != static_cast<int>(kWireSize))
        ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
                        errmsg("invalid binary npsagg: expected %d bytes, got %d", static_cast<int>(kWireSize), avail)));
    Summary s;
    Verdict v = decode_binary(reinterpret_cast<const unsigned char *>(buf->data + buf->cursor), kWireSize, &s);
    if (v.status == Status::out_of_range)
        ereport(ERROR, (errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE), errmsg("binary npsagg out of range"), errdetail("%s", v.reason)));
    if (v.status != Status::ok)
        ereport(ERROR, (errcode(ERRCODE_INVALID_TEXT_REPRESENTATION), errmsg("invalid binary npsagg"), errdetail("%s", v.reason)));
    buf->cursor = buf->len;
    PG_RETURN_POINTER(make_npsagg(s));
}
static bool summaries_equal(const Summary &a, const Summary &b) {
    for (int i = 0; i < kScores; i++)
        if (a.counts[i] != b.counts[i] || a.weights[i] != b.weights[i]) return false;
    return a.weight_sq == b.weight_sq;
}

NPS_FUNCTION(npsagg_eq) { PG_RETURN_BOOL(summaries_equal(arg_summary(fcinfo, 0), arg_summary(fcinfo, 1))); }
NPS_FUNCTION(npsagg_ne) { PG_RETURN_BOOL(!summaries_equal(arg_summary(fcinfo, 0), arg_summary(fcinfo, 1))); }

// category(score) -> nps_category; enum value OIDs cached per call site.
static Datum category_of(FunctionCallInfo fcinfo, int64 score) {
    if (score < 0 || score > 10) score_out_of_range(score);
    auto *cache = static_cast<Oid *>(fcinfo->flinfo->fn_extra);
    if (cache == nullptr) {
        Oid typid = get_fn_expr_rettype(fcinfo->flinfo);
        if (!OidIsValid(typid)) elog(ERROR, "could not determine nps_category type");
        cache = static_cast<Oid *>(MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, 3 * sizeof(Oid)));
        static const char *labels[3] = {"detractor", "passive", "promoter"};
        for (int i = 0; i < 3; i++)
            cache[i] = DatumGetObjectId(DirectFunctionCall2(enum_in, CStringGetDatum(labels[i]), ObjectIdGetDatum(typid)));
        fcinfo->flinfo->fn_extra = cache;
    }
    return ObjectIdGetDatum(cache[score >= kPromoterMin ? 2 : score > kDetractorMax ? 1 : 0]);
}

NPS_FUNCTION(nps_category_int2) { return category_of(fcinfo, PG_GETARG_INT16(0)); }
NPS_FUNCTION(nps_category_int4) { return category_of(fcinfo, PG_GETARG_INT32(0)); }
NPS_FUNCTION(nps_category_int8) { return category_of(fcinfo, PG_GETARG_INT64(0)); }
