"""GLM-4.5 MoE (Glm4MoeForCausalLM: GLM-4.5, GLM-4.5-Air, GLM-4.6, GLM-4.7) as a graph.

The decoder of `qwen3.build` with GLM's attention (q/k/v biases, no o_proj bias, per-head
q/k norms only with use_qk_norm, rotary on the first partial_rotary_factor of each head) and,
from layer first_k_dense_replace on, a sparse MLP:

    gates = moe_gates(router(x), e_score_correction_bias, scoring="sigmoid", n_group,
                      topk_group, top_k, normalize, scale=routed_scaling_factor)
    mlp(x) = moe_experts(x, gates, experts) + shared_experts(x)

The router and its bias stay fp32 whatever the checkpoint's dtype (``keep_dtype``), as
transformers keeps them. Multi-token-prediction layers (num_nextn_predict_layers, after the
last decoder layer) are in the checkpoint but not in the graph: generation does not use them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..ir import Graph, GraphBuilder, Node
from . import blocks, qwen3
from .config import pop_moe_fields, pop_rotary_fraction, require


@dataclass(frozen=True)
class Glm4MoeConfig(qwen3.Qwen3Config):
    moe_intermediate_size: int = 0
    n_routed_experts: int = 0
    num_experts_per_tok: int = 0
    n_shared_experts: int = 1
    n_group: int = 1
    topk_group: int = 1
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = True
    first_k_dense_replace: int = 1
    use_qk_norm: bool = False
    rotary_dim: int = 0  # head_dim * partial_rotary_factor
    num_nextn_predict_layers: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for f in ("moe_intermediate_size", "n_routed_experts", "num_experts_per_tok", "n_group", "topk_group",
                  "rotary_dim"):
            require(isinstance(getattr(self, f), int) and getattr(self, f) > 0, f, getattr(self, f), "a positive int")
        for f in ("n_shared_experts", "first_k_dense_replace", "num_nextn_predict_layers"):
            require(isinstance(getattr(self, f), int) and getattr(self, f) >= 0, f, getattr(self, f), "an int >= 0")
        e = self.n_routed_experts
        require(e % self.n_group == 0, "n_group", self.n_group, f"a divisor of n_routed_experts={e}")
        require(self.topk_group <= self.n_group and self.num_experts_per_tok <= self.topk_group * (e // self.n_group),
                "num_experts_per_tok", self.num_experts_per_tok,
                f"at most topk_group={self.topk_group} groups of {e // self.n_group} experts")

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], dtype: str) -> Glm4MoeConfig:
        kw, rest = qwen3.parse_decoder(cfg, rope_theta=10000.0)
        rest.setdefault("partial_rotary_factor", 0.5)  # transformers' default for GLM
        kw["rotary_dim"] = pop_rotary_fraction(rest, kw["head_dim"])
        kw.update(pop_moe_fields(rest, "n_routed_experts"))
        for k in ("n_shared_experts", "n_group", "topk_group", "routed_scaling_factor", "norm_topk_prob",
                  "first_k_dense_replace", "use_qk_norm", "num_nextn_predict_layers"):
            if rest.get(k) is not None:
                kw[k] = rest.pop(k)
        kw["routed_scaling_factor"] = float(kw.get("routed_scaling_factor", 1.0))
        return cls(**kw, dtype=dtype, extra=rest)


def sparse_mlp(b: GraphBuilder, x: Node, prefix: str, c: Glm4MoeConfig) -> Node:
    h, e = c.hidden_size, c.n_routed_experts
    router = b.param(f"{prefix}.gate.weight", (e, h), "float32", keep_dtype=True)
    bias = b.param(f"{prefix}.gate.e_score_correction_bias", (e,), "float32", keep_dtype=True)
    gates = b.moe_gates(b.linear(x, router), bias, top_k=c.num_experts_per_tok, normalize=c.norm_topk_prob,
                        scoring="sigmoid", n_group=c.n_group, topk_group=c.topk_group,
                        scale=c.routed_scaling_factor)
    y = b.moe_experts(x, gates, *blocks.expert_stacks(b, f"{prefix}.experts", h, c.moe_intermediate_size, e,
                                                        c.dtype))
    if c.n_shared_experts:
        y = b.add(y, blocks.gated_mlp(b, x, f"{prefix}.shared_experts", h,
                                      c.moe_intermediate_size * c.n_shared_experts, c.dtype))
    return y


def build(cfg: Glm4MoeConfig) -> Graph:
    dense = qwen3.dense_mlp(cfg)

    def mlp(b, x, i):
        if i < cfg.first_k_dense_replace:
            return dense(b, x, i)
        return sparse_mlp(b, x, f"model.layers.{i}.mlp", cfg)

    return qwen3.build(cfg, mlp, family="glm4_moe", qk_norm=cfg.use_qk_norm, o_bias=False,
                       rotary_dim=cfg.rotary_dim)


def ignored(cfg: Glm4MoeConfig) -> tuple[str, ...]:
    """The multi-token-prediction layers, and lm_head under tied embeddings."""
    mtp = tuple(f"model.layers.{cfg.num_hidden_layers + j}." for j in range(cfg.num_nextn_predict_layers))
    return mtp + (("lm_head.weight",) if cfg.tie_word_embeddings else ())
