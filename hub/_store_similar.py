"""The hub's "similar" search: the glue between HubStore's rows and the ANN index of
hub/similar_index.py. A part of HubStore (its `data_dir` and `_query`, and `sample`), kept apart so
that store.py holds the data's verbs.

The index is loaded (or built) on first use, fed by ingest as samples arrive, caught up before each
use on the rows other hub processes stored, and saved on close, so the next start loads it and
catches up instead of rebuilding.
"""

from __future__ import annotations

import threading

import numpy as np

from .similar_index import SimilarIndex

# A row is read into the index when its received_at is at most this far before the newest one read:
# another hub process may commit a row stamped a little before rows this one has seen already.
INDEX_CATCH_UP_S = 120.0


class SimilarSearch:
    """Mixed into HubStore, which calls `_open_index` from its __init__, `_index_stored` from ingest
    and `_save_index` from close."""

    def _open_index(self) -> None:
        self._index: SimilarIndex | None = None  # loaded on first use: see similar_index()
        self._index_lock = threading.Lock()

    def _index_stored(self, sample_ids: list[str], embeddings: list[np.ndarray]) -> None:
        """Samples ingest has just stored: into the index, when it is loaded, so that it is kept up to
        date as samples arrive, not only when next asked."""
        if self._index is not None:
            self._index.add(sample_ids, embeddings)

    def _save_index(self) -> None:
        if self._index is not None:
            self._index.save()  # the next start loads it and catches up instead of rebuilding

    def similar(self, sample_id: str, k: int = 12) -> list[tuple[str, float]]:
        """The k samples nearest to one (cosine distance of embeddings of the same size), nearest
        first -> [(sample_id, distance)]. KeyError when the hub does not hold it or it has no embedding.
        Asks the ANN index (hub/similar_index.py): approximate, recall@10 measured by `bench scale`."""
        row = self.sample(sample_id)
        if row is None or row["embedding"] is None:
            raise KeyError(sample_id)
        near = self.similar_index().search(row["embedding"], k + 1)[0]
        return [(sid, dist) for sid, dist in near if sid != sample_id][:k]

    def similar_index(self) -> SimilarIndex:
        """The ANN index over every sample's embedding, caught up with the database: loaded from
        DATA/ann (or built from every row) on first use, then fed by ingest and by the rows other hub
        processes stored since (received_at within INDEX_CATCH_UP_S of the newest read)."""
        with self._index_lock:
            if self._index is None:
                self._index = SimilarIndex.load(self.data_dir / "ann")
            index = self._index
            rows = self._query("SELECT sample_id, embedding, received_at FROM samples WHERE embedding IS NOT NULL "
                               "AND COALESCE(received_at, 0) >= ? ORDER BY received_at, sample_id",
                               [index.synced_until - INDEX_CATCH_UP_S])
            index.add([r["sample_id"] for r in rows], [np.frombuffer(r["embedding"], "<f2") for r in rows])
            if rows:
                index.synced_until = max(index.synced_until, max(r["received_at"] or 0.0 for r in rows))
        return index
