"""The engine: ``compile`` a model def into an artifact, ``load`` an artifact to run it.

``compile`` needs the TVM compiler and is imported on first use; ``load`` needs only TVM's
runtime, so a deployment can run with TVM_USE_RUNTIME_LIB=1.
"""
from __future__ import annotations

import os
from typing import Any

from .manifest import ArtifactError
from .runtime import InputError, Runtime, load


def compile(md: Any, target: Any = "llvm", **kwargs: Any) -> Any:  # noqa: A001  (the public name)
    """See `engine.compile.compile`."""
    if os.environ.get("TVM_USE_RUNTIME_LIB") == "1":  # TVM's own test: only libtvm_runtime is loaded
        raise ArtifactError("compiling needs TVM's compiler, but TVM_USE_RUNTIME_LIB=1 loads only its runtime; "
                            "compile without it first (e.g. `inference-pio compile CKPT -o DIR`, or this same "
                            "command once: the artifact is then cached) and load the artifact")
    from .compiler import compile as _compile

    return _compile(md, target, **kwargs)


__all__ = ["ArtifactError", "InputError", "Runtime", "compile", "load"]
