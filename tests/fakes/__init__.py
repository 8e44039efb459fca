"""Stand-ins the tests use where the real thing needs a GPU (TensorRT, the CUDA runtime) and
small real files made the way adaptsr makes them (an exported ONNX)."""
