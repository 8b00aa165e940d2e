# netd — build, test, demo.  Every target installs what it needs, so a brand-new Debian 12 machine works as root.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEB_PACKAGES := iproute2 iptables nftables libnftables1 iputils-ping conntrack procps kmod python3-venv python3-pip \
                dnsutils util-linux systemd prometheus strace \
                etcd-server openssl
# iperf3: bench/ipsec_overlay.py measures TCP throughput with it inside the VM
VM_PACKAGES := qemu-system-x86 linux-image-amd64 busybox-static iperf3
# the real clients the integration tests drive: podman (CNI backend) with runc, and busybox-static for its image.
# The docker CLI is not installed for them (Debian's docker.io would bring and start a dockerd); its tests skip.
TEST_PACKAGES := podman runc busybox-static
PREFIX ?= /opt/netd
DESTDIR ?=

.PHONY: all deps vm-deps test-deps venv test unit integration vm-test lint demo bench install uninstall clean

all: venv

# Install the Debian packages that are missing (no-op when all are present).
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

vm-deps:
	@missing=$$(for p in $(VM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test-deps:
	@missing=$$(for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.stamp: pyproject.toml
	$(MAKE) deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp

lint: venv
	$(VENV)/bin/ruff check netd tests bench demo tools
	$(VENV)/bin/mypy netd

unit: venv
	$(PY) -m pytest -q tests/unit

integration: venv test-deps
	$(PY) -m pytest -q tests/integration

# Tests for what this kernel lacks (ipvlan, 802.1q, dummy, ...) run under a Debian kernel in a throw-away VM.
vm-test: venv vm-deps
	@if ls tests/vm/test_*.py >/dev/null 2>&1; then \
	  ../shared/vmtest/run-in-vm -t 1500 -- $(PY) -m pytest -q -p no:cacheprovider tests/vm; \
	else echo "no VM tests"; fi

test: venv lint test-deps
	$(PY) -m pytest -q tests/unit tests/integration
	$(MAKE) vm-test

demo: venv
	$(PY) demo/demo.py
	$(PY) demo/overlay_demo.py

# Benchmarks (bench/README.md): inside throw-away namespaces only; installs the peer tools it compares against.
BENCH_PACKAGES := containernetworking-plugins netavark
bench: venv
	@missing=$$(for p in $(BENCH_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(PY) bench/netd_basic.py
	$(PY) bench/compare.py --budget 15 --replay-budget 60

# netd in its own venv under PREFIX, netd/netd-ctl in /usr/local/bin, the systemd unit, /etc/netd/netd.toml (an
# existing one is kept), the netd group, shell completion.  DESTDIR=/some/root stages it for packaging.
install: deps
	$(PYTHON) tools/install.py install --destdir "$(DESTDIR)" --prefix "$(PREFIX)"

# `make uninstall PURGE=1` also removes netd's firewall rules and jumps, and /etc/netd.
uninstall:
	$(PYTHON) tools/install.py uninstall --destdir "$(DESTDIR)" --prefix "$(PREFIX)" $(if $(PURGE),--purge)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
