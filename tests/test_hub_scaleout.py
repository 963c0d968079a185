"""Several hub processes on one database, as behind a load balancer: relays post the same samples to
both hubs at once and every sample is stored exactly once, by one hub, which alone answers "stored";
numbers handed out by either hub never collide; two rollout controllers advance each stage once.

Meant for PostgreSQL (EDGELOOP_TEST_DB=postgresql, as .ci/run runs it); with SQLite the two hubs
share one file on one host, which holds as well, so the module runs on both.
"""

from __future__ import annotations

import json
import random
import threading
import urllib.request

import numpy as np
import pytest

from edgeloop.procs import Service
from edgeloop.shared.protocol import SampleBatch, encode

import hubdb
from factories import make_candidate
from test_hub_rollouts import Fleet, LiveHub, detail, register, start, wait_state

pytestmark = pytest.mark.e2e
TOKEN = "scaleout-token"
RELAYS = 3  # posters, each sending every sample once, in its own order, to the hubs in turn
SAMPLES = 240
BATCH = 20


@pytest.fixture(scope="module")
def hubs(tmp_path_factory):
    """Two `hub serve` processes on one data folder (the blobs) and one database -> (urls, data)."""
    root = tmp_path_factory.mktemp("scaleout")
    data, golden = root / "data", root / "golden.npz"
    rng = np.random.default_rng(0)
    np.savez(golden, images=rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8), labels=np.arange(3),
             slices=np.array(["day", "dusk", "night"]))
    argv = ["hub", "serve", "--data", str(data), "--golden", str(golden), "--port", "0", "--token", TOKEN,
            "--rollout-period", "0.2", *hubdb.args(data)]
    # One after the other: the first creates the signing key in the shared folder, the second reads it.
    services = []
    for name in ("hub-a", "hub-b"):
        services.append(Service.edgeloop(name, argv, root / "logs", ready=True).start())
        services[-1].wait_ready(timeout=60)
    yield [s.info["url"] for s in services], data
    assert [s.stop() for s in services] == [0, 0]


def post(url: str, path: str, body: bytes, ctype: str) -> dict:
    req = urllib.request.Request(url + path, data=body, method="POST", headers={
        "Content-Type": ctype, "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status in (200, 201)
        return json.loads(resp.read())


def test_relays_posting_the_same_samples_to_two_hubs_store_each_once(hubs):
    urls, data = hubs
    cands = [make_candidate(value=i / SAMPLES, embedding=np.full(8, i % 7 + 1, np.float16)) for i in range(SAMPLES)]
    ids = {c.sample_id for c in cands}
    answers: list[tuple[str, int, list[str], dict]] = []  # (relay, hub index, batch ids, reply)
    errors: list[BaseException] = []
    go = threading.Barrier(RELAYS)

    def relay(r: int) -> None:
        try:
            order = random.Random(r).sample(cands, len(cands))
            go.wait()
            for i in range(0, len(order), BATCH):
                part = order[i:i + BATCH]
                hub = (i // BATCH + r) % len(urls)  # the load balancer's turn
                body = encode(SampleBatch(source=f"relay-{r}", site="site-s", samples=tuple(part)))
                reply = post(urls[hub], "/api/v1/samples", body, "application/msgpack")
                answers.append((f"relay-{r}", hub, [c.sample_id for c in part], reply))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=relay, args=(r,)) for r in range(RELAYS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(answers) == RELAYS * SAMPLES // BATCH

    # Each answer accounts for its batch; across all answers every id was "stored" exactly once.
    stored: dict[str, tuple[str, int]] = {}
    for relay_id, hub, batch_ids, reply in answers:
        assert sorted(reply["stored"] + reply["duplicates"]) == sorted(batch_ids)
        for sid in reply["stored"]:
            assert sid not in stored, f"{sid} stored twice: by hub {stored[sid][1]} and hub {hub}"
            stored[sid] = (relay_id, hub)
    assert set(stored) == ids
    assert {hub for _, hub in stored.values()} == {0, 1}  # both hubs took part

    # The database agrees with the answers: one row per sample, from the relay that was told "stored".
    store = hubdb.store(data)
    try:
        assert store.counts()["samples"] == SAMPLES
        for sid, (relay_id, _) in stored.items():
            row = store.sample(sid)
            assert row is not None and row["relay_id"] == relay_id
            assert store.blobs.exists(row["image_sha256"])  # the blob folder is shared
    finally:
        store.close()
    for url in urls:  # both hubs see the same data
        with urllib.request.urlopen(urllib.request.Request(
                url + "/api/v1/stats", headers={"Authorization": f"Bearer {TOKEN}"}), timeout=30) as resp:
            assert json.loads(resp.read())["samples"] == SAMPLES


def test_campaigns_made_on_either_hub_at_once_get_distinct_ids(hubs):
    urls, data = hubs
    store = hubdb.store(data)
    exemplar = next(r["sample_id"] for r in store.samples_with_status("new"))
    store.close()
    got: list[str] = []
    go = threading.Barrier(2)

    def make(hub: int) -> None:
        go.wait()
        for _ in range(5):
            body = json.dumps({"sample_ids": [exemplar], "threshold": 0.4, "quota": 5, "ttl_s": 600}).encode()
            got.append(post(urls[hub], "/api/v1/campaigns", body, "application/json")["campaign_id"])

    threads = [threading.Thread(target=make, args=(h,)) for h in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(got, key=lambda c: int(c.split("-")[1])) == [f"cmp-{i}" for i in range(1, 11)]


def test_two_controllers_on_one_database_advance_each_stage_once(tmp_path):
    """Two hubs' apps (in this process, each with its own store and controller) on one database;
    the fleet's reports and the operator's calls go to either."""
    register(tmp_path / "hub", "v1", "v2")
    a, b = LiveHub(tmp_path / "hub", period=0.01).start(), LiveHub(tmp_path / "hub", period=0.01).start()
    try:
        fleet = Fleet(a.url)
        fleet.step()
        rid = start(b, stages="shadow:10%,canary:25%,full", gates={"min_frames": 30})["rollout_id"]
        for hub, want in ((a, 1), (b, 2)):
            fleet.url = hub.url
            fleet.step()
            wait_state(a, rid, lambda r: r["stage_index"] == want, f"stage {want}")
        fleet.step()
        r = wait_state(b, rid, lambda r: r["state"] == "done", "done")
        a.settle()  # more passes of both controllers: nothing more happens
        b.settle()
        r = detail(a, rid)
        assert [(h["event"], h["stage_index"]) for h in r["history"]] == [
            ("started", 0), ("advanced", 0), ("advanced", 1), ("done", 2)]
        assert start(a, model="v1", stages="full")["rollout_id"] == "r2"  # numbered after r1, by either hub
    finally:
        a.stop()
        b.stop()
