"""The hub's storage: samples, labels, models and the desired version, behind a few verbs.

SQLite through sqlite-utils (one file, zero set-up); images and artifacts in a BlobStore. Nothing
outside this module writes SQL, so a PostgreSQL store can pass the same tests later.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import sqlite_utils

from edgeloop.shared.protocol import Candidate
from edgeloop.shared.sampling.policy import AUDIT, FEEDBACK_WRONG

from .blobs import BlobStore

AUDIT_PRIORITY = -1.0  # in the label queue, after everything selected
FEEDBACK_PRIORITY = 1e6  # a prediction the application flagged wrong: first in the label queue


class HubStore:
    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.data_dir / "blobs")
        # One connection shared by the API's worker threads; every use holds the lock.
        conn = sqlite3.connect(self.data_dir / "hub.sqlite", check_same_thread=False)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self._lock = threading.RLock()
        self._schema()

    def _schema(self) -> None:
        if "samples" not in self.db.table_names():
            self.db["samples"].create({
                "sample_id": str, "device_id": str, "camera_id": str, "site": str, "relay_id": str,
                "captured_at": float, "received_at": float, "model_version": str, "predicted": int,
                "confidence": float, "value": float, "reasons": str, "tags": str, "scores": str,
                "probs": bytes, "embedding": bytes, "image_sha256": str, "image_bytes": int,
                "status": str,  # new | queued | labeled
                "selected_at": float, "priority": float, "audit": int,
            }, pk="sample_id", not_null={"sample_id"}, defaults={"status": "new", "audit": 0})
            self.db["samples"].create_index(["status", "priority"])
        if "labels" not in self.db.table_names():
            self.db["labels"].create({"sample_id": str, "label": int, "source": str, "labeled_at": float},
                                     pk="sample_id")
        if "models" not in self.db.table_names():
            self.db["models"].create({"version": str, "parent": str, "created_at": float, "artifact_sha256": str,
                                      "artifact_size": int, "state_sha256": str, "metrics": str,
                                      "labels_total": int}, pk="version")
        if "desired" not in self.db.table_names():
            self.db["desired"].create({"grp": str, "version": str, "set_at": float}, pk="grp")
        if "campaigns" not in self.db.table_names():
            self.db["campaigns"].create({"campaign_id": str, "exemplars": str, "threshold": float, "quota": int,
                                         "expires_at": float, "created_at": float}, pk="campaign_id")
        if "counters" not in self.db.table_names():
            self.db["counters"].create({"name": str, "n": int}, pk="name")

    # -- samples -----------------------------------------------------------------------------
    def ingest(self, cands: Iterable[Candidate], site: str, relay_id: str, status: str = "new"
               ) -> tuple[list[str], list[str]]:
        """Store candidates not held yet; -> (stored ids, ids already held). Idempotent by sample_id."""
        cands = list(cands)
        for c in cands:  # blobs first: a row never points at a missing image
            self.blobs.put(c.image)
        stored, dup = [], []
        now = time.time()
        with self._lock, self.db.conn:
            for c in cands:
                audit, wrong = AUDIT in c.reasons, FEEDBACK_WRONG in c.reasons
                row = {
                    "sample_id": c.sample_id, "device_id": c.device_id, "camera_id": c.camera_id, "site": site,
                    "relay_id": relay_id, "captured_at": c.captured_at, "received_at": now,
                    "model_version": c.model_version, "predicted": c.predicted, "confidence": c.confidence,
                    "value": c.value, "reasons": json.dumps(list(c.reasons)), "tags": json.dumps(c.tags),
                    "scores": json.dumps(c.scores), "probs": np.asarray(c.probs, "<f4").tobytes(),
                    "embedding": None if c.embedding is None else np.asarray(c.embedding, "<f2").tobytes(),
                    "image_sha256": c.image_sha256, "image_bytes": len(c.image),
                    # Audit samples queue for labeling on arrival, after the selected ones, and never
                    # enter the selection pool: they are the unbiased slice. A frame the application
                    # flagged wrong queues first.
                    "status": "queued" if status == "new" and (audit or wrong) else status,
                    "selected_at": None,
                    "priority": AUDIT_PRIORITY if audit else FEEDBACK_PRIORITY if wrong else None,
                    "audit": int(audit),
                }
                cur = self.db.conn.execute(
                    f"INSERT OR IGNORE INTO samples ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                    list(row.values()))
                (stored if cur.rowcount else dup).append(c.sample_id)
        return stored, dup

    def _query(self, sql: str, params=()) -> list[dict]:
        with self._lock:
            return list(self.db.query(sql, params))

    def sample(self, sample_id: str) -> dict | None:
        rows = self._query("SELECT * FROM samples WHERE sample_id = ?", [sample_id])
        return _decode_row(rows[0]) if rows else None

    def samples_with_status(self, status: str) -> list[dict]:
        return [_decode_row(r) for r in self._query("SELECT * FROM samples WHERE status = ?", [status])]

    def mark_queued(self, priorities: dict[str, float]) -> None:
        now = time.time()
        with self._lock, self.db.conn:
            self.db.conn.executemany(
                "UPDATE samples SET status = 'queued', selected_at = ?, priority = ? WHERE sample_id = ? AND status = 'new'",
                [(now, p, sid) for sid, p in priorities.items()])

    def label_queue(self, limit: int = 100) -> list[dict]:
        return [_decode_row(r) for r in self._query(
            "SELECT * FROM samples WHERE status = 'queued' ORDER BY priority DESC, sample_id LIMIT ?", [limit])]

    def add_labels(self, labels: dict[str, int], source: str) -> list[str]:
        """-> ids labeled; ids the hub does not hold are skipped (the caller reports them)."""
        now = time.time()
        done = []
        with self._lock, self.db.conn:
            for sid, label in labels.items():
                cur = self.db.conn.execute("UPDATE samples SET status = 'labeled' WHERE sample_id = ?", [sid])
                if cur.rowcount:
                    self.db.conn.execute("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?)", [sid, label, source, now])
                    done.append(sid)
        return done

    def labeled_embeddings(self) -> np.ndarray | None:
        """(M, D) float32 embeddings of the labeled samples that have one, or None."""
        rows = self._query("SELECT s.embedding FROM labels l JOIN samples s USING (sample_id) WHERE s.embedding IS NOT NULL")
        embs = [np.frombuffer(r["embedding"], "<f2") for r in rows]
        if not embs:
            return None
        dim = max({e.shape[0] for e in embs}, key=[e.shape[0] for e in embs].count)
        return np.stack([e for e in embs if e.shape[0] == dim]).astype(np.float32)

    def labeled(self) -> list[dict]:
        """Every labeled sample: sample_id, label, image_sha256, tags."""
        return [{**r, "tags": json.loads(r["tags"])} for r in self._query(
            "SELECT s.sample_id, l.label, s.image_sha256, s.tags FROM labels l JOIN samples s USING (sample_id) "
            "ORDER BY s.sample_id")]

    def counts(self) -> dict[str, int]:
        by_status = {r["status"]: r["n"] for r in self._query("SELECT status, COUNT(*) AS n FROM samples GROUP BY status")}
        audit = self._query("SELECT COUNT(*) AS n, SUM(status = 'labeled') AS labeled FROM samples WHERE audit = 1")[0]
        return {"samples": sum(by_status.values()), **{f"status_{k}": v for k, v in by_status.items()},
                "audit": audit["n"], "audit_labeled": audit["labeled"] or 0,
                "labels": self._query("SELECT COUNT(*) AS n FROM labels")[0]["n"], **self.counters()}

    # -- models ------------------------------------------------------------------------------
    def add_model(self, version: str, parent: str | None, artifact: bytes, state: bytes, metrics: dict,
                  labels_total: int) -> None:
        art = self.blobs.put(artifact)
        st = self.blobs.put(state)
        with self._lock:
            self.db["models"].insert({"version": version, "parent": parent, "created_at": time.time(),
                                      "artifact_sha256": art, "artifact_size": len(artifact), "state_sha256": st,
                                      "metrics": json.dumps(metrics), "labels_total": labels_total}, replace=True)

    def model(self, version: str) -> dict | None:
        rows = self._query("SELECT * FROM models WHERE version = ?", [version])
        return {**rows[0], "metrics": json.loads(rows[0]["metrics"])} if rows else None

    def models(self) -> list[dict]:
        return [{**r, "metrics": json.loads(r["metrics"])} for r in self._query("SELECT * FROM models ORDER BY created_at")]

    def latest_model(self) -> dict | None:
        rows = self.models()
        return rows[-1] if rows else None

    def set_desired(self, version: str, group: str = "fleet") -> None:
        with self._lock:
            self.db["desired"].insert({"grp": group, "version": version, "set_at": time.time()}, replace=True)

    def desired(self, group: str = "fleet") -> str | None:
        rows = self._query("SELECT version FROM desired WHERE grp = ?", [group])
        return rows[0]["version"] if rows else None

    # -- campaigns ---------------------------------------------------------------------------
    def add_campaign(self, exemplar_ids: list[str], threshold: float, quota: int, ttl_s: float) -> dict:
        """A campaign from the embeddings of samples the hub holds; ValueError names what is missing."""
        embs = []
        for sid in exemplar_ids:
            row = self.sample(sid)
            if row is None or row["embedding"] is None:
                raise ValueError(f"sample {sid!r} is not at the hub or has no embedding")
            embs.append(row["embedding"].astype(float).round(4).tolist())
        if len({len(e) for e in embs}) != 1:
            raise ValueError("exemplars have embeddings of different sizes")
        with self._lock:
            n = self._query("SELECT COUNT(*) AS n FROM campaigns")[0]["n"]
            camp = {"campaign_id": f"cmp-{n + 1}", "exemplars": json.dumps(embs), "threshold": threshold,
                    "quota": quota, "expires_at": time.time() + ttl_s, "created_at": time.time()}
            self.db["campaigns"].insert(camp)
        return {**camp, "exemplars": embs}

    def active_campaigns(self) -> list[dict]:
        rows = self._query("SELECT * FROM campaigns WHERE expires_at > ? ORDER BY created_at", [time.time()])
        return [{**r, "exemplars": json.loads(r["exemplars"])} for r in rows]

    # -- counters ----------------------------------------------------------------------------
    def bump(self, name: str, n: int) -> None:
        with self._lock, self.db.conn:
            self.db.conn.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET n = n + excluded.n",
                                 [name, n])

    def counters(self) -> dict[str, int]:
        return {r["name"]: r["n"] for r in self._query("SELECT name, n FROM counters")}


def _decode_row(r: dict) -> dict:
    r = dict(r)
    r["reasons"] = json.loads(r["reasons"])
    r["tags"] = json.loads(r["tags"])
    r["scores"] = json.loads(r["scores"])
    r["probs"] = np.frombuffer(r["probs"], "<f4")
    r["embedding"] = None if r["embedding"] is None else np.frombuffer(r["embedding"], "<f2")
    return r
