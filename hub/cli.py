"""`edgeloop hub ...` and `edgeloop rollout ...`: thin commands over the hub library and its API."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

import click

from edgeloop.shared.errors import EdgeloopError, ProtocolError
from edgeloop.shared.hubclient import HubClient
from edgeloop.shared.rollout import Gates

from ._options import db_option
from ._serve_checks import is_loopback, refuse_placeholders

# Not imported from .rollouts: `edgeloop rollout` stays a thin HTTP client that never loads the store.
DEFAULT_STAGES = "shadow:10%,canary:10%,full"

log = logging.getLogger("edgeloop.hub")


@click.group()
def hub() -> None:
    """The cloud hub: ingest, selection for labeling, training, registry, desired model."""


@hub.command("serve")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True, help="Hub data folder (database, blobs).")
@click.option("--golden", type=click.Path(exists=True, path_type=Path), default=None,
              help="Held-out golden set (.npz: images, labels, slices) every model is evaluated on "
                   "[default: DATA/golden.npz].")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, help="0: any free port (see --ready-file).")
@click.option("--token", "tokens", multiple=True, envvar="EDGELOOP_HUB_TOKENS",
              help="Accepted admin bearer token; repeat for several (env EDGELOOP_HUB_TOKENS, space-separated). "
                   "Without any token given or made, the first start makes an admin token and prints a sign-in link.")
@click.option("--open", "open_access", is_flag=True,
              help="No sign-in: anyone who reaches the hub is admin. Refused unless --host is loopback.")
@click.option("--secure-cookies", is_flag=True,
              help="Mark the sign-in cookie Secure although this process serves plain HTTP (TLS ends at a proxy "
                   "in front of it). Over --tls-cert it is Secure anyway.")
@click.option("--ready-file", type=click.Path(path_type=Path), default=None, help="Write {port, url} here once serving.")
@click.option("--key", "key_path", type=click.Path(path_type=Path), default=None,
              help="Private key models are signed with (default DATA/keys/hub.key, created if missing).")
@click.option("--rollout-period", default=1.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Seconds between two passes of the rollout controller (gates, stage changes).")
@click.option("--device-stale-s", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="A device its relay has not reported for this long counts as offline.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Serve HTTPS with this certificate (PEM; e.g. from `edgeloop provision tls`); needs --tls-key.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The certificate's private key (PEM).")
@click.option("--policy", "policy_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="TOML with a [policy] table: train on new labels or a schedule, select, promote and roll out "
                   "by itself (see the README's 'The loop runs by itself').")
@click.option("--job-timeout", default=3600.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds a training job's trainer may run before it is stopped (a job may ask for less or more).")
@click.option("--runner", default="local", show_default=True, metavar="local|ray:URL",
              help="Where trainers run: here, or as Ray jobs on a cluster (ray:http://HEAD:8265; its workers must "
                   "see DATA/jobs at the same path).")
@db_option
def serve(data_dir, golden, host, port, tokens, open_access, secure_cookies, ready_file, key_path, rollout_period, device_stale_s, tls_cert,
          tls_key, policy_path, job_timeout, runner, db) -> None:
    """Serve the hub: its API under /api/v1, the dashboard at /, the labeling page at /label and the
    OpenAPI document at /openapi.json, all on one port. People sign in at /login with a token.

    \b
    Example:
      edgeloop hub serve --data /var/lib/edgeloop/hub --golden golden.npz --port 8080 --token $TOKEN
      then open http://127.0.0.1:8080/ and sign in with $TOKEN
      edgeloop hub serve --data DIR   # first start, no token: makes one and prints a sign-in link
      edgeloop hub serve --data DIR --open   # a laptop demo: no sign-in, on 127.0.0.1 only
      edgeloop hub serve --data DIR --port 8443 --tls-cert tls/server.crt --tls-key tls/server.key   # HTTPS
      edgeloop hub serve --data /shared/hub --db postgresql://hub@db/edgeloop --port 8080   # one of several
      edgeloop hub serve --data DIR --port 8080 --policy hub-policy.toml   # trains and rolls out by itself
      edgeloop hub serve --data /shared/hub --runner ray:http://ray-head:8265   # trainers run on a Ray cluster
    """
    import asyncio
    import signal

    from aiohttp import web

    from .api import make_app
    from .training.golden import load_golden
    from .store import HubStore

    refuse_placeholders(tokens, db, key_path)
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    from .training.ray_runner import ray_address

    try:
        ray_address(runner)
    except EdgeloopError as exc:
        raise click.BadParameter(str(exc), param_hint="--runner") from exc
    ssl_context = None
    if tls_cert:
        import ssl

        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(tls_cert, tls_key)
    scheme = "https" if ssl_context else "http"
    golden = golden or data_dir / "golden.npz"
    if not golden.exists():
        raise click.UsageError(f"no golden set at {golden}: pass --golden FILE.npz")
    tokens = [t for tok in tokens for t in tok.split()]
    if open_access and not is_loopback(host):
        raise click.UsageError(f"--open serves without sign-in: loopback only (--host 127.0.0.1), not {host}")
    store = HubStore(data_dir, db)
    first = None  # the admin token made at a first start, printed once as a sign-in link
    if open_access:
        log.warning("--open: anyone who reaches %s may do anything, as admin", host)
    elif not tokens:
        from .auth import new_token, token_hash

        first = new_token()
        if not store.first_token(token_hash(first), "admin", "admin"):
            first = None
    from .keys import default_key_path, load_or_create

    key = load_or_create(key_path or default_key_path(data_dir))
    from .training.policy import load_policy

    policy = load_policy(policy_path)
    if policy.on:
        log.info("policy on: %s", policy)
    app = make_app(store, load_golden(golden), tokens, key, rollout_period_s=rollout_period,
                   device_stale_s=device_stale_s, jobs={"default_timeout_s": job_timeout, "runner": runner}, policy=policy,
                   open_access=open_access, secure_cookies=secure_cookies)

    async def main():
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]
        if first:  # as Jupyter does: the one time this token is shown
            shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            click.echo(f"The hub made an admin token (shown once; `edgeloop hub token add` makes others).\n"
                       f"Sign in: {scheme}://{shown}:{bound}/login?token={first}\n"
                       f"API: Authorization: Bearer {first}", err=True)
        if ready_file:
            ready_file.write_text(json.dumps({"port": bound, "url": f"{scheme}://{host}:{bound}"}))
        log.info("hub serving on %s://%s:%d", scheme, host, bound)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("hub stopping")
        await runner.cleanup()

    asyncio.run(main())
    store.close()


@hub.command("seed")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True, help="Hub data folder.")
@click.option("--dataset", type=click.Path(exists=True, path_type=Path), required=True,
              help="Labeled seed set: a classification .npz (images, labels, slices) or a detection one "
                   "(images, box_image, box_xyxy, box_class, names, task, slices, weather, site, camera).")
@click.option("--golden", type=click.Path(exists=True, path_type=Path), required=True,
              help="Golden set (.npz) of the same task: every model is evaluated on it.")
@click.option("--epochs", default=15, show_default=True)
@click.option("--key", "key_path", type=click.Path(path_type=Path), default=None,
              help="Private key models are signed with (default DATA/keys/hub.key, created if missing).")
@db_option
def seed(data_dir, dataset, golden, epochs, key_path, db) -> None:
    """Import a labeled seed set, train the round-0 model from scratch and make it the fleet's desired model.
    The golden set is kept as DATA/golden.npz, where `hub serve` looks for it. A detection seed set
    trains the built-in detector (its class names become the project's), a classification one the
    built-in classifier.

    \b
    Example:
      edgeloop hub seed --data /var/lib/edgeloop/hub --dataset seed.npz --golden golden.npz
    """
    from .training.golden import DetectionSet, load_golden
    from .keys import default_key_path, load_or_create
    from .store import HubStore
    from .project import Project, legacy, save_project, saved_project
    from .training.rounds import import_detection_set, import_labeled_set, train_round

    key = load_or_create(key_path or default_key_path(data_dir))
    store = HubStore(data_dir, db)
    kept = data_dir / "golden.npz"
    if not kept.exists():  # `hub serve --data DIR` then finds it without --golden
        shutil.copyfile(golden, kept)
    seed_set, golden_set = load_golden(dataset), load_golden(golden)
    if type(seed_set) is not type(golden_set):
        raise click.UsageError("--dataset and --golden must be of one task (both classification or both detection sets)")
    if saved_project(store) is None:  # the seed set's classes become the project's
        save_project(store, Project("detect", tuple(seed_set.names)) if isinstance(seed_set, DetectionSet)
                     else legacy())
    if isinstance(seed_set, DetectionSet):
        n = import_detection_set(store, seed_set)
    else:
        n = import_labeled_set(store, seed_set)
    result = train_round(store, golden_set, key, epochs=epochs, from_scratch=True)
    m = result["metrics"]
    figure = f"mAP@0.5 {m['map50']:.3f}" if "map50" in m else f"accuracy {m['accuracy']:.3f}"
    click.echo(f"seeded {n} labels; model {result['version']} {figure} per slice {json.dumps(m['per_slice'])}")
    # The gate, not this command, decides whether the model becomes the fleet's desired one.
    if result["promoted"]:
        store.set_desired(result["version"])
    else:
        click.echo(f"model {result['version']} refused by the gate; desired stays {store.desired()}:\n  "
                   + "\n  ".join(result["gate"]["reasons"]), err=True)


@click.group()
def rollout() -> None:
    """Roll a model version out in stages (shadow, canary, full), judged by gates; watch, pause, roll back."""


def _hub_options(fn):
    fn = click.option("--token", envvar="EDGELOOP_TOKEN", default=None, help="Bearer token (env EDGELOOP_TOKEN).")(fn)
    return click.option("--hub", "hub_url", default="http://127.0.0.1:8080", show_default=True, help="Hub URL.")(fn)


def _call(hub_url: str, token: str | None, method: str, path: str, body: dict | None = None):
    """One API call; a 4xx answer becomes a ProtocolError carrying just the hub's message."""
    try:
        return HubClient(hub_url, token, timeout=60).call(method, path, body)
    except ProtocolError as exc:
        _, _, text = str(exc).partition(f"{path}: ")
        try:
            message = json.loads(text)["error"]
        except (ValueError, TypeError, KeyError):
            raise exc from None
        raise ProtocolError(message) from None


def _gate_values(pairs: tuple[str, ...]) -> dict:
    gates = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not key or number is None:
            raise click.BadParameter(f"{pair!r}: expected key=number, e.g. min_agreement=0.9", param_hint="--gate")
        gates[key.strip()] = int(number) if number.is_integer() else number
    return gates


@rollout.command("start")
@_hub_options
@click.option("--model", "version", required=True, help="Registered model version to roll out, e.g. v3.")
@click.option("--group", default="all", show_default=True, help="Devices to roll out to: all, or a site id.")
@click.option("--stages", default=DEFAULT_STAGES, show_default=True,
              help="Stages in order: shadow:P% (runs beside the active model), canary:P% (active on P% of the "
                   "group), full.")
@click.option("--gate", "gates", multiple=True, metavar="KEY=VALUE",
              help="Override a gate; repeat for several. Keys: " + ", ".join(Gates().to_dict()) + ".")
@click.option("--shadow-fraction", default=0.25, show_default=True, type=float,
              help="Share of frames a shadow member also runs the candidate on.")
@click.option("--max-latency-ms", default=None, type=float,
              help="Agent-side budget: a device rolls the new model back on its own past this latency.")
@click.option("--force", is_flag=True, help="Roll out a model its training gate refused (see its model card).")
def start(hub_url, token, version, group, stages, gates, shadow_fraction, max_latency_ms, force) -> None:
    """Start a staged rollout of VERSION to a group; the hub moves it through the stages as gates pass.

    Each stage waits until its members report enough frames on the candidate, then judges agreement,
    latency, confidence drift and load failures; a failed gate returns the group to the baseline.

    \b
    Example:
      edgeloop rollout start --hub http://hub:8080 --model v3 --group all \\
          --stages shadow:10%,canary:10%,full --gate min_frames=200 --gate min_agreement=0.9
    """
    body = {"model": version, "group": group, "stages": stages, "gates": _gate_values(gates),
            "shadow_fraction": shadow_fraction, "max_latency_ms": max_latency_ms, "force": force}
    r = _call(hub_url, token, "POST", "/api/v1/rollouts", body)
    click.echo(f"rollout {r['rollout_id']} started: {r['candidate']} over {r['baseline'] or 'nothing'} to group "
               f"{r['group']}, stages {' -> '.join(r['stages'])}")
    click.echo(f"watch it: edgeloop rollout status {r['rollout_id']} --watch --hub {hub_url}")


@rollout.command("status")
@_hub_options
@click.argument("rollout_id", required=False)
@click.option("--watch", is_flag=True, help="Re-print until the rollout is done, rolled back or aborted.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.01),
              help="Seconds between two prints with --watch.")
def status(hub_url, token, rollout_id, watch, interval) -> None:
    """Show a rollout's live progress (stages, relays, gate figures, the reason of a rollback).

    Without ROLLOUT_ID: the newest rollouts and the model registry (* marks the fleet's desired model);
    with --watch, the newest rollout.

    \b
    Examples:
      edgeloop rollout status --hub http://hub:8080
      edgeloop rollout status r4 --watch --hub http://hub:8080
    """
    if rollout_id is None and not watch:
        recent = _call(hub_url, token, "GET", "/api/v1/rollouts?limit=5")["rollouts"]
        if recent:
            click.echo("rollouts (newest first):")
            for r in recent:
                why = f"  ({r['reason']})" if r["reason"] else ""
                click.echo(f"  {r['rollout_id']:5} {r['candidate']:6} over {r['baseline'] or '-':6} group "
                           f"{r['group']:10} {r['state']:11} {r['stage']}{why}")
            click.echo("models:")
        reply = _call(hub_url, token, "GET", "/api/v1/models")
        for m in reply["models"]:
            mark = "*" if m["version"] == reply["desired"] else " "
            click.echo(f"{mark} {m['version']:6} parent={m['parent'] or '-':6} accuracy={m['metrics'].get('accuracy', 0):.3f}")
        sys.stdout.flush()
        return
    if rollout_id is None:
        recent = _call(hub_url, token, "GET", "/api/v1/rollouts?limit=1")["rollouts"]
        if not recent:
            raise ProtocolError("no rollout to watch; start one with `edgeloop rollout start`")
        rollout_id = recent[0]["rollout_id"]
    while True:
        r = _call(hub_url, token, "GET", f"/api/v1/rollouts/{rollout_id}")
        click.echo(format_rollout(r))
        sys.stdout.flush()
        if not watch or r["state"] not in ("running", "paused"):
            return
        time.sleep(interval)
        click.echo("")


def _operator_verb(action: str, summary: str):
    @rollout.command(action, help=f"{summary}\n\n\b\nExample:\n  edgeloop rollout {action} r4 --hub http://hub:8080")
    @_hub_options
    @click.argument("rollout_id")
    def verb(hub_url, token, rollout_id) -> None:
        r = _call(hub_url, token, "POST", f"/api/v1/rollouts/{rollout_id}/{action}")
        click.echo(f"rollout {r['rollout_id']} is {r['state']} at {r['stage']}"
                   + (f": {r['reason']}" if r["reason"] and r["state"] != "running" else ""))

    return verb


pause = _operator_verb("pause", "Hold a running rollout at its current stage: devices keep what they run, no gate "
                                "is judged, the stage's timeout stops.")
resume = _operator_verb("resume", "Continue a paused rollout from the stage it was held at.")
abort = _operator_verb("abort", "Stop an active rollout and return its group to the baseline.")
rollback = _operator_verb("rollback", "Return the group to the baseline, from an active or a finished (done) "
                                      "rollout.")


def format_rollout(r: dict) -> str:
    """A rollout's detail (GET /api/v1/rollouts/{id}) as the lines `rollout status` prints."""
    p = r["progress"]
    n = len(r["stages"])
    elapsed = f", {p['stage_elapsed_s']:.0f} s in stage" if p.get("stage_elapsed_s") is not None else ""
    lines = [f"rollout {r['rollout_id']}: {r['candidate']} over {r['baseline'] or '-'} to group {r['group']}",
             f"state: {r['state']}, stage {r['stage_index'] + 1}/{n} {r['stage']}{elapsed}; "
             f"{p['online']}/{p['devices']} devices online"]
    if r["state"] in ("rolled_back", "aborted"):
        lines.append(f"reason: {r['reason']}")
    lines.append("stages:")
    for st in p["stages"]:
        ready = f"ready {st['ready']}/{st['need']}" if st["ready"] is not None else ""
        lines.append(f"  {st['stage']:12} {st['status']:11} members {st['members']:<5} {ready}".rstrip())
    gate = r.get("gate")
    if gate:
        figures = " ".join(f"{k}={v}" for k, v in gate["figures"].items() if k not in ("members", "ready", "need"))
        lines.append(f"gate ({gate['stage']}): {gate['verdict']}: {gate['reason']}"
                     + (f" [{figures}]" if figures else ""))
    if p["relays"]:
        head = ("relay", "site", "devices", "online", "candidate", "baseline", "shadow", "other", "failed")
        rows = [head] + [tuple(str(rel[k] if k != "relay" else rel["relay_id"]) for k in head) for rel in p["relays"]]
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines.append("relays (devices running the candidate, the baseline, the candidate in shadow):")
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


@hub.command("export")
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Hub data folder.")
@click.option("--format", "fmt", type=click.Choice(["coco", "yolo", "labelstudio"]), required=True,
              help="coco: annotations.json + images/ (detection: bbox in pixels, an image without annotations "
                   "has no objects); yolo: classification train/<class>/ + classes.txt, detection data.yaml + "
                   "images/ + labels/ (Ultralytics); labelstudio: tasks.json + images/ (detection: rectangles "
                   "and labeling_config.xml).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to write (created if missing).")
@click.option("--image-url-base", default=None, metavar="URL",
              help="labelstudio, detection: task images at URL/images/<id>.jpg (something serving the export "
                   "folder) instead of Label Studio's local-files route /data/local-files/?d=images/<id>.jpg.")
@db_option
def export_cmd(data_dir, fmt, out_dir, image_url_base, db) -> None:
    """Export the hub's labeled samples (images named <sample_id>.jpg, and their labels) for labeling or
    training tools. A detection project (its model is a detector) exports its box labels; a
    classification project a class per image.

    \b
    Examples:
      edgeloop hub export --data /var/lib/edgeloop/hub --format labelstudio --out ls/
      edgeloop hub export --data /var/lib/edgeloop/hub --format yolo --out yolo/
      edgeloop hub export --data /var/lib/edgeloop/hub --format labelstudio --out ls/ \\
          --image-url-base https://files.example.com/ls
    """
    from .datasets import export
    from .store import HubStore

    store = HubStore(data_dir, db)
    path = export(store, fmt, out_dir, image_url_base=image_url_base)
    click.echo(f"exported {len(store.labeled())} labeled samples ({fmt}) to {path}")


@hub.command("import")
@click.option("--data", "data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Hub data folder.")
@click.option("--format", "fmt", type=click.Choice(["coco", "labelstudio"]), required=True,
              help="coco: an annotations.json; labelstudio: a JSON export of tasks.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@db_option
def import_cmd(data_dir, fmt, file, db) -> None:
    """Import labels from FILE, matching samples by id; all or nothing.

    A label name outside the project's classes, a sample the hub does not hold, or (detection) a box
    outside its image or of zero area refuses the whole file with the list of problems. A label that
    differs from the hub's replaces it and is counted.

    \b
    Example:
      edgeloop hub import --data /var/lib/edgeloop/hub --format labelstudio ls/export.json
    """
    from .datasets import import_labels
    from .store import HubStore

    click.echo(import_labels(HubStore(data_dir, db), fmt, file).summary())


from .init_cli import init  # noqa: E402 - these commands live in their own modules
from .tokens_cli import token  # noqa: E402

hub.add_command(init)
hub.add_command(token)
