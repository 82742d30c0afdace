"""Qwen3-VL (Qwen3VLForConditionalGeneration: Qwen3-VL-2B, -4B, -8B, -32B) as two graphs.

The language model is Qwen3's decoder (qk-norm GQA, SwiGLU) under ``model.language_model``,
with two additions:

- Multimodal RoPE: each token has a (t, h, w) position and the rotary frequencies are dealt
  to the three rows interleaved (`ir.ops.mrope_axes`, the config's ``mrope_section``). A text
  token's three positions are equal, which makes it plain RoPE; an image's tokens sit on its
  grid (the runtime computes the positions, `engine.vision.rope_positions`).
- Image features: the placeholder tokens' embeddings are replaced by the vision tower's
  output (`merge_rows`), and the first len(deepstack_visual_indexes) layers add the
  "deepstack" features of earlier vision layers to the same rows (`add_rows`). The graph
  reads them as inputs ``image_rows`` (T,) (the feature row of each token, -1 for text),
  ``image_embeds`` and ``deepstack.{i}`` (image_tokens, hidden); decode drops them
  (`passes.drop_image_inputs`).

The vision tower (``model.visual``, graph "vision", one image per call) is a ViT: a patch
embedding (a Conv3d whose stride is its kernel: a linear map of each flattened patch), a
learned position embedding resampled bilinearly to the image's grid (`weighted_rows`, with
indices and weights from the runtime), blocks of LayerNorm, bidirectional attention with 2-D
rotary positions (a table from the runtime) and a GELU MLP; then each group of
spatial_merge_size^2 neighbouring patches is merged into one token by an MLP (the "merger";
the deepstack mergers normalize after merging).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..ir import Graph, GraphBuilder, Node
from . import blocks, qwen3
from .config import ConfigError, require

PREFIX = "model.language_model"
VISION = "model.visual"
ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
EPS = 1e-6  # the vision tower's LayerNorms (fixed in transformers, not a config field)


@dataclass(frozen=True)
class VisionConfig:
    depth: int = 27
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_heads: int = 16
    hidden_act: str = "gelu_pytorch_tanh"
    in_channels: int = 3
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    out_hidden_size: int = 3584
    num_position_embeddings: int = 2304
    deepstack_visual_indexes: tuple[int, ...] = (8, 16, 24)
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        for f in ("depth", "hidden_size", "intermediate_size", "num_heads", "in_channels", "patch_size",
                  "temporal_patch_size", "spatial_merge_size", "out_hidden_size", "num_position_embeddings"):
            require(isinstance(getattr(self, f), int) and getattr(self, f) > 0, f"vision_config.{f}",
                    getattr(self, f), "a positive int")
        require(self.hidden_size % self.num_heads == 0 and (self.hidden_size // self.num_heads) % 4 == 0,
                "vision_config.num_heads", self.num_heads, f"dividing hidden_size={self.hidden_size} into heads "
                "of a multiple of 4 dims (2-D rotary)")
        require(self.hidden_act in ACTIVATIONS, "vision_config.hidden_act", self.hidden_act, f"one of {list(ACTIVATIONS)}")
        side = int(round(self.num_position_embeddings ** 0.5))
        require(side * side == self.num_position_embeddings, "vision_config.num_position_embeddings",
                self.num_position_embeddings, "a square (a side x side grid)")
        require(all(isinstance(i, int) and 0 <= i < self.depth for i in self.deepstack_visual_indexes),
                "vision_config.deepstack_visual_indexes", self.deepstack_visual_indexes, f"layers in [0, {self.depth})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Values in one flattened patch: channels x temporal_patch_size x patch_size^2."""
        return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> VisionConfig:
        cfg = dict(cfg)
        rope = cfg.pop("rope_parameters", None) or {}
        kw = {k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg}
        kw["deepstack_visual_indexes"] = tuple(kw.get("deepstack_visual_indexes", cls.deepstack_visual_indexes))
        kw["rope_theta"] = float(rope.get("rope_theta", cfg.get("rope_theta", cls.rope_theta)))
        return cls(**kw)


@dataclass(frozen=True)
class Qwen3VLConfig(qwen3.Qwen3Config):
    mrope_section: tuple[int, int, int] = (24, 20, 20)
    image_token_id: int = 151655
    vision: VisionConfig = field(default_factory=VisionConfig)
    # the tokens around an image's run of image tokens (what a text prompt given images gets
    # put first: `engine.text`); None: the tokenizer's <|vision_start|> / <|vision_end|>
    vision_start_token_id: int | None = None
    vision_end_token_id: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        s = self.mrope_section
        require(len(s) == 3 and all(isinstance(v, int) and v >= 0 for v in s), "mrope_section", s,
                "3 non-negative ints (t, h, w)")
        require(sum(s) == self.head_dim // 2, "mrope_section", s, f"sections summing to head_dim/2 = {self.head_dim // 2}")
        require(self.vision.out_hidden_size == self.hidden_size, "vision_config.out_hidden_size",
                self.vision.out_hidden_size, f"the language model's hidden_size={self.hidden_size}")
        for name in ("image_token_id", "vision_start_token_id", "vision_end_token_id"):
            v = getattr(self, name)
            require((v is None and name != "image_token_id") or (isinstance(v, int) and 0 <= v < self.vocab_size),
                    name, v, f"a token id in [0, {self.vocab_size})")

    @classmethod
    def from_hf(cls, cfg: dict[str, Any], dtype: str) -> Qwen3VLConfig:
        text, vision = cfg.get("text_config"), cfg.get("vision_config")
        if not isinstance(text, dict) or not isinstance(vision, dict):
            raise ConfigError("config.json of Qwen3VLForConditionalGeneration needs 'text_config' and 'vision_config'")
        text = dict(text)
        if "tie_word_embeddings" in cfg:  # transformers 5 keeps it at the top level
            text["tie_word_embeddings"] = cfg["tie_word_embeddings"]
        rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
        section = tuple(rope.get("mrope_section") or (24, 20, 20))
        kw, rest = qwen3.parse_decoder(text, rope_theta=500000.0)  # transformers' default for Qwen3-VL
        for name in ("image_token_id", "vision_start_token_id", "vision_end_token_id"):
            if name in cfg:
                kw[name] = cfg[name]
        return cls(**kw, dtype=dtype, mrope_section=section, vision=VisionConfig.from_hf(vision), extra=rest)


def build(cfg: Qwen3VLConfig) -> Graph:
    """The language model: ids (T,) and image features -> logits (T, vocab)."""
    image: dict[str, Node] = {}

    def put_images(b: GraphBuilder, h: Node) -> Node:
        image["rows"] = b.input("image_rows", ("seq_len",), "int32")
        feats = b.input("image_embeds", ("image_tokens", cfg.hidden_size), "float32")
        return b.merge_rows(h, feats, image["rows"])

    def deepstack(b: GraphBuilder, h: Node, i: int) -> Node:
        if i >= len(cfg.vision.deepstack_visual_indexes):
            return h
        return b.add_rows(h, b.input(f"deepstack.{i}", ("image_tokens", cfg.hidden_size), "float32"), image["rows"])

    return qwen3.build(cfg, family="qwen3_vl", prefix=PREFIX, sections=cfg.mrope_section,
                       after_embedding=put_images, after_layer=deepstack)


def build_vision(cfg: Qwen3VLConfig) -> Graph:
    """One image's patches (patches, patch_dim) -> its tokens' features (patches/m^2, hidden)
    and the deepstack features, from inputs ``pixels``, ``pos_idx``/``pos_w`` (patches, 4)
    (the bilinear taps of the position embedding) and ``rope`` (patches, head_dim)."""
    v, dt = cfg.vision, cfg.dtype
    hid, unit = v.hidden_size, v.spatial_merge_size ** 2
    b = GraphBuilder("vision")
    x = b.input("pixels", ("patches", v.patch_dim), "float32")
    idx, w = b.input("pos_idx", ("patches", 4), "int32"), b.input("pos_w", ("patches", 4), "float32")
    rope = b.input("rope", ("patches", v.head_dim), "float32")
    stored = (hid, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)  # the Conv3d kernel
    h = blocks.linear(b, x, f"{VISION}.patch_embed.proj", v.patch_dim, hid, dt, bias=True, stored=stored)
    h = b.add(h, b.weighted_rows(b.param(f"{VISION}.pos_embed.weight", (v.num_position_embeddings, hid), dt), idx, w))
    outputs: dict[str, Node] = {}
    for i in range(v.depth):
        p = f"{VISION}.blocks.{i}"
        x = blocks.layer_norm(b, h, f"{p}.norm1", EPS, dt)
        qkv = blocks.linear(b, x, f"{p}.attn.qkv", hid, 3 * hid, dt, bias=True)
        q, k, val = (b.reshape(b.slice(qkv, axis=1, start=j * hid, stop=(j + 1) * hid),
                               shape=("patches", v.num_heads, v.head_dim)) for j in range(3))
        o = b.attention(b.rotary(q, rope), b.rotary(k, rope), val, scale=float(v.head_dim) ** -0.5, causal=False)
        o = b.reshape(o, shape=("patches", hid))
        h = b.add(h, blocks.linear(b, o, f"{p}.attn.proj", hid, hid, dt, bias=True))
        x = blocks.layer_norm(b, h, f"{p}.norm2", EPS, dt)
        x = blocks.linear(b, x, f"{p}.mlp.linear_fc1", hid, v.intermediate_size, dt, bias=True)
        x = getattr(b, ACTIVATIONS[v.hidden_act])(x)
        h = b.add(h, blocks.linear(b, x, f"{p}.mlp.linear_fc2", v.intermediate_size, hid, dt, bias=True))
        if i in v.deepstack_visual_indexes:
            j = v.deepstack_visual_indexes.index(i)
            outputs[f"deepstack.{j}"] = _merger(b, h, f"{VISION}.deepstack_merger_list.{j}", cfg, norm_after=True)
    outputs = {"embeds": _merger(b, h, f"{VISION}.merger", cfg, norm_after=False), **dict(sorted(outputs.items()))}
    return b.build(outputs, family="qwen3_vl", merge_unit=unit)


def _merger(b: GraphBuilder, h: Node, prefix: str, cfg: Qwen3VLConfig, norm_after: bool) -> Node:
    """Each group of m^2 neighbouring patches (consecutive rows) -> one token: LayerNorm (of a
    patch, or of the group when ``norm_after``), then Linear-GELU-Linear."""
    v, dt = cfg.vision, cfg.dtype
    unit = v.spatial_merge_size ** 2
    wide, groups = unit * v.hidden_size, f"patches/{unit}"
    if norm_after:
        x = blocks.layer_norm(b, b.reshape(h, shape=(groups, wide)), f"{prefix}.norm", EPS, dt)
    else:
        x = b.reshape(blocks.layer_norm(b, h, f"{prefix}.norm", EPS, dt), shape=(groups, wide))
    x = b.gelu(blocks.linear(b, x, f"{prefix}.linear_fc1", wide, wide, dt, bias=True))
    return blocks.linear(b, x, f"{prefix}.linear_fc2", wide, v.out_hidden_size, dt, bias=True)


def encoders(cfg: Qwen3VLConfig) -> dict[str, Graph]:
    return {"vision": build_vision(cfg)}


def ignored(cfg: Qwen3VLConfig) -> tuple[str, ...]:
    return ("lm_head.weight",) if cfg.tie_word_embeddings else ()
