# shelf: one non-recursive Makefile for every library, daemon, tool and test.
#
#   make              build everything into $(O) (default: build/)
#   make test         ASan+UBSan build, run every unit and integration test
#   make bench        optimised build, run the benchmarks (BENCH lines)
#   make fuzz         libFuzzer harnesses (clang)
#   make deps         install missing Debian packages
#   make install      PREFIX=/usr/local DESTDIR=
#   make run          deps + build + a local 1U on the sim board: 24 nodes over
#                     3 chassis, default slice with 2 copies (shelf-cluster demo)
#   make image        the sim board's update image of this tree:
#                     $(O)/image/shelf-sim-$(VERSION).img  [VERSION=x.y.z]
#                     [RELEASE_KEY=path/NAME.key, NAME.cert beside it]
#                     [NODE_BIN=file: the payload's bin/shelf-node]
#
# Knobs: O=dir  SANITIZE=address,undefined  DEVELOPER=1 (-Werror)  V=1

# Cross-building: CROSS=<triplet>- (e.g. CROSS=aarch64-linux-gnu-) uses that
# toolchain, the multiarch -dev libraries of that triplet, and its own O.
CROSS    ?=
ifneq ($(CROSS),)
TRIPLET  := $(patsubst %-,%,$(CROSS))
DEB_ARCH := $(patsubst aarch64,arm64,$(firstword $(subst -, ,$(TRIPLET))))
O        ?= build/$(DEB_ARCH)
ifeq ($(origin CC),default)
CC       := $(CROSS)gcc
endif
ifeq ($(origin AR),default)
AR       := $(CROSS)ar
endif
ifneq ($(shell command -v $(CROSS)pkg-config 2>/dev/null),)
PKG_CONFIG ?= $(CROSS)pkg-config
else
PKG_CONFIG ?= PKG_CONFIG_LIBDIR=/usr/lib/$(TRIPLET)/pkgconfig:/usr/share/pkgconfig pkg-config
endif
endif
O        ?= build
# the tree's version (MAJOR.MINOR.PATCH): compiled into overlay/ovl_fleet.c
# only, and the version of the image `make image` builds
VERSION  ?= 0.1.0
PREFIX   ?= /usr/local
DESTDIR  ?=
CC       ?= cc
AR       ?= ar
OPT      ?= -O2 -g
PKG_CONFIG ?= pkg-config

PKGS     := libzmq msgpack libnl-3.0 libnl-route-3.0 liburing libsodium
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell $(PKG_CONFIG) --libs cmocka 2>/dev/null)

WARN     := -Wall -Wextra -Wmissing-prototypes -Wstrict-prototypes -Wvla \
            -Wshadow -Wno-unused-parameter
CFLAGS   ?= $(OPT)
# No -I here: each layer gets its own include paths (see "layers" below).
ALL_CFLAGS := -std=gnu11 $(WARN) -D_GNU_SOURCE -pthread \
              -DSHELF_BOARD_DIR='"$(PREFIX)/share/shelf/boards"' \
              $(PKG_CFLAGS) $(CFLAGS) -MMD -MP
ALL_LDFLAGS := -pthread $(LDFLAGS)
LIBS     := $(PKG_LIBS) -lm

ifdef DEVELOPER
ALL_CFLAGS += -Werror
endif
ifdef SANITIZE
ALL_CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ALL_LDFLAGS += -fsanitize=$(SANITIZE)
endif

ifeq ($(V),1)
Q :=
say :=
else
Q := @
say = @printf '  %-6s %s\n' $(1) $(2);
endif

# ---- libraries -------------------------------------------------------------
# overlay/: everything every process speaks (libshelf-overlay.a)
OVL_SRC  := $(wildcard overlay/*.c)
OVL_OBJ  := $(OVL_SRC:%.c=$(O)/%.o)
OVL_LIB  := $(O)/libshelf-overlay.a

# firmware/<module>/: the node's modules, one archive (libshelf-node.a)
NODE_SRC := $(filter-out firmware/main.c firmware/boot/boot.c,$(wildcard firmware/*/*.c))
NODE_OBJ := $(NODE_SRC:%.c=$(O)/%.o)
NODE_LIB := $(O)/libshelf-node.a

# broker/: the broker's modules (libshelf-broker.a), main.c is the daemon
BRK_SRC  := $(filter-out broker/main.c,$(wildcard broker/*.c))
BRK_OBJ  := $(BRK_SRC:%.c=$(O)/%.o)
BRK_LIB  := $(O)/libshelf-broker.a

# tools/lib/: the client library (libshelf.a, libshelf.so)
CLI_SRC  := $(wildcard tools/lib/*.c)
CLI_OBJ  := $(CLI_SRC:%.c=$(O)/%.o)
CLI_PIC  := $(CLI_SRC:%.c=$(O)/pic/%.o) $(OVL_SRC:%.c=$(O)/pic/%.o)
CLI_LIB  := $(O)/libshelf.a
CLI_SO   := $(O)/libshelf.so

LIBS_ALL := $(CLI_LIB) $(BRK_LIB) $(NODE_LIB) $(OVL_LIB)

# ---- programs --------------------------------------------------------------
PROGS :=
ifneq ($(wildcard firmware/main.c),)
PROGS += $(O)/shelf-node
endif
ifneq ($(wildcard firmware/boot/boot.c),)
PROGS += $(O)/shelf-boot
endif
ifneq ($(wildcard broker/main.c),)
PROGS += $(O)/shelf-broker
endif
ifneq ($(wildcard tools/shelf/*.c),)
PROGS += $(O)/shelf
endif
ifneq ($(wildcard tools/bench/*.c),)
PROGS += $(O)/shelf-bench
endif
# helper programs used by tests and benchmarks: tests/prog/<name>.c
TPROG_SRC := $(wildcard tests/prog/*.c)
TPROGS    := $(TPROG_SRC:tests/prog/%.c=$(O)/tests/prog/%)

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNITS    := $(UNIT_SRC:tests/unit/%.c=$(O)/tests/unit/%)
UNIT_SUPPORT := $(filter-out $(UNIT_SRC),$(wildcard tests/unit/*.c))
UNIT_SUPPORT_OBJ := $(UNIT_SUPPORT:%.c=$(O)/%.o)

# fuzz harnesses: built with a corpus-replay main for `make test`,
# and with libFuzzer for `make fuzz`.
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_REPLAY := $(FUZZ_SRC:tests/fuzz/%.c=$(O)/tests/fuzz/%-replay)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(O)/fuzz/%)

.PHONY: all test-bins test check bench fuzz deps install clean run image
.SECONDARY:
all: $(LIBS_ALL) $(CLI_SO) $(PROGS) $(TPROGS)
# every test binary, built but not run; a cross build builds them by default
test-bins: all $(UNITS) $(FUZZ_REPLAY)
ifneq ($(CROSS),)
all: $(UNITS) $(FUZZ_REPLAY)
endif

# ---- layers ----------------------------------------------------------------
# Each layer compiles with only its own include paths and links only the
# archives below it:
#   overlay/         -Ioverlay                     (nothing above it)
#   firmware/        -Ifirmware -Ioverlay          node + overlay archives
#   broker/          -Ibroker -Ioverlay            broker + overlay archives
#   tools/lib, tools/shelf  -Itools -Ioverlay      libshelf + overlay archives
# and after each compile the header list (-MMD) is checked, so that a
# relative path ("../../broker/broker.h") cannot reach another layer either.
#
# Named exceptions, which get every include path and every archive:
#   tools/bench/     shelf-bench drives the store, the data plane and the
#                    broker core in-process to measure them;
#   tests/           unit tests, test programs and fuzz harnesses test the
#                    modules from inside.
INC_overlay     := -Ioverlay
INC_firmware    := -Ifirmware -Ioverlay
INC_broker      := -Ibroker -Ioverlay
INC_tools       := -Itools -Ioverlay
INC_tools/bench := -Itools -Ifirmware -Ibroker -Ioverlay
INC_tests       := -I. -Itools -Ifirmware -Ibroker -Ioverlay
# the folders whose headers a layer may use (none listed: not checked)
ALLOW_overlay   := overlay
ALLOW_firmware  := firmware overlay
ALLOW_broker    := broker overlay
ALLOW_tools     := tools overlay
ALLOW_tools/bench :=

# $(call layer,src.c): the key above for a source file (longest match)
layer = $(if $(filter tools/bench/%,$1),tools/bench,$(firstword $(subst /, ,$1)))
src_inc = $(INC_$(call layer,$1))
# Fails the compile of $1 (src) when its dependency file $2 names a header
# outside the folders its layer may use. Absolute paths are system headers.
check_layer = $(if $(ALLOW_$(call layer,$1)),\
	bad=$$(sed -e 's/\\$$//' -e 's/^[^:]*://' $2 | tr ' ' '\n' | \
		grep -v -e '^/' -e '^$$' -e ':$$' | sort -u | \
		xargs -r realpath -m --relative-to=. | \
		grep -v $(foreach d,$(ALLOW_$(call layer,$1)),-e '^$d/')); \
	if [ -n "$$bad" ]; then \
		echo "$1: layer $(call layer,$1) may use only $(ALLOW_$(call layer,$1)) and not" $$bad >&2; \
		rm -f $(2:.d=.o) $2; exit 1; fi)

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(ALL_CFLAGS) $(call src_inc,$<) -c -o $@ $<
	$(Q)$(call check_layer,$<,$(@:.o=.d))

$(O)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(call say,CC,$<)$(CC) $(ALL_CFLAGS) $(call src_inc,$<) -fPIC -fvisibility=hidden -c -o $@ $<
	$(Q)$(call check_layer,$<,$(@:.o=.d))

# VERSION goes into ovl_fleet.c alone; the stamp holds the last value built,
# so that changing VERSION rebuilds just that file (and relinks)
VERSION_STAMP := $(O)/version.stamp
$(shell mkdir -p $(O) && [ "$$(cat $(VERSION_STAMP) 2>/dev/null)" = '$(VERSION)' ] || \
	printf '%s\n' '$(VERSION)' >$(VERSION_STAMP))
$(O)/overlay/ovl_fleet.o $(O)/pic/overlay/ovl_fleet.o: $(VERSION_STAMP)
$(O)/overlay/ovl_fleet.o $(O)/pic/overlay/ovl_fleet.o: ALL_CFLAGS += -DSHELF_VERSION='"$(VERSION)"'

$(OVL_LIB): $(OVL_OBJ)
$(NODE_LIB): $(NODE_OBJ)
$(BRK_LIB): $(BRK_OBJ)
$(CLI_LIB): $(CLI_OBJ)
$(OVL_LIB) $(NODE_LIB) $(BRK_LIB) $(CLI_LIB):
	@mkdir -p $(dir $@)
	$(call say,AR,$@)rm -f $@ && $(AR) rcs $@ $^

$(CLI_SO): $(CLI_PIC)
	$(call say,LD,$@)$(CC) -shared -o $@ $^ $(ALL_LDFLAGS) $(LIBS)

$(O)/shelf-node: $(O)/firmware/main.o $(NODE_LIB) $(OVL_LIB)
	$(call say,LD,$@)$(CC) -o $@ $^ $(ALL_LDFLAGS) $(LIBS)
# the boot chooser: tiny beside every node, so it links none of ZeroMQ,
# msgpack, libsodium or io_uring (the overlay's file helpers and libc); it
# seeds slot a with the build's VERSION, the same as ovl_fleet_build_version()
$(O)/firmware/boot/boot.o: $(VERSION_STAMP)
$(O)/firmware/boot/boot.o: ALL_CFLAGS += -DSHELF_VERSION='"$(VERSION)"'
$(O)/shelf-boot: $(O)/firmware/boot/boot.o $(O)/firmware/boot/bootstate.o $(OVL_LIB)
	$(call say,LD,$@)$(CC) -o $@ $^ $(ALL_LDFLAGS)
$(O)/shelf-broker: $(O)/broker/main.o $(BRK_LIB) $(OVL_LIB)
	$(call say,LD,$@)$(CC) -o $@ $^ $(ALL_LDFLAGS) $(LIBS)
$(O)/shelf: $(patsubst %.c,$(O)/%.o,$(wildcard tools/shelf/*.c)) $(CLI_LIB) $(OVL_LIB)
	$(call say,LD,$@)$(CC) -o $@ $^ $(ALL_LDFLAGS) $(LIBS)
# exception (see "layers"): the bench links every archive
$(O)/shelf-bench: $(patsubst %.c,$(O)/%.o,$(wildcard tools/bench/*.c)) $(LIBS_ALL)
	$(call say,LD,$@)$(CC) -o $@ $^ $(ALL_LDFLAGS) $(LIBS)
# exception (see "layers"): tests link every archive
$(O)/tests/prog/%: $(O)/tests/prog/%.o $(UNIT_SUPPORT_OBJ) $(LIBS_ALL)
	$(call say,LD,$@)$(CC) -o $@ $^ $(ALL_LDFLAGS) $(LIBS)

$(O)/tests/unit/%: $(O)/tests/unit/%.o $(UNIT_SUPPORT_OBJ) $(LIBS_ALL)
	$(call say,LD,$@)$(CC) -o $@ $^ $(ALL_LDFLAGS) $(LIBS) $(CMOCKA_LIBS)

$(O)/tests/fuzz/%-replay: $(O)/tests/fuzz/%.o $(O)/tests/fuzz/replay_main.o $(LIBS_ALL)
	$(call say,LD,$@)$(CC) -o $@ $^ $(ALL_LDFLAGS) $(LIBS)

# ---- tests -----------------------------------------------------------------
# `make test` rebuilds everything with ASan+UBSan in its own tree and runs the
# whole suite through tests/run, which also runs the DEVELOPER=1 build
# ($(O)/developer), the arm64 cross build ($(O)/arm64) and the arm64 unit
# tests under qemu-user; the last line is `N passed, N failed, N skipped`.
# It builds with one job per core unless make was given -j.
TEST_O ?= $(O)/san
TEST_J = $(if $(filter -j%,$(MAKEFLAGS)),,-j$(shell nproc 2>/dev/null || echo 2))
test:
	$(Q)$(MAKE) --no-print-directory $(TEST_J) O=$(TEST_O) SANITIZE=address,undefined BUILDS_O=$(O) check

check: all $(UNITS) $(FUZZ_REPLAY)
	$(Q)O=$(O) BUILDS_O=$(or $(BUILDS_O),$(O)) tests/run

bench: all
	$(Q)$(O)/shelf-bench all --dir $(O)/bench

fuzz:
	$(Q)$(MAKE) --no-print-directory O=$(O)/fuzz-build CC=clang \
		SANITIZE=fuzzer-no-link,address,undefined $(patsubst $(O)/%,$(O)/fuzz-build/%,$(FUZZ_BIN))
$(O)/fuzz/%: $(O)/tests/fuzz/%.o $(LIBS_ALL)
	@mkdir -p $(dir $@)
	$(call say,LD,$@)$(CC) -fsanitize=fuzzer,address,undefined -o $@ $^ $(ALL_LDFLAGS) $(LIBS)

# ---- install, deps, run ----------------------------------------------------
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
		$(DESTDIR)$(PREFIX)/share/shelf/boards
	for p in $(PROGS); do install -m 0755 $$p $(DESTDIR)$(PREFIX)/bin/; done
	install -m 0644 $(CLI_LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 0755 $(CLI_SO) $(DESTDIR)$(PREFIX)/lib/
	if [ -f tools/shelf.h ]; then install -m 0644 tools/shelf.h $(DESTDIR)$(PREFIX)/include/; fi
	cp -R boards/. $(DESTDIR)$(PREFIX)/share/shelf/boards/
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system
	for u in firmware/systemd/*.service; do \
		sed 's|/usr/local|$(PREFIX)|g' $$u >$(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u); \
		chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/$$(basename $$u); done

deps:
	$(Q).ci/deps

run: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)if [ -x tools/shelf-cluster ]; then tools/shelf-cluster demo; \
	else echo "shelf-cluster is not built yet; try 'make test'"; fi

# ---- image -----------------------------------------------------------------
# The sim board's update image (issue 16): a ustar payload of VERSION,
# bin/shelf-node and boards/, signed with a release key of the site CA
# (`shelf-broker release-key`; the local cluster makes release/dev.key).
IMAGE_DIR   := $(O)/image
NODE_BIN    ?= $(O)/shelf-node
RELEASE_KEY ?= $${SHELF_CLUSTER_DIR:-$${XDG_DATA_HOME:-$$HOME/.local/share}/shelf/1u}/broker/release/dev.key
image: all
	$(Q)key="$(RELEASE_KEY)"; cert="$${key%.key}.cert"; \
	if [ ! -f "$$key" ] || [ ! -f "$$cert" ]; then \
		echo "make image: no release key at $$key (and $$cert)." >&2; \
		echo "  Start the local cluster first ('make run' or tools/shelf-cluster up: it makes" >&2; \
		echo "  the release key 'dev'), or issue one with" >&2; \
		echo "  'shelf-broker release-key --dir SITEDIR --name NAME' and pass" >&2; \
		echo "  RELEASE_KEY=SITEDIR/release/NAME.key." >&2; \
		exit 1; \
	fi; \
	rm -rf $(IMAGE_DIR)/payload && mkdir -p $(IMAGE_DIR)/payload/bin && \
	printf '%s\n' '$(VERSION)' >$(IMAGE_DIR)/payload/VERSION && \
	cp $(NODE_BIN) $(IMAGE_DIR)/payload/bin/shelf-node && \
	cp -R boards $(IMAGE_DIR)/payload/boards && \
	tar --format=ustar --owner=0 --group=0 --numeric-owner --sort=name \
		-cf $(IMAGE_DIR)/shelf-sim-$(VERSION).tar -C $(IMAGE_DIR)/payload VERSION bin boards && \
	$(O)/shelf image build --version '$(VERSION)' --board sim --key "$$key" --cert "$$cert" \
		--out $(IMAGE_DIR)/shelf-sim-$(VERSION).img $(IMAGE_DIR)/shelf-sim-$(VERSION).tar && \
	rm -rf $(IMAGE_DIR)/payload $(IMAGE_DIR)/shelf-sim-$(VERSION).tar

clean:
	rm -rf $(O)

-include $(wildcard $(O)/overlay/*.d $(O)/firmware/*.d $(O)/firmware/*/*.d $(O)/broker/*.d \
	$(O)/tools/*/*.d $(O)/tests/*/*.d $(O)/pic/*/*.d $(O)/pic/*/*/*.d)
