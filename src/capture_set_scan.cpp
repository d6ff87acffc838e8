// Capture: the set path's scan of the evaluated rows as they go into the tuplestore. When the
// statement's payment keys are distinct, it also picks each customer's candidate for a survey
// (the earliest row passing the row-level checks), so that the set statement needs no sort of
// the statement's rows (SET_SQL_FAST in src/capture_set.cpp). Plain data in its own memory
// context, bounded by maintenance_work_mem; past it, or at a repeated key, the scan gives up and
// the general statement runs.
#include "capture_trigger.hpp"

extern "C" {
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/numeric.h"
}

namespace nps {
namespace capture {

int c_order(const char *a, int alen, const char *b, int blen) {
    int r = memcmp(a, b, Min(alen, blen));
    return r != 0 ? r : (alen > blen) - (alen < blen);
}

bool kind_is_failed(const char *kind, int len) {
    return len > 0 && kind[0] == 'f';  // 'succeeded' / 'failed'
}

uint64 payment_hash(const char *key, int klen, bool failed) {
    uint64 h = hash_bytes_extended(reinterpret_cast<const unsigned char *>(key), klen, failed ? 2 : 1);
    return h != 0 ? h : 1;  // 0 marks an empty slot
}


namespace {

// A customer's candidate so far.
struct Cand {
    Cand *next;
    uint64 h;
    TimestampTz at;
    char *key;
    int klen, kcap;
    bool failed;
    int clen;
    char cust[1];
};

struct SetScan {
    DestReceiver pub;  // first: the executor sees a DestReceiver
    DestReceiver *inner;
    const Source *s;
    MemoryContext cxt;
    bool ok;  // still distinct keys, within the budget
    Size budget, used;
    uint64 *keys;  // open addressing set of the keys' 64-bit hashes (0: empty)
    uint64 kmask, nkeys;
    Cand **cb;  // customers, chained
    uint64 cmask, ncand;
    int64 nullkeys;
    Datum zero;
};

void give_up(SetScan *sc) {
    sc->ok = false;
    MemoryContextReset(sc->cxt);
    sc->keys = NULL;
    sc->cb = NULL;
}

bool take(SetScan *sc, Size n) {
    if (sc->used + n > sc->budget) {
        give_up(sc);
        return false;
    }
    sc->used += n;
    return true;
}

// The set of key hashes: false when h was there (or the budget ran out).
bool add_key(SetScan *sc, uint64 h) {
    if ((sc->nkeys + 1) * 2 > sc->kmask + 1) {
        uint64 cap = (sc->kmask + 1) * 2;
        if (!take(sc, cap * sizeof(uint64)))
            return false;
        uint64 *nk = static_cast<uint64 *>(MemoryContextAllocExtended(sc->cxt, cap * sizeof(uint64), MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO));
        for (uint64 i = 0; i <= sc->kmask; i++)
            if (sc->keys[i] != 0) {
                uint64 j = sc->keys[i] & (cap - 1);
                while (nk[j] != 0)
                    j = (j + 1) & (cap - 1);
                nk[j] = sc->keys[i];
            }
        pfree(sc->keys);
        sc->used -= (sc->kmask + 1) * sizeof(uint64);
        sc->keys = nk;
        sc->kmask = cap - 1;
    }
    uint64 j = h & sc->kmask;
    while (sc->keys[j] != 0) {
        if (sc->keys[j] == h)
            return false;  // the same hash: maybe the same key (the general statement decides)
        j = (j + 1) & sc->kmask;
    }
    sc->keys[j] = h;
    sc->nkeys++;
    return true;
}


// Whether (at, key, failed) comes before the candidate c: earliest, ties by key in "C" order
// (then 'failed' before 'succeeded').
bool earlier(TimestampTz at, const char *key, int klen, bool failed, const Cand *c) {
    if (at != c->at)
        return at < c->at;
    int r = c_order(key, klen, c->key, c->klen);
    if (r != 0)
        return r < 0;
    return failed && !c->failed;
}

void set_key(SetScan *sc, Cand *c, const char *key, int klen, bool failed) {
    if (klen > c->kcap) {
        if (!take(sc, klen))
            return;
        c->key = static_cast<char *>(MemoryContextAlloc(sc->cxt, klen));
        c->kcap = klen;
    }
    memcpy(c->key, key, klen);
    c->klen = klen;
    c->failed = failed;
}

void put_cand(SetScan *sc, const char *cust, int clen, const char *key, int klen, bool failed, TimestampTz at) {
    uint64 h = hash_bytes_extended(reinterpret_cast<const unsigned char *>(cust), clen, 0);
    for (Cand *c = sc->cb[h & sc->cmask]; c; c = c->next)
        if (c->h == h && c->clen == clen && memcmp(c->cust, cust, clen) == 0) {
            if (earlier(at, key, klen, failed, c)) {
                c->at = at;
                set_key(sc, c, key, klen, failed);
            }
            return;
        }
    if (sc->ncand + 1 > sc->cmask + 1) {
        uint64 cap = (sc->cmask + 1) * 2;
        if (!take(sc, cap * sizeof(Cand *)))
            return;
        Cand **nb = static_cast<Cand **>(MemoryContextAllocExtended(sc->cxt, cap * sizeof(Cand *), MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO));
        for (uint64 i = 0; i <= sc->cmask; i++)
            for (Cand *c = sc->cb[i], *nx; c; c = nx) {
                nx = c->next;
                c->next = nb[c->h & (cap - 1)];
                nb[c->h & (cap - 1)] = c;
            }
        pfree(sc->cb);
        sc->used -= (sc->cmask + 1) * sizeof(Cand *);
        sc->cb = nb;
        sc->cmask = cap - 1;
    }
    Size sz = offsetof(Cand, cust) + clen + 1;
    if (!take(sc, sz))
        return;
    Cand *c = static_cast<Cand *>(MemoryContextAlloc(sc->cxt, sz));
    memcpy(c->cust, cust, clen);
    c->cust[clen] = '\0';
    c->clen = clen;
    c->h = h;
    c->at = at;
    c->kcap = 0;
    c->key = NULL;
    set_key(sc, c, key, klen, failed);
    if (!sc->ok)
        return;
    c->next = sc->cb[h & sc->cmask];
    sc->cb[h & sc->cmask] = c;
    sc->ncand++;
}

// The columns of eval_sql: kind, customer, payment_key, amount, currency, occurred_at, ...
void scan_row(SetScan *sc, TupleTableSlot *slot) {
    slot_getsomeattrs(slot, 6);
    const Datum *v = slot->tts_values;
    const bool *isnull = slot->tts_isnull;
    if (isnull[2]) {
        sc->nullkeys++;  // a capture_error row, no event
        return;
    }
    if (isnull[0] || isnull[5]) {
        give_up(sc);  // not what eval_sql returns
        return;
    }
    struct varlena *kraw = reinterpret_cast<struct varlena *>(DatumGetPointer(v[2]));
    struct varlena *kt = pg_detoast_datum_packed(kraw);
    const char *key = VARDATA_ANY(kt);
    int klen = VARSIZE_ANY_EXHDR(kt);
    struct varlena *kd = pg_detoast_datum_packed(reinterpret_cast<struct varlena *>(DatumGetPointer(v[0])));
    bool failed = kind_is_failed(VARDATA_ANY(kd), VARSIZE_ANY_EXHDR(kd));
    if (!add_key(sc, payment_hash(key, klen, failed))) {
        if (sc->ok)
            give_up(sc);
    } else {
        // The row-level checks of the set statement's skip reasons (in its order, without the
        // customer-level ones: opt-out and throttle apply to all of a customer's rows).
        const Source *s = sc->s;
        bool eligible = s->enabled && (failed ? s->on_failed : s->on_succeeded) && !isnull[1] &&
                        !DatumGetBool(DirectFunctionCall2(numeric_lt, isnull[3] ? sc->zero : v[3], s->min_amount));
        if (eligible) {
            struct varlena *ct = pg_detoast_datum_packed(reinterpret_cast<struct varlena *>(DatumGetPointer(v[1])));
            const char *cust = VARDATA_ANY(ct);
            int clen = VARSIZE_ANY_EXHDR(ct);
            // sample_point is in [0, 1): a rate of 1 keeps every row
            if (s->sample_rate >= 1.0 || sample_point(cust, clen, key, klen) < s->sample_rate)
                put_cand(sc, cust, clen, key, klen, failed, DatumGetTimestampTz(v[5]));
            if (ct != reinterpret_cast<struct varlena *>(DatumGetPointer(v[1])))
                pfree(ct);
        }
    }
    if (kt != kraw)
        pfree(kt);
}

bool scan_receive(TupleTableSlot *slot, DestReceiver *self) {
    SetScan *sc = reinterpret_cast<SetScan *>(self);
    if (!sc->inner->receiveSlot(slot, sc->inner))
        return false;
    if (sc->ok)
        scan_row(sc, slot);
    return true;
}

void scan_startup(DestReceiver *self, int operation, TupleDesc typeinfo) {
    SetScan *sc = reinterpret_cast<SetScan *>(self);
    sc->inner->rStartup(sc->inner, operation, typeinfo);
}

void scan_shutdown(DestReceiver *self) {
    SetScan *sc = reinterpret_cast<SetScan *>(self);
    sc->inner->rShutdown(sc->inner);
}

void scan_destroy(DestReceiver *) {}

int cand_cmp(const void *a, const void *b) {
    const Cand *x = *static_cast<Cand *const *>(a);
    const Cand *y = *static_cast<Cand *const *>(b);
    return c_order(x->cust, x->clen, y->cust, y->clen);
}

}  // namespace

DestReceiver *set_scan_begin(const Source *s, DestReceiver *inner) {
    SetScan *sc = static_cast<SetScan *>(palloc0(sizeof(SetScan)));
    sc->pub.receiveSlot = scan_receive;
    sc->pub.rStartup = scan_startup;
    sc->pub.rShutdown = scan_shutdown;
    sc->pub.rDestroy = scan_destroy;
    sc->pub.mydest = DestTuplestore;
    sc->inner = inner;
    sc->s = s;
    sc->cxt = AllocSetContextCreate(CurrentMemoryContext, "nps_billing set scan", ALLOCSET_DEFAULT_SIZES);
    sc->ok = true;
    sc->budget = static_cast<Size>(maintenance_work_mem) * 1024;
    sc->kmask = 1023;
    sc->cmask = 255;
    sc->used = (sc->kmask + 1) * sizeof(uint64) + (sc->cmask + 1) * sizeof(Cand *);
    sc->keys = static_cast<uint64 *>(MemoryContextAllocZero(sc->cxt, (sc->kmask + 1) * sizeof(uint64)));
    sc->cb = static_cast<Cand **>(MemoryContextAllocZero(sc->cxt, (sc->cmask + 1) * sizeof(Cand *)));
    sc->zero = NumericGetDatum(int64_to_numeric(0));
    return &sc->pub;
}

Tuplestorestate *set_scan_candidates(DestReceiver *d, TupleDesc desc, int64 *n, int64 *nullkeys) {
    SetScan *sc = reinterpret_cast<SetScan *>(d);
    *n = 0;
    *nullkeys = sc->nullkeys;
    if (!sc->ok)
        return NULL;
    Cand **all = static_cast<Cand **>(MemoryContextAllocHuge(sc->cxt, (sc->ncand + 1) * sizeof(Cand *)));
    uint64 k = 0;
    for (uint64 i = 0; i <= sc->cmask; i++)
        for (Cand *c = sc->cb[i]; c; c = c->next)
            all[k++] = c;
    qsort(all, k, sizeof(Cand *), cand_cmp);  // customer order, as the throttle locks them
    Tuplestorestate *ts = tuplestore_begin_heap(false, false, work_mem);
    for (uint64 i = 0; i < k; i++) {
        Datum v[3] = {PointerGetDatum(cstring_to_text_with_len(all[i]->cust, all[i]->clen)),
                      PointerGetDatum(cstring_to_text_with_len(all[i]->key, all[i]->klen)),
                      PointerGetDatum(cstring_to_text(all[i]->failed ? "failed" : "succeeded"))};
        bool nulls[3] = {false, false, false};
        tuplestore_putvalues(ts, desc, v, nulls);
        pfree(DatumGetPointer(v[0]));
        pfree(DatumGetPointer(v[1]));
        pfree(DatumGetPointer(v[2]));
    }
    *n = static_cast<int64>(k);
    return ts;
}

void set_scan_end(DestReceiver *d) {
    SetScan *sc = reinterpret_cast<SetScan *>(d);
    MemoryContextDelete(sc->cxt);
    pfree(sc);
}

}  // namespace capture
}  // namespace nps
