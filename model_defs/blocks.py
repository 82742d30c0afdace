"""Building blocks shared by the model families, declared in the graph IR.

Attention is declared plainly, as softmax(q k^T * scale + causal mask) v over the whole
sequence, and positions abstractly (`positional`): `passes.rewrite_attention`,
`passes.insert_rotary` and `passes.insert_kv_cache` turn these into fused and cached ops.
"""
from __future__ import annotations

from ..ir import GraphBuilder, Node


def linear(b: GraphBuilder, x: Node, name: str, n_in: int, n_out: int, dtype: str, bias: bool = False,
           **attrs) -> Node:
    """x (..., n_in) -> (..., n_out) with weight ``{name}.weight`` (n_out, n_in) (``attrs`` on it)."""
    w = b.param(f"{name}.weight", (n_out, n_in), dtype, **attrs)
    if bias:
        return b.linear(x, w, b.param(f"{name}.bias", (n_out,), dtype), bias=True)
    return b.linear(x, w)


def rms_norm(b: GraphBuilder, x: Node, name: str, eps: float, dtype: str, offset: float = 0.0) -> Node:
    """RMSNorm with weight ``{name}.weight``; ``offset`` 1 where a family stores the weight as
    its difference from 1 (Qwen3-Next: x * (1 + w))."""
    w = b.param(f"{name}.weight", (x.shape[-1],), dtype)
    return b.rms_norm(x, w, eps=eps, offset=float(offset)) if offset else b.rms_norm(x, w, eps=eps)


def layer_norm(b: GraphBuilder, x: Node, name: str, eps: float, dtype: str) -> Node:
    """LayerNorm with weight ``{name}.weight`` and bias ``{name}.bias``."""
    d = x.shape[-1]
    return b.layer_norm(x, b.param(f"{name}.weight", (d,), dtype), b.param(f"{name}.bias", (d,), dtype), eps=eps)


def plain_attention(b: GraphBuilder, q: Node, k: Node, v: Node, scale: float) -> Node:
    """Causal GQA attention written out op by op. q (T, Hq, D), k/v (T, Hkv, D) -> (T, Hq, D)."""
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k, v = b.repeat(k, axis=1, times=group), b.repeat(v, axis=1, times=group)  # (T, Hq, D)
    qt = b.transpose(q, perm=(1, 0, 2))  # (Hq, T, D)
    kt = b.transpose(k, perm=(1, 2, 0))  # (Hq, D, T)
    vt = b.transpose(v, perm=(1, 0, 2))  # (Hq, T, D)
    probs = b.softmax(b.causal_mask(b.scale(b.matmul(qt, kt), factor=scale)))  # (Hq, T, T)
    return b.transpose(b.matmul(probs, vt), perm=(1, 0, 2))  # (T, Hq, D)


def gated_mlp(b: GraphBuilder, x: Node, prefix: str, hidden: int, inter: int, dtype: str) -> Node:
    """SwiGLU: down(silu(gate(x)) * up(x))."""
    gate = linear(b, x, f"{prefix}.gate_proj", hidden, inter, dtype)
    up = linear(b, x, f"{prefix}.up_proj", hidden, inter, dtype)
    return linear(b, b.mul(b.silu(gate), up), f"{prefix}.down_proj", inter, hidden, dtype)


def expert_stacks(b: GraphBuilder, prefix: str, hidden: int, inter: int, experts: int, dtype: str) -> tuple[Node, Node]:
    """The SwiGLU experts ``{prefix}.{e}`` as two weights, stacks built from the checkpoint's
    per-expert tensors: w_in (E, 2F, H) of each expert's gate then up rows, and w_out (E, H, F)
    of its down rows."""
    ex = [f"{prefix}.{e}" for e in range(experts)]
    w_in = b.param(f"{prefix}.gate_up_proj", (experts, 2 * inter, hidden), dtype, experts=experts, axis=0,
                   concat=tuple(f"{p}.{n}_proj.weight" for p in ex for n in ("gate", "up")), splits=(inter,) * 2 * experts)
    w_out = b.param(f"{prefix}.down_proj", (experts, hidden, inter), dtype, experts=experts, axis=0,
                    concat=tuple(f"{p}.down_proj.weight" for p in ex), splits=(hidden,) * experts)
    return w_in, w_out


def sparse_moe(b: GraphBuilder, x: Node, prefix: str, hidden: int, inter: int, experts: int, top_k: int,
               normalize: bool, dtype: str) -> Node:
    """A mixture of SwiGLU experts (Qwen3-MoE's ``mlp``): the router ``{prefix}.gate`` keeps
    each token's top_k experts by softmax (`expert_stacks` for the experts' weights). The router
    keeps its dtype (``keep_dtype``: never cast or quantized), since its small errors would
    change which experts run."""
    router = linear(b, x, f"{prefix}.gate", hidden, experts, dtype, keep_dtype=True)
    gates = b.moe_gates(router, top_k=top_k, normalize=normalize)
    return b.moe_experts(x, gates, *expert_stacks(b, f"{prefix}.experts", hidden, inter, experts, dtype))
