# nps_billing — PGXS build (like pgvector). `make test` and `make demo` install their own
# dependencies first, so this file must parse before pg_config exists.
EXTENSION  = nps_billing
# The version lives in the control file only.
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)
PG_CONFIG ?= pg_config

MODULE_big = nps_billing
OBJS       = $(patsubst %.cpp,%.o,$(sort $(wildcard src/*.cpp)))
NPS_HEADERS = $(wildcard src/*.hpp)

# The install script is assembled from one file per concern (sql/parts/NN_*.sql).
SQL_PARTS  = $(sort $(wildcard sql/parts/*.sql))
DATA_built = sql/$(EXTENSION)--$(EXTVERSION).sql
# Released install scripts (kept as shipped) and every upgrade step.
DATA       = $(filter-out $(DATA_built),$(wildcard sql/$(EXTENSION)--*.sql))

TESTS      = $(sort $(wildcard test/sql/*.sql))
REGRESS    = $(patsubst test/sql/%.sql,%,$(TESTS))
REGRESS_OPTS = --inputdir=test --outputdir=test --load-extension=$(EXTENSION)
ISOLATION  = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test --outputdir=test/output_iso --load-extension=$(EXTENSION)

PG_CPPFLAGS =
SHLIB_LINK  = -lstdc++
EXTRA_CLEAN = $(DATA_built) test/results test/output_iso test/regression.* test/log

PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
# PostgreSQL's headers are not ours to keep warning-free: include them as system headers.
PG_INCLUDE := $(shell $(PG_CONFIG) --includedir-server)
override CPPFLAGS := -isystem $(PG_INCLUDE) $(CPPFLAGS)
include $(PGXS)
override CXXFLAGS += -std=c++17 -Wall -Wextra -Werror
override BITCODE_CXXFLAGS += -std=c++17
else
all:
	@m=$$(sh scripts/pg-major.sh 2>/dev/null) || m="NN (NN: your PostgreSQL major)"; \
	echo "pg_config not found: install postgresql-server-dev-$$m, or run 'make test' / 'make demo', which install it"; exit 1
endif

$(DATA_built): $(SQL_PARTS)
	@mkdir -p sql
	cat $(SQL_PARTS) > $@

$(OBJS): $(NPS_HEADERS)

.PHONY: deps test demo demo-shell bench prove test-matrix deb test-deb
deps:
	@sh scripts/install-deps.sh

# make test / demo / bench build for, install into and run on the distribution's PostgreSQL
# major (15 on Debian 12, 17 on Debian 13); PG_MAJOR=NN selects another (scripts/pg-major.sh).
BUILD_SELECTED = pgc=$$(sh scripts/pg-major.sh --pg-config) && $(MAKE) all PG_CONFIG=$$pgc && $(MAKE) install PG_CONFIG=$$pgc

# make test: install what is missing, build, install, run every suite in a throwaway cluster.
test: deps
	$(BUILD_SELECTED)
	sh scripts/run-tests.sh

prove:
	pg_prove --ext .sql -r test/t

demo: deps
	$(BUILD_SELECTED)
	sh scripts/demo.sh

demo-shell: deps
	$(BUILD_SELECTED)
	sh scripts/demo.sh --shell

bench: deps
	$(BUILD_SELECTED)
	sh scripts/bench.sh

# make test-matrix: make test on PostgreSQL 17 (Debian trixie) and 18 (sid) in throwaway chroots,
# and their Debian packages installed in fresh ones (root; scripts/test-matrix.sh).
test-matrix:
	sh scripts/test-matrix.sh

# make deb: Debian packages postgresql-NN-nps-billing in build/deb (scripts/build-deb.sh).
deb:
	sh scripts/build-deb.sh

# make test-deb: make deb, then the package installed in a fresh chroot of this machine's release
# and smoke-tested (root; scripts/test-deb.sh).
test-deb:
	sh scripts/test-deb.sh
