// Survey messages inside PostgreSQL: template checks (CHECK constraints of message_template),
// rendering one survey's message (called set-based by _messages(), 63_render.sql), and the
// cleaning of the contact data capture stores (recipient, locale, time zone).
// The PG-free part is src/render_core.cpp; it holds no objects with destructors and allocates with
// palloc, so PostgreSQL may be called (and may raise) while a render is under way.
#include "contact.hpp"
#include "render_core.hpp"

extern "C" {
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
}

namespace {

using namespace nps::render;

void *pg_alloc(size_t n) { return palloc(n); }
void *pg_grow(void *p, size_t n) { return repalloc(p, n); }
const Alloc pg_allocator = {pg_alloc, pg_grow};

Field field_of(const char *name) {
    if (strcmp(name, "subject") == 0)
        return Field::subject;
    if (strcmp(name, "body_html") == 0)
        return Field::html;
    if (strcmp(name, "body_text") == 0)
        return Field::text;
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("template field must be subject, body_text or body_html, not \"%s\"", name)));
    pg_unreachable();
}

const char *const KNOWN = "Known placeholders: {{amount}}, {{currency}}, {{paid_at}}, {{paid_date}}, {{source}}, "
                          "{{answer_url}}, {{unsubscribe_url}}, {{score_links}}, {{score_url.0}} .. {{score_url.10}}, "
                          "{{attributes.<key>}}, {{open_braces}}.";

// Parses a template field; raises the template's problem.
Template parse_or_raise(const char *text, size_t len, const char *fieldname) {
    Template t;
    ParseResult r = parse(text, len, field_of(fieldname), pg_allocator, &t);
    switch (r.problem) {
        case Problem::none:
            break;
        case Problem::syntax:
            ereport(ERROR, (errcode(ERRCODE_SYNTAX_ERROR),
                            errmsg("message template %s: unterminated or empty placeholder at byte %zu", fieldname, r.pos + 1),
                            errdetail("A placeholder is {{name}}; write {{open_braces}} for a literal \"{{\"."),
                            errhint("%s", KNOWN)));
            break;
        case Problem::unknown:
            ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT),
                            errmsg("message template %s: unknown placeholder {{%s}}", fieldname, r.name),
                            errhint("%s", KNOWN)));
            break;
        case Problem::not_allowed:
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("message template %s: placeholder {{%s}} is not allowed here", fieldname, r.name),
                            errdetail("A subject is one line; {{score_links}} spans several.")));
            break;
        case Problem::line_break:
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("message template %s: a subject is one line (line break at byte %zu)", fieldname, r.pos + 1)));
            break;
        case Problem::too_long:
            ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                            errmsg("message template %s is longer than 1000000 bytes", fieldname)));
            break;
    }
    return t;
}

const char *attribute_lookup(void *arg, const char *key, size_t keylen, size_t *outlen) {
    Jsonb *jb = static_cast<Jsonb *>(arg);
    if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
        return NULL;
    JsonbValue v;
    if (getKeyJsonValueFromContainer(&jb->root, key, keylen, &v) == NULL)
        return NULL;
    const char *s = NULL;
    switch (v.type) {
        case jbvNull:
            return NULL;
        case jbvString:
            *outlen = v.val.string.len;
            return v.val.string.val;
        case jbvBool:
            s = v.val.boolean ? "true" : "false";
            break;
        case jbvNumeric:
            s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
            break;
        case jbvBinary:
            s = JsonbToCString(NULL, v.val.binary.data, v.val.binary.len);
            break;
        default:
            return NULL;
    }
    *outlen = strlen(s);
    return s;
}

// What _render keeps per call site: a query renders many surveys with the same few templates.
constexpr int kCached = 4;  // templates per field
struct CachedTemplate {
    char *text;  // a copy of the template's text (the segments point into it)
    size_t len;
    Template t;
};
struct CallCache {
    TupleDesc desc;
    CachedTemplate tmpl[3][kCached];
    int next[3];  // round-robin replacement
};

MemoryContext cache_cxt;
void *cache_alloc(size_t n) { return MemoryContextAlloc(cache_cxt, n); }
void *cache_grow(void *p, size_t n) { return repalloc(p, n); }
const Alloc cache_allocator = {cache_alloc, cache_grow};

const Template &cached_template(CallCache *cc, MemoryContext cxt, int field, text *src, const char *fieldname) {
    const char *data = VARDATA_ANY(src);
    size_t len = VARSIZE_ANY_EXHDR(src);
    for (int i = 0; i < kCached; i++) {
        CachedTemplate &c = cc->tmpl[field][i];
        if (c.text && c.len == len && memcmp(c.text, data, len) == 0)
            return c.t;
    }
    // parsed first (it may raise), then kept
    char *copy = static_cast<char *>(MemoryContextAlloc(cxt, len + 1));
    memcpy(copy, data, len);
    copy[len] = '\0';
    Template t;
    cache_cxt = cxt;
    ParseResult r = parse(copy, len, field_of(fieldname), cache_allocator, &t);
    if (r.problem != Problem::none)
        (void)parse_or_raise(copy, len, fieldname);
    CachedTemplate &c = cc->tmpl[field][cc->next[field]];
    cc->next[field] = (cc->next[field] + 1) % kCached;
    if (c.text) {
        pfree(c.text);
        if (c.t.segs)
            pfree(c.t.segs);
    }
    c.text = copy;
    c.len = len;
    c.t = t;
    return c.t;
}

char *arg_cstring(FunctionCallInfo fcinfo, int i) { return PG_ARGISNULL(i) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(i)); }

}  // namespace

namespace nps {
namespace contact {

char *clean_locale(const char *in) {
    if (in == NULL)
        return NULL;
    size_t len = strlen(in);
    if (len > 35)
        return NULL;
    char *out = static_cast<char *>(palloc(len + 1));
    if (!render::normalise_locale(in, len, out))
        return NULL;
    return out;
}

char *clean_time_zone(const char *in) {
    if (in == NULL || in[0] == '\0' || strlen(in) > 64)
        return NULL;
    // What SET TIME ZONE accepts as a name (the tz database, case-insensitively, and POSIX rules),
    // refused when it uses leap seconds, as PostgreSQL refuses it; kept under its canonical name.
    pg_tz *tz = pg_tzset(in);
    if (tz == NULL || !pg_tz_acceptable(tz))
        return NULL;
    return pstrdup(pg_get_timezone_name(tz));
}

char *clean_recipient(const char *in) {
    if (in == NULL)
        return NULL;
    size_t start, n;
    if (!render::clean_recipient(in, strlen(in), &start, &n))
        return NULL;
    return pnstrdup(in + start, n);
}

}  // namespace contact
}  // namespace nps

// _clean_locale(text) / _clean_time_zone(text) / _clean_recipient(text) RETURNS text: what capture
// stores for a billing row's value; NULL when the value is not usable.
NPS_FUNCTION(nps_clean_locale) {
    char *r = nps::contact::clean_locale(text_to_cstring(PG_GETARG_TEXT_PP(0)));
    if (r == NULL)
        PG_RETURN_NULL();
    PG_RETURN_TEXT_P(cstring_to_text(r));
}

NPS_FUNCTION(nps_clean_time_zone) {
    char *r = nps::contact::clean_time_zone(text_to_cstring(PG_GETARG_TEXT_PP(0)));
    if (r == NULL)
        PG_RETURN_NULL();
    PG_RETURN_TEXT_P(cstring_to_text(r));
}

NPS_FUNCTION(nps_clean_recipient) {
    char *r = nps::contact::clean_recipient(text_to_cstring(PG_GETARG_TEXT_PP(0)));
    if (r == NULL)
        PG_RETURN_NULL();
    PG_RETURN_TEXT_P(cstring_to_text(r));
}

// _template_ok(template text, field text) RETURNS boolean: true, or the template's problem raised
// (42601 syntax, 42704 unknown placeholder, 22023 placeholder not allowed in the field). NULL: true.
NPS_FUNCTION(nps_template_ok) {
    if (PG_ARGISNULL(0))
        PG_RETURN_BOOL(true);
    if (PG_ARGISNULL(1))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("template field must not be NULL")));
    text *t = PG_GETARG_TEXT_PP(0);
    char *field = text_to_cstring(PG_GETARG_TEXT_PP(1));
    (void)parse_or_raise(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), field);
    PG_RETURN_BOOL(true);
}

// _template_links(template text, field text) RETURNS boolean: whether the field's links need the
// source's answer_base_url (answer_url, unsubscribe_url, score_links, score_url.N). NULL: false.
// A template that does not parse raises as _template_ok does (saved templates always parse).
NPS_FUNCTION(nps_template_links) {
    if (PG_ARGISNULL(0))
        PG_RETURN_BOOL(false);
    if (PG_ARGISNULL(1))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("template field must not be NULL")));
    text *t = PG_GETARG_TEXT_PP(0);
    char *field = text_to_cstring(PG_GETARG_TEXT_PP(1));
    Template parsed = parse_or_raise(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), field);
    PG_RETURN_BOOL(parsed.uses_links);
}

// _render(subject, body_text, body_html, token, base_url, locale, time_zone, amount, currency,
//         paid_at, attributes, source, OUT subject, OUT body_text, OUT body_html): one message.
// A NULL template field renders as NULL. Links without a base URL: 22023 naming the source.
NPS_FUNCTION(nps_render) {
    static const char *const fields[3] = {"subject", "body_text", "body_html"};
    // Per call site: the result descriptor, blessed once, and the templates parsed last.
    CallCache *cc = static_cast<CallCache *>(fcinfo->flinfo->fn_extra);
    if (cc == NULL) {
        TupleDesc d;
        if (get_call_result_type(fcinfo, NULL, &d) != TYPEFUNC_COMPOSITE)
            ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("_render must return a record")));
        MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
        cc = static_cast<CallCache *>(palloc0(sizeof(CallCache)));
        cc->desc = BlessTupleDesc(CreateTupleDescCopy(d));
        MemoryContextSwitchTo(old);
        fcinfo->flinfo->fn_extra = cc;
    }
    TupleDesc desc = cc->desc;
    Context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.token = arg_cstring(fcinfo, 3);
    ctx.base_url = arg_cstring(fcinfo, 4);
    ctx.locale = arg_cstring(fcinfo, 5);
    char *zone = arg_cstring(fcinfo, 6);
    ctx.amount = PG_ARGISNULL(7) ? NULL : DatumGetCString(DirectFunctionCall1(numeric_out, PG_GETARG_DATUM(7)));
    ctx.currency = arg_cstring(fcinfo, 8);
    ctx.source = arg_cstring(fcinfo, 11);
    ctx.attribute = attribute_lookup;
    ctx.attribute_arg = PG_ARGISNULL(10) ? NULL : PG_GETARG_JSONB_P(10);
    ctx.ascii_only = GetDatabaseEncoding() != PG_UTF8;
    ctx.paid.valid = false;
    if (!PG_ARGISNULL(9) && !TIMESTAMP_NOT_FINITE(PG_GETARG_TIMESTAMPTZ(9))) {
        pg_tz *tz = zone ? pg_tzset(zone) : NULL;
        if (tz == NULL)
            tz = pg_tzset("UTC");
        pg_time_t t = timestamptz_to_time_t(PG_GETARG_TIMESTAMPTZ(9));
        struct pg_tm *tm = tz ? pg_localtime(&t, tz) : NULL;
        if (tm) {
            ctx.paid.valid = true;
            ctx.paid.year = tm->tm_year + 1900;
            ctx.paid.month = tm->tm_mon + 1;
            ctx.paid.day = tm->tm_mday;
            ctx.paid.hour = tm->tm_hour;
            ctx.paid.minute = tm->tm_min;
            ctx.paid.zone = tm->tm_zone ? pstrdup(tm->tm_zone) : NULL;
        }
    }
    Datum values[3];
    bool nulls[3];
    for (int f = 0; f < 3; f++) {
        nulls[f] = PG_ARGISNULL(f);
        values[f] = (Datum)0;
        if (nulls[f])
            continue;
        text *src = PG_GETARG_TEXT_PP(f);
        const Template &t = cached_template(cc, fcinfo->flinfo->fn_mcxt, f, src, fields[f]);
        Buf out;
        buf_init(&out, pg_allocator, 4 * VARSIZE_ANY_EXHDR(src) + 512);
        if (render(t, field_of(fields[f]), ctx, &out) == RenderStatus::no_base_url)
            ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                            errmsg("payment source \"%s\" has no answer_base_url, which its message template's links need",
                                   ctx.source ? ctx.source : "?"),
                            errhint("UPDATE nps_billing.payment_source SET answer_base_url = 'https://...' WHERE name = ...")));
        values[f] = PointerGetDatum(cstring_to_text_with_len(out.data, static_cast<int>(out.len)));
    }
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
