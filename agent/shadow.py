"""Shadow mode on the device: a candidate model runs beside the active one on a fraction of the
frames and only reports how it compares; it never changes what the active model sends.

    runner = ShadowRunner(candidate_rt, fraction=0.25)
    if runner.wants(sample_id):                                     # a fixed draw by the frame's id
        agreed = runner.observe(image, batch, active_rt, active_pred)  # None: the shadow failed on it
    runner.stats()   # shadow_frames, shadow_agree, latency p95, mean confidences, 2 x 10 histogram bins
    runner.facts()   # shadow_version

Which frames: a uniform draw fixed by (salt, sample id), so the choice is deterministic, does not
follow the rhythm of the scene as every k-th frame would, and a frame replayed after a restart is
chosen again. Agreement is by predicted class (argmax of probs), compared by label name so that two
models whose label lists are ordered differently are still compared class for class.

The frame thread writes the counters and the reporter thread reads them: a lock keeps a report
consistent (shadow_agree never above shadow_frames, histograms summing to shadow_frames).
"""

from __future__ import annotations

import logging
import threading
from collections import deque

import numpy as np

from edgeloop.shared.manifest import InputSpec
from edgeloop.shared.runtime import ModelRuntime, Prediction
from edgeloop.shared.sampling.signals import random_signal

log = logging.getLogger("edgeloop.agent")

DISAGREEMENT = "disagreement"  # the reason of a frame on which the shadow and the active model disagree
# Added to a disagreement frame's value in its selection window: it is kept before the frames the
# signals alone rank (a signal scores at most 1 per weight), but it stays within the window's budget.
DISAGREEMENT_BONUS = 1.0
HIST_BINS = 10  # confidence histograms: bin i holds confidences in [i/10, (i+1)/10), the last one [0.9, 1]
_SALT = 0x5AD0_F1A7  # independent of the `random` signal and of the audit draw


def confidence_bin(confidence: float) -> int:
    return min(max(int(confidence * HIST_BINS), 0), HIST_BINS - 1)


class ShadowRunner:
    """One shadow model and its comparison with the active model, since it was loaded."""

    def __init__(self, runtime: ModelRuntime, fraction: float, sha256: str = "", latency_window: int = 512):
        self.runtime = runtime
        self.fraction = fraction  # the desired state may change it without reloading the model
        self.sha256 = sha256  # of the artifact, to tell a re-sent desired state from a new artifact
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=latency_window)  # p95 over the recent shadow frames
        self.frames = self.agree = self.errors = 0
        self._conf_shadow = self._conf_active = 0.0
        self._hist_active = [0] * HIST_BINS
        self._hist_shadow = [0] * HIST_BINS
        self._input_seen: tuple[InputSpec, bool] | None = None  # (active spec, same as the shadow's?)
        self._labels_seen: tuple[ModelRuntime, np.ndarray | None] | None = None

    @property
    def version(self) -> str:
        return self.runtime.version

    def restarted(self) -> "ShadowRunner":
        """The same model with fresh counters (the active model changed: a new comparison)."""
        return ShadowRunner(self.runtime, self.fraction, self.sha256, self._latencies.maxlen or 512)

    def wants(self, sample_id: str) -> bool:
        return self.fraction >= 1.0 or random_signal(sample_id, _SALT) < self.fraction

    def observe(self, image: np.ndarray, batch: np.ndarray, active: ModelRuntime, pred: Prediction) -> bool | None:
        """Run the shadow on the frame the active model just saw and count the comparison.

        `batch` is the active model's input; it is reused when both models take the same input, else
        the frame is prepared again for the shadow. -> whether the two agree on the class; None when
        the shadow failed on this frame (counted in `errors`, never raised: the camera goes on)."""
        try:
            if not self._same_input(active.manifest.input):
                batch = self.runtime.prepare([image])
            shadow = self.runtime.infer(batch, [image])[0]
        except Exception as exc:  # noqa: BLE001 - a shadow's failure must never touch the active path
            with self._lock:
                self.errors += 1
            if self.errors == 1:
                log.warning("shadow model %s failed on a frame: %s", self.version, exc)
            return None
        agreed = self._same_class(active, pred.label, shadow.label)
        a, s = pred.confidence, shadow.confidence
        with self._lock:
            self.frames += 1
            self.agree += agreed
            self._latencies.append(shadow.latency_ms)
            self._conf_active += a
            self._conf_shadow += s
            self._hist_active[confidence_bin(a)] += 1
            self._hist_shadow[confidence_bin(s)] += 1
        return agreed

    def _same_input(self, spec: InputSpec) -> bool:
        seen = self._input_seen
        if seen is None or seen[0] is not spec:
            seen = self._input_seen = (spec, spec == self.runtime.manifest.input)
        return seen[1]

    def _same_class(self, active: ModelRuntime, a: int, s: int) -> bool:
        """Class a of the active model and class s of the shadow: the same label?"""
        seen = self._labels_seen
        if seen is None or seen[0] is not active:
            la, ls = tuple(active.manifest.labels), tuple(self.runtime.manifest.labels)
            # Same label list (the usual case): compare indices. Else map the active's indices by name.
            mapping = None if la == ls else np.array([ls.index(x) if x in ls else -1 for x in la])
            seen = self._labels_seen = (active, mapping)
        mapping = seen[1]
        return a == s if mapping is None else int(mapping[a]) == s

    def stats(self) -> dict[str, float]:
        """Numbers for the state report (at most 26 keys), cumulative since the model was loaded
        (the latency p95 over its last `latency_window` frames)."""
        with self._lock:
            n = self.frames
            out: dict[str, float] = {
                "shadow_frames": n, "shadow_agree": self.agree, "shadow_errors": self.errors,
                "shadow_latency_p95_ms": round(float(np.percentile(self._latencies, 95)), 3) if n else 0.0,
            }
            if n:
                out["shadow_mean_confidence"] = round(self._conf_shadow / n, 6)
                out["active_mean_confidence_on_shadow_frames"] = round(self._conf_active / n, 6)
            out.update({f"conf_hist_active_{i}": c for i, c in enumerate(self._hist_active)})
            out.update({f"conf_hist_shadow_{i}": c for i, c in enumerate(self._hist_shadow)})
        return out

    def facts(self) -> dict[str, str]:
        return {"shadow_version": self.version}
