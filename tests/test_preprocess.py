"""preprocess: the model input a device computes for every frame, and the hub for every training image."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeloop.shared.manifest import InputSpec
from edgeloop.shared.preprocess import preprocess, resize

floats = st.floats(0.05, 300.0, allow_nan=False, allow_subnormal=False)


def by_the_formula(frames: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    """((x * scale) - mean) / std in float32, colour flipped and transposed after: the definition."""
    x = np.stack([resize(f, spec) for f in frames]).astype(np.float32)
    if spec.color == "RGB":
        x = x[..., ::-1]
    x = (x * np.float32(spec.scale) - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return x.transpose(0, 3, 1, 2) if spec.layout == "NCHW" else x


@settings(max_examples=60, deadline=None)
@given(layout=st.sampled_from(["NCHW", "NHWC"]), color=st.sampled_from(["RGB", "BGR"]),
       how=st.sampled_from(["stretch", "letterbox"]), size=st.tuples(st.integers(4, 40), st.integers(4, 40)),
       frame_hw=st.tuples(st.integers(1, 50), st.integers(1, 50)), n=st.integers(1, 3),
       scale=floats, mean=st.tuples(floats, floats, floats), std=st.tuples(floats, floats, floats),
       seed=st.integers(0, 2**16))
def test_preprocess_is_the_formula_bit_for_bit(layout, color, how, size, frame_hw, n, scale, mean, std, seed):
    spec = InputSpec("x", size[0], size[1], layout, color, scale, mean, std, how)
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (*frame_hw, 3), dtype=np.uint8) for _ in range(n)]
    got = preprocess(frames, spec)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == (n, *spec.shape[1:])
    np.testing.assert_array_equal(got, by_the_formula(frames, spec))


def test_one_frame_is_a_batch_of_one():
    spec = InputSpec("x", 8, 8)
    f = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    np.testing.assert_array_equal(preprocess(f, spec), preprocess([f], spec))
