# hyperplane: `sudo make demo` and `sudo make test` do all set-up themselves.
# Our CI and dev machines run as root without sudo: there, `make demo` / `make test`.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

# command -> Debian package providing it
TOOLS := ip:iproute2 ping:iputils-ping curl:curl iperf3:iperf3 nft:nftables \
         tcpdump:tcpdump ethtool:ethtool traceroute:traceroute \
         mariadbd:mariadb-server redis-server:redis-server memcached:memcached \
         node:nodejs npm:npm dot:graphviz
# the servers a template's databases and caches become are only run by `up`, inside our
# namespaces: installing them must not start Debian's own services (policy-rc.d says no)

.PHONY: install system-deps fast-path demo test test-packets test-unit test-integration lint fuzz bench bench-quick test-container docs-graph clean help

help:
	@echo "make install | demo | test | test-unit | test-integration | test-packets | test-container | lint | fuzz | bench | bench-quick | docs-graph | clean"

install: system-deps $(STAMP) fast-path

system-deps:
	@missing=""; \
	for pair in $(TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing="$$missing python3-venv python3-pip"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to install packages: run with sudo" >&2; exit 2; fi; \
	  policy=""; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d; \
	    policy=/usr/sbin/policy-rc.d; \
	  fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  status=$$?; [ -z "$$policy" ] || rm -f "$$policy"; [ $$status = 0 ] || exit $$status; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,fast]'
	touch $(STAMP)

# The optional compiled fast path (hyperplane/dataplane/fastpath.c, cffi), built into the
# venv when a C compiler and Python's headers are there; gcc and python3-dev are installed
# when apt can, and nothing fails without them: the dataplane then runs pure Python.
FAST_STAMP := $(VENV)/.fastpath
fast-path: $(FAST_STAMP)

$(FAST_STAMP): $(STAMP) hyperplane/dataplane/fastpath.c hyperplane/dataplane/fastbuild.py
	@headers=$$($(BIN)/python -c "import os, sysconfig; print(os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"); \
	if ! command -v cc >/dev/null 2>&1 || [ "$$headers" != True ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing gcc and python3-dev for the compiled fast path (optional)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	      gcc python3-dev >/dev/null 2>&1 || echo "gcc/python3-dev not installed"; \
	  fi; \
	fi; \
	$(BIN)/python -m hyperplane.dataplane.fastbuild || \
	  echo "the dataplane will run its pure-Python fast path"
	@touch $(FAST_STAMP)

demo: install
	bash scripts/demo.sh

test: install
	$(BIN)/pytest -q -p no:cacheprovider tests/unit tests/integration $(PYTEST_ARGS)

# The packet-level integration tests once per receive path (settings.dataplane.fast_path
# set by HYPERPLANE_FAST_PATH over every topology's): the ring walked in pure Python, then
# compiled when the compiled fast path is built (`make test` runs them on each file's own).
PACKET_TESTS := tests/integration/test_dataplane_tcp.py tests/integration/test_dataplane_udp_icmp.py \
	tests/integration/test_dataplane_limits.py tests/integration/test_egress.py \
	tests/integration/test_workers.py
test-packets: install
	HYPERPLANE_FAST_PATH=python $(BIN)/pytest -q -p no:cacheprovider $(PACKET_TESTS) $(PYTEST_ARGS)
	@if $(BIN)/python -c "from hyperplane.dataplane import fastpath; fastpath.mode('compiled')" \
	    2>/dev/null; then \
	  echo "HYPERPLANE_FAST_PATH=compiled"; \
	  HYPERPLANE_FAST_PATH=compiled $(BIN)/pytest -q -p no:cacheprovider $(PACKET_TESTS) $(PYTEST_ARGS); \
	else echo "test-packets: the compiled fast path is not built: its run skipped"; fi

test-unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider tests/unit $(PYTEST_ARGS)

test-integration: install
	$(BIN)/pytest -q -p no:cacheprovider tests/integration $(PYTEST_ARGS)

test-container: install
	bash scripts/container/test-container.sh

lint: $(STAMP)
	$(BIN)/ruff check .

fuzz: $(STAMP)
	$(BIN)/python scripts/fuzz.py --frames $(or $(FRAMES),1000000)

bench: install
	$(BIN)/hyperplane bench $(BENCH_ARGS)

bench-quick: install
	$(BIN)/hyperplane bench --quick $(BENCH_ARGS)

docs-graph: $(STAMP)
	$(BIN)/python scripts/readme_graph.py

clean:
	-@if [ "$$(id -u)" = 0 ] && [ -x $(BIN)/hyperplane ]; then $(BIN)/hyperplane cleanup; fi
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis bench/results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
