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
EXTRA_CLEAN = $(DATA_built) test/results test/output_iso test/regression.* test/log $(FUZZ_BIN) $(RENDER_FUZZ_BIN)

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

# libFuzzer target for the npsagg text and binary parsers (src/npsagg_core.cpp, no backend).
# `make fuzz` runs FUZZ_TIME seconds (default 300) from the seed corpus in test/fuzz/corpus;
# new inputs go to a scratch directory, not into the repository. make test runs 20 seconds.
FUZZ_CXX  ?= $(shell for c in clang++-19 clang++-16 clang++-14 clang++; do command -v $$c && break; done 2>/dev/null)
FUZZ_TIME ?= 300
FUZZ_BIN   = test/fuzz/npsagg_fuzz
ifneq ($(PGXS),)
FUZZ_PGLIBS = $(foreach l,pgcommon pgport,$(firstword $(wildcard $(shell $(PG_CONFIG) --pkglibdir)/lib$(l).a $(shell $(PG_CONFIG) --libdir)/lib$(l).a)))
endif
$(FUZZ_BIN): test/fuzz/npsagg_fuzz.cpp src/npsagg_core.cpp src/npsagg_core.hpp
	@test -n "$(FUZZ_CXX)" || { echo "make fuzz: clang++ not found (apt-get install clang libclang-rt-dev)"; exit 1; }
	$(FUZZ_CXX) -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	  -isystem $(PG_INCLUDE) -o $@ test/fuzz/npsagg_fuzz.cpp src/npsagg_core.cpp $(FUZZ_PGLIBS)
# The message template parser and renderer (src/render_core.cpp, no backend): `make fuzz-render`.
RENDER_FUZZ_BIN = test/fuzz/render_fuzz
$(RENDER_FUZZ_BIN): test/fuzz/render_fuzz.cpp src/render_core.cpp src/render_core.hpp
	@test -n "$(FUZZ_CXX)" || { echo "make fuzz: clang++ not found (apt-get install clang libclang-rt-dev)"; exit 1; }
	$(FUZZ_CXX) -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	  -o $@ test/fuzz/render_fuzz.cpp src/render_core.cpp
fuzz-build: $(FUZZ_BIN) $(RENDER_FUZZ_BIN)
fuzz: $(FUZZ_BIN)
	@work=$$(mktemp -d); ./$(FUZZ_BIN) -max_total_time=$(FUZZ_TIME) -max_len=4096 -print_final_stats=1 \
	  -artifact_prefix=$${FUZZ_ARTIFACTS:-./} $$work test/fuzz/corpus; rc=$$?; rm -rf $$work; exit $$rc
fuzz-render: $(RENDER_FUZZ_BIN)
	@work=$$(mktemp -d); ./$(RENDER_FUZZ_BIN) -max_total_time=$(FUZZ_TIME) -max_len=4096 -print_final_stats=1 \
	  -artifact_prefix=$${FUZZ_ARTIFACTS:-./} $$work test/fuzz/render_corpus; rc=$$?; rm -rf $$work; exit $$rc

.PHONY: deps test demo demo-shell bench prove fuzz fuzz-build fuzz-render test-matrix deb test-deb
deps:
	@sh scripts/install-deps.sh

# make test / demo / bench build for, install into and run on the distribution's PostgreSQL
# major (15 on Debian 12, 17 on Debian 13); PG_MAJOR=NN selects another (scripts/pg-major.sh).
BUILD_SELECTED = pgc=$$(sh scripts/pg-major.sh --pg-config) && $(MAKE) all PG_CONFIG=$$pgc && $(MAKE) install PG_CONFIG=$$pgc

# make test: install what is missing, build, install, run every suite in a throwaway cluster.
test: deps
	$(BUILD_SELECTED)
	pgc=$$(sh scripts/pg-major.sh --pg-config) && $(MAKE) fuzz-build PG_CONFIG=$$pgc
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

# make test-matrix: make test on PostgreSQL 15 (Debian bookworm), 17 (trixie) and 18 (sid) in throwaway chroots,
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

# The delivery agent (agent/): built by `make`, installed by `make install` when its build
# dependencies are there (agent/agent.mk).
include agent/agent.mk
