"""Compiling CUDA kernels on a machine without a GPU.

TVM's CUDA codegen embeds a device binary only when its CUDA runtime library
(libtvm_runtime_cuda.so) is loaded; that library needs libcuda.so.1, which only a GPU
driver provides. Without it TVM silently stores CUDA *source*, which a runtime-only
deployment cannot load. `enable_cuda_codegen` builds (once) and loads a stub libcuda.so.1
that exports the symbols TVM links against and fails if ever called, then loads TVM's CUDA
runtime, and selects nvcc as the compiler. On a machine with a real driver the real one is
used instead.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import TargetError, cuda_source

_SYMBOLS = ("cuModuleLoadData", "cuLaunchKernelEx", "cuModuleGetFunction", "cuModuleUnload", "cuFuncSetAttribute",
            "cuGetErrorName", "cuGetErrorString", "cuDeviceGetName", "cuTensorMapEncodeTiled")
_STUB_C = "\n".join(f"int {s}(void) {{ return 999; /* CUDA_ERROR_UNKNOWN: no driver here */ }}" for s in _SYMBOLS)
_done = False


def _stub_dir() -> Path:
    base = os.environ.get("INFERENCE_PIO_CACHE") or Path.home() / ".cache" / "inference_pio"
    return Path(base) / "cuda-stub"


def _build_stub() -> Path:
    out = _stub_dir() / "libcuda.so.1"
    if out.is_file():
        return out
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise TargetError("compiling for CUDA without a GPU driver needs a C compiler (cc) for the libcuda stub")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "stub.c"
        src.write_text(_STUB_C + "\n")
        tmp_out = Path(tmp) / "libcuda.so.1"
        subprocess.run([cc, "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", str(tmp_out), str(src)],
                       check=True, capture_output=True)
        shutil.move(str(tmp_out), out)
    return out


def _has_driver() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL)
        return True
    except OSError:
        return False


def enable_cuda_codegen() -> None:
    """Make TVM emit CUDA device binaries (via nvcc) in this process, from source mended by
    `cuda_source.mend`."""
    global _done
    if _done:
        return
    if shutil.which("nvcc") is None:
        raise TargetError("compiling for CUDA needs nvcc on PATH (the CUDA toolkit); none was found")
    os.environ.setdefault("TVM_CUDA_COMPILE_MODE", "nvcc")
    if not _has_driver():
        ctypes.CDLL(str(_build_stub()), mode=ctypes.RTLD_GLOBAL)
    import tvm

    lib = Path(tvm.__file__).parent / "lib" / "libtvm_runtime_cuda.so"
    try:
        ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise TargetError(f"cannot load TVM's CUDA runtime {lib}: {e} (is libcudart.so.13 on the library path?)") from None
    cuda_source.register()
    _done = True
