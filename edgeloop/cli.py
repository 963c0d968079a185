"""`edgeloop` — one command, a verb per service. Each tier's code is imported only when its verb runs,
so `edgeloop agent` never loads hub code (and never torch)."""

from __future__ import annotations

import importlib
import json
import logging
import sys

import click

from edgeloop.shared.errors import EdgeloopError

# verb -> "module:attribute" of its click command
COMMANDS = {
    "agent": ("edgeloop.agent.cli:agent", "Run the device daemon: infer, select, cache, uplink, apply models."),
    "relay": ("edgeloop.relay.cli:relay", "Run a site gateway: aggregate agents, select, store and forward."),
    "hub": ("edgeloop.hub.cli:hub", "Run the cloud hub: ingest, label, train, register and roll out models."),
    "rollout": ("edgeloop.hub.cli:rollout", "Roll a model out in stages (shadow, canary, full) with gates; pause, abort, roll back."),
    "broker": ("edgeloop.broker:broker", "Run the embedded MQTT broker (zero set-up; mosquitto for production)."),
    "sim": ("edgeloop.sim.sim_cli:sim", "Simulated cameras: stream statistics, video files with ground truth, live MJPEG."),
    "fleet": ("edgeloop.agent.fleet:fleet", "Run many agents in one process, each on its own (simulated) camera."),
    "demo": ("edgeloop.demo:demo", "Run the whole loop on one box: broker, hub, relays, agents, rounds."),
    "bench": ("edgeloop.bench:bench", "Benchmarks: measured figures, JSON and plots."),
    "keys": ("edgeloop.keys_cli:keys", "Create the hub's signing key pair."),
    "model": ("edgeloop.keys_cli:model", "Pack and verify signed model artifacts."),
    "provision": ("edgeloop.provision_cli:provision", "Site broker security: device and relay credentials, ACL, revocation, TLS."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeloopError as exc:
            # Operators get the message and a hint, not a traceback.
            click.echo(f"error: {exc}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            sys.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]),
              help="json: one JSON object per line (time, level, logger, message), for log shippers.")
@click.version_option(package_name="edgeloop")
def main(log_level: str, log_format: str) -> None:
    """edgeloop closes the data loop of a camera fleet, edge to cloud.

    \b
    Example, the whole loop on one box:
      edgeloop demo --rounds 3 --agents 4 --relays 2 --out runs/demo
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=log_level.upper(), handlers=[handler])


class JsonFormatter(logging.Formatter):
    """Structured logs: a JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)
