"""The hub's rollout rows: a rollout's stages, gates and history stored and read back. A part of
HubStore (its `db`, `_query`, `_insert` and `_next`), kept apart so that store.py holds the data's
verbs; what a rollout does is hub/rollouts.py's."""

from __future__ import annotations

import json
from collections.abc import Iterable


class RolloutRows:
    """Mixed into HubStore."""

    _ROLLOUT_JSON = ("stages", "gates", "gate", "history")

    def add_rollout(self, row: dict) -> dict:
        """Store a new rollout (without rollout_id) -> the stored row, named r1, r2, ... in order."""
        seq = self._next("rollouts", first=self._query("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM rollouts")[0]["n"])
        full = {**row, "rollout_id": f"r{seq}", "seq": seq}
        self._insert("rollouts", self._encode_rollout(full))
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
        row = self._encode_rollout(changes)
        self.db.execute(f"UPDATE rollouts SET {', '.join(f'{k} = ?' for k in row)} WHERE rollout_id = ?",
                        [*row.values(), rollout_id])
        return self.rollout(rollout_id)

    def _encode_rollout(self, row: dict) -> dict:
        return {("grp" if k == "group" else k): json.dumps(v) if k in self._ROLLOUT_JSON else v for k, v in row.items()}

    def _decode_rollout(self, row: dict) -> dict:
        out = {("group" if k == "grp" else k): v for k, v in row.items()}
        for k in self._ROLLOUT_JSON:
            out[k] = json.loads(out[k]) if out.get(k) is not None else None
        return out
