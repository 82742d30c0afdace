"""Schedule rules for the llvm (CPU) target: one file per op kind, plus the generic fallback."""
from ..registry import register, register_fallback
from .activation import activation_rows, swiglu_rows
from .amx import amx_linear
from .attention import attention_rows
from .decode_attention import split_key_attention
from .flash_amx import amx_flash_attention
from .flash_attention import flash_attention
from .generic import parallel_outer
from .linear import linear_packed_rows, linear_rows
from .linear_attention import parallel_conv1d, parallel_delta_rule
from .moe import sparse_experts
from .norm import layer_norm_rows, rms_norm_rows

register("llvm", "linear", linear_rows)
register("llvm", "linear_packed", amx_linear)  # T > 1, bf16 weights, on CPUs with AMX
register("llvm", "linear_packed", linear_packed_rows)
register("llvm", "rms_norm", rms_norm_rows)
register("llvm", "moe_experts", sparse_experts)
register("llvm", "swiglu", swiglu_rows)
for _op in ("silu", "sigmoid", "gelu_tanh"):
    register("llvm", _op, activation_rows)
register("llvm", "norm_rotary", rms_norm_rows)
register("llvm", "layer_norm", layer_norm_rows)
register("llvm", "attention", amx_flash_attention)  # T > 1, bf16 k and v, on CPUs with AMX
register("llvm", "attention", flash_attention)  # T > 1
register("llvm", "attention", attention_rows)
register("llvm", "cache_attention", amx_flash_attention)
register("llvm", "cache_attention", flash_attention)
register("llvm", "cache_attention", split_key_attention)  # T = 1
register("llvm", "cache_attention", attention_rows)
register("llvm", "causal_conv1d", parallel_conv1d)
register("llvm", "gated_delta_rule", parallel_delta_rule)
register_fallback("llvm", parallel_outer)
