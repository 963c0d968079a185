"""The code every tier shares: protocol, manifests and artifacts, the ONNX runtime, sampling, config."""
