"""The hub's storage: samples, labels, models, desired versions, device reports and rollouts, behind a few verbs.

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
        if "detections" not in self.db["samples"].columns_dict:  # added after the first hubs were deployed
            self.db["samples"].add_column("detections", bytes)
        if "ambiguous" not in self.db.table_names():
            # Samples a labeler could not decide: kept and counted, never trained on.
            self.db["ambiguous"].create({"sample_id": str, "source": str, "marked_at": float}, pk="sample_id")
        if "tokens" not in self.db.table_names():
            # People's and relays' tokens: only their SHA-256 is kept (see hub/auth.py).
            self.db["tokens"].create({"token_hash": str, "name": str, "role": str, "created_at": float,
                                      "revoked_at": float}, pk="token_hash")
            self.db["tokens"].create_index(["name"])
        if "audit_log" not in self.db.table_names():
            # Every write through the API, allowed or refused, and who made it.
            self.db["audit_log"].create({"seq": int, "at": float, "who": str, "role": str, "method": str,
                                         "path": str, "status": int, "detail": str}, pk="seq")
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
        if "devices" not in self.db.table_names():
            # The latest report of each device, as its relay forwarded it (stats and facts: JSON maps).
            self.db["devices"].create({"device_id": str, "site": str, "relay_id": str, "status": str,
                                       "model_version": str, "stats": str, "facts": str, "last_error": str,
                                       "updated_at": float}, pk="device_id")
            self.db["devices"].create_index(["site"])
        if "rollouts" not in self.db.table_names():
            # stages, gates, gate (the last gate result) and history are JSON; seq orders and names them.
            self.db["rollouts"].create({"rollout_id": str, "seq": int, "candidate": str, "baseline": str, "grp": str,
                                        "stages": str, "gates": str, "shadow_fraction": float,
                                        "max_latency_ms": float, "state": str, "stage_index": int,
                                        "stage_started_at": float, "paused_at": float, "reason": str,
                                        "gate": str, "history": str, "created_at": float, "updated_at": float},
                                       pk="rollout_id")
            self.db["rollouts"].create_index(["state"])

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
                    "detections": None if c.detections is None else np.asarray(c.detections, "<f4").tobytes(),
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

    def mark_ambiguous(self, sample_ids: Iterable[str], source: str) -> list[str]:
        """A labeler could not decide: the samples leave the queue, are kept and counted, and never
        enter training. -> ids marked (ids the hub does not hold are skipped)."""
        now, done = time.time(), []
        with self._lock, self.db.conn:
            for sid in sample_ids:
                cur = self.db.conn.execute("UPDATE samples SET status = 'ambiguous' WHERE sample_id = ?", [sid])
                if cur.rowcount:
                    self.db.conn.execute("DELETE FROM labels WHERE sample_id = ?", [sid])
                    self.db.conn.execute("INSERT OR REPLACE INTO ambiguous VALUES (?, ?, ?)", [sid, source, now])
                    done.append(sid)
        return done

    def unlabel(self, sample_id: str) -> str | None:
        """Undo a label or an ambiguous mark: the sample goes back to the label queue where it was.
        -> the status it had, or None when it was neither labeled nor ambiguous (or is unknown)."""
        with self._lock, self.db.conn:
            rows = self._query("SELECT status FROM samples WHERE sample_id = ?", [sample_id])
            if not rows or rows[0]["status"] not in ("labeled", "ambiguous"):
                return None
            self.db.conn.execute("DELETE FROM labels WHERE sample_id = ?", [sample_id])
            self.db.conn.execute("DELETE FROM ambiguous WHERE sample_id = ?", [sample_id])
            self.db.conn.execute("UPDATE samples SET status = 'queued', priority = COALESCE(priority, 0) "
                                 "WHERE sample_id = ?", [sample_id])
        return rows[0]["status"]

    def labels(self, source: str | None = None) -> list[dict]:
        """Every label (sample_id, label, source, labeled_at), oldest first; one source's when given."""
        where, params = ("WHERE source = ?", [source]) if source is not None else ("", [])
        return self._query(f"SELECT * FROM labels {where} ORDER BY labeled_at, sample_id", params)

    def ambiguous(self) -> list[dict]:
        """Samples marked ambiguous (sample_id, source, marked_at), oldest first."""
        return self._query("SELECT * FROM ambiguous ORDER BY marked_at, sample_id")

    def similar(self, sample_id: str, k: int = 12) -> list[tuple[str, float]]:
        """The k samples nearest to one (cosine distance of embeddings of the same size), nearest
        first -> [(sample_id, distance)]. KeyError when the hub does not hold it or it has no embedding.
        A linear scan: fine for the hub sizes of one team (10^5 samples x 64 float16 = 13 MB)."""
        row = self.sample(sample_id)
        if row is None or row["embedding"] is None:
            raise KeyError(sample_id)
        rows = self._query("SELECT sample_id, embedding FROM samples WHERE embedding IS NOT NULL "
                           "AND length(embedding) = ? AND sample_id != ?", [len(row["embedding"]) * 2, sample_id])
        if not rows:
            return []
        embs = np.stack([np.frombuffer(r["embedding"], "<f2") for r in rows]).astype(np.float32)
        q = row["embedding"].astype(np.float32)
        dist = 1.0 - embs @ q / np.maximum(np.linalg.norm(embs, axis=1) * np.linalg.norm(q), 1e-12)
        order = np.argsort(dist, kind="stable")[:k]
        return [(rows[i]["sample_id"], float(dist[i])) for i in order]

    def funnel(self) -> dict[str, int]:
        """Hub-side counts of the funnel, over the samples its relays forwarded (seed sets excluded):
        forwarded; selected = sent to the label queue by any route (the hub's selection, the audit
        stream, application feedback); labeled; and beside them ambiguous, audit, still queued."""
        q = self._query(
            "SELECT COUNT(*) AS forwarded, SUM(status != 'new') AS selected, "
            "SUM(status = 'labeled') AS labeled, SUM(status = 'ambiguous') AS ambiguous, "
            "SUM(audit) AS audit, SUM(status = 'queued') AS queued "
            "FROM samples WHERE NOT (device_id = relay_id AND site = relay_id)")[0]  # seed sets: see import_labeled_set
        return {k: int(v or 0) for k, v in q.items()}

    def audit_rows(self, limit: int = 20_000) -> list[dict]:
        """The newest `limit` audit samples, oldest first, with their label when they have one: what
        hub/live.py estimates production accuracy and drift from (tags decoded, embedding raw bytes)."""
        rows = self._query(
            "SELECT * FROM (SELECT s.sample_id, s.site, s.device_id, s.camera_id, s.model_version, s.captured_at, "
            "s.predicted, s.confidence, s.embedding, s.tags, s.audit, l.label FROM samples s "
            "LEFT JOIN labels l USING (sample_id) WHERE s.audit = 1 ORDER BY s.captured_at DESC LIMIT ?) "
            "ORDER BY captured_at", [limit])
        return [{**r, "tags": json.loads(r["tags"])} for r in rows]

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

    # A rollout group is "all" (the fleet row) or a site id (its own row, "site:<id>", which cannot
    # clash with "fleet"). A site runs whichever of its row and the fleet's was set last, so a
    # fleet-wide change supersedes an earlier site rollout and a later site rollout overrides the fleet.
    def set_group_desired(self, version: str, group: str) -> None:
        self.set_desired(version, _desired_key(group))

    def group_desired(self, group: str) -> str | None:
        return self.site_desired(group) if group != "all" else self.desired()

    def site_desired(self, site: str) -> str | None:
        rows = self._query("SELECT version FROM desired WHERE grp IN (?, ?) ORDER BY set_at DESC LIMIT 1",
                           ["fleet", _desired_key(site)])
        return rows[0]["version"] if rows else None

    # -- device reports ----------------------------------------------------------------------
    def record_devices(self, site: str, relay_id: str, devices: Iterable[dict], now: float) -> int:
        """Keep the latest report of each device (dicts: device_id, status, model_version, stats, facts, last_error)."""
        rows = [(d["device_id"], site, relay_id, d["status"], d["model_version"], json.dumps(d["stats"]),
                 json.dumps(d["facts"]), d["last_error"], now) for d in devices]
        with self._lock, self.db.conn:
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO devices (device_id, site, relay_id, status, model_version, stats, facts, "
                "last_error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def devices(self, site: str | None = None) -> list[dict]:
        """Reported devices (all, or one site's), by device id; stats and facts decoded."""
        rows = (self._query("SELECT * FROM devices WHERE site = ? ORDER BY device_id", [site]) if site is not None
                else self._query("SELECT * FROM devices ORDER BY device_id"))
        return [{**r, "stats": json.loads(r["stats"]), "facts": json.loads(r["facts"])} for r in rows]

    def device_ids(self, site: str | None = None) -> list[str]:
        """Ids of the reported devices (all, or one site's), sorted."""
        rows = (self._query("SELECT device_id FROM devices WHERE site = ? ORDER BY device_id", [site])
                if site is not None else self._query("SELECT device_id FROM devices ORDER BY device_id"))
        return [r["device_id"] for r in rows]

    # -- rollouts ----------------------------------------------------------------------------
    _ROLLOUT_JSON = ("stages", "gates", "gate", "history")

    def add_rollout(self, row: dict) -> dict:
        """Store a new rollout (without rollout_id) -> the stored row, named r1, r2, ... in order."""
        with self._lock, self.db.conn:
            seq = self._query("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM rollouts")[0]["n"]
            full = {**row, "rollout_id": f"r{seq}", "seq": seq}
            self.db["rollouts"].insert(self._encode_rollout(full))
        return self.rollout(full["rollout_id"])

    def rollout(self, rollout_id: str) -> dict | None:
        rows = self._query("SELECT * FROM rollouts WHERE rollout_id = ?", [rollout_id])
        return self._decode_rollout(rows[0]) if rows else None

    def rollouts(self, states: Iterable[str] | None = None, limit: int | None = None) -> list[dict]:
        """Rollouts, newest first; only those in `states` when given."""
        states = list(states) if states is not None else None
        where = f"WHERE state IN ({', '.join('?' * len(states))})" if states else ""
        sql = f"SELECT * FROM rollouts {where} ORDER BY seq DESC" + (" LIMIT ?" if limit else "")
        params = (states or []) + ([limit] if limit else [])
        return [self._decode_rollout(r) for r in self._query(sql, params)]

    def update_rollout(self, rollout_id: str, changes: dict) -> dict:
        """Apply `changes` (JSON fields as Python values) -> the updated row."""
        with self._lock, self.db.conn:
            self.db["rollouts"].update(rollout_id, self._encode_rollout(changes))
        return self.rollout(rollout_id)

    def _encode_rollout(self, row: dict) -> dict:
        return {("grp" if k == "group" else k): json.dumps(v) if k in self._ROLLOUT_JSON else v for k, v in row.items()}

    def _decode_rollout(self, row: dict) -> dict:
        out = {("group" if k == "grp" else k): v for k, v in row.items()}
        for k in self._ROLLOUT_JSON:
            out[k] = json.loads(out[k]) if out.get(k) is not None else None
        return out

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

    # -- tokens and the audit log ---------------------------------------------------------------
    def add_token(self, token_hash: str, name: str, role: str) -> None:
        with self._lock:
            self.db["tokens"].insert({"token_hash": token_hash, "name": name, "role": role, "created_at": time.time(),
                                      "revoked_at": None})

    def token(self, token_hash: str) -> dict | None:
        """The live (not revoked) token with this hash, or None."""
        rows = self._query("SELECT * FROM tokens WHERE token_hash = ? AND revoked_at IS NULL", [token_hash])
        return rows[0] if rows else None

    def tokens_exist(self) -> bool:
        return bool(self._query("SELECT 1 FROM tokens WHERE revoked_at IS NULL LIMIT 1"))

    def tokens(self) -> list[dict]:
        """Every token ever made (name, role, created_at, revoked_at; a short hash prefix as its id)."""
        return [{**r, "token_hash": r["token_hash"][:12]} for r in
                self._query("SELECT * FROM tokens ORDER BY created_at")]

    def revoke_tokens(self, name: str) -> int:
        """Revoke every live token of `name` (or the one whose hash starts with it) -> how many."""
        with self._lock, self.db.conn:
            cur = self.db.conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE revoked_at IS NULL AND (name = ? OR token_hash LIKE ?)",
                [time.time(), name, f"{name}%" if len(name) >= 8 else "-"])
        return cur.rowcount

    def audit(self, who: str, role: str, method: str, path: str, status: int, detail: str = "") -> None:
        with self._lock, self.db.conn:
            self.db.conn.execute("INSERT INTO audit_log (at, who, role, method, path, status, detail) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)", [time.time(), who, role, method, path, status, detail])

    def audit_log(self, limit: int = 100, who: str | None = None) -> list[dict]:
        """The newest writes first."""
        where, params = ("WHERE who = ?", [who]) if who is not None else ("", [])
        return self._query(f"SELECT * FROM audit_log {where} ORDER BY seq DESC LIMIT ?", params + [limit])

    def label_source(self, sample_id: str) -> str | None:
        rows = self._query("SELECT source FROM labels WHERE sample_id = ? UNION ALL "
                           "SELECT source FROM ambiguous WHERE sample_id = ?", [sample_id, sample_id])
        return rows[0]["source"] if rows else None

    # -- counters ----------------------------------------------------------------------------
    def bump(self, name: str, n: int) -> None:
        with self._lock, self.db.conn:
            self.db.conn.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET n = n + excluded.n",
                                 [name, n])

    def counters(self) -> dict[str, int]:
        return {r["name"]: r["n"] for r in self._query("SELECT name, n FROM counters")}


def _desired_key(group: str) -> str:
    return "fleet" if group == "all" else f"site:{group}"


def _decode_row(r: dict) -> dict:
    r = dict(r)
    r["reasons"] = json.loads(r["reasons"])
    r["tags"] = json.loads(r["tags"])
    r["scores"] = json.loads(r["scores"])
    r["probs"] = np.frombuffer(r["probs"], "<f4")
    r["embedding"] = None if r["embedding"] is None else np.frombuffer(r["embedding"], "<f2")
    det = r.get("detections")
    r["detections"] = None if det is None else np.frombuffer(det, "<f4").reshape(-1, 6)
    return r
