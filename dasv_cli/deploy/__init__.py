"""dasv.deploy: the embedding extractor exported to ONNX, and the onnxruntime extractor that runs it."""
