// libFuzzer target for the message template parser and renderer (src/render_core.cpp), built by
// `make fuzz-build` from the same source the extension uses. Input: one byte choosing the field
// (subject, text, HTML), then the template, then after a NUL byte the amount, then after
// another the locale. Whatever parses must render without fault, and hostile values stay inert:
// in a subject no value adds a control character, in HTML no value adds '<', '>' or a quote.
#include "../../src/render_core.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace nps::render;

namespace {

std::vector<void *> live;

void *fz_alloc(size_t n) {
    void *p = malloc(n);
    if (!p) abort();
    live.push_back(p);
    return p;
}
void *fz_grow(void *old, size_t n) {
    void *p = realloc(old, n);
    if (!p) abort();
    for (void *&q : live)
        if (q == old) q = p;
    return p;
}
const Alloc fz = {fz_alloc, fz_grow};

[[noreturn]] void fail(const char *what) {
    fprintf(stderr, "render_fuzz: %s\n", what);
    abort();
}

const char *hostile(void *, const char *key, size_t keylen, size_t *outlen) {
    static const char evil[] = "<script>alert(\"x\")</script>' & \r\nBcc: victim@example.com";
    if (keylen == 4 && memcmp(key, "none", 4) == 0) return nullptr;
    *outlen = sizeof evil - 1;
    return evil;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    Field field = data[0] % 3 == 0 ? Field::subject : data[0] % 3 == 1 ? Field::text : Field::html;
    std::string rest(reinterpret_cast<const char *>(data + 1), size - 1);
    std::string tmpl = rest, amount = "1234.5", locale = "de";
    size_t z = rest.find('\0');
    if (z != std::string::npos) {
        tmpl = rest.substr(0, z);
        std::string tail = rest.substr(z + 1);
        size_t z2 = tail.find('\0');
        amount = tail.substr(0, z2);
        if (z2 != std::string::npos) locale = tail.substr(z2 + 1);
    }
    char norm[64];
    const char *loc = nullptr;
    if (locale.size() < 40 && normalise_locale(locale.data(), locale.size(), norm)) loc = norm;
    Template t;
    ParseResult r = parse(tmpl.data(), tmpl.size(), field, fz, &t);
    if (r.problem == Problem::none) {
        Context ctx;
        memset(&ctx, 0, sizeof ctx);
        ctx.token = "AbCdEfGhIjKlMnOpQrStUv";
        ctx.base_url = "https://nps.example.com/a";
        ctx.amount = amount.c_str();
        ctx.currency = amount.size() % 2 ? "JPY" : "kwd";
        ctx.paid = {true, 2025, 3, 30, 1, 59, "CET"};
        ctx.locale = loc;
        ctx.source = "src<&>";
        ctx.attribute = hostile;
        Buf out;
        buf_init(&out, fz, 16);
        if (render(t, field, ctx, &out) != RenderStatus::ok) fail("render failed with a base URL");
        if (strlen(out.data) > out.len) fail("length mismatch");
        bool tmpl_ctrl = false, tmpl_html = false, links = false;
        for (char c : tmpl) {
            tmpl_ctrl = tmpl_ctrl || static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
            tmpl_html = tmpl_html || c == '<' || c == '>' || c == '"' || c == '\'';
        }
        for (int i = 0; i < t.nsegs; i++) links = links || t.segs[i].kind == K_SCORE_LINKS;
        if (field == Field::subject && !tmpl_ctrl)
            for (size_t i = 0; i < out.len; i++)
                if (static_cast<unsigned char>(out.data[i]) < 0x20) fail("a value put a control character into a subject");
        if (field == Field::html && !tmpl_html && !links)
            for (size_t i = 0; i < out.len; i++)
                if (strchr("<>\"'", out.data[i]) && out.data[i]) fail("a value put markup into HTML");
        ctx.base_url = nullptr;
        Buf out2;
        buf_init(&out2, fz, 16);
        if ((render(t, field, ctx, &out2) == RenderStatus::no_base_url) != t.uses_links) fail("uses_links disagrees");
    } else if (r.pos > tmpl.size()) {
        fail("problem position out of range");
    }
    Buf amt;
    buf_init(&amt, fz, 8);
    format_amount(amount.c_str(), "KWD", loc, data[0] & 4, &amt);
    for (void *p : live) free(p);
    live.clear();
    return 0;
}
