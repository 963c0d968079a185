"""The hub's API as a real process on loopback: ingest is idempotent, bad input changes nothing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import msgpack
import numpy as np
import pytest

from edgeloop.shared.images import encode_jpeg
from edgeloop.shared.protocol import SampleBatch, encode

from factories import HUB_TOKEN, make_candidate, start_hub

TOKEN = HUB_TOKEN


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    svc, url = start_hub(tmp_path_factory.mktemp("hub"))
    yield url
    assert svc.stop() == 0


def call(url, method, path, body: bytes | None = None, token: str | None = TOKEN, ctype="application/msgpack"):
    req = urllib.request.Request(url + path, data=body, method=method, headers={
        "Content-Type": ctype, **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def sample_count(url) -> int:
    return call(url, "GET", "/api/v1/stats")[1]["samples"]


def batch(*cands) -> bytes:
    return encode(SampleBatch(source="relay-t", site="site-t", samples=tuple(cands)))


def test_ingest_is_idempotent_by_sample_id(hub):
    a, b = make_candidate(), make_candidate()
    before = sample_count(hub)
    status, reply = call(hub, "POST", "/api/v1/samples", batch(a, b))
    assert status == 200 and sorted(reply["stored"]) == sorted([a.sample_id, b.sample_id]) and reply["duplicates"] == []
    status, reply = call(hub, "POST", "/api/v1/samples", batch(b, a))
    assert status == 200 and reply["stored"] == [] and sorted(reply["duplicates"]) == sorted([a.sample_id, b.sample_id])
    assert sample_count(hub) == before + 2


def bad_second_candidate() -> bytes:
    raw = msgpack.unpackb(batch(make_candidate(), make_candidate()), raw=False)
    raw["samples"][1]["probs"] = np.array([0.9, 0.9], "<f4").tobytes()
    return msgpack.packb(raw, use_bin_type=True)


@pytest.mark.parametrize("body, status, names", [
    (b"\xc1not msgpack", 400, "msgpack"),
    (msgpack.packb([1, 2, 3]), 400, "map"),
    (msgpack.packb({"v": 99, "type": "samples"}), 400, "newer"),
    (msgpack.packb({"v": 1, "type": "state"}), 400, "type"),
    (bad_second_candidate(), 400, "samples[1].probs"),
])
def test_malformed_batch_gets_a_4xx_naming_the_problem_and_stores_nothing(hub, body, status, names):
    before = sample_count(hub)
    code, reply = call(hub, "POST", "/api/v1/samples", body)
    assert code == status and names in reply["error"]
    assert reply["refused"] == "batch"  # the hub's own, typed: a relay may then look for the bad ones
    assert sample_count(hub) == before


@pytest.mark.parametrize("image, says", [
    (b"\xff\xd8\xff\xe0 only the start of a JPEG \xff\xd9", "without a frame header"),
    (encode_jpeg(np.zeros((16, 16, 3), np.uint8))[:300] + bytes(300), "do not decode"),
    (b"GIF89a not ours", "not a JPEG or PNG"),
    (b"\x89PNG\r\n\x1a\n", "IHDR"),
])
def test_a_sample_whose_image_does_not_decode_is_refused_alone_and_the_rest_stored(hub, image, says):
    good, bad, also = make_candidate(), make_candidate(image=image), make_candidate()
    before = sample_count(hub)
    status, reply = call(hub, "POST", "/api/v1/samples", batch(good, bad, also))
    assert status == 200 and sorted(reply["stored"]) == sorted([good.sample_id, also.sample_id])
    (refused,) = reply["refused"]
    assert refused["sample_id"] == bad.sample_id and refused["reason"].startswith("image: ") and says in refused["reason"]
    assert sample_count(hub) == before + 2
    assert call(hub, "GET", f"/api/v1/samples/{bad.sample_id}")[0] == 404


def test_oversized_batch_is_refused_with_413(hub):
    before = sample_count(hub)
    code, reply = call(hub, "POST", "/api/v1/samples", b"\x00" * (9 << 20))
    assert code == 413
    assert sample_count(hub) == before


def test_without_the_token_nothing_is_accepted(hub):
    before = sample_count(hub)
    code, reply = call(hub, "POST", "/api/v1/samples", batch(make_candidate()), token=None)
    assert code == 401 and "token" in reply["error"]
    code, _ = call(hub, "POST", "/api/v1/samples", batch(make_candidate()), token="wrong")
    assert code == 401
    assert sample_count(hub) == before


@pytest.mark.parametrize("path, body, names", [
    ("/api/v1/selection", {"budget": -1}, "budget"),
    ("/api/v1/selection", {"budget": 3, "strategy": "psychic"}, "strategy"),
    ("/api/v1/labels", {"labels": [1, 2]}, "labels"),
    ("/api/v1/labels", {"labels": {"x": "seven"}}, "labels.x"),
    ("/api/v1/labels", {"labels": {"x": 10}}, "labels.x"),
    ("/api/v1/desired", {"version": "v404"}, "v404"),
])
def test_bad_json_requests_name_the_field(hub, path, body, names):
    code, reply = call(hub, "POST", path, json.dumps(body).encode(), ctype="application/json")
    assert 400 <= code < 500 and names in reply["error"]


def test_selection_queues_the_least_confident_first(hub):
    sure = make_candidate(probs=np.array([0.98, 0.01, 0.01], np.float32))
    unsure = make_candidate(probs=np.array([0.4, 0.35, 0.25], np.float32))
    assert call(hub, "POST", "/api/v1/samples", batch(sure, unsure))[0] == 200
    code, reply = call(hub, "POST", "/api/v1/selection", json.dumps({"budget": 1}).encode(), ctype="application/json")
    assert code == 200 and len(reply["selected"]) == 1
    queue = call(hub, "GET", "/api/v1/label-queue")[1]["items"]
    assert unsure.sample_id in [q["sample_id"] for q in queue] and sure.sample_id not in [q["sample_id"] for q in queue]
    code, reply = call(hub, "POST", "/api/v1/labels", json.dumps({"labels": {unsure.sample_id: 1}, "source": "oracle"}).encode(),
                       ctype="application/json")
    assert code == 200 and reply["labeled"] == 1


# -- device reports (relays POST them for the rollout controller) ------------------------------
DEVICE = {"device_id": "cam-1", "status": "online", "model_version": "v1",
          "stats": {"frames_this_model": 120, "latency_p95_ms": 21.5}, "facts": {"shadow_version": "v2"},
          "last_error": ""}


def post_json(url, path, body):
    return call(url, "POST", path, json.dumps(body).encode(), ctype="application/json")


def reported(url, site):
    return call(url, "GET", f"/api/v1/devices?site={site}")[1]["devices"]


def test_a_device_report_keeps_the_latest_state_of_each_device(hub):
    body = {"relay_id": "relay-r", "site": "site-r", "devices": [DEVICE, {"device_id": "cam-2", "status": "offline"}]}
    assert post_json(hub, "/api/v1/reports", body) == (200, {"stored": 2})
    newer = {**DEVICE, "model_version": "v2", "stats": {"frames_this_model": 3}}
    assert post_json(hub, "/api/v1/reports", {**body, "devices": [newer]}) == (200, {"stored": 1})
    devices = {d["device_id"]: d for d in reported(hub, "site-r")}
    assert devices["cam-1"]["model_version"] == "v2" and devices["cam-1"]["stats"] == {"frames_this_model": 3}
    assert devices["cam-1"]["relay_id"] == "relay-r" and devices["cam-1"]["status"] == "online"
    assert devices["cam-2"]["status"] == "offline" and devices["cam-2"]["model_version"] is None
    will = {"device_id": "cam-1", "status": "offline"}  # what the broker sends for an agent that died: no stats
    assert post_json(hub, "/api/v1/reports", {**body, "devices": [will]}) == (200, {"stored": 1})
    cam1 = {d["device_id"]: d for d in reported(hub, "site-r")}["cam-1"]
    assert cam1["status"] == "offline" and cam1["stats"] == {"frames_this_model": 3}  # its counts stay


@pytest.mark.parametrize("body, status, names", [
    ({"site": "site-x", "devices": [DEVICE]}, 400, "relay_id"),
    ({"relay_id": "relay-x", "site": "a/b", "devices": [DEVICE]}, 400, "site"),
    ({"relay_id": "relay-x", "site": "site-x", "devices": {"cam-1": DEVICE}}, 400, "devices"),
    ({"relay_id": "relay-x", "site": "site-x", "devices": [DEVICE, {**DEVICE, "device_id": "a b"}]}, 400,
     "devices[1].device_id"),
    ({"relay_id": "relay-x", "site": "site-x", "devices": [{**DEVICE, "status": "asleep"}]}, 400, "devices[0].status"),
    ({"relay_id": "relay-x", "site": "site-x", "devices": [{**DEVICE, "model_version": ""}]}, 400,
     "devices[0].model_version"),
    ({"relay_id": "relay-x", "site": "site-x", "devices": [{**DEVICE, "stats": {"fps": "fast"}}]}, 400,
     "devices[0].stats.fps"),
    ({"relay_id": "relay-x", "site": "site-x", "devices": [{**DEVICE, "stats": {f"s{i}": 1 for i in range(200)}}]},
     413, "devices[0].stats"),
    ({"relay_id": "relay-x", "site": "site-x", "devices": [{**DEVICE, "facts": {"shadow_version": 2}}]}, 400,
     "devices[0].facts.shadow_version"),
    ({"relay_id": "relay-x", "site": "site-x", "devices": [{**DEVICE, "last_error": "x" * 5000}]}, 413,
     "devices[0].last_error"),
    ({"relay_id": "relay-x", "site": "site-x", "devices": [DEVICE, DEVICE]}, 400, "appears twice"),
    ([DEVICE], 400, "JSON object"),
])
def test_a_bad_device_report_names_the_field_and_stores_nothing(hub, body, status, names):
    code, reply = post_json(hub, "/api/v1/reports", body)
    assert code == status and names in reply["error"]
    assert reported(hub, "site-x") == []


def test_desired_keeps_its_shape_and_checks_the_site(hub):
    code, _ = call(hub, "GET", "/api/v1/desired?site=site-t")
    assert code == 204  # no model registered in this hub
    code, reply = call(hub, "GET", "/api/v1/desired?site=a%20b")
    assert code == 400 and "site" in reply["error"]
    code, reply = post_json(hub, "/api/v1/rollouts", {"model": "v404"})
    assert code == 404 and "v404" in reply["error"]


def test_the_openapi_document_is_served_and_true_to_the_routes(hub):
    from edgeloop.hub.openapi import SUMMARIES

    with urllib.request.urlopen(hub + "/openapi.json", timeout=10) as r:  # no token needed
        doc = json.load(r)
    assert doc["openapi"].startswith("3.") and doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    served = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert served == set(SUMMARIES)  # every route described, nothing described that is not served
    art = doc["paths"]["/api/v1/models/{version}/artifact"]["get"]
    assert art["parameters"][0]["name"] == "version" and art["security"] == [{"bearer": []}]
    assert doc["paths"]["/health"]["get"]["security"] == []
    # and the documented security holds: an /api/ route without the token is refused
    status, body = call(hub, "GET", "/api/v1/models", token=None)
    assert status == 401 and "token" in body["error"]


def test_the_openapi_document_comes_from_the_router():
    from aiohttp import web

    from edgeloop.hub.openapi import build, routes

    async def handler(request):
        return web.Response()

    app = web.Application()
    app.router.add_get("/api/v1/undocumented", handler)
    assert routes(app) == {("GET", "/api/v1/undocumented")}
    with pytest.raises(KeyError):
        build(app)  # a route nobody described stops the hub at start


def test_feedback_on_a_sample_held_already_queues_it_first_with_the_feedback(hub):
    frame = make_candidate(tags={"lighting": "night"})
    assert call(hub, "POST", "/api/v1/samples", batch(frame))[1]["stored"] == [frame.sample_id]
    flagged = make_candidate(sample_id=frame.sample_id, reasons=("feedback:wrong",), tags={"feedback_label": "2"})
    status, reply = call(hub, "POST", "/api/v1/samples", batch(flagged))
    assert status == 200 and reply["duplicates"] == [frame.sample_id]  # one sample, not two
    sample = call(hub, "GET", f"/api/v1/samples/{frame.sample_id}")[1]
    assert sample["status"] == "queued" and "feedback:wrong" in sample["reasons"]
    assert sample["tags"] == {"lighting": "night", "feedback_label": "2"}
    head = call(hub, "GET", "/api/v1/label-queue?limit=1")[1]["items"][0]
    assert head["sample_id"] == frame.sample_id
