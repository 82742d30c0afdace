"""The linear-attention ops on CPU: their TIR kernels (`schedules.linear_attention`) with the
outer loop over independent lanes (conv channels, delta-rule value heads) run in parallel, and
the convolution's silu through the vectorizing `fast_exp`.
Each delta-rule head's fp32 state (Dk x Dv, 64 KiB at Qwen3-Next's 128 x 128) stays in its
core's L2 cache across the positions of a step."""
from __future__ import annotations

from tvm import tirx

from ...targets import TargetDesc
from .. import linear_attention as la
from .flash_attention import fast_exp


def parallel_conv1d(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc:
    return la.causal_conv1d(**la.conv1d_operands(func), parallel=True, exp=fast_exp)


def parallel_delta_rule(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc:
    return la.gated_delta_rule(**la.delta_rule_operands(func), parallel=True)
