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
