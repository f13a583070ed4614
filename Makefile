# Two commands on a fresh Debian 12 machine (as root, or with sudo available):
#   make demo   - install, start a throwaway OpenLDAP with sample users and run the daemon
#                 in the foreground with the example jobs every few seconds (Ctrl-C stops it)
#   make test   - install, run the unit tests at the lowest supported dependency versions on
#                 each Python 3.11-3.13 found, then the whole test suite
# Also: make recon-demo (one reconciliation, then the summary and the users), make bench,
# make lock (refresh requirements.lock), make sdist. CONTRIBUTING.md explains the two
# dependency files.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# libldap2-dev, libsasl2-dev, gcc and python3-dev: python-ldap ships no wheels; pip builds it.
# libfaketime: a cluster node whose clock runs ahead, in tests/test_cluster_clock.py.
APT_PACKAGES := slapd ldap-utils openssl python3-venv systemd debootstrap libldap2-dev libsasl2-dev gcc python3-dev chromium chromium-driver libfaketime
# The Active Directory and 389 DS test peers, without what they only recommend (a
# desktop's worth for 389-ds-base); samba-ad-provision is only recommended but needed.
APT_PEERS := samba samba-ad-dc samba-ad-provision ldb-tools 389-ds-base
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo recon-demo test test-lowest deps venv lock sdist wheel lint bench clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@missing=""; for p in $(APT_PEERS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# pip >= 25.1 installs PEP 735 dependency groups (--group); requirements.lock pins
# every package to the versions the suite last passed with.
$(VENV)/.installed: pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q 'pip>=25.1'
	$(VENV)/bin/pip install -q -c requirements.lock -e '.[postgresql,mysql]' --group dev
	touch $@

venv: $(VENV)/.installed

demo: deps venv
	PYTHONPATH=devtools $(PY) -m idsync_dev.daemon_demo

recon-demo: deps venv
	PYTHONPATH=devtools $(PY) -m idsync_dev.recon_demo

# One worker per core and two more (each has its own slapd and databases test_gwN): many
# tests wait on a peer or a subprocess, so on 2 cores 3 workers finish 8% sooner than 2,
# and 4 another 3-5% sooner than 3.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 2 )))
test: deps venv test-lowest
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist worksteal

# Unit tests with every runtime dependency at its floor (constraints-lowest.txt), on
# each of Python 3.11, 3.12 and 3.13 that is installed; venvs kept in .venv-lowest/.
test-lowest: venv
	bash .ci/lowest-versions

# Newest versions pyproject.toml allows, in a scratch venv, frozen into requirements.lock.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q 'pip>=25.1'
	.venv-lock/bin/pip install -q -e '.[postgresql,mysql]' --group dev
	{ echo "# The versions idsync's tests pass with: make venv installs with -c requirements.lock."; \
	  echo "# Refresh with make lock, then run make test."; \
	  .venv-lock/bin/pip freeze --all --exclude-editable --exclude pip; } > requirements.lock
	rm -rf .venv-lock

sdist: venv
	$(PY) -m build --sdist --no-isolation

lint: venv
	$(VENV)/bin/ruff check daemon devtools tests bench
	$(VENV)/bin/mypy

bench: deps venv
	$(PY) bench/recon_bench.py

clean:
	rm -rf $(VENV) .venv-lowest .venv-lock state build dist *.egg-info daemon/*.egg-info

# The wheel the install steps (docs/install.md) take: the program, its unit and examples.
wheel: venv
	$(PY) -m build --wheel --no-isolation --outdir dist
