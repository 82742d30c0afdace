"""Qwen3 dense (Qwen3ForCausalLM: Qwen3-0.6B, Qwen3-4B-Instruct-2507, ...) as a graph.

Per layer: pre-norm GQA attention with per-head RMSNorm on q and k (qk-norm) and rotary
positions, then a pre-norm SwiGLU MLP; embeddings tied or not. Parameter names are the
Hugging Face tensor names, so the weight map is the identity.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..ir import Graph, GraphBuilder, Node
from . import blocks
from .config import ConfigError, pop_rope_theta, require


@dataclass(frozen=True)
class Qwen3Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    max_position_embeddings: int = 40960
    dtype: str = "float32"  # weight storage dtype
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for f in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "head_dim"):
            require(isinstance(getattr(self, f), int) and getattr(self, f) > 0, f, getattr(self, f), "a positive int")
        require(self.num_attention_heads % self.num_key_value_heads == 0, "num_attention_heads",
                self.num_attention_heads, f"a multiple of num_key_value_heads={self.num_key_value_heads}")
        require(self.head_dim % 2 == 0, "head_dim", self.head_dim, "even (rotary pairs)")

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], dtype: str) -> Qwen3Config:
        kw, rest = parse_decoder(cfg)
        if rest.get("partial_rotary_factor") not in (None, 1, 1.0):
            raise ConfigError(f"partial_rotary_factor={rest['partial_rotary_factor']!r} is not supported for qwen3")
        return cls(**kw, dtype=dtype, extra=rest)


def parse_decoder(cfg: dict[str, Any], rope_theta: float = 1e6) -> tuple[dict[str, Any], dict[str, Any]]:
    """The `Qwen3Config` fields of an HF config.json dict (checked), and the fields left over:
    the common part of every family built on this decoder (``rope_theta``: the family's default)."""
    cfg = dict(cfg)
    if cfg.get("use_sliding_window"):
        raise ConfigError("use_sliding_window=true is not supported")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"hidden_act={cfg['hidden_act']!r} is not supported (expected 'silu')")
    try:
        kw = {k: cfg.pop(k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                      "num_attention_heads")}
    except KeyError as e:
        raise ConfigError(f"config.json lacks required field {e.args[0]!r}") from None
    kw["num_key_value_heads"] = cfg.pop("num_key_value_heads", None) or kw["num_attention_heads"]
    kw["head_dim"] = cfg.pop("head_dim", None) or kw["hidden_size"] // kw["num_attention_heads"]
    kw["rope_theta"] = pop_rope_theta(cfg, default=rope_theta)
    for k in ("rms_norm_eps", "tie_word_embeddings", "attention_bias", "max_position_embeddings"):
        if cfg.get(k) is not None:
            kw[k] = cfg.pop(k)
    kw["rms_norm_eps"] = float(kw.get("rms_norm_eps", 1e-6))
    return kw, cfg


MLP = Callable[[GraphBuilder, Node, int], Node]  # (builder, normed x, layer index) -> mlp(x)
Hook = Callable[[GraphBuilder, Node], Node]  # (builder, hidden states) -> new hidden states
LayerHook = Callable[[GraphBuilder, Node, int], Node]  # the same after layer i


def dense_mlp(cfg: Qwen3Config, prefix: str = "model") -> MLP:
    return lambda b, x, i: blocks.gated_mlp(b, x, f"{prefix}.layers.{i}.mlp", cfg.hidden_size,
                                            cfg.intermediate_size, cfg.dtype)


def build(cfg: Qwen3Config, mlp: MLP | None = None, family: str = "qwen3", qk_norm: bool = True,
          o_bias: bool | None = None, rotary_dim: int | None = None, prefix: str = "model",
          sections: tuple[int, int, int] | None = None, after_embedding: Hook | None = None,
          after_layer: LayerHook | None = None) -> Graph:
    """ids (T,) -> logits (T, vocab), plain causal attention over the whole sequence. ``mlp``
    builds each layer's MLP (default: the dense SwiGLU; Qwen3-MoE passes its sparse block).
    Other families of this decoder say whether q and k are normalized per head (``qk_norm``),
    whether o_proj has a bias (default: attention_bias), how many dims of a head rotate, under
    which ``prefix`` the decoder's tensors are named (Qwen3-VL: "model.language_model") and
    the (t, h, w) ``sections`` of multimodal RoPE (Qwen3-VL). ``after_embedding`` and
    ``after_layer`` rewrite the hidden states there (Qwen3-VL puts image features in)."""
    c, dt = cfg, cfg.dtype
    mlp = mlp or dense_mlp(cfg, prefix)
    o_bias = c.attention_bias if o_bias is None else o_bias
    rotary_dim = rotary_dim or c.head_dim
    hq, hkv, d, hidden = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.hidden_size
    b = GraphBuilder("forward")
    ids = b.input("ids", ("seq_len",), "int32")
    embed = b.param(f"{prefix}.embed_tokens.weight", (c.vocab_size, hidden), dt)
    h = b.embedding(embed, ids)  # (T, hidden)
    if after_embedding:
        h = after_embedding(b, h)
    for i in range(c.num_hidden_layers):
        p = f"{prefix}.layers.{i}"
        x = blocks.rms_norm(b, h, f"{p}.input_layernorm", c.rms_norm_eps, dt)
        heads = {}
        for name, n in (("q", hq), ("k", hkv), ("v", hkv)):
            y = blocks.linear(b, x, f"{p}.self_attn.{name}_proj", hidden, n * d, dt, bias=c.attention_bias)
            heads[name] = b.reshape(y, shape=("seq_len", n, d))  # (T, n, d)
        q, k = heads["q"], heads["k"]
        if qk_norm:
            q = blocks.rms_norm(b, q, f"{p}.self_attn.q_norm", c.rms_norm_eps, dt)
            k = blocks.rms_norm(b, k, f"{p}.self_attn.k_norm", c.rms_norm_eps, dt)
        rope = {"theta": float(c.rope_theta), "rotary_dim": rotary_dim, **({"sections": sections} if sections else {})}
        q, k = b.positional(q, **rope), b.positional(k, **rope)
        o = blocks.plain_attention(b, q, k, heads["v"], scale=float(d) ** -0.5)  # (T, hq, d)
        o = b.reshape(o, shape=("seq_len", hq * d))
        h = b.add(h, blocks.linear(b, o, f"{p}.self_attn.o_proj", hq * d, hidden, dt, bias=o_bias))
        x = blocks.rms_norm(b, h, f"{p}.post_attention_layernorm", c.rms_norm_eps, dt)
        h = b.add(h, mlp(b, x, i))
        if after_layer:
            h = after_layer(b, h, i)
    h = blocks.rms_norm(b, h, f"{prefix}.norm", c.rms_norm_eps, dt)
    head = embed if c.tie_word_embeddings else b.param("lm_head.weight", (c.vocab_size, hidden), dt)
    logits = b.linear(h, head)  # (T, vocab) float32
    return b.build({"logits": logits}, family=family, num_hidden_layers=c.num_hidden_layers,
                   vocab_size=c.vocab_size, max_position_embeddings=c.max_position_embeddings)
