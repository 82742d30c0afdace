"""Write an HF-style checkpoint with random weights at real model shapes (no downloads).

    python bench/random_checkpoint.py qwen3-0.6b /tmp/qwen3-0.6b --dtype bfloat16

Presets copy the published config.json fields of each model.
"""
from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import numpy as np

PRESETS = {
    "qwen3-0.6b": dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                       max_position_embeddings=40960, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "qwen3-4b": dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                     max_position_embeddings=262144, rope_theta=5000000.0, rms_norm_eps=1e-6),
}
_ST_DTYPE = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def qwen3_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    h, d, hq, hkv, f = c["hidden_size"], c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"], \
        c["intermediate_size"]
    shapes = {"model.embed_tokens.weight": (c["vocab_size"], h), "model.norm.weight": (h,)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        shapes.update({f"{p}.input_layernorm.weight": (h,), f"{p}.post_attention_layernorm.weight": (h,),
                       f"{p}.self_attn.q_proj.weight": (hq * d, h), f"{p}.self_attn.k_proj.weight": (hkv * d, h),
                       f"{p}.self_attn.v_proj.weight": (hkv * d, h), f"{p}.self_attn.o_proj.weight": (h, hq * d),
                       f"{p}.self_attn.q_norm.weight": (d,), f"{p}.self_attn.k_norm.weight": (d,),
                       f"{p}.mlp.gate_proj.weight": (f, h), f"{p}.mlp.up_proj.weight": (f, h),
                       f"{p}.mlp.down_proj.weight": (h, f)})
    if not c["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (c["vocab_size"], h)
    return shapes


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
            if name.endswith("norm.weight"):
                arr = np.ones(shape, np.float32)
            else:
                arr = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
            f.write(arr.astype(np_dt).tobytes())


def hf_config(c: dict, dtype: str = "bfloat16") -> dict:
    """The config.json of a Qwen3 checkpoint with the shapes and settings in ``c`` (a PRESETS entry)."""
    return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_act": "silu", "dtype": dtype,
            "attention_bias": False, "use_sliding_window": False, **c}


def make(preset: str, out: str | Path, dtype: str = "bfloat16", seed: int = 0) -> Path:
    c = PRESETS[preset]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config(c, dtype), indent=2))
    write_safetensors(out / "model.safetensors", qwen3_shapes(c), dtype, seed)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", choices=sorted(PRESETS))
    ap.add_argument("out")
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(_ST_DTYPE))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(make(a.preset, a.out, a.dtype, a.seed))
