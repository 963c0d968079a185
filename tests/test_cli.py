"""Every command is documented: `--help` says what it does and gives an example."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from edgeloop.cli import COMMANDS, main


def walk(cmd: click.Command, ctx: click.Context, path: tuple[str, ...]):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            yield from walk(cmd.get_command(ctx, name), ctx, path + (name,))


def all_commands():
    ctx = click.Context(main)
    return [p for p, _ in walk(main, ctx, ())]


@pytest.mark.parametrize("path", all_commands(), ids=lambda p: " ".join(p) or "edgeloop")
def test_every_command_has_help_with_an_example(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) > 3
    ctx = click.Context(main)
    cmd = main
    for name in path:
        cmd = cmd.get_command(ctx, name)
    if not isinstance(cmd, click.Group):
        assert "Example" in result.output, f"`edgeloop {' '.join(path)} --help` gives no example"


def test_the_root_lists_every_verb():
    out = CliRunner().invoke(main, ["--help"]).output
    for verb in COMMANDS:
        assert verb in out


def pubkey(tmp_path):
    from edgeloop.shared.signing import generate_keypair

    path = tmp_path / "hub.pub"
    path.write_bytes(generate_keypair()[1])
    return str(path)


def test_an_operator_error_prints_a_message_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[sampling]\nbudgit = 3\n")
    proc = subprocess.run([sys.executable, "-m", "edgeloop", "agent", "run", "--device", "d1", "--site", "s1",
                           "--data", str(tmp_path / "a"), "--config", str(bad), "--pubkey", pubkey(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown key(s) budgit" in proc.stderr and "Traceback" not in proc.stderr


def test_a_source_that_does_not_open_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgeloop", "agent", "run", "--device", "d1", "--site", "s1",
                           "--data", str(tmp_path / "a"), "--source", str(tmp_path / "missing.mp4"),
                           "--pubkey", pubkey(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "did not open" in proc.stderr and "Traceback" not in proc.stderr


def test_an_agent_without_a_readable_public_key_refuses_to_start(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgeloop", "agent", "run", "--device", "d1", "--site", "s1",
                           "--data", str(tmp_path / "a"), "--pubkey", str(tmp_path / "nope.pub")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--pubkey" in proc.stderr and "Traceback" not in proc.stderr


def test_json_logs_are_one_object_per_line():
    import json
    import logging

    from edgeloop.cli import JsonFormatter

    record = logging.LogRecord("edgeloop.agent", logging.WARNING, __file__, 1, "lost %s", ("the broker",), None)
    out = json.loads(JsonFormatter().format(record))
    assert out["level"] == "WARNING" and out["logger"] == "edgeloop.agent" and out["message"] == "lost the broker"
