"""Qwen3-Next (Qwen3NextForCausalLM: Qwen3-Coder-Next, Qwen3-Next-80B-A3B) as a graph.

A hybrid decoder: most layers mix tokens by linear attention (a gated DeltaNet), every
full_attention_interval-th by gated softmax attention (``layer_types`` says which); each
layer's MLP is Qwen3-MoE's sparse block plus a shared expert, or a dense SwiGLU.

- Linear attention: in_proj_qkvz and in_proj_ba project x; their rows are grouped by key head
  ([q, k, v, z] and [b, a] per head), so the graph regroups their columns. q, k and v pass a
  depthwise causal convolution (`causal_conv1d`), then `gated_delta_rule`; the result is
  normalized per value head and gated by silu(z) (`rms_norm_gated`), then out_proj.
- Gated attention: q_proj yields each head's query and an output gate side by side; the
  attention output is multiplied by sigmoid(gate) before o_proj. Queries and keys are
  normalized per head and rotated on their first partial_rotary_factor dims.
- Every RMSNorm but the gated one stores its weight as the difference from 1 (offset 1).
- MoE: y = experts(x) + sigmoid(shared_expert_gate(x)) * shared_expert(x).

`passes.insert_kv_cache` gives each linear-attention layer its state in place of a KV cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..ir import Graph, GraphBuilder, Node
from . import blocks, qwen3, qwen3_moe
from .config import ConfigError, pop_moe_fields, pop_rotary_fraction, require

LAYER_TYPES = ("linear_attention", "full_attention")


@dataclass(frozen=True)
class Qwen3NextConfig(qwen3_moe.Qwen3MoeConfig):
    shared_expert_intermediate_size: int = 0
    linear_conv_kernel_dim: int = 4
    linear_key_head_dim: int = 128
    linear_value_head_dim: int = 128
    linear_num_key_heads: int = 16
    linear_num_value_heads: int = 32
    layer_types: tuple[str, ...] = ()
    rotary_dim: int = 0  # head_dim * partial_rotary_factor

    def __post_init__(self) -> None:
        super().__post_init__()
        for f in ("linear_key_head_dim", "linear_value_head_dim", "linear_num_key_heads", "linear_num_value_heads",
                  "rotary_dim"):
            require(isinstance(getattr(self, f), int) and getattr(self, f) > 0, f, getattr(self, f), "a positive int")
        require(isinstance(self.shared_expert_intermediate_size, int) and self.shared_expert_intermediate_size >= 0,
                "shared_expert_intermediate_size", self.shared_expert_intermediate_size, "an int >= 0")
        require(isinstance(self.linear_conv_kernel_dim, int) and self.linear_conv_kernel_dim >= 2,
                "linear_conv_kernel_dim", self.linear_conv_kernel_dim, "an int >= 2")
        require(self.linear_num_value_heads % self.linear_num_key_heads == 0, "linear_num_value_heads",
                self.linear_num_value_heads, f"a multiple of linear_num_key_heads={self.linear_num_key_heads}")
        require(len(self.layer_types) == self.num_hidden_layers and all(t in LAYER_TYPES for t in self.layer_types),
                "layer_types", self.layer_types, f"{self.num_hidden_layers} entries of {LAYER_TYPES}")

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], dtype: str) -> Qwen3NextConfig:
        kw, rest = qwen3.parse_decoder(cfg, rope_theta=10000.0)
        rest.setdefault("partial_rotary_factor", 0.25)  # transformers' default for Qwen3-Next
        kw["rotary_dim"] = pop_rotary_fraction(rest, kw["head_dim"])
        kw.update(pop_moe_fields(rest, "num_experts"))
        for k in ("norm_topk_prob", "decoder_sparse_step", "shared_expert_intermediate_size", "linear_conv_kernel_dim",
                  "linear_key_head_dim", "linear_value_head_dim", "linear_num_key_heads", "linear_num_value_heads"):
            if rest.get(k) is not None:
                kw[k] = rest.pop(k)
        kw.setdefault("norm_topk_prob", True)
        kw["mlp_only_layers"] = tuple(rest.pop("mlp_only_layers", None) or ())
        interval = rest.pop("full_attention_interval", None) or 4
        types = rest.pop("layer_types", None)
        if types is None:
            if not isinstance(interval, int) or interval < 1:
                raise ConfigError(f"config field full_attention_interval={interval!r}: expected a positive int")
            types = [LAYER_TYPES[(i + 1) % interval == 0] for i in range(kw["num_hidden_layers"])]
        kw["layer_types"] = tuple(types)
        return cls(**kw, dtype=dtype, extra=rest)


def gated_attention(b: GraphBuilder, x: Node, p: str, c: Qwen3NextConfig) -> Node:
    """Softmax attention whose output is gated per element by sigmoid of a second half of q_proj."""
    hq, hkv, d, hidden, dt = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.hidden_size, c.dtype
    qg = b.reshape(blocks.linear(b, x, f"{p}.q_proj", hidden, hq * 2 * d, dt, bias=c.attention_bias),
                   shape=("seq_len", hq, 2 * d))  # per head: its query, then its gate
    q = b.slice(qg, axis=2, start=0, stop=d)
    gate = b.reshape(b.slice(qg, axis=2, start=d, stop=2 * d), shape=("seq_len", hq * d))
    k, v = (b.reshape(blocks.linear(b, x, f"{p}.{n}_proj", hidden, hkv * d, dt, bias=c.attention_bias),
                      shape=("seq_len", hkv, d)) for n in ("k", "v"))
    q = blocks.rms_norm(b, q, f"{p}.q_norm", c.rms_norm_eps, dt, offset=1.0)
    k = blocks.rms_norm(b, k, f"{p}.k_norm", c.rms_norm_eps, dt, offset=1.0)
    q = b.positional(q, theta=float(c.rope_theta), rotary_dim=c.rotary_dim)
    k = b.positional(k, theta=float(c.rope_theta), rotary_dim=c.rotary_dim)
    o = b.reshape(blocks.plain_attention(b, q, k, v, scale=float(d) ** -0.5), shape=("seq_len", hq * d))
    return blocks.linear(b, b.sigmoid_gate(o, gate), f"{p}.o_proj", hq * d, hidden, dt, bias=c.attention_bias)


def linear_attention(b: GraphBuilder, x: Node, p: str, c: Qwen3NextConfig) -> Node:
    """The gated DeltaNet mixer (transformers' Qwen3NextGatedDeltaNet)."""
    hk, hv, dk, dv, dt = (c.linear_num_key_heads, c.linear_num_value_heads, c.linear_key_head_dim,
                          c.linear_value_head_dim, c.dtype)
    r, key_dim, value_dim, hidden = hv // hk, hk * dk, hv * dv, c.hidden_size
    conv_dim = 2 * key_dim + value_dim
    qkvz = b.reshape(blocks.linear(b, x, f"{p}.in_proj_qkvz", hidden, 2 * key_dim + 2 * value_dim, dt),
                     shape=("seq_len", hk, 2 * dk + 2 * r * dv))
    ba = b.reshape(blocks.linear(b, x, f"{p}.in_proj_ba", hidden, 2 * hv, dt), shape=("seq_len", hk, 2 * r))

    def part(t: Node, start: int, size: int, shape: tuple) -> Node:  # one field of every key head's group
        return b.reshape(b.slice(t, axis=2, start=start, stop=start + size), shape=("seq_len", *shape))

    q, k = part(qkvz, 0, dk, (key_dim,)), part(qkvz, dk, dk, (key_dim,))
    v, z = part(qkvz, 2 * dk, r * dv, (value_dim,)), part(qkvz, 2 * dk + r * dv, r * dv, (hv, dv))
    conv_w = b.param(f"{p}.conv1d.weight", (conv_dim, 1, c.linear_conv_kernel_dim), dt)
    mixed = b.causal_conv1d(b.concat(q, k, v, axis=1), conv_w)  # (T, conv_dim)

    def heads(start: int, size: int, n: int, d: int) -> Node:
        return b.reshape(b.slice(mixed, axis=1, start=start, stop=start + size), shape=("seq_len", n, d))

    a_log = b.param(f"{p}.A_log", (hv,), dt)
    dt_bias = b.param(f"{p}.dt_bias", (hv,), dt)
    o = b.gated_delta_rule(heads(0, key_dim, hk, dk), heads(key_dim, key_dim, hk, dk),
                           heads(2 * key_dim, value_dim, hv, dv), part(ba, r, r, (hv,)), part(ba, 0, r, (hv,)),
                           a_log, dt_bias)
    o = b.rms_norm_gated(o, z, b.param(f"{p}.norm.weight", (dv,), dt), eps=c.rms_norm_eps)
    return blocks.linear(b, b.reshape(o, shape=("seq_len", value_dim)), f"{p}.out_proj", value_dim, hidden, dt)


def mlp(b: GraphBuilder, x: Node, i: int, c: Qwen3NextConfig) -> Node:
    p, h = f"model.layers.{i}.mlp", c.hidden_size
    if not c.sparse(i):
        return blocks.gated_mlp(b, x, p, h, c.intermediate_size, c.dtype)
    y = blocks.sparse_moe(b, x, p, h, c.moe_intermediate_size, c.num_experts, c.num_experts_per_tok,
                          c.norm_topk_prob, c.dtype)
    if c.shared_expert_intermediate_size:
        shared = blocks.gated_mlp(b, x, f"{p}.shared_expert", h, c.shared_expert_intermediate_size, c.dtype)
        y = b.add(y, b.sigmoid_gate(shared, blocks.linear(b, x, f"{p}.shared_expert_gate", h, 1, c.dtype)))
    return y


def build(cfg: Qwen3NextConfig) -> Graph:
    """ids (T,) -> logits (T, vocab)."""
    c, dt = cfg, cfg.dtype
    b = GraphBuilder("forward")
    ids = b.input("ids", ("seq_len",), "int32")
    embed = b.param("model.embed_tokens.weight", (c.vocab_size, c.hidden_size), dt)
    h = b.embedding(embed, ids)
    for i, kind in enumerate(c.layer_types):
        p = f"model.layers.{i}"
        x = blocks.rms_norm(b, h, f"{p}.input_layernorm", c.rms_norm_eps, dt, offset=1.0)
        mix = (linear_attention(b, x, f"{p}.linear_attn", c) if kind == "linear_attention"
               else gated_attention(b, x, f"{p}.self_attn", c))
        h = b.add(h, mix)
        x = blocks.rms_norm(b, h, f"{p}.post_attention_layernorm", c.rms_norm_eps, dt, offset=1.0)
        h = b.add(h, mlp(b, x, i, c))
    h = blocks.rms_norm(b, h, "model.norm", c.rms_norm_eps, dt, offset=1.0)
    head = embed if c.tie_word_embeddings else b.param("lm_head.weight", (c.vocab_size, c.hidden_size), dt)
    return b.build({"logits": b.linear(h, head)}, family="qwen3_next", num_hidden_layers=c.num_hidden_layers,
                   vocab_size=c.vocab_size, max_position_embeddings=c.max_position_embeddings)
