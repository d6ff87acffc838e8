// Capture: the set path's ids. The surveys granted in a set statement get their survey and event
// ids in customer order (src/capture_set.cpp); the event insert then reads them per row through
// _capture_set_id(payment_key, kind, which) instead of joining the statement's rows with the
// granted ones: a tuplestore has no statistics, and a join costed without them can sort the
// statement's rows or loop over them for each granted survey.
#include "capture_trigger.hpp"

extern "C" {
#include "commands/sequence.h"
#include "utils/builtins.h"
}

namespace nps {
namespace capture {

struct SetIds {
    struct Entry {
        uint64 h;  // 0: empty slot
        const char *key;
        int klen;
        bool failed;
        int64 sid, eid;
        bool recorded;  // recorded before: no event
    };
    Entry *slots;
    uint64 mask, n;
    Oid event_seq;
    SetIds *outer;  // the enclosing set statement's ids while this one runs (a nested capture)
};

namespace {

SetIds *current = NULL;

const SetIds::Entry *find(const SetIds *t, const char *key, int klen, bool failed) {
    uint64 h = payment_hash(key, klen, failed);
    for (uint64 j = h & t->mask; t->slots[j].h != 0; j = (j + 1) & t->mask) {
        const SetIds::Entry &e = t->slots[j];
        if (e.h == h && e.klen == klen && e.failed == failed && memcmp(e.key, key, klen) == 0)
            return &e;
    }
    return NULL;
}

}  // namespace

SetIds *set_ids_create(uint64 n, Oid event_seq) {
    SetIds *t = static_cast<SetIds *>(palloc0(sizeof(SetIds)));
    uint64 cap = 16;
    while (cap < n * 2)
        cap *= 2;
    t->slots = static_cast<SetIds::Entry *>(palloc_extended(cap * sizeof(SetIds::Entry), MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO));
    t->mask = cap - 1;
    t->event_seq = event_seq;
    return t;
}

// key is copied; at most n entries (set_ids_create), each (key, kind) once.
void set_ids_add(SetIds *t, const char *key, int klen, bool failed, int64 sid, int64 eid, bool recorded) {
    if ((t->n + 1) * 2 > t->mask + 1 || find(t, key, klen, failed) != NULL)
        elog(ERROR, "nps_billing: set capture ids out of order");
    uint64 h = payment_hash(key, klen, failed);
    uint64 j = h & t->mask;
    while (t->slots[j].h != 0)
        j = (j + 1) & t->mask;
    char *k = static_cast<char *>(palloc(klen + 1));
    memcpy(k, key, klen);
    t->slots[j] = SetIds::Entry{h, k, klen, failed, sid, eid, recorded};
    t->n++;
}

bool set_ids_recorded(const SetIds *t, const char *key, int klen, bool failed) {
    const SetIds::Entry *e = find(t, key, klen, failed);
    return e != NULL && e->recorded;
}

void set_ids_push(SetIds *t) {
    t->outer = current;
    current = t;
}

void set_ids_pop(SetIds *t) {
    current = t->outer;
}

}  // namespace capture
}  // namespace nps

// _capture_set_id(payment_key text, kind text, which int) RETURNS bigint: for the event insert of
// a set statement (only while it runs), which = 0: 1 when the payment is recorded already (else
// NULL), 1: the event's id (drawn with its survey's id, or the next of the sequence), 2: its
// survey's id (NULL: no survey).
NPS_LEAF_FUNCTION(nps_capture_set_id) {
    using namespace nps::capture;
    if (current == NULL)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("_capture_set_id() is called only by the capture trigger")));
    text *key = PG_GETARG_TEXT_PP(0);
    text *kind = PG_GETARG_TEXT_PP(1);
    bool failed = kind_is_failed(VARDATA_ANY(kind), VARSIZE_ANY_EXHDR(kind));
    const SetIds::Entry *e = find(current, VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), failed);
    int which = PG_GETARG_INT32(2);
    if (which == 0) {
        if (e == NULL || !e->recorded)
            PG_RETURN_NULL();
        PG_RETURN_INT64(1);
    }
    if (e != NULL && e->recorded)
        e = NULL;
    if (which == 1)
        PG_RETURN_INT64(e ? e->eid : nextval_internal(current->event_seq, true));
    if (e == NULL)
        PG_RETURN_NULL();
    PG_RETURN_INT64(e->sid);
}
