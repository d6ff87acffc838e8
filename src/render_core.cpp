// Survey messages without PostgreSQL: template parsing, rendering, amounts and dates by locale
// (see render_core.hpp).
#include "render_core.hpp"

#include <cstring>

namespace nps {
namespace render {

// ---- buffer ----------------------------------------------------------------------------------

void buf_init(Buf *b, const Alloc &a, size_t cap) {
    b->a = &a;
    b->cap = cap < 16 ? 16 : cap;
    b->data = static_cast<char *>(a.alloc(b->cap));
    b->len = 0;
    b->data[0] = '\0';
}

void buf_append(Buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap * 2;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->data = static_cast<char *>(b->a->grow(b->data, cap));
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void put(Buf *b, const char *s) { buf_append(b, s, strlen(s)); }
static void putc1(Buf *b, char c) { buf_append(b, &c, 1); }
static void put_int(Buf *b, long v, int width = 0) {
    char tmp[24];
    int n = 0;
    bool neg = v < 0;
    unsigned long u = neg ? 0UL - static_cast<unsigned long>(v) : static_cast<unsigned long>(v);
    do {
        tmp[n++] = static_cast<char>('0' + u % 10);
        u /= 10;
    } while (u);
    while (n < width)
        tmp[n++] = '0';
    if (neg)
        putc1(b, '-');
    while (n)
        putc1(b, tmp[--n]);
}

// ---- locales ---------------------------------------------------------------------------------

namespace {

enum DateStyle { D_ISO, D_EN, D_DE, D_FR, D_ES, D_PT, D_IT, D_NL, D_JA };

struct Lang {
    const char *code;
    const char *decimal, *group;  // separators
    bool code_first;              // "USD 1,234.50" rather than "1.234,50 USD"
    DateStyle date;
    const char *const *months;
};

const char *const m_en[12] = {"January", "February", "March",     "April",   "May",      "June",
                              "July",    "August",   "September", "October", "November", "December"};
const char *const m_de[12] = {"Januar", "Februar", "M\xC3\xA4rz", "April",   "Mai",      "Juni",
                              "Juli",   "August",  "September",   "Oktober", "November", "Dezember"};
const char *const m_fr[12] = {"janvier", "f\xC3\xA9vrier", "mars",      "avril",   "mai",      "juin",
                              "juillet", "ao\xC3\xBBt",    "septembre", "octobre", "novembre", "d\xC3\xA9" "cembre"};
const char *const m_es[12] = {"enero", "febrero", "marzo",      "abril",   "mayo",      "junio",
                              "julio", "agosto",  "septiembre", "octubre", "noviembre", "diciembre"};
const char *const m_pt[12] = {"janeiro", "fevereiro", "mar\xC3\xA7o", "abril",   "maio",     "junho",
                              "julho",   "agosto",    "setembro",     "outubro", "novembro", "dezembro"};
const char *const m_it[12] = {"gennaio", "febbraio", "marzo",     "aprile",  "maggio",   "giugno",
                              "luglio",  "agosto",   "settembre", "ottobre", "novembre", "dicembre"};
const char *const m_nl[12] = {"januari", "februari", "maart",     "april",   "mei",      "juni",
                              "juli",    "augustus", "september", "oktober", "november", "december"};

// U+202F NARROW NO-BREAK SPACE groups French digits; U+00A0 NO-BREAK SPACE before the code.
#define NNBSP "\xE2\x80\xAF"
#define NBSP "\xC2\xA0"

const Lang langs[] = {
    {"en", ".", ",", true, D_EN, m_en},         {"de", ",", ".", false, D_DE, m_de},
    {"fr", ",", NNBSP, false, D_FR, m_fr},      {"es", ",", ".", false, D_ES, m_es},
    {"pt", ",", ".", false, D_PT, m_pt},        {"it", ",", ".", false, D_IT, m_it},
    {"nl", ",", ".", true, D_NL, m_nl},         {"ja", ".", ",", true, D_JA, m_en},
};
const Lang iso = {"", ".", ",", true, D_ISO, m_en};

const Lang &lang_of(const char *locale) {
    if (locale == nullptr)
        return langs[0];
    size_t n = 0;
    while (locale[n] && locale[n] != '-')
        n++;
    for (const Lang &l : langs)
        if (strlen(l.code) == n && strncmp(l.code, locale, n) == 0)
            return l;
    return iso;
}

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }
char upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 32) : c; }

}  // namespace

int minor_digits(const char *currency) {
    // ISO 4217 (list one, 2024): currencies whose minor unit is not 2.
    static const char *const zero[] = {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG",
                                       "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"};
    static const char *const three[] = {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"};
    static const char *const four[] = {"CLF", "UYW"};
    if (currency == nullptr || strlen(currency) != 3)
        return 2;
    char c[4] = {upper(currency[0]), upper(currency[1]), upper(currency[2]), '\0'};
    for (const char *z : zero)
        if (strcmp(z, c) == 0)
            return 0;
    for (const char *t : three)
        if (strcmp(t, c) == 0)
            return 3;
    for (const char *f : four)
        if (strcmp(f, c) == 0)
            return 4;
    return 2;
}

void format_amount(const char *amount, const char *currency, const char *locale, bool ascii_only, Buf *out) {
    if (amount == nullptr)
        return;
    const Lang &l = lang_of(locale);
    const char *group = (ascii_only && strcmp(l.group, ",") != 0 && strcmp(l.group, ".") != 0) ? " " : l.group;
    const char *gap = ascii_only ? " " : NBSP;
    const char *p = amount;
    bool neg = false;
    if (*p == '-' || *p == '+')
        neg = *p++ == '-';
    // integer digits [ip, ip + ni), fraction digits [fp, fp + nf)
    const char *ip = p;
    size_t ni = 0;
    while (is_digit(ip[ni]))
        ni++;
    const char *fp = ip + ni;
    size_t nf = 0;
    if (*fp == '.') {
        fp++;
        while (is_digit(fp[nf]))
            nf++;
    }
    bool numeric = ni + nf > 0 && ni <= 100 && fp[nf] == '\0' && (ni > 0 || fp[-1] == '.');
    char cur[4] = {0, 0, 0, 0};
    if (currency && strlen(currency) == 3)
        for (int i = 0; i < 3; i++)
            cur[i] = upper(currency[i]);
    if (cur[0] && l.code_first) {
        put(out, cur);
        put(out, gap);
    }
    if (!numeric) {
        put(out, amount);  // NaN, Infinity: as PostgreSQL prints them
    } else {
        int digits = minor_digits(cur[0] ? cur : nullptr);
        // all digits, rounded half away from zero at `digits` decimals
        char num[160];
        size_t n = 0;
        num[n++] = '0';  // room for a carry
        for (size_t i = 0; i < ni && n < 100; i++)
            num[n++] = ip[i];
        size_t int_len = n;
        for (int i = 0; i < digits; i++)
            num[n++] = static_cast<size_t>(i) < nf ? fp[i] : '0';
        if (static_cast<size_t>(digits) < nf && fp[digits] >= '5') {
            size_t i = n;
            while (i-- > 0) {
                if (num[i] == '9') {
                    num[i] = '0';
                } else {
                    num[i]++;
                    break;
                }
            }
        }
        size_t first = 0;
        while (first + 1 < int_len && num[first] == '0')
            first++;
        bool zero = true;
        for (size_t i = first; i < n; i++)
            zero = zero && num[i] == '0';
        if (neg && !zero)
            putc1(out, '-');
        size_t intd = int_len - first;
        for (size_t i = 0; i < intd; i++) {
            if (i > 0 && (intd - i) % 3 == 0)
                put(out, group);
            putc1(out, num[first + i]);
        }
        if (digits > 0) {
            put(out, l.decimal);
            buf_append(out, num + int_len, digits);
        }
    }
    if (cur[0] && !l.code_first) {
        put(out, gap);
        put(out, cur);
    }
}

void format_date(const LocalTime &lt, const char *locale, bool with_time, bool ascii_only, Buf *out) {
    if (!lt.valid)
        return;
    const Lang &l = ascii_only ? iso : lang_of(locale);
    const char *month = l.months[(lt.month - 1) % 12];
    switch (l.date) {
        case D_EN:
            put(out, month), putc1(out, ' '), put_int(out, lt.day), put(out, ", "), put_int(out, lt.year);
            break;
        case D_DE:
            put_int(out, lt.day), put(out, ". "), put(out, month), putc1(out, ' '), put_int(out, lt.year);
            break;
        case D_FR:
        case D_IT:
        case D_NL:
            put_int(out, lt.day), putc1(out, ' '), put(out, month), putc1(out, ' '), put_int(out, lt.year);
            break;
        case D_ES:
        case D_PT:
            put_int(out, lt.day), put(out, " de "), put(out, month), put(out, " de "), put_int(out, lt.year);
            break;
        case D_JA:
            put_int(out, lt.year), put(out, "\xE5\xB9\xB4"), put_int(out, lt.month), put(out, "\xE6\x9C\x88"),
                put_int(out, lt.day), put(out, "\xE6\x97\xA5");
            break;
        case D_ISO:
            put_int(out, lt.year, 4), putc1(out, '-'), put_int(out, lt.month, 2), putc1(out, '-'), put_int(out, lt.day, 2);
            break;
    }
    if (!with_time)
        return;
    if (l.date == D_EN) {
        int h = lt.hour % 12;
        put(out, ", "), put_int(out, h == 0 ? 12 : h), putc1(out, ':'), put_int(out, lt.minute, 2);
        put(out, lt.hour < 12 ? " AM" : " PM");
    } else {
        put(out, l.date == D_JA || l.date == D_ISO ? " " : ", ");
        put_int(out, lt.hour, 2), putc1(out, ':'), put_int(out, lt.minute, 2);
    }
    if (lt.zone && lt.zone[0]) {
        putc1(out, ' ');
        put(out, lt.zone);
    }
}

bool normalise_locale(const char *in, size_t len, char *out) {
    size_t i = 0, o = 0;
    size_t n = 0;
    while (i < len && is_alpha(in[i]))
        out[o++] = lower(in[i++]), n++;
    if (n < 2 || n > 3)
        return false;
    int subtags = 0;
    while (i < len) {
        if ((in[i] != '-' && in[i] != '_') || ++subtags > 3)
            return false;
        i++;
        size_t s = i;
        bool alpha = true;
        while (i < len && (is_alpha(in[i]) || is_digit(in[i])))
            alpha = alpha && is_alpha(in[i]), i++;
        size_t sl = i - s;
        if (sl < 1 || sl > 8)
            return false;
        out[o++] = '-';
        for (size_t k = 0; k < sl; k++) {
            char c = in[s + k];
            if (alpha && sl == 2)
                c = upper(c);  // region
            else if (alpha && sl == 4)
                c = k == 0 ? upper(c) : lower(c);  // script
            else
                c = lower(c);
            out[o++] = c;
        }
    }
    out[o] = '\0';
    return true;
}

bool clean_recipient(const char *in, size_t len, size_t *start, size_t *outlen) {
    size_t s = 0, e = len;
    while (s < e && (in[s] == ' ' || in[s] == '\t'))
        s++;
    while (e > s && (in[e - 1] == ' ' || in[e - 1] == '\t'))
        e--;
    if (e == s || e - s > 320)
        return false;
    for (size_t i = s; i < e; i++) {
        unsigned char c = static_cast<unsigned char>(in[i]);
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    *start = s;
    *outlen = e - s;
    return true;
}

// ---- templates -------------------------------------------------------------------------------

namespace {

struct Name {
    const char *name;
    Kind kind;
};
const Name names[] = {
    {"amount", K_AMOUNT},           {"currency", K_CURRENCY},
    {"paid_at", K_PAID_AT},         {"paid_date", K_PAID_DATE},
    {"source", K_SOURCE},           {"answer_url", K_ANSWER_URL},
    {"unsubscribe_url", K_UNSUBSCRIBE_URL}, {"score_links", K_SCORE_LINKS},
    {"open_braces", K_OPEN_BRACES},
};

bool key_char(char c) { return is_alpha(c) || is_digit(c) || c == '_' || c == '-'; }

void set_name(ParseResult *r, const char *s, size_t n) {
    if (n > sizeof r->name - 4) {
        memcpy(r->name, s, sizeof r->name - 4);
        memcpy(r->name + sizeof r->name - 4, "...", 4);
    } else {
        memcpy(r->name, s, n);
        r->name[n] = '\0';
    }
}

}  // namespace

ParseResult parse(const char *text, size_t len, Field field, const Alloc &a, Template *t) {
    ParseResult r;
    r.problem = Problem::none;
    r.pos = 0;
    r.name[0] = '\0';
    t->text = text;
    t->nsegs = 0;
    t->uses_links = false;
    // every placeholder takes at least 5 bytes, so at most len / 5 of them and one literal more
    // before each and after the last
    size_t max = 2 * (len / 5) + 2;
    if (len > 1000000) {
        r.problem = Problem::too_long;
        t->segs = nullptr;
        return r;
    }
    if (field == Field::subject)
        for (size_t k = 0; k < len; k++)
            if (text[k] == '\n' || text[k] == '\r') {
                r.problem = Problem::line_break;
                r.pos = k;
                t->segs = nullptr;
                return r;
            }
    t->segs = static_cast<Segment *>(a.alloc(max * sizeof(Segment)));
    size_t i = 0, lit = 0;
    auto literal_until = [&](size_t end) {
        if (end > lit) {
            Segment &s = t->segs[t->nsegs++];
            s.kind = K_LITERAL;
            s.arg = 0;
            s.off = static_cast<uint32_t>(lit);
            s.len = static_cast<uint32_t>(end - lit);
        }
    };
    while (i + 1 < len) {
        const void *hit = memchr(text + i, '{', len - i - 1);
        if (hit == nullptr)
            break;
        size_t b = static_cast<const char *>(hit) - text;
        if (text[b + 1] != '{') {
            i = b + 1;
            continue;
        }
        size_t p = b + 2;
        while (p < len && text[p] == ' ')
            p++;
        size_t ns = p;
        while (p < len && (key_char(text[p]) || text[p] == '.'))
            p++;
        size_t ne = p;
        while (p < len && text[p] == ' ')
            p++;
        if (p + 1 >= len || text[p] != '}' || text[p + 1] != '}' || ne == ns) {
            r.problem = Problem::syntax;
            r.pos = b;
            size_t show = ne > ns ? ne - ns : 0;
            set_name(&r, text + ns, show);
            return r;
        }
        const char *nm = text + ns;
        size_t nl = ne - ns;
        Segment seg;
        seg.kind = K_LITERAL;
        seg.arg = 0;
        seg.off = 0;
        seg.len = 0;
        bool known = false;
        for (const Name &n : names)
            if (strlen(n.name) == nl && memcmp(n.name, nm, nl) == 0) {
                seg.kind = n.kind;
                known = true;
            }
        if (!known && nl > 11 && memcmp(nm, "attributes.", 11) == 0 && nl - 11 <= 64) {
            known = true;
            for (size_t k = 11; k < nl; k++)
                known = known && key_char(nm[k]);
            seg.kind = K_ATTRIBUTE;
            seg.off = static_cast<uint32_t>(ns + 11);
            seg.len = static_cast<uint32_t>(nl - 11);
        }
        if (!known && nl >= 11 && nl <= 12 && memcmp(nm, "score_url.", 10) == 0 && is_digit(nm[10]) &&
            (nl == 11 || (is_digit(nm[11]) && nm[10] != '0'))) {
            int score = nm[10] - '0';
            if (nl == 12)
                score = score * 10 + (nm[11] - '0');
            if (score <= 10) {
                known = true;
                seg.kind = K_SCORE_URL;
                seg.arg = static_cast<uint8_t>(score);
            }
        }
        if (!known) {
            r.problem = Problem::unknown;
            r.pos = b;
            set_name(&r, nm, nl);
            return r;
        }
        if (seg.kind == K_SCORE_LINKS && field == Field::subject) {
            r.problem = Problem::not_allowed;
            r.pos = b;
            set_name(&r, nm, nl);
            return r;
        }
        if (seg.kind == K_ANSWER_URL || seg.kind == K_UNSUBSCRIBE_URL || seg.kind == K_SCORE_LINKS ||
            seg.kind == K_SCORE_URL)
            t->uses_links = true;
        literal_until(b);
        t->segs[t->nsegs++] = seg;
        i = p + 2;
        lit = i;
    }
    literal_until(len);
    return r;
}

namespace {

// A value placed into field: escaped for HTML, kept on one line in a subject.
void put_value(Buf *out, Field field, const char *s, size_t n) {
    if (field == Field::text) {
        buf_append(out, s, n);
        return;
    }
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        const char *rep = nullptr;
        if (field == Field::html) {
            switch (c) {
                case '&': rep = "&amp;"; break;
                case '<': rep = "&lt;"; break;
                case '>': rep = "&gt;"; break;
                case '"': rep = "&quot;"; break;
                case '\'': rep = "&#39;"; break;
                default: break;
            }
        } else if (c < 0x20 || c == 0x7f) {
            rep = " ";
        }
        if (rep) {
            buf_append(out, s + run, i - run);
            put(out, rep);
            run = i + 1;
        }
    }
    buf_append(out, s + run, n - run);
}

void put_value(Buf *out, Field field, const char *s) { put_value(out, field, s, strlen(s)); }

void put_base(Buf *out, Field field, const Context &ctx) {
    size_t n = strlen(ctx.base_url);
    while (n > 0 && ctx.base_url[n - 1] == '/')
        n--;
    put_value(out, field, ctx.base_url, n);
    putc1(out, '/');
}

void put_score_url(Buf *out, Field field, const Context &ctx, int score) {
    put_base(out, field, ctx);
    put_value(out, field, ctx.token);
    putc1(out, '/');
    put_int(out, score);
}

}  // namespace

RenderStatus render(const Template &t, Field field, const Context &ctx, Buf *out) {
    if (t.uses_links && (ctx.base_url == nullptr || ctx.token == nullptr))
        return RenderStatus::no_base_url;
    const Alloc &a = *out->a;
    for (int i = 0; i < t.nsegs; i++) {
        const Segment &s = t.segs[i];
        switch (s.kind) {
            case K_LITERAL:
                buf_append(out, t.text + s.off, s.len);
                break;
            case K_OPEN_BRACES:
                put(out, "{{");
                break;
            case K_AMOUNT: {
                Buf tmp;
                buf_init(&tmp, a, 64);
                format_amount(ctx.amount, ctx.currency, ctx.locale, ctx.ascii_only, &tmp);
                put_value(out, field, tmp.data, tmp.len);
                break;
            }
            case K_CURRENCY:
                if (ctx.currency) {
                    char c[4] = {0, 0, 0, 0};
                    if (strlen(ctx.currency) == 3) {
                        for (int k = 0; k < 3; k++)
                            c[k] = upper(ctx.currency[k]);
                        put_value(out, field, c);
                    } else {
                        put_value(out, field, ctx.currency);
                    }
                }
                break;
            case K_PAID_AT:
            case K_PAID_DATE: {
                Buf tmp;
                buf_init(&tmp, a, 64);
                format_date(ctx.paid, ctx.locale, s.kind == K_PAID_AT, ctx.ascii_only, &tmp);
                put_value(out, field, tmp.data, tmp.len);
                break;
            }
            case K_SOURCE:
                if (ctx.source)
                    put_value(out, field, ctx.source);
                break;
            case K_ANSWER_URL:
                put_base(out, field, ctx);
                put_value(out, field, ctx.token);
                break;
            case K_UNSUBSCRIBE_URL:
                put_base(out, field, ctx);
                put(out, "u/");
                put_value(out, field, ctx.token);
                break;
            case K_SCORE_URL:
                put_score_url(out, field, ctx, s.arg);
                break;
            case K_SCORE_LINKS:
                if (field == Field::html) {
                    put(out, "<table role=\"presentation\" cellpadding=\"0\" cellspacing=\"0\" "
                             "style=\"border-collapse:collapse\"><tr>");
                    for (int k = 0; k <= 10; k++) {
                        put(out, "<td style=\"padding:2px\"><a href=\"");
                        put_score_url(out, field, ctx, k);
                        put(out, "\" style=\"display:inline-block;min-width:24px;padding:8px 4px;"
                                 "border:1px solid #b0b0b0;border-radius:4px;text-align:center;"
                                 "text-decoration:none;color:#222222;font-family:sans-serif\">");
                        put_int(out, k);
                        put(out, "</a></td>");
                    }
                    put(out, "</tr></table>");
                } else {
                    for (int k = 0; k <= 10; k++) {
                        if (k > 0)
                            putc1(out, '\n');
                        put_int(out, k);
                        put(out, ": ");
                        put_score_url(out, field, ctx, k);
                    }
                }
                break;
            case K_ATTRIBUTE: {
                size_t vlen = 0;
                const char *v = ctx.attribute ? ctx.attribute(ctx.attribute_arg, t.text + s.off, s.len, &vlen) : nullptr;
                if (v)
                    put_value(out, field, v, vlen);
                break;
            }
        }
    }
    return RenderStatus::ok;
}

}  // namespace render
}  // namespace nps
