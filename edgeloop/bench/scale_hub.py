"""`bench scale`'s hub part: samples per second hub processes store from relays' batches, against the
limit the storage sets: the same rows and blobs written by a bare loop in the same run.

Per engine (SQLite: DATA/hub.sqlite; PostgreSQL: a throwaway durable server, bench/scale_pg.py):
- `hub_per_s`: `edgeloop hub serve` processes as deployed; CLIENTS threads play relays, each posting
  SampleBatches of BATCH candidates (a relay's batch_items) to POST /api/v1/samples, round robin over
  the hub processes; samples stored / wall time. PostgreSQL also runs with two hub processes on one
  database and one data folder (blobs shared), the scale-out DESIGN.md describes.
- `hub_raw_per_s`: the limit: CLIENTS threads in this process calling the hub's store
  (`HubStore.ingest`: blobs, each fsynced, then rows in one transaction per batch) on a fresh folder
  and database with the same batches: no HTTP, no msgpack, no auth, no event loop.
Each pass also says how busy the box was meanwhile (`box`): a second hub process gains only what
the first left idle.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from edgeloop.broker import free_port
from edgeloop.procs import Service
from edgeloop.shared.protocol import SampleBatch, encode

from .cpu_use import BoxMeter, describe
from .scale_data import candidates, jpeg

BATCH = 128
CLIENTS = 4
TOKEN = "bench-scale-token"


def _batches(n: int, seed: int) -> list[list]:
    cands = [c for _, c in candidates(n, 20, jpeg(20.0, seed), seed)]
    return [cands[i:i + BATCH] for i in range(0, n, BATCH)]


def _raw(batches, data: Path, db: str | None, spans: dict, key: str) -> float:
    """CLIENTS threads (as many as post to the hubs) calling the store directly -> samples/s; when,
    in spans[key] (wall clock)."""
    from edgeloop.hub.store import HubStore

    store = HubStore(data, db)
    todo, lock, stored = list(batches), threading.Lock(), [0]

    def loop() -> None:
        while True:
            with lock:
                if not todo:
                    return
                b = todo.pop(0)
            n = len(store.ingest(b, "site-s", "relay-s")[0])
            with lock:
                stored[0] += n
    try:
        seconds = _timed(loop, spans, key)
        return stored[0] / seconds
    finally:
        store.close()


def _timed(work, spans: dict, key: str) -> float:
    """work() in CLIENTS threads at once -> seconds until all ended; when, in spans[key]."""
    threads = [threading.Thread(target=work) for _ in range(CLIENTS)]
    t0, wall0 = time.perf_counter(), time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans[key] = (wall0, time.time())
    return time.perf_counter() - t0


def _post_all(urls: list[str], bodies: list[bytes], spans: dict, key: str) -> float:
    stored, lock, errors = [0], threading.Lock(), []
    todo = list(enumerate(bodies))

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                i, body = todo.pop(0)
            req = urllib.request.Request(urls[i % len(urls)] + "/api/v1/samples", data=body, method="POST", headers={
                "Content-Type": "application/msgpack", "Authorization": f"Bearer {TOKEN}"})
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:
                    n = len(json.loads(resp.read())["stored"])
            except Exception as exc:  # noqa: BLE001 - reported after the run
                errors.append(repr(exc))
                return
            with lock:
                stored[0] += n
    seconds = _timed(client, spans, key)
    if errors:
        raise RuntimeError(f"posting to the hub failed: {errors[0]}")
    return stored[0] / seconds


def _hubs(n: int, data: Path, db: str | None, logs: Path) -> list[Service]:
    golden = data.parent / "golden.npz"
    if not golden.exists():
        rng = np.random.default_rng(0)
        np.savez(golden, images=rng.integers(0, 255, (6, 64, 64, 3), dtype=np.uint8), labels=np.arange(6),
                 slices=np.array(["day", "dusk", "night"] * 2))
    out = []
    for i in range(n):
        out.append(Service.edgeloop(f"hub-{data.name}-{i}", [
            "hub", "serve", "--data", str(data), "--golden", str(golden), "--port", str(free_port()),
            "--token", TOKEN, *(["--db", db] if db else [])], logs, ready=True).start())
    return out


def _hub_rate(processes: int, batches, data: Path, db: str | None, logs: Path, spans: dict, key: str) -> float:
    hubs = _hubs(processes, data, db, logs)
    try:
        urls = [h.wait_ready(120)["url"] for h in hubs]
        bodies = [encode(SampleBatch(source="relay-s", site="site-s", samples=tuple(b))) for b in batches]
        return _post_all(urls, bodies, spans, key)
    finally:
        for h in hubs:
            h.stop()


def hub_ingest(samples: int, work: Path, seed: int = 0, engines=("sqlite", "postgresql")) -> dict:
    work = Path(work) / f"hub-{time.time_ns()}"
    logs = work / "logs"
    out: dict = {"batch": BATCH, "clients": CLIENTS}
    arms = [(_batches(samples, seed + k), k) for k in range(4)]  # fresh ids for every arm
    # How busy the box was in each pass: two hub processes gain only what one left idle.
    with BoxMeter() as meter:
        spans: dict = {}
        if "sqlite" in engines:
            out["sqlite"] = {"hub_raw_per_s": _raw(arms[0][0], work / "sqlite-raw", None, spans, "sqlite_raw"),
                             "hub_per_s": _hub_rate(1, arms[1][0], work / "sqlite-hub", None, logs, spans, "sqlite_one")}
        if "postgresql" in engines:
            out["postgresql"] = _postgres(arms, work, logs, spans)
    for engine in ("sqlite", "postgresql"):
        if engine in out:
            out[engine]["box"] = {k.split("_", 1)[1]: meter.use(*v) for k, v in spans.items() if k.startswith(engine)}
    out["samples"] = samples
    return out


def _postgres(arms, work: Path, logs: Path, spans: dict) -> dict:
    from .scale_pg import Postgres

    pg = Postgres().start()
    try:
        raw = _raw(arms[0][0], work / "pg-raw", pg.create("raw"), spans, "postgresql_raw")
        one = _hub_rate(1, arms[1][0], work / "pg-one", pg.create("one"), logs, spans, "postgresql_one")
        two = _hub_rate(2, arms[2][0], work / "pg-two", pg.create("two"), logs, spans, "postgresql_two")
    finally:
        pg.stop()
    return {"hub_raw_per_s": raw, "hub_per_s": one, "two_hubs_per_s": two}


def hub_lines(r: dict, targets: dict) -> list[str]:
    lines = []
    for engine in ("sqlite", "postgresql"):
        e = r.get(engine)
        if not e:
            continue
        ratio = e["hub_per_s"] / e["hub_raw_per_s"]
        target = f"; target >= {targets['hub_sqlite_x_raw']}x: {'met' if ratio >= targets['hub_sqlite_x_raw'] else 'NOT met'}" \
            if engine == "sqlite" else ""
        box = e.get("box", {})
        lines.append(f"hub ingest {engine}: hub/raw {ratio:.2f}x ({e['hub_per_s']:.0f} / {e['hub_raw_per_s']:.0f} "
                     f"samples/s{target}); the box with the hub: {describe(box.get('one'))}; "
                     f"with the bare store: {describe(box.get('raw'))}")
        if "two_hubs_per_s" in e:
            two = e["two_hubs_per_s"] / e["hub_per_s"]
            lines.append(f"hub ingest {engine}: two hubs / one {two:.2f}x ({e['two_hubs_per_s']:.0f} / "
                         f"{e['hub_per_s']:.0f} samples/s; target >= {targets['two_hubs_x_one']}x: "
                         f"{'met' if two >= targets['two_hubs_x_one'] else 'NOT met'}); the box with two hubs: "
                         f"{describe(box.get('two'))}; with one: {describe(box.get('one'))}")
    return lines
