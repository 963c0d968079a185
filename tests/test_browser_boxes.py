"""The labeling page of a detection project in a real browser (Debian's chromium, headless, driven by
playwright): real mouse drags draw, resize and move boxes over a frame whose model boxes are the
pre-labels, keys delete one and change classes, Enter accepts; the hub must then hold exactly the
boxes those gestures imply, in the stored image's pixels. Writes runs/screenshots/label-boxes.png."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factories import fixed_box_detector_onnx, make_candidate, start_hub
from test_browser import SHOTS, browser, signed_in  # noqa: F401 - browser is a fixture
from test_hub_api import call
from test_hub_labeling import jcall, queue_candidates

pytest.importorskip("torch")  # the detector is exported by torch (the hub extra)
pytestmark = pytest.mark.e2e

CLASSES = ("car", "van", "person")
W, H = 320, 240  # the stored JPEG's size
# The model's two boxes (normalised x1, y1, x2, y2, score, class): the page's pre-labels.
PRE = np.array([[0.10, 0.15, 0.35, 0.55, 0.91, 0],    # a car  -> image pixels 32, 36, 112, 132
                [0.55, 0.50, 0.90, 0.95, 0.62, 1]],   # a van  -> image pixels 176, 120, 288, 228
               np.float32)
TOLERANCE_PX = 2.0  # image pixels; the frame is shown about 2.5x larger, so a mouse pixel is 0.4 of one


def detector_artifact(tmp_path, private_pem: bytes, version: str = "det-1") -> bytes:
    """A tiny real detector (ONNX exported by torch), packed with its manifest and signed."""
    from edgeloop.shared.artifact import pack, sign_artifact
    from edgeloop.shared.manifest import InputSpec, ModelManifest
    from edgeloop.shared.signing import load_private_key

    side = 64
    onnx = fixed_box_detector_onnx(tmp_path / "det.onnx", PRE, len(CLASSES), side)
    manifest = ModelManifest(version=version, task="detection", input=InputSpec(name="images", height=side, width=side),
                             outputs={"detections": "output0"}, labels=CLASSES)
    return sign_artifact(pack(manifest, onnx), load_private_key(private_pem))


def street_jpeg(seed: int) -> bytes:
    """A 320 x 240 picture with a shape where each pre-label is, so that a screenshot makes sense."""
    import cv2

    from edgeloop.shared.images import encode_jpeg

    rng = np.random.default_rng(seed)
    img = np.zeros((H, W, 3), np.uint8)
    img[:] = np.linspace(70, 150, H, dtype=np.uint8)[:, None, None]
    img[int(0.6 * H):] = (90, 95, 90)  # the road
    for (x1, y1, x2, y2, _, _), colour in zip(PRE, [(40, 40, 200), (200, 160, 60)]):
        cv2.rectangle(img, (int(x1 * W) + 4, int(y1 * H) + 4), (int(x2 * W) - 4, int(y2 * H) - 4), colour, -1)
    cv2.circle(img, (180, 55), 22, (60, 170, 230), -1)  # something the model missed: drawn by hand below
    cv2.rectangle(img, (20, 170), (120, 226), (30, 160, 30), -1)  # and another
    return encode_jpeg(np.clip(img + rng.integers(0, 12, img.shape), 0, 255).astype(np.uint8))


def post_candidates(url, n: int, seed: int) -> list[str]:
    """n candidates with PRE as their detections, posted as a relay would (msgpack SampleBatch) and
    selected for labeling -> their ids in queue order."""
    cands = [make_candidate(value=0.9 - 0.1 * i, image_bytes=street_jpeg(seed + i), model_version="det-1",
                            probs=np.array([0.5, 0.3, 0.2], np.float32), detections=PRE.copy(),
                            reasons=("detection_count", "low_box_confidence")) for i in range(n)]
    return queue_candidates(url, cands)


@pytest.fixture(scope="module")
def detect_hub(tmp_path_factory):
    """A real hub whose project is a detector of CLASSES, with two candidates queued -> (url, their ids)."""
    root = tmp_path_factory.mktemp("hub-boxes")
    svc, url = start_hub(root)
    art = detector_artifact(root, (root / "data" / "keys" / "hub.key").read_bytes())
    assert call(url, "POST", "/api/v1/models", art, ctype="application/octet-stream")[0] == 201
    assert jcall(url, "POST", "/api/v1/desired", {"version": "det-1"})[0] == 200
    yield url, post_candidates(url, 2, seed=0)
    assert svc.stop() == 0


def box_labels(url) -> dict[str, list]:
    """What the hub holds: sample_id -> [(class, [x1, y1, x2, y2])] for box labels."""
    out = {}
    for row in jcall(url, "GET", "/api/v1/labels")[1]["labels"]:
        if row.get("boxes") is not None:
            out[row["sample_id"]] = [(b["class"], b["xyxy"]) for b in row["boxes"]]
    return out


def test_boxes_drawn_resized_moved_and_deleted_with_the_mouse_are_stored_exactly(browser, detect_hub):
    from playwright.sync_api import expect

    url, (first, second) = detect_hub
    project = jcall(url, "GET", "/api/v1/project")[1]
    assert (project["task"], project["classes"]) == ("detect", list(CLASSES))  # the registered detector's
    page = signed_in(browser, url, "/label")
    root, boxes = page.locator("#labeler"), page.locator("#overlay .box")
    expect(root).to_have_attribute("data-task", "detect")
    expect(root).to_have_attribute("data-current", first)
    page.wait_for_function("() => { const i = document.getElementById('image'); return i.complete && i.naturalWidth > 0; }")
    expect(boxes).to_have_count(2)
    expect(page.locator("#overlay .box.model")).to_have_count(2)
    expect(page.locator("#overlay .box[data-box-index='0'] .box-tag")).to_have_text("car 0.91")
    expect(page.locator("#reasons li")).to_have_text(["detection_count", "low_box_confidence"])
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / "label-boxes-prelabels.png", full_page=True)

    r = page.locator("#overlay").bounding_box()
    assert abs(r["width"] / r["height"] - W / H) < 0.01  # the frame keeps the image's shape
    assert r["width"] > 1.5 * W  # and is shown large

    def at(x, y):  # stored image pixels -> screen
        return r["x"] + x * r["width"] / W, r["y"] + y * r["height"] / H

    def drag(a, b):
        page.mouse.move(*at(*a))
        page.mouse.down()
        page.mouse.move(*at(*b), steps=12)
        page.mouse.up()

    def click(p):
        page.mouse.click(*at(*p))

    def box(i):
        return page.locator(f"#overlay .box[data-box-index='{i}']")

    # Draw a box on empty space: the class of the next box is class 0 until chosen; 2 makes it a person.
    drag((150, 20), (210, 80))
    expect(boxes).to_have_count(3)
    expect(box(2)).to_have_class("box human selected")
    page.keyboard.press("2")
    expect(box(2)).to_have_attribute("data-class", "2")
    # Escape deselects; a digit then chooses the class of the next box drawn: a van.
    page.keyboard.press("Escape")
    expect(page.locator("#overlay .box.selected")).to_have_count(0)
    page.keyboard.press("1")
    drag((10, 160), (90, 230))
    expect(box(3)).to_have_attribute("data-class", "1")
    # Resize the new box by its bottom-right corner handle.
    drag((90, 230), (130, 236))
    # Select the car pre-label with a click, widen it by its right edge handle.
    click((72, 84))
    expect(box(0)).to_have_class("box model selected")
    drag((112, 84), (125, 84))
    expect(box(0)).to_have_attribute("data-source", "human")
    # Select the person box, drag inside it: it moves.
    click((180, 50))
    drag((180, 50), (190, 55))
    # Select the van pre-label and delete it.
    click((232, 174))
    expect(box(1)).to_have_class("box model selected")
    page.keyboard.press("Backspace")
    expect(boxes).to_have_count(3)
    expect(page.locator("#box-list li")).to_have_count(3)
    click((300, 10))  # a click on empty space deselects: the screenshot shows the boxes as they are stored
    page.screenshot(path=SHOTS / "label-boxes.png", full_page=True)

    page.keyboard.press("Enter")
    expect(root).to_have_attribute("data-current", second)
    expect(page.locator("#status")).to_have_text(f"{first}: 3 boxes")
    stored = box_labels(url)
    want = [(0, [32, 36, 125, 132]),        # the car pre-label, widened
            (2, [160, 25, 220, 85]),        # drawn, made a person, moved by (10, 5)
            (1, [10, 160, 130, 236])]       # drawn as a van, resized
    got = stored[first]
    assert [c for c, _ in got] == [c for c, _ in want], got
    for (_, g), (_, w) in zip(got, want):
        assert np.allclose(g, w, atol=TOLERANCE_PX), (g, w)

    # The second frame, by keys alone: n stores "no objects", u takes it back (the pre-labels return),
    # a marks it ambiguous.
    expect(boxes).to_have_count(2)
    page.keyboard.press("n")
    expect(root).to_have_attribute("data-current", "")
    assert box_labels(url)[second] == []
    page.keyboard.press("u")
    expect(root).to_have_attribute("data-current", second)
    expect(boxes).to_have_count(2)
    assert second not in box_labels(url)
    page.keyboard.press("a")
    expect(root).to_have_attribute("data-current", "")
    held = jcall(url, "GET", "/api/v1/labels")[1]
    assert [a["sample_id"] for a in held["ambiguous"]] == [second]
    assert set(box_labels(url)) == {first}


def test_a_refused_verdict_is_shown_and_the_frame_stays(browser, detect_hub):
    from playwright.sync_api import expect

    url, _ = detect_hub
    post_candidates(url, 1, seed=5)
    page = signed_in(browser, url, "/label")
    root = page.locator("#labeler")
    expect(root).not_to_have_attribute("data-current", "")
    expect(page.locator("#overlay .box")).to_have_count(2)
    on_screen = root.get_attribute("data-current")
    # A 400 of the kind the hub sends for a box it refuses (the page cannot draw one: it clamps to the image).
    page.route("**/api/v1/labels", lambda route: route.fulfill(
        status=400, content_type="application/json", body=json.dumps({"error": f"boxes.{on_screen}[0].xyxy: x1 < x2 expected"}))
        if route.request.method == "POST" else route.continue_())
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_text(f"boxes.{on_screen}[0].xyxy: x1 < x2 expected")
    expect(page.locator("#status")).to_have_class("error")
    expect(root).to_have_attribute("data-current", on_screen)
    expect(page.locator("#overlay .box")).to_have_count(2)
