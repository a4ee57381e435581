# Thin wrapper over meson. Every target first installs the Debian packages it
# is missing (and only those), then builds.
BUILD     ?= build
SAN_BUILD ?= build-san
PYTHON    ?= python3
SOAK_SECONDS ?= 300

DEB_PACKAGES = gcc meson ninja-build pkg-config python3 libglib2.0-dev libjson-glib-dev \
               libfdt-dev zlib1g-dev libaio-dev libcmocka-dev clang-format
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build check demo bench soak fuzz-cpu clean

all: build

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
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

bench: build
	$(PYTHON) tests/bench/run.py --tern $(BUILD)/tern

# Randomised fault-injection trials (tests/functional/soak.py) for SOAK_SECONDS;
# SOAK_ARGS=--seed=N repeats a run.
soak: build
	$(PYTHON) tests/functional/soak.py --tern $(BUILD)/tern --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

# The software CPU's differential tester against the host CPU, long run
# (make check runs it for a short fixed budget). On the optimised build.
fuzz-cpu: build
	meson test -C $(BUILD) --suite fuzz-cpu --print-errorlogs

clean:
	rm -rf $(BUILD) $(SAN_BUILD)
