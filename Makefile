SHELL := /bin/bash
# crm: build the C core, run the simulator, run the specs.
LUA      ?= lua5.4
CC       ?= cc
BUILD    := build/$(LUA)
SO       := $(BUILD)/crm/core.so
# The simulator's port: SIM_PORT=N on the command line, else $CRM_SIM_PORT (the README's variable,
# which scripts/sim.sh, scripts/test.sh and crm sim read too), else 18080.
SIM_PORT ?= $(or $(CRM_SIM_PORT),18080)

ifeq ($(LUA),luajit)
LUA_INC  ?= $(shell pkg-config --cflags luajit 2>/dev/null || echo -I/usr/include/luajit-2.1)
else
LUA_INC  ?= $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
endif

# lua/crm/version.lua is the one place the version is written (`return "MAJOR.MINOR.PATCH"`);
# the C core gets it as CRM_VERSION (the curl User-Agent), make dist and make version-check too.
VERSION  := $(shell sed -n 's/^return "\([0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*\)"$$/\1/p' lua/crm/version.lua)
ifeq ($(VERSION),)
$(error lua/crm/version.lua must hold a line `return "MAJOR.MINOR.PATCH"`)
endif

# CFLAGS and LDFLAGS are the caller's (luarocks passes its own CFLAGS); CORE_* are what every
# build of the C core gets, make's and the rock's alike (rockspec/*: build.type "make" runs
# `make all` and `make rock-install` here). WERROR= (empty, e.g. in the environment) drops -Werror.
CFLAGS   ?= -O2 -g
WERROR   ?= -Werror
CORE_CFLAGS  := -std=c11 -Wall -Wextra $(WERROR) -fPIC -DCRM_VERSION='"$(VERSION)"'
# nodelete: libcurl keeps global state, so the module must never be unloaded at lua_close.
CORE_LDFLAGS := -shared -Wl,-z,nodelete
# The rock's build adds the -I/-L of the libraries luarocks found (external_dependencies).
EXTRA_INC     ?=
EXTRA_LIBDIRS ?=
LIBS     := -lcurl -luuid

export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/?.lua;;
export LUA_CPATH := $(CURDIR)/$(BUILD)/?.so;;
export CRM_SIM_PORT := $(SIM_PORT)

.PHONY: all deps test demo sim sim-stop clean lint

all: $(SO)

# The C core: the transport and helpers (core.c), the operations (ops.c), answer decoding
# (jdec.c, fuzzed; json.c its Lua side), the bytes from the network (wire.c, fuzzed), the CLI's
# terminal and file checks (sys.c), the ngx transport's answer heads (http1.c, fuzzed).
CORE_SRC := src/core.c src/wire.c src/json.c src/jdec.c src/ops.c src/sys.c src/http1.c
CORE_HDR := src/wire.h src/compat.h src/buf.h src/json.h src/jdec.h src/ops.h src/sys.h src/http1.h

# The command that builds the core is kept beside it (core.cmd, rewritten only when it changes):
# a build into a directory that holds a core built for another Lua (LUA_INC) or with other flags
# compiles again. luarocks make builds every tree of a checkout in build/rock, 5.4 and 5.1 alike.
CORE_CMD = $(CC) $(CFLAGS) $(CORE_CFLAGS) $(LUA_INC) $(EXTRA_INC) $(LDFLAGS) $(CORE_LDFLAGS) $(EXTRA_LIBDIRS) $(LIBS)
.PHONY: FORCE
$(BUILD)/core.cmd: export CRM_CORE_CMD = $(CORE_CMD)
$(BUILD)/core.cmd: FORCE
	@mkdir -p $(dir $@)
	@printf '%s\n' "$$CRM_CORE_CMD" | cmp -s - $@ 2>/dev/null || printf '%s\n' "$$CRM_CORE_CMD" >$@

$(SO): $(CORE_SRC) $(CORE_HDR) lua/crm/version.lua $(BUILD)/core.cmd
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CORE_CFLAGS) $(LUA_INC) $(EXTRA_INC) $(LDFLAGS) $(CORE_LDFLAGS) -o $@ \
	  $(CORE_SRC) $(EXTRA_LIBDIRS) $(LIBS)

deps:
	@bash scripts/deps.sh

# The suite runs under every runtime users load crm into: Lua 5.4 and LuaJIT (OpenResty).
TEST_LUAS ?= lua5.4 luajit
test: deps version-check
	@for l in $(TEST_LUAS); do $(MAKE) -s --no-print-directory all LUA=$$l || exit 1; done
	@bash scripts/test-all.sh $(TEST_LUAS)

demo: deps
	@$(MAKE) -s --no-print-directory all
	@bash scripts/demo.sh $(LUA)

# The OpenResty sample plugin (examples/openresty/) in its own nginx, in front of the simulator.
.PHONY: demo-openresty
demo-openresty: deps
	@$(MAKE) -s --no-print-directory all LUA=luajit
	@bash scripts/demo-openresty.sh

sim:
	@bash scripts/sim.sh start $(SIM_PORT)

sim-stop:
	@bash scripts/sim.sh stop $(SIM_PORT)

lint: deps
	luacheck --no-color lua spec examples bin/crm --exclude-files "spec/sim/**"
	luacheck --no-color --std ngx_lua spec/sim/lua bench/nginx

clean:
	rm -rf build spec/sim/run docs/api

# The API reference from the sources' LDoc comments: docs/api/index.html; fails on any warning.
.PHONY: docs
docs: deps
	@bash scripts/docs.sh

# ---- checks: sanitizers, valgrind, luacheck ----
ASAN_BUILD := build/asan
ASAN_SO    := $(ASAN_BUILD)/crm/core.so
SAN_FLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

$(ASAN_SO): $(CORE_SRC) $(CORE_HDR) lua/crm/version.lua
	@mkdir -p $(dir $@)
	$(CC) $(CORE_CFLAGS) $(LUA_INC) $(SAN_FLAGS) $(CORE_LDFLAGS) -o $@ $(CORE_SRC) $(LIBS)

.PHONY: check check-asan check-valgrind deps-tools
deps-tools:
	@bash scripts/deps.sh tools

check: deps-tools lint check-asan check-valgrind

# The suite's OpenResty specs load the LuaJIT build into nginx, whatever LUA the checks run under.
.PHONY: core-luajit
core-luajit:
	@$(MAKE) -s --no-print-directory all LUA=luajit

check-asan: $(ASAN_SO) core-luajit
	@CRM_CPATH_DIR=$(ASAN_BUILD) CRM_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  bash scripts/test.sh $(LUA)

VALGRIND := valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
LEAK_REQUESTS ?= 10000
check-valgrind: all core-luajit
	@CRM_WRAP="$(VALGRIND) --quiet" bash scripts/test.sh $(LUA)
	@bash scripts/sim.sh start $(SIM_PORT) >/dev/null && \
	  { $(VALGRIND) $(LUA) scripts/leak_loop.lua $(LEAK_REQUESTS) 2>&1 | grep -E "leak loop|ERROR SUMMARY|definitely lost|in use at exit"; \
	    rc=$${PIPESTATUS[0]}; bash scripts/sim.sh stop $(SIM_PORT) >/dev/null; exit $$rc; }

# ---- fuzzing: libFuzzer (clang) for FUZZ_TIME seconds over the committed seed corpus, then the
# Lua-driven loop (scripts/fuzz_lua.lua: core.decode against its oracles, core.build, h:call and
# core.header_set fed hostile Lua values) for FUZZ_ITERS iterations of FUZZ_SEED under ASan and
# UBSan, the sanitizer runtime preloaded as in check-asan; then the command line's CSV reader
# (scripts/fuzz_csv.lua: RFC 4180 round trips, plain splits, hostile text). make fuzz-lua runs
# the two loops alone.
FUZZ_TIME  ?= 60
FUZZ_ITERS ?= 20000
FUZZ_SEED  ?= 1
FUZZ_SRC   := src/fuzz/fuzz_wire.c src/wire.c src/fuzz/jsonplan.c
build/fuzz/fuzz_wire: $(FUZZ_SRC) src/wire.h src/fuzz/jsonplan.h
	@mkdir -p build/fuzz/corpus
	clang -std=c11 -g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -o $@ $(FUZZ_SRC)

# The JSON decoder (src/jdec.c) against lua-cjson and the old plan (src/fuzz/jsonplan.c), in a
# Lua 5.4 state that loads Debian's cjson module: fuzz_jdec.c says what is compared.
JDEC_FUZZ_SRC := src/fuzz/fuzz_jdec.c src/jdec.c src/fuzz/jsonplan.c
LUA54_INC = $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
LUA54_LIB = $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)
build/fuzz/fuzz_jdec: $(JDEC_FUZZ_SRC) src/jdec.h src/compat.h src/fuzz/jsonplan.h
	@mkdir -p build/fuzz/corpus_jdec
	clang -std=c11 -g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined $(LUA54_INC) \
	  -o $@ $(JDEC_FUZZ_SRC) $(LUA54_LIB) -lm
# The ngx transport's answer head (src/http1.c) against a reader written like its Lua one.
build/fuzz/fuzz_http1: src/fuzz/fuzz_http1.c src/http1.c src/http1.h
	@mkdir -p build/fuzz/corpus_http1
	clang -std=c11 -g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -o $@ \
	  src/fuzz/fuzz_http1.c src/http1.c
FUZZ_GREP := "stat::number_of_executed_units|Done|ERROR|SUMMARY|invariant|differ|Test unit written"

.PHONY: fuzz fuzz-lua
fuzz: deps-tools build/fuzz/fuzz_wire build/fuzz/fuzz_jdec build/fuzz/fuzz_http1
	build/fuzz/fuzz_wire -max_total_time=$(FUZZ_TIME) -print_final_stats=1 -artifact_prefix=build/fuzz/ \
	  build/fuzz/corpus src/fuzz/corpus 2>&1 \
	  | grep -E $(FUZZ_GREP) ; test $${PIPESTATUS[0]} -eq 0
	build/fuzz/fuzz_jdec -max_total_time=$(FUZZ_TIME) -print_final_stats=1 -artifact_prefix=build/fuzz/ \
	  build/fuzz/corpus_jdec src/fuzz/corpus_jdec 2>&1 \
	  | grep -E $(FUZZ_GREP) ; test $${PIPESTATUS[0]} -eq 0
	build/fuzz/fuzz_http1 -max_total_time=$(FUZZ_TIME) -print_final_stats=1 -artifact_prefix=build/fuzz/ \
	  build/fuzz/corpus_http1 src/fuzz/corpus_http1 2>&1 \
	  | grep -E $(FUZZ_GREP) ; test $${PIPESTATUS[0]} -eq 0
	@$(MAKE) -s --no-print-directory fuzz-lua

fuzz-lua: $(ASAN_SO)
	@LUA_CPATH="$(CURDIR)/$(ASAN_BUILD)/?.so;;" \
	  LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  FUZZ_ITERS=$(FUZZ_ITERS) FUZZ_SEED=$(FUZZ_SEED) $(LUA) scripts/fuzz_lua.lua
	@FUZZ_ITERS=$(FUZZ_ITERS) FUZZ_SEED=$(FUZZ_SEED) $(LUA) scripts/fuzz_csv.lua

# ---- performance: baselines and crm in one run; writes bench/results.md ----
.PHONY: bench
bench: deps-tools
	@$(MAKE) -s --no-print-directory all
	@$(MAKE) -s --no-print-directory all LUA=luajit
	@bash bench/run.sh
	@bash bench/restaurants.sh
	@bash bench/db.sh

# The many-restaurant backfill alone (also part of bench): writes bench/restaurants.md.
.PHONY: bench-restaurants
bench-restaurants:
	@$(MAKE) -s --no-print-directory all
	@bash bench/restaurants.sh

# ---- fault suite: CHAOS_OPS mixed operations, CHAOS_CONCURRENCY at a time, random faults ----
# A new seed every run unless CHAOS_SEED is given (printed first: CHAOS_SEED=... replays it); then
# a CHAOS_OPENRESTY_OPS slice of the same plan inside nginx light threads (0 skips it).
CHAOS_OPS ?= 2000
CHAOS_SEED ?=
CHAOS_CONCURRENCY ?= 16
CHAOS_RATE ?= 0.3
CHAOS_OPENRESTY_OPS ?= 300
# CHAOS_MODE=faults|crash|all (all): crash is the crash chaos (spec/chaos_crash.lua), a keyed
# import killed with SIGKILL CHAOS_CRASH_KILLS times and rerun, over CHAOS_CRASH_SEEDS seeds.
CHAOS_MODE ?= all
CHAOS_CRASH_KILLS ?= 8
CHAOS_CRASH_SEEDS ?= 1
.PHONY: chaos
chaos: deps
	@$(MAKE) -s --no-print-directory all
	@$(MAKE) -s --no-print-directory all LUA=luajit
	@bash scripts/sim.sh start $(SIM_PORT) >/dev/null && \
	  { CHAOS_SEED="$(CHAOS_SEED)" CHAOS_CONCURRENCY="$(CHAOS_CONCURRENCY)" CHAOS_RATE="$(CHAOS_RATE)" \
	    CHAOS_OPENRESTY_OPS="$(CHAOS_OPENRESTY_OPS)" CHAOS_MODE="$(CHAOS_MODE)" \
	    CHAOS_CRASH_KILLS="$(CHAOS_CRASH_KILLS)" CHAOS_CRASH_SEEDS="$(CHAOS_CRASH_SEEDS)" \
	    $(LUA) scripts/chaos.lua $(CHAOS_OPS); rc=$$?; \
	    bash scripts/sim.sh stop $(SIM_PORT) >/dev/null; exit $$rc; }

# ---- packaging: rockspec/crm-$(VERSION)-1.rockspec, a source rock, offline installs ----
# make version-check   lua/crm/version.lua, the rockspec's name and version field, the C core
# make dist            build/dist/crm-$(VERSION)-1.src.rock: the rockspec and crm-$(VERSION).tar.gz
#                      (the checkout's git-known files), for `luarocks build --deps-mode=none`
# make rock-test       dist, then installs into clean Lua 5.4 and 5.1 (LuaJIT) trees and runs
#                      each against the simulator on ROCK_SIM_PORT
ROCKSPEC      := rockspec/crm-$(VERSION)-1.rockspec
DIST_DIR      := build/dist
SRC_ROCK      := $(DIST_DIR)/crm-$(VERSION)-1.src.rock
ROCK_SIM_PORT ?= 18787
.PHONY: version-check dist rock-test rock-install
version-check:
	@bash scripts/dist.sh check

dist:
	@bash scripts/dist.sh pack $(DIST_DIR)

# (it packs build/dist itself, after installing luarocks, zip and unzip when they are missing)
rock-test:
	@bash scripts/rock-test.sh $(ROCK_SIM_PORT)

# Run by luarocks after `make all` (rockspec build.install_target): every Lua module under lua/
# and the C core, into the rock's directories, and the simulator (nginx.conf.in and its Lua) as
# crm/sim/ beside the modules, where `crm sim start` finds it (bin/crm itself is the rockspec's
# build.install.bin).
LUA_MODULES := $(shell cd lua && find . -name '*.lua' | sed 's,^\./,,' | LC_ALL=C sort)
SIM_FILES   := $(shell cd spec/sim && { echo nginx.conf.in; find lua -name '*.lua'; } | LC_ALL=C sort)
# It installs the core `make all` built and never builds one itself: luarocks runs it without the
# build's variables (CFLAGS, LUA_INC), so a build here would be for the default Lua.
rock-install:
	@test -n "$(INST_LUADIR)" && test -n "$(INST_LIBDIR)" || \
	  { echo "rock-install: INST_LUADIR and INST_LIBDIR must be set (luarocks sets them)" >&2; exit 1; }
	@test -f $(SO) || { echo "rock-install: $(SO) is missing: make all BUILD=$(BUILD) first (luarocks does)" >&2; exit 1; }
	install -d "$(INST_LIBDIR)/crm"
	install -m 755 $(SO) "$(INST_LIBDIR)/crm/core.so"
	@cd lua && for f in $(LUA_MODULES); do install -D -m 644 "$$f" "$(INST_LUADIR)/$$f" || exit 1; done
	@cd spec/sim && for f in $(SIM_FILES); do install -D -m 644 "$$f" "$(INST_LUADIR)/crm/sim/$$f" || exit 1; done
