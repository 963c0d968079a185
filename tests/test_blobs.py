"""The hub's blob store: content-addressed, written once, and durable before a row points at it — the
file's bytes and the names that lead to it (the folder entries) are fsynced. A power cut cannot be
caused here, so the test watches which file descriptors are fsynced."""

from __future__ import annotations

import os
import stat

from hypothesis import given, settings, strategies as st

from edgeloop.hub.blobs import BlobStore


def fsynced_paths(monkeypatch) -> list[str]:
    seen = []
    real = os.fsync

    def spy(fd):
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        seen.append((kind, os.readlink(f"/proc/self/fd/{fd}")))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


def test_a_new_blob_its_folder_and_the_folders_made_for_it_are_on_disk(tmp_path, monkeypatch):
    store = BlobStore(tmp_path / "blobs")
    seen = fsynced_paths(monkeypatch)
    digest = store.put(b"a frame")
    path = store.path(digest)
    dirs = {p for kind, p in seen if kind == "dir"}
    assert {str(path.parent), str(path.parent.parent), str(path.parent.parent.parent)} <= dirs
    assert any(kind == "file" for kind, _ in seen)
    seen.clear()
    assert store.put(b"a frame") == digest and seen == []  # already there: nothing written


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_whatever_is_put_comes_back_by_its_digest(tmp_path_factory, blobs):
    store = BlobStore(tmp_path_factory.mktemp("b"))
    digests = [store.put(b) for b in blobs]
    assert [store.get(d) for d in digests] == blobs and all(store.exists(d) for d in digests)


def test_a_batch_is_flushed_before_any_name_points_at_it_and_its_names_before_it_returns(tmp_path, monkeypatch):
    from edgeloop.hub import blobs as module

    store, events = BlobStore(tmp_path / "blobs"), []
    real_flush, real_replace = module._flush, os.replace
    monkeypatch.setattr(module, "_flush", lambda folder: (events.append(("flush", folder)), real_flush(folder)))
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("rename", str(b))), real_replace(a, b)))
    known = store.put(b"held already")
    events.clear()
    digests = store.put_many([b"one", b"two", b"one", b"held already"])
    assert digests[0] == digests[2] and digests[3] == known
    kinds = [k for k, _ in events]
    # One flush before the first rename, one after the last; one rename per new blob (not the repeat,
    # not the one held already); nothing else.
    assert kinds == ["flush", "rename", "rename", "flush"]
    assert {p for k, p in events if k == "rename"} == {str(store.path(d)) for d in digests[:2]}
    events.clear()
    assert store.put_many([b"one", b"two"]) == digests[:2] and events == []  # all there: nothing written


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.lists(st.binary(max_size=64), max_size=8))
def test_a_batch_comes_back_as_put_one_by_one(tmp_path_factory, before, batch):
    store = BlobStore(tmp_path_factory.mktemp("b"))
    for b in before:
        store.put(b)
    digests = store.put_many(batch)
    assert digests == [BlobStore(tmp_path_factory.mktemp("c")).put(b) for b in batch]
    assert [store.get(d) for d in digests] == batch
    assert not list(store.root.rglob("*.tmp"))


def test_a_full_disk_fails_the_batch_and_leaves_no_temporary_files(tmp_path):
    import pytest

    from factories import small_tmpfs

    with small_tmpfs(tmp_path, "1m") as disk:
        store = BlobStore(disk / "blobs")
        with pytest.raises(OSError):
            store.put_many([os.urandom(400_000) for _ in range(3)])
        assert not list(store.root.rglob("*.tmp"))
        small = store.put_many([b"room for this"])  # and the store goes on once there is room
        assert store.get(small[0]) == b"room for this"
