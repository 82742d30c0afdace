"""A memory-mapped safetensors reader with errors that name the file and tensor.

Format: 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets: [begin, end]}}, then the raw data. bf16 maps to ml_dtypes.bfloat16.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..ir import np_dtype

_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
           "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


class WeightError(ValueError):
    """A checkpoint that does not fit the model: missing, unexpected or misshapen tensors, bad files."""


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def read_header(path: Path) -> dict[str, TensorInfo]:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise WeightError(f"{path}: header length {n} exceeds the file size {size}; truncated?")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise WeightError(f"{path}: malformed safetensors header ({e})") from None
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] not in _DTYPES:
            raise WeightError(f"{path}: tensor {name!r} has unsupported dtype {meta['dtype']}")
        begin, end = meta["data_offsets"]
        info = TensorInfo(path, _DTYPES[meta["dtype"]], tuple(meta["shape"]), 8 + n + begin, 8 + n + end)
        expected = int(np.prod(info.shape, dtype=np.int64)) * _itemsize(info.dtype)
        if end - begin != expected:
            raise WeightError(f"{path}: tensor {name!r} spans {end - begin} bytes but {info.shape} "
                              f"{info.dtype} needs {expected}")
        if info.end > size:
            raise WeightError(f"{path}: tensor {name!r} ends at byte {info.end} past the file end {size}; "
                              "the file is truncated")
        out[name] = info
    return out


def _itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


class SafetensorsFiles:
    """All tensors of one or more safetensors files, loaded lazily from memory maps."""

    def __init__(self, files: list[Path]) -> None:
        self.tensors: dict[str, TensorInfo] = {}
        for f in files:
            for name, info in read_header(f).items():
                if name in self.tensors:
                    raise WeightError(f"tensor {name!r} appears in both {self.tensors[name].file} and {f}")
                self.tensors[name] = info
        self._maps: dict[Path, mmap.mmap] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def release(self, name: str) -> None:
        """Drop the pages of ``name`` from this process (they stay in the page cache), so a
        loader that copied the tensor does not hold the file mapped twice over in RSS."""
        info = self.tensors[name]
        mm = self._maps.get(info.file)
        if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = info.begin - info.begin % mmap.PAGESIZE
        try:
            mm.madvise(mmap.MADV_DONTNEED, start, info.end - start)
        except OSError:
            pass

    def get(self, name: str) -> np.ndarray:
        """A read-only array backed by the file's memory map (no copy)."""
        info = self.tensors[name]
        if info.file not in self._maps:
            with open(info.file, "rb") as f:
                self._maps[info.file] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        dt = np_dtype(info.dtype) if info.dtype in ("bfloat16", "float16", "float32") else np.dtype(info.dtype)
        return np.frombuffer(self._maps[info.file], dtype=dt, count=int(np.prod(info.shape, dtype=np.int64)),
                             offset=info.begin).reshape(info.shape)
