"""Signed desired statements: what the hub wants a device (or every device of a site) to run, signed
with the hub's Ed25519 key, so that a relay can pass one on but can neither forge one, replay an
older one (downgrade) nor hold a new one back unnoticed (freeze).

In Uptane's terms a statement is Targets-like (the artifact's version, sha256 and size; the shadow's
too; the device or site it is for) and Timestamp-like (`seq`, which never goes down: rollback
protection; `expires_at`: freeze detection). The relay only adds the URL it serves the artifact at.

    data, sig = sign(private_key, st)            # the hub, for each entry of GET /api/v1/desired
    st = open_signed(public_key, data, sig)      # the agent: IntegrityError unless the hub signed these bytes
    check(st, desired, site, device, now, last)  # StaleStatement / IntegrityError, see below

Agents order statements by `rank` = (seq, 1 for a device's own statement, 0 for its site's):
refused when lower than the highest they accepted (kept on disk), or expired; a statement for
another site or device, or whose fields differ from the desired message it came in, is an
IntegrityError (mix-and-match). The hub bumps `seq` whenever the site's desired state changes, so
equal ranks carry the same content.

The signed bytes are a msgpack map prefixed with a domain tag (`DOMAIN`), so that a statement's
signature can never pass for a model digest's (those sign 32 raw bytes) or the reverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgpack

from .errors import IntegrityError, ProtocolError, StaleStatement
from .protocol import check_id
from .signing import SIGNATURE_BYTES

DOMAIN = b"edgeloop desired statement v1\x00"
MAX_STATEMENT_BYTES = 65536  # a site default names the devices with their own entry (a canary's few, or many)
MAX_OTHERS = 4096


@dataclass(frozen=True)
class ShadowRef:
    version: str
    sha256: str
    size: int
    fraction: float


@dataclass(frozen=True)
class Statement:
    site: str
    device: str | None  # None: the site's default, for every device without a statement of its own
    version: str
    sha256: str  # of the artifact file
    size: int
    seq: int  # never lower than before for the same site; bumped whenever its desired state changes
    expires_at: float  # seconds since the epoch; an agent acts on no statement past it
    shadow: ShadowRef | None = None
    max_latency_ms: float | None = None
    rollout_id: str | None = None
    # A site default's: the devices that have a statement of their own at this seq, for which it is not
    # (so a relay cannot hand a canary device, or one an operator pinned, the default in its place).
    others: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "others", tuple(sorted(self.others)))  # one order: what is signed is what compares

    @property
    def rank(self) -> tuple[int, int]:
        """What agents compare: a device's own statement outranks its site's default of the same seq."""
        return self.seq, 0 if self.device is None else 1

    def to_bytes(self) -> bytes:
        m = {"site": self.site, "device": self.device, "version": self.version, "sha256": self.sha256,
             "size": self.size, "seq": self.seq, "expires_at": float(self.expires_at),
             "shadow": None if self.shadow is None else [self.shadow.version, self.shadow.sha256, self.shadow.size,
                                                          float(self.shadow.fraction)],
             "max_latency_ms": self.max_latency_ms, "rollout_id": self.rollout_id}
        if self.others:
            m["others"] = list(self.others)
        return msgpack.packb(m, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Statement":
        try:
            m = msgpack.unpackb(data, raw=False, max_bin_len=MAX_STATEMENT_BYTES, max_str_len=MAX_STATEMENT_BYTES,
                                max_array_len=MAX_OTHERS, max_map_len=16)
        except (ValueError, msgpack.UnpackException, TypeError) as exc:
            raise ProtocolError(f"desired statement: not a msgpack map ({exc})") from exc
        if not isinstance(m, dict):
            raise ProtocolError("desired statement: not a msgpack map")
        sh = m.get("shadow")
        shadow = None
        if sh is not None:
            if not isinstance(sh, list) or len(sh) != 4:
                raise ProtocolError("desired statement.shadow: expected [version, sha256, size, fraction]")
            shadow = ShadowRef(check_id(sh[0], "desired statement.shadow.version"), _sha(sh[1], "shadow.sha256"),
                               _count(sh[2], "shadow.size"), _number(sh[3], "shadow.fraction"))
        device = m.get("device")
        others = m.get("others", [])
        if not isinstance(others, list) or (others and device is not None):
            raise ProtocolError("desired statement.others: expected a list of device ids, on a site's default only")
        latency = m.get("max_latency_ms")
        rid = m.get("rollout_id")
        return cls(site=check_id(m.get("site"), "desired statement.site"),
                   device=None if device is None else check_id(device, "desired statement.device"),
                   version=check_id(m.get("version"), "desired statement.version"),
                   sha256=_sha(m.get("sha256"), "sha256"), size=_count(m.get("size"), "size"),
                   seq=_count(m.get("seq"), "seq"), expires_at=_number(m.get("expires_at"), "expires_at"),
                   shadow=shadow, max_latency_ms=None if latency is None else _number(latency, "max_latency_ms"),
                   rollout_id=None if rid is None else check_id(rid, "desired statement.rollout_id"),
                   others=tuple(check_id(d, f"desired statement.others[{i}]") for i, d in enumerate(others)))


def sign(private_key, st: Statement) -> tuple[bytes, bytes]:
    """-> (the statement's bytes, the hub's 64-byte signature over DOMAIN ‖ those bytes)."""
    data = st.to_bytes()
    return data, private_key.sign(DOMAIN + data)


def open_signed(public_key, data: bytes | None, signature: bytes | None) -> Statement:
    """The statement, if `public_key` signed exactly these bytes; IntegrityError otherwise (unsigned too)."""
    from cryptography.exceptions import InvalidSignature

    if data is None or signature is None:
        raise IntegrityError("desired message carries no signed statement from the hub (a relay's own, or an "
                             "old hub's): refused")
    if len(data) > MAX_STATEMENT_BYTES or len(signature) != SIGNATURE_BYTES:
        raise IntegrityError("desired statement: malformed signature or oversized statement")
    try:
        public_key.verify(signature, DOMAIN + data)
    except InvalidSignature:
        raise IntegrityError("desired statement: the signature does not verify (forged, altered, or signed by "
                             "another hub's key)") from None
    try:
        return Statement.from_bytes(data)
    except ProtocolError as exc:  # signed by the hub, yet unreadable: a newer hub's format
        raise IntegrityError(str(exc)) from exc


def check(st: Statement, desired, site: str, device: str, now: float, last: tuple[int, int] | None) -> None:
    """Whether a verified statement may be acted on by `device` of `site`, coming with `desired`
    (a protocol.DesiredModel), given the highest rank accepted before (`last`). Raises StaleStatement
    (lower rank: a replayed, older statement; or expired) or IntegrityError (for someone else, or
    the message's fields are not the statement's)."""
    if st.site != site or st.device not in (None, device):
        who = f"device {st.device} of site {st.site}" if st.device else f"site {st.site}"
        raise IntegrityError(f"desired statement is for {who}, not for device {device} of site {site}")
    if st.device is None and device in st.others:
        raise IntegrityError(f"desired statement seq {st.seq} is site {site}'s default, and device {device} has a "
                             "statement of its own at that seq: a relay passing the default instead is refused")
    sent = (desired.version, desired.sha256, desired.size, desired.max_latency_ms, desired.rollout_id)
    signed = (st.version, st.sha256, st.size, st.max_latency_ms, st.rollout_id)
    sh = desired.shadow
    if sent != signed or (sh is None) != (st.shadow is None) or (
            sh is not None and (sh.version, sh.sha256, sh.size, sh.fraction) !=
            (st.shadow.version, st.shadow.sha256, st.shadow.size, st.shadow.fraction)):
        raise IntegrityError(f"desired message names {desired.version} ({desired.sha256[:12]}…) but its signed "
                             f"statement says {st.version} ({st.sha256[:12]}…), or their shadow or budget differ")
    if last is not None and st.rank < tuple(last):
        raise StaleStatement(f"desired statement seq {st.seq} ({st.version}) is older than seq {last[0]} already "
                             "accepted: a replay (downgrade) refused")
    if now > st.expires_at:
        raise StaleStatement(f"desired statement seq {st.seq} ({st.version}) expired {now - st.expires_at:.0f} s "
                             "ago: the relay passes no fresh one (frozen?)")


def _sha(value, where: str) -> str:
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ProtocolError(f"desired statement.{where}: expected 64 lowercase hex digits")
    return value


def _count(value, where: str) -> int:
    if type(value) is not int or value < 0:
        raise ProtocolError(f"desired statement.{where}: expected a non-negative integer, got {value!r:.40}")
    return value


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError(f"desired statement.{where}: expected a finite number, got {value!r:.40}")
    return float(value)
