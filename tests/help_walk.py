"""Run by tests/test_install.py with an installed edgeloop (a wheel in a fresh venv): `--help` of
every command, walked from the top-level group -> JSON {"package": where edgeloop was imported from,
"commands": {"agent run": [exit code, first line or error]}}."""

from __future__ import annotations

import json
import sys

import click
from click.testing import CliRunner

import edgeloop
from edgeloop.cli import main


def walk(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        path = (*prefix, name)
        yield path
        if isinstance(cmd, click.Group):
            yield from walk(cmd, click.Context(cmd, parent=ctx, info_name=name), path)


runner = CliRunner()
results = {}
with click.Context(main, info_name="edgeloop") as ctx:
    for path in walk(main, ctx):
        r = runner.invoke(main, [*path, "--help"])
        first = (r.output.strip().splitlines() or [""])[0] if r.exit_code == 0 else repr(r.exception)
        results[" ".join(path)] = [r.exit_code, first[:200]]
json.dump({"package": edgeloop.__file__, "commands": results}, sys.stdout)
