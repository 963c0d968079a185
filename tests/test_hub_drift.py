"""Drift through a real hub: a model seeded by `edgeloop hub seed` (which keeps its drift reference),
audit samples posted as relays post them, and the API and the dashboard raising a drift alarm that
names the site whose street lights changed, while the same fleet without the change raises none."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import urllib.parse
import urllib.request

import numpy as np
import pytest

from edgeloop.procs import Service
from edgeloop.shared.artifact import unpack
from edgeloop.shared.ids import new_sample_id
from edgeloop.shared.images import encode_jpeg
from edgeloop.shared.protocol import Candidate, SampleBatch, encode
from edgeloop.shared.runtime import ModelRuntime
from edgeloop.sim.world import CONDITIONS, DAY_LENGTH, World

import hubdb
from test_hub_api import TOKEN, call
from test_hub_labeling import _browser_session, jcall

pytest.importorskip("torch")
pytestmark = pytest.mark.e2e

WORLD_SEED = 3
SITES = {"site-a": [f"cam-{i:03d}" for i in range(5)], "site-b": [f"cam-{i:03d}" for i in range(20, 25)]}
AUDIT_P = 0.4  # share of frames kept as audit samples (far above production's, for power in a short run)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A hub data folder seeded with v0 (trained on the world's seed set) and its golden set."""
    root = tmp_path_factory.mktemp("drift")
    world = World(seed=WORLD_SEED)
    world.seed_set(n=1200, conditions=CONDITIONS).save(root / "seed.npz")
    world.golden_set(per_condition=200).save(root / "golden.npz")
    subprocess.run([sys.executable, "-m", "edgeloop", "hub", "seed", "--data", str(root / "hub"), "--dataset",
                    str(root / "seed.npz"), "--golden", str(root / "golden.npz"), "--epochs", "10",
                    *hubdb.args(root / "hub")],
                   check=True, timeout=600, capture_output=True)
    return root


def serve(seeded, name: str) -> tuple[Service, str]:
    data = seeded / name
    hubdb.copytree(seeded / "hub", data)  # each run starts from the same seeded hub
    svc = Service.edgeloop(name, ["hub", "serve", "--data", str(data), "--golden", str(seeded / "golden.npz"),
                                  "--port", "0", "--token", TOKEN, *hubdb.args(data)], seeded / "logs",
                           ready=True).start()
    return svc, svc.wait_ready(timeout=60)["url"]


def post_audit(url: str, world: World) -> None:
    """Two sim days of both sites' audit samples, inferred by the hub's own v0 as agents would, posted
    the way relays post them, then labeled by the ground truth."""
    art = unpack(urllib.request.urlopen(urllib.request.Request(
        url + "/api/v1/models/v0/artifact", headers={"Authorization": f"Bearer {TOKEN}"}), timeout=30).read())
    runtime = ModelRuntime.load(art.onnx, art.manifest)
    truth = {}
    for site, cams in SITES.items():
        for cam in cams:
            keep = np.random.default_rng([WORLD_SEED, int(cam[4:])]).random(2 * DAY_LENGTH) < AUDIT_P
            frames = [world.frame(cam, i) for i in np.flatnonzero(keep)]
            cands = []
            for f, p in zip(frames, runtime.predict_batch([f.image for f in frames])):
                jpeg = encode_jpeg(f.image)
                cands.append(Candidate(
                    sample_id=new_sample_id(), device_id=f"dev-{cam[4:]}", camera_id=cam, captured_at=f.captured_at,
                    model_version="v0", probs=p.probs, embedding=p.embedding.astype(np.float16), image=jpeg,
                    image_sha256=hashlib.sha256(jpeg).hexdigest(), tags=dict(f.tags), reasons=("audit",)))
                truth[cands[-1].sample_id] = f.label
            for i in range(0, len(cands), 64):
                body = encode(SampleBatch(source=f"relay-{site}", site=site, samples=tuple(cands[i:i + 64])))
                assert call(url, "POST", "/api/v1/samples", body)[0] == 200
    status, reply = jcall(url, "POST", "/api/v1/labels", {"labels": truth, "source": "oracle"})
    assert status == 200 and reply["labeled"] == len(truth)


def dashboard(url: str) -> str:
    opener, _ = _browser_session(url)
    with opener.open(url + "/login", urllib.parse.urlencode({"token": TOKEN, "next": "/"}).encode()) as resp:
        return resp.read().decode()


def drift_section(html: str) -> str:
    return html[html.index('<section id="drift"'):html.index('<section id="live"')]


def test_an_undrifted_fleet_raises_no_alarm(seeded):
    svc, url = serve(seeded, "plain")
    try:
        post_audit(url, World(seed=WORLD_SEED))
        assert jcall(url, "GET", "/api/v1/drift")[1] == {"alarms": []}
        live = jcall(url, "GET", "/api/v1/live")[1]
        assert {e["key"] for e in live["accuracy"]["site"]} == set(SITES) and live["audit_labeled"] == live["audit"]
        html = drift_section(dashboard(url))
        assert 'id="no-drift"' in html and "data-site" not in html
    finally:
        assert svc.stop() == 0


def test_new_street_lights_at_one_site_raise_an_alarm_naming_it(seeded):
    svc, url = serve(seeded, "relit")
    try:
        # site-a's cameras get sodium street lights from the second sim day on.
        post_audit(url, World(seed=WORLD_SEED, drift={cam: ("sodium", DAY_LENGTH) for cam in SITES["site-a"]}))
        alarms = jcall(url, "GET", "/api/v1/drift")[1]["alarms"]
        assert {a["site"] for a in alarms} == {"site-a"}, alarms
        assert {a["kind"] for a in alarms} == {"shift", "accuracy_drop"}
        shift = next(a for a in alarms if a["kind"] == "shift")
        assert shift["model_version"] == "v0" and "beyond the training data" in shift["reason"]
        live = {e["key"]: e for e in jcall(url, "GET", "/api/v1/live")[1]["accuracy"]["site"]}
        assert live["site-a"]["accuracy"] < live["site-b"]["accuracy"]
        html = drift_section(dashboard(url))
        assert 'data-site="site-a" data-kind="shift"' in html and 'data-site="site-b"' not in html
    finally:
        assert svc.stop() == 0


def test_one_device_with_a_wrong_width_embedding_is_refused_and_cannot_take_the_dashboard_down(seeded):
    svc, url = serve(seeded, "odd-width")
    try:
        jpeg = encode_jpeg(np.zeros((32, 32, 3), np.uint8))
        odd = [Candidate(sample_id=new_sample_id(), device_id="dev-bad", camera_id="cam-bad", captured_at=1.0,
                         model_version="v0", probs=np.full(10, 0.1, np.float32), embedding=np.ones(w, np.float16),
                         image=jpeg, image_sha256=hashlib.sha256(jpeg).hexdigest(), tags={}, reasons=("audit",))
               for w in (3, 700)]
        # At ingest: refused alone, by name, with the width it should have had.
        status, reply = call(url, "POST", "/api/v1/samples", encode(SampleBatch("relay-a", "site-a", tuple(odd))))
        assert status == 200 and reply["stored"] == [] and len(reply["refused"]) == 2
        assert all("embedding: model v0 embeds in" in r["reason"] for r in reply["refused"])
        # Rows stored before the hub checked widths (or by another path) are skipped, not fatal.
        store = hubdb.store(seeded / "odd-width")
        store.ingest(odd, "site-a", "relay-a")
        store.close()
        for path in ("/api/v1/live", "/api/v1/drift"):
            assert jcall(url, "GET", path)[0] == 200, path
        assert 'id="no-drift"' in drift_section(dashboard(url))
    finally:
        assert svc.stop() == 0
