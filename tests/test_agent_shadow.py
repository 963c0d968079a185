"""Shadow mode: a candidate model runs beside the active one on a fraction of the frames, reports
agreement, confidence and latency, sends the frames where the two disagree, and never changes the
active model. A real agent process against a real mosquitto, models served over real HTTP."""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeloop.agent.pipeline import FrameSampler
from edgeloop.agent.shadow import DISAGREEMENT, HIST_BINS, ShadowRunner
from edgeloop.agent.sources import SourceFrame
from edgeloop.broker import free_port
from edgeloop.procs import Service, mosquitto_service, wait_port
from edgeloop.shared import config, topics
from edgeloop.shared.artifact import pack, sign_artifact, unpack
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.protocol import DesiredModel, DeviceState, SampleBatch, ShadowModel, decode, encode
from edgeloop.shared.rollout import DeviceReport
from edgeloop.shared.runtime import ModelRuntime

from factories import signed_desired, signed_models
from test_e2e import serve_bytes

pytest.importorskip("torch")  # the models are ClassifierNets exported with torch (the hub extra)
pytestmark = pytest.mark.e2e

SITE, DEVICE = "site-s", "dev-s"
# One kept per window of 10 frames (the simulated camera's clock runs at 1 frame a second).
AGENT_CONFIG = ('[sampling]\nmin_value = 0.0\nbudget = { per_hour = 360, window_s = 10 }\n'
                '[[sampling.signals]]\nkind = "least_confidence"\n')


# -- models signed by one hub key ---------------------------------------------------------------

def tampered(artifact: bytes) -> bytes:
    """The same artifact with one ONNX byte flipped: the signature no longer verifies."""
    art = unpack(artifact)
    onnx = bytearray(art.onnx)
    onnx[len(onnx) // 2] ^= 0xFF
    return pack(art.manifest, bytes(onnx), signature=art.signature, key_id=art.key_id)


def mismatched(artifact: bytes, version: str, private_pem: bytes) -> bytes:
    """Properly signed, but its manifest names 11 labels for a 10-class model: refused at load."""
    from edgeloop.shared.signing import load_private_key

    art = unpack(artifact)
    manifest = dataclasses.replace(art.manifest, version=version, labels=(*art.manifest.labels, "extra"))
    return sign_artifact(pack(manifest, art.onnx), load_private_key(private_pem))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    arts, pub, _ = signed_models(tmp_path_factory.mktemp("shadow-models"),
                                 {"m-a": 0, "m-a-copy": 0, "m-b": 1, "m-c": 2})
    arts["m-c"] = tampered(arts["m-c"])
    return arts, pub


# -- an agent process, its broker, its relay's HTTP cache ----------------------------------------

class Rig:
    """mosquitto + an HTTP server for the artifacts + one `edgeloop agent run` process running
    `active`, with a subscriber that records every state report and every sample sent."""

    def __init__(self, tmp_path: Path, artifacts: dict[str, bytes], pub: Path, active: str):
        self.artifacts = artifacts
        self.private_pem, self.seq = pub.with_name("hub.key").read_bytes(), 0  # signs desired statements
        self.logs = tmp_path / "logs"
        port = free_port()
        self.broker = mosquitto_service(port, tmp_path / "mosquitto", self.logs).start()
        wait_port(port)
        self.broker_url = f"mqtt://127.0.0.1:{port}"
        self.files = {f"/{v}": data for v, data in artifacts.items()}  # the server reads it live
        self.http, self.server = serve_bytes(self.files)
        self.data = tmp_path / "agent"
        (self.data / "models").mkdir(parents=True)
        (self.data / "models" / "active.model").write_bytes(artifacts[active])
        conf = tmp_path / "agent.toml"
        conf.write_text(AGENT_CONFIG)
        self.states: list[DeviceState] = []
        self.samples = []
        self.watch = Connection(self.broker_url, "test-watch", on_message=self._on_message,
                                subscriptions=[(topics.state(SITE, DEVICE), 1), (topics.samples(SITE, DEVICE), 1)])
        self.watch.start().wait_connected(10)
        self.relay = Connection(self.broker_url, "test-relay")
        self.relay.start().wait_connected(10)
        self.agent = Service("agent", [
            sys.executable, "-m", "edgeloop", "agent", "run", "--device", DEVICE, "--site", SITE,
            "--broker", self.broker_url, "--source", "sim:cam-000", "--data", str(self.data), "--pubkey", str(pub),
            "--config", str(conf), "--max-fps", "50", "--state-interval", "0.5"], self.logs).start()
        self.wait("the agent to run", lambda s: s.model_version == active and s.stats.get("frames_seen", 0) > 5, 60)

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic.endswith("/state"):
            self.states.append(decode(msg.payload, DeviceState))
        else:
            self.samples.extend(decode(msg.payload, SampleBatch).samples)

    @property
    def state(self) -> DeviceState | None:
        return self.states[-1] if self.states else None

    def ref(self, version: str, path: str | None = None) -> dict:
        data = self.artifacts[version]
        return {"version": version, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                "url": f"{self.http}{path or '/' + version}"}

    def desire(self, version: str, shadow: str | None = None, fraction: float = 0.5,
               max_latency_ms: float | None = None, path: str | None = None) -> None:
        """Publish the desired state as a relay does: retained, QoS 1."""
        desired = DesiredModel(**self.ref(version, path), max_latency_ms=max_latency_ms,
                               shadow=ShadowModel(**self.ref(shadow), fraction=fraction) if shadow else None)
        self.seq += 1  # each one the hub's newer word
        self.publish(signed_desired(self.private_pem, desired, SITE, DEVICE, self.seq))

    def publish(self, desired: DesiredModel) -> None:
        self.relay.publish(topics.desired(SITE, DEVICE), encode(desired), qos=1, retain=True).wait_for_publish(10)

    def wait(self, what: str, cond, timeout: float = 30) -> DeviceState:
        """-> the first reported state (from now on) that satisfies cond."""
        deadline = time.monotonic() + timeout
        seen = max(0, len(self.states) - 1)
        while time.monotonic() < deadline:
            for st in self.states[seen:]:
                if st.status == "online" and cond(st):
                    return st
            seen = max(seen, len(self.states) - 1)
            if not self.agent.alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last state {self.state}\n{self.agent.tail(30)}")

    def log(self) -> str:
        return self.agent.log_path.read_text(errors="replace")

    def close(self) -> None:
        try:
            assert self.agent.stop() == 0, self.agent.tail(30)
        finally:
            self.watch.stop()
            self.relay.stop()
            self.server.shutdown()
            self.broker.stop()


@pytest.fixture
def rig(tmp_path):
    rigs = []

    def make(artifacts, pub, active="m-a") -> Rig:
        r = Rig(tmp_path / f"rig-{len(rigs)}", artifacts, pub, active)
        rigs.append(r)
        return r

    yield make
    for r in rigs:
        r.close()


def hist(st: DeviceState, model: str) -> list[float]:
    return [st.stats[f"conf_hist_{model}_{i}"] for i in range(HIST_BINS)]


# -- tests -----------------------------------------------------------------------------------------

def test_a_shadow_reports_agreement_sends_disagreements_and_never_touches_the_active_model(models, rig):
    arts, pub = models
    r = rig(arts, pub)

    # The same weights under another version: it agrees on every frame, with the same confidences.
    r.desire("m-a", shadow="m-a-copy")
    st = r.wait("the copy to run in shadow", lambda s: s.facts.get("shadow_version") == "m-a-copy"
                and s.stats.get("shadow_frames", 0) >= 40)
    assert st.model_version == "m-a"
    n = st.stats["shadow_frames"]
    assert st.stats["shadow_agree"] == n
    assert hist(st, "active") == hist(st, "shadow") and sum(hist(st, "active")) == n
    assert st.stats["shadow_mean_confidence"] == pytest.approx(st.stats["active_mean_confidence_on_shadow_frames"])
    assert 0 < n < st.stats["frames_seen"]  # a fraction of the frames
    assert (r.data / "models" / "shadow.model").read_bytes() == arts["m-a-copy"]
    report = DeviceReport.from_state(st)  # what the hub's gates read
    assert (report.model_version, report.shadow_version, report.shadow_frames, report.shadow_agree) == (
        "m-a", "m-a-copy", n, n)
    assert report.mean_confidence == st.stats["mean_confidence"] and 0 < report.mean_confidence <= 1
    assert report.shadow_mean_confidence is not None and report.active_mean_confidence_on_shadow_frames is not None
    assert report.shadow_latency_p95_ms > 0 and report.failed_versions == ()

    # Another model: its figures start from zero, it disagrees on some frames, and those frames go up.
    copy_frames = n
    r.desire("m-a", shadow="m-b")
    st = r.wait("the other model to run in shadow", lambda s: s.facts.get("shadow_version") == "m-b"
                and s.stats.get("shadow_frames", 0) >= 60)
    first = next(s for s in r.states if s.facts.get("shadow_version") == "m-b")
    assert first.stats["shadow_frames"] < copy_frames  # counted afresh
    n, agree = st.stats["shadow_frames"], st.stats["shadow_agree"]
    assert 0 <= agree < n
    assert sum(hist(st, "active")) == sum(hist(st, "shadow")) == n
    assert DeviceReport.from_state(st).shadow_agree == agree
    assert st.model_version == "m-a"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(DISAGREEMENT in c.reasons for c in r.samples):
        time.sleep(0.2)
    flagged = [c for c in r.samples if DISAGREEMENT in c.reasons]
    assert flagged, "no frame the two models disagree on was sent"
    # Sent as the active model saw them, and worth more than what the signals alone score (at most 1).
    assert all(c.model_version == "m-a" and c.value >= 1.0 and c.reasons[0] == DISAGREEMENT for c in flagged)
    assert {c.model_version for c in r.samples} == {"m-a"}

    # No shadow in the desired state any more: it is dropped, figures and file with it.
    r.desire("m-a")
    st = r.wait("the shadow to be dropped", lambda s: "shadow_version" not in s.facts
                and "shadow_frames" not in s.stats)
    assert st.model_version == "m-a" and not (r.data / "models" / "shadow.model").exists()
    frames = st.stats["frames_seen"]
    r.wait("frames to keep flowing", lambda s: s.stats["frames_seen"] > frames + 20)


def test_a_shadow_that_fails_verification_is_reported_not_retried_and_frames_keep_flowing(models, rig):
    arts, pub = models
    r = rig(arts, pub)
    r.desire("m-a", shadow="m-b")
    r.wait("a shadow to run", lambda s: s.facts.get("shadow_version") == "m-b" and s.stats["shadow_frames"] > 0)

    r.desire("m-a", shadow="m-c")  # m-c's signature does not verify
    st = r.wait("the bad shadow to be reported", lambda s: s.facts.get("load_failed_version") == "m-c")
    assert "signature" in st.facts["rollback_reason"], st.facts
    assert "shadow_version" not in st.facts and "shadow_frames" not in st.stats  # the old one went too
    assert st.model_version == "m-a"
    report = DeviceReport.from_state(st)
    assert report.failed_versions == ("m-c",) and "signature" in report.failure_reason
    frames = st.stats["frames_seen"]
    r.wait("frames to keep flowing", lambda s: s.stats["frames_seen"] > frames + 100)  # 2 s: past a retry's backoff
    r.desire("m-a", shadow="m-c")  # the relay sends the same desired state again
    frames = r.state.stats["frames_seen"]
    st = r.wait("frames to keep flowing", lambda s: s.stats["frames_seen"] > frames + 50)
    assert r.log().count("m-c refused") == 1, "a verified-bad shadow was fetched again"
    assert st.facts.get("load_failed_version") == "m-c" and st.model_version == "m-a"
    assert not (r.data / "models" / "shadow.model").exists()

    # The desired state moves on: the failure is forgotten, the new shadow runs.
    r.desire("m-a", shadow="m-a-copy")
    st = r.wait("the next shadow", lambda s: s.facts.get("shadow_version") == "m-a-copy")
    assert "load_failed_version" not in st.facts and "rollback_reason" not in st.facts


# -- in process: the selection bonus, the runner's figures ---------------------------------------

def test_a_disagreement_is_kept_first_in_its_window_but_within_its_budget(models):
    arts, _ = models
    rt = ModelRuntime.load(unpack(arts["m-a"]).onnx, unpack(arts["m-a"]).manifest)
    cfg = config.loads('[sampling]\nmin_value = 0.0\nbudget = { per_hour = 720, window_s = 10 }\n'  # 2 a window
                       '[[sampling.signals]]\nkind = "least_confidence"\n').sampling
    sampler = FrameSampler(cfg, "dev-1", "site-0")
    rng = np.random.default_rng(0)
    disagree = {2, 5, 7}
    kept = []
    for i in range(10):
        frame = SourceFrame(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8), 1_000_000.0 + i, "cam0", i)
        kept += sampler.consider(frame, rt.predict(frame.image), rt, f"s{i:02d}", disagreement=i in disagree)
    kept += sampler.flush()
    assert len(kept) == 2  # the operator's budget holds
    assert {int(c.captured_at - 1_000_000) for c in kept} <= disagree
    assert all(c.reasons[0] == DISAGREEMENT and c.value >= 1.0 for c in kept)


def test_the_runner_reuses_the_batch_and_counts_consistently(models):
    arts, _ = models
    a = ModelRuntime.load(unpack(arts["m-a"]).onnx, unpack(arts["m-a"]).manifest)
    b = ModelRuntime.load(unpack(arts["m-b"]).onnx, unpack(arts["m-b"]).manifest)
    runner = ShadowRunner(b, fraction=0.5)
    ids = [f"frame-{i}" for i in range(400)]
    chosen = [i for i in ids if runner.wants(i)]
    assert chosen == [i for i in ids if ShadowRunner(b, fraction=0.5).wants(i)]  # fixed by the id
    assert 120 < len(chosen) < 280
    rng = np.random.default_rng(1)
    agreed = []
    for _ in range(30):
        img = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
        batch = a.prepare([img])
        pred = a.infer(batch, [img])[0]
        agreed.append(runner.observe(img, batch, a, pred))
        assert agreed[-1] == (b.predict(img).label == pred.label)
    stats = runner.stats()
    assert stats["shadow_frames"] == 30 and stats["shadow_agree"] == sum(agreed) and stats["shadow_errors"] == 0
    assert sum(stats[f"conf_hist_shadow_{i}"] for i in range(HIST_BINS)) == 30
    assert runner.restarted().stats()["shadow_frames"] == 0
    # A frame the shadow cannot take is counted as an error, never raised into the frame loop.
    assert runner.observe(img, np.zeros((1, 3, 5, 5), np.float32), a, pred) is None
    assert runner.stats()["shadow_errors"] == 1 and runner.stats()["shadow_frames"] == 30
