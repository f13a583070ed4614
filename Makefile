# Two commands on a fresh Debian 12 machine (as root, or with sudo available):
#   make demo   - install, start a throwaway OpenLDAP with sample users and run the daemon
#                 in the foreground with the example jobs every few seconds (Ctrl-C stops it)
#   make test   - install, run the whole test suite
# Also: make recon-demo (one reconciliation, then the summary and the users), make bench.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_PACKAGES := slapd ldap-utils openssl python3-venv systemd
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo recon-demo test deps venv lint bench clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	@command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: deps venv
	PYTHONPATH=devtools $(PY) -m idsync_dev.daemon_demo

recon-demo: deps venv
	PYTHONPATH=devtools $(PY) -m idsync_dev.recon_demo

test: deps venv
	$(VENV)/bin/pytest -q

lint: venv
	$(VENV)/bin/ruff check daemon devtools tests bench
	$(VENV)/bin/mypy

bench: deps venv
	$(PY) bench/recon_bench.py

clean:
	rm -rf $(VENV) state build *.egg-info
