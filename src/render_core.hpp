// Survey messages without PostgreSQL: the placeholder syntax of message templates, their
// rendering over a survey's context, and the locale data it needs (amounts by currency, dates by
// language). Plain C++: no backend headers, no exceptions, no objects with destructors; memory
// comes from the caller's allocator (palloc in the extension, malloc in the fuzz target), so the
// extension may call PostgreSQL while a render is under way. src/render.cpp wraps it; the
// libFuzzer harness test/fuzz/render_fuzz.cpp compiles it alone.
//
// Syntax: text is copied as is, except {{ name }} (spaces inside the braces optional), where
// name is one of
//   amount  currency  paid_at  paid_date  source  answer_url  unsubscribe_url  score_links
//   score_url.<0..10>  attributes.<key>  open_braces
// <key>: letters, digits, '_' and '-' (1..64). "{{" not closing with "}}" on the same
// placeholder is a syntax error; an unknown name is refused; score_links is not allowed in a
// subject (it spans lines). open_braces renders a literal "{{".
#pragma once

#include <cstddef>
#include <cstdint>

namespace nps {
namespace render {

struct Alloc {
    void *(*alloc)(size_t);
    void *(*grow)(void *, size_t);  // realloc
};

enum class Field { subject, text, html };

enum Kind : uint8_t {
    K_LITERAL,
    K_AMOUNT,
    K_CURRENCY,
    K_PAID_AT,
    K_PAID_DATE,
    K_SOURCE,
    K_ANSWER_URL,
    K_UNSUBSCRIBE_URL,
    K_SCORE_LINKS,
    K_SCORE_URL,  // arg = the score
    K_ATTRIBUTE,  // key = text[off, off + len)
    K_OPEN_BRACES,
};

struct Segment {
    Kind kind;
    uint8_t arg;
    uint32_t off, len;  // K_LITERAL: the literal; K_ATTRIBUTE: the key
};

struct Template {
    const char *text;  // not owned
    Segment *segs;
    int nsegs;
    bool uses_links;  // answer_url, unsubscribe_url, score_links or score_url
};

enum class Problem { none, syntax, unknown, not_allowed, too_long, line_break };
struct ParseResult {
    Problem problem;
    size_t pos;      // byte offset of the offending "{{"
    char name[72];   // the offending placeholder's name (truncated), for the message
};

// Parses text (len bytes, no NUL needed) for field. On success t is filled (segments from a).
ParseResult parse(const char *text, size_t len, Field field, const Alloc &a, Template *t);

// The payment time in the recipient's zone, broken down by the caller.
struct LocalTime {
    bool valid;
    int year, month, day, hour, minute;  // month 1..12
    const char *zone;                    // abbreviation, e.g. "CEST" (NULL: none)
};

// Looks up attribute key (keylen bytes) of the survey's payment; returns its text (len in
// *outlen) or NULL when absent or JSON null.
typedef const char *(*AttributeLookup)(void *arg, const char *key, size_t keylen, size_t *outlen);

struct Context {
    const char *token;     // survey token (URL-safe)
    const char *base_url;  // answer_base_url, no trailing '/' needed (NULL: links unavailable)
    const char *amount;    // numeric as text (NULL: none)
    const char *currency;  // ISO 4217 code, any case (NULL: none)
    LocalTime paid;
    const char *locale;    // normalised locale ("pt-BR") or NULL (English)
    const char *source;    // payment source name
    bool ascii_only;       // the database encoding cannot hold the localised month names
    AttributeLookup attribute;
    void *attribute_arg;
};

// A growable output buffer in the caller's memory.
struct Buf {
    char *data;
    size_t len, cap;
    const Alloc *a;
};
void buf_init(Buf *b, const Alloc &a, size_t cap);
void buf_append(Buf *b, const char *s, size_t n);

enum class RenderStatus { ok, no_base_url };
// Renders t for field into out (appended). no_base_url: t uses links and ctx.base_url is NULL.
RenderStatus render(const Template &t, Field field, const Context &ctx, Buf *out);

// ---- locale data, also used by the capture (normalising the locale a billing row gives) ----

// ISO 4217 minor unit digits of a currency code (0 JPY, 3 KWD, 2 by default).
int minor_digits(const char *currency);
// "1234.5" rounded half away from zero to digits decimals and grouped for locale, with the
// currency code placed as the locale places it. Appends to out.
void format_amount(const char *amount, const char *currency, const char *locale, bool ascii_only, Buf *out);
// The date (and time) of lt as the locale writes it.
void format_date(const LocalTime &lt, const char *locale, bool with_time, bool ascii_only, Buf *out);

// A locale tag as billing systems write it ("pt_BR", "EN-us", "de") normalised to BCP 47 case
// ("pt-BR", "en-US", "de"): language 2-3 letters, then up to 3 subtags of 1-8 letters or
// digits separated by '-' or '_'. Writes into out (at least len + 1 bytes); false when the value
// is not such a tag.
bool normalise_locale(const char *in, size_t len, char *out);
// Recipient as captured: surrounding blanks removed; false when empty, longer than 320 bytes or
// holding a control character (a line break could inject a mail header). *start, *outlen: the
// trimmed part.
bool clean_recipient(const char *in, size_t len, size_t *start, size_t *outlen);

}  // namespace render
}  // namespace nps
