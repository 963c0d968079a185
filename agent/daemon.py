"""The agent: capture -> infer -> score -> select -> outbox -> uplink, and apply the desired model.

Threads: the main loop (frames), the uplink (outbox -> broker), paho's network loop (which hands
`desired` messages to the OTA worker), and the reporter (retained `state` every few seconds).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgeloop.shared import topics
from edgeloop.shared.config import SamplingConfig
from edgeloop.shared.errors import ConfigError, ImageError, ProtocolError
from edgeloop.shared.ids import frame_sample_id
from edgeloop.shared.images import encode_jpeg, sha256
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.outbox import SqliteOutbox
from edgeloop.shared.protocol import (MAX_IMAGE_BYTES, Candidate, CampaignSet, DesiredModel, DeviceState, check_id,
                                      decode, encode)
from edgeloop.shared.sampling.campaigns import CampaignMatcher
from edgeloop.shared.runtime import ModelRuntime
from edgeloop.shared.sampling import WindowedSelector, score
from edgeloop.shared.sampling.policy import is_audit, window_picker

from .ota import ModelStore
from .sources import SourceFrame, open_source
from .uplink import Uplink

log = logging.getLogger("edgeloop.agent")
AUDIT_PRIORITY = 100.0
CAMPAIGN_PRIORITY = 50.0


@dataclass(frozen=True)
class AgentSettings:
    device_id: str
    site: str
    broker: str
    source: str
    data_dir: Path
    sampling: SamplingConfig
    camera_id: str | None = None
    sim_seed: int = 0
    outbox_quota: int = 50 << 20
    max_fps: float = 0.0  # 0: as fast as frames come
    frames_per_model: int = 0  # sim only: process N frames per model version, then wait for the next
    state_interval: float = 2.0
    threads: int = 1
    public_key: object = None  # Ed25519 public key of the hub (required to load any model)
    username: str | None = None
    password: str | None = None


class Agent:
    def __init__(self, s: AgentSettings):
        for name in ("device_id", "site"):
            try:
                check_id(getattr(s, name), name)
            except ProtocolError as exc:  # an id that cannot be an MQTT topic level
                raise ConfigError(f"--{name.split('_')[0]}: {exc}") from exc
        self.s = s
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = SqliteOutbox(s.data_dir / "outbox.sqlite", s.outbox_quota)
        if s.public_key is None:
            raise ConfigError("the agent needs the hub's public key (--pubkey) to verify models")
        self.models = ModelStore(s.data_dir / "models", s.public_key, threads=s.threads)
        self.runtime: ModelRuntime | None = self.models.load_active()
        self._cursor_path = s.data_dir / "cursor.json"
        cursor = self._read_cursor()
        self.source = open_source(s.source, s.camera_id, s.sim_seed, start=cursor.get("position", 0))
        self.selector = WindowedSelector(s.sampling.budget, s.sampling.min_value, pick=window_picker(s.sampling))
        self.stop_event = threading.Event()
        self.model_changed = threading.Event()
        self._desired: queue.Queue[DesiredModel] = queue.Queue()
        self._swap = threading.Lock()  # the runtime and its frame count change together
        self.frames_seen = 0
        self.frames_this_model = cursor.get("frames_this_model", 0) if self.runtime and cursor.get(
            "model_version") == self.runtime.version else 0
        self.corrupt = 0
        self.offered = 0
        self.audited = 0
        self.campaign_kept = 0
        self.raw_bytes = 0
        self.latencies: deque[float] = deque(maxlen=512)
        self.last_error = ""
        self._fps_mark = (time.monotonic(), 0)
        self.fps = 0.0
        st = topics.state(s.site, s.device_id)
        self.conn = Connection(
            s.broker, client_id=f"agent-{s.device_id}", username=s.username or s.device_id, password=s.password,
            will=(st, encode(DeviceState(s.device_id, "offline"))), on_message=self._on_message,
            subscriptions=[(topics.desired(s.site, s.device_id), 1), (topics.campaigns(s.site), 1)])
        self.campaigns = CampaignMatcher()
        self._campaigns_in: CampaignSet | None = None  # handed from paho's thread to the frame loop
        self.uplink = Uplink(self.conn, self.outbox, s.site, s.device_id)

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self) -> None:
        log.info("agent %s starting: site %s, source %s, model %s", self.s.device_id, self.s.site, self.s.source,
                 self.runtime.version if self.runtime else "none (waiting for desired)")
        self.conn.start()
        self.uplink.start()
        workers = [threading.Thread(target=self._ota_worker, name="ota", daemon=True),
                   threading.Thread(target=self._reporter, name="reporter", daemon=True)]
        for w in workers:
            w.start()
        try:
            self._frames()
        finally:
            self._commit(self.selector.close_until(None))
            self._save_cursor()
            self.stop_event.set()
            self.uplink.stop()
            self.uplink.join(timeout=15)
            self.conn.stop(final=(topics.state(self.s.site, self.s.device_id), encode(self.state("offline"))))
            self.outbox.close()
            log.info("agent %s stopped", self.s.device_id)

    def stop(self) -> None:
        self.stop_event.set()

    # -- the frame loop ----------------------------------------------------------------------
    def _frames(self) -> None:
        min_dt = 1.0 / self.s.max_fps if self.s.max_fps > 0 else 0.0
        frames = iter(self.source)
        while not self.stop_event.is_set():
            rt = self.runtime
            if rt is None or (self.s.frames_per_model and self.frames_this_model >= self.s.frames_per_model):
                self._commit(self.selector.close_until(None))  # end of this model's run: flush
                self._save_cursor()
                self.model_changed.wait(0.5)
                self.model_changed.clear()
                continue
            t0 = time.monotonic()
            try:
                frame = next(frames)
            except StopIteration:
                log.info("source %s ended", self.s.source)
                return
            try:
                self._process(rt, frame)
            except ImageError as exc:
                self.corrupt += 1
                self.last_error = str(exc)
            if min_dt:
                self.stop_event.wait(max(0.0, min_dt - (time.monotonic() - t0)))

    def _process(self, rt: ModelRuntime, frame: SourceFrame) -> None:
        if frame.image is None or frame.image.ndim != 3 or frame.image.shape[2] != 3 or frame.image.dtype != np.uint8:
            raise ImageError(f"frame {frame.index}: expected an (H, W, 3) uint8 image")
        pred = rt.predict(frame.image)
        self.latencies.append(pred.latency_ms)
        self.frames_seen += 1
        with self._swap:
            if rt is self.runtime:  # a frame of the model that just left does not count for the new one
                self.frames_this_model += 1
        self.raw_bytes += frame.image.nbytes
        sid = frame_sample_id(frame.captured_at, self.s.device_id, frame.camera_id, frame.index)
        value, scores, reasons = score(pred.probs, sid, self.s.sampling.signals, self.s.sampling.seed)
        audit = is_audit(sid, self.s.sampling)
        if audit:
            reasons = ("audit", *reasons)
        if self._campaigns_in is not None:
            self.campaigns.update(self._campaigns_in.campaigns)
            self._campaigns_in = None
        campaign = None if audit else self.campaigns.match(pred.embedding, time.time())
        if campaign:
            reasons = (f"campaign:{campaign}", *reasons)
        if audit or campaign or value >= self.s.sampling.min_value:
            jpeg = encode_jpeg(frame.image)
            image = frame.image
            while len(jpeg) > MAX_IMAGE_BYTES:  # a 4K frame: halve it until the protocol accepts it
                image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
                jpeg = encode_jpeg(image)
            cand = Candidate(
                sample_id=sid, device_id=self.s.device_id, camera_id=frame.camera_id, captured_at=frame.captured_at,
                model_version=rt.version, probs=pred.probs,
                embedding=None if pred.embedding is None else pred.embedding.astype(np.float16),
                image=jpeg, image_sha256=sha256(jpeg), tags={**frame.tags, "site": self.s.site},
                scores=scores, reasons=reasons, value=value)
            if audit or campaign:
                # Outside the window budget, sent before and evicted after ordinary candidates: audit is
                # the unbiased sample of what the camera sees; a campaign has its own quota.
                self.audited += audit
                self.campaign_kept += bool(campaign)
                self._commit([cand.with_value(value + (AUDIT_PRIORITY if audit else CAMPAIGN_PRIORITY))])
            else:
                self.offered += self.selector.offer(cand)
        closed = self.selector.close_until(frame.captured_at)
        if closed:
            self._commit(closed)
            self._save_cursor()

    def _commit(self, kept: list[Candidate]) -> None:
        for c in kept:
            self.outbox.put(c, c.value)
        if kept:
            self.uplink.wake.set()

    # -- desired model -----------------------------------------------------------------------
    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic.endswith("/campaigns"):
            try:
                self._campaigns_in = decode(msg.payload, CampaignSet)
            except ProtocolError as exc:
                self.last_error = f"ignored malformed campaigns: {exc}"
                log.warning(self.last_error)
            return
        try:
            desired = decode(msg.payload, DesiredModel)
        except ProtocolError as exc:
            # A malformed desired state never touches the active model.
            self.last_error = f"ignored a malformed desired message: {exc}"
            log.warning(self.last_error)
            return
        self._desired.put(desired)

    def _ota_worker(self) -> None:
        """Apply the newest desired model; on failure retry it with backoff while it stays the newest."""
        pending: DesiredModel | None = None
        retry_at, backoff = 0.0, 2.0
        while not self.stop_event.is_set():
            try:
                pending = self._desired.get(timeout=0.5)
                while not self._desired.empty():  # only the newest desired state matters
                    pending = self._desired.get_nowait()
                retry_at, backoff = 0.0, 2.0
            except queue.Empty:
                pass
            if pending is None or time.monotonic() < retry_at:
                continue
            if self.runtime and self.runtime.version == pending.version:
                pending = None
                continue
            try:
                self._apply(pending)
                pending = None
            except Exception as exc:  # noqa: BLE001 - whatever went wrong, the active model stays
                self.last_error = f"model {pending.version} refused: {exc}"
                log.error(self.last_error)
                retry_at, backoff = time.monotonic() + backoff, min(backoff * 2, 120.0)
                self.publish_state()

    def _apply(self, desired: DesiredModel) -> None:
        data = self.models.fetch(desired)
        rt = self.models.load_bytes(data)
        if rt.version != desired.version:
            raise ProtocolError(f"artifact holds version {rt.version}, desired says {desired.version}")
        self.models.install(data)
        previous = self.runtime.version if self.runtime else None
        with self._swap:
            self.runtime = rt
            self.frames_this_model = 0
        self.model_changed.set()
        log.info("model %s active (was %s)", rt.version, previous)
        self.publish_state()

    # -- telemetry ---------------------------------------------------------------------------
    def state(self, status: str = "online") -> DeviceState:
        lat = np.asarray(self.latencies) if self.latencies else np.zeros(1)
        c = self.outbox.counters() if status == "online" else {}
        stats = {
            "frames_seen": self.frames_seen, "frames_this_model": self.frames_this_model, "fps": round(self.fps, 2),
            "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p95_ms": float(np.percentile(lat, 95)),
            "offered": self.offered, "audit": self.audited, "campaign": self.campaign_kept, "kept": c.get("accepted", 0), "evicted": c.get("evicted", 0),
            "refused": c.get("refused", 0), "sent": c.get("sent", 0), "corrupt": self.corrupt,
            "bytes_sent": self.uplink.bytes_sent, "raw_bytes": self.raw_bytes,
        }
        if status == "online":
            stats.update(outbox_items=len(self.outbox), outbox_bytes=self.outbox.used_bytes)
        return DeviceState(self.s.device_id, status, self.runtime.version if self.runtime else None,
                           ts=time.time(), stats=stats, last_error=self.last_error[:1000])

    def publish_state(self) -> None:
        now, n = time.monotonic(), self.frames_seen
        t0, n0 = self._fps_mark
        if now - t0 >= 1.0:
            self.fps, self._fps_mark = (n - n0) / (now - t0), (now, n)
        if self.conn.connected.is_set():
            self.conn.publish(topics.state(self.s.site, self.s.device_id), encode(self.state()), qos=1, retain=True)

    def _reporter(self) -> None:
        while not self.stop_event.wait(self.s.state_interval):
            try:
                self.publish_state()
            except Exception:  # noqa: BLE001 - telemetry must never stop the agent
                log.exception("state report failed")

    # -- where the camera was, so a restart does not replay frames -----------------------------
    def _read_cursor(self) -> dict:
        try:
            return json.loads(self._cursor_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save_cursor(self) -> None:
        pos = getattr(self.source, "position", 0)
        data = {"position": pos, "frames_this_model": self.frames_this_model,
                "model_version": self.runtime.version if self.runtime else None}
        tmp = self._cursor_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._cursor_path)
