# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Debian packages the end-to-end tests use: Chromium (browser tests), mosquitto (a real MQTT broker) and
# GStreamer's RTSP server (a real camera stream). `make test` installs them when it can (root + apt);
# otherwise those tests skip with the reason. CI installs them strictly (.ci/run).
SYSTEM_PACKAGES := chromium mosquitto gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi \
	gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad

.PHONY: install demo test test-fast system-packages print-system-packages clean

install: $(STAMP)

# Re-install only when the dependency list changes, so a second `make test` starts at once.
# dev pulls the optional extras too (OpenVINO, Ray), so that their tests run.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/anomalens demo

system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
			echo "installing Debian packages for the end-to-end tests:" $$missing; \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } \
				|| echo "could not install them: the tests that need them will be skipped"; \
		else echo "not root or no apt: tests needing" $$missing "will be skipped"; fi; \
	fi

print-system-packages:
	@echo $(SYSTEM_PACKAGES)

# Two worker processes, a test file each at a time (pytest-xdist, --dist loadfile: a file's module fixtures are built
# once): one process left a core idle most of the time (subprocess waits, servers starting, Python between the
# libraries' parallel bursts). On the idle 2-core machine: 10.6 min in one process, 6.2-7.4 min in two. TEST_WORKERS=0
# runs in this process, as before (for a debugger).
TEST_WORKERS ?= 2

test: install system-packages
	$(BIN)/python -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile

test-fast: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow and not browser"

clean:
	rm -rf $(VENV) results demo_data test-artifacts .pytest_cache
