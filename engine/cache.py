"""Compiled-artifact cache keyed by content: the same model + target + options + compiler
code compiles once; later compiles are a directory lookup.

The cache lives in $INFERENCE_PIO_CACHE, else ~/.cache/inference_pio.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from ..model_defs import ModelDef
from ..targets import TargetDesc, host_cpu_flags
from . import manifest as mf

_PKG = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    return Path(os.environ.get("INFERENCE_PIO_CACHE") or Path.home() / ".cache" / "inference_pio")


def _code_hash() -> str:
    """Hash of the compiler's own sources: a change to a pass or kernel invalidates the cache."""
    h = hashlib.sha256()
    for sub in ("ir", "model_defs", "passes", "schedules", "targets", "engine"):
        for f in sorted((_PKG / sub).rglob("*.py")):
            h.update(f.read_bytes())
    return h.hexdigest()


def _target_key(target: Any) -> str:
    """The target as the cache sees it, without importing TVM (3 s): a host "llvm" target is
    identified by this CPU's model name and SIMD flags."""
    if isinstance(target, TargetDesc):
        return json.dumps(target.tvm, sort_keys=True)
    spec = {"kind": target} if isinstance(target, str) else dict(target)
    if spec.get("kind") == "llvm" and spec.get("mcpu") in (None, "native"):
        spec = {**spec, "host": _cpu_model(), "flags": list(host_cpu_flags()), "cores": os.cpu_count()}
    return json.dumps(spec, sort_keys=True, default=str)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        return platform.processor()


def artifact_key(md: ModelDef, target: Any, options: dict[str, Any]) -> str:
    h = hashlib.sha256()
    # the encoders (Qwen3-VL's vision tower) and the config, which the runtime reads too (its image geometry)
    encoders = [f"{name}\n{g}" for name, g in sorted(md.encoders.items())]
    for part in (str(md.graph), *encoders, json.dumps(md.config_dict(), sort_keys=True, default=str), _target_key(target), json.dumps(options, sort_keys=True, default=str),
                 metadata.version("apache-tvm"), _code_hash()):
        h.update(part.encode())
        h.update(b"\0")
    return f"{md.family}-{h.hexdigest()[:24]}"


def quantize_option(quantize: str | None) -> dict[str, Any]:
    """The `compile_cached` option for ``quantize``: none when unset, so the cache keys of
    unquantized artifacts stay what they were."""
    return {"quantize": quantize} if quantize else {}


def compile_cached(md: ModelDef, target: Any = "llvm", progress: Callable[[str], None] | None = None,
                   **options: Any) -> Path:
    """The directory of a saved artifact for ``md``: from the cache, or compiled and saved there."""
    path = cache_dir() / artifact_key(md, target, options)
    if (path / mf.MANIFEST).is_file():
        return path
    from . import compile as compile_model  # the public entry: a clear error where there is no compiler

    art = compile_model(md, target, progress=progress, **options)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    art.save(tmp)
    if path.exists():  # a concurrent compile won
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, path)
    return path
