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

from .scale_data import candidates, jpeg

BATCH = 128
CLIENTS = 4
TOKEN = "bench-scale-token"


def _batches(n: int, seed: int) -> list[list]:
    cands = [c for _, c in candidates(n, 20, jpeg(20.0, seed), seed)]
    return [cands[i:i + BATCH] for i in range(0, n, BATCH)]


def _raw(batches, data: Path, db: str | None) -> float:
    """CLIENTS threads (as many as post to the hubs) calling the store directly -> samples/s."""
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
        t0 = time.perf_counter()
        threads = [threading.Thread(target=loop) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return stored[0] / (time.perf_counter() - t0)
    finally:
        store.close()


def _post_all(urls: list[str], bodies: list[bytes]) -> float:
    stored, lock, errors = [0], threading.Lock(), []
    todo = list(enumerate(bodies))

    def client(k: int) -> None:
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
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"posting to the hub failed: {errors[0]}")
    return stored[0] / (time.perf_counter() - t0)


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


def _hub_rate(processes: int, batches, data: Path, db: str | None, logs: Path) -> float:
    hubs = _hubs(processes, data, db, logs)
    try:
        urls = [h.wait_ready(120)["url"] for h in hubs]
        bodies = [encode(SampleBatch(source="relay-s", site="site-s", samples=tuple(b))) for b in batches]
        return _post_all(urls, bodies)
    finally:
        for h in hubs:
            h.stop()


def hub_ingest(samples: int, work: Path, seed: int = 0, engines=("sqlite", "postgresql")) -> dict:
    work = Path(work) / f"hub-{time.time_ns()}"
    logs = work / "logs"
    out: dict = {"batch": BATCH, "clients": CLIENTS}
    arms = [(_batches(samples, seed + k), k) for k in range(4)]  # fresh ids for every arm
    if "sqlite" in engines:
        out["sqlite"] = {"hub_raw_per_s": _raw(arms[0][0], work / "sqlite-raw", None),
                         "hub_per_s": _hub_rate(1, arms[1][0], work / "sqlite-hub", None, logs)}
    if "postgresql" in engines:
        from .scale_pg import Postgres

        pg = Postgres().start()
        try:
            raw = _raw(arms[0][0], work / "pg-raw", pg.create("raw"))
            one = _hub_rate(1, arms[1][0], work / "pg-one", pg.create("one"), logs)
            two = _hub_rate(2, arms[2][0], work / "pg-two", pg.create("two"), logs)
        finally:
            pg.stop()
        out["postgresql"] = {"hub_raw_per_s": raw, "hub_per_s": one, "two_hubs_per_s": two}
    out["samples"] = samples
    return out


def hub_lines(r: dict, targets: dict) -> list[str]:
    lines = []
    for engine in ("sqlite", "postgresql"):
        e = r.get(engine)
        if not e:
            continue
        ratio = e["hub_per_s"] / e["hub_raw_per_s"]
        target = f"; target >= {targets['hub_sqlite_x_raw']}x: {'met' if ratio >= targets['hub_sqlite_x_raw'] else 'NOT met'}" \
            if engine == "sqlite" else ""
        lines.append(f"hub ingest {engine}: hub/raw {ratio:.2f}x ({e['hub_per_s']:.0f} / {e['hub_raw_per_s']:.0f} "
                     f"samples/s{target})")
        if "two_hubs_per_s" in e:
            two = e["two_hubs_per_s"] / e["hub_per_s"]
            lines.append(f"hub ingest {engine}: two hubs / one {two:.2f}x ({e['two_hubs_per_s']:.0f} / "
                         f"{e['hub_per_s']:.0f} samples/s; target >= {targets['two_hubs_x_one']}x: "
                         f"{'met' if two >= targets['two_hubs_x_one'] else 'NOT met'})")
    return lines
