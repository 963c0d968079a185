"""Live accuracy and drift, from the audit samples: the random, unselected slice of production.

Pure numpy/scipy: the caller fetches rows from the store and stores what comes back. A row is a dict
as the store decodes it (other keys are ignored):

    site, device_id, camera_id, model_version, captured_at   str / float
    predicted, confidence                                    int / float
    label        int once labeled; None or missing before
    embedding    float16 bytes or a (D,) array; None or missing when the device sent none
    tags         dict or its JSON text
    audit        optional; a row with audit falsy is skipped, as only audit rows are unbiased

    estimates = live_accuracy(labeled_rows, by="site")           # -> [Estimate], for the dashboard
    ref = build_reference(train_emb, heldout_emb, heldout_conf)  # at training time; ref.to_bytes() is a blob
    alarms = drift_alarms(audit_rows, {"v7": ref})               # -> [Alarm], each naming its site

Two kinds of drift, each judged per (site, model version):

  accuracy_drop  the labeled audit rows in captured_at order; the most recent `recent_fraction` of
                 them against the earlier ones (or against a `baselines[version]` accuracy, e.g. the
                 golden accuracy). Alarm when the 95 % Wilson intervals separate, recent high < earlier
                 low, with at least `min_n` rows per side. Separate intervals is a conservative test
                 (about p < 0.003 for equal n): the hub re-runs it all the time, false alarms add up.
  shift          the newest `window` audit embeddings against a Reference built from the model's own
                 embeddings at training time: each one's Mahalanobis distance from the training
                 embeddings; the Reference's threshold is the `quantile` of those distances for held-out
                 images, so production like the held-out data exceeds it with probability ~1 - quantile.
                 Alarm when the Wilson low of the exceeding fraction is above `factor` x that. Labels are
                 not needed, so this fires before anyone has labeled the new condition.
                 The confidence distribution (one-sided KS against held-out confidences) is reported,
                 not alarmed on: a site's class mix differs from the balanced held-out set, which moves
                 confidences without anything being wrong.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

Row = Mapping[str, object]


# ---- intervals ---------------------------------------------------------------------------------

def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n; (0.0, 1.0) when n == 0.

    Unlike k/n +- z*se it stays inside [0, 1] and is honest at k = 0 or k = n with small n.
    """
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n, got k={k}, n={n}")
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # Clamp rounding error only: at k == 0 the low is 0 mathematically but 3e-17 in floats, above k/n.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


# ---- live accuracy -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    """Accuracy of one model version in one group: correct / n with a 95 % Wilson interval."""

    key: str
    model_version: str
    n: int
    correct: int
    accuracy: float
    low: float
    high: float


def device_class(row: Row) -> str:
    """tags["device_class"] when the device reports one, else its id minus the last '-' part
    ("jetson-nano-0042" -> "jetson-nano", "dev-0001" -> "dev"): fleets name devices <class>-<n>."""
    cls = _tags(row).get("device_class")
    if cls:
        return str(cls)
    return str(row["device_id"]).rsplit("-", 1)[0]


GROUPINGS: dict[str, Callable[[Row], str]] = {
    "site": lambda r: str(r["site"]),
    "device_class": device_class,
    "camera": lambda r: str(r["camera_id"]),
}


def live_accuracy(rows: Iterable[Row], by: str | Callable[[Row], str] = "site", z: float = 1.96) -> list[Estimate]:
    """Labeled audit rows -> one Estimate per (group, model_version), sorted by both.

    by: "site", "device_class" (see device_class()), "camera", or a function row -> key.
    Rows without a label are skipped.
    """
    key_of = GROUPINGS[by] if isinstance(by, str) else by
    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in _audit(rows):
        if r.get("label") is None:
            continue
        t = tally[key_of(r), str(r["model_version"])]
        t[0] += int(r["predicted"]) == int(r["label"])
        t[1] += 1
    return [Estimate(key, version, n, k, k / n, *wilson(k, n, z))
            for (key, version), (k, n) in sorted(tally.items())]


# ---- accuracy drop -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Drop:
    """Recent accuracy against earlier (or a baseline). `earlier` is None when a baseline was given."""

    recent: Estimate
    earlier: Estimate | None
    baseline: float | None
    alarm: bool
    reason: str


def assess_drop(rows: Sequence[Row], *, recent_fraction: float = 0.4, min_n: int = 30,
                baseline: float | None = None, z: float = 1.96) -> Drop:
    """Labeled audit rows of ONE site and model version -> has accuracy dropped recently?

    Rows are ordered by captured_at; the last `recent_fraction` of them (at least one) are "recent".
    Without a baseline, alarm when recent.high < earlier.low and both sides have >= min_n rows.
    With one (an accuracy the model is expected to reach here), alarm when recent.high < baseline
    and recent has >= min_n rows: it can fire without history, right after a rollout.
    """
    if not 0.0 < recent_fraction < 1.0:
        raise ValueError(f"assess_drop: recent_fraction must be in (0, 1), got {recent_fraction}")
    rows = sorted((r for r in _audit(rows) if r.get("label") is not None), key=lambda r: float(r["captured_at"]))
    cut = len(rows) - max(1, round(recent_fraction * len(rows))) if rows else 0
    key = str(rows[0]["site"]) if rows else ""
    version = str(rows[0]["model_version"]) if rows else ""

    def estimate(part: Sequence[Row]) -> Estimate:
        k = sum(int(r["predicted"]) == int(r["label"]) for r in part)
        n = len(part)
        return Estimate(key, version, n, k, k / n if n else float("nan"), *wilson(k, n, z))

    recent = estimate(rows[cut:])
    if baseline is not None:
        alarm = recent.n >= min_n and recent.high < baseline
        reason = (f"accuracy {recent.accuracy:.1%} over the last {recent.n} audit samples "
                  f"(<= {recent.high:.1%}) is below the expected {baseline:.1%}")
        return Drop(recent, None, float(baseline), alarm, reason if alarm else "")
    earlier = estimate(rows[:cut])
    alarm = min(recent.n, earlier.n) >= min_n and recent.high < earlier.low
    reason = (f"accuracy fell from {earlier.accuracy:.1%} ({earlier.n} samples, >= {earlier.low:.1%}) "
              f"to {recent.accuracy:.1%} ({recent.n} most recent, <= {recent.high:.1%})")
    return Drop(recent, earlier, None, alarm, reason if alarm else "")


# ---- distribution shift ------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays field-wise is not what == should do
class Reference:
    """What a model's inputs looked like at training time, as its own embeddings saw them.

    An embedding's score is its squared Mahalanobis distance from the training embeddings: mean (D,)
    and precision (D, D), the inverse of their covariance. (A single Gaussian needs no labels, and on
    the simulated world it separates a new lighting as well as per-class Gaussians and far better than
    the cosine distance to the nearest training embedding: a broken input still lands near *some*
    training embedding, but along directions the training data hardly varies in.)
    heldout_scores / heldout_confidences (M,) float32: the model's held-out images; threshold: the
    `quantile` of heldout_scores, so in-distribution data exceeds it with probability 1 - quantile.
    """

    mean: np.ndarray
    precision: np.ndarray
    heldout_scores: np.ndarray
    heldout_confidences: np.ndarray
    quantile: float
    threshold: float
    model_version: str = ""

    def __post_init__(self):
        d, s, c = len(self.mean), self.heldout_scores, self.heldout_confidences
        if self.mean.ndim != 1 or self.precision.shape != (d, d):
            raise ValueError(f"Reference: expected mean (D,) and precision (D, D), got {self.mean.shape} "
                             f"and {self.precision.shape}")
        if s.ndim != 1 or c.shape != s.shape or len(s) == 0:
            raise ValueError(f"Reference: expected heldout_scores (M >= 1,) and confidences of the same shape, "
                             f"got {s.shape} and {c.shape}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"Reference.quantile: expected in (0, 1), got {self.quantile}")

    @property
    def expected(self) -> float:
        """Fraction of in-distribution embeddings expected beyond the threshold."""
        return 1.0 - self.quantile

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(K, D) embeddings (any scale; float16 is fine) -> (K,) float32 squared Mahalanobis distances."""
        e = np.asarray(embeddings, np.float32)
        if e.ndim != 2 or e.shape[1] != len(self.mean):
            raise ValueError(f"Reference.scores: expected embeddings (K, {len(self.mean)}), got {e.shape}")
        e = _unit(e) - self.mean
        return np.einsum("kd,de,ke->k", e, self.precision, e).astype(np.float32)

    def to_bytes(self) -> bytes:
        """An .npz (no pickles, a few tens of kB) for the hub's blob store; from_bytes() reads it back."""
        buf = io.BytesIO()
        np.savez_compressed(buf, mean=self.mean, precision=self.precision, heldout_scores=self.heldout_scores,
                            heldout_confidences=self.heldout_confidences, quantile=np.float64(self.quantile),
                            threshold=np.float64(self.threshold), model_version=np.str_(self.model_version))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Reference":
        """Raises ValueError for anything to_bytes() did not write."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                return cls(z["mean"], z["precision"], z["heldout_scores"], z["heldout_confidences"],
                           float(z["quantile"]), float(z["threshold"]), str(z["model_version"]))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:  # not a zip / a member missing / pickled
            raise ValueError(f"not a live.Reference blob: {exc}") from exc


def build_reference(train_embeddings: np.ndarray, heldout_embeddings: np.ndarray, heldout_confidences: np.ndarray,
                    quantile: float = 0.99, *, model_version: str = "", shrinkage: float = 0.01) -> Reference:
    """A model's embeddings of its training images (N, D), of held-out images (M, D) and its confidences
    on them (M,) -> Reference.

    The held-out images must not be training images (they would look closer than production does):
    use the golden set. Whatever conditions they cover count as known, so they should cover what
    production sees. M of several hundred or more: the threshold is an extreme quantile of M scores.
    shrinkage adds that fraction of the mean variance to the covariance's diagonal: with N not much
    larger than D the covariance is near-singular, and its smallest directions would dominate.
    """
    train = _unit(np.asarray(train_embeddings, np.float32))
    held = np.asarray(heldout_embeddings, np.float32)
    conf = np.asarray(heldout_confidences, np.float32).ravel()
    if train.ndim != 2 or len(train) < 2 or held.ndim != 2 or held.shape[1] != train.shape[1] or len(conf) != len(held):
        raise ValueError(f"build_reference: expected train (N >= 2, D), held-out (M, D) and (M,) confidences, "
                         f"got {train.shape}, {held.shape}, {conf.shape}")
    mean = train.mean(axis=0)
    cov = np.cov(train, rowvar=False).astype(np.float64)
    cov += shrinkage * np.trace(cov) / len(cov) * np.eye(len(cov))
    precision = np.linalg.inv(cov).astype(np.float32)
    probe = Reference(mean, precision, np.zeros(1, np.float32), np.zeros(1, np.float32), quantile, 0.0)
    # Through float16 first: the store keeps embeddings as float16, so calibrate on what it will hold.
    scores = probe.scores(held.astype(np.float16))
    return Reference(mean, precision, scores, conf, float(quantile), float(np.quantile(scores, quantile)),
                     model_version)


@dataclass(frozen=True)
class Shift:
    """How far production embeddings are from the training data, and whether that is an alarm.

    exceed_fraction: share of the n embeddings beyond the reference threshold, [low, high] its Wilson
    interval, expected the in-distribution share (1 - quantile). ks_* compare confidences with the
    held-out ones (one-sided: production less confident); nan when there were no confidences.
    """

    n: int
    exceeding: int
    exceed_fraction: float
    low: float
    high: float
    expected: float
    mean_confidence: float
    heldout_mean_confidence: float
    ks_statistic: float
    ks_pvalue: float
    alarm: bool
    reason: str


def assess_shift(reference: Reference, embeddings: np.ndarray, confidences: np.ndarray | None = None,
                 min_n: int = 20, *, factor: float = 3.0, z: float = 1.96) -> Shift:
    """Audit embeddings (K, D) and their confidences (K,) of one site and model -> Shift.

    Alarm when K >= min_n and the Wilson low of the exceeding fraction is above factor x expected.
    The confidences only inform (figures, and the reason when KS p < 1e-3): on the simulated world
    they added next to no power to the embedding test, but did add false alarms, since a site's class
    mix alone moves its confidences away from the class-balanced held-out set.
    """
    emb = np.asarray(embeddings, np.float32)
    n = len(emb)
    exceeding = int((reference.scores(emb) > reference.threshold).sum()) if n else 0
    low, high = wilson(exceeding, n, z)
    conf = np.asarray([] if confidences is None else confidences, np.float64).ravel()
    mean_conf, held_mean = float(conf.mean()) if len(conf) else math.nan, float(reference.heldout_confidences.mean())
    ks_stat = ks_p = math.nan
    if len(conf):
        # alternative="greater": production's CDF above the held-out one, i.e. lower confidences.
        res = stats.ks_2samp(conf, reference.heldout_confidences, alternative="greater", method="asymp")
        ks_stat, ks_p = float(res.statistic), float(res.pvalue)
    alarm = n >= min_n and low > factor * reference.expected
    reason = ""
    if alarm:
        reason = (f"{exceeding}/{n} audit embeddings ({exceeding / n:.1%}, >= {low:.1%}) lie beyond the training "
                  f"data's {reference.quantile:.0%} threshold, expected {reference.expected:.1%}")
        if ks_p < 1e-3:
            reason += f"; confidence fell (mean {mean_conf:.2f} vs held-out {held_mean:.2f}, KS p={ks_p:.1g})"
    return Shift(n, exceeding, exceeding / n if n else math.nan, low, high, reference.expected, mean_conf, held_mean,
                 ks_stat, ks_p, alarm, reason)


# ---- both, per site ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Alarm:
    """A drift alarm for one site. kind: "accuracy_drop" or "shift"; figures: the numbers behind it
    (JSON-ready); model_version: the model the evidence is about."""

    site: str
    kind: str
    reason: str
    figures: dict = field(default_factory=dict)
    model_version: str = ""


def drift_alarms(rows: Iterable[Row], references: Mapping[str, Reference] | None = None, *,
                 baselines: Mapping[str, float] | None = None, recent_fraction: float = 0.4, min_labeled: int = 30,
                 window: int = 500, min_n: int = 20, factor: float = 3.0) -> list[Alarm]:
    """Audit rows of every site (labeled or not, any model version) -> alarms, sorted by site then kind.

    Rows are grouped by (site, model_version). accuracy_drop uses the labeled ones (assess_drop with
    baselines.get(version)); shift uses the newest `window` that carry an embedding of the Reference's
    width, when references holds that version's Reference (assess_shift); other widths are skipped. Pass as much history as you like: shift only looks
    at the window, and accuracy_drop needs the history to compare against.
    """
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for r in _audit(rows):
        groups[str(r["site"]), str(r["model_version"])].append(r)
    alarms = []
    for (site, version), group in sorted(groups.items()):
        group.sort(key=lambda r: float(r["captured_at"]))
        drop = assess_drop(group, recent_fraction=recent_fraction, min_n=min_labeled,
                           baseline=(baselines or {}).get(version))
        if drop.alarm:
            figures = {"recent": _figures(drop.recent), "baseline": drop.baseline,
                       "earlier": None if drop.earlier is None else _figures(drop.earlier)}
            alarms.append(Alarm(site, "accuracy_drop", drop.reason, figures, version))
        ref = (references or {}).get(version)
        # Only embeddings of the reference's width: one device sending another width (a bug, or on
        # purpose) must not take the whole view down, nor speak for its site.
        width = None if ref is None else len(ref.mean)
        seen = [r for r in group if r.get("embedding") is not None and _vector(r["embedding"]).shape == (width,)][-window:]
        if ref is not None and seen:
            shift = assess_shift(ref, np.stack([_vector(r["embedding"]) for r in seen]),
                                 np.asarray([float(r["confidence"]) for r in seen]), min_n, factor=factor)
            if shift.alarm:
                alarms.append(Alarm(site, "shift", shift.reason, _figures(shift), version))
    return sorted(alarms, key=lambda a: (a.site, a.kind, a.model_version))


# ---- helpers -----------------------------------------------------------------------------------

def _audit(rows: Iterable[Row]) -> Iterable[Row]:
    return (r for r in rows if r.get("audit", 1))


def _tags(row: Row) -> Mapping:
    tags = row.get("tags") or {}
    return json.loads(tags) if isinstance(tags, (str, bytes)) else tags


def _vector(v) -> np.ndarray:
    """An embedding as the store holds it (float16 bytes) or as an array -> (D,) float32."""
    return np.frombuffer(v, "<f2").astype(np.float32) if isinstance(v, (bytes, bytearray, memoryview)) \
        else np.asarray(v, np.float32).ravel()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _figures(obj) -> dict:
    """A result dataclass -> a JSON-ready dict (nan -> None)."""
    out = {}
    for k, v in vars(obj).items():
        if isinstance(v, float) and math.isnan(v):
            v = None
        out[k] = v
    return out
