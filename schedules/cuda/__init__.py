"""Schedule rules for the cuda target. Ours: attention (split-key decode, flash prefill),
tensor-core GEMMs for linears over T rows with bf16 weights, a GEMV with 16-byte weight
loads for one-row linears, KV-cache appends (with Qwen3's key norm and rotary fused), the
sparse MLPs' routed experts (`moe.py`), the gated DeltaNet's recurrences
(`linear_attention.py`), and the sampler. The baseline
for everything else is TVM's dlight rule list (GEMV for decode, Matmul for prefill,
reductions, then a thread-binding fallback), tried in order on each kernel after the
op-specific rules. Prefill attention over a bf16 cache runs on tensor cores (`flash_tc.py`),
over an fp32 one on CUDA cores. `limits.py` checks every kernel's shared memory (and, for a
decode step captured by a CUDA graph, that no kernel takes TVM workspace) at compile time."""
from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl

from ...targets import TargetDesc
from ..registry import register, register_fallback
from .attention import cuda_append_attention, cuda_attention
from .gemv import cuda_gemv
from .kv_append import kv_append_rows
from .linear_attention import cuda_conv1d, cuda_delta_rule
from .matmul import tensor_core_linear
from .moe import cuda_moe
from .sample import sample_block

_DLIGHT = (dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.LowBatchGEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
           dl.gpu.RMSNorm(), dl.gpu.Fallback())


def dlight_baseline(func: tirx.PrimFunc, target: TargetDesc) -> s_tir.Schedule | None:
    tgt = target.to_tvm()
    with tgt:
        for rule in _DLIGHT:
            try:
                sch = rule.apply(func, tgt, False)
            except Exception:  # noqa: BLE001  (a rule that does not understand this kernel)
                continue
            if isinstance(sch, list):
                sch = sch[0] if sch else None
            if sch is not None:
                return sch
    return None


register("cuda", "attention", cuda_attention)
register("cuda", "cache_attention", cuda_attention)
register("cuda", "append_attention", cuda_append_attention)
register("cuda", "kv_append", kv_append_rows)
register("cuda", "linear", tensor_core_linear)
register("cuda", "linear", cuda_gemv)
register("cuda", "moe_experts", cuda_moe)
register("cuda", "causal_conv1d", cuda_conv1d)
register("cuda", "gated_delta_rule", cuda_delta_rule)
register("cuda", "sample_token", sample_block)
register_fallback("cuda", dlight_baseline)
