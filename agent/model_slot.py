"""The models a device runs: the active one, the previous one (kept loaded for an instant rollback)
and a shadow, and how they change when the desired state does.

    slot = ModelSlot(ModelStore(...), restart=lambda rt: ..., report=lambda error: ...)
    slot.runtime                      # the active ModelRuntime, or None before the first model
    slot.run_updates(stop, desired_q) # the OTA worker's loop (its own thread): reconcile with the newest desired
    slot.count_frame(rt)              # the frame loop, after each frame of rt
    slot.judge_latency(rt, figures)   # ... and a model on trial that is over its latency budget goes back
    slot.facts()                      # (active version, {shadow_version, load_failed_version, ...}) for the state

Reconciling: the active model, then the shadow (`shadow.ShadowRunner`). After a swap the previous
runtime stays loaded; when the desired state has `max_latency_ms` and the new model's latency p95
over its first PROBATION_FRAMES frames exceeds it, the frame loop swaps the previous one back at once
and reinstates it on disk. A download that did not complete is retried with backoff; a model that
failed verification or loading, or was rolled back, is not tried again while the desired state names
it (facts `load_failed_version` / `rolled_back_version` and `rollback_reason` say so until the
desired state moves on).

Threads: the OTA worker swaps, the frame loop reads `runtime` and judges, the reporter reads facts;
`lock` keeps the runtime, its frame count, the models on disk and the refusals consistent.
`restart(rt)` is called under the lock after every swap, so the owner restarts its per-model figures.
`report(error)` is called outside the lock whenever something worth a state report happened (error:
the message to show, or None).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from edgeloop.shared.errors import IntegrityError, PeerUnavailable
from edgeloop.shared.protocol import MAX_STR, DesiredModel
from edgeloop.shared.runtime import ModelRuntime

from .ota import ModelStore
from .shadow import ShadowRunner

log = logging.getLogger("edgeloop.agent")

PROBATION_FRAMES = 20  # frames a newly activated model runs before its latency is judged against the budget


@dataclass(frozen=True)
class _Probation:
    runtime: ModelRuntime  # the model on trial: judged once, after its first PROBATION_FRAMES frames
    budget_ms: float


class ModelSlot:
    def __init__(self, models: ModelStore, restart: Callable[[ModelRuntime], None],
                 report: Callable[[str | None], None], frames_this_model: int = 0):
        self.models = models
        self.runtime: ModelRuntime | None = models.load_active()
        self.previous: ModelRuntime | None = None
        self.shadow: ShadowRunner | None = None
        self.frames_this_model = frames_this_model if self.runtime else 0
        self.changed = threading.Event()  # set after every swap: the frame loop wakes up
        self.lock = threading.Lock()
        self._restart, self._report = restart, report
        self._probation: _Probation | None = None
        self._refused: dict[str, str] = {}  # version -> why; not tried again while the desired state names it
        self._facts: dict[str, str] = {}  # load_failed_version, rolled_back_version, rollback_reason

    @property
    def version(self) -> str | None:
        return self.runtime.version if self.runtime else None

    def count_frame(self, rt: ModelRuntime) -> None:
        with self.lock:
            if rt is self.runtime:  # a frame of the model that just left does not count for the new one
                self.frames_this_model += 1

    def facts(self) -> tuple[str | None, dict[str, str]]:
        """The active version and the strings about it for the state report (shadow_version,
        load_failed_version, rolled_back_version, rollback_reason, each only when it applies), taken
        together: a rollback on the frame thread swaps both while the reporter builds a state."""
        with self.lock:
            version, facts = self.version, dict(self._facts)
        shadow = self.shadow
        if shadow is not None:
            facts.update(shadow.facts())
        return version, facts

    # -- the OTA worker -----------------------------------------------------------------------
    def run_updates(self, stop: threading.Event, desired_in: "queue.Queue[DesiredModel]",
                    recheck: Callable[[DesiredModel], None] | None = None) -> None:
        """Reconcile with the newest desired state; retry with backoff what failed for a transient reason.
        `recheck(desired)` runs before every attempt: an IntegrityError (its signed statement expired
        meanwhile) drops that desired state until a new one comes."""
        desired: DesiredModel | None = None
        due = False  # a desired state not yet (fully) reconciled
        retry_at, backoff = 0.0, 2.0
        while not stop.is_set():
            try:
                desired = desired_in.get(timeout=0.5)
                while not desired_in.empty():  # only the newest desired state matters
                    desired = desired_in.get_nowait()
                self._forget_refusals(desired)
                due, retry_at, backoff = True, 0.0, 2.0
            except queue.Empty:
                pass
            if desired is None or not due or time.monotonic() < retry_at:
                continue
            if recheck is not None:
                try:
                    recheck(desired)
                except IntegrityError as exc:
                    due = False
                    log.warning("desired %s no longer applied: %s", desired.version, exc)
                    self._report(f"desired {desired.version} no longer applied: {exc}")
                    continue
            if self.reconcile(desired):
                due = False
            else:
                retry_at, backoff = time.monotonic() + backoff, min(backoff * 2, 120.0)

    def reconcile(self, desired: DesiredModel) -> bool:
        """The active model, then the shadow: -> True when done, False when something must be retried."""
        errors = []
        for part, step in (("model", self._reconcile_active), ("shadow model", self._reconcile_shadow)):
            try:
                step(desired)
            except Exception as exc:  # noqa: BLE001 - relay unreachable, disk trouble: the active model stays
                version = desired.version if part == "model" else getattr(desired.shadow, "version", "-")
                errors.append(f"{part} {version} not applied yet, will retry: {exc}")
                log.warning(errors[-1])
        if errors:
            self._report(errors[-1])
        return not errors

    def _reconcile_active(self, desired: DesiredModel) -> None:
        version = desired.version
        if self.version == version or version in self._refused:
            return
        try:
            data, rt = self.models.get(desired)
        except PeerUnavailable:
            raise  # the download did not complete: retried
        except Exception as exc:  # noqa: BLE001 - verified bad: the active model stays, and it is not retried
            self._refuse(version, "model", f"load failed: {exc}")
            return
        staged = self.models.stage(data)
        with self.lock:
            self.models.promote(staged)
            previous = self.runtime
            self.previous, self.runtime = previous, rt
            self._restarted()
            # Judged only when there is a model to go back to.
            budget = desired.max_latency_ms
            self._probation = _Probation(rt, budget) if budget is not None and previous is not None else None
        self.changed.set()
        log.info("model %s active (was %s)%s", rt.version, previous.version if previous else None,
                 f", latency budget {budget:g} ms" if self._probation else "")
        self._report(None)

    def _reconcile_shadow(self, desired: DesiredModel) -> None:
        want = desired.shadow
        with self.lock:  # a swap of the active model restarts the shadow's counters meanwhile
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
        with self.lock:
            self.shadow = ShadowRunner(rt, want.fraction, want.sha256)
        log.info("shadow model %s running beside %s on %.0f%% of the frames", rt.version, self.version,
                 100 * want.fraction)
        self._report(None)

    def _refuse(self, version: str, part: str, reason: str) -> None:
        """A model that failed verification or loading: report it, and do not try it again."""
        with self.lock:
            self._refused[version] = reason
            self._facts.update(load_failed_version=version, rollback_reason=reason[:MAX_STR])
        error = f"{part} {version} refused: {reason}"
        log.error(error)
        self._report(error)

    def _forget_refusals(self, desired: DesiredModel) -> None:
        """A version is refused only while the desired state names it: a new one clears the slate."""
        named = {desired.version} | ({desired.shadow.version} if desired.shadow else set())
        with self.lock:
            self._refused = {v: why for v, why in self._refused.items() if v in named}
            for key in ("load_failed_version", "rolled_back_version"):
                if self._facts.get(key) not in named:
                    self._facts.pop(key, None)
            if not self._facts.keys() & {"load_failed_version", "rolled_back_version"}:
                self._facts.pop("rollback_reason", None)

    # -- local rollback ------------------------------------------------------------------------
    def judge_latency(self, rt: ModelRuntime, figures) -> None:
        """Frame loop, after each frame (figures: the active model's ModelFigures): a model on trial
        that is over its latency budget goes back."""
        trial = self._probation
        if trial is None or trial.runtime is not rt:
            return
        if figures is None or figures.runtime is not rt or figures.frames < PROBATION_FRAMES:
            return
        with self.lock:
            if self._probation is not trial:  # the OTA worker moved on meanwhile
                return
            self._probation = None
        p95 = figures.latency_percentiles(95)[0]
        if p95 > trial.budget_ms:
            self.roll_back(rt, f"latency p95 {p95:.1f} ms > budget {trial.budget_ms:g} ms over {figures.frames} "
                               f"frames")
        else:
            log.info("model %s keeps within its latency budget (p95 %.1f ms <= %g ms)", rt.version, p95,
                     trial.budget_ms)

    def roll_back(self, bad: ModelRuntime, reason: str) -> None:
        """Swap the previous runtime back in (it is still loaded) and reinstate it on disk."""
        with self.lock:
            good = self.previous
            if self.runtime is not bad or good is None:
                return
            try:
                self.models.roll_back()
            except OSError as exc:  # the device keeps running the good model; a restart would load the bad one
                log.error("reinstating model %s on disk failed: %s", good.version, exc)
            self.runtime, self.previous = good, None
            self._restarted()
            self._refused[bad.version] = reason
            self._facts.update(rolled_back_version=bad.version, rollback_reason=reason[:MAX_STR])
        self.changed.set()
        error = f"model {bad.version} rolled back to {good.version}: {reason}"
        log.error(error)
        self._report(error)

    def _restarted(self) -> None:
        """After a swap (under the lock): the frame count starts again, the owner's figures too, and
        the shadow's comparison, as it is with the model that is now active."""
        self.frames_this_model = 0
        self._restart(self.runtime)
        if self.shadow is not None:
            self.shadow = self.shadow.restarted()
