"""Shared by the suites: which database the hub tests run on (tests/hubdb.py, EDGELOOP_TEST_DB)."""

from __future__ import annotations

import hubdb


def pytest_report_header(config):
    return f"hub database: {hubdb.BACKEND} (EDGELOOP_TEST_DB=sqlite|postgresql)"


def pytest_sessionfinish(session, exitstatus):
    hubdb.shutdown()  # the PostgreSQL cluster, when a test started one
