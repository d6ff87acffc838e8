// The module's identity: the magic block PostgreSQL checks when it loads the library.
#include "pg_boundary.hpp"

extern "C" {
PG_MODULE_MAGIC;
}
