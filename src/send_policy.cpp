// time_zone_ok(name): whether PostgreSQL knows a time zone of that name (IANA names such as
// 'Europe/Berlin', 'UTC', or a POSIX zone specification). Send windows convert times with
// AT TIME ZONE, which raises for an unknown name; a claim must never raise for one survey's
// bad value, so it asks here first (no error, no subtransaction) and falls back to the
// source's time zone. Holds no C++ object: pg_tzset() may ereport (out of memory) directly.
#include "pg_boundary.hpp"

extern "C" {
#include "pgtime.h"
#include "utils/builtins.h"
}

NPS_FUNCTION(nps_time_zone_ok) {
    text *t = PG_GETARG_TEXT_PP(0);
    int len = VARSIZE_ANY_EXHDR(t);
    if (len == 0 || len > TZ_STRLEN_MAX)
        PG_RETURN_BOOL(false);
    char name[TZ_STRLEN_MAX + 1];
    memcpy(name, VARDATA_ANY(t), len);
    name[len] = '\0';
    if (strlen(name) != static_cast<size_t>(len))  // an embedded NUL cannot be a zone name
        PG_RETURN_BOOL(false);
    PG_RETURN_BOOL(pg_tzset(name) != NULL);
}
