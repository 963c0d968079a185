"""The hub's storage: samples, labels, models, desired versions, device reports and rollouts, behind a few verbs.

Two engines run the same statements (hub/_engines.py): SQLite at DATA/hub.sqlite by default (one
file, zero set-up, one hub process) and PostgreSQL with `--db postgresql://...` (one database,
several hub processes behind a load balancer). Nothing outside this module and the parts of HubStore
kept apart (_access.py, _rollout_rows.py, _store_similar.py) writes SQL, and every statement is in
the SQL both speak, so the same test suite passes on both.

Several processes on one database stay correct because:
- ingest is INSERT ... ON CONFLICT DO NOTHING by sample_id, so a sample two hubs receive at once
  is stored by exactly one of them, and only that one answers "stored";
- numbers (rollouts r1, r2, ...; campaigns cmp-1, ...) come from an atomic upsert on a sequences row;
- read-modify-writes that span several statements (a rollout's transition, picking the next model
  version while training) run under `locked(name)`, one holder across every process.

Images and model artifacts are not in the database: they live in a content-addressed BlobStore
under DATA/blobs, which every hub process must share (with Kubernetes: one ReadWriteMany volume).
Blobs are immutable and named by their sha256, so sharing needs no coordination, the database stays
small, and the artifact route can serve a file with Range requests. An S3-compatible store can
replace the folder later (DESIGN.md).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edgeloop.shared.images import image_size
from edgeloop.shared.protocol import Candidate
from edgeloop.shared.sampling.policy import FEEDBACK_WRONG, is_feedback

from ._access import AccessRows
from ._engines import open_engine
from ._rollout_rows import RolloutRows
from ._rows import ADDED_COLUMNS, FEEDBACK_PRIORITY, SCHEMA, WITH_LABEL, decode_boxes, decode_row, sample_row
from ._store_similar import INDEX_CATCH_UP_S, SimilarSearch  # noqa: F401 (INDEX_CATCH_UP_S: still importable here)
from .blobs import BlobStore


class HubStore(AccessRows, RolloutRows, SimilarSearch):
    """`HubStore(data_dir)`: SQLite in the data folder; `HubStore(data_dir, db="postgresql://...")`:
    that PostgreSQL database. Blobs are under data_dir either way. Thread-safe."""

    def __init__(self, data_dir: Path, db: str | None = None):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.data_dir / "blobs")
        self.db = open_engine(self.data_dir, db)
        self._schema()
        self._open_index()

    def _schema(self) -> None:
        # Under a lock: two PostgreSQL hubs starting at once would race on CREATE TABLE IF NOT EXISTS.
        with self.db.locked("schema"), self.db.transaction():
            for statement in SCHEMA.format(**self.db.types).split(";"):
                if statement.strip():
                    self.db.execute(statement)
            # Columns added after the first hubs were deployed.
            for table, column, kind in ADDED_COLUMNS:
                if column not in self.db.columns(table):
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {self.db.types[kind]}")

    def close(self) -> None:
        self._save_index()
        self.db.close()

    def locked(self, name: str) -> contextlib.AbstractContextManager:
        """Hold the lock `name` across every hub process on this database (and every thread of this
        one) for a read-modify-write that spans several calls. Not re-entrant."""
        return self.db.locked(name)

    def _query(self, sql: str, params=()) -> list[dict]:
        return self.db.query(sql, params)

    def _upsert(self, table: str, row: dict, key: str) -> None:
        """Insert `row`, or replace the row with the same `key`."""
        cols = ", ".join(row)
        sets = ", ".join(f"{c} = excluded.{c}" for c in row if c != key)
        self.db.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(row))}) "
                        f"ON CONFLICT ({key}) DO UPDATE SET {sets}", list(row.values()))

    def _insert(self, table: str, row: dict) -> int:
        return self.db.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                               list(row.values()))

    def _next(self, name: str, first: int) -> int:
        """The next number of `name`: `first` the first time, then one more each call, never the same
        twice however many processes ask at once (one atomic upsert)."""
        return self.db.query("INSERT INTO sequences (name, n) VALUES (?, ?) ON CONFLICT (name) "
                             "DO UPDATE SET n = sequences.n + 1 RETURNING n", [name, first])[0]["n"]

    # -- samples -----------------------------------------------------------------------------
    def ingest(self, cands: Iterable[Candidate], site: str, relay_id: str, status: str = "new"
               ) -> tuple[list[str], list[str]]:
        """Store candidates not held yet; -> (stored ids, ids already held). Idempotent by sample_id.

        Feedback on a sample already held (the application's word on a frame that went up before,
        under the frame's id) is not a duplicate to drop: its reasons join the sample's, and a frame
        flagged wrong heads the label queue unless it is labeled already."""
        cands = list(cands)
        self.blobs.put_many([c.image for c in cands])  # blobs first: a row never points at a missing image
        now = time.time()
        rows = [sample_row(c, site, relay_id, status, now) for c in cands]
        # Ids in sorted order: two hubs inserting overlapping batches take the row locks in the same
        # order, so they wait for each other instead of deadlocking. ON CONFLICT DO NOTHING waits for
        # a concurrent insert of the same id to commit, then changes nothing: one of them stores it.
        inserted = [False] * len(rows)
        with self.db.transaction():
            for i in sorted(range(len(rows)), key=lambda i: rows[i]["sample_id"]):
                row = rows[i]
                inserted[i] = bool(self.db.execute(
                    f"INSERT INTO samples ({', '.join(row)}) VALUES ({', '.join('?' * len(row))}) "
                    "ON CONFLICT (sample_id) DO NOTHING", list(row.values())))
            for c, new in zip(cands, inserted):
                if not new and is_feedback(c.reasons):
                    self._take_feedback(c)
        stored = [c.sample_id for c, new in zip(cands, inserted) if new]
        self._index_stored(stored, [c.embedding for c, new in zip(cands, inserted) if new])
        return stored, [c.sample_id for c, new in zip(cands, inserted) if not new]

    def _take_feedback(self, c: Candidate) -> None:
        """Feedback on a sample held already (inside ingest's transaction)."""
        rows = self.db.query("SELECT reasons, tags, status FROM samples WHERE sample_id = ?", [c.sample_id])
        if not rows:
            return
        row = rows[0]
        reasons = list(dict.fromkeys([*json.loads(row["reasons"] or "[]"), *c.reasons]))
        tags = {**json.loads(row["tags"] or "{}"), **c.tags}
        self.db.execute("UPDATE samples SET reasons = ?, tags = ? WHERE sample_id = ?",
                        [json.dumps(reasons), json.dumps(tags), c.sample_id])
        if FEEDBACK_WRONG in c.reasons and row["status"] in ("new", "queued"):
            self.db.execute("UPDATE samples SET status = 'queued', priority = ?, selected_at = NULL "
                            "WHERE sample_id = ?", [FEEDBACK_PRIORITY, c.sample_id])

    def sample(self, sample_id: str) -> dict | None:
        """One sample (arrays and JSON decoded), with its image's width and height and its `label`:
        None, {"class": i, "source"} or {"boxes": [{"class", "xyxy"}], "source"}."""
        rows = self._query(f"{WITH_LABEL} WHERE s.sample_id = ?", [sample_id])
        return self._sized(decode_row(rows[0])) if rows else None

    def sample_sizes(self, sample_ids: Iterable[str]) -> dict[str, tuple[int, int] | None]:
        """-> {sample_id: (width, height) of its stored image, or None when unreadable}; ids the hub
        does not hold are left out."""
        ids, out = sorted(set(sample_ids)), {}
        for i in range(0, len(ids), 500):  # bounded IN lists
            chunk = ids[i:i + 500]
            for r in self._query(f"SELECT sample_id, width, height, image_sha256 FROM samples "
                                 f"WHERE sample_id IN ({', '.join('?' * len(chunk))})", chunk):
                r = self._sized(r)
                out[r["sample_id"]] = (r["width"], r["height"]) if r["width"] else None
        return out

    def _sized(self, row: dict) -> dict:
        """Rows stored before samples had a size: read it from the image's header (not stored back:
        a read path stays a read)."""
        if row.get("width") is None and row.get("image_sha256") and self.blobs.exists(row["image_sha256"]):
            row["width"], row["height"] = image_size(self.blobs.get(row["image_sha256"]))
        return row

    def samples_with_status(self, status: str) -> list[dict]:
        return [decode_row(r) for r in self._query("SELECT * FROM samples WHERE status = ?", [status])]

    def mark_queued(self, priorities: dict[str, float]) -> None:
        now = time.time()
        with self.db.transaction():
            self.db.executemany(
                "UPDATE samples SET status = 'queued', selected_at = ?, priority = ? WHERE sample_id = ? AND status = 'new'",
                [(now, p, sid) for sid, p in sorted(priorities.items())])  # sorted: see ingest

    def label_queue(self, limit: int = 100) -> list[dict]:
        """The queued samples, best first, as `sample` gives them."""
        return [self._sized(decode_row(r)) for r in self._query(
            f"{WITH_LABEL} WHERE s.status = 'queued' ORDER BY s.priority DESC NULLS LAST, s.sample_id LIMIT ?",
            [limit])]

    def add_labels(self, labels: dict[str, int], source: str) -> list[str]:
        """Class labels (an index per sample) -> ids labeled; ids the hub does not hold are skipped
        (the caller reports them). Replaces any label a sample had, boxes included."""
        return self._put_labels({sid: (int(label), None) for sid, label in labels.items()}, source)

    def add_box_labels(self, boxes: dict[str, list[dict]], source: str) -> list[str]:
        """Box labels: per sample [{"class": index, "xyxy": [x1, y1, x2, y2]}, ...] in pixels of its
        stored image, [] for "no objects" -> ids labeled; ids the hub does not hold are skipped.
        Stored as given: the caller has checked them (hub/project.py). Replaces any label a sample had."""
        return self._put_labels({sid: (None, json.dumps([{"class": int(b["class"]),
                                                          "xyxy": [float(v) for v in b["xyxy"]]} for b in bxs]))
                                 for sid, bxs in boxes.items()}, source)

    def _put_labels(self, labels: dict[str, tuple[int | None, str | None]], source: str) -> list[str]:
        now, done = time.time(), set()
        with self.db.transaction():
            for sid, (label, boxes) in sorted(labels.items()):  # sorted: see ingest
                if self.db.execute("UPDATE samples SET status = 'labeled' WHERE sample_id = ?", [sid]):
                    self.db.execute("DELETE FROM ambiguous WHERE sample_id = ?", [sid])
                    self._upsert("labels", {"sample_id": sid, "label": label, "source": source, "labeled_at": now,
                                            "boxes": boxes}, key="sample_id")
                    done.add(sid)
        return [sid for sid in labels if sid in done]

    def mark_ambiguous(self, sample_ids: Iterable[str], source: str) -> list[str]:
        """A labeler could not decide: the samples leave the queue, are kept and counted, and never
        enter training. -> ids marked (ids the hub does not hold are skipped)."""
        sample_ids, now, done = list(sample_ids), time.time(), set()
        with self.db.transaction():
            for sid in sorted(set(sample_ids)):  # sorted: see ingest
                if self.db.execute("UPDATE samples SET status = 'ambiguous' WHERE sample_id = ?", [sid]):
                    self.db.execute("DELETE FROM labels WHERE sample_id = ?", [sid])
                    self._upsert("ambiguous", {"sample_id": sid, "source": source, "marked_at": now}, key="sample_id")
                    done.add(sid)
        return [sid for sid in sample_ids if sid in done]

    def unlabel(self, sample_id: str) -> str | None:
        """Undo a label or an ambiguous mark: the sample goes back to the label queue where it was.
        -> the status it had, or None when it was neither labeled nor ambiguous (or is unknown)."""
        with self.db.transaction():
            # FOR UPDATE would be the PostgreSQL idiom; the UPDATE below re-checks the status instead,
            # which both engines understand: of two hubs undoing at once, one changes the row.
            rows = self._query("SELECT status FROM samples WHERE sample_id = ?", [sample_id])
            if not rows or rows[0]["status"] not in ("labeled", "ambiguous"):
                return None
            if not self.db.execute("UPDATE samples SET status = 'queued', priority = COALESCE(priority, 0) "
                                   "WHERE sample_id = ? AND status = ?", [sample_id, rows[0]["status"]]):
                return None
            self.db.execute("DELETE FROM labels WHERE sample_id = ?", [sample_id])
            self.db.execute("DELETE FROM ambiguous WHERE sample_id = ?", [sample_id])
        return rows[0]["status"]

    def labels(self, source: str | None = None) -> list[dict]:
        """Every label (sample_id, label, boxes, source, labeled_at), oldest first; one source's when
        given. label: the class index, None for a box label; boxes: the list, None for a class label."""
        where, params = ("WHERE source = ?", [source]) if source is not None else ("", [])
        return [decode_boxes(r) for r in self._query(
            f"SELECT sample_id, label, boxes, source, labeled_at FROM labels {where} ORDER BY labeled_at, sample_id",
            params)]

    def ambiguous(self) -> list[dict]:
        """Samples marked ambiguous (sample_id, source, marked_at), oldest first."""
        return self._query("SELECT * FROM ambiguous ORDER BY marked_at, sample_id")

    def funnel(self) -> dict[str, int]:
        """Hub-side counts of the funnel, over the samples its relays forwarded (seed sets excluded):
        forwarded; selected = sent to the label queue by any route (the hub's selection, the audit
        stream, application feedback); labeled; and beside them ambiguous, audit, still queued."""
        q = self._query(
            "SELECT COUNT(*) AS forwarded, COUNT(*) FILTER (WHERE status != 'new') AS selected, "
            "COUNT(*) FILTER (WHERE status = 'labeled') AS labeled, "
            "COUNT(*) FILTER (WHERE status = 'ambiguous') AS ambiguous, "
            "COUNT(*) FILTER (WHERE audit = 1) AS audit, COUNT(*) FILTER (WHERE status = 'queued') AS queued "
            "FROM samples WHERE NOT (device_id = relay_id AND site = relay_id)")[0]  # seed sets: see import_labeled_set
        return {k: int(v or 0) for k, v in q.items()}

    def audit_rows(self, limit: int = 20_000) -> list[dict]:
        """The newest `limit` audit samples, oldest first, with their label when they have one: what
        hub/live.py estimates production accuracy and drift from (tags decoded, embedding raw bytes)."""
        rows = self._query(
            "SELECT * FROM (SELECT s.sample_id, s.site, s.device_id, s.camera_id, s.model_version, s.captured_at, "
            "s.predicted, s.confidence, s.embedding, s.tags, s.audit, l.label FROM samples s "
            "LEFT JOIN labels l USING (sample_id) WHERE s.audit = 1 ORDER BY s.captured_at DESC LIMIT ?) "
            "AS newest ORDER BY captured_at", [limit])
        return [{**r, "tags": json.loads(r["tags"])} for r in rows]

    def labeled_embeddings(self, model_version: str | None = None) -> np.ndarray | None:
        """(M, D) float32 embeddings of the labeled samples that have one (made by model_version, when
        given: each model's embeddings are its own space), or None."""
        where, params = ("AND s.model_version = ?", [model_version]) if model_version is not None else ("", [])
        rows = self._query("SELECT s.embedding FROM labels l JOIN samples s USING (sample_id) "
                           f"WHERE s.embedding IS NOT NULL {where}", params)
        embs = [np.frombuffer(r["embedding"], "<f2") for r in rows]
        if not embs:
            return None
        dim = max({e.shape[0] for e in embs}, key=[e.shape[0] for e in embs].count)
        return np.stack([e for e in embs if e.shape[0] == dim]).astype(np.float32)

    def labeled_ids(self, model_version: str | None = None) -> set[str]:
        """Ids of the labeled samples that have an embedding (made by model_version, when given)."""
        where, params = ("AND s.model_version = ?", [model_version]) if model_version is not None else ("", [])
        return {r["sample_id"] for r in self._query("SELECT l.sample_id FROM labels l JOIN samples s USING (sample_id) "
                                                    f"WHERE s.embedding IS NOT NULL {where}", params)}

    def labeled(self) -> list[dict]:
        """Every labeled sample, by id: sample_id, label (class index or None), boxes (list or None),
        source, image_sha256, tags, width, height (None when the image's header is unreadable)."""
        return [self._sized(decode_boxes({**r, "tags": json.loads(r["tags"])})) for r in self._query(
            "SELECT s.sample_id, l.label, l.boxes, l.source, s.image_sha256, s.tags, s.width, s.height "
            "FROM labels l JOIN samples s USING (sample_id) ORDER BY s.sample_id")]

    def counts(self) -> dict[str, int]:
        by_status = {r["status"]: r["n"] for r in self._query(
            "SELECT status, COUNT(*) AS n FROM samples GROUP BY status ORDER BY status")}
        audit = self._query("SELECT COUNT(*) AS n, COUNT(*) FILTER (WHERE status = 'labeled') AS labeled "
                            "FROM samples WHERE audit = 1")[0]
        return {"samples": sum(by_status.values()), **{f"status_{k}": v for k, v in by_status.items()},
                "audit": audit["n"], "audit_labeled": audit["labeled"] or 0,
                "labels": self._query("SELECT COUNT(*) AS n FROM labels")[0]["n"], **self.counters()}

    # -- models ------------------------------------------------------------------------------
    def add_model(self, version: str, parent: str | None, artifact: bytes, state: bytes, metrics: dict,
                  labels_total: int) -> None:
        art = self.blobs.put(artifact)
        st = self.blobs.put(state)
        self._upsert("models", {"version": version, "parent": parent, "created_at": time.time(),
                                "artifact_sha256": art, "artifact_size": len(artifact), "state_sha256": st,
                                "metrics": json.dumps(metrics), "labels_total": labels_total}, key="version")

    def model(self, version: str) -> dict | None:
        rows = self._query("SELECT * FROM models WHERE version = ?", [version])
        return {**rows[0], "metrics": json.loads(rows[0]["metrics"])} if rows else None

    def models(self) -> list[dict]:
        return [{**r, "metrics": json.loads(r["metrics"])}
                for r in self._query("SELECT * FROM models ORDER BY created_at, version")]

    def latest_model(self) -> dict | None:
        rows = self.models()
        return rows[-1] if rows else None

    def set_desired(self, version: str, group: str = "fleet") -> None:
        self._upsert("desired", {"grp": group, "version": version, "set_at": time.time()}, key="grp")

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

    def desired_seq(self, site: str, digest: str) -> int:
        """The sequence number of `site`'s desired state whose content hashes to `digest`: the same
        while it stays the same, else higher than any handed out before (hub-wide), and at least the
        clock's seconds, so that a hub on a fresh database still outranks what its devices saw."""
        name = f"desired_seq:{site}"

        def current() -> int | None:
            rows = self._query("SELECT value FROM settings WHERE name = ?", [name])
            last = json.loads(rows[0]["value"]) if rows else None
            return int(last["seq"]) if last and last["digest"] == digest else None

        if (seq := current()) is not None:  # every poll of an unchanged site: a read, no lock
            return seq
        with self.locked("desired_seq"):
            if (seq := current()) is not None:
                return seq
            rows = self._query("SELECT value FROM settings WHERE name = ?", ["desired_seq"])
            seq = max(json.loads(rows[0]["value"]) + 1 if rows else 1, int(time.time()))
            with self.db.transaction():
                self._upsert("settings", {"name": "desired_seq", "value": json.dumps(seq)}, key="name")
                self._upsert("settings", {"name": name, "value": json.dumps({"digest": digest, "seq": seq})},
                             key="name")
            return seq

    # -- device reports ----------------------------------------------------------------------
    def record_devices(self, site: str, relay_id: str, devices: Iterable[dict], now: float) -> int:
        """Keep the latest report of each device (dicts: device_id, status, model_version, stats, facts, last_error).
        A report without stats keeps the device's last ones: an agent's last will (offline, sent by the
        broker when it dies) carries none, and its counts since it started stay true."""
        rows = [(d["device_id"], site, relay_id, d["status"], d["model_version"], json.dumps(d["stats"]),
                 json.dumps(d["facts"]), d["last_error"], now) for d in devices]
        with self.db.transaction():
            self.db.executemany(
                "INSERT INTO devices (device_id, site, relay_id, status, model_version, stats, facts, last_error, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
                "site = excluded.site, relay_id = excluded.relay_id, status = excluded.status, "
                "model_version = excluded.model_version, "
                "stats = CASE WHEN excluded.stats = '{}' THEN devices.stats ELSE excluded.stats END, facts = excluded.facts, "
                "last_error = excluded.last_error, updated_at = excluded.updated_at", sorted(rows, key=lambda r: r[0]))
        return len(rows)

    def devices(self, site: str | None = None) -> list[dict]:
        """Reported devices (all, or one site's), by device id; stats and facts decoded."""
        rows = (self._query("SELECT * FROM devices WHERE site = ? ORDER BY device_id", [site]) if site is not None
                else self._query("SELECT * FROM devices ORDER BY device_id"))
        return [{**r, "stats": json.loads(r["stats"]), "facts": json.loads(r["facts"])} for r in rows]

    def device_sites(self, device_ids: Iterable[str], since: float) -> dict[str, str]:
        """device_id -> site, of those of `device_ids` reported at or after `since`."""
        ids, out = list(dict.fromkeys(device_ids)), {}
        for i in range(0, len(ids), 500):  # under every engine's limit of bound parameters
            part = ids[i:i + 500]
            out.update({r["device_id"]: r["site"] for r in self._query(
                f"SELECT device_id, site FROM devices WHERE device_id IN ({', '.join('?' * len(part))}) "
                "AND updated_at >= ?", [*part, since])})
        return out

    def device_ids(self, site: str | None = None) -> list[str]:
        """Ids of the reported devices (all, or one site's), sorted."""
        rows = (self._query("SELECT device_id FROM devices WHERE site = ? ORDER BY device_id", [site])
                if site is not None else self._query("SELECT device_id FROM devices ORDER BY device_id"))
        return [r["device_id"] for r in rows]

    # -- campaigns ---------------------------------------------------------------------------
    def add_campaign(self, exemplar_ids: list[str], threshold: float, quota: int, ttl_s: float,
                     max_active: int | None = None) -> dict:
        """A campaign from the embeddings of samples the hub holds; ValueError names what is missing,
        OverflowError says `max_active` campaigns are running already."""
        embs = []
        for sid in exemplar_ids:
            row = self.sample(sid)
            if row is None or row["embedding"] is None:
                raise ValueError(f"sample {sid!r} is not at the hub or has no embedding")
            embs.append(row["embedding"].astype(float).round(4).tolist())
        if len({len(e) for e in embs}) != 1:
            raise ValueError("exemplars have embeddings of different sizes")
        with self.locked("campaigns"):  # count and insert as one step, across hub processes
            if max_active is not None and len(self.active_campaigns()) >= max_active:
                raise OverflowError(f"{max_active} campaigns are active already")
            n = self._next("campaigns", first=self._query("SELECT COUNT(*) + 1 AS n FROM campaigns")[0]["n"])
            camp = {"campaign_id": f"cmp-{n}", "exemplars": json.dumps(embs), "threshold": threshold,
                    "quota": quota, "expires_at": time.time() + ttl_s, "created_at": time.time()}
            self._insert("campaigns", camp)
        return {**camp, "exemplars": embs}

    def end_campaign(self, campaign_id: str) -> bool:
        """Expire an active campaign now -> whether there was one (relays drop it at their next poll)."""
        now = time.time()
        return bool(self.db.execute("UPDATE campaigns SET expires_at = ? WHERE campaign_id = ? AND expires_at > ?",
                                    [now, campaign_id, now]))

    def active_campaigns(self) -> list[dict]:
        rows = self._query("SELECT * FROM campaigns WHERE expires_at > ? ORDER BY created_at, campaign_id",
                           [time.time()])
        return [{**r, "exemplars": json.loads(r["exemplars"])} for r in rows]

    def label_source(self, sample_id: str) -> str | None:
        return self.label_sources([sample_id]).get(sample_id)

    def label_sources(self, sample_ids: Iterable[str]) -> dict[str, str]:
        """sample_id -> who labeled it or marked it ambiguous, for those of `sample_ids` that are."""
        out: dict[str, str] = {}
        ids = list(dict.fromkeys(sample_ids))
        for i in range(0, len(ids), 500):  # under every engine's limit of bound parameters
            part = ids[i:i + 500]
            marks = ", ".join("?" * len(part))
            for r in self._query(f"SELECT sample_id, source FROM labels WHERE sample_id IN ({marks}) UNION ALL "
                                 f"SELECT sample_id, source FROM ambiguous WHERE sample_id IN ({marks})", part + part):
                out.setdefault(r["sample_id"], r["source"])
        return out

    # -- counters ----------------------------------------------------------------------------
    def bump(self, name: str, n: int) -> None:
        self.db.execute("INSERT INTO counters (name, n) VALUES (?, ?) "
                        "ON CONFLICT (name) DO UPDATE SET n = counters.n + excluded.n", [name, n])

    def counters(self) -> dict[str, int]:
        return {r["name"]: r["n"] for r in self._query("SELECT name, n FROM counters")}


def _desired_key(group: str) -> str:
    return "fleet" if group == "all" else f"site:{group}"
