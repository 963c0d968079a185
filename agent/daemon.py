"""The agent: capture -> infer -> score -> select -> outbox -> uplink, and apply the desired model.

The frame loop lives here; it owns the parts that do the other jobs, each testable alone:
    ModelSlot     (model_slot.py)  active / previous / shadow models, OTA reconciliation, local rollback
    Telemetry     (telemetry.py)   the retained state report and the numbers behind /metrics
    FeedbackDesk  (feedback.py)    the application's "that prediction was wrong" -> a candidate
    Uplink        (uplink.py)      outbox -> broker, delete on the relay's receipt

Threads: capture (read + preprocess ahead), the frame loop (infer, score, select), the uplink,
paho's network loop (which hands `desired` messages to the OTA worker), the OTA worker, the reporter
and, with --api, the local HTTP API.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from edgeloop.shared import topics
from edgeloop.shared.config import SamplingConfig
from edgeloop.shared.errors import ConfigError, EdgeloopError, IntegrityError, ProtocolError
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.outbox import SqliteOutbox
from edgeloop.shared.protocol import (Candidate, CampaignSet, DesiredModel, DeviceState, Receipt, check_id, decode,
                                      encode)
from edgeloop.shared.runtime import ModelRuntime

from .feedback import Feedback, FeedbackDesk, RecentFrames
from .localapi import LocalApi
from .model_slot import ModelSlot
from .ota import ModelStore
from .pipeline import FramePipeline, FrameSampler, ModelFigures
from .sources import open_source
from .telemetry import Telemetry
from .update_guard import UpdateGuard
from .uplink import Uplink

log = logging.getLogger("edgeloop.agent")


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
    # Audits (`edgeloop bench chaos`): the outbox keeps every committed and evicted sample_id, unbounded.
    outbox_journal: bool = False
    max_fps: float = 0.0  # 0: as fast as frames come
    frames_per_model: int = 0  # sim only: process N frames per model version, then wait for the next
    state_interval: float = 2.0
    threads: int = 1
    public_key: object = None  # Ed25519 public key of the hub (required to load any model)
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None  # CA of the broker's certificate, for an mqtts:// broker
    api: tuple[str, int] | None = None  # (host, port) of the local HTTP API; None: off
    recent_frames: int = 64  # frames held for application feedback
    recent_bytes: int = 32 << 20
    model: Path | None = None  # the artifact it was provisioned with: runs until a desired model replaces it


def provision_model(models: ModelStore, path: Path) -> None:
    """Install the artifact a device was provisioned with as its active model, unless it already has
    one (a model a desired state brought is newer than the provisioning). Verified like any model:
    ConfigError when it is unreadable or not signed by the hub's key."""
    try:
        data = Path(path).read_bytes()
        rt = models.load_bytes(data)
    except OSError as exc:
        raise ConfigError(f"--model {path}: {exc.strerror or exc}") from exc
    except EdgeloopError as exc:
        raise ConfigError(f"--model {path}: {exc}") from exc
    if models.active_path.exists():
        log.info("--model %s (%s): an active model is installed already; it stays", path, rt.version)
        return
    models.install(data)
    log.info("provisioned with %s from %s: running it until a desired model comes", rt.version, path)


class Agent:
    def __init__(self, s: AgentSettings):
        for name in ("device_id", "site"):
            try:
                check_id(getattr(s, name), name)
            except ProtocolError as exc:  # an id that cannot be an MQTT topic level
                raise ConfigError(f"--{name.split('_')[0]}: {exc}") from exc
        self.s = s
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = SqliteOutbox(s.data_dir / "outbox.sqlite", s.outbox_quota, journal=s.outbox_journal)
        if s.public_key is None:
            raise ConfigError("the agent needs the hub's public key (--pubkey) to verify models")
        self.last_error = ""
        self._cursor_path = s.data_dir / "cursor.json"
        cursor = self._read_cursor()
        self._start = cursor.get("position", 0)
        models = ModelStore(s.data_dir / "models", s.public_key, threads=s.threads)
        if s.model is not None:
            provision_model(models, s.model)
        self.slot = ModelSlot(models, restart=self._restart_figures, report=self._report)
        if self.slot.version is not None and cursor.get("model_version") == self.slot.version:
            self.slot.frames_this_model = cursor.get("frames_this_model", 0)
        self.source = open_source(s.source, s.camera_id, s.sim_seed, start=self._start, max_fps=s.max_fps)
        self.recent = RecentFrames(s.recent_frames, s.recent_bytes)
        self.pipeline = FramePipeline(self.source, FrameSampler(s.sampling, s.device_id, s.site), self.outbox,
                                      get_runtime=lambda: self.slot.runtime, on_commit=self._on_commit,
                                      recent=self.recent, get_shadow=lambda: self.slot.shadow)
        self.stop_event = threading.Event()
        self.guard = UpdateGuard(s.data_dir, s.public_key, s.site, s.device_id)
        self._desired: queue.Queue[DesiredModel] = queue.Queue()
        st = topics.state(s.site, s.device_id)
        self.conn = Connection(
            s.broker, client_id=f"agent-{s.device_id}", username=s.username or s.device_id, password=s.password,
            ca_file=s.ca_file,
            will=(st, encode(DeviceState(s.device_id, "offline"))), on_message=self._on_message,
            subscriptions=[(topics.desired(s.site, s.device_id), 1), (topics.campaigns(s.site), 1),
                           (topics.feedback(s.site, s.device_id), 1), (topics.received(s.site, s.device_id), 1)])
        self.uplink = Uplink(self.conn, self.outbox, s.site, s.device_id)
        self.desk = FeedbackDesk(self.recent, self.outbox, s.site, s.device_id, self.uplink.wake)
        self.telemetry = Telemetry(self)
        self.api = LocalApi(self, *s.api) if s.api else None

    @property
    def device_id(self) -> str:
        return self.s.device_id

    @property
    def model_version(self) -> str | None:
        return self.slot.version

    # What the local API reads.
    def stats(self) -> dict:
        return self.telemetry.stats()

    def feedback(self, fb: Feedback) -> dict:
        return self.desk.take(fb)

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self, ready_file: Path | None = None) -> None:
        log.info("agent %s starting: site %s, source %s, model %s", self.s.device_id, self.s.site, self.s.source,
                 self.model_version or "none (waiting for desired)")
        self.conn.start()
        self.uplink.start()
        ota = (self.stop_event, self._desired, self.guard.recheck)
        workers = [threading.Thread(target=self.slot.run_updates, args=ota, name="ota", daemon=True),
                   threading.Thread(target=self.telemetry.run, args=(self.stop_event,), name="reporter", daemon=True)]
        for w in workers:
            w.start()
        if self.api:
            self.api.start()
        if ready_file:
            port = self.api.port if self.api else None
            ready_file.write_text(json.dumps({"port": port, "url": port and f"http://{self.s.api[0]}:{port}"}))
        try:
            self._frames()
        finally:
            self.pipeline.flush()
            self.pipeline.stop()
            self._save_cursor()
            self.stop_event.set()
            if self.api:
                self.api.stop()
            self.uplink.stop()
            self.uplink.join(timeout=15)
            self.conn.stop(final=(topics.state(self.s.site, self.s.device_id),
                                  encode(self.telemetry.state("offline"))))
            self.outbox.close()
            log.info("agent %s stopped", self.s.device_id)

    def stop(self) -> None:
        self.stop_event.set()
        self.pipeline.stop()  # a source waiting to reconnect gives up

    # -- the frame loop ----------------------------------------------------------------------
    def _frames(self) -> None:
        pipe, slot = self.pipeline, self.slot
        pipe.start()
        while not self.stop_event.is_set():
            rt = slot.runtime
            if rt is None or (self.s.frames_per_model and slot.frames_this_model >= self.s.frames_per_model):
                pipe.flush()  # end of this model's run: flush
                self._save_cursor()
                slot.changed.wait(0.5)
                slot.changed.clear()
                continue
            done = pipe.step(rt)
            if done is None:
                log.info("source %s ended%s", self.s.source, f" ({pipe.last_error})" if pipe.last_error else "")
                pipe.flush()
                self._drain()
                return
            if done:
                slot.count_frame(rt)
                slot.judge_latency(rt, pipe.figures)

    def _on_commit(self, kept: list[Candidate]) -> None:
        self.uplink.wake.set()
        self._save_cursor()

    def _drain(self) -> None:
        """A finite source has ended: send what is queued, then stop (SIGTERM stops sooner)."""
        if len(self.outbox):
            log.info("draining %d queued candidates before stopping", len(self.outbox))
        while len(self.outbox) and not self.stop_event.wait(0.5):
            pass

    def _restart_figures(self, runtime: ModelRuntime) -> None:
        """The slot swapped models (under its lock): the active model's figures start again."""
        self.pipeline.figures = ModelFigures(runtime)

    def _report(self, error: str | None) -> None:
        if error:
            self.last_error = error
        self.telemetry.publish()

    # -- messages from the relay and the application --------------------------------------------
    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic.endswith("/received"):
            try:
                self.uplink.received(decode(msg.payload, Receipt))
            except ProtocolError as exc:  # the samples stay queued: a later receipt, or a resend
                log.warning("ignored a malformed receipt: %s", exc)
            return
        if msg.topic.endswith("/campaigns"):
            try:
                self.pipeline.sampler.campaigns_in = decode(msg.payload, CampaignSet)
            except ProtocolError as exc:
                self.last_error = f"ignored malformed campaigns: {exc}"
                log.warning(self.last_error)
            return
        if msg.topic.endswith("/feedback"):
            try:
                self.desk.take(Feedback.parse(msg.payload))
            except EdgeloopError as exc:  # malformed, or the frame is gone: say so, keep going
                self.desk.failed()
                self.last_error = f"feedback over MQTT not applied: {exc}"
                log.warning(self.last_error)
            return
        try:
            desired = decode(msg.payload, DesiredModel)
        except ProtocolError as exc:
            # A malformed desired state never touches the active model.
            self.last_error = f"ignored a malformed desired message: {exc}"
            log.warning(self.last_error)
            return
        try:
            desired = self.guard.admit(desired)
        except IntegrityError as exc:  # not the hub's word, or an old or expired one: the active model stays
            self.last_error = f"refused desired {desired.version}: {exc}"
            log.warning(self.last_error)
            return
        self._desired.put(desired)

    # -- where the camera was, so a restart does not replay frames -----------------------------
    def _read_cursor(self) -> dict:
        try:
            return json.loads(self._cursor_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save_cursor(self) -> None:
        # The frame after the last one processed (the capture thread reads a little ahead).
        pos = self.pipeline.last_index + 1 if self.pipeline.last_index >= 0 else self._start
        data = {"position": pos, "frames_this_model": self.slot.frames_this_model,
                "model_version": self.slot.version}
        tmp = self._cursor_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._cursor_path)
