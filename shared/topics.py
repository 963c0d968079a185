"""MQTT topic names, one broker per site (see DESIGN.md)."""

from .protocol import check_id

ROOT = "edgeloop"


def samples(site: str, device: str) -> str:
    return f"{ROOT}/{site}/{device}/samples"


def state(site: str, device: str) -> str:
    return f"{ROOT}/{site}/{device}/state"


def received(site: str, device: str) -> str:
    """Relay -> agent: receipts for the samples the relay has on disk (protocol.Receipt)."""
    return f"{ROOT}/{site}/{device}/received"


def desired(site: str, device: str) -> str:
    return f"{ROOT}/{site}/{device}/desired"


def campaigns(site: str) -> str:
    return f"{ROOT}/{site}/campaigns"


def site_filter(site: str, leaf: str) -> str:
    """The filter a relay subscribes with, e.g. site_filter("s1", "samples") -> edgeloop/s1/+/samples."""
    return f"{ROOT}/{site}/+/{leaf}"


def shared(group: str, topic_filter: str) -> str:
    """An MQTT 5 shared subscription: each message goes to ONE subscriber of the group,
    e.g. shared("relays", "edgeloop/s1/+/samples") -> $share/relays/edgeloop/s1/+/samples."""
    return f"$share/{group}/{topic_filter}"


def device_of(topic: str) -> str:
    """edgeloop/{site}/{device}/{leaf} -> device (validated)."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != ROOT:
        raise ValueError(f"not an edgeloop device topic: {topic!r}")
    return check_id(parts[2], "topic.device")


def feedback(site: str, device: str) -> str:
    """Application -> agent on the same device: a prediction flagged wrong or confirmed (JSON)."""
    return f"{ROOT}/{site}/{device}/feedback"
