// libFuzzer target for the npsagg parsers (text input and binary recv), built by `make fuzz`
// from the same src/npsagg_core.cpp the extension uses. Each input is tried as text and as a
// binary value; whatever is accepted must satisfy the validity rule, print as text that reads
// back bit for bit, survive the binary form, and give finite statistics. Any violation aborts.
#include "../../src/npsagg_core.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

using namespace nps;

namespace {

[[noreturn]] void fail(const char *what) {
    fprintf(stderr, "npsagg_fuzz: %s\n", what);
    abort();
}

bool same_bits(const Summary &a, const Summary &b) { return memcmp(&a, &b, sizeof(Summary)) == 0; }

void accepted(const Summary &s) {
    if (check(s).status != Status::ok) fail("accepted value fails check()");
    char text[kTextMax];
    size_t n = format_text(s, text);
    if (n + 1 > kTextMax || strlen(text) != n) fail("format_text overran its bound");
    Summary t;
    Verdict v = parse_text(text, &t);
    if (v.status != Status::ok) {
        fprintf(stderr, "text: %s\nreason: %s\n", text, v.reason);
        fail("printed text does not read back");
    }
    if (!same_bits(s, t)) fail("text round trip changed the value");
    unsigned char wire[kWireSize];
    encode_binary(s, wire);
    Summary b;
    if (decode_binary(wire, kWireSize, &b).status != Status::ok || !same_bits(s, b)) fail("binary round trip failed");
    Shares sh;
    if (shares(s, &sh)) {
        if (!std::isfinite(sh.p) || !std::isfinite(sh.d) || !std::isfinite(sh.n)) fail("non-finite shares");
        if (sh.p < 0 || sh.p > 1 || sh.d < 0 || sh.d > 1 || sh.n < 1) fail("shares out of range");
        // the adjusted-Wald step of nps_ci
        double an = sh.n + 3.0, ap = (sh.p * sh.n + 0.75) / an, ad = (sh.d * sh.n + 0.75) / an;
        double var = (ap + ad - (ap - ad) * (ap - ad)) / an;
        if (std::isnan(var) || std::isnan(ap) || std::isnan(ad)) fail("NaN in the confidence interval");
    }
    double x;
    if (nps_of_counts(s, &x) && !(x >= -100 && x <= 100)) fail("nps out of range");
    if (weighted_nps_of(s, &x) && !(x >= -100.0000001 && x <= 100.0000001)) fail("weighted nps out of range");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    std::vector<char> text(data, data + size);
    text.push_back('\0');
    Summary s;
    Verdict v = parse_text(text.data(), &s);
    if (v.status == Status::ok)
        accepted(s);
    else if (v.reason == nullptr)
        fail("rejection without a reason");
    v = decode_binary(data, size, &s);
    if (v.status == Status::ok)
        accepted(s);
    else if (v.reason == nullptr)
        fail("rejection without a reason");
    // A wire-size prefix of the input read as a binary value too, so the fuzzer reaches the
    // checks after the length test.
    if (size > kWireSize) {
        std::vector<unsigned char> w(data, data + kWireSize);
        w[0] = w[1] = w[2] = 0;
        w[3] = 1;
        if (decode_binary(w.data(), kWireSize, &s).status == Status::ok) accepted(s);
    }
    return 0;
}
