# Thin wrapper over meson. Every target first installs the Debian packages it
# is missing (and only those), then builds.
BUILD     ?= build
SAN_BUILD ?= build-san
TSAN_BUILD ?= build-tsan
PYTHON    ?= python3
SOAK_SECONDS ?= 300

DEB_PACKAGES = gcc meson ninja-build pkg-config python3 libglib2.0-dev libjson-glib-dev \
               libfdt-dev zlib1g-dev libzstd-dev libisal-dev libdeflate-dev libaio-dev libcmocka-dev \
               clang-format libgnutls28-dev gnutls-bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build check demo bench soak fuzz fuzz-cpu tsan clean

all: build

deps:
	@missing=$$(for p in $(DEB_PACKAGES) $(EXTRA_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make: installing missing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The C style is .clang-format's: `make format` rewrites every tracked C source
# and header in place; `make format-check` (and `make check`, through the
# 'format' test of suite house) fails naming the files that differ.
.PHONY: format format-check

format: deps
	git ls-files -z '*.c' '*.h' | xargs -0 -r clang-format -i --style=file

format-check: deps
	tests/check-format.sh

$(BUILD)/build.ninja:
	meson setup $(BUILD)

$(SAN_BUILD)/build.ninja:
	meson setup $(SAN_BUILD) -Dsanitize=true

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

# Every test (unit, KVM, functional) runs against the ASan/UBSan build; the
# optimised build is compiled too so its warnings count.
check: deps build $(SAN_BUILD)/build.ninja
	ninja -C $(SAN_BUILD)
	meson test -C $(SAN_BUILD) --no-suite fuzz-cpu --print-errorlogs; status=$$?; \
	$(PYTHON) tests/summary.py $(SAN_BUILD)/meson-logs/testlog.json && exit $$status

demo: build
	$(PYTHON) tests/demo.py --tern $(BUILD)/tern

# make bench's own needs: matplotlib draws docs/benchmarks.md's plot.
BENCH_PACKAGES = python3-matplotlib
# Debian's own interpreter, the one that sees Debian's matplotlib (a python3
# earlier on PATH, e.g. pyenv's, may not).
BENCH_PYTHON ?= $(shell [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo $(PYTHON))

bench: build
	$(MAKE) deps EXTRA_PACKAGES="$(BENCH_PACKAGES)"
	$(BENCH_PYTHON) tests/bench/run.py --tern $(BUILD)/tern

# Randomised fault-injection trials (tests/functional/soak.py) for SOAK_SECONDS;
# SOAK_ARGS=--seed=N repeats a run.
soak: build
	$(PYTHON) tests/functional/soak.py --tern $(BUILD)/tern --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

# The software CPU's differential tester against the host CPU, long run
# (make check runs it for a short fixed budget). On the optimised build.
# libFuzzer on every harness of tests/fuzz for FUZZ_SECONDS each (clang,
# ASan and UBSan, in $(FUZZ_BUILD)); make check replays their corpora.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
$(FUZZ_BUILD)/build.ninja:
	CC=clang meson setup $(FUZZ_BUILD) -Dfuzzing=true

fuzz:
	$(MAKE) deps EXTRA_PACKAGES="clang libclang-rt-14-dev"
	$(MAKE) $(FUZZ_BUILD)/build.ninja
	ninja -C $(FUZZ_BUILD) $$(ninja -C $(FUZZ_BUILD) -t targets all | sed -n 's|^\(tests/fuzz/fuzz-[a-z0-9-]*\): .*|\1|p')
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_NAMES)

fuzz-cpu: build
	meson test -C $(BUILD) --suite fuzz-cpu --print-errorlogs

# ThreadSanitizer (not part of check: slow). Unit tests, then every functional
# test on both accelerators one at a time, with ASLR off (setarch -R: TSan's
# fixed memory layout fails on some kernels otherwise). GLib's slices are
# plain malloc so TSan sees them; reports go to $(TSAN_BUILD)/tsan-logs and
# fail the target. Functional tests that time the guest fail under TSan's
# slowdown (on emu above all): they are listed, and do not fail the target.
TSAN_LOGS = $(abspath $(TSAN_BUILD))/tsan-logs
TSAN_ENV = G_SLICE=always-malloc TSAN_OPTIONS="suppressions=$(abspath tests/tsan.supp) \
	second_deadlock_stack=1 log_path=$(TSAN_LOGS)/tsan exitcode=0"
TSAN_RUN = setarch $$(uname -m) -R

$(TSAN_BUILD)/build.ninja:
	meson setup $(TSAN_BUILD) -Dtsan=true

tsan: deps $(TSAN_BUILD)/build.ninja
	ninja -C $(TSAN_BUILD)
	rm -rf $(TSAN_LOGS) && mkdir -p $(TSAN_LOGS)
	$(TSAN_ENV) $(TSAN_RUN) meson test -C $(TSAN_BUILD) --suite unit --suite house \
		--print-errorlogs
	cd tests/functional && failed=; for accel in kvm emu; do for t in test_*.py; do \
		echo "== tsan $$accel $$t"; \
		TERN_TEST_ACCEL=$$accel $(TSAN_ENV) $(TSAN_RUN) $(PYTHON) $$t \
			$(abspath $(TSAN_BUILD))/tern $(abspath $(TSAN_BUILD))/tern-dump; \
		rc=$$?; [ $$rc = 77 ] && skipped="$$skipped $$accel:$$t"; \
		[ $$rc = 0 ] || [ $$rc = 77 ] || failed="$$failed $$accel:$$t"; \
	done; done; \
	[ -z "$$skipped" ] || echo "make tsan: SKIPPED (no /dev/kvm):$$skipped"; \
	[ -z "$$failed" ] || echo "make tsan: failed under TSan (timing?):$$failed"
	@if ls $(TSAN_LOGS)/tsan.* >/dev/null 2>&1; then cat $(TSAN_LOGS)/tsan.*; \
		echo "make tsan: ThreadSanitizer reports above (in $(TSAN_LOGS))"; exit 1; fi
	@echo "make tsan: no ThreadSanitizer reports"

clean:
	rm -rf $(BUILD) $(SAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
