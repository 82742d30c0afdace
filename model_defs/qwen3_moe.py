"""Qwen3-MoE (Qwen3MoeForCausalLM: Qwen3-Coder-30B-A3B, Qwen3-30B-A3B, ...) as a graph.

Qwen3's decoder (`qwen3.build`: qk-norm GQA attention, rotary, pre-norms) with a sparse MLP
in most layers: a router picks each token's top num_experts_per_tok of num_experts SwiGLU
experts (`blocks.sparse_moe`). A layer is sparse unless it is listed in mlp_only_layers or
(i + 1) is not a multiple of decoder_sparse_step; those keep the dense MLP of
intermediate_size. Tensor names are Hugging Face's; the experts' per-expert tensors are
stacked into two weights per layer as they load.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..ir import Graph
from . import blocks, qwen3
from .config import pop_moe_fields, require


@dataclass(frozen=True)
class Qwen3MoeConfig(qwen3.Qwen3Config):
    moe_intermediate_size: int = 0
    num_experts: int = 0
    num_experts_per_tok: int = 0
    norm_topk_prob: bool = False
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        for f in ("moe_intermediate_size", "num_experts", "num_experts_per_tok", "decoder_sparse_step"):
            require(isinstance(getattr(self, f), int) and getattr(self, f) > 0, f, getattr(self, f), "a positive int")
        require(self.num_experts_per_tok <= self.num_experts, "num_experts_per_tok", self.num_experts_per_tok,
                f"at most num_experts={self.num_experts}")
        require(all(isinstance(i, int) and 0 <= i < self.num_hidden_layers for i in self.mlp_only_layers),
                "mlp_only_layers", self.mlp_only_layers, f"layer indices in [0, {self.num_hidden_layers})")

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], dtype: str) -> Qwen3MoeConfig:
        base = qwen3.Qwen3Config.from_hf(cfg, dtype)
        rest = dict(base.extra)
        kw = {k: v for k, v in asdict(base).items() if k != "extra"}  # checked, with their defaults
        kw.update(pop_moe_fields(rest, "num_experts"))
        for k in ("norm_topk_prob", "decoder_sparse_step"):
            if rest.get(k) is not None:
                kw[k] = rest.pop(k)
        kw["mlp_only_layers"] = tuple(rest.pop("mlp_only_layers", None) or ())
        return cls(**kw, extra=rest)

    def sparse(self, layer: int) -> bool:
        """Whether layer ``layer`` has the sparse MLP (transformers' rule)."""
        return layer not in self.mlp_only_layers and (layer + 1) % self.decoder_sparse_step == 0


def build(cfg: Qwen3MoeConfig) -> Graph:
    dense = qwen3.dense_mlp(cfg)

    def mlp(b, x, i):
        if not cfg.sparse(i):
            return dense(b, x, i)
        return blocks.sparse_moe(b, x, f"model.layers.{i}.mlp", cfg.hidden_size, cfg.moe_intermediate_size,
                                 cfg.num_experts, cfg.num_experts_per_tok, cfg.norm_topk_prob, cfg.dtype)

    return qwen3.build(cfg, mlp, family="qwen3_moe")
