"""The deployment side (no torch): the `Backend` interface with its ONNX Runtime and TensorRT
backends, upscaling of files and folders, latency timing and benchmarks."""
