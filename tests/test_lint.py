"""The code base stays clean: ruff's rules and mypy in strict mode, as configured
in pyproject.toml, over the package, the tests and the benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in this environment (pip install --group lint)")
    return str(path)


def test_ruff() -> None:
    """ruff finds nothing to complain about."""
    proc = subprocess.run([_tool("ruff"), "check", "--output-format", "concise", "daemon", "tests", "bench"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict() -> None:
    """mypy --strict (pyproject's [tool.mypy]) passes on the package. Its cache lives in the
    test cache, not the checkout: a fresh clone checks in a second or two what a cold
    cache takes half a minute of CPU for (mypy trusts an entry only while the source's
    hash and its own version and options match)."""
    cache = Path(os.environ.get("IDSYNC_TEST_CACHE", "/var/cache/idsync-tests")) / "mypy"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        cache = ROOT / ".mypy_cache"  # an unwritable test cache: the checkout's own
    proc = subprocess.run([_tool("mypy"), "--cache-dir", str(cache)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
