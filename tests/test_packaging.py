"""Packaging: the declared floors are the pins `make test` checks (constraints-lowest.txt),
the lock covers every dependency, the license is declared the PEP 639 way, and the source
distribution carries what its own tests need."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ("3.11", "3.12", "3.13")


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _runtime_requirements() -> list[Requirement]:
    project = _pyproject()["project"]
    texts: list[str] = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        texts.extend(extra)
    return [Requirement(text) for text in texts]


def _group_requirements() -> list[Requirement]:
    groups: dict[str, list[Any]] = _pyproject()["dependency-groups"]
    return [Requirement(item) for items in groups.values() for item in items if isinstance(item, str)]


def _pins(path: Path) -> list[Requirement]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("#")]


def _environment(python: str) -> dict[str, str]:
    return {"python_version": python, "python_full_version": f"{python}.0", "extra": ""}


def _applies(requirement: Requirement, python: str) -> bool:
    return requirement.marker is None or requirement.marker.evaluate(_environment(python))


def _pinned(requirement: Requirement) -> Version:
    (spec,) = requirement.specifier
    assert spec.operator == "==", f"{requirement}: not an exact pin"
    return Version(spec.version)


def _floor(requirement: Requirement) -> Version:
    floors = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    assert len(floors) == 1, f"{requirement}: needs exactly one >= floor"
    return floors[0]


@pytest.mark.parametrize("python", PYTHONS)
def test_constraints_lowest_pins_every_floor(python: str) -> None:
    """For each supported Python, every runtime dependency and driver is pinned in
    constraints-lowest.txt at exactly the floor pyproject.toml declares for that Python,
    and the file pins nothing else: the lowest-versions unit run tests the real floors."""
    pins = [pin for pin in _pins(ROOT / "constraints-lowest.txt") if _applies(pin, python)]
    pinned = {canonicalize_name(pin.name): _pinned(pin) for pin in pins}
    assert len(pinned) == len(pins), "a dependency is pinned twice for the same Python"
    declared = {canonicalize_name(req.name): _floor(req) for req in _runtime_requirements() if _applies(req, python)}
    assert pinned == declared


def test_lock_pins_every_dependency() -> None:
    """requirements.lock pins every runtime dependency, driver and development tool, at a
    version pyproject.toml allows, so `make venv` installs nothing unpinned."""
    locked = {canonicalize_name(pin.name): _pinned(pin) for pin in _pins(ROOT / "requirements.lock")}
    for requirement in [*_runtime_requirements(), *_group_requirements()]:
        if not _applies(requirement, "3.11"):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is not in requirements.lock"
        assert requirement.specifier.contains(locked[name]), f"{requirement.name}=={locked[name]} breaks {requirement}"
        for extra in requirement.extras:
            assert canonicalize_name(f"{requirement.name}-{extra}") in locked, f"{requirement} is not locked"


def test_license_is_an_spdx_expression_with_its_file() -> None:
    """The license is the SPDX string with license-files (PEP 639, not the deprecated
    table), the LICENSE file is the Apache License 2.0, and the build backend floor is
    a setuptools that understands both (77)."""
    pyproject = _pyproject()
    assert pyproject["project"]["license"] == "Apache-2.0"
    assert pyproject["project"]["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    (setuptools,) = [Requirement(r) for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    assert not setuptools.specifier.contains("76.1")
    assert setuptools.specifier.contains("77.0")


def test_classifiers_follow_requires_python() -> None:
    """Each Python the project says it supports is allowed by requires-python and is one
    that the lowest-versions unit run looks for."""
    project = _pyproject()["project"]
    requires = SpecifierSet(project["requires-python"])
    prefix = "Programming Language :: Python :: "
    versions = [c.removeprefix(prefix) for c in project["classifiers"] if c.startswith(prefix + "3.")]
    assert tuple(versions) == PYTHONS
    assert all(requires.contains(f"{v}.0") for v in versions)
    assert f"LOWEST_PYTHONS:-{' '.join(PYTHONS)}" in (ROOT / ".ci" / "lowest-versions").read_text()


def test_sdist_carries_the_tests_and_they_collect(tmp_path: Path) -> None:
    """`python -m build --sdist` includes the tests with their helpers, the samples, the
    example configuration, the systemd files, the benchmark, the docs, the Makefile and
    .ci, and pytest collects the whole suite inside the unpacked archive without error."""
    # From a copy: setuptools would otherwise also pack what an earlier build listed in
    # daemon/idsync.egg-info/SOURCES.txt, whatever MANIFEST.in says now.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "*.egg-info", "__pycache__", "state", "build", "dist", "out"))
    # The build needs only setuptools (the test group installs it), so no isolated env.
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=source, check=True, capture_output=True, text=True,
    )
    (archive,) = tmp_path.glob("idsync-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path, filter="data")
    unpacked = tmp_path / archive.name.removesuffix(".tar.gz")
    for path in ("devtools/idsync_dev/slapd.py", "tests/conftest.py", "tests/samples.py", "tests/scim_server.py",
                 "samples/sync-with-scim", "CHANGELOG.md",
                 "conf/sync.json", "jobs.d", "systemd/idsync.service", "bench/recon_bench.py", "docs/api.md",
                 "Makefile", ".ci/run", ".ci/lowest-versions", "LICENSE", "CONTRIBUTING.md",
                 "constraints-lowest.txt", "requirements.lock", "daemon/idsync/store/migrations/env.py"):
        assert (unpacked / path).exists(), f"{path} is missing from the sdist"
    assert not list(unpacked.rglob("__pycache__"))
    # --assert=plain: rewriting every test module's asserts (what collection otherwise
    # spends three quarters of its time on in a fresh tree) does not bear on collecting.
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "--assert=plain"],
        cwd=unpacked, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tests collected" in proc.stdout.splitlines()[-1]
    ours = {p.name for p in (ROOT / "tests").glob("*.py")}
    assert {p.name for p in (unpacked / "tests").glob("*.py")} == ours
