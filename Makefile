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
LDFLAGS  += -shared
LIBS     := -lcurl -luuid

export LUA_PATH  := $(CURDIR)/lua/?.lua;$(CURDIR)/lua/?/init.lua;$(CURDIR)/spec/?.lua;;
export LUA_CPATH := $(CURDIR)/$(BUILD)/?.so;;
export CRM_SIM_PORT := $(SIM_PORT)

.PHONY: all deps test demo sim sim-stop clean lint

all: $(SO)

$(SO): src/core.c src/compat.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ src/core.c $(LIBS)

deps:
	@bash scripts/deps.sh

test: deps
	@$(MAKE) -s --no-print-directory all
	@bash scripts/test.sh $(LUA)

demo: deps
	@$(MAKE) -s --no-print-directory all
	@bash scripts/demo.sh $(LUA)

sim:
	@bash scripts/sim.sh start $(SIM_PORT)

sim-stop:
	@bash scripts/sim.sh stop $(SIM_PORT)

lint:
	luacheck lua spec examples

clean:
	rm -rf build spec/sim/run
