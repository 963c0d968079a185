"""The hub's rows about who may come in: tokens, sign-in sessions and the audit log. A part of
HubStore (its `db`, `_query` and `_insert`), kept apart so that store.py holds the data's verbs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable


class AccessRows:
    """Mixed into HubStore."""

    def add_token(self, token_hash: str, name: str, role: str, relay_id: str | None = None,
                  sites: Iterable[str] = ()) -> None:
        """A token's hash and who holds it; a relay's is bound to `relay_id` and `sites`."""
        sites = list(sites)
        self._insert("tokens", {"token_hash": token_hash, "name": name, "role": role, "created_at": time.time(),
                                "revoked_at": None, "relay_id": relay_id, "sites": json.dumps(sites) if sites else None})

    def token(self, token_hash: str) -> dict | None:
        """The live (not revoked) token with this hash (sites: a list), or None."""
        rows = self._query("SELECT * FROM tokens WHERE token_hash = ? AND revoked_at IS NULL", [token_hash])
        return {**rows[0], "sites": json.loads(rows[0]["sites"] or "[]")} if rows else None

    def tokens_exist(self) -> bool:
        return bool(self._query("SELECT 1 FROM tokens WHERE revoked_at IS NULL LIMIT 1"))

    def first_token(self, token_hash: str, name: str, role: str) -> bool:
        """Add this token only if no token was ever made (a hub's first start) -> whether it was added.
        Under a lock: two hubs starting at once on one database make one, not two."""
        with self.db.locked("first-token"):
            if self._query("SELECT 1 FROM tokens LIMIT 1"):
                return False
            self.add_token(token_hash, name, role)
            return True

    def tokens(self) -> list[dict]:
        """Every token ever made (name, role, created_at, revoked_at; a short hash prefix as its id)."""
        return [{**r, "token_hash": r["token_hash"][:12]} for r in
                self._query("SELECT * FROM tokens ORDER BY created_at, token_hash")]

    def revoke_tokens(self, name: str) -> int:
        """Revoke every live token of exactly `name` (or the one whose hash starts with it, 8 characters
        or more) -> how many. Compared here, not with LIKE: `_` and `%` in a name are only characters."""
        prefix = name.lower() if len(name) >= 8 else None  # hashes are lower-case hex
        hashes = [r["token_hash"] for r in self._query("SELECT token_hash, name FROM tokens WHERE revoked_at IS NULL")
                  if r["name"] == name or (prefix and r["token_hash"].startswith(prefix))]
        now = time.time()
        for h in hashes:
            self.db.execute("UPDATE tokens SET revoked_at = ? WHERE token_hash = ?", [now, h])
        return len(hashes)

    def audit(self, who: str, role: str, method: str, path: str, status: int, detail: str = "") -> None:
        self._insert("audit_log", {"at": time.time(), "who": who, "role": role, "method": method, "path": path,
                                   "status": status, "detail": detail})

    def audit_log(self, limit: int = 100, who: str | None = None) -> list[dict]:
        """The newest writes first."""
        where, params = ("WHERE who = ?", [who]) if who is not None else ("", [])
        return self._query(f"SELECT * FROM audit_log {where} ORDER BY seq DESC LIMIT ?", params + [limit])

    # -- sign-in sessions: the cookie holds a session id, never the token ----------------------------
    def add_session(self, session_hash: str, token_hash: str, ttl_s: float) -> None:
        now = time.time()
        self.db.execute("DELETE FROM sessions WHERE expires_at < ?", [now])  # sign-ins keep the table small
        self._insert("sessions", {"session_hash": session_hash, "token_hash": token_hash, "created_at": now,
                                  "expires_at": now + ttl_s})

    def session_token(self, session_hash: str) -> str | None:
        """The token hash a live (unexpired) session stands for, or None."""
        rows = self._query("SELECT token_hash FROM sessions WHERE session_hash = ? AND expires_at > ?",
                           [session_hash, time.time()])
        return rows[0]["token_hash"] if rows else None

    def end_session(self, session_hash: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE session_hash = ?", [session_hash])

