"""`edgeloop bench agent` with a tiny ONNX model and a few frames: the report's keys and their coherence,
and the usage errors. Timing is never asserted (a tiny run on a shared machine is noise)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgeloop.bench import bench
from edgeloop.shared.manifest import InputSpec, ModelManifest

KEYS = {"model", "bare_fps", "pipeline_fps", "ratio", "sampling_us_per_frame", "outbox_inserts_per_s", "rss_mb",
        "bare_rss_mb", "frames", "threads", "repeats", "flops", "targets", "runs"}


def tiny_model(folder):
    """A 10-class classifier on 32 x 32 input: global average pool -> 3-d embedding -> linear. No torch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(3, 10)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(10, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1),
         helper.make_node("Gemm", ["embedding", "w", "b"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
         helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 3])],
        initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx_path, manifest_path = folder / "tiny.onnx", folder / "tiny.json"
    onnx_path.write_bytes(model.SerializeToString())
    manifest = ModelManifest(version="tiny-1", task="classification", input=InputSpec(name="input", height=32, width=32),
                             outputs={"logits": "logits", "embedding": "embedding"},
                             labels=tuple(f"class-{i}" for i in range(10)))
    manifest_path.write_bytes(manifest.to_json())
    return onnx_path, manifest_path


def test_the_json_has_every_figure_and_they_agree(tmp_path):
    model, manifest = tiny_model(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(bench, ["agent", "--out", str(out), "--frames", "20", "--repeats", "1",
                                        "--model", str(model), "--manifest", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "pipeline/bare" in result.output
    report = json.loads((out / "agent.json").read_text())
    assert KEYS <= set(report)
    assert report["model"] == "tiny-1" and report["flops"] is None  # unknown for a model given by path
    assert (report["frames"], report["threads"], report["repeats"]) == (20, 1, 1)
    assert report["bare_fps"] > 0 and report["pipeline_fps"] > 0
    run = report["runs"][0]
    assert run["bare"]["frames"] == run["pipeline"]["frames"] == 20  # the same frames in both arms
    assert report["ratio"] == pytest.approx(report["pipeline_fps"] / report["bare_fps"])
    assert (report["bare_fps"], report["pipeline_fps"]) == (run["bare"]["fps"], run["pipeline"]["fps"])
    assert report["sampling_us_per_frame"] > 0 and report["outbox_inserts_per_s"] > 0
    # The pipeline's frame time split: the model's runs happen one after another inside the run.
    f = report["frame_ms"]
    assert f["pipeline"] == pytest.approx(1e3 / report["pipeline_fps"]) and f["bare"] == pytest.approx(1e3 / report["bare_fps"])
    assert 0 < f["pipeline_model"] <= f["pipeline"] and f["pipeline_other"] == pytest.approx(f["pipeline"] - f["pipeline_model"])
    assert "a frame = the model" in result.output
    assert report["rss_mb"] > 0 and report["bare_rss_mb"] > 0
    # An arm's memory is its own (the runner's process is not counted in it), and a process that
    # loads python, numpy and onnxruntime holds tens of MB.
    assert 20 < report["bare_rss_mb"] < 1000 and 20 < report["rss_mb"] < 1000
    t = report["targets"]
    assert t["ratio"]["met"] == (report["ratio"] >= t["ratio"]["min"])
    assert t["rss"]["value"] == pytest.approx(report["rss_mb"] / report["bare_rss_mb"])
    assert t["rss"]["met"] == (t["rss"]["value"] <= t["rss"]["max_x_bare"])
    assert run["pipeline"]["in_outbox"] >= 1  # windows closed and committed during or at the end of the run
    assert not list(out.glob("agent-work-*"))  # outbox files cleaned up


def test_model_without_manifest_is_a_usage_error(tmp_path):
    model, _ = tiny_model(tmp_path)
    result = CliRunner().invoke(bench, ["agent", "--out", str(tmp_path / "out"), "--model", str(model)])
    assert result.exit_code == 2
    assert "--model and --manifest go together" in result.output
    assert not (tmp_path / "out" / "agent.json").exists()


def test_a_bad_manifest_is_named(tmp_path):
    model, manifest = tiny_model(tmp_path)
    manifest.write_text(json.dumps({"version": "x"}))
    result = CliRunner().invoke(bench, ["agent", "--out", str(tmp_path / "out"), "--model", str(model),
                                        "--manifest", str(manifest)])
    assert result.exit_code == 2 and "--manifest" in result.output and "manifest.task" in result.output


def test_without_torch_the_default_model_asks_for_model_or_the_hub_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "edgeloop.bench.mobilenet", raising=False)
    result = CliRunner().invoke(bench, ["agent", "--out", str(tmp_path / "out"), "--frames", "2"])
    assert result.exit_code == 2, result.output
    assert "--model MODEL.onnx --manifest M.json" in result.output and "edgeloop[hub]" in result.output


def test_the_default_model_is_mobilenetv2_sized():
    pytest.importorskip("torch")
    from edgeloop.bench import mobilenet

    net = mobilenet.build()
    assert 295e6 < mobilenet.count_macs(net) < 305e6  # the paper's "300 M multiply-adds"
    assert 3.4e6 < sum(p.numel() for p in net.parameters()) < 3.6e6


def test_the_default_model_exports_for_the_device(tmp_path):
    pytest.importorskip("torch")
    from edgeloop.bench import mobilenet
    from edgeloop.shared.runtime import ModelRuntime

    onnx_path, manifest_path = mobilenet.export(tmp_path)
    manifest = ModelManifest.from_json(manifest_path.read_bytes())
    assert manifest.version == mobilenet.VERSION and manifest.num_classes == 1000
    assert (manifest.input.height, manifest.input.width, manifest.input.layout) == (224, 224, "NCHW")
    pred = ModelRuntime.load(onnx_path.read_bytes(), manifest).predict(np.zeros((480, 640, 3), np.uint8))
    assert pred.probs.shape == (1000,) and pred.embedding.shape == (1280,)
    assert manifest.metrics["onnx_parity_rel_diff"] <= mobilenet.PARITY_TOLERANCE
