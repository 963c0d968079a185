"""Off the happy path of `pip install -e`: a built wheel, installed into a fresh venv, has every
command (`--help` of each works, `edgeloop bench` included); and `make test` on a machine without
the Debian packages stops at once with one line that names them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A venv that sees this machine's dependencies (no downloads) but holds its own edgeloop, from a wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools writes build/ beside the sources, which must stay the checkout's own.
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "runs", "build", "dist", "*.egg-info",
                                                             ".pytest_cache", ".hypothesis", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "dist")], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("edgeloop-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp / "venv")], check=True, timeout=120)
    py = tmp / "venv" / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    return tmp / "venv"


def test_a_built_wheel_has_every_command(venv, tmp_path):
    run = subprocess.run([str(venv / "bin" / "python"), str(TESTS / "help_walk.py")], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)  # not the checkout: nothing may come from the source tree
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["package"].startswith(str(venv)), report["package"]  # the wheel's copy, not the editable one
    commands = report["commands"]
    assert {"agent run", "relay run", "relay dead-letters", "hub serve", "hub init", "bench trainer-memory",
            "bench chaos", "sim video", "rollout start", "provision device"} <= set(commands)
    broken = {path: r for path, r in commands.items() if r[0] != 0}
    assert broken == {}, broken
    script = subprocess.run([str(venv / "bin" / "edgeloop"), "bench", "--help"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert script.returncode == 0 and "trainer-memory" in script.stdout, script.stderr


def test_make_test_without_the_debian_packages_stops_at_once_naming_them(tmp_path):
    env = {**os.environ, "EDGELOOP_TOOLS_PATH": str(tmp_path)}  # a machine where neither is installed
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_relay_share.py",
                          "tests/test_browser.py"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert run.returncode == 4, run.stdout[-2000:]
    assert "need the Debian package(s) chromium, mosquitto: apt-get install chromium mosquitto" in run.stdout
    assert "passed" not in run.stdout and "failed" not in run.stdout  # stopped before running anything
    # A selection that needs neither runs as usual.
    quick = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_relay_store.py"],
                           capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert quick.returncode == 0 and "passed" in quick.stdout, quick.stdout[-2000:]
