"""The agent: capture -> infer -> score -> select -> outbox -> uplink, and apply the desired model.

Threads: capture (read + preprocess ahead), the main loop (infer, score, select), the uplink
(outbox -> broker), paho's network loop (which hands `desired` messages to the OTA worker), the
reporter (retained `state` every few seconds) and, with --api, the local HTTP API.

Models over the air. The OTA worker reconciles with the newest desired state: the active model,
then the shadow model (`shadow.ShadowRunner`, run by the main loop on a fraction of the frames).
After a swap the previous runtime stays loaded; when the desired state has `max_latency_ms` and the
new model's latency p95 over its first PROBATION_FRAMES frames exceeds it, the main loop swaps the
previous one back at once and reinstates it on disk. A download that did not complete is retried
with backoff; a model that failed verification or loading, or was rolled back, is not tried again
while the desired state names it (facts `load_failed_version` / `rolled_back_version` and
`rollback_reason` say so until the desired state moves on).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from edgeloop.shared import topics
from edgeloop.shared.config import SamplingConfig
from edgeloop.shared.errors import ConfigError, EdgeloopError, PeerUnavailable, ProtocolError, StorageError
from edgeloop.shared.mqtt import Connection
from edgeloop.shared.outbox import SqliteOutbox
from edgeloop.shared.protocol import (MAX_STATS, MAX_STR, Candidate, CampaignSet, DesiredModel, DeviceState,
                                      check_id, decode, encode)
from edgeloop.shared.runtime import ModelRuntime

from .feedback import Feedback, RecentFrames
from .localapi import LocalApi
from .ota import ModelStore
from .pipeline import PRIORITY, FramePipeline, FrameSampler, ModelFigures, build_candidate
from .shadow import ShadowRunner
from .sources import open_source
from .uplink import Uplink

log = logging.getLogger("edgeloop.agent")

PROBATION_FRAMES = 20  # frames a newly activated model runs before its latency is judged against the budget


@dataclass(frozen=True)
class _Probation:
    runtime: ModelRuntime  # the model on trial: judged once, after its first PROBATION_FRAMES frames
    budget_ms: float


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
        self.models = ModelStore(s.data_dir / "models", s.public_key, threads=s.threads)
        self.runtime: ModelRuntime | None = self.models.load_active()
        self.previous: ModelRuntime | None = None  # kept loaded after a swap, for an instant rollback
        self.shadow: ShadowRunner | None = None
        self._probation: _Probation | None = None
        self._refused: dict[str, str] = {}  # version -> why; not tried again while the desired state names it
        self._facts: dict[str, str] = {}  # load_failed_version, rolled_back_version, rollback_reason
        self._cursor_path = s.data_dir / "cursor.json"
        cursor = self._read_cursor()
        self._start = cursor.get("position", 0)
        self.source = open_source(s.source, s.camera_id, s.sim_seed, start=self._start,
                                  max_fps=s.max_fps)
        self.recent = RecentFrames(s.recent_frames, s.recent_bytes)
        self.pipeline = FramePipeline(self.source, FrameSampler(s.sampling, s.device_id, s.site), self.outbox,
                                      get_runtime=lambda: self.runtime, on_commit=self._on_commit, recent=self.recent,
                                      get_shadow=lambda: self.shadow)
        self.stop_event = threading.Event()
        self.model_changed = threading.Event()
        self._desired: queue.Queue[DesiredModel] = queue.Queue()
        # The runtime, its frame count and figures, the models on disk and the refusals change together.
        self._swap = threading.Lock()
        self.frames_this_model = cursor.get("frames_this_model", 0) if self.runtime and cursor.get(
            "model_version") == self.runtime.version else 0
        self.feedback_count: Counter[str] = Counter()
        self.last_error = ""
        self._fps_mark = (time.monotonic(), 0)
        self.fps = 0.0
        st = topics.state(s.site, s.device_id)
        self.conn = Connection(
            s.broker, client_id=f"agent-{s.device_id}", username=s.username or s.device_id, password=s.password,
            ca_file=s.ca_file,
            will=(st, encode(DeviceState(s.device_id, "offline"))), on_message=self._on_message,
            subscriptions=[(topics.desired(s.site, s.device_id), 1), (topics.campaigns(s.site), 1),
                           (topics.feedback(s.site, s.device_id), 1)])
        self.uplink = Uplink(self.conn, self.outbox, s.site, s.device_id)
        self.api = LocalApi(self, *s.api) if s.api else None

    @property
    def device_id(self) -> str:
        return self.s.device_id

    @property
    def model_version(self) -> str | None:
        return self.runtime.version if self.runtime else None

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self, ready_file: Path | None = None) -> None:
        log.info("agent %s starting: site %s, source %s, model %s", self.s.device_id, self.s.site, self.s.source,
                 self.model_version or "none (waiting for desired)")
        self.conn.start()
        self.uplink.start()
        workers = [threading.Thread(target=self._ota_worker, name="ota", daemon=True),
                   threading.Thread(target=self._reporter, name="reporter", daemon=True)]
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
            self.conn.stop(final=(topics.state(self.s.site, self.s.device_id), encode(self.state("offline"))))
            self.outbox.close()
            log.info("agent %s stopped", self.s.device_id)

    def stop(self) -> None:
        self.stop_event.set()
        self.pipeline.stop()  # a source waiting to reconnect gives up

    # -- the frame loop ----------------------------------------------------------------------
    def _frames(self) -> None:
        pipe = self.pipeline
        pipe.start()
        while not self.stop_event.is_set():
            rt = self.runtime
            if rt is None or (self.s.frames_per_model and self.frames_this_model >= self.s.frames_per_model):
                pipe.flush()  # end of this model's run: flush
                self._save_cursor()
                self.model_changed.wait(0.5)
                self.model_changed.clear()
                continue
            done = pipe.step(rt)
            if done is None:
                log.info("source %s ended%s", self.s.source, f" ({pipe.last_error})" if pipe.last_error else "")
                pipe.flush()
                self._drain()
                return
            if done:
                with self._swap:
                    if rt is self.runtime:  # a frame of the model that just left does not count for the new one
                        self.frames_this_model += 1
                self._judge_latency(rt)

    def _on_commit(self, kept: list[Candidate]) -> None:
        self.uplink.wake.set()
        self._save_cursor()

    def _drain(self) -> None:
        """A finite source has ended: send what is queued, then stop (SIGTERM stops sooner)."""
        if len(self.outbox):
            log.info("draining %d queued candidates before stopping", len(self.outbox))
        while len(self.outbox) and not self.stop_event.wait(0.5):
            pass

    # -- feedback from the application --------------------------------------------------------
    def feedback(self, fb: Feedback) -> dict:
        """Queue the flagged frame as a candidate (outside every budget); FrameGone if no longer held."""
        item = self.recent.find(fb)
        reason = f"feedback:{fb.verdict}"
        extra = {"feedback_label": fb.label} if fb.label else {}
        cand = build_candidate(item.frame, item.pred, item.model_version, item.sample_id, self.s.site,
                               self.s.device_id, PRIORITY[reason], {}, (reason,), extra)
        # A frame already queued for its own merit is upgraded in place: same id, feedback's worth.
        if not self.outbox.put(cand, cand.value, replace=True):
            raise StorageError(f"the outbox refused feedback frame {item.sample_id}")
        self.feedback_count[fb.verdict] += 1
        self.uplink.wake.set()
        log.info("feedback %s on frame %s queued", fb.verdict, item.sample_id)
        return {"sample_id": item.sample_id, "reason": reason, "captured_at": item.frame.captured_at}

    # -- desired model -----------------------------------------------------------------------
    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic.endswith("/campaigns"):
            try:
                self.pipeline.sampler.campaigns_in = decode(msg.payload, CampaignSet)
            except ProtocolError as exc:
                self.last_error = f"ignored malformed campaigns: {exc}"
                log.warning(self.last_error)
            return
        if msg.topic.endswith("/feedback"):
            try:
                self.feedback(Feedback.parse(msg.payload))
            except EdgeloopError as exc:  # malformed, or the frame is gone: say so, keep going
                self.feedback_count["failed"] += 1
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
        self._desired.put(desired)

    def _ota_worker(self) -> None:
        """Reconcile with the newest desired state; retry with backoff what failed for a transient reason."""
        desired: DesiredModel | None = None
        due = False  # a desired state not yet (fully) reconciled
        retry_at, backoff = 0.0, 2.0
        while not self.stop_event.is_set():
            try:
                desired = self._desired.get(timeout=0.5)
                while not self._desired.empty():  # only the newest desired state matters
                    desired = self._desired.get_nowait()
                self._forget_refusals(desired)
                due, retry_at, backoff = True, 0.0, 2.0
            except queue.Empty:
                pass
            if desired is None or not due or time.monotonic() < retry_at:
                continue
            if self._reconcile(desired):
                due = False
            else:
                retry_at, backoff = time.monotonic() + backoff, min(backoff * 2, 120.0)

    def _reconcile(self, desired: DesiredModel) -> bool:
        """The active model, then the shadow: -> True when done, False when something must be retried."""
        done = True
        for part, step in (("model", self._reconcile_active), ("shadow model", self._reconcile_shadow)):
            try:
                step(desired)
            except Exception as exc:  # noqa: BLE001 - relay unreachable, disk trouble: the active model stays
                done = False
                version = desired.version if part == "model" else getattr(desired.shadow, "version", "-")
                self.last_error = f"{part} {version} not applied yet, will retry: {exc}"
                log.warning(self.last_error)
        if not done:
            self.publish_state()
        return done

    def _reconcile_active(self, desired: DesiredModel) -> None:
        version = desired.version
        if self.model_version == version or version in self._refused:
            return
        try:
            data, rt = self.models.get(desired)
        except PeerUnavailable:
            raise  # the download did not complete: retried
        except Exception as exc:  # noqa: BLE001 - verified bad: the active model stays, and it is not retried
            self._refuse(version, "model", f"load failed: {exc}")
            return
        staged = self.models.stage(data)
        with self._swap:
            self.models.promote(staged)
            previous = self.runtime
            self.previous, self.runtime = previous, rt
            self._restart_figures()
            # Judged only when there is a model to go back to.
            budget = desired.max_latency_ms
            self._probation = _Probation(rt, budget) if budget is not None and previous is not None else None
        self.model_changed.set()
        log.info("model %s active (was %s)%s", rt.version, previous.version if previous else None,
                 f", latency budget {budget:g} ms" if self._probation else "")
        self.publish_state()

    def _reconcile_shadow(self, desired: DesiredModel) -> None:
        want = desired.shadow
        with self._swap:  # a swap of the active model restarts the shadow's counters meanwhile
            current = self.shadow
            if current is not None and want is not None and (current.version, current.sha256) == (want.version,
                                                                                                   want.sha256):
                current.fraction = want.fraction
                return
            self.shadow = None  # no shadow wanted any more, or another one
        if current is not None:
            self.models.drop_shadow()
            log.info("shadow model %s dropped after %d frames", current.version, current.frames)
        if want is None or want.version in self._refused:
            return
        try:
            data, rt = self.models.get(want)
        except PeerUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - verified bad: reported, the active model untouched
            self._refuse(want.version, "shadow model", f"shadow load failed: {exc}")
            return
        self.models.install_shadow(data)
        with self._swap:
            self.shadow = ShadowRunner(rt, want.fraction, want.sha256)
        log.info("shadow model %s running beside %s on %.0f%% of the frames", rt.version, self.model_version,
                 100 * want.fraction)
        self.publish_state()

    def _refuse(self, version: str, part: str, reason: str) -> None:
        """A model that failed verification or loading: report it, and do not try it again."""
        with self._swap:
            self._refused[version] = reason
            self._facts.update(load_failed_version=version, rollback_reason=reason[:MAX_STR])
        self.last_error = f"{part} {version} refused: {reason}"
        log.error(self.last_error)
        self.publish_state()

    def _forget_refusals(self, desired: DesiredModel) -> None:
        """A version is refused only while the desired state names it: a new one clears the slate."""
        named = {desired.version} | ({desired.shadow.version} if desired.shadow else set())
        with self._swap:
            self._refused = {v: why for v, why in self._refused.items() if v in named}
            for key in ("load_failed_version", "rolled_back_version"):
                if self._facts.get(key) not in named:
                    self._facts.pop(key, None)
            if not self._facts.keys() & {"load_failed_version", "rolled_back_version"}:
                self._facts.pop("rollback_reason", None)

    # -- local rollback ------------------------------------------------------------------------
    def _judge_latency(self, rt: ModelRuntime) -> None:
        """Main loop, after each frame: a model on trial that is over its latency budget goes back."""
        trial = self._probation
        if trial is None or trial.runtime is not rt:
            return
        figures = self.pipeline.figures
        if figures is None or figures.runtime is not rt or figures.frames < PROBATION_FRAMES:
            return
        with self._swap:
            if self._probation is not trial:  # the OTA worker moved on meanwhile
                return
            self._probation = None
        p95 = figures.latency_percentiles(95)[0]
        if p95 > trial.budget_ms:
            self._roll_back(rt, f"latency p95 {p95:.1f} ms > budget {trial.budget_ms:g} ms over {figures.frames} "
                                f"frames")
        else:
            log.info("model %s keeps within its latency budget (p95 %.1f ms <= %g ms)", rt.version, p95,
                     trial.budget_ms)

    def _roll_back(self, bad: ModelRuntime, reason: str) -> None:
        """Swap the previous runtime back in (it is still loaded) and reinstate it on disk."""
        with self._swap:
            good = self.previous
            if self.runtime is not bad or good is None:
                return
            try:
                self.models.roll_back()
            except OSError as exc:  # the device keeps running the good model; a restart would load the bad one
                log.error("reinstating model %s on disk failed: %s", good.version, exc)
            self.runtime, self.previous = good, None
            self._restart_figures()
            self._refused[bad.version] = reason
            self._facts.update(rolled_back_version=bad.version, rollback_reason=reason[:MAX_STR])
        self.model_changed.set()
        self.last_error = f"model {bad.version} rolled back to {good.version}: {reason}"
        log.error(self.last_error)
        self.publish_state()

    def _restart_figures(self) -> None:
        """After a swap (under the lock): frame count, latency and confidence start again, and the
        shadow's comparison too, as it is with the model that is now active."""
        self.frames_this_model = 0
        self.pipeline.figures = ModelFigures(self.runtime)
        if self.shadow is not None:
            self.shadow = self.shadow.restarted()

    # -- telemetry ---------------------------------------------------------------------------
    def stats(self) -> dict:
        """Numbers for the state report (at most MAX_STATS): the active model's figures count from
        the moment it became active; the shadow's (when one runs) from the moment it was loaded."""
        p, sampler = self.pipeline, self.pipeline.sampler
        figures = p.figures
        p50, p95 = figures.latency_percentiles(50, 95) if figures else (0.0, 0.0)
        c = self.outbox.counters()
        out = {
            "frames_seen": p.frames, "frames_this_model": self.frames_this_model, "fps": round(self.fps, 2),
            "latency_p50_ms": round(p50, 3), "latency_p95_ms": round(p95, 3),
            "offered": sampler.offered, "passed_over": sampler.passed_over, "audit": sampler.audited,
            "campaign": sampler.campaign_kept, "kept": c.get("accepted", 0), "evicted": c.get("evicted", 0),
            "refused": c.get("refused", 0), "disk_full": c.get("disk_full", 0), "sent": c.get("sent", 0),
            "corrupt": p.corrupt + getattr(self.source, "corrupt", 0), "skipped": getattr(self.source, "skipped", 0),
            "reconnects": getattr(self.source, "reconnects", 0),
            "feedback_wrong": self.feedback_count["wrong"], "feedback_confirmed": self.feedback_count["confirmed"],
            "feedback_failed": self.feedback_count["failed"], "recent_frames": len(self.recent),
            "bytes_sent": self.uplink.bytes_sent, "raw_bytes": p.raw_bytes,
            "outbox_items": len(self.outbox), "outbox_bytes": self.outbox.used_bytes,
        }
        confidence = figures.mean_confidence if figures else None
        if confidence is not None:
            out["mean_confidence"] = round(confidence, 6)
        shadow = self.shadow
        if shadow is not None:
            out.update(shadow.stats())
        return out

    def _model_facts(self) -> tuple[str | None, dict[str, str]]:
        """The active version and the strings about it for the state report (shadow_version,
        load_failed_version, rolled_back_version, rollback_reason, each only when it applies), taken
        together: a rollback on the main thread swaps both while the reporter builds a state."""
        with self._swap:
            version, facts = self.model_version, dict(self._facts)
        shadow = self.shadow
        if shadow is not None:
            facts.update(shadow.facts())
        return version, facts

    def state(self, status: str = "online") -> DeviceState:
        stats = self.stats() if status == "online" else {}
        if len(stats) > MAX_STATS:  # the receiver would refuse the whole report
            log.error("state has %d stats, more than %d: the last ones are left out", len(stats), MAX_STATS)
            stats = dict(list(stats.items())[:MAX_STATS])
        error = self.last_error or self.pipeline.last_error
        version, facts = self._model_facts()
        return DeviceState(self.s.device_id, status, version, ts=time.time(), stats=stats,
                           last_error=error[:1000], facts=facts)

    def publish_state(self) -> None:
        now, n = time.monotonic(), self.pipeline.frames
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
        # The frame after the last one processed (the capture thread reads a little ahead).
        pos = self.pipeline.last_index + 1 if self.pipeline.last_index >= 0 else self._start
        data = {"position": pos, "frames_this_model": self.frames_this_model,
                "model_version": self.runtime.version if self.runtime else None}
        tmp = self._cursor_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._cursor_path)
