"""The linear-attention ops on CPU: their TIR kernels (`schedules.linear_attention`) with the
outer loop over independent lanes (conv channels, delta-rule value heads) run in parallel, and
the convolution's silu through the vectorizing `fast_exp`.
Each delta-rule head's fp32 state (Dk x Dv, 64 KiB at Qwen3-Next's 128 x 128) stays in its
core's L2 cache across the positions of a step."""
from __future__ import annotations

from tvm import tirx
from tvm.tirx.buffer import is_buffer_var

from ...targets import TargetDesc
from .. import linear_attention as la
from .flash_attention import fast_exp


def _buffers(func: tirx.PrimFunc) -> list:
    return [p for p in func.params if is_buffer_var(p)]


def parallel_conv1d(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc:
    x, w = _buffers(func)[:2]
    cached = len(func.params) == 5
    return la.causal_conv1d(int(x.shape[1]), int(w.shape[2]), x.dtype, w.dtype, cached, parallel=True,
                            exp=fast_exp, kv_len_tensor=cached and is_buffer_var(func.params[3]))


def parallel_delta_rule(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc:
    bufs = _buffers(func)
    q, v = bufs[0], bufs[2]
    cached = len(func.params) == 10
    return la.gated_delta_rule(int(q.shape[1]), int(v.shape[1]), int(q.shape[2]), int(v.shape[2]),
                               tuple(b.dtype for b in bufs[:7]), cached, parallel=True,
                               kv_len_tensor=cached and is_buffer_var(func.params[8]))
