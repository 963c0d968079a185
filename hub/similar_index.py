"""Nearest neighbours over the hub's sample embeddings: an HNSW index from usearch, not a scan.

"More like this" (`GET /api/v1/samples/{id}/similar`) and the hybrid selection's near-duplicate
removal at scale both ask it. A linear scan of 10^6 embeddings costs ~100 ms and a pairwise
near-duplicate pass is quadratic; the index answers in well under a millisecond (figures: README,
"Throughput and sizing", measured by `edgeloop bench scale`, which calls this same class).

One usearch index per embedding size (each model's embedding has its own; distances are only
measured between vectors of one size), cosine distance `1 - cos(a, b)` as the exact scan uses,
stored as float16 (what the wire carries). Sample ids map to usearch's integer keys in insertion
order. Samples are never deleted at the hub, so the index only grows.

Kept up to date by `HubStore`: its own ingest adds what it stored, and before each use it catches
up on rows other hub processes stored (by `received_at`, see _store_similar.py). Persisted as
DATA/ann/index.npz on close, loaded on the next start and caught up from there; a missing or inconsistent
file means a rebuild from the database, never a wrong answer.

Errors: `ValueError` for a query of the wrong shape; a file that does not load is rebuilt.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
import threading
from pathlib import Path

import numpy as np
from usearch.index import Index

# HNSW settings, measured with `edgeloop bench scale` (recall@10 against the exact scan; README):
# 16 links per node, 64 candidates while adding (the build is the cost: ~0.3-0.6 ms a sample on this box)
# and 256 while searching keep recall@10 >= 0.95 at 10^6 samples (with 128: 0.949, README).
CONNECTIVITY = 16
EXPANSION_ADD = 64
EXPANSION_SEARCH = 256
FILE = "index.npz"
# Below this many vectors of a size, usearch scans them all (exact=True): under a millisecond at this
# size, and HNSW's misses on small sets (a property test found some at 12 of 100) buy nothing there.
EXACT_BELOW = 20_000


class SimilarIndex:
    """`add(ids, embeddings)` then `search(query, k)`; `save()` / `SimilarIndex.load(folder)`.
    Thread-safe (one lock: usearch's add and search must not overlap on one index)."""

    def __init__(self, folder: Path | None = None):
        self.folder = None if folder is None else Path(folder)
        self._by_dim: dict[int, Index] = {}
        self._ids: dict[int, list[str]] = {}
        self._known: set[str] = set()
        self._lock = threading.Lock()
        self.synced_until = 0.0  # received_at up to which the database has been read (_store_similar.py)
        self.queries = 0  # searches answered: lets a test see that a route went through the index

    def __len__(self) -> int:
        return len(self._known)

    def memory_bytes(self) -> int:
        """What usearch holds in memory for all sizes (vectors and graph)."""
        with self._lock:
            return sum(int(index.memory_usage) for index in self._by_dim.values())

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self._known

    def add(self, ids: list[str], embeddings: list[np.ndarray]) -> int:
        """Index the embeddings (any sizes) of ids not indexed yet -> how many were added."""
        groups: dict[int, tuple[list[str], list[np.ndarray]]] = {}
        seen = set()
        # Checked and added under one lock: ingest and a catch-up may offer the same row at once, and
        # a row indexed twice would come back twice from "similar".
        with self._lock:
            for sid, emb in zip(ids, embeddings):
                if sid in self._known or sid in seen or emb is None or np.asarray(emb).size == 0:
                    continue
                seen.add(sid)
                e = np.asarray(emb, np.float16).reshape(-1)
                g = groups.setdefault(e.size, ([], []))
                g[0].append(sid)
                g[1].append(e)
            for dim, (gids, gembs) in groups.items():
                index = self._by_dim.get(dim)
                if index is None:
                    index = self._by_dim[dim] = _new_index(dim)
                    self._ids[dim] = []
                start = len(self._ids[dim])
                index.add(np.arange(start, start + len(gids), dtype=np.uint64), np.stack(gembs))
                self._ids[dim].extend(gids)
                self._known.update(gids)
        return len(seen)

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """queries (Q, D) or (D,) -> per query up to k (sample_id, cosine distance), nearest first,
        among the indexed samples of the same size D ([] when there are none)."""
        q = np.asarray(queries, np.float32)
        q = q.reshape(1, -1) if q.ndim == 1 else q
        if q.ndim != 2:
            raise ValueError(f"queries: expected (Q, D) or (D,), got shape {np.shape(queries)}")
        with self._lock:
            self.queries += len(q)
            index, ids = self._by_dim.get(q.shape[1]), self._ids.get(q.shape[1])
            if index is None or not ids or k <= 0:
                return [[] for _ in q]
            found = index.search(q.astype(np.float16), min(int(k), len(ids)), exact=len(ids) < EXACT_BELOW)
        keys = np.atleast_2d(found.keys)
        dists = np.atleast_2d(found.distances)
        # One query comes back as usearch's Matches (no counts), several as BatchMatches.
        counts = np.atleast_1d(getattr(found, "counts", keys.shape[1]))
        return [[(ids[int(key)], float(dist)) for key, dist in zip(keys[i, :counts[i]], dists[i, :counts[i]])]
                for i in range(len(q))]

    def within(self, vector: np.ndarray, threshold: float, k: int = 32) -> list[str]:
        """Ids of the indexed samples within cosine distance `threshold` of `vector` (itself
        included when indexed): k nearest first, four times more while all of them are within."""
        while True:
            found = self.search(vector, k)[0]
            inside = [sid for sid, dist in found if dist <= threshold + 1e-6]  # float16 rounding
            if len(inside) < len(found) or len(found) < k:
                return inside
            k *= 4

    # -- persistence ---------------------------------------------------------------------------
    def save(self) -> None:
        """Write the whole index (every size, its ids and `synced_until`) as one file, replaced
        atomically: hub processes sharing DATA (PostgreSQL) may each save, and a reader gets one
        writer's consistent copy, never one's ids beside another's vectors. Nothing without a folder."""
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            parts = {"synced_until": np.array(self.synced_until)}
            for dim, index in self._by_dim.items():
                parts[f"ids_{dim}"] = np.array(self._ids[dim], dtype=object).astype(str)
                parts[f"index_{dim}"] = np.frombuffer(bytes(index.save()), np.uint8)
            fd, tmp = tempfile.mkstemp(prefix=".index.", suffix=".npz", dir=self.folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    np.savez(f, **parts)
                os.replace(tmp, self.folder / FILE)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    @classmethod
    def load(cls, folder: Path) -> SimilarIndex:
        """The index saved under `folder`, or an empty one (synced_until 0: the caller reads every
        row again) when nothing was saved or the file does not load."""
        out = cls(folder)
        try:
            with np.load(Path(folder) / FILE, allow_pickle=False) as z:
                for name in z.files:
                    if not name.startswith("ids_"):
                        continue
                    dim = int(name[4:])
                    index = _new_index(dim)
                    index.load(bytearray(z[f"index_{dim}"].tobytes()))
                    ids = [str(s) for s in z[name]]
                    if len(index) != len(ids):
                        raise ValueError(f"size {dim}: {len(ids)} ids beside {len(index)} vectors")
                    out._by_dim[dim], out._ids[dim] = index, ids
                out.synced_until = float(z["synced_until"])
        except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile):
            return cls(folder)  # nothing saved, or unreadable: rebuilt from the database
        out._known = {sid for ids in out._ids.values() for sid in ids}
        return out


def _new_index(dim: int) -> Index:
    return Index(ndim=dim, metric="cos", dtype="f16", connectivity=CONNECTIVITY, expansion_add=EXPANSION_ADD,
                 expansion_search=EXPANSION_SEARCH)
