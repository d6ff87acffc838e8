# nps-billing-agent: the delivery daemon (agent/src, C++17), built and installed with the extension.
# Included from the top Makefile, outside the PGXS block: it needs no pg_config, only Debian's
# libpq-dev, libcurl4-openssl-dev, libcpp-httplib-dev, nlohmann-json3-dev, libssl-dev and
# pkg-config (scripts/install-deps.sh installs them). When one of them is missing, `make` builds
# the extension and says so instead of failing, so the classic `make && sudo make install` path
# keeps working without them; NPS_AGENT=no skips the agent, NPS_AGENT=yes makes a missing
# dependency an error. `make install` puts the binary into $(AGENT_BINDIR) (default
# /usr/local/bin) and the example configuration and systemd unit into $(AGENT_SHAREDIR).
AGENT_BIN      = agent/nps-billing-agent
AGENT_SRCS     = $(sort $(wildcard agent/src/*.cpp))
AGENT_OBJS     = $(patsubst %.cpp,%.o,$(AGENT_SRCS))
AGENT_HDRS     = $(wildcard agent/src/*.hpp)
AGENT_PKGS     = libpq libcurl cpp-httplib nlohmann_json libcrypto
AGENT_PREFIX  ?= /usr/local
AGENT_BINDIR  ?= $(AGENT_PREFIX)/bin
AGENT_SHAREDIR ?= $(AGENT_PREFIX)/share/nps-billing-agent
AGENT_CXX     ?= g++
NPS_AGENT     ?= auto
AGENT_HAVE_DEPS := $(shell pkg-config --exists $(AGENT_PKGS) 2>/dev/null && echo yes)
# -Werror with the g++ the code is checked with (12, Debian 12); newer compilers add warnings
# (and change their heuristics) that must not turn a build on Debian 13 / sid into a failure.
AGENT_WERROR  ?= $(shell $(AGENT_CXX) -dumpversion 2>/dev/null | grep -qx '12' && echo -Werror)
AGENT_CXXFLAGS = -std=c++17 -O2 -g -Wall -Wextra $(AGENT_WERROR) -pthread $(shell pkg-config --cflags $(AGENT_PKGS) 2>/dev/null)
AGENT_LDLIBS   = $(shell pkg-config --libs $(AGENT_PKGS) 2>/dev/null) -pthread
EXTRA_CLEAN   += $(AGENT_BIN) $(AGENT_OBJS)

ifeq ($(NPS_AGENT),no)
AGENT_BUILD =
else ifeq ($(AGENT_HAVE_DEPS)$(NPS_AGENT),auto)
AGENT_BUILD =
# (not said when the goal installs them first: make test / demo / bench build again afterwards)
ifeq ($(filter deps test demo demo-shell bench,$(MAKECMDGOALS)),)
$(info nps-billing-agent not built: missing build dependencies (sh scripts/install-deps.sh, or apt-get install libpq-dev libcurl4-openssl-dev libcpp-httplib-dev nlohmann-json3-dev libssl-dev pkg-config))
endif
else
AGENT_BUILD = $(AGENT_BIN)
endif

.PHONY: agent agent-install
agent: $(AGENT_BIN)
all: $(AGENT_BUILD)

$(AGENT_OBJS): agent/src/%.o: agent/src/%.cpp $(AGENT_HDRS)
	$(AGENT_CXX) $(AGENT_CXXFLAGS) -c -o $@ $<

$(AGENT_BIN): $(AGENT_OBJS)
	$(AGENT_CXX) -o $@ $(AGENT_OBJS) $(AGENT_LDLIBS)

agent-install: $(AGENT_BIN)
	install -d $(DESTDIR)$(AGENT_BINDIR) $(DESTDIR)$(AGENT_SHAREDIR)
	install -m 755 $(AGENT_BIN) $(DESTDIR)$(AGENT_BINDIR)/nps-billing-agent
	install -m 644 agent/nps-billing-agent.conf.example $(DESTDIR)$(AGENT_SHAREDIR)/
	sed -e 's|/usr/local/bin|$(AGENT_BINDIR)|g' -e 's|/usr/local/share/nps-billing-agent|$(AGENT_SHAREDIR)|g' \
	  agent/nps-billing-agent.service > $(DESTDIR)$(AGENT_SHAREDIR)/nps-billing-agent.service

ifneq ($(AGENT_BUILD),)
install: agent-install
endif
