"""Write an HF-style checkpoint with random weights at real model shapes (no downloads).

    python bench/random_checkpoint.py qwen3-0.6b /tmp/qwen3-0.6b --dtype bfloat16
    python bench/random_checkpoint.py qwen3-coder-30b-a3b /tmp/qwen3-moe-4l --layers 4
    python bench/random_checkpoint.py qwen3-coder-next /tmp/qwen3-next-4l --layers 4
    python bench/random_checkpoint.py qwen3-vl-2b /tmp/qwen3-vl-2b
    python bench/random_checkpoint.py glm-4.7 /tmp/glm-4.7-4l --layers 4

Presets copy the published config.json fields of each model; a preset without
"architectures" is a Qwen3ForCausalLM. --layers keeps the first N decoder layers (the
config.json then says num_hidden_layers N), for models too large to write in full. Qwen3-VL's
presets nest the language model's fields in "text_config" and the vision tower's in
"vision_config", as its config.json does (--layers cuts the language model).
"""
from __future__ import annotations

import argparse
import json
import math
import struct
from pathlib import Path
from typing import Callable

import numpy as np

PRESETS = {
    "qwen3-0.6b": dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                       max_position_embeddings=40960, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "qwen3-4b": dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                     max_position_embeddings=262144, rope_theta=5000000.0, rms_norm_eps=1e-6),
    # Qwen3-Coder-30B-A3B-Instruct: 48 layers of 128 experts (8 active), 61 GB in bf16
    "qwen3-coder-30b-a3b": dict(architectures=["Qwen3MoeForCausalLM"], vocab_size=151936, hidden_size=2048,
                                intermediate_size=6144, moe_intermediate_size=768, num_hidden_layers=48,
                                num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128,
                                num_experts_per_tok=8, norm_topk_prob=True, decoder_sparse_step=1,
                                mlp_only_layers=[], tie_word_embeddings=False, max_position_embeddings=262144,
                                rope_theta=10000000.0, rms_norm_eps=1e-6),
    # Qwen3-Coder-Next (Qwen3-Next-80B-A3B's shapes): 48 layers, 3 of every 4 gated DeltaNet;
    # 512 experts (10 active) plus a shared expert, 159 GB in bf16
    "qwen3-coder-next": dict(architectures=["Qwen3NextForCausalLM"], vocab_size=151936, hidden_size=2048,
                             intermediate_size=5120, moe_intermediate_size=512, shared_expert_intermediate_size=512,
                             num_hidden_layers=48, num_attention_heads=16, num_key_value_heads=2, head_dim=256,
                             partial_rotary_factor=0.25, full_attention_interval=4, linear_conv_kernel_dim=4,
                             linear_key_head_dim=128, linear_value_head_dim=128, linear_num_key_heads=16,
                             linear_num_value_heads=32, num_experts=512, num_experts_per_tok=10, norm_topk_prob=True,
                             decoder_sparse_step=1, mlp_only_layers=[], tie_word_embeddings=False,
                             max_position_embeddings=262144, rope_theta=5000000.0, rms_norm_eps=1e-6),
    # GLM-4.7 (GLM-4.5's architecture, 355B-A32B): 92 layers, the first 3 dense, then 160 experts
    # (8 active, sigmoid routing) plus a shared expert; 7.5 GB of experts per layer in bf16. The
    # checkpoint carries no multi-token-prediction layer (num_nextn_predict_layers 0).
    "glm-4.7": dict(architectures=["Glm4MoeForCausalLM"], vocab_size=151552, hidden_size=5120,
                    intermediate_size=12288, moe_intermediate_size=1536, num_hidden_layers=92,
                    num_attention_heads=96, num_key_value_heads=8, head_dim=128, n_routed_experts=160,
                    num_experts_per_tok=8, n_shared_experts=1, n_group=1, topk_group=1, routed_scaling_factor=2.5,
                    norm_topk_prob=True, first_k_dense_replace=3, use_qk_norm=True, partial_rotary_factor=0.5,
                    attention_bias=True, num_nextn_predict_layers=0, tie_word_embeddings=False,
                    max_position_embeddings=202752, rope_theta=1000000.0, rms_norm_eps=1e-5),
    # Qwen3-VL-2B-Instruct: a 28-layer Qwen3 language model with multimodal RoPE, and a 24-layer
    # ViT (patch 16, 2 x 2 patches per token) whose layers 5, 11 and 17 also feed the first 3 layers
    "qwen3-vl-2b": dict(architectures=["Qwen3VLForConditionalGeneration"], tie_word_embeddings=True,
                        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                        vision_end_token_id=151653,
                        text_config=dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                                         num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                                         head_dim=128, tie_word_embeddings=True, max_position_embeddings=262144,
                                         rope_theta=5000000.0, rms_norm_eps=1e-6,
                                         rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20],
                                                       "mrope_interleaved": True}),
                        vision_config=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
                                           hidden_act="gelu_pytorch_tanh", in_channels=3, patch_size=16,
                                           temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=2048,
                                           num_position_embeddings=2304, deepstack_visual_indexes=[5, 11, 17])),
}
_ST_DTYPE = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def _gated_mlp(p: str, h: int, f: int) -> dict[str, tuple[int, ...]]:
    """gate/up/down projections of the SiLU-gated MLP module ``p`` (hidden h, intermediate f)."""
    return {f"{p}.gate_proj.weight": (f, h), f"{p}.up_proj.weight": (f, h), f"{p}.down_proj.weight": (h, f)}


def _decoder_shapes(c: dict, mlp: Callable[[int, str], dict[str, tuple[int, ...]]]) -> dict[str, tuple[int, ...]]:
    """A Qwen3-style decoder (norms, attention with q/k norms); ``mlp(i, prefix)`` gives layer i's MLP tensors."""
    h, d, hq, hkv = c["hidden_size"], c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": (c["vocab_size"], h), "model.norm.weight": (h,)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        shapes.update({f"{p}.input_layernorm.weight": (h,), f"{p}.post_attention_layernorm.weight": (h,),
                       f"{p}.self_attn.q_proj.weight": (hq * d, h), f"{p}.self_attn.k_proj.weight": (hkv * d, h),
                       f"{p}.self_attn.v_proj.weight": (hkv * d, h), f"{p}.self_attn.o_proj.weight": (h, hq * d),
                       f"{p}.self_attn.q_norm.weight": (d,), f"{p}.self_attn.k_norm.weight": (d,)})
        shapes.update(mlp(i, p))
    if not c["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (c["vocab_size"], h)
    return shapes


def qwen3_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    return _decoder_shapes(c, lambda i, p: _gated_mlp(f"{p}.mlp", c["hidden_size"], c["intermediate_size"]))


def qwen3_moe_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """Qwen3MoeForCausalLM, per-expert tensors named as transformers' save_pretrained writes them. A layer
    is sparse unless it is in mlp_only_layers or off the decoder_sparse_step (as Qwen3MoeDecoderLayer)."""
    h, e, f = c["hidden_size"], c["num_experts"], c["moe_intermediate_size"]

    def mlp(i: int, p: str) -> dict[str, tuple[int, ...]]:
        if i in c["mlp_only_layers"] or not (e > 0 and (i + 1) % c["decoder_sparse_step"] == 0):
            return _gated_mlp(f"{p}.mlp", h, c["intermediate_size"])
        out = {f"{p}.mlp.gate.weight": (e, h)}
        for j in range(e):
            out.update(_gated_mlp(f"{p}.mlp.experts.{j}", h, f))
        return out

    return _decoder_shapes(c, mlp)


def qwen3_next_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """Qwen3NextForCausalLM: linear-attention (gated DeltaNet) layers but every
    full_attention_interval-th, whose gated attention's q_proj is twice as wide; sparse MLPs
    (Qwen3-MoE's rule) with a shared expert and its gate."""
    h, e, f = c["hidden_size"], c["num_experts"], c["moe_intermediate_size"]
    hk, hv, dk, dv = (c["linear_num_key_heads"], c["linear_num_value_heads"], c["linear_key_head_dim"],
                      c["linear_value_head_dim"])

    def mlp(i: int, p: str) -> dict[str, tuple[int, ...]]:
        if i in c["mlp_only_layers"] or (i + 1) % c["decoder_sparse_step"] != 0:
            return _gated_mlp(f"{p}.mlp", h, c["intermediate_size"])
        out = {f"{p}.mlp.gate.weight": (e, h)}
        for j in range(e):
            out.update(_gated_mlp(f"{p}.mlp.experts.{j}", h, f))
        out.update(_gated_mlp(f"{p}.mlp.shared_expert", h, c["shared_expert_intermediate_size"]))
        out[f"{p}.mlp.shared_expert_gate.weight"] = (1, h)
        return out

    shapes = _decoder_shapes(c, mlp)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        if (i + 1) % c["full_attention_interval"] == 0:
            d, hq = c["head_dim"], c["num_attention_heads"]
            shapes[f"{p}.self_attn.q_proj.weight"] = (2 * hq * d, h)
            continue
        for n in ("q", "k", "v", "o"):
            del shapes[f"{p}.self_attn.{n}_proj.weight"]
        del shapes[f"{p}.self_attn.q_norm.weight"], shapes[f"{p}.self_attn.k_norm.weight"]
        la = f"{p}.linear_attn"
        shapes.update({f"{la}.in_proj_qkvz.weight": (2 * hk * dk + 2 * hv * dv, h),
                       f"{la}.in_proj_ba.weight": (2 * hv, h), f"{la}.conv1d.weight": (2 * hk * dk + hv * dv, 1,
                                                                                       c["linear_conv_kernel_dim"]),
                       f"{la}.A_log": (hv,), f"{la}.dt_bias": (hv,), f"{la}.norm.weight": (dv,),
                       f"{la}.out_proj.weight": (h, hv * dv)})
    return shapes


def glm4_moe_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """Glm4MoeForCausalLM: q/k/v biases, q/k norms only with use_qk_norm; dense MLPs in the first
    first_k_dense_replace layers, then a router (with its score-correction bias), per-expert
    tensors and the shared experts."""
    h, e, f = c["hidden_size"], c["n_routed_experts"], c["moe_intermediate_size"]

    def mlp(i: int, p: str) -> dict[str, tuple[int, ...]]:
        if i < c["first_k_dense_replace"]:
            return _gated_mlp(f"{p}.mlp", h, c["intermediate_size"])
        out = {f"{p}.mlp.gate.weight": (e, h), f"{p}.mlp.gate.e_score_correction_bias": (e,)}
        for j in range(e):
            out.update(_gated_mlp(f"{p}.mlp.experts.{j}", h, f))
        out.update(_gated_mlp(f"{p}.mlp.shared_experts", h, f * c["n_shared_experts"]))
        return out

    shapes = _decoder_shapes(c, mlp)
    d, hq, hkv = c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}.self_attn"
        if not c["use_qk_norm"]:
            del shapes[f"{p}.q_norm.weight"], shapes[f"{p}.k_norm.weight"]
        shapes.update({f"{p}.q_proj.bias": (hq * d,), f"{p}.k_proj.bias": (hkv * d,), f"{p}.v_proj.bias": (hkv * d,)})
    return shapes


def qwen3_vl_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """Qwen3VLForConditionalGeneration: the language model under model.language_model, the
    vision tower under model.visual."""
    text = {**c["text_config"], "tie_word_embeddings": c["tie_word_embeddings"]}
    shapes = {(k if k.startswith("lm_head") else k.replace("model.", "model.language_model.", 1)): v
              for k, v in qwen3_shapes(text).items()}
    v = c["vision_config"]
    h, f, p, unit = v["hidden_size"], v["intermediate_size"], "model.visual", v["spatial_merge_size"] ** 2
    shapes.update({f"{p}.patch_embed.proj.weight": (h, v["in_channels"], v["temporal_patch_size"], v["patch_size"],
                                                     v["patch_size"]),
                   f"{p}.patch_embed.proj.bias": (h,), f"{p}.pos_embed.weight": (v["num_position_embeddings"], h)})
    for i in range(v["depth"]):
        b = f"{p}.blocks.{i}"
        shapes.update({f"{b}.norm1.weight": (h,), f"{b}.norm1.bias": (h,), f"{b}.norm2.weight": (h,),
                       f"{b}.norm2.bias": (h,), f"{b}.attn.qkv.weight": (3 * h, h), f"{b}.attn.qkv.bias": (3 * h,),
                       f"{b}.attn.proj.weight": (h, h), f"{b}.attn.proj.bias": (h,),
                       f"{b}.mlp.linear_fc1.weight": (f, h), f"{b}.mlp.linear_fc1.bias": (f,),
                       f"{b}.mlp.linear_fc2.weight": (h, f), f"{b}.mlp.linear_fc2.bias": (h,)})
    mergers = [(f"{p}.merger", h)] + [(f"{p}.deepstack_merger_list.{j}", unit * h)
                                      for j in range(len(v["deepstack_visual_indexes"]))]
    for m, norm in mergers:
        shapes.update({f"{m}.norm.weight": (norm,), f"{m}.norm.bias": (norm,),
                       f"{m}.linear_fc1.weight": (unit * h, unit * h), f"{m}.linear_fc1.bias": (unit * h,),
                       f"{m}.linear_fc2.weight": (v["out_hidden_size"], unit * h),
                       f"{m}.linear_fc2.bias": (v["out_hidden_size"],)})
    return shapes


# architecture -> (model_type, tensor shapes of a config)
FAMILIES: dict[str, tuple[str, Callable[[dict], dict[str, tuple[int, ...]]]]] = {
    "Qwen3ForCausalLM": ("qwen3", qwen3_shapes),
    "Qwen3MoeForCausalLM": ("qwen3_moe", qwen3_moe_shapes),
    "Qwen3NextForCausalLM": ("qwen3_next", qwen3_next_shapes),
    "Qwen3VLForConditionalGeneration": ("qwen3_vl", qwen3_vl_shapes),
    "Glm4MoeForCausalLM": ("glm4_moe", glm4_moe_shapes),
}


def architecture(c: dict) -> str:
    return c.get("architectures", ["Qwen3ForCausalLM"])[0]


def checkpoint_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a checkpoint of the preset ``c``, in file order."""
    return FAMILIES[architecture(c)][1](c)


def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], dtype: str, seed: int = 0) -> None:
    """Stream random N(0, 0.02) tensors (norm weights = 1) into one safetensors file."""
    import ml_dtypes

    np_dt = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[dtype]
    item = np.dtype(np_dt).itemsize
    header, off = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * item
        header[name] = {"dtype": _ST_DTYPE[dtype], "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, shape in shapes.items():
            if name.endswith(("norm.weight", "norm1.weight", "norm2.weight")):
                arr = np.ones(shape, np.float32)
            else:
                arr = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
            f.write(arr.astype(np_dt).tobytes())


def hf_config(c: dict, dtype: str = "bfloat16") -> dict:
    """The config.json of a checkpoint with the shapes and settings in ``c`` (a PRESETS entry)."""
    arch = architecture(c)
    if "text_config" in c:  # Qwen3-VL: the decoder's fields nest
        text = {"model_type": "qwen3_vl_text", "hidden_act": "silu", "attention_bias": False, "dtype": dtype,
                **c["text_config"]}
        return {"model_type": FAMILIES[arch][0], "dtype": dtype, **c, "text_config": text,
                "vision_config": {"model_type": "qwen3_vl_vision", **c["vision_config"]}}
    return {"architectures": [arch], "model_type": FAMILIES[arch][0], "hidden_act": "silu", "dtype": dtype,
            "attention_bias": False, "use_sliding_window": False, **c}


def preset_config(preset: str, layers: int | None = None) -> dict:
    """PRESETS[preset], with num_hidden_layers = ``layers`` when given. A hybrid model cut to
    fewer layers than its full_attention_interval keeps the interval's last layer kind: its
    last layer is a full-attention one, so that both kinds run (and the peers, which size a KV
    cache for the attention layers, have one). Likewise a model cut to its dense first layers
    (GLM's first_k_dense_replace) keeps a sparse last layer."""
    c = PRESETS[preset]
    if layers is None:
        return c
    if "text_config" in c:
        return {**c, "text_config": {**c["text_config"], "num_hidden_layers": layers}}
    c = {**c, "num_hidden_layers": layers}
    if c.get("full_attention_interval", 0) > layers:
        c["full_attention_interval"] = layers
    if c.get("first_k_dense_replace", 0) >= layers:  # GLM: keep a sparse last layer too
        c["first_k_dense_replace"] = layers - 1
    return c


def decode_elems(c: dict) -> int:
    """The weight elements one decode step reads: all of them, less an untied embedding table
    (one row is read) and the experts a token does not use (a MoE layer reads
    num_experts_per_tok of num_experts, or of GLM's n_routed_experts)."""
    shapes = checkpoint_shapes(c)
    total = sum(math.prod(s) for s in shapes.values())
    experts = sum(math.prod(s) for n, s in shapes.items() if ".mlp.experts." in n)
    unused = experts * (1 - c.get("num_experts_per_tok", 1) / (c.get("num_experts") or c.get("n_routed_experts", 1)))
    if not c.get("tie_word_embeddings", False):
        unused += math.prod(shapes["model.embed_tokens.weight"])
    return int(total - unused)


def make(preset: str, out: str | Path, dtype: str = "bfloat16", seed: int = 0, layers: int | None = None) -> Path:
    """Write config.json and model.safetensors of ``preset`` (its first ``layers`` layers when given) to ``out``."""
    c = preset_config(preset, layers)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config(c, dtype), indent=2))
    write_safetensors(out / "model.safetensors", checkpoint_shapes(c), dtype, seed)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", choices=sorted(PRESETS))
    ap.add_argument("out")
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(_ST_DTYPE))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, help="number of decoder layers (default: the preset's)")
    a = ap.parse_args()
    print(make(a.preset, a.out, a.dtype, a.seed, a.layers))
