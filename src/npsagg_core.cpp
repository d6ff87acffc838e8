// npsagg validity rule, text and binary forms, shares: no backend code (see npsagg_core.hpp).
#include "npsagg_core.hpp"

#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>

extern "C" {
#include "common/shortest_dec.h"  // PostgreSQL's shortest round-trip doubles (libpgcommon)
}

namespace nps {

namespace {

// Counts and weights; sets the total count and weight.
Verdict check_counts_weights(const Summary &s, int64_t *n_out, double *w_out) {
    int64_t n = 0;
    double w = 0;
    for (int i = 0; i < kScores; i++) {
        if (s.counts[i] < 0) return {Status::syntax, "counts must be non-negative"};
        if (__builtin_add_overflow(n, s.counts[i], &n)) return {Status::out_of_range, "total count overflows bigint"};
        if (std::isnan(s.weights[i]) || s.weights[i] < 0) return {Status::syntax, "weights must be finite and non-negative"};
        if (std::isinf(s.weights[i])) return {Status::out_of_range, "a weight overflows float8"};
        if (s.counts[i] == 0 && s.weights[i] != 0) return {Status::syntax, "a score with no responses cannot carry weight"};
        w += s.weights[i];
    }
    if (std::isinf(w)) return {Status::out_of_range, "total weight overflows float8"};
    *n_out = n;
    *w_out = w;
    return kOk;
}

Verdict check_weight_sq(double wsq, int64_t n, double w) {
    if (std::isnan(wsq) || wsq < 0) return {Status::syntax, "weight_sq must be finite and non-negative"};
    if (std::isinf(wsq)) return {Status::out_of_range, "weight_sq overflows float8"};
    if (w == 0) {
        if (wsq != 0) return {Status::syntax, "weight_sq must be 0 when all weights are 0"};
        return kOk;
    }
    // n > 0 here (a positive weight needs a response).
    double dn = static_cast<double>(n);
    double tol = 1e-9 + 4.0 * dn * DBL_EPSILON;
    double lo = (w / dn) * w;  // may overflow to inf: then no finite weight_sq fits
    double hi = w * w;         // may overflow to inf: no upper limit then
    if (wsq < lo * (1.0 - tol) - dn * DBL_MIN || wsq > hi * (1.0 + tol))
        return {Status::syntax,
                "weight_sq is inconsistent with the weights: it must lie between (sum of weights)^2/count and (sum of weights)^2"};
    return kOk;
}

}  // namespace

Verdict check(const Summary &s) {
    int64_t n;
    double w;
    Verdict v = check_counts_weights(s, &n, &w);
    if (v.status != Status::ok) return v;
    return check_weight_sq(s.weight_sq, n, w);
}

namespace {

struct Parser {
    const char *p;
    Verdict err{Status::syntax, nullptr};

    void ws() {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    }
    bool lit(char c) {
        ws();
        if (*p != c) return false;
        p++;
        return true;
    }
    // JSON number grammar only (no NaN/Infinity/hex/leading +), then strtod.
    bool number(double *out) {
        ws();
        const char *s = p, *q = p;
        if (*q == '-') q++;
        if (*q == '0')
            q++;
        else if (*q >= '1' && *q <= '9')
            while (*q >= '0' && *q <= '9') q++;
        else
            return false;
        if (*q == '.') {
            q++;
            if (!(*q >= '0' && *q <= '9')) return false;
            while (*q >= '0' && *q <= '9') q++;
        }
        if (*q == 'e' || *q == 'E') {
            q++;
            if (*q == '+' || *q == '-') q++;
            if (!(*q >= '0' && *q <= '9')) return false;
            while (*q >= '0' && *q <= '9') q++;
        }
        char buf[64];
        if (q - s >= static_cast<long>(sizeof buf)) {
            err = {Status::syntax, "a number has more than 63 characters"};
            return false;
        }
        memcpy(buf, s, q - s);
        buf[q - s] = '\0';
        errno = 0;
        *out = strtod(buf, nullptr);
        if (std::isinf(*out)) {
            err = {Status::out_of_range, "a weight is out of range for float8"};
            return false;
        }
        p = q;
        return true;
    }
    bool int64_(int64_t *out) {
        ws();
        const char *q = p;
        bool neg = *q == '-';
        if (neg) q++;
        if (!(*q >= '0' && *q <= '9')) return false;
        if (*q == '0' && q[1] >= '0' && q[1] <= '9') return false;
        int64_t v = 0;  // accumulated negatively: -9223372036854775808 fits
        while (*q >= '0' && *q <= '9') {
            if (__builtin_mul_overflow(v, 10, &v) || __builtin_sub_overflow(v, *q - '0', &v)) {
                err = {Status::out_of_range, "a count is out of range for bigint"};
                return false;
            }
            q++;
        }
        if (*q == '.' || *q == 'e' || *q == 'E') return false;
        if (!neg) {
            if (v == INT64_MIN) {
                err = {Status::out_of_range, "a count is out of range for bigint"};
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
        if (*p != '"') return false;
        p++;
        return true;
    }
    Verdict fail(const char *reason) const { return {err.status, err.reason ? err.reason : reason}; }
};

}  // namespace

Verdict parse_text(const char *input, Summary *out) {
    Parser ps{input};
    Summary s{};
    bool have_counts = false, have_weights = false, have_wsq = false;
    char key[32];
    if (!ps.lit('{')) return {Status::syntax, "expected \"{\""};
    for (int k = 0;; k++) {
        if (k > 0 && !ps.lit(',')) break;
        if (!ps.key(key, sizeof key) || !ps.lit(':'))
            return {Status::syntax, "expected a key \"counts\", \"weights\" or \"weight_sq\""};
        if (strcmp(key, "counts") == 0 && !have_counts) {
            have_counts = true;
            if (!ps.lit('[')) return {Status::syntax, "\"counts\" must be an array of 11 integers"};
            for (int i = 0; i < kScores; i++)
                if ((i > 0 && !ps.lit(',')) || !ps.int64_(&s.counts[i])) return ps.fail("\"counts\" must be an array of 11 integers");
            if (!ps.lit(']')) return {Status::syntax, "\"counts\" must be an array of 11 integers"};
        } else if (strcmp(key, "weights") == 0 && !have_weights) {
            have_weights = true;
            if (!ps.lit('[')) return {Status::syntax, "\"weights\" must be an array of 11 numbers"};
            for (int i = 0; i < kScores; i++)
                if ((i > 0 && !ps.lit(',')) || !ps.number(&s.weights[i])) return ps.fail("\"weights\" must be an array of 11 finite numbers");
            if (!ps.lit(']')) return {Status::syntax, "\"weights\" must be an array of 11 numbers"};
        } else if (strcmp(key, "weight_sq") == 0 && !have_wsq) {
            have_wsq = true;
            if (!ps.number(&s.weight_sq)) return ps.fail("\"weight_sq\" must be a finite number");
        } else {
            return {Status::syntax, "unknown or repeated key"};
        }
    }
    if (!ps.lit('}')) return {Status::syntax, "expected \"}\""};
    ps.ws();
    if (*ps.p != '\0') return {Status::syntax, "unexpected text after \"}\""};
    if (!have_counts || !have_weights) return {Status::syntax, "both \"counts\" and \"weights\" are required"};
    int64_t n;
    double w;
    Verdict v = check_counts_weights(s, &n, &w);
    if (v.status != Status::ok) return v;
    if (!have_wsq) {
        for (int i = 0; i < kScores; i++)
            if (s.counts[i] > 0) s.weight_sq += (s.weights[i] / static_cast<double>(s.counts[i])) * s.weights[i];
        if (std::isinf(s.weight_sq)) return {Status::out_of_range, "weight_sq derived from the weights overflows float8"};
    }
    v = check_weight_sq(s.weight_sq, n, w);
    if (v.status != Status::ok) return v;
    *out = s;
    return kOk;
}

size_t format_text(const Summary &s, char *buf) {
    char *p = buf;
    auto put = [&p](const char *t) {
        size_t n = strlen(t);
        memcpy(p, t, n);
        p += n;
    };
    put("{\"counts\":[");
    for (int i = 0; i < kScores; i++) {
        if (i) *p++ = ',';
        // int64 in decimal, INT64_MIN-safe
        char tmp[24];
        int k = 0;
        uint64_t u = s.counts[i] < 0 ? 0 - static_cast<uint64_t>(s.counts[i]) : static_cast<uint64_t>(s.counts[i]);
        do {
            tmp[k++] = static_cast<char>('0' + u % 10);
            u /= 10;
        } while (u);
        if (s.counts[i] < 0) *p++ = '-';
        while (k) *p++ = tmp[--k];
    }
    put("],\"weights\":[");
    for (int i = 0; i < kScores; i++) {
        if (i) *p++ = ',';
        p += double_to_shortest_decimal_bufn(s.weights[i], p);
    }
    put("],\"weight_sq\":");
    p += double_to_shortest_decimal_bufn(s.weight_sq, p);
    *p++ = '}';
    *p = '\0';
    return static_cast<size_t>(p - buf);
}

namespace {
uint64_t get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}
void put64(unsigned char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        p[i] = static_cast<unsigned char>(v & 0xff);
        v >>= 8;
    }
}
}  // namespace

Verdict decode_binary(const unsigned char *data, size_t len, Summary *out) {
    if (len != kWireSize) return {Status::syntax, "wrong length"};
    uint32_t version = (uint32_t(data[0]) << 24) | (uint32_t(data[1]) << 16) | (uint32_t(data[2]) << 8) | data[3];
    if (version != static_cast<uint32_t>(kWireVersion)) return {Status::syntax, "unknown version"};
    Summary s;
    const unsigned char *p = data + 4;
    for (int i = 0; i < kScores; i++, p += 8) s.counts[i] = static_cast<int64_t>(get64(p));
    for (int i = 0; i < kScores; i++, p += 8) {
        uint64_t bits = get64(p);
        memcpy(&s.weights[i], &bits, 8);
    }
    uint64_t bits = get64(p);
    memcpy(&s.weight_sq, &bits, 8);
    Verdict v = check(s);
    if (v.status != Status::ok) return v;
    *out = s;
    return kOk;
}

void encode_binary(const Summary &s, unsigned char out[kWireSize]) {
    out[0] = out[1] = out[2] = 0;
    out[3] = static_cast<unsigned char>(kWireVersion);
    unsigned char *p = out + 4;
    for (int i = 0; i < kScores; i++, p += 8) put64(p, static_cast<uint64_t>(s.counts[i]));
    for (int i = 0; i < kScores; i++, p += 8) {
        uint64_t bits;
        memcpy(&bits, &s.weights[i], 8);
        put64(p, bits);
    }
    uint64_t bits;
    memcpy(&bits, &s.weight_sq, 8);
    put64(p, bits);
}

bool shares(const Summary &s, Shares *out) {
    int64_t n = responses(s);
    if (n <= 0) return false;
    double dn = static_cast<double>(n);
    WeightSums ws = weight_sums(s);
    double w = ws.total;
    bool unit = s.weight_sq == dn && w == dn;
    for (int i = 0; unit && i < kScores; i++) unit = s.weights[i] == static_cast<double>(s.counts[i]);
    if (unit) {
        out->p = static_cast<double>(promoters(s)) / dn;
        out->d = static_cast<double>(detractors(s)) / dn;
        out->n = dn;
        return true;
    }
    if (!(w > 0) || !std::isfinite(w)) return false;
    out->p = ws.promoters / w;
    out->d = ws.detractors / w;
    // n_eff = W^2 / weight_sq without forming W^2 (which may overflow); clamped to [1, n].
    double r = s.weight_sq / w;
    double neff = r > 0 ? w / r : dn;
    out->n = !(neff >= 1.0) ? 1.0 : neff > dn ? dn : neff;
    return true;
}

}  // namespace nps
