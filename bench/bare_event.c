/*
 * The bare-event trigger of bench P7a (bench only: bench/p6_p8_capture.sh compiles it against the
 * server headers into a scratch directory and loads it with CREATE FUNCTION ... LANGUAGE C; it is
 * not part of the extension and make install never installs it).
 *
 * AFTER INSERT ... FOR EACH ROW on a payments table of the bench's shape (id, customer_id,
 * amount_cents, currency, status, created_at): one row per payment into bench_bare_event, a copy
 * of nps_billing.payment_event with the same columns and indexes, and nothing else (no policy, no
 * lookups, no survey). One saved SPI plan, prepared on first use.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/rel.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(bench_bare_event);

static SPIPlanPtr plan = NULL;

Datum bench_bare_event(PG_FUNCTION_ARGS) {
    static const char *const cols[5] = {"id", "customer_id", "amount_cents", "currency", "created_at"};
    TriggerData *td;
    TupleDesc desc;
    Datum v[5];
    char n[6] = "     ";
    int i;

    if (!CALLED_AS_TRIGGER(fcinfo))
        elog(ERROR, "bench_bare_event: not called as a trigger");
    td = (TriggerData *)fcinfo->context;
    if (!TRIGGER_FIRED_FOR_ROW(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event))
        elog(ERROR, "bench_bare_event: must be an AFTER INSERT ... FOR EACH ROW trigger");
    desc = RelationGetDescr(td->tg_relation);
    for (i = 0; i < 5; i++) {
        bool isnull;
        int att = SPI_fnumber(desc, cols[i]);
        if (att <= 0)
            elog(ERROR, "bench_bare_event: column %s missing", cols[i]);
        v[i] = heap_getattr(td->tg_trigtuple, att, desc, &isnull);
        n[i] = isnull ? 'n' : ' ';
    }
    if (SPI_connect() != SPI_OK_CONNECT)
        elog(ERROR, "bench_bare_event: SPI_connect failed");
    if (plan == NULL) {
        Oid types[5] = {INT8OID, TEXTOID, INT8OID, TEXTOID, TIMESTAMPTZOID};
        SPIPlanPtr p = SPI_prepare(
            "INSERT INTO public.bench_bare_event (source_id, payment_key, kind, customer_id, amount, currency, "
            "occurred_at, skip_reason) VALUES (1, $1::text, 'succeeded', $2, $3 / 100.0, $4, $5, 'throttled')",
            5, types);
        if (p == NULL)
            elog(ERROR, "bench_bare_event: SPI_prepare failed");
        SPI_keepplan(p);
        plan = p;
    }
    if (SPI_execute_plan(plan, v, n, false, 0) != SPI_OK_INSERT)
        elog(ERROR, "bench_bare_event: insert failed");
    SPI_finish();
    return PointerGetDatum(NULL);
}
