"""The hub's built-in detector: the model and its YOLOv8-style ONNX export, its training loop, COCO mAP."""

from .evaluate import EVAL_SCORE_THRESHOLD, coco_map, evaluate_detector
from .model import (DEFAULT_IMGSZ, EMBEDDING_DIM, STRIDE, DetectorNet, YoloHead, build_detector, export_detector_onnx,
                    input_spec, load_detector_state)
from .train import DetTrainResult, train_detector

__all__ = ["DEFAULT_IMGSZ", "EMBEDDING_DIM", "EVAL_SCORE_THRESHOLD", "STRIDE", "DetTrainResult", "DetectorNet",
           "YoloHead", "build_detector", "coco_map", "evaluate_detector", "export_detector_onnx", "input_spec",
           "load_detector_state", "train_detector"]
