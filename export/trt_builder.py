"""TensorRT calls that make engines: build from an ONNX (one logger, runtime and timing cache
per command) and refit an engine with the weights of another export. No torch; TensorRT is
imported when one of them runs, so the plan's checks (adaptsr.export.trt_plan) work without it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from adaptsr.core.contracts import EngineProfile
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_output
from adaptsr.core.lazy import lazy_import
from adaptsr.export.trt_inspect import engine_layers

if TYPE_CHECKING:  # the real API's types (tensorrt-stubs); TensorRT itself loads lazily
    import tensorrt as trt
else:
    trt = lazy_import("tensorrt")

STRONGLY_TYPED = "strongly-typed"  # every layer in the type the ONNX gives it (10.x and 11.x)
FP16_FLAG = "fp16-flag"  # fp32 ONNX + BuilderFlag.FP16, fp32 constraints on sensitive layers
# Layers the fp16-flag route pins to fp32: normalisations and softmax overflow or lose their
# mean/variance in fp16 (TensorRT itself warns about LayerNorm in fp16), reductions feed them.
FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE")


@dataclass(frozen=True)
class Built:
    """A serialized engine and the facts of its build."""

    plan: bytes
    seconds: float
    fp32_layers: int  # layers the fp16-flag route pinned to fp32


class Builder:
    """One logger, runtime and timing cache for the builds of one command."""

    def __init__(self, workspace_gib: float, timing_cache: str | Path | None):
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.workspace = int(workspace_gib * (1 << 30))
        self.cache_path = Path(timing_cache) if timing_cache else None
        self.cache: trt.ITimingCache | None = None

    def _attach_cache(self, config) -> None:
        if self.cache is None:  # the first build reads the file (or starts an empty cache)
            path = self.cache_path
            data = path.read_bytes() if path is not None and path.exists() else b""
            try:
                self.cache = config.create_timing_cache(data)
            except Exception as e:  # TensorRT raises untyped errors for damaged caches
                raise UserError(f"cannot read timing cache {path}: {e}".splitlines()[0]) from e
        if not config.set_timing_cache(self.cache, False):  # False: made by another TRT/GPU
            raise UserError(
                f"timing cache {self.cache_path} does not fit this TensorRT version or GPU: "
                "delete it or name another file"
            )

    def build(self, onnx_path, route: str, profile: EngineProfile, refittable: bool) -> Built:
        """Serialize an engine; returns its plan bytes and build facts."""
        builder = trt.Builder(self.logger)
        strong = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(strong if route == STRONGLY_TYPED else 0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            first = errors[0].strip().splitlines()[0] if errors else "unknown error"
            raise UserError(f"TensorRT cannot parse {onnx_path}: {first}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace)
        # Layer details (types, precisions, tactics) for the inspector; no effect on speed.
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if refittable:
            # REFIT, not REFIT_IDENTICAL: that one lets TensorRT assume the refit weights equal
            # the build's ("different weights yield unpredictable behavior"), and a refit here
            # brings another adapter's. REFIT's known fault (a GEMM bias dropped) is caught by
            # the verification trt_plan makes mandatory for refittable and refitted engines.
            config.set_flag(trt.BuilderFlag.REFIT)
        fp32_layers = 0
        if route == FP16_FLAG:
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            fp32_layers = _pin_fp32(network)
        trt_profile = builder.create_optimization_profile()
        shapes = (trt.Dims(list(s)) for s in (profile.min, profile.opt, profile.max))
        trt_profile.set_shape(profile.name, *shapes)
        config.add_optimization_profile(trt_profile)
        self._attach_cache(config)  # one cache (in memory without --timing-cache) for every build
        start = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        seconds = time.perf_counter() - start
        if serialized is None:
            raise UserError("TensorRT could not build the engine (its log above says why)")
        return Built(bytes(serialized), seconds, fp32_layers)

    def layers(self, plan: bytes) -> list[dict]:
        engine = trt.Runtime(self.logger).deserialize_cuda_engine(plan)
        if engine is None:
            raise UserError("TensorRT cannot load the engine it just built")
        return engine_layers(engine)

    def save_cache(self) -> None:
        if self.cache_path is not None and self.cache is not None:
            with atomic_output(self.cache_path, force=True) as tmp:
                tmp.write_bytes(bytes(self.cache.serialize()))


def _pin_fp32(network: trt.INetworkDefinition) -> int:
    """fp16-flag route: normalisation, softmax and reduction layers compute and output fp32."""
    wanted = {getattr(trt.LayerType, name) for name in FP32_LAYER_TYPES}
    floats = (trt.float32, trt.float16)
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type not in wanted:
            continue
        outputs = range(layer.num_outputs)
        if not all(layer.get_output(j).dtype in floats for j in outputs):
            continue  # a shape computation on integers has no precision to keep
        layer.precision = trt.float32
        for j in outputs:
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def refit_plan(base_engine: Path, onnx_path) -> tuple[bytes, float]:
    """The plan of `base_engine` with the weights of `onnx_path` (TensorRT's ONNX parser
    refitter maps every initializer to the engine weights it became), and the seconds it took."""
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(base_engine.read_bytes())
    if engine is None:
        raise UserError(f"cannot load engine {base_engine}: corrupt (rebuild it)")
    if not engine.refittable:
        raise UserError(f"{base_engine} is not refittable: rebuild it with --refittable")
    start = time.perf_counter()
    refitter = trt.Refitter(engine, logger)
    parser = trt.OnnxParserRefitter(refitter, logger)
    if not parser.refit_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        first = errors[0].strip().splitlines()[0] if errors else "unknown error"
        raise UserError(f"TensorRT cannot refit from {onnx_path}: {first}")
    missing = refitter.get_missing_weights()
    if missing:
        raise UserError(
            f"{onnx_path} lacks {len(missing)} weights of the engine (first: {missing[0]}): "
            "not an export of the engine's model"
        )
    if not refitter.refit_cuda_engine():
        raise UserError(f"TensorRT could not refit {base_engine} (its log above says why)")
    seconds = time.perf_counter() - start
    serialized = engine.serialize()
    if serialized is None:
        raise UserError("TensorRT could not serialize the refitted engine")
    return bytes(serialized), seconds
