"""adaptsr: adapt super-resolution models to real degradations with rank-aware LoRA.

The public API is imported lazily so that `import adaptsr` stays light: the deployment side
(TensorRT engines, numpy) must work on machines without torch.
"""

from importlib import import_module

from adaptsr.core.version import __version__

# public name -> module that defines it
_API = {
    "load_model": "adaptsr.adapt.models",
    "build_model": "adaptsr.adapt.models",
    "model_info": "adaptsr.adapt.models",
    "ModelInfo": "adaptsr.adapt.models",
    "BUILTIN_MODELS": "adaptsr.adapt.models",
    "PRETRAINED": "adaptsr.adapt.models",
    "DEFAULT_MODEL": "adaptsr.adapt.choices",
    "save_model": "adaptsr.adapt.models",
    "UserError": "adaptsr.core.errors",
    "open_model": "adaptsr.adapt.open",
    "ModelSpec": "adaptsr.adapt.open",
    "lora_sites": "adaptsr.adapt.lora",
    "inject_lora": "adaptsr.adapt.lora",
    "merge_lora": "adaptsr.adapt.lora",
    "save_adapter": "adaptsr.adapt.adapter_file",
    "load_adapter": "adaptsr.adapt.adapter_file",
    "AdapterFile": "adaptsr.adapt.adapter_file",
    "lora_report": "adaptsr.adapt.lora_report",
    "base_fingerprint": "adaptsr.adapt.lora",
    "Site": "adaptsr.adapt.lora",
}

__all__ = ["__version__", *_API]


def __getattr__(name):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'adaptsr' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__():
    return sorted(__all__)
