"""Elementwise activations on CPU (silu, sigmoid, gelu_tanh, and swiglu's silu(g) * u): rows
across cores, each row in SIMD vectors.

Their TE kernels' sigmoid and tanh lower to a libm expf call per element, which LLVM cannot
vectorize: swiglu took 3.4 ms per 256 x 3072 Qwen3-0.6B prefill chunk here (7% of the chunk),
gelu_tanh over Qwen3-VL-2B's 784 x 4096 MLP activations 18 ms per vision layer. These
replacements write each with the vectorizing `fast_exp` (relative error ~1e-7):
silu(x) = x / (1 + exp(-x)), sigmoid(x) = 1 / (1 + exp(-x)), gelu_tanh(x) =
x * (1 + tanh(u)) / 2 = x / (1 + exp(-2u)) with u = sqrt(2/pi) (x + 0.044715 x^3), and
swiglu out[i, c] = silu(x[i, c]) * x[i, c + F].
"""
from __future__ import annotations

import math
from typing import Callable

from tvm import tirx
from tvm.tirx.buffer import is_buffer_var

from ...targets import TargetDesc
from ..registry import OP_KIND_ATTR
from .flash_attention import fast_exp

F32 = "float32"
ROWS = 4  # rows per task when the row count is symbolic


def _one(v: float) -> tirx.PrimExpr:
    return tirx.const(v, F32)


def _silu(x: tirx.PrimExpr) -> tirx.PrimExpr:
    return x / (_one(1) + fast_exp(-x))


FORMULAS: dict[str, Callable[[tirx.PrimExpr], tirx.PrimExpr]] = {
    "silu": _silu,
    "sigmoid": lambda x: _one(1) / (_one(1) + fast_exp(-x)),
    "gelu_tanh": lambda x: x / (_one(1) + fast_exp(_one(-2 * math.sqrt(2 / math.pi)) * (x + _one(0.044715) * x * x * x))),
}


def _buffers(func: tirx.PrimFunc) -> list | None:
    """(x, out), both 2-D with a static row width, when those are the PrimFunc's only params."""
    buffers = [p for p in func.params if is_buffer_var(p)]
    if len(buffers) != 2 or len(buffers) != len(func.params):
        return None
    if any(len(b.shape) != 2 or not isinstance(b.shape[1], tirx.IntImm) for b in buffers):
        return None
    return buffers


def _lanes(width: int, target: TargetDesc) -> int:
    return next(v for v in (target.vector_lanes, 8, 4, 2, 1) if width % v == 0)


def activation_rows(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc | None:
    op = str(func.attrs[OP_KIND_ATTR]) if func.attrs is not None and OP_KIND_ATTR in func.attrs else ""
    buffers = _buffers(func)
    if op not in FORMULAS or buffers is None or isinstance(buffers[0].shape[0], tirx.IntImm):
        return None
    x, out = buffers
    c, formula = int(x.shape[1]), FORMULAS[op]
    return row_kernel(lambda x, i, j: formula(tirx.Cast(F32, x[i, j])), x, out, _lanes(c, target))


def swiglu_rows(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc | None:
    buffers = _buffers(func)
    if buffers is None:
        return None
    x, out = buffers
    f = int(out.shape[1])
    return row_kernel(lambda x, i, j: _silu(tirx.Cast(F32, x[i, j])) * tirx.Cast(F32, x[i, f + j]), x, out,
                      _lanes(f, target))


def row_kernel(element: Callable, x: tirx.Buffer, out: tirx.Buffer, lanes: int) -> tirx.PrimFunc:
    """out[i, j] = element(x, i, j) (an fp32 expression, cast to out's dtype): for a static
    row count one task per row, for a symbolic one a task per ROWS rows; columns in SIMD
    vectors of ``lanes``. x and out keep their static widths."""
    from tvm.script import tirx as T

    xw, w, xdt, odt = int(x.shape[1]), int(out.shape[1]), x.dtype, out.dtype

    @T.macro
    def row(x, out, i):
        for c0 in range(w // lanes):
            for e in T.vectorized(lanes):
                out[i, c0 * lanes + e] = T.Cast(odt, element(x, i, c0 * lanes + e))

    if isinstance(x.shape[0], tirx.IntImm):
        t = int(x.shape[0])

        @T.prim_func(private=True, s_tir=True)
        def rows_static(x: T.Buffer((t, xw), xdt), out: T.Buffer((t, w), odt)):
            with T.sblock("root"):
                for i in T.parallel(t):
                    row(x, out, i)

        return rows_static

    @T.prim_func(private=True, s_tir=True)
    def rows(var_x: T.handle, var_out: T.handle):
        t = T.int64()
        x = T.match_buffer(var_x, (t, xw), xdt)
        out = T.match_buffer(var_out, (t, w), odt)
        with T.sblock("root"):  # (Relax's analysis of a called PrimFunc expects one)
            for ib in T.parallel((t + ROWS - 1) // ROWS):
                for ii in range(T.min(ROWS, t - ib * ROWS)):
                    row(x, out, ib * ROWS + ii)

    return rows
