"""ONNX export of merged models, fp16 conversion, TensorRT engines."""
