"""The labeling API and the hub's pages, against a real hub process on loopback: ambiguous marks
never reach training, undo puts a sample back in the queue, labels go out as they came in, "more
like this" finds the nearest samples, and people sign in before they see anything."""

from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest


import hubdb
from factories import make_candidate, start_hub
from test_hub_api import TOKEN, batch, call

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-labeling")
    svc, url = start_hub(root)
    yield url, root / "data"
    assert svc.stop() == 0


def jcall(url, method, path, body=None, token=TOKEN):
    data = None if body is None else json.dumps(body).encode()
    return call(url, method, path, data, token=token, ctype="application/json")


def queued(url, n: int, seed: int | None = None, **kw) -> list[str]:
    """Ingest n candidates (with random embeddings when a seed is given) and queue them for
    labeling -> their ids, in queue order."""
    cands = [make_candidate(value=0.1 * i, **kw) for i in range(n)] if seed is None else seen_frames(n, seed, **kw)
    return queue_candidates(url, cands)


def queue_candidates(url, cands: list) -> list[str]:
    """Post candidates as a relay does (msgpack SampleBatch), select them all for labeling -> their
    ids in label-queue order."""
    assert call(url, "POST", "/api/v1/samples", batch(*cands))[0] == 200
    ids = {c.sample_id for c in cands}
    status, reply = jcall(url, "POST", "/api/v1/selection", {"budget": 10_000, "strategy": "uncertainty"})
    assert status == 200
    queue = [it["sample_id"] for it in jcall(url, "GET", "/api/v1/label-queue?limit=1000")[1]["items"]]
    assert ids <= set(queue)  # selected, or queued on arrival (audit)
    return [sid for sid in queue if sid in ids]


def seen_frames(n: int, seed: int, **kw) -> list:
    """n candidates with real JPEGs of the simulated world, reasons and random embeddings."""
    from edgeloop.shared.images import encode_jpeg
    from edgeloop.sim.world import World

    world, rng = World(seed), np.random.default_rng(seed)
    return [make_candidate(value=0.1 * i, image_bytes=encode_jpeg(world.frame("cam-1", 40 * i).image),
                           embedding=rng.normal(size=16).astype(np.float16),
                           reasons=("least_confidence", "audit") if i == 2 else ("margin",), **kw) for i in range(n)]


def test_ambiguous_is_kept_and_counted_but_never_labeled_and_undo_requeues(hub):
    url, data = hub
    a, b, c = queued(url, 3)
    status, reply = jcall(url, "POST", "/api/v1/labels", {"labels": {a: 1}, "ambiguous": [b], "source": "alice"})
    assert status == 200 and reply == {"labeled": 1, "ambiguous": 1, "unknown": []}
    out = jcall(url, "GET", "/api/v1/labels?source=alice")[1]
    assert [(r["sample_id"], r["label"]) for r in out["labels"]] == [(a, 1)]
    assert [r["sample_id"] for r in out["ambiguous"]] == [b]
    store = hubdb.store(data)  # the real database: b is kept, marked, and has no label to train on
    assert store.sample(b)["status"] == "ambiguous" and b not in {r["sample_id"] for r in store.labels()}
    store.close()
    queue = [it["sample_id"] for it in jcall(url, "GET", "/api/v1/label-queue?limit=1000")[1]["items"]]
    assert a not in queue and b not in queue and c in queue

    # Undo both: back in the queue, no label, no mark.
    assert jcall(url, "DELETE", f"/api/v1/labels/{a}")[1] == {"sample_id": a, "was": "labeled", "status": "queued"}
    assert jcall(url, "DELETE", f"/api/v1/labels/{b}")[1]["was"] == "ambiguous"
    queue = [it["sample_id"] for it in jcall(url, "GET", "/api/v1/label-queue?limit=1000")[1]["items"]]
    assert {a, b, c} <= set(queue)
    out = jcall(url, "GET", "/api/v1/labels?source=alice")[1]
    assert out == {"labels": [], "ambiguous": []}
    # Nothing left to undo: 409; an unknown sample: 404.
    assert jcall(url, "DELETE", f"/api/v1/labels/{a}")[0] == 409
    assert jcall(url, "DELETE", "/api/v1/labels/no-such-sample")[0] == 404


@pytest.mark.parametrize("body, words", [
    ({"labels": {"x": 1}, "ambiguous": ["x"]}, "also given a label"),
    ({"ambiguous": "x"}, "ambiguous: expected a list"),
    ({"labels": {"x": 10}}, "class index"),
    ({}, "expected labels, ambiguous or both"),
    ({"labels": {"x": 1}, "source": "has space"}, "source"),
])
def test_malformed_label_calls_get_a_400_and_change_nothing(hub, body, words):
    url, _ = hub
    (sid,) = queued(url, 1)
    body = json.loads(json.dumps(body).replace('"x"', json.dumps(sid)))
    status, reply = jcall(url, "POST", "/api/v1/labels", body)
    assert status == 400 and words in reply["error"], reply
    assert sid in [it["sample_id"] for it in jcall(url, "GET", "/api/v1/label-queue?limit=1000")[1]["items"]]
    assert jcall(url, "GET", f"/api/v1/samples/{sid}")[1]["status"] == "queued"


def test_a_sample_shows_its_prediction_top_classes_and_boxes(hub):
    url, _ = hub
    det = np.array([[0.1, 0.2, 0.5, 0.6, 0.9, 2], [0.5, 0.5, 0.9, 0.9, 0.4, 0]], np.float32)
    (sid,) = queued(url, 1, probs=np.array([0.1, 0.3, 0.6], np.float32), detections=det)
    status, s = jcall(url, "GET", f"/api/v1/samples/{sid}")
    assert status == 200 and s["predicted"] == 2 and s["top"] == [[2, 0.6], [1, 0.3], [0, 0.1]]
    assert np.allclose(s["detections"], det, atol=1e-4)
    assert jcall(url, "GET", "/api/v1/samples/nope")[0] == 404


def test_without_a_model_the_project_is_the_digit_classes_and_labels_are_class_indices(hub):
    url, _ = hub
    assert jcall(url, "GET", "/api/v1/project") == (200, {"task": "classify", "classes": [str(i) for i in range(10)]})
    from edgeloop.shared.images import encode_jpeg

    (sid,) = queued(url, 1, image_bytes=encode_jpeg(np.zeros((30, 40, 3), np.uint8)))  # no embedding: no neighbour
    item = jcall(url, "GET", f"/api/v1/samples/{sid}")[1]
    assert (item["width"], item["height"], item["label"]) == (40, 30, None) == (*_jpeg_size(url, sid), None)
    status, reply = jcall(url, "POST", "/api/v1/labels", {"boxes": {sid: []}})
    assert status == 400 and "classification project" in reply["error"] and "send a class index" in reply["error"]
    assert jcall(url, "POST", "/api/v1/labels", {"labels": {sid: 4}, "source": "carol"})[0] == 200
    assert jcall(url, "GET", f"/api/v1/samples/{sid}")[1]["label"] == {"class": 4, "source": "carol"}
    (row,) = jcall(url, "GET", "/api/v1/labels?source=carol")[1]["labels"]
    assert (row["label"], row["boxes"]) == (4, None)


def _jpeg_size(url, sid) -> tuple[int, int]:
    from edgeloop.shared.images import decode_image

    req = urllib.request.Request(f"{url}/api/v1/samples/{sid}/image", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        h, w = decode_image(resp.read()).shape[:2]
    return w, h


def test_more_like_this_lists_the_nearest_samples_first(hub):
    url, _ = hub
    base = np.zeros(16, np.float32)
    base[0] = 1.0
    near, far = base.copy(), np.zeros(16, np.float32)
    near[1], far[5] = 0.1, 1.0
    ids = queued(url, 1, embedding=base.astype(np.float16))
    ids += queued(url, 1, embedding=near.astype(np.float16)) + queued(url, 1, embedding=far.astype(np.float16))
    status, reply = jcall(url, "GET", f"/api/v1/samples/{ids[0]}/similar?k=2")
    assert status == 200 and [it["sample_id"] for it in reply["items"]] == [ids[1], ids[2]]
    assert reply["items"][0]["distance"] < 0.01 < reply["items"][1]["distance"]
    # Only samples with an embedding have neighbours.
    (plain,) = queued(url, 1)
    assert jcall(url, "GET", f"/api/v1/samples/{plain}/similar")[0] == 404
    # ... and a campaign for more like it starts from the same page.
    status, camp = jcall(url, "POST", "/api/v1/campaigns", {"sample_ids": [ids[0]]})
    assert status == 200 and camp["campaign_id"].startswith("cmp-")


def _browser_session(url: str):
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)), jar


def test_pages_need_a_sign_in_and_the_cookie_then_opens_the_api(hub):
    url, _ = hub
    opener, jar = _browser_session(url)
    for page in ("/", "/label"):
        with opener.open(url + page) as resp:  # redirected to the sign-in form
            assert resp.url.startswith(url + "/login?next=") and 'name="token"' in resp.read().decode()
    with pytest.raises(urllib.error.HTTPError) as exc:  # a wrong token: 401 and the form again, no cookie
        opener.open(url + "/login", urllib.parse.urlencode({"token": "wrong", "next": "/label"}).encode())
    assert exc.value.code == 401 and not list(jar)
    # A sign-in never sends anyone off the hub.
    with opener.open(url + "/login", urllib.parse.urlencode({"token": TOKEN, "next": "//evil.example"}).encode()) as r:
        assert r.url == url + "/"
    cookie = next(c for c in jar if c.name == "edgeloop_session")
    assert cookie.has_nonstandard_attr("HttpOnly") or cookie.get_nonstandard_attr("httponly") is not None
    with opener.open(url + "/label") as resp:
        assert 'id="labeler"' in resp.read().decode()
    with opener.open(url + "/api/v1/labels") as resp:  # the page's scripts use the API with the cookie
        assert resp.status == 200 and "labels" in json.loads(resp.read())
    # Without token or cookie the API still refuses, and says why.
    status, reply = jcall(url, "GET", "/api/v1/labels", token=None)
    assert status == 401 and "token" in reply["error"]
    status, reply = jcall(url, "DELETE", "/api/v1/labels/x", token=None)
    assert status == 401
