"""ONNX export of merged models (torch), and the torch-free parts that also run on a Jetson:
fp16 conversion, graph comparison, parity in ONNX Runtime, TensorRT engines."""
