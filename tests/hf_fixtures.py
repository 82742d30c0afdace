"""Tiny random Hugging Face Qwen3 / Qwen3-MoE / Qwen3-Next / GLM-4.5-MoE / Qwen3-VL checkpoints and reference logits from transformers.

Checkpoints are made the way a user's would be: ``Qwen3ForCausalLM(Qwen3Config(...))`` then
``save_pretrained``. Sizes are deliberately odd (hidden 40/56, 5 heads sharing 1 kv head,
head_dim 6/10/14, intermediate 37/90, vocab 97/131) so that no kernel can lean on powers of
two. Weights are re-drawn at a realistic scale (HF's init std of 0.02 makes attention
nearly uniform, which would hide position and masking bugs).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# name -> (seed, Qwen3Config kwargs)
QWEN3_CONFIGS: dict[str, dict[str, Any]] = {
    # 5 query heads sharing 1 kv head, head_dim 6, odd intermediate/vocab, untied lm_head
    "gqa5x1": dict(vocab_size=97, hidden_size=40, intermediate_size=37, num_hidden_layers=2,
                   num_attention_heads=5, num_key_value_heads=1, head_dim=6, tie_word_embeddings=False),
    # tied embeddings, q/k/v/o biases, 3 layers, head_dim 14
    "tied_bias": dict(vocab_size=131, hidden_size=56, intermediate_size=90, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=14, tie_word_embeddings=True,
                      attention_bias=True),
    # one layer, no GQA sharing, head_dim 10, different rope theta and eps
    "mha_theta": dict(vocab_size=101, hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=3, num_key_value_heads=3, head_dim=10, tie_word_embeddings=False,
                      rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
    # stored in bfloat16 (see hf_fixtures.make_checkpoint(dtype=...))
    "bf16": dict(vocab_size=97, hidden_size=40, intermediate_size=37, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=10, tie_word_embeddings=True),
    # every projection's K a multiple of 32: the CUDA GEMV rule (not dlight's) takes them all
    "wide32": dict(vocab_size=131, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False),
    # o and down projections with K = 256 and few output columns: in bf16, the CUDA tensor-core
    # GEMM splits their reduction over more thread blocks (split-K)
    "wide256": dict(vocab_size=131, hidden_size=64, intermediate_size=256, num_hidden_layers=1,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=64, tie_word_embeddings=False),
}

# Qwen3-MoE (Qwen3MoeForCausalLM): name -> Qwen3MoeConfig kwargs
QWEN3_MOE_CONFIGS: dict[str, dict[str, Any]] = {
    # 6 experts, top 2, unnormalized gates; layer 1 dense (mlp_only_layers); odd expert width 23
    "moe_odd": dict(vocab_size=97, hidden_size=40, intermediate_size=37, moe_intermediate_size=23,
                    num_hidden_layers=3, num_attention_heads=5, num_key_value_heads=1, head_dim=6,
                    num_experts=6, num_experts_per_tok=2, norm_topk_prob=False, mlp_only_layers=[1],
                    tie_word_embeddings=False),
    # 9 experts, top 3, normalized gates; every second layer sparse (decoder_sparse_step); tied, biases
    "moe_norm": dict(vocab_size=131, hidden_size=56, intermediate_size=64, moe_intermediate_size=30,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=14,
                     num_experts=9, num_experts_per_tok=3, norm_topk_prob=True, decoder_sparse_step=2,
                     tie_word_embeddings=True, attention_bias=True),
    # stored in bf16; expert widths a multiple of the packing block
    "moe_bf16": dict(vocab_size=97, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                     num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, tie_word_embeddings=False),
}

# GLM-4.5 MoE (Glm4MoeForCausalLM): name -> Glm4MoeConfig kwargs
GLM4_MOE_CONFIGS: dict[str, dict[str, Any]] = {
    # 8 experts in 2 groups (1 kept), top 2, a shared expert, layer 0 dense, qk-norm, half the head
    # rotated, routed scale 2.5, q/k/v biases
    "glm_groups": dict(vocab_size=97, hidden_size=40, intermediate_size=37, moe_intermediate_size=23,
                       num_hidden_layers=3, num_attention_heads=5, num_key_value_heads=1, head_dim=8,
                       n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1, n_shared_experts=1,
                       first_k_dense_replace=1, use_qk_norm=True, partial_rotary_factor=0.5,
                       routed_scaling_factor=2.5, attention_bias=True, tie_word_embeddings=False),
    # no groups, top 3 of 6 unnormalized, two shared experts' width, every layer sparse, no qk-norm, tied
    "glm_plain": dict(vocab_size=131, hidden_size=48, intermediate_size=64, moe_intermediate_size=20,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                      n_routed_experts=6, num_experts_per_tok=3, n_group=1, topk_group=1, n_shared_experts=2,
                      first_k_dense_replace=0, use_qk_norm=False, partial_rotary_factor=0.5, norm_topk_prob=False,
                      tie_word_embeddings=True),
    # stored in bf16 (the router stays fp32); 4 groups, 2 kept
    "glm_bf16": dict(vocab_size=97, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                     n_routed_experts=8, num_experts_per_tok=2, n_group=4, topk_group=2, n_shared_experts=1,
                     first_k_dense_replace=1, use_qk_norm=True, partial_rotary_factor=0.5,
                     routed_scaling_factor=1.5, tie_word_embeddings=False),
}

# Qwen3-Next (Qwen3NextForCausalLM): name -> Qwen3NextConfig kwargs
QWEN3_NEXT_CONFIGS: dict[str, dict[str, Any]] = {
    # 3 linear-attention layers then a gated-attention one; 2 key heads serving 4 value heads (dk 6,
    # dv 10); conv kernel 4; 6 experts, top 2, normalized, plus a shared expert; layer 1 dense
    "next_odd": dict(vocab_size=97, hidden_size=40, intermediate_size=37, moe_intermediate_size=23,
                     shared_expert_intermediate_size=19, num_hidden_layers=4, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=8, partial_rotary_factor=0.5, linear_key_head_dim=6,
                     linear_value_head_dim=10, linear_num_key_heads=2, linear_num_value_heads=4,
                     linear_conv_kernel_dim=4, num_experts=6, num_experts_per_tok=2, norm_topk_prob=True,
                     mlp_only_layers=[1], tie_word_embeddings=False),
    # layers alternate (full_attention_interval 2); as many value as key heads; conv kernel 3;
    # unnormalized gates, every second layer sparse; tied embeddings, attention biases
    "next_alt": dict(vocab_size=131, hidden_size=48, intermediate_size=64, moe_intermediate_size=20,
                     shared_expert_intermediate_size=24, num_hidden_layers=3, num_attention_heads=3,
                     num_key_value_heads=1, head_dim=12, partial_rotary_factor=0.5, full_attention_interval=2, linear_key_head_dim=8,
                     linear_value_head_dim=8, linear_num_key_heads=3, linear_num_value_heads=3,
                     linear_conv_kernel_dim=3, num_experts=5, num_experts_per_tok=3, norm_topk_prob=False,
                     decoder_sparse_step=2, tie_word_embeddings=True, attention_bias=True),
    # stored in bf16
    "next_bf16": dict(vocab_size=97, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
                      shared_expert_intermediate_size=32, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, linear_key_head_dim=16, linear_value_head_dim=16,
                      linear_num_key_heads=2, linear_num_value_heads=4, num_experts=8, num_experts_per_tok=2,
                      tie_word_embeddings=False),
}
# Qwen3-VL (Qwen3VLForConditionalGeneration): name -> Qwen3VLConfig kwargs (text_config, vision_config)
_VISION = dict(depth=3, hidden_size=32, intermediate_size=45, num_heads=2, patch_size=4, temporal_patch_size=2,
               spatial_merge_size=2, num_position_embeddings=16, deepstack_visual_indexes=[0, 1])
_VL_TOKENS = dict(image_token_id=90, video_token_id=91, vision_start_token_id=88, vision_end_token_id=89)
QWEN3_VL_CONFIGS: dict[str, dict[str, Any]] = {
    # head_dim 12: sections (2, 2, 2); GQA 4 -> 2; untied lm_head
    "vl_odd": dict(text_config=dict(vocab_size=97, hidden_size=40, intermediate_size=37, num_hidden_layers=3,
                                    num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                                    rope_parameters={"rope_type": "default", "rope_theta": 5e6,
                                                     "mrope_section": [2, 2, 2], "mrope_interleaved": True}),
                   vision_config={**_VISION, "out_hidden_size": 40}, tie_word_embeddings=False, **_VL_TOKENS),
    # head_dim 16: sections (4, 2, 2); tied embeddings, attention biases
    "vl_tied": dict(text_config=dict(vocab_size=131, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=3, num_key_value_heads=1, head_dim=16, attention_bias=True,
                                     rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                                      "mrope_section": [4, 2, 2], "mrope_interleaved": True}),
                    vision_config={**_VISION, "out_hidden_size": 48}, tie_word_embeddings=True, **_VL_TOKENS),
}
SEEDS = {"gqa5x1": 0, "tied_bias": 1, "mha_theta": 2, "bf16": 3, "wide32": 4, "wide256": 5,
         "moe_odd": 6, "moe_norm": 7, "moe_bf16": 8, "glm_groups": 9, "glm_plain": 10, "glm_bf16": 11,
         "next_odd": 12, "next_alt": 13, "next_bf16": 14, "vl_odd": 15, "vl_tied": 16}


def hf_config(name: str, **overrides: Any):
    if name in QWEN3_VL_CONFIGS:
        from transformers import Qwen3VLConfig

        return Qwen3VLConfig(**{**QWEN3_VL_CONFIGS[name], **overrides})
    if name in QWEN3_NEXT_CONFIGS:
        from transformers import Qwen3NextConfig

        cfg = Qwen3NextConfig(**{**QWEN3_NEXT_CONFIGS[name], **overrides})
        cfg._experts_implementation = "eager"  # see below
        return cfg
    if name in GLM4_MOE_CONFIGS:
        from transformers import Glm4MoeConfig

        cfg = Glm4MoeConfig(**{**GLM4_MOE_CONFIGS[name], **overrides})
        cfg._experts_implementation = "eager"  # see below
        return cfg
    if name in QWEN3_MOE_CONFIGS:
        from transformers import Qwen3MoeConfig

        cfg = Qwen3MoeConfig(**{**QWEN3_MOE_CONFIGS[name], **overrides})
        # transformers' default (grouped_mm) needs 16-byte-aligned strides, which odd widths lack
        cfg._experts_implementation = "eager"
        return cfg
    from transformers import Qwen3Config

    return Qwen3Config(**{**QWEN3_CONFIGS[name], **overrides})


def model_class(cfg):
    """The transformers class for a config made by `hf_config`."""
    from transformers import (Glm4MoeConfig, Glm4MoeForCausalLM, Qwen3ForCausalLM, Qwen3MoeConfig,
                              Qwen3MoeForCausalLM, Qwen3NextConfig, Qwen3NextForCausalLM, Qwen3VLConfig,
                              Qwen3VLForConditionalGeneration)

    if isinstance(cfg, Qwen3NextConfig):
        return Qwen3NextForCausalLM
    if isinstance(cfg, Qwen3VLConfig):
        return Qwen3VLForConditionalGeneration
    if isinstance(cfg, Glm4MoeConfig):
        return Glm4MoeForCausalLM
    return Qwen3MoeForCausalLM if isinstance(cfg, Qwen3MoeConfig) else Qwen3ForCausalLM


def randomize(model, seed: int) -> None:
    """Re-draw every parameter at a scale where attention is sharp and norms matter."""
    import torch

    g = torch.Generator().manual_seed(seed)
    offset_norms = type(model).__name__.startswith("Qwen3Next")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # Qwen3-Next's norms but the gated one scale by 1 + w
                one = 0.0 if offset_norms and not name.endswith("linear_attn.norm.weight") else 1.0
                p.copy_(one + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif p.ndim == 2 and "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:  # linear weight (out, in), or a stack of experts' (E, out, in)
                p.copy_(torch.randn(p.shape, generator=g) * (1.5 / math.sqrt(p.shape[-1])))
        for name, buf in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # GLM's router bias: a saved buffer
                buf.copy_(0.3 * torch.randn(buf.shape, generator=g))


@dataclass
class Checkpoint:
    path: Path
    model: Any  # the transformers model as saved (its dtype is the checkpoint's)
    config: Any
    seed: int
    dtype: str
    extra: dict[str, Any] = field(default_factory=dict)


def make_checkpoint(path: Path, name: str, seed: int | None = None, dtype: str = "float32",
                    max_shard_size: str | None = None, **overrides: Any) -> Checkpoint:
    """Save a random Qwen3 (or Qwen3-MoE) checkpoint for config ``name`` at ``path``."""
    import torch

    seed = SEEDS[name] if seed is None else seed
    torch.manual_seed(seed)
    cfg = hf_config(name, **overrides)
    model = model_class(cfg)(cfg).eval()
    randomize(model, seed)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    if dtype != "float32":
        model = model.to(getattr(torch, dtype))
    kw = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(str(path), **kw)
    if dtype != "float32":
        model = load_reference(path, dtype)
    return Checkpoint(Path(path), model, cfg, seed, dtype)


def load_reference(path: Path, dtype: str):
    """The checkpoint at ``path`` loaded by transformers in ``dtype`` (as a user would load it).

    Prefer this to ``model.to(dtype)``: ``.to`` also rounds the rotary ``inv_freq`` buffer,
    which ``from_pretrained`` keeps in float32.
    """
    import torch
    from transformers import AutoConfig

    cls = model_class(AutoConfig.from_pretrained(str(path)))
    kw = {"experts_implementation": "eager"} if "Moe" in cls.__name__ or "Next" in cls.__name__ else {}
    return cls.from_pretrained(str(path), dtype=getattr(torch, dtype), **kw).eval()


def hf_logits(model, ids) -> np.ndarray:
    """transformers' logits (T, vocab) as float32."""
    import torch

    with torch.no_grad():
        out = model(torch.tensor([list(ids)], dtype=torch.long)).logits[0]
    return out.float().numpy()


def hf_greedy(model, ids: list[int], n: int, **inputs: Any) -> list[int]:
    """transformers' greedy continuation of ``ids`` (n tokens); ``inputs`` go to generate too
    (Qwen3-VL's images, `hf_vl_inputs`). The mask says every id is real (ids may hold 0, the pad id)."""
    import torch

    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(**{"input_ids": x, "attention_mask": torch.ones_like(x), **inputs}, max_new_tokens=n,
                             min_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, len(ids):].tolist()


def rounded_reference(model, dtype: str):
    """A float32 copy of ``model`` whose parameters (not buffers) were rounded to ``dtype``: what
    an engine that stores weights in ``dtype`` but computes in float32 should reproduce."""
    import copy

    import torch

    m = copy.deepcopy(model).float()
    with torch.no_grad():
        for prm in m.parameters():
            prm.copy_(prm.to(getattr(torch, dtype)).float())
    return m


def dequantized_reference(model):
    """A float32 copy of ``model`` whose matrices (projections, embedding, LM head, stacks of
    experts; not the MoE routers) hold what int8 rows with per-row scales stand for
    (`ir.ops.quantize_rows`): what an engine compiled with quantize="int8" should reproduce
    (Qwen3-Next's convolution kernels are not matrices and stay float, and so does Qwen3-VL's
    position embedding, which is resampled, not projected)."""
    import copy

    import torch

    from inference_pio.ir.ops import dequantize_rows, quantize_rows

    m = copy.deepcopy(model).float()
    with torch.no_grad():
        for name, prm in m.named_parameters():
            if name.endswith("patch_embed.proj.weight"):  # Qwen3-VL's Conv3d kernel: a matrix of flat patches
                rows = prm.numpy().reshape(prm.shape[0], -1)
                prm.copy_(torch.from_numpy(dequantize_rows(*quantize_rows(rows)).reshape(prm.shape)))
            elif prm.ndim in (2, 3) and not name.endswith(("mlp.gate.weight", "conv1d.weight", "pos_embed.weight")):
                prm.copy_(torch.from_numpy(dequantize_rows(*quantize_rows(prm.numpy()))))
    return m


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """max|ours - ref| / max|ref| (NaNs count as infinitely wrong)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    if not np.all(np.isfinite(ours)):
        return float("inf")
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def token_ids(vocab: int, n: int, seed: int = 0) -> list[int]:
    """n ids in range that include both ends of the vocabulary."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=n).tolist()
    if n >= 2:
        ids[0], ids[-1] = vocab - 1, 0
    return ids


def vl_prompt(cfg, grids: list[tuple[int, int, int]], seed: int = 0, text: int = 3) -> tuple[list[int], list[tuple]]:
    """A Qwen3-VL prompt for ``cfg`` (a transformers Qwen3VLConfig): ``text`` random ids, then
    each image as <vision_start> (t*h*w/m^2 image tokens) <vision_end> followed by more text;
    and the images' (pixels, grid) with random pixel values."""
    rng = np.random.default_rng(seed)
    v, vocab = cfg.vision_config, cfg.text_config.vocab_size
    special = {cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id}
    plain = [i for i in range(vocab) if i not in special]

    def words(n):
        return [int(plain[j]) for j in rng.integers(0, len(plain), n)]

    ids, images = words(text), []
    for t, h, w in grids:
        n = t * h * w // v.spatial_merge_size ** 2
        ids += [cfg.vision_start_token_id] + [cfg.image_token_id] * n + [cfg.vision_end_token_id] + words(text)
        pixels = rng.standard_normal((t * h * w, v.in_channels * v.temporal_patch_size * v.patch_size ** 2))
        images.append((pixels.astype(np.float32), (t, h, w)))
    return ids, images


VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{% if message.content is string %}"
    "{{ message.content }}{% else %}{% for part in message.content %}{% if part.type == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif part.type == 'text' %}{{ part.text }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
VL_WORDS = ("user", "assistant", "system", "describe", "this", "image", "and", "that")


def write_vl_text_files(path: Path, cfg, min_pixels: int = 64, max_pixels: int = 1024,
                        mean: tuple = (0.48, 0.46, 0.41), std: tuple = (0.27, 0.26, 0.28)) -> None:
    """A word-level tokenizer for Qwen3-VL config ``cfg`` (its special tokens at the config's
    ids, a few words, "w{i}" for the other ids), a Qwen3-VL-style chat template (images as
    <|vision_start|><|image_pad|><|vision_end|>) and a preprocessor_config.json, at ``path``."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    specials = {cfg.vision_start_token_id: "<|vision_start|>", cfg.vision_end_token_id: "<|vision_end|>",
                cfg.image_token_id: "<|image_pad|>", cfg.video_token_id: "<|video_pad|>"}
    free = [i for i in range(1, cfg.text_config.vocab_size) if i not in specials]
    specials.update(zip(free[-3:], ("<|im_start|>", "<|im_end|>", "<|endoftext|>")))
    named = {0: "<unk>", **dict(zip(free, VL_WORDS))}
    vocab = {specials.get(i, named.get(i, f"w{i}")): i for i in range(cfg.text_config.vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials.values()])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": VL_CHAT_TEMPLATE, "eos_token": "<|im_end|>", "tokenizer_class": "PreTrainedTokenizerFast"}))
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}, "image_mean": list(mean),
         "image_std": list(std), "patch_size": cfg.vision_config.patch_size,
         "merge_size": cfg.vision_config.spatial_merge_size}))


def hf_vl_inputs(cfg, ids: list[int], images: list[tuple]) -> dict[str, Any]:
    """transformers' keyword arguments for a prompt from `vl_prompt`."""
    import torch

    x = torch.tensor([ids])
    kw = {"input_ids": x, "attention_mask": torch.ones_like(x), "mm_token_type_ids": (x == cfg.image_token_id).int()}
    if images:
        kw["pixel_values"] = torch.from_numpy(np.concatenate([p for p, _ in images]))
        kw["image_grid_thw"] = torch.tensor([g for _, g in images])
    return kw
