"""A recording stand-in of the TensorRT Python API: it records the calls build_engine and
refit_engine make, with TensorRT's names (the real signatures are checked by mypy against
tensorrt-stubs, `make lint`). A "plan" is the JSON of the ONNX file it was parsed from and
whether it is refittable, so a test can read back which weights an engine holds, and run it:
`engine_runner` runs the ONNX an engine holds in ONNX Runtime, as verification runs an engine."""

import json
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort

# what adaptsr.export.tensorrt.gpu_info reports for the fake GPU
GPU = {"gpu": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7"}


class FakeTensorRT:
    """The `tensorrt` module as build_engine and refit_engine use it. Every call that matters
    lands in `calls` as a tuple; the keyword arguments make a step fail or shape what it sees."""

    def __init__(self, version="10.13.0.35", parse_ok=True, build_ok=True, cache_ok=True,
                 layers=None, network=(), missing=(), refit_ok=True,
                 refit_applies=True):  # fmt: skip
        self.__version__ = version
        self.parse_ok, self.build_ok, self.cache_ok = parse_ok, build_ok, cache_ok
        self.refit_ok, self.missing = refit_ok, list(missing)
        self.refit_applies = refit_applies  # False: a refit that reports success, changes nothing
        self.network = network  # (layer type, output dtype) of each layer the parser makes
        self.layers = layers or {}  # ONNX file name -> the inspector's layer list
        self.calls = []
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
        self.BuilderFlag = types.SimpleNamespace(
            FP16="FP16",
            OBEY_PRECISION_CONSTRAINTS="OBEY",
            REFIT="REFIT",
            REFIT_IDENTICAL="REFIT_IDENTICAL",
        )
        self.ProfilingVerbosity = types.SimpleNamespace(DETAILED="detailed")
        self.LayerInformationFormat = types.SimpleNamespace(JSON="json")
        self.LayerType = types.SimpleNamespace(
            NORMALIZATION="norm", SOFTMAX="softmax", REDUCE="reduce", CONVOLUTION="conv"
        )
        self.float32, self.float16, self.int32 = "f32", "f16", "i32"
        self.Dims = tuple
        # the classes adaptsr constructs itself, each bound to this fake
        for part in (Logger, Builder, OnnxParser, Runtime, Refitter, OnnxParserRefitter):
            setattr(self, part.__name__, type(part.__name__, (part,), {"fake": self}))


class Logger:
    WARNING = 2

    def __init__(self, level):
        pass


class Layer:
    def __init__(self, fake, i, kind, dtype):
        self.fake, self.i, self.type, self.num_outputs, self.dtype = fake, i, kind, 1, dtype

    def get_output(self, j):
        return types.SimpleNamespace(dtype=self.dtype)

    def set_output_type(self, j, dtype):
        self.fake.calls.append(("output_type", self.i, j, dtype))

    def __setattr__(self, key, value):
        if key == "precision":
            self.fake.calls.append(("precision", self.i, value))
        object.__setattr__(self, key, value)


class Network:
    def __init__(self, fake, flags):
        self.flags, self.onnx = flags, None
        self.layers = [Layer(fake, i, k, d) for i, (k, d) in enumerate(fake.network)]

    num_layers = property(lambda self: len(self.layers))

    def get_layer(self, i):
        return self.layers[i]


class Cache:
    def serialize(self):
        return b"new-cache"


class Config:
    def __init__(self, fake):
        self.fake, self.profiling_verbosity = fake, None

    def set_memory_pool_limit(self, pool, size):
        self.fake.calls.append(("workspace", pool, size))

    def set_flag(self, flag):
        self.fake.calls.append(("flag", flag))

    def add_optimization_profile(self, p):
        self.fake.calls.append(("add_profile",))

    def create_timing_cache(self, data):
        self.fake.calls.append(("timing_cache", data))
        return Cache()

    def set_timing_cache(self, cache, ignore_mismatch):
        self.fake.calls.append(("set_timing_cache", id(cache), ignore_mismatch))
        return self.fake.cache_ok  # False: the cache was made by another TensorRT or GPU


class Profile:
    def __init__(self, fake):
        self.fake = fake

    def set_shape(self, name, lo, opt, hi):
        self.fake.calls.append(("profile", name, lo, opt, hi))


class Builder:
    fake: FakeTensorRT

    def __init__(self, logger):
        pass

    def create_network(self, flags):
        self.fake.calls.append(("network", flags))
        return Network(self.fake, flags)

    def create_builder_config(self):
        return Config(self.fake)

    def create_optimization_profile(self):
        return Profile(self.fake)

    def build_serialized_network(self, network, config):
        rec = self.fake.calls
        rec.append(("build", network.onnx, config.profiling_verbosity))
        refit = {("flag", "REFIT"), ("flag", "REFIT_IDENTICAL")} & set(rec)
        plan = {"onnx": network.onnx, "refittable": bool(refit)}
        return json.dumps(plan).encode() if self.fake.build_ok else None


class OnnxParser:
    fake: FakeTensorRT
    num_errors = 1

    def __init__(self, network, logger):
        self.network = network

    def parse_from_file(self, path):
        self.fake.calls.append(("parse", path))
        self.network.onnx = Path(path).name
        return self.fake.parse_ok

    def get_error(self, i):
        return "In node 0 (Conv): unsupported layout"


class Engine:
    def __init__(self, fake, plan):
        self.fake, self.plan = fake, plan

    refittable = property(lambda self: self.plan["refittable"])

    def create_engine_inspector(self):
        layers = self.fake.layers.get(self.plan["onnx"], [])
        info = json.dumps({"Layers": layers})
        return types.SimpleNamespace(get_engine_information=lambda fmt: info)

    def serialize(self):
        return json.dumps(self.plan).encode()


class Runtime:
    fake: FakeTensorRT

    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, data):
        self.fake.calls.append(("deserialize",))
        return Engine(self.fake, json.loads(data))


class Refitter:
    fake: FakeTensorRT

    def __init__(self, engine, logger):
        self.engine = engine

    def get_missing_weights(self):
        return list(self.fake.missing)

    def refit_cuda_engine(self):
        self.fake.calls.append(("refit",))
        return self.fake.refit_ok


class OnnxParserRefitter:
    fake: FakeTensorRT
    num_errors = 1

    def __init__(self, refitter, logger):
        self.refitter = refitter

    def refit_from_file(self, path):
        self.fake.calls.append(("refit_from", path))
        if self.fake.refit_applies:
            self.refitter.engine.plan["onnx"] = Path(path).name
        return self.fake.parse_ok

    def get_error(self, i):
        return "weights 'w' have another shape"


def engine_runner(engine_file):
    """The run of a fake engine: the ONNX its plan names (beside the engine) in ONNX Runtime."""
    plan = json.loads(Path(engine_file).read_bytes())
    sess = ort.InferenceSession(
        str(Path(engine_file).parent / plan["onnx"]), providers=["CPUExecutionProvider"]
    )
    name = sess.get_inputs()[0].name
    return lambda x: np.asarray(sess.run(None, {name: x})[0])
