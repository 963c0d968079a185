"""The hub's signing key on a shared data folder: hubs starting at once all end up with one key."""

from __future__ import annotations

import threading

from edgeloop.hub.keys import load_or_create
from edgeloop.shared.signing import key_id, load_public_key


def test_hubs_starting_at_once_agree_on_one_key_pair(tmp_path):
    path = tmp_path / "keys" / "hub.key"
    ids, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        ids.append(key_id(load_or_create(path)))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(ids) == 8
    assert sorted(p.name for p in path.parent.iterdir()) == ["hub.key", "hub.pub"]  # no temporary left
    assert key_id(load_public_key(path.with_suffix(".pub").read_bytes())) == ids[0]
    assert path.stat().st_mode & 0o777 == 0o600
