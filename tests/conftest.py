"""Shared by the suites: which database the hub tests run on (tests/hubdb.py, EDGELOOP_TEST_DB), and
the Debian packages the selected tests need: missing ones stop the run at once with one line that
names them, instead of failing test after test (README: `make test` needs them; `.ci/run` installs them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import hubdb

# Tool -> the Debian package that has it. End-to-end tests need a real mosquitto; the browser tests chromium.
PACKAGES = {"mosquitto": "mosquitto", "mosquitto_passwd": "mosquitto", "chromium": "chromium"}


def tools_path() -> str:
    """Where the tools are looked for: EDGELOOP_TOOLS_PATH, else PATH and /usr/sbin (Debian puts mosquitto there)."""
    return os.environ.get("EDGELOOP_TOOLS_PATH") or os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"])


def missing_packages(items) -> list[str]:
    """The Debian packages the selected tests need that are not installed, sorted."""
    needed = set()
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            needed |= {"mosquitto", "mosquitto_passwd"}
        if Path(str(item.fspath)).name == "test_browser.py":
            needed.add("chromium")
    return sorted({PACKAGES[t] for t in needed if shutil.which(t, path=tools_path()) is None})


def pytest_report_header(config):
    return f"hub database: {hubdb.BACKEND} (EDGELOOP_TEST_DB=sqlite|postgresql)"


def pytest_collection_modifyitems(session, config, items):
    missing = missing_packages(items)
    if missing:
        pytest.exit(f"these tests need the Debian package(s) {', '.join(missing)}: apt-get install "
                    f"{' '.join(missing)} (or run .ci/run, which installs them)", returncode=4)


def pytest_sessionfinish(session, exitstatus):
    hubdb.shutdown()  # the PostgreSQL cluster, when a test started one
