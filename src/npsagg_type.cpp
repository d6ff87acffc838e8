// The npsagg type: JSON text I/O, binary send/recv, equality; and category().
#include "npsagg.hpp"

extern "C" {
#include "catalog/pg_type_d.h"
#include "common/shortest_dec.h"
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

bool shares(const Summary &s, Shares *out) {
    int64 n = responses(s);
    if (n == 0) return false;
    WeightSums ws = weight_sums(s);
    double w = ws.total;
    bool unit = s.weight_sq == static_cast<double>(n) && w == static_cast<double>(n);
    for (int i = 0; unit && i < kScores; i++) unit = s.weights[i] == static_cast<double>(s.counts[i]);
    if (unit) {
        out->p = static_cast<double>(promoters(s)) / n;
        out->d = static_cast<double>(detractors(s)) / n;
        out->n = static_cast<double>(n);
        return true;
    }
    if (!(w > 0) || !(s.weight_sq > 0)) return false;
    out->p = ws.promoters / w;
    out->d = ws.detractors / w;
    out->n = w * w / s.weight_sq;
    return true;
}

NpsAggDatum *make_npsagg(const Summary &s) {
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

const char *invalid_reason(const Summary &s) {
    int64 total = 0;
    for (int i = 0; i < kScores; i++) {
        if (s.counts[i] < 0) return "counts must be non-negative";
        if (pg_add_s64_overflow(total, s.counts[i], &total)) return "total count overflows bigint";
        if (!std::isfinite(s.weights[i]) || s.weights[i] < 0) return "weights must be finite and non-negative";
        if (s.counts[i] == 0 && s.weights[i] != 0) return "a score with no responses cannot carry weight";
    }
    if (!std::isfinite(s.weight_sq) || s.weight_sq < 0) return "weight_sq must be finite and non-negative";
    return nullptr;
}

// ---- text form: {"counts":[c0,...,c10],"weights":[w0,...,w10],"weight_sq":x} -------------

namespace {

struct Parser {
    const char *p;
    const char *err = nullptr;

    void ws() {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    }
    bool lit(char c) {
        ws();
        if (*p != c) return false;
        p++;
        return true;
    }
    // JSON number grammar only (no NaN/Infinity/hex), then strtod.
    bool number(double *out, bool integer_only) {
        ws();
        const char *s = p, *q = p;
        if (*q == '-') q++;
        if (*q == '0')
            q++;
        else if (*q >= '1' && *q <= '9')
            while (*q >= '0' && *q <= '9') q++;
        else
            return false;
        bool frac = false;
        if (*q == '.') {
            frac = true;
            q++;
            if (!(*q >= '0' && *q <= '9')) return false;
            while (*q >= '0' && *q <= '9') q++;
        }
        if (*q == 'e' || *q == 'E') {
            frac = true;
            q++;
            if (*q == '+' || *q == '-') q++;
            if (!(*q >= '0' && *q <= '9')) return false;
            while (*q >= '0' && *q <= '9') q++;
        }
        if (integer_only && frac) return false;
        char buf[64];
        if (q - s >= (long)sizeof buf) return false;
        memcpy(buf, s, q - s);
        buf[q - s] = '\0';
        errno = 0;
        *out = strtod(buf, nullptr);
        if (errno == ERANGE && std::isinf(*out)) return false;
        p = q;
        return true;
    }
    bool int64_(int64 *out) {
        ws();
        const char *s = p;
        bool neg = *s == '-';
        const char *q = neg ? s + 1 : s;
        if (!(*q >= '0' && *q <= '9')) return false;
        if (*q == '0' && q[1] >= '0' && q[1] <= '9') return false;
        int64 v = 0;
        while (*q >= '0' && *q <= '9') {
            if (pg_mul_s64_overflow(v, 10, &v) || pg_sub_s64_overflow(v, *q - '0', &v)) {
                err = "count out of range for bigint";
                return false;
            }
            q++;
        }
        if (*q == '.' || *q == 'e' || *q == 'E') return false;
        if (!neg) {
            if (v == PG_INT64_MIN) {
                err = "count out of range for bigint";
                return false;
            }
            v = -v;
        }
        *out = v;
        p = q;
        return true;
    }
    bool key(char *buf, size_t len) {
        if (!lit('"')) return false;
        size_t i = 0;
        while (*p && *p != '"' && *p != '\\') {
            if (i + 1 >= len) return false;
            buf[i++] = *p++;
        }
        buf[i] = '\0';
        return *p++ == '"';
    }
};

[[noreturn]] void bad_text(const char *input, const char *reason) {
    ereport(ERROR, (errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
                    errmsg("invalid input syntax for type npsagg: \"%s\"", input), errdetail("%s", reason)));
    pg_unreachable();
}

void append_double(StringInfo buf, double v) {
    char tmp[DOUBLE_SHORTEST_DECIMAL_LEN];
    double_to_shortest_decimal_buf(v, tmp);
    appendStringInfoString(buf, tmp);
}

}  // namespace
}  // namespace nps

using namespace nps;

NPS_FUNCTION(npsagg_in) {
    const char *input = PG_GETARG_CSTRING(0);
    Parser ps{input};
    Summary s{};
    bool have_counts = false, have_weights = false, have_wsq = false;
    char key[32];
    if (!ps.lit('{')) bad_text(input, "expected \"{\"");
    for (int k = 0;; k++) {
        if (k > 0 && !ps.lit(',')) break;
        if (!ps.key(key, sizeof key) || !ps.lit(':')) bad_text(input, "expected a key \"counts\", \"weights\" or \"weight_sq\"");
        if (strcmp(key, "counts") == 0 && !have_counts) {
            have_counts = true;
            if (!ps.lit('[')) bad_text(input, "\"counts\" must be an array of 11 integers");
            for (int i = 0; i < kScores; i++) {
                if ((i > 0 && !ps.lit(',')) || !ps.int64_(&s.counts[i]))
                    bad_text(input, ps.err ? ps.err : "\"counts\" must be an array of 11 integers");
            }
            if (!ps.lit(']')) bad_text(input, "\"counts\" must be an array of 11 integers");
        } else if (strcmp(key, "weights") == 0 && !have_weights) {
            have_weights = true;
            if (!ps.lit('[')) bad_text(input, "\"weights\" must be an array of 11 numbers");
            for (int i = 0; i < kScores; i++) {
                if ((i > 0 && !ps.lit(',')) || !ps.number(&s.weights[i], false))
                    bad_text(input, "\"weights\" must be an array of 11 finite numbers");
            }
            if (!ps.lit(']')) bad_text(input, "\"weights\" must be an array of 11 numbers");
        } else if (strcmp(key, "weight_sq") == 0 && !have_wsq) {
            have_wsq = true;
            if (!ps.number(&s.weight_sq, false)) bad_text(input, "\"weight_sq\" must be a finite number");
        } else {
            bad_text(input, "unknown or repeated key");
        }
    }
    if (!ps.lit('}')) bad_text(input, "expected \"}\"");
    ps.ws();
    if (*ps.p != '\0') bad_text(input, "unexpected text after \"}\"");
    if (!have_counts || !have_weights) bad_text(input, "both \"counts\" and \"weights\" are required");
    if (const char *why = invalid_reason(s)) bad_text(input, why);
    if (!have_wsq) {
        // The contract's two-key form: assume equal weights within each score (exact for
        // unweighted summaries).
        for (int i = 0; i < kScores; i++)
            if (s.counts[i] > 0) s.weight_sq += s.weights[i] * s.weights[i] / static_cast<double>(s.counts[i]);
    }
    PG_RETURN_POINTER(make_npsagg(s));
}

NPS_FUNCTION(npsagg_out) {
    const Summary &s = arg_summary(fcinfo, 0);
    StringInfoData buf;
    initStringInfo(&buf);
    appendStringInfoString(&buf, "{\"counts\":[");
    for (int i = 0; i < kScores; i++) appendStringInfo(&buf, i ? "," INT64_FORMAT : INT64_FORMAT, s.counts[i]);
    appendStringInfoString(&buf, "],\"weights\":[");
    for (int i = 0; i < kScores; i++) {
        if (i) appendStringInfoChar(&buf, ',');
        append_double(&buf, s.weights[i]);
    }
    appendStringInfoString(&buf, "],\"weight_sq\":");
    append_double(&buf, s.weight_sq);
    appendStringInfoChar(&buf, '}');
    PG_RETURN_CSTRING(buf.data);
}

NPS_FUNCTION(npsagg_send) {
    const Summary &s = arg_summary(fcinfo, 0);
    StringInfoData buf;
    pq_begintypsend(&buf);
    pq_sendint32(&buf, kNpsAggVersion);
    for (int i = 0; i < kScores; i++) pq_sendint64(&buf, s.counts[i]);
    for (int i = 0; i < kScores; i++) pq_sendfloat8(&buf, s.weights[i]);
    pq_sendfloat8(&buf, s.weight_sq);
    PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

NPS_FUNCTION(npsagg_recv) {
    StringInfo buf = reinterpret_cast<StringInfo>(PG_GETARG_POINTER(0));
    constexpr int kWire = 4 + kScores * 8 * 2 + 8;
    if (buf->len - buf->cursor != kWire)
        ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
                        errmsg("invalid binary npsagg: expected %d bytes, got %d", kWire, buf->len - buf->cursor)));
    int32 version = pq_getmsgint(buf, 4);
    if (version != kNpsAggVersion)
        ereport(ERROR, (errcode(ERRCODE_INVALID_TEXT_REPRESENTATION), errmsg("invalid binary npsagg: unknown version %d", version)));
    Summary s;
    for (int i = 0; i < kScores; i++) s.counts[i] = pq_getmsgint64(buf);
    for (int i = 0; i < kScores; i++) s.weights[i] = pq_getmsgfloat8(buf);
    s.weight_sq = pq_getmsgfloat8(buf);
    if (const char *why = invalid_reason(s))
        ereport(ERROR, (errcode(ERRCODE_INVALID_TEXT_REPRESENTATION), errmsg("invalid binary npsagg"), errdetail("%s", why)));
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
