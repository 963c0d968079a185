"""The agent's frame pipeline: capture + decode + preprocess (a thread) | infer (a thread) | decode -> score ->
select -> outbox.

    pipe = FramePipeline(source, FrameSampler(sampling, "dev-1", "site-0"), outbox, get_runtime=lambda: rt)
    pipe.start()
    while pipe.step(rt) is not None: ...        # one frame per step; None once the source has ended
    pipe.flush(); pipe.stop()
    pipe.figures.latency_percentiles(50, 95)    # of the active model, since it became active

The capture thread reads and preprocesses the next frames and the inference thread runs the model
on them (`prefetch.py`), while the frame loop scores and selects the frame before: onnxruntime and
cv2 release the GIL, so on two cores the model runs back to back and the rest costs it little.
A shadow model (`get_shadow=` -> a `shadow.ShadowRunner`) runs right after the active one on the
frames it wants, on the same prepared batch when both take the same input; the frames where the
two disagree are offered to their window with the reason `disagreement` and a value bonus, within
the window's budget.
`run_pipeline` is the same loop for a finite source, used by `edgeloop bench agent`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from edgeloop.shared.config import SamplingConfig
from edgeloop.shared.errors import ImageError, StorageError
from edgeloop.shared.ids import frame_sample_id
from edgeloop.shared.images import encode_jpeg, sha256
from edgeloop.shared.outbox import SqliteOutbox
from edgeloop.shared.protocol import MAX_IMAGE_BYTES, Candidate
from edgeloop.shared.runtime import ModelRuntime, Prediction
from edgeloop.shared.sampling import WindowedSelector
from edgeloop.shared.sampling.campaigns import CampaignMatcher
from edgeloop.shared.sampling.policy import (AUDIT, CAMPAIGN_PREFIX, PRIORITY, is_audit, window_pool_limit,
                                             window_picker)
from edgeloop.shared.sampling.signals import Observation, SignalContext, SignalState, score
from edgeloop.shared.sampling.temporal import RecentlyKept, thumbnail
from edgeloop.shared.sampling.tracks import TrackEpisodes

from .prefetch import END, Inferrer, Prefetcher
from .shadow import DISAGREEMENT, DISAGREEMENT_BONUS, ShadowRunner
from .sources import SourceFrame

log = logging.getLogger("edgeloop.agent")



def encode_for_uplink(image: np.ndarray) -> bytes:
    """JPEG small enough for the protocol: a 4K frame is halved until it fits."""
    jpeg = encode_jpeg(image)
    while len(jpeg) > MAX_IMAGE_BYTES:
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
        jpeg = encode_jpeg(image)
    return jpeg


def build_candidate(frame: SourceFrame, pred: Prediction, model_version: str, sample_id: str, site: str,
                    device_id: str, value: float, scores: dict[str, float], reasons: tuple[str, ...],
                    extra_tags: dict[str, str] | None = None) -> Candidate:
    jpeg = encode_for_uplink(frame.image)
    return Candidate(
        sample_id=sample_id, device_id=device_id, camera_id=frame.camera_id, captured_at=frame.captured_at,
        model_version=model_version, probs=pred.probs,
        embedding=None if pred.embedding is None else pred.embedding.astype(np.float16),
        detections=pred.detections, image=jpeg, image_sha256=sha256(jpeg),
        tags={**frame.tags, "site": site, **(extra_tags or {})}, scores=scores, reasons=reasons, value=value)


@dataclass(eq=False)
class Pending:
    """A frame waiting in its selection window, not yet JPEG-encoded: most never make the cut, and
    encoding is the costliest thing the device does after inference. `nbytes` is an estimate (the
    camera's recent JPEG sizes) for the byte budget; the outbox quota counts the real size."""

    frame: SourceFrame
    pred: Prediction
    model_version: str
    sample_id: str
    value: float
    scores: dict[str, float]
    reasons: tuple[str, ...]
    nbytes: int

    @property
    def captured_at(self) -> float:
        return self.frame.captured_at

    @property
    def embedding(self) -> np.ndarray | None:
        return self.pred.embedding

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.pred.probs))

    @property
    def detections(self) -> np.ndarray | None:
        return self.pred.detections


class FrameSampler:
    """First-stage sampling for one device: signals, audit and campaign bypasses, the windowed selector."""

    def __init__(self, sampling: SamplingConfig, device_id: str, site: str):
        self.sampling, self.device_id, self.site = sampling, device_id, site
        self.selector = WindowedSelector(sampling.budget, sampling.min_value, pick=window_picker(sampling),
                                         pool_limit=window_pool_limit(sampling))
        self.state = SignalState.for_signals(sampling.signals)
        self._context: tuple[str, SignalContext] | None = None  # per model version
        self.campaigns = CampaignMatcher()
        self.campaigns_in = None  # a CampaignSet handed over from the MQTT thread
        # Frames showing what this camera recently kept (or holds in a window) are no candidates.
        self.recent = RecentlyKept(sampling.temporal_dedup) if sampling.temporal_dedup.enabled else None
        # A detector's frames whose every object already has a candidate are none either.
        self.episodes = TrackEpisodes(sampling.tracks) if sampling.tracks.enabled else None
        self.offered = self.audited = self.campaign_kept = self.passed_over = self.duplicates = 0
        self.track_covered = 0
        self.seconds = 0.0  # time spent scoring and selecting (not encoding kept images)
        self._jpeg_estimate = 50_000  # bytes; follows the sizes of what was encoded

    def consider(self, frame: SourceFrame, pred: Prediction, rt: ModelRuntime, sample_id: str,
                 disagreement: bool = False) -> list[Candidate]:
        """-> the candidates to commit now (windows this frame's time closed, and bypasses).

        disagreement: a shadow model predicted another class on this frame; the frame competes in its
        window with the reason `disagreement` and DISAGREEMENT_BONUS added to its value."""
        t0 = time.perf_counter()
        # Close the windows that ended first: novelty then compares against what they kept.
        closed = self.selector.close_until(frame.captured_at)
        self.seconds += time.perf_counter() - t0
        commit = self._build(closed)
        t0 = time.perf_counter()
        if self.campaigns_in is not None:
            self.campaigns.update(self.campaigns_in.campaigns)
            self.campaigns_in = None
        obs = Observation(sample_id=sample_id, probs=pred.probs, embedding=pred.embedding,
                          detections=pred.detections, tags=frame.tags, captured_at=frame.captured_at,
                          index=frame.index)
        value, scores, reasons = score(obs, self.sampling.signals, self.sampling.seed, self._context_for(rt),
                                       self.state)
        if disagreement:
            value, reasons = value + DISAGREEMENT_BONUS, (DISAGREEMENT, *reasons)
        audit = is_audit(sample_id, self.sampling)
        campaign = None if audit else self.campaigns.match(pred.embedding, time.time())
        bypass = AUDIT if audit else "campaign" if campaign else None
        wanted = bypass is not None or self.selector.would_accept(frame.captured_at, value)
        thumb = None
        track_ids = None
        if self.episodes is not None and pred.detections is not None:
            track_ids = self.episodes.update(frame.captured_at, pred.detections)  # every frame: tracks stay whole
            if wanted and bypass is None and self.episodes.all_covered(track_ids):
                wanted = False
                self.track_covered += 1
        if wanted and bypass is None and self.recent is not None:
            thumb = thumbnail(frame.image)
            reading = pred.probs if pred.detections is None else pred.detections
            if self.recent.is_duplicate(frame.captured_at, thumb, reading):
                wanted = False
                self.duplicates += 1
        self.seconds += time.perf_counter() - t0
        if bypass:
            # Outside the window budget: audit is the unbiased sample of what the camera sees; a
            # campaign has its own quota.
            reasons = (AUDIT, *reasons) if audit else (CAMPAIGN_PREFIX + campaign, *reasons)
            self.audited += audit
            self.campaign_kept += bool(campaign)
            commit += self._build([Pending(frame, pred, rt.version, sample_id, value + PRIORITY[bypass], scores,
                                           reasons, 0)])
        elif wanted:
            offered = self.selector.offer(Pending(frame, pred, rt.version, sample_id, value, scores, reasons,
                                                  self._jpeg_estimate))
            self.offered += offered
            if offered and thumb is not None:
                self.recent.remember(frame.captured_at, thumb, pred.probs if pred.detections is None else pred.detections)
            if offered and track_ids is not None:
                self.episodes.cover(track_ids)
        else:
            self.passed_over += 1
        return commit

    def flush(self) -> list[Candidate]:
        return self._build(self.selector.close_until(None))

    def _build(self, kept: list[Pending]) -> list[Candidate]:
        """Encode what was kept; novelty is measured against it from now on."""
        out = []
        for p in kept:
            c = build_candidate(p.frame, p.pred, p.model_version, p.sample_id, self.site, self.device_id, p.value,
                                p.scores, p.reasons)
            self._jpeg_estimate = int(0.8 * self._jpeg_estimate + 0.2 * c.nbytes)
            if c.embedding is not None:
                self.state.remember(c.embedding.astype(np.float32))
            out.append(c)
        return out

    def _context_for(self, rt: ModelRuntime) -> SignalContext:
        if self._context is None or self._context[0] != rt.version:
            if self._context is not None:
                self.state.forget()  # embeddings of two models are not comparable
                if self.recent is not None:
                    self.recent.forget()  # nor are two models' readings of a scene
            self._context = (rt.version, SignalContext.from_manifest(rt.manifest))
        return self._context[1]


class ModelFigures:
    """Latency and confidence of one model since it became active: a swap starts new figures, so a
    report never mixes two models. Written by the frame thread, read by the reporter."""

    def __init__(self, runtime: ModelRuntime, window: int = 512):
        self.runtime = runtime
        self.latencies: deque[float] = deque(maxlen=window)  # the recent frames, for percentiles
        self.frames = 0
        self._confidence = 0.0

    def add(self, pred: Prediction) -> None:
        self.latencies.append(pred.latency_ms)
        self._confidence += pred.confidence
        self.frames += 1

    def latency_percentiles(self, *q: float) -> list[float]:
        lat = np.asarray(self.latencies) if self.latencies else np.zeros(1)
        return [float(v) for v in np.percentile(lat, q)]

    @property
    def mean_confidence(self) -> float | None:
        """Mean top confidence over every frame since the model became active; None before the first."""
        n = self.frames
        return self._confidence / n if n else None


class FramePipeline:
    """One device's frames, from the prefetch queue to the outbox."""

    def __init__(self, source, sampler: FrameSampler, outbox: SqliteOutbox,
                 get_runtime: Callable[[], ModelRuntime | None], on_commit: Callable[[list[Candidate]], None] | None = None,
                 recent=None, depth: int = 2, get_shadow: Callable[[], ShadowRunner | None] | None = None):
        self.source, self.sampler, self.outbox = source, sampler, outbox
        self.prefetch = Prefetcher(source, get_runtime, depth)
        self.inference = Inferrer(self.prefetch, get_runtime)
        self.get_shadow = get_shadow
        self.on_commit = on_commit
        self.recent = recent  # RecentFrames for application feedback, or None
        self.frames = self.corrupt = self.kept = self.raw_bytes = 0
        self.model_seconds = 0.0  # the model's runs for those frames (session.run, in whichever thread)
        # The active model's figures; whoever swaps the model sets new ones (else the first step does).
        self.figures: ModelFigures | None = None
        self.last_error = ""
        self.last_index = -1

    def start(self) -> None:
        self.prefetch.start()
        self.inference.start()

    def stop(self) -> None:
        self.prefetch.stop()
        self.inference.stop()

    def step(self, rt: ModelRuntime, timeout: float = 0.5) -> bool | None:
        """Process the next frame with `rt`: True done, False none ready yet, None the source ended."""
        item = self.inference.get(timeout)
        if item is None:
            return False
        if item is END:
            if self.prefetch.error:
                self.last_error = f"source failed: {self.prefetch.error}"
            return None
        if item.error:
            self.corrupt += 1
            self.last_error = item.error
            return True
        frame = item.frame
        try:
            if item.raw is not None and item.raw.runtime is rt:
                batch, pred = item.batch, rt.decode(item.raw, [frame.image])[0]
                run_s = item.raw.seconds
            else:  # no model when it was captured, a model swapped since, or its run failed: here, again
                batch = item.batch if item.spec is rt.manifest.input else rt.prepare([frame.image])
                pred = rt.infer(batch, [frame.image])[0]
                run_s = pred.latency_ms / 1000
        except ImageError as exc:
            self.corrupt += 1
            self.last_error = str(exc)
            return True
        self.frames += 1
        self.model_seconds += run_s
        self.last_index = frame.index
        self.raw_bytes += frame.image.nbytes
        figures = self.figures
        if figures is None:
            figures = self.figures = ModelFigures(rt)
        if figures.runtime is rt:  # a frame of a model that was just swapped out does not count for the new one
            figures.add(pred)
        sid = frame_sample_id(frame.captured_at, self.sampler.device_id, frame.camera_id, frame.index)
        if self.recent is not None:
            self.recent.add(sid, frame, pred, rt.version)
        shadow = self.get_shadow() if self.get_shadow else None
        disagreement = False
        if shadow is not None and shadow.wants(sid):
            disagreement = shadow.observe(frame.image, batch, rt, pred) is False
        self.commit(self.sampler.consider(frame, pred, rt, sid, disagreement))
        return True

    def flush(self) -> None:
        self.commit(self.sampler.flush())

    def commit(self, kept: list[Candidate]) -> None:
        if not kept:
            return
        for c in kept:
            try:
                self.kept += self.outbox.put(c, c.value)
            except StorageError as exc:  # the outbox file itself failed: report it, keep the camera going
                self.last_error = str(exc)
                log.error("%s", exc)
        if self.on_commit:
            self.on_commit(kept)


@dataclass(frozen=True)
class PipelineStats:
    frames: int
    seconds: float
    sampling_seconds: float
    kept: int
    corrupt: int
    model_seconds: float = 0.0  # of `seconds`, the model's runs (in the inference thread, beside the others)


def run_pipeline(source, runtime: ModelRuntime, sampling: SamplingConfig, outbox: SqliteOutbox,
                 device_id: str = "bench", site: str = "bench", max_frames: int | None = None) -> PipelineStats:
    """The agent's pipeline over a finite source with one model (no MQTT): for benchmarks and tools."""
    pipe = FramePipeline(source, FrameSampler(sampling, device_id, site), outbox, lambda: runtime)
    t0 = time.perf_counter()
    pipe.start()
    try:
        while max_frames is None or pipe.frames < max_frames:
            if pipe.step(runtime) is None:
                break
        pipe.flush()
    finally:
        pipe.stop()
    return PipelineStats(pipe.frames, time.perf_counter() - t0, pipe.sampler.seconds, pipe.kept, pipe.corrupt,
                         pipe.model_seconds)
