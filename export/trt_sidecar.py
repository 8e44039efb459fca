"""The engine's sidecar (adaptsr.core.contracts.EngineSidecar): made the same way for a build
and a refit, and written with the engine, atomically (no torch, no TensorRT)."""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from adaptsr.core.artifacts import engine_info_path, sha256_file
from adaptsr.core.contracts import EngineSidecar, EngineVerify
from adaptsr.core.fileio import atomic_output


def relative(path, engine: Path) -> str:
    """`path` as the sidecar records it: relative to the engine's folder."""
    return os.path.relpath(Path(path).resolve(), engine.resolve().parent)


def shell_command(*parts) -> str:
    """The command that rebuilds an engine, quoted for a shell; empty parts left out."""
    return " ".join(shlex.quote(str(p)) for p in parts if p is not None and p != "")


def hw(shape: tuple[int, ...]) -> str:
    """NCHW -> 'HxW', as --min-shape and friends take it."""
    return f"{shape[2]}x{shape[3]}"


def new_sidecar(
    out: Path, onnx_path, metadata: dict[str, str], build_command: str, **settings
) -> EngineSidecar:
    """The sidecar of the engine `out` made from `onnx_path` (whose ONNX metadata it keeps);
    `settings` are the build's facts (EngineSidecar.build_settings of the engine a refit
    copies), plus refit_from/refit_seconds for a refit and zero_overhead for a proven build."""
    return EngineSidecar(
        engine=out.name,
        onnx=relative(onnx_path, out),
        onnx_sha256=sha256_file(onnx_path),
        adapter_fingerprint=metadata.get("adapter_fingerprint"),
        base_fingerprint=metadata.get("base_fingerprint"),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        build_command=build_command,
        metadata=dict(metadata),
        **settings,
    )


def write_engine(
    out: Path,
    plan: bytes,
    sidecar: EngineSidecar,
    verify_with: Callable[[Path], EngineVerify] | None,
    force: bool,
) -> EngineSidecar:
    """Engine, then sidecar, atomically; verification runs on the engine before it is named.
    Returns the sidecar as written (with the verification and the engine's checksum)."""
    with atomic_output(out, force) as tmp:
        tmp.write_bytes(plan)
        verified = verify_with(tmp) if verify_with else None
        sidecar = replace(sidecar, verify=verified, engine_sha256=sha256_file(tmp))
    with atomic_output(engine_info_path(out), force) as tmp_json:
        tmp_json.write_text(json.dumps(sidecar.to_json(), indent=2) + "\n")
    return sidecar
