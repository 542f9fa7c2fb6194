# moonspace build. `make` builds bin/ (release); `make asan` builds build/asan/bin
# (ASan+UBSan); `make test` installs missing packages, builds both and runs the suite;
# `make run` installs, builds and serves ./apps on http://127.0.0.1:7860.
#
# Layout rules (so that adding a file never needs a Makefile edit):
#   common/*.c, sandbox/*.c, runtime/*.c, host/*.c   library objects, except *_main.c
#   host/main.c                      -> bin/moonspace
#   sandbox/appworker_main.c         -> bin/moonspace-appworker
#   runtime/modelworker_main.c       -> bin/moonspace-modelworker
#   tests/**/test_*.c                -> bin/tests/test_*   (run by tests/run)
#   tests/**/tool_*.c, bench/**/*_bench.c -> bin/tests/tool_*, bin/bench/*  (helpers, not run)

SHELL := /bin/bash
V ?= release
ifeq ($(V),asan)
  OUT := build/asan
  BIN := build/asan/bin
  OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined -DMS_ASAN=1
  LDOPT := -fsanitize=address,undefined
  ROPT := $(OPT)
else
  OUT := build/release
  BIN := bin
  OPT := -O2 -g
  LDOPT :=
  # the runtime's kernels: vectorised without -ffast-math; AVX2/FMA paths use
  # target attributes and are picked at run time
  ROPT := -O3 -g
endif

PKGS := libuv lua5.4 sqlite3 libcurl jansson yaml-0.1 libcmark-gfm libutf8proc libpcre2-8 libseccomp zlib libcrypto
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lcmark-gfm-extensions -lm -lpthread
LLHTTP_DIR := /usr/share/llhttp
LLHTTP_INC := /usr/share/include/llhttp

CC ?= cc
# `make VERBOSE=1` prints the full commands
ifeq ($(VERBOSE),1)
  Q :=
  say = @true
else
  Q := @
  say = @printf '  %-6s %s\n' $(1) $(2)
endif
# the directory the sources are in: the binaries look for web/ and config/ beside bin/,
# then here (so build/asan/bin finds them too)
SRC_DIR := $(CURDIR)
WARN := -Wall -Wextra -Werror -Wno-unused-parameter -Wshadow=local -Wvla
CFLAGS_COMMON := -std=gnu11 -D_GNU_SOURCE -DMS_SOURCE_DIR='"$(SRC_DIR)"' -I. -Icommon -I$(LLHTTP_INC) $(PKG_CFLAGS) $(EXTRA_CFLAGS)

COMMON_SRC := $(wildcard common/*.c)
SANDBOX_SRC := $(filter-out %_main.c,$(wildcard sandbox/*.c))
RUNTIME_SRC := $(filter-out %_main.c,$(wildcard runtime/*.c))
HOST_SRC := $(filter-out host/main.c %_main.c,$(wildcard host/*.c))
LLHTTP_SRC := $(wildcard $(LLHTTP_DIR)/*.c)

obj = $(patsubst %.c,$(OUT)/obj/%.o,$(1))
LLHTTP_OBJ := $(patsubst $(LLHTTP_DIR)/%.c,$(OUT)/obj/llhttp/%.o,$(LLHTTP_SRC))
LIB_OBJ := $(call obj,$(COMMON_SRC) $(SANDBOX_SRC) $(RUNTIME_SRC) $(HOST_SRC)) $(LLHTTP_OBJ)

TEST_SRC := $(shell find tests -name 'test_*.c' -not -path '*/node_modules/*' 2>/dev/null)
TOOL_SRC := $(shell find tests -name 'tool_*.c' -not -path '*/node_modules/*' 2>/dev/null)
BENCH_SRC := $(shell find bench -name '*_bench.c' 2>/dev/null)
TEST_BIN := $(patsubst %.c,$(BIN)/tests/%,$(notdir $(TEST_SRC)))
TOOL_BIN := $(patsubst %.c,$(BIN)/tests/%,$(notdir $(TOOL_SRC)))
BENCH_BIN := $(patsubst %_bench.c,$(BIN)/bench/%,$(notdir $(BENCH_SRC)))

PROGS := $(BIN)/moonspace $(BIN)/moonspace-appworker $(BIN)/moonspace-modelworker

.PHONY: all asan test run deps clean tests-build
all: $(PROGS) $(TEST_BIN) $(TOOL_BIN) $(BENCH_BIN)

asan:
	@$(MAKE) --no-print-directory V=asan all

deps:
	@./scripts/install-deps

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory V=asan all
	@tests/run --all

run: deps
	@$(MAKE) --no-print-directory all
	$(BIN)/moonspace serve --host 127.0.0.1 --port 7860 --apps apps

clean:
	rm -rf build bin

$(OUT)/obj/runtime/%.o: runtime/%.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)
	$(Q)$(CC) $(CFLAGS_COMMON) $(WARN) $(ROPT) -MMD -MP -c $< -o $@

$(OUT)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)
	$(Q)$(CC) $(CFLAGS_COMMON) $(WARN) $(OPT) -MMD -MP -c $< -o $@

# llhttp's generated C: compiled in, warnings off (not our source)
$(OUT)/obj/llhttp/%.o: $(LLHTTP_DIR)/%.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)
	$(Q)$(CC) -std=gnu11 -I$(LLHTTP_INC) $(OPT) -w -c $< -o $@

$(OUT)/libmoonspace.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BIN)/moonspace: $(call obj,host/main.c) $(OUT)/libmoonspace.a
	@mkdir -p $(dir $@)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDOPT) -o $@ $^ $(PKG_LIBS)

# The app worker needs only lua, jansson, libseccomp and utf8proc. In release it is linked
# statically (static-pie): no shared objects to load and relocate at every worker start
# (about 2 ms of CPU per cold start on the 2-core VM, bench/sandbox). ASan stays dynamic.
WORKER_LIBS := $(shell pkg-config --libs lua5.4 jansson libseccomp libutf8proc 2>/dev/null) -lm
ifeq ($(V),asan)
  WORKER_LD := $(PKG_LIBS)
else
  WORKER_LD := -static-pie $(WORKER_LIBS)
endif

$(BIN)/moonspace-appworker: $(call obj,sandbox/appworker_main.c) $(OUT)/libmoonspace.a
	@mkdir -p $(dir $@)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDOPT) -o $@ $^ $(WORKER_LD)

$(BIN)/moonspace-modelworker: $(call obj,runtime/modelworker_main.c) $(OUT)/libmoonspace.a
	@mkdir -p $(dir $@)
	$(call say,LD,$@)
	$(Q)$(CC) $(LDOPT) -o $@ $^ $(PKG_LIBS)

define test_rule
$(BIN)/tests/$(notdir $(basename $(1))): $(call obj,$(1)) $(OUT)/libmoonspace.a
	@mkdir -p $$(dir $$@)
	$$(call say,LD,$$@)
	$$(Q)$$(CC) $$(LDOPT) -o $$@ $$^ $$(PKG_LIBS)
endef
$(foreach s,$(TEST_SRC) $(TOOL_SRC),$(eval $(call test_rule,$(s))))

define bench_rule
$(BIN)/bench/$(patsubst %_bench,%,$(notdir $(basename $(1)))): $(call obj,$(1)) $(OUT)/libmoonspace.a
	@mkdir -p $$(dir $$@)
	$$(call say,LD,$$@)
	$$(Q)$$(CC) $$(LDOPT) -o $$@ $$^ $$(PKG_LIBS)
endef
$(foreach s,$(BENCH_SRC),$(eval $(call bench_rule,$(s))))

-include $(shell find build -name '*.d' 2>/dev/null)
