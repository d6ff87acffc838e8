// Capture: the set path (INSERT ... SELECT, COPY): the statement's rows evaluated into a
// tuplestore, then one data-modifying statement as the owner.
#include "capture_trigger.hpp"

extern "C" {
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "executor/tstoreReceiver.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"
}

namespace nps {
namespace capture {

namespace {

// The set statement over nps_eval (the evaluated rows of one statement). It needs nps_eval
// registered when it is prepared. Events already recorded are filtered out (NOT EXISTS) and the
// statement's own duplicates removed (DISTINCT ON), so the event insert needs no ON CONFLICT
// (measured: ~15% of P8); a concurrent transaction recording the same payment at the same moment
// makes it fail with 23505, and the statement is then redone row by row (ON CONFLICT DO NOTHING).
// Sorts use COLLATE "C": ids need a consistent order, not a linguistic one.
const char *SET_SQL =
    "WITH ev AS ("
    "  SELECT DISTINCT ON (e.payment_key COLLATE \"C\", e.kind COLLATE \"C\") e.* FROM nps_eval e"
    "  WHERE e.payment_key IS NOT NULL"
    "  ORDER BY e.payment_key COLLATE \"C\", e.kind COLLATE \"C\", e.occurred_at"
    "), fresh AS ("
    "  SELECT ev.*, CASE"
    "    WHEN NOT $2 THEN 'disabled'"
    "    WHEN NOT CASE ev.kind WHEN 'succeeded' THEN $3 ELSE $4 END THEN 'not_surveyed_kind'"
    "    WHEN ev.customer IS NULL THEN 'no_customer'"
    "    WHEN EXISTS (SELECT 1 FROM nps_billing.opt_out o WHERE o.customer_id = ev.customer) THEN 'opted_out'"
    "    WHEN COALESCE(ev.amount, 0) < $5 THEN 'below_min_amount'"
    "    WHEN nps_billing.sample_point(ev.customer, ev.payment_key) >= $6 THEN 'sampled_out'"
    "    WHEN EXISTS (SELECT 1 FROM nps_billing.customer_contact c"
    "                 WHERE c.customer_id = ev.customer AND c.last_survey_at >= now() - $7) THEN 'throttled'"
    "  END AS skip"
    "  FROM ev WHERE NOT EXISTS (SELECT 1 FROM nps_billing.payment_event pe"
    "                            WHERE pe.source_id = $1 AND pe.payment_key = ev.payment_key AND pe.kind = ev.kind)"
    "), cand AS ("
    "  SELECT DISTINCT ON (f.customer COLLATE \"C\") f.customer, f.payment_key, f.kind FROM fresh f"
    "  WHERE f.skip IS NULL ORDER BY f.customer COLLATE \"C\", f.occurred_at, f.payment_key COLLATE \"C\""
    "), granted AS ("
    "  INSERT INTO nps_billing.customer_contact AS cc (customer_id, last_survey_at)"
    "  SELECT cand.customer, now() FROM cand ORDER BY cand.customer COLLATE \"C\""
    "  ON CONFLICT (customer_id) DO UPDATE SET last_survey_at = excluded.last_survey_at"
    "  WHERE cc.last_survey_at < now() - $7"
    "  RETURNING cc.customer_id"
    "), ids AS ("
    "  SELECT cand.payment_key, cand.kind, nextval('nps_billing.survey_id_seq') AS sid"
    "  FROM cand JOIN granted g ON g.customer_id = cand.customer"
    "), evs AS ("
    "  INSERT INTO nps_billing.payment_event AS pe (source_id, payment_key, kind, customer_id, amount, currency,"
    "                                               occurred_at, attributes, survey_id, skip_reason)"
    "  SELECT $1, f.payment_key, f.kind, f.customer, f.amount, f.currency, f.occurred_at, f.attributes, i.sid,"
    "         CASE WHEN i.sid IS NULL THEN COALESCE(f.skip, 'throttled') END"
    "  FROM fresh f LEFT JOIN ids i ON i.payment_key = f.payment_key AND i.kind = f.kind"
    "  RETURNING pe.id, pe.survey_id, pe.customer_id"
    "), svs AS ("
    "  INSERT INTO nps_billing.survey (id, token, source_id, event_id, customer_id, channel, send_after, expires_at)"
    "  SELECT e.survey_id, nps_billing.new_token(), $1, e.id, e.customer_id, $8, now() + $9, now() + $9 + $10"
    "  FROM evs e WHERE e.survey_id IS NOT NULL"
    "  RETURNING 1"
    "), nullkeys AS ("
    "  INSERT INTO nps_billing.capture_error (source_id, error, sqlstate)"
    "  SELECT $1, 'payment_key expression returned NULL', '22004' FROM nps_eval e WHERE e.payment_key IS NULL"
    "  RETURNING 1"
    ") SELECT (SELECT count(*) FROM svs), (SELECT count(*) FROM nullkeys)";

// The same for a source with contact expressions: the values as capture keeps them (cleaned), a
// survey without the recipient its channel needs is skipped (no_recipient, when $11), and the
// surveys get recipient, locale and time zone.
const char *SET_SQL_CONTACT =
    "WITH ev AS ("
    "  SELECT DISTINCT ON (e.payment_key COLLATE \"C\", e.kind COLLATE \"C\") e.kind, e.customer, e.payment_key,"
    "         e.amount, e.currency, e.occurred_at, e.attributes, nps_billing._clean_recipient(e.recipient) AS recipient,"
    "         nps_billing._clean_locale(e.locale) AS locale, nps_billing._clean_time_zone(e.time_zone) AS time_zone"
    "  FROM nps_eval e"
    "  WHERE e.payment_key IS NOT NULL"
    "  ORDER BY e.payment_key COLLATE \"C\", e.kind COLLATE \"C\", e.occurred_at"
    "), fresh AS ("
    "  SELECT ev.*, CASE"
    "    WHEN NOT $2 THEN 'disabled'"
    "    WHEN NOT CASE ev.kind WHEN 'succeeded' THEN $3 ELSE $4 END THEN 'not_surveyed_kind'"
    "    WHEN ev.customer IS NULL THEN 'no_customer'"
    "    WHEN $11 AND ev.recipient IS NULL THEN 'no_recipient'"
    "    WHEN EXISTS (SELECT 1 FROM nps_billing.opt_out o WHERE o.customer_id = ev.customer) THEN 'opted_out'"
    "    WHEN COALESCE(ev.amount, 0) < $5 THEN 'below_min_amount'"
    "    WHEN nps_billing.sample_point(ev.customer, ev.payment_key) >= $6 THEN 'sampled_out'"
    "    WHEN EXISTS (SELECT 1 FROM nps_billing.customer_contact c"
    "                 WHERE c.customer_id = ev.customer AND c.last_survey_at >= now() - $7) THEN 'throttled'"
    "  END AS skip"
    "  FROM ev WHERE NOT EXISTS (SELECT 1 FROM nps_billing.payment_event pe"
    "                            WHERE pe.source_id = $1 AND pe.payment_key = ev.payment_key AND pe.kind = ev.kind)"
    "), cand AS ("
    "  SELECT DISTINCT ON (f.customer COLLATE \"C\") f.customer, f.payment_key, f.kind FROM fresh f"
    "  WHERE f.skip IS NULL ORDER BY f.customer COLLATE \"C\", f.occurred_at, f.payment_key COLLATE \"C\""
    "), granted AS ("
    "  INSERT INTO nps_billing.customer_contact AS cc (customer_id, last_survey_at)"
    "  SELECT cand.customer, now() FROM cand ORDER BY cand.customer COLLATE \"C\""
    "  ON CONFLICT (customer_id) DO UPDATE SET last_survey_at = excluded.last_survey_at"
    "  WHERE cc.last_survey_at < now() - $7"
    "  RETURNING cc.customer_id"
    "), ids AS ("
    "  SELECT cand.payment_key, cand.kind, nextval('nps_billing.survey_id_seq') AS sid"
    "  FROM cand JOIN granted g ON g.customer_id = cand.customer"
    "), evs AS ("
    "  INSERT INTO nps_billing.payment_event AS pe (source_id, payment_key, kind, customer_id, amount, currency,"
    "                                               occurred_at, attributes, survey_id, skip_reason)"
    "  SELECT $1, f.payment_key, f.kind, f.customer, f.amount, f.currency, f.occurred_at, f.attributes, i.sid,"
    "         CASE WHEN i.sid IS NULL THEN COALESCE(f.skip, 'throttled') END"
    "  FROM fresh f LEFT JOIN ids i ON i.payment_key = f.payment_key AND i.kind = f.kind"
    "  RETURNING pe.id, pe.survey_id, pe.customer_id, pe.payment_key, pe.kind"
    "), svs AS ("
    "  INSERT INTO nps_billing.survey (id, token, source_id, event_id, customer_id, channel, send_after, expires_at,"
    "                                 recipient, locale, time_zone)"
    "  SELECT e.survey_id, nps_billing.new_token(), $1, e.id, e.customer_id, $8, now() + $9, now() + $9 + $10,"
    "         f.recipient, f.locale, f.time_zone"
    "  FROM evs e JOIN fresh f ON f.payment_key = e.payment_key AND f.kind = e.kind WHERE e.survey_id IS NOT NULL"
    "  RETURNING 1"
    "), nullkeys AS ("
    "  INSERT INTO nps_billing.capture_error (source_id, error, sqlstate)"
    "  SELECT $1, 'payment_key expression returned NULL', '22004' FROM nps_eval e WHERE e.payment_key IS NULL"
    "  RETURNING 1"
    ") SELECT (SELECT count(*) FROM svs), (SELECT count(*) FROM nullkeys)";

TupleDesc eval_desc() {
    static TupleDesc desc = NULL;
    if (desc == NULL) {
        MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
        TupleDesc d = CreateTemplateTupleDesc(EVAL_NCOLS);
        TupleDescInitEntry(d, 1, "kind", TEXTOID, -1, 0);
        TupleDescInitEntry(d, 2, "customer", TEXTOID, -1, 0);
        TupleDescInitEntry(d, 3, "payment_key", TEXTOID, -1, 0);
        TupleDescInitEntry(d, 4, "amount", NUMERICOID, -1, 0);
        TupleDescInitEntry(d, 5, "currency", TEXTOID, -1, 0);
        TupleDescInitEntry(d, 6, "occurred_at", TIMESTAMPTZOID, -1, 0);
        TupleDescInitEntry(d, 7, "attributes", JSONBOID, -1, 0);
        TupleDescInitEntry(d, 8, "recipient", TEXTOID, -1, 0);
        TupleDescInitEntry(d, 9, "locale", TEXTOID, -1, 0);
        TupleDescInitEntry(d, 10, "time_zone", TEXTOID, -1, 0);
        MemoryContextSwitchTo(old);
        desc = d;
    }
    return desc;
}

}  // namespace

// The set path: evaluate every row of the statement as the writer into a tuplestore, then one
// data-modifying statement as the owner. Returns the number of NULL payment keys met.
int64 run_set_path(Source *s, Relation rel, Oid owner, Oid extnsp) {
    Tuplestorestate *evald = tuplestore_begin_heap(false, false, work_mem);
    as_table_owner(s->table_owner, [&] {
        if (s->set_plan == NULL) {
            SPIPlanPtr p = SPI_prepare(eval_sql(s->exprs, s->legacy_path ? RelationGetRelationName(rel) : ROW_ALIAS), 0, NULL);
            if (p == NULL)
                elog(ERROR, "nps_billing: could not prepare the set evaluation of source %d", s->id);
            SPI_keepplan(p);
            s->set_plan = p;
        }
        DestReceiver *dest = CreateDestReceiver(DestTuplestore);
        SetTuplestoreDestReceiverParams(dest, evald, CurrentMemoryContext, false, NULL, NULL);
        SPIExecuteOptions opt;
        memset(&opt, 0, sizeof opt);
        opt.read_only = false;
        opt.dest = dest;
        if (SPI_execute_plan_extended(s->set_plan, &opt) != SPI_OK_SELECT)
            elog(ERROR, "nps_billing: set evaluation failed");
        dest->rDestroy(dest);
    });
    EphemeralNamedRelation enr = static_cast<EphemeralNamedRelation>(palloc0(sizeof(EphemeralNamedRelationData)));
    enr->md.name = const_cast<char *>("nps_eval");
    enr->md.reliddesc = InvalidOid;
    enr->md.tupdesc = eval_desc();
    enr->md.enrtype = ENR_NAMED_TUPLESTORE;
    enr->md.enrtuples = tuplestore_tuple_count(evald);
    enr->reldata = evald;
    if (SPI_register_relation(enr) != SPI_OK_REL_REGISTER)
        elog(ERROR, "nps_billing: could not register the evaluated rows");
    int64 surveys = 0, nullkeys = 0;
    as_owner(owner, extnsp, [&] {
        Oid t[] = {INT4OID, BOOLOID, BOOLOID, BOOLOID, NUMERICOID, FLOAT8OID, INTERVALOID, TEXTOID, INTERVALOID,
                   INTERVALOID, BOOLOID};
        if (plan_set == NULL && !s->contact)
            plan_set = keep(SET_SQL, 10, t, CURSOR_OPT_CUSTOM_PLAN);
        if (plan_set_contact == NULL && s->contact)
            plan_set_contact = keep(SET_SQL_CONTACT, 11, t, CURSOR_OPT_CUSTOM_PLAN);
        Datum a[11] = {Int32GetDatum(s->id),         BoolGetDatum(s->enabled),      BoolGetDatum(s->on_succeeded),
                       BoolGetDatum(s->on_failed),   s->min_amount,                 Float8GetDatum(s->sample_rate),
                       s->throttle,                  CStringGetTextDatum(s->channel), s->delay,
                       s->expires_after,             BoolGetDatum(s->needs_recipient)};
        if (SPI_execute_plan(s->contact ? plan_set_contact : plan_set, a, NULL, false, 0) != SPI_OK_SELECT)
            elog(ERROR, "nps_billing: set capture failed");
        bool isnull;
        surveys = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
        nullkeys = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
        SPI_freetuptable(SPI_tuptable);
    });
    SPI_unregister_relation("nps_eval");
    tuplestore_end(evald);
    if (surveys > 0)
        Async_Notify("nps_billing_survey", s->name);
    return nullkeys;
}

}  // namespace capture
}  // namespace nps
