"""Debian's Chromium driven by Selenium through Debian's ``chromium-driver``, for the
console's browser tests: headless, a fresh profile, no network of its own (without
the background-networking flags it waits on the closed network), nothing downloaded."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-dev-shm-usage", "--window-size=1280,900")


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (DRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} is missing: install the Debian package {package} (make deps does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install --group test)"
    return None


@contextmanager
def chromium(*, javascript: bool = True, accept_insecure_certs: bool = False) -> Iterator[Any]:
    """A headless Chromium session (without JavaScript if asked; accepting self-signed
    certificates if asked: the local Salesforce stand-in's); skips the test (fails under
    CI=true) when there is none."""
    reason = skip_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="idsync-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = (*_FLAGS, f"--user-data-dir={profile}", *(() if javascript else ("--blink-settings=scriptEnabled=false",)))
    for flag in flags:
        options.add_argument(flag)
    if accept_insecure_certs:
        options.set_capability("acceptInsecureCerts", True)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
