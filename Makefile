SHELL := /bin/bash
# crm: build the C core, run the simulator, run the specs.
LUA      ?= lua5.4
CC       ?= cc
BUILD    := build/$(LUA)
SO       := $(BUILD)/crm/core.so
SIM_PORT ?= 18080

ifeq ($(LUA),luajit)
LUA_INC  ?= $(shell pkg-config --cflags luajit 2>/dev/null || echo -I/usr/include/luajit-2.1)
else
LUA_INC  ?= $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
endif

CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -Wall -Wextra -Werror -fPIC $(LUA_INC)
# nodelete: libcurl keeps global state, so the module must never be unloaded at lua_close.
LDFLAGS  += -shared -Wl,-z,nodelete
LIBS     := -lcurl -luuid

export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/?.lua;;
export LUA_CPATH := $(CURDIR)/$(BUILD)/?.so;;
export CRM_SIM_PORT := $(SIM_PORT)

.PHONY: all deps test demo sim sim-stop clean lint

all: $(SO)

$(SO): src/core.c src/wire.c src/wire.h src/compat.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ src/core.c src/wire.c $(LIBS)

deps:
	@bash scripts/deps.sh

# The suite runs under every runtime users load crm into: Lua 5.4 and LuaJIT (OpenResty).
TEST_LUAS ?= lua5.4 luajit
test: deps
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
	luacheck --no-color lua spec examples --exclude-files "spec/sim/**"
	luacheck --no-color --std ngx_lua spec/sim/lua

clean:
	rm -rf build spec/sim/run

# ---- checks: sanitizers, valgrind, luacheck ----
ASAN_BUILD := build/asan
ASAN_SO    := $(ASAN_BUILD)/crm/core.so
SAN_FLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

$(ASAN_SO): src/core.c src/wire.c src/wire.h src/compat.h
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -Werror -fPIC $(LUA_INC) $(SAN_FLAGS) -shared -Wl,-z,nodelete -o $@ src/core.c src/wire.c $(LIBS)

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

# ---- fuzzing (clang + libFuzzer): FUZZ_TIME seconds over the committed seed corpus ----
FUZZ_TIME ?= 60
build/fuzz/fuzz_wire: src/fuzz/fuzz_wire.c src/wire.c src/wire.h
	@mkdir -p build/fuzz/corpus
	clang -std=c11 -g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined -o $@ src/fuzz/fuzz_wire.c src/wire.c

.PHONY: fuzz
fuzz: deps-tools build/fuzz/fuzz_wire
	build/fuzz/fuzz_wire -max_total_time=$(FUZZ_TIME) -print_final_stats=1 build/fuzz/corpus src/fuzz/corpus 2>&1 \
	  | grep -E "stat::number_of_executed_units|Done|ERROR|SUMMARY" ; test $${PIPESTATUS[0]} -eq 0

# ---- performance: baselines and crm in one run; writes bench/results.md ----
.PHONY: bench
bench: deps-tools
	@$(MAKE) -s --no-print-directory all
	@bash bench/run.sh

# ---- fault suite: CHAOS_OPS mixed operations, CHAOS_CONCURRENCY at a time, random faults ----
# A new seed every run unless CHAOS_SEED is given (printed first: CHAOS_SEED=... replays it); then
# a CHAOS_OPENRESTY_OPS slice of the same plan inside nginx light threads (0 skips it).
CHAOS_OPS ?= 2000
CHAOS_SEED ?=
CHAOS_CONCURRENCY ?= 16
CHAOS_RATE ?= 0.3
CHAOS_OPENRESTY_OPS ?= 300
.PHONY: chaos
chaos: deps
	@$(MAKE) -s --no-print-directory all
	@$(MAKE) -s --no-print-directory all LUA=luajit
	@bash scripts/sim.sh start $(SIM_PORT) >/dev/null && \
	  { CHAOS_SEED="$(CHAOS_SEED)" CHAOS_CONCURRENCY="$(CHAOS_CONCURRENCY)" CHAOS_RATE="$(CHAOS_RATE)" \
	    CHAOS_OPENRESTY_OPS="$(CHAOS_OPENRESTY_OPS)" $(LUA) scripts/chaos.lua $(CHAOS_OPS); rc=$$?; \
	    bash scripts/sim.sh stop $(SIM_PORT) >/dev/null; exit $$rc; }
