"""Weight storage for streaming: one anonymous mapping, advised to use transparent huge
pages, holding every parameter at a 64-byte aligned offset. The loader writes each weight
straight into its slot, and TVM tensors are zero-copy views (DLPack) of it, so weights sit
in memory once and the GEMV streams through few TLB entries."""
from __future__ import annotations

import mmap
from typing import Any

import numpy as np

from ..ir import Node, np_dtype

ALIGN = 64


class Arena:
    def __init__(self, params: list[Node]) -> None:
        self._slots: dict[str, tuple[int, tuple[int, ...], np.dtype]] = {}
        size = 0
        for p in params:
            dt = np_dtype(p.dtype)
            self._slots[p.name] = (size, tuple(int(d) for d in p.shape), dt)
            size += -(-int(np.prod(p.shape, dtype=np.int64)) * dt.itemsize // ALIGN) * ALIGN
        self.nbytes = size
        self._buf = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):
            try:
                self._buf.madvise(mmap.MADV_HUGEPAGE)
            except OSError:
                pass

    def array(self, p: Node) -> np.ndarray:
        """The slot for ``p`` as a writable numpy array of its shape and dtype."""
        off, shape, dt = self._slots[p.name]
        return np.frombuffer(self._buf, dtype=dt, count=int(np.prod(shape, dtype=np.int64)), offset=off).reshape(shape)

    def tensors(self, rt: Any) -> dict[str, Any]:
        """Zero-copy TVM CPU tensors over every slot (bfloat16 travels through DLPack as uint16)."""
        out = {}
        for name, (off, shape, dt) in self._slots.items():
            bits = dt if dt.kind in "fiu" and dt.name != "bfloat16" else np.dtype(f"u{dt.itemsize}")
            view = np.frombuffer(self._buf, dtype=bits, count=int(np.prod(shape, dtype=np.int64)), offset=off)
            t = rt.from_dlpack(view.reshape(shape))
            out[name] = t if bits == dt else t._create_view(shape, dt.name)
        return out
