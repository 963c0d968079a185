"""Pseudo-labels along a track (hub/training/pseudo.py): a human label labels the frames of the same
camera a few seconds around it only where they agree on what is there."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.hub.training.pseudo import WINDOW_S, Frame, propagate

RNG = np.random.default_rng(0)
SCENE = RNG.integers(40, 200, (120, 160, 3), dtype=np.uint8)
CAR = np.array([20, 30, 60, 70], np.float32)


def view(*objects, noise: int = 3, seed: int = 0) -> np.ndarray:
    """The scene with white rectangles at `objects` (x1, y1, x2, y2) and sensor noise."""
    img = SCENE.astype(np.int16).copy()
    for x1, y1, x2, y2 in objects:
        img[int(y1):int(y2), int(x1):int(x2)] = 250
    img += np.random.default_rng(seed).integers(-noise, noise + 1, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def human(sid="l", t=100.0, cam="c1", boxes=(CAR,), classes=(3,), image=None) -> Frame:
    return Frame(sid, cam, t, view(*boxes) if image is None else image, np.array(boxes, np.float32).reshape(-1, 4),
                 np.array(classes, np.int64))


def held(sid="u", t=103.0, cam="c1", image=None, boxes=(), classes=(), scores=()) -> Frame:
    return Frame(sid, cam, t, view(CAR, seed=1) if image is None else image,
                 np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64), np.array(scores, np.float32))


def test_a_parked_object_the_model_missed_takes_the_human_box():
    (p,) = propagate([human()], [held()])
    assert p.sample_id == "u" and np.allclose(p.boxes, [CAR]) and p.classes.tolist() == [3]


def test_a_moved_object_the_model_found_takes_the_model_s_box_and_the_labeler_s_class():
    moved = CAR + [8, 0, 8, 0]
    u = held(image=view(moved, seed=1), boxes=[moved + 1], classes=[5], scores=[0.4])
    (p,) = propagate([human()], [u])
    assert np.allclose(p.boxes, [moved + 1]) and p.classes.tolist() == [3]  # the labeler's class wins


def test_a_moved_object_the_model_lost_labels_nothing():
    assert propagate([human()], [held(image=view(CAR + [30, 0, 30, 0], seed=1))]) == []


def test_something_confident_the_labeler_did_not_box_labels_nothing_a_faint_ghost_does_not_matter():
    other = np.array([100, 60, 140, 100], np.float32)
    assert propagate([human()], [held(boxes=[other], classes=[1], scores=[0.9])]) == []
    (p,) = propagate([human()], [held(boxes=[other], classes=[1], scores=[0.2])])
    assert np.allclose(p.boxes, [CAR])


def test_an_empty_view_labels_an_empty_neighbour_as_empty():
    empty = human(boxes=(), classes=(), image=view())
    (p,) = propagate([empty], [held(image=view(seed=1))])
    assert p.boxes.shape == (0, 4) and p.classes.shape == (0,)


def test_only_frames_of_the_same_camera_within_the_window_and_never_a_labeled_one():
    far = held("far", t=100.0 + WINDOW_S + 1)
    other = held("other", cam="c2")
    again = held("l")  # the labeled frame itself, offered back
    assert propagate([human()], [far, other, again]) == []


boxes = st.tuples(st.integers(0, 100), st.integers(0, 60), st.integers(12, 50), st.integers(12, 50)).map(
    lambda b: np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]], np.float32))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["c1", "c2"]), st.floats(0, 60), st.lists(boxes, max_size=3)),
                min_size=1, max_size=4),
       st.lists(st.tuples(st.sampled_from(["c1", "c2"]), st.floats(0, 60), st.lists(boxes, max_size=3),
                          st.floats(0, 1)), max_size=6))
def test_pseudo_labels_copy_a_near_labeled_frame_s_classes_and_come_only_from_the_pool(lab, pool):
    labeled = [Frame(f"l{i}", cam, t, view(*bs), np.array(bs, np.float32).reshape(-1, 4),
                     np.arange(len(bs), dtype=np.int64)) for i, (cam, t, bs) in enumerate(lab)]
    held_ = [Frame(f"u{i}", cam, t, view(*bs, seed=i + 1), np.array(bs, np.float32).reshape(-1, 4),
                   np.zeros(len(bs), np.int64), np.full(len(bs), s, np.float32)) for i, (cam, t, bs, s) in enumerate(pool)]
    out = propagate(labeled, held_)
    ids = [p.sample_id for p in out]
    assert len(ids) == len(set(ids)) and set(ids) <= {u.sample_id for u in held_}
    for p in out:
        u = next(u for u in held_ if u.sample_id == p.sample_id)
        near = [f for f in labeled if f.camera_id == u.camera_id and abs(f.captured_at - u.captured_at) <= WINDOW_S]
        src = min(near, key=lambda f: (abs(f.captured_at - u.captured_at), f.sample_id))
        assert p.classes.tolist() == src.classes.tolist() and p.boxes.shape == (len(src.classes), 4)
        assert p.image is u.image and p.camera_id == u.camera_id
