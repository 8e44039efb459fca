"""One inference interface (`Backend`) with its ONNX Runtime and TensorRT implementations.

Every backend takes and returns float32 NCHW numpy arrays in [0, 1] and states its scale and
the input sizes it accepts (a `SizeRule`). Nothing here imports torch: onnxruntime, tensorrt and
the CUDA runtime are imported by the backend that needs them, so a TensorRT deployment machine
runs `adapt upscale --engine` with only TensorRT and numpy. The PyTorch backend implements the
same interface next to the models (`adaptsr.adapt.backend`); `adaptsr.adapt.open.open_model`
builds whichever a spec names. Backends only run: opening and checking happen once, there.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from adaptsr.core.artifacts import (
    META_PRECISION,
    META_SCALE,
    check_engine_info,
    engine_metadata,
    positive_int,
    read_engine_info,
    size_metadata,
)
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import check_readable
from adaptsr.core.lazy import lazy_import
from adaptsr.core.tiling import SizeRule, round_up
from adaptsr.serve import cudart

# the runtimes: imported by the backend that runs on them (import_tensorrt checks TensorRT)
ort = lazy_import("onnxruntime")
onnx = lazy_import("onnx")  # only to say why a graph does not load (its recorded precision)
if TYPE_CHECKING:  # the type checker reads tensorrt-stubs
    import tensorrt as trt
else:
    trt = lazy_import("tensorrt")


class Backend:
    """Base class: subclasses set the attributes below and implement `_forward`."""

    kind: str = ""
    name: str = ""
    device: str = "cpu"
    scale: int = 1
    rule: SizeRule = SizeRule()
    fixed_batch: int | None = None  # the batch dimension is static
    max_batch: int | None = None  # the largest batch accepted (an engine profile)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> (N, 3, H*s, W*s) float32, split or padded to fit the batch."""
        n = batch.shape[0]
        step = self.fixed_batch or self.max_batch or n
        outs = []
        for first in range(0, n, step):
            chunk = batch[first : first + step]
            real = chunk.shape[0]
            if self.fixed_batch and real < self.fixed_batch:  # fill a static batch with copies
                fill = np.repeat(chunk[-1:], self.fixed_batch - real, axis=0)
                chunk = np.concatenate([chunk, fill])
            outs.append(np.asarray(self._forward(chunk), dtype=np.float32)[:real])
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def sync(self) -> None:
        """Wait for queued device work (timing)."""

    def reset_peak_memory(self) -> None:
        pass

    def peak_memory_bytes(self) -> int | None:
        """Peak accelerator memory since the last reset, or None when not measurable."""
        return None

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "artifact": self.name,
            "device": self.device,
            "scale": self.scale,
            "size_rule": self.rule.describe(),
        }


def scale_from_shapes(in_shape, out_shape) -> int:
    """The integer upscaling factor between two NCHW shapes, or a clear error."""
    in_shape, out_shape = tuple(int(d) for d in in_shape), tuple(int(d) for d in out_shape)
    if len(out_shape) != 4 or out_shape[:2] != in_shape[:2]:
        raise UserError(f"model output {out_shape} does not match input {in_shape} (expected NCHW)")
    sy, ry = divmod(out_shape[2], in_shape[2])
    sx, rx = divmod(out_shape[3], in_shape[3])
    if ry or rx or sy != sx or sy < 1:
        raise UserError(f"model maps {in_shape} to {out_shape}: not an integer upscaling")
    return sy


def probe_size(rule: SizeRule) -> tuple[int, int]:
    """A small input the model accepts, to learn the scale by running it."""
    if rule.static:
        return rule.static
    side = round_up(max(rule.min_size, 16), rule.multiple_of)
    return side, side


# ---------------------------------------------------------------------------------------------
# ONNX Runtime

ORT_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def choose_providers(choice: str, available: list[str]) -> list[str]:
    """Execution providers for `choice` (auto, cpu, cuda, tensorrt) among those installed."""
    if choice == "auto":
        choice = "cuda" if "CUDAExecutionProvider" in available else "cpu"
    if choice not in ORT_PROVIDERS:
        raise UserError(f"unknown provider {choice!r} (auto, {', '.join(ORT_PROVIDERS)})")
    wanted = ORT_PROVIDERS[choice]
    if wanted[0] not in available:
        raise UserError(
            f"ONNX Runtime here has no {wanted[0]} (installed: {', '.join(available)}); "
            "install onnxruntime-gpu for cuda/tensorrt"
        )
    return [p for p in wanted if p in available]


def recorded_precision(path) -> str | None:
    """The precision `adapt export onnx` recorded in the file's metadata; None when onnx is not
    installed or cannot read it."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # no onnx on a deployment machine, or not an ONNX file: nothing to add
        return None
    return {p.key: p.value for p in model.metadata_props}.get(META_PRECISION)


def _dim(value) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


class OnnxBackend(Backend):
    """An ONNX model in ONNX Runtime (CPU, or CUDA / TensorRT execution providers)."""

    kind = "onnx"

    def __init__(self, path: str | os.PathLike, provider: str = "auto"):
        path = check_readable(path, "ONNX file")
        providers = choose_providers(provider, ort.get_available_providers())
        opts = ort.SessionOptions()
        # No spinning idle threads: two sessions timed alternately (`adapt bench --base
        # --candidate`) would otherwise steal each other's cores; alone it costs < 2% here.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Fatal only: a failing run raises, and its one-line error carries ONNX Runtime's text;
        # the logger would print it again in colour, over several lines, before that line.
        opts.log_severity_level = 4
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own untyped errors for bad files
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if recorded_precision(path) == "bf16":  # ORT names a missing Conv kernel only
                first = (
                    f"a bf16 graph, and {providers[0]} has no bf16 kernels for its ops (build a "
                    "TensorRT engine from it with adapt export trt, or export it with --fp16)"
                )
            raise UserError(f"cannot load {path} in ONNX Runtime: {first}") from e
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 4:
            raise UserError(f"{path}: expected one NCHW image input and one output")
        self.input_name = inputs[0].name
        self.in_dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        self.name = str(path)
        self.device = "cuda" if providers[0] != "CPUExecutionProvider" else "cpu"
        self.providers = providers
        n, _, h, w = (_dim(d) for d in inputs[0].shape)
        meta = self.session.get_modelmeta().custom_metadata_map or {}
        self.metadata = dict(meta)
        self.fixed_batch = n
        min_size, multiple_of = size_metadata(meta, path)
        self.rule = SizeRule(min_size, multiple_of, static=(h, w) if h and w else None)
        if META_SCALE in meta:
            self.scale = positive_int(meta[META_SCALE], META_SCALE, path)
        else:  # no metadata: run a tiny input once
            ph, pw = probe_size(self.rule)
            probe = np.zeros((n or 1, 3, ph, pw), dtype=np.float32)
            self.scale = scale_from_shapes(probe.shape, self._forward(probe).shape)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=self.in_dtype)
        try:
            return self.session.run(None, {self.input_name: x})[0]
        except Exception as e:  # ONNX Runtime raises its own untyped errors
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"ONNX Runtime failed on an input of shape {x.shape}: {first}") from e


# ---------------------------------------------------------------------------------------------
# TensorRT


def engine_size_rule(shape, profile_min=None, profile_max=None, min_size=1, multiple_of=1):
    """(SizeRule, fixed_batch, max_batch) from an engine's input shape (-1 = dynamic), its
    optimization profile's min/max shapes (needed when any dimension is dynamic) and the model's
    own size requirements (from the export metadata)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != 4:
        raise UserError(f"engine input has shape {shape}; expected NCHW")
    n, _, h, w = shape
    dynamic = any(d < 0 for d in shape)
    if dynamic and (profile_min is None or profile_max is None):
        raise UserError("engine has dynamic dimensions but no optimization profile")
    pmin = tuple(int(d) for d in profile_min) if dynamic else shape
    pmax = tuple(int(d) for d in profile_max) if dynamic else shape
    fixed_batch = n if n > 0 else None
    max_batch = None if fixed_batch else pmax[0]
    if h > 0 and w > 0:
        return SizeRule(min_size=min(h, w), static=(h, w)), fixed_batch, max_batch
    if h > 0 or w > 0:
        raise UserError(
            f"engine input {shape} has one static and one dynamic side; "
            "build it with both static or both dynamic"
        )
    least = max(pmin[2], pmin[3], min_size, 1)
    rule = SizeRule(min_size=least, multiple_of=multiple_of, max_size=(pmax[2], pmax[3]))
    return rule, fixed_batch, max_batch


def dims(d) -> tuple[int, ...]:
    """A TensorRT Dims as a tuple of ints."""
    return tuple(int(d[i]) for i in range(len(d)))


def import_tensorrt():
    """The tensorrt module (10 or newer), or a clear error. Callers then `import tensorrt`
    themselves, so the type checker sees the real module (tensorrt-stubs)."""
    try:
        import tensorrt
    except ImportError as e:
        raise UserError(
            "TensorRT is not installed: install it on the GPU machine (pip install 'adaptsr[trt]')"
        ) from e
    version = getattr(tensorrt, "__version__", None)
    if version is None:  # a namespace left by type stubs (tensorrt-stubs), not the library
        raise UserError(
            "TensorRT is not installed (only its type stubs are): install it on the GPU machine "
            "(pip install 'adaptsr[trt]')"
        )
    major = int(str(version).split(".")[0])
    if major < 10:
        raise UserError(f"TensorRT {tensorrt.__version__} is too old: strong typing needs 10+")
    return tensorrt


class TensorRTBackend(Backend):
    """A serialized TensorRT engine, run with execute_async_v3 on its own CUDA stream.

    The sidecar written by `adapt export trt` is checked first (TensorRT version, compute
    capability, engine and ONNX checksums: `adaptsr.core.artifacts.check_engine_info`). Host buffers
    are pinned and device buffers grow on demand, all through cuda-python (`serve.cudart`): no
    torch. `prepare`/`enqueue` expose the steps so that `serve.engine_timing` can time the
    copies and the compute apart, as trtexec does.
    """

    kind = "tensorrt"

    def __init__(self, path: str | os.PathLike):
        path = check_readable(path, "engine file")
        import_tensorrt()
        self.info = read_engine_info(path)
        gpu = cudart.device_info()
        if self.info is not None:
            check_engine_info(self.info, path, trt.__version__, gpu["compute_capability"])
        self.gpu = gpu
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise UserError(
                f"cannot load engine {path}: corrupt, or built by another TensorRT version "
                "or for another GPU (engines are not portable: rebuild it here with "
                "adapt export trt)"
            )
        self.engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [t for t in names if engine.get_tensor_mode(t) == trt.TensorIOMode.INPUT]
        outputs = [t for t in names if engine.get_tensor_mode(t) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{path}: expected one input and one output tensor, got {names}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.input_name)))
        self.out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.output_name)))
        shape = dims(engine.get_tensor_shape(self.input_name))
        pmin = pmax = None
        if any(d < 0 for d in shape):
            pmin, _, pmax = engine.get_tensor_profile_shape(self.input_name, 0)
        min_size, multiple_of = engine_metadata(path)
        self.rule, self.fixed_batch, self.max_batch = engine_size_rule(
            shape, pmin, pmax, min_size, multiple_of
        )
        self.name = str(path)
        self.device = "cuda"
        context = engine.create_execution_context()
        if context is None:
            raise UserError(f"TensorRT could not create an execution context for {path}")
        self.context = context
        self.stream = cudart.Stream()
        self.d_input, self.d_output = cudart.DeviceBuffer(), cudart.DeviceBuffer()
        self.h_input, self.h_output = cudart.PinnedBuffer(), cudart.PinnedBuffer()
        ph, pw = probe_size(self.rule)
        in_shape = (self.fixed_batch or 1, 3, ph, pw)
        self.scale = scale_from_shapes(in_shape, self._set_shape(in_shape))

    def _set_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if not self.context.set_input_shape(self.input_name, shape):
            raise UserError(f"engine {self.name} does not accept input shape {shape}")
        return dims(self.context.get_tensor_shape(self.output_name))

    def prepare(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Set the input shape and bind buffers; the pinned (input, output) host arrays."""
        out_shape = self._set_shape(shape)
        h_in = self.h_input.array(shape, self.in_dtype)
        h_out = self.h_output.array(out_shape, self.out_dtype)
        self.context.set_tensor_address(self.input_name, self.d_input.reserve(h_in.nbytes))
        self.context.set_tensor_address(self.output_name, self.d_output.reserve(h_out.nbytes))
        return h_in, h_out

    def upload(self, h_in: np.ndarray) -> None:
        cudart.copy_to_device(self.d_input.ptr, h_in, self.stream)

    def enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.ptr):
            raise UserError(f"TensorRT execution failed in {self.name}")

    def download(self, h_out: np.ndarray) -> None:
        cudart.copy_to_host(h_out, self.d_output.ptr, self.stream)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        h_in, h_out = self.prepare(tuple(batch.shape))
        h_in[...] = batch  # converts to the engine's input type on the way
        self.upload(h_in)
        self.enqueue()
        self.download(h_out)
        self.stream.synchronize()
        return h_out.astype(np.float32, copy=True)  # the pinned buffer is reused

    def sync(self) -> None:
        self.stream.synchronize()

    def peak_memory_bytes(self) -> int | None:
        """The engine's activation memory plus the input/output buffers."""
        activations = self.engine.device_memory_size_v2
        return int(activations + self.d_input.nbytes + self.d_output.nbytes)

    def describe(self) -> dict:
        return {**super().describe(), **self.gpu, "engine_info": self.info is not None}
