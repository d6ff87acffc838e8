// Capture: backend-local memos of the row path's lookup tables, each emptied by the relcache
// invalidation its table's triggers send (sql/parts/50_capture.sql).
//
// 1. customer_contact (customer -> last_survey_at), so that the throttle check of an already
// surveyed customer needs no index probe (measured: the probe was the second largest cost of a
// tracked single-row payment after the event insert).
//
// Why it is safe: the memo only ever answers "throttled"; a miss, or a memo value too old to
// throttle, falls back to the probe and, for a survey, to the race-free upsert of
// customer_contact. So a memo value lower than the table's is harmless. A value higher than the
// table's could wrongly throttle, and only three things lower one: DELETE (forget_customer,
// purge), TRUNCATE, and an UPDATE moving last_survey_at back or changing customer_id. Triggers on
// customer_contact send a relcache invalidation for those (sql/parts/50_capture.sql), and the
// relcache callback empties every backend's memo. Values are memoized only when read from rows
// of other, committed transactions, under a snapshot taken after the memo generation was noted:
// an invalidation processed after that point (a delete committed after the snapshot) discards
// the value instead of memoizing it. (PostgreSQL sends a transaction's invalidations just after
// its commit becomes visible: a payment landing in those microseconds after a forget_customer
// is throttled as if it had come just before it.)
//
// 2. "opt_out has no rows at all", so that the opt-out check needs no file-size call while
// nobody opted out. Only INSERT and UPDATE can make the table non-empty; their triggers
// invalidate. (A payment committing in the microseconds between an opt_out() commit and the
// delivery of its invalidation is treated as if it came just before the opt-out.)
#include "capture.hpp"

extern "C" {
#include "common/hashfn.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "access/table.h"
#include "storage/bufmgr.h"
#include "utils/rel.h"
}

namespace nps {
namespace capture {

namespace {

// Bounded: past this many customers the memo starts over (each entry ~64 bytes + the id).
constexpr long MEMO_MAX = 100000;

struct Entry {
    uint64 hash;  // hash key (dynahash compares it first)
    char *cust;   // the customer id, to rule out a hash collision
    int len;
    TimestampTz last;
};

HTAB *memo = NULL;
MemoryContext memo_cxt = NULL;
uint64 generation = 1;
Oid contact_relid = InvalidOid;
bool callback_registered = false;

Oid optout_relid = InvalidOid;
bool optout_known = false;  // optout_empty holds
bool optout_empty = false;
uint64 optout_generation = 1;

void reset() {
    if (memo_cxt)
        MemoryContextReset(memo_cxt);
    memo = NULL;
    generation++;
}

void relcache_callback(Datum, Oid relid) {
    if (relid == InvalidOid || relid == contact_relid)
        reset();
    if (relid == InvalidOid || relid == optout_relid) {
        optout_known = false;
        optout_generation++;
    }
}

void register_callback() {
    if (!callback_registered) {
        CacheRegisterRelcacheCallback(relcache_callback, (Datum)0);
        callback_registered = true;
    }
}

uint64 hash_of(const char *cust, int len) {
    return hash_bytes_extended(reinterpret_cast<const unsigned char *>(cust), len, 0x6e7073);
}

}  // namespace

void contact_memo_attach(Oid relid) {
    register_callback();
    if (relid != contact_relid) {
        reset();
        contact_relid = relid;
    }
}

uint64 contact_memo_generation() { return generation; }

bool contact_memo_get(const char *cust, int len, TimestampTz *last) {
    if (memo == NULL)
        return false;
    uint64 h = hash_of(cust, len);
    Entry *e = static_cast<Entry *>(hash_search(memo, &h, HASH_FIND, NULL));
    if (e == NULL || e->len != len || memcmp(e->cust, cust, len) != 0)
        return false;
    *last = e->last;
    return true;
}

void contact_memo_put(uint64 gen, const char *cust, int len, TimestampTz last) {
    if (gen != generation || !OidIsValid(contact_relid))
        return;  // an invalidation arrived since the snapshot: the value may be gone
    if (memo_cxt == NULL)
        memo_cxt = AllocSetContextCreate(TopMemoryContext, "nps_billing contact memo", ALLOCSET_DEFAULT_SIZES);
    if (memo != NULL && hash_get_num_entries(memo) >= MEMO_MAX) {
        MemoryContextReset(memo_cxt);
        memo = NULL;
    }
    if (memo == NULL) {
        HASHCTL ctl;
        ctl.keysize = sizeof(uint64);
        ctl.entrysize = sizeof(Entry);
        ctl.hcxt = memo_cxt;
        memo = hash_create("nps_billing contact memo", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
    }
    uint64 h = hash_of(cust, len);
    bool found;
    Entry *e = static_cast<Entry *>(hash_search(memo, &h, HASH_ENTER, &found));
    if (found && e->len == len && memcmp(e->cust, cust, len) == 0) {
        if (last > e->last)
            e->last = last;
        return;
    }
    if (found)
        pfree(e->cust);  // another customer with the same hash: the newer one wins
    e->cust = static_cast<char *>(MemoryContextAlloc(memo_cxt, len + 1));
    memcpy(e->cust, cust, len);
    e->cust[len] = '\0';
    e->len = len;
    e->last = last;
}

bool opt_out_is_empty(Oid relid) {
    register_callback();
    if (relid != optout_relid) {  // watched from here on: its invalidations bump the generation
        optout_relid = relid;
        optout_known = false;
    }
    if (optout_known)
        return optout_empty;
    uint64 gen = optout_generation;
    Relation rel = table_open(relid, AccessShareLock);  // may process pending invalidations
    bool empty = RelationGetNumberOfBlocks(rel) == 0;
    table_close(rel, NoLock);
    if (gen == optout_generation) {
        optout_known = true;
        optout_empty = empty;
    }
    return empty;
}

}  // namespace capture
}  // namespace nps
