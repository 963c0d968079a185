"""The hub database's tables and how a row becomes a dict (store.py holds the verbs)."""

from __future__ import annotations

import json

import numpy as np

from edgeloop.shared.images import image_size
from edgeloop.shared.sampling.policy import AUDIT, FEEDBACK_WRONG

AUDIT_PRIORITY = -1.0  # in the label queue, after everything selected
FEEDBACK_PRIORITY = 1e6  # a prediction the application flagged wrong: first in the label queue

ADDED_COLUMNS = (("samples", "detections", "bytes"), ("samples", "width", "int"), ("samples", "height", "int"),
                  ("labels", "boxes", "text"), ("tokens", "relay_id", "text"), ("tokens", "sites", "text"))

# The tables, in each engine's column types ({text}, {int}, ...). CREATE ... IF NOT EXISTS: a hub
# opens an existing database as it is (older SQLite files were made by sqlite-utils, same layout).
SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    sample_id {text} PRIMARY KEY NOT NULL, device_id {text}, camera_id {text}, site {text}, relay_id {text},
    captured_at {float}, received_at {float}, model_version {text}, predicted {int}, confidence {float},
    value {float}, reasons {text}, tags {text}, scores {text}, probs {bytes}, embedding {bytes},
    image_sha256 {text}, image_bytes {int},
    status {text} DEFAULT 'new',  -- new | queued | labeled | ambiguous
    selected_at {float}, priority {float}, audit {int} DEFAULT 0, detections {bytes},
    width {int}, height {int});  -- the stored image's pixels, from its header at ingest (NULL: unreadable)
CREATE INDEX IF NOT EXISTS idx_samples_status_priority ON samples (status, priority);
-- The ANN index catches up on rows other hub processes stored by received_at (store.similar_index).
CREATE INDEX IF NOT EXISTS idx_samples_received ON samples (received_at);
-- Samples a labeler could not decide: kept and counted, never trained on.
CREATE TABLE IF NOT EXISTS ambiguous (sample_id {text} PRIMARY KEY, source {text}, marked_at {float});
-- People's and relays' tokens: only their SHA-256 is kept (see hub/auth.py). A relay's token is bound
-- to its relay id and sites (a JSON list), NULL for people's and admins' (no semicolons here: see _schema).
CREATE TABLE IF NOT EXISTS tokens (token_hash {text} PRIMARY KEY, name {text}, role {text},
    created_at {float}, revoked_at {float}, relay_id {text}, sites {text});
CREATE INDEX IF NOT EXISTS idx_tokens_name ON tokens (name);
-- People signed in at /login: their cookie holds a session id, whose SHA-256 maps to their token's.
CREATE TABLE IF NOT EXISTS sessions (session_hash {text} PRIMARY KEY, token_hash {text}, created_at {float},
    expires_at {float});
-- Every write through the API, allowed or refused, and who made it.
CREATE TABLE IF NOT EXISTS audit_log (seq {serial}, at {float}, who {text}, role {text}, method {text},
    path {text}, status {int}, detail {text});
-- A label is a class index (label) or a frame's boxes (boxes: a JSON list of class and xyxy, [] = no objects).
CREATE TABLE IF NOT EXISTS labels (sample_id {text} PRIMARY KEY, label {int}, source {text}, labeled_at {float},
    boxes {text});
CREATE TABLE IF NOT EXISTS models (version {text} PRIMARY KEY, parent {text}, created_at {float},
    artifact_sha256 {text}, artifact_size {int}, state_sha256 {text}, metrics {text}, labels_total {int});
CREATE TABLE IF NOT EXISTS desired (grp {text} PRIMARY KEY, version {text}, set_at {float});
CREATE TABLE IF NOT EXISTS campaigns (campaign_id {text} PRIMARY KEY, exemplars {text}, threshold {float},
    quota {int}, expires_at {float}, created_at {float});
CREATE TABLE IF NOT EXISTS counters (name {text} PRIMARY KEY, n {int});
-- The last number handed out per name (see _next), apart from counters, which /api/v1/stats shows.
CREATE TABLE IF NOT EXISTS sequences (name {text} PRIMARY KEY, n {int});
-- The latest report of each device, as its relay forwarded it (stats and facts: JSON maps).
CREATE TABLE IF NOT EXISTS devices (device_id {text} PRIMARY KEY, site {text}, relay_id {text}, status {text},
    model_version {text}, stats {text}, facts {text}, last_error {text}, updated_at {float});
CREATE INDEX IF NOT EXISTS idx_devices_site ON devices (site);
-- stages, gates, gate (the last gate result) and history are JSON, seq orders and names them.
CREATE TABLE IF NOT EXISTS rollouts (rollout_id {text} PRIMARY KEY, seq {int}, candidate {text},
    baseline {text}, grp {text}, stages {text}, gates {text}, shadow_fraction {float}, max_latency_ms {float},
    state {text}, stage_index {int}, stage_started_at {float}, paused_at {float}, reason {text}, gate {text},
    history {text}, created_at {float}, updated_at {float});
CREATE INDEX IF NOT EXISTS idx_rollouts_state ON rollouts (state);
-- What the hub labels and trains: one row (name 'default'), classes a JSON list (hub/project.py).
CREATE TABLE IF NOT EXISTS project (name {text} PRIMARY KEY, task {text}, classes {text}, trainer {text},
    created_at {float});
-- Training jobs (hub/training/jobs.py): settings, progress and result are JSON, log is the tail of the
-- trainer's output, owner is host:pid of the hub process running it, heartbeat_at its last sign of life.
CREATE TABLE IF NOT EXISTS jobs (job_id {text} PRIMARY KEY, kind {text}, state {text}, trainer {text},
    settings {text}, created_by {text}, created_at {float}, started_at {float}, finished_at {float},
    owner {text}, heartbeat_at {float}, progress {text}, log {text}, result {text}, error {text},
    cancel_requested {int} DEFAULT 0);
CREATE INDEX IF NOT EXISTS idx_jobs_state ON jobs (state, created_at);
-- Small named values (JSON): the policy's state (hub/training/policy.py).
CREATE TABLE IF NOT EXISTS settings (name {text} PRIMARY KEY, value {text});
"""


# A sample with its label, if any (label_*: see decode_row).
WITH_LABEL = ("SELECT s.*, l.label AS label_class, l.boxes AS label_boxes, l.source AS label_source "
               "FROM samples s LEFT JOIN labels l ON l.sample_id = s.sample_id")


def decode_boxes(r: dict) -> dict:
    return {**r, "boxes": None if r.get("boxes") is None else json.loads(r["boxes"])}


def decode_row(r: dict) -> dict:
    r = dict(r)
    if "label_source" in r:
        cls, boxes, source = r.pop("label_class"), r.pop("label_boxes"), r.pop("label_source")
        r["label"] = ({"boxes": json.loads(boxes), "source": source} if boxes is not None
                      else {"class": cls, "source": source} if cls is not None else None)
    r["reasons"] = json.loads(r["reasons"])
    r["tags"] = json.loads(r["tags"])
    r["scores"] = json.loads(r["scores"])
    r["probs"] = np.frombuffer(r["probs"], "<f4")
    r["embedding"] = None if r["embedding"] is None else np.frombuffer(r["embedding"], "<f2")
    det = r.get("detections")
    r["detections"] = None if det is None else np.frombuffer(det, "<f4").reshape(-1, 6)
    return r


def sample_row(c, site: str, relay_id: str, status: str, now: float) -> dict:
    """A Candidate as it arrives -> its `samples` row (arrays as little-endian bytes, JSON as text)."""
    audit, wrong = AUDIT in c.reasons, FEEDBACK_WRONG in c.reasons
    width, height = image_size(c.image)
    return {
        "sample_id": c.sample_id, "device_id": c.device_id, "camera_id": c.camera_id, "site": site,
        "relay_id": relay_id, "captured_at": c.captured_at, "received_at": now,
        "model_version": c.model_version, "predicted": c.predicted, "confidence": c.confidence,
        "value": c.value, "reasons": json.dumps(list(c.reasons)), "tags": json.dumps(c.tags),
        "scores": json.dumps(c.scores), "probs": np.asarray(c.probs, "<f4").tobytes(),
        "embedding": None if c.embedding is None else np.asarray(c.embedding, "<f2").tobytes(),
        "image_sha256": c.image_sha256, "image_bytes": len(c.image),
        # Audit samples queue for labeling on arrival, after the selected ones, and never enter the
        # selection pool: they are the unbiased slice. A frame the application flagged wrong queues first.
        "status": "queued" if status == "new" and (audit or wrong) else status,
        "selected_at": None,
        "priority": AUDIT_PRIORITY if audit else FEEDBACK_PRIORITY if wrong else None,
        "audit": int(audit),
        "detections": None if c.detections is None else np.asarray(c.detections, "<f4").tobytes(),
        "width": width, "height": height,
    }
