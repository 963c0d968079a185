"""Which desired messages an agent acts on: only those carrying the hub's signed statement, for this
device, matching the message, not older than one accepted before, not expired (shared/statement.py).

    guard = UpdateGuard(data_dir, public_key, site, device)
    desired = guard.admit(desired)   # IntegrityError / StaleStatement: refused, nothing changes
    guard.recheck(desired)           # before each retry of applying it: expired since?
    guard.facts(), guard.stats()     # for the state report: what was refused, whether updates are frozen

The highest rank accepted is kept in `desired.json` beside the outbox (written before the desired
state is acted on, atomically), so a restart does not reopen the door to a replayed, older statement.
When the statement the agent runs under expires and no fresh one came, it keeps its model (it is
still the newest it was allowed) but reports `desired_expired`: a relay holding updates back shows.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edgeloop.shared.errors import IntegrityError
from edgeloop.shared.protocol import MAX_STR, DesiredModel
from edgeloop.shared.statement import check, open_signed

log = logging.getLogger("edgeloop.agent")


class UpdateGuard:
    def __init__(self, data_dir: Path, public_key, site: str, device: str, clock: Callable[[], float] = time.time):
        self.path = Path(data_dir) / "desired.json"
        self.public_key, self.site, self.device, self.clock = public_key, site, device, clock
        self.lock = threading.Lock()
        saved = self._read()
        self.rank: tuple[int, int] | None = tuple(saved["rank"]) if saved else None
        self.expires_at: float | None = saved.get("expires_at") if saved else None
        self.refused = ""  # why the last desired message was refused, until one is accepted
        self.refusals = 0

    def admit(self, desired: DesiredModel) -> DesiredModel:
        """-> `desired` when its signed statement allows it; raises (IntegrityError, StaleStatement) otherwise."""
        with self.lock:
            try:
                st = open_signed(self.public_key, desired.statement, desired.signature)
                check(st, desired, self.site, self.device, self.clock(), self.rank)
            except IntegrityError as exc:
                self.refused, self.refusals = str(exc)[:MAX_STR], self.refusals + 1
                raise
            self.rank, self.expires_at, self.refused = st.rank, st.expires_at, ""
            self._write({"rank": list(st.rank), "expires_at": st.expires_at, "version": st.version})
        return desired

    def recheck(self, desired: DesiredModel) -> None:
        """Before each (re)try to apply an admitted desired state: StaleStatement once it has expired
        (a relay that keeps failing the download until then gains nothing) or a newer one came."""
        with self.lock:
            try:
                check(open_signed(self.public_key, desired.statement, desired.signature), desired, self.site,
                      self.device, self.clock(), self.rank)
            except IntegrityError as exc:
                self.refused, self.refusals = str(exc)[:MAX_STR], self.refusals + 1
                raise

    def facts(self) -> dict[str, str]:
        out = {}
        with self.lock:
            if self.refused:
                out["desired_refused"] = self.refused
            if self.expires_at is not None and self.clock() > self.expires_at:
                out["desired_expired"] = (f"the desired statement seq {self.rank[0]} expired at "
                                          f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.expires_at))} "
                                          "and no fresh one came: updates may be held back")
        return out

    def stats(self) -> dict[str, float]:
        with self.lock:
            if self.rank is None:
                return {"desired_refusals": self.refusals}
            # Floored, not rounded: just past the expiry reads -0.1, never -0.0, so the sign agrees
            # with `desired_expired` in the same state.
            left = math.floor((self.expires_at - self.clock()) * 10) / 10
            return {"desired_seq": self.rank[0], "desired_expires_in_s": left, "desired_refusals": self.refusals}

    def _read(self) -> dict | None:
        try:
            saved = json.loads(self.path.read_text())
            return saved if isinstance(saved.get("rank"), list) and len(saved["rank"]) == 2 else None
        except FileNotFoundError:
            return None
        except (ValueError, AttributeError, OSError) as exc:
            # Unreadable: refusing every statement would strand the device; accepting the next valid one
            # reopens replays only until then. Say so loudly.
            log.error("%s is unreadable (%s): the next valid desired statement is accepted whatever its seq",
                      self.path, exc)
            return None

    def _write(self, data: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
