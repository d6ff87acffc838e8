// Capture: the survey policy helpers shared by the row path (C++) and the set path (SQL):
// deterministic sampling and survey tokens.
#include "capture.hpp"

extern "C" {
#include "common/hashfn.h"
#include "port.h"
#include "utils/builtins.h"
}

namespace nps {
namespace capture {

double sample_point(const char *cust, int custlen, const char *key, int keylen) {
    uint64 h = hash_bytes_extended(reinterpret_cast<const unsigned char *>(cust), custlen, 0);
    h = hash_bytes_extended(reinterpret_cast<const unsigned char *>(key), keylen, h);
    return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);  // top 53 bits / 2^53
}

void make_token(char out[23]) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char raw[18];
    if (!pg_strong_random(raw, 16))
        ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not generate random survey token")));
    raw[16] = raw[17] = 0;
    int o = 0;
    for (int i = 0; i < 18; i += 3) {
        uint32 v = (uint32(raw[i]) << 16) | (uint32(raw[i + 1]) << 8) | raw[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    out[22] = '\0';  // 16 bytes = 128 bits = 22 base64 characters (the rest was padding)
}

}  // namespace capture
}  // namespace nps

// sample_point(customer text, payment_key text) -> float8 in [0, 1)
NPS_FUNCTION(nps_sample_point) {
    text *c = PG_GETARG_TEXT_PP(0);
    text *k = PG_GETARG_TEXT_PP(1);
    PG_RETURN_FLOAT8(nps::capture::sample_point(VARDATA_ANY(c), VARSIZE_ANY_EXHDR(c), VARDATA_ANY(k),
                                                VARSIZE_ANY_EXHDR(k)));
}

// new_token() -> text: 128 random bits, base64url without padding
NPS_FUNCTION(nps_new_token) {
    (void)fcinfo;
    char tok[23];
    nps::capture::make_token(tok);
    PG_RETURN_TEXT_P(cstring_to_text_with_len(tok, 22));
}
