"""Weight storage for streaming: one anonymous mapping, advised to use transparent huge
pages, holding every parameter at a 64-byte aligned offset. Tensors are zero-copy views
(DLPack) of it, so the GEMV streams few TLB entries. Falls back to plain TVM tensors where
madvise is unavailable."""
from __future__ import annotations

import mmap
from typing import Any

import numpy as np

ALIGN = 64


def _bits_dtype(arr: np.ndarray) -> np.dtype:
    """A DLPack-exportable dtype of the same width (bfloat16 travels as uint16)."""
    return arr.dtype if arr.dtype.kind in "fiu" and arr.dtype.name != "bfloat16" else np.dtype(f"u{arr.itemsize}")


def to_device_tensors(arrays: dict[str, np.ndarray], rt: Any, device: Any) -> dict[str, Any]:
    """TVM tensors for ``arrays`` (name -> array) on ``device``; CPU ones share one huge-page arena."""
    if device.dlpack_device_type() != 1 or not hasattr(mmap, "MADV_HUGEPAGE"):  # kDLCPU
        return {k: rt.tensor(np.ascontiguousarray(v), device) for k, v in arrays.items()}
    offsets, size = {}, 0
    for k, v in arrays.items():
        offsets[k] = size
        size += -(-v.nbytes // ALIGN) * ALIGN
    buf = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        buf.madvise(mmap.MADV_HUGEPAGE)
    except OSError:
        pass
    out = {}
    for k, v in arrays.items():
        bits = _bits_dtype(v)
        dst = np.frombuffer(buf, dtype=bits, count=v.size, offset=offsets[k]).reshape(v.shape)
        dst[...] = np.ascontiguousarray(v).view(bits)
        t = rt.from_dlpack(dst)
        out[k] = t if bits == v.dtype else t._create_view(v.shape, str(v.dtype))
    return out
