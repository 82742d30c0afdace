"""bench/random_checkpoint.py writes, for every preset, the tensors transformers' own
save_pretrained writes for that architecture (names and shapes), checked at shrunk sizes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import random_checkpoint as rc  # noqa: E402

SMALL = dict(vocab_size=100, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, shared_expert_intermediate_size=32, linear_key_head_dim=16,
             linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4)
EXPERTS = ("num_experts", "n_routed_experts")


def _shrink(c: dict) -> dict:
    out = {**c, **{k: v for k, v in SMALL.items() if k in c}}
    for k in EXPERTS:
        if k in c:
            out[k], out["num_experts_per_tok"] = 8, 2
    if "text_config" in c:  # Qwen3-VL
        out["text_config"] = _shrink(c["text_config"])
        out["vision_config"] = {**c["vision_config"], "depth": 3, "hidden_size": 32, "intermediate_size": 48,
                                "num_heads": 2, "out_hidden_size": 64, "num_position_embeddings": 16,
                                "deepstack_visual_indexes": [0, 1]}
        out.update(image_token_id=90, video_token_id=91, vision_start_token_id=88, vision_end_token_id=89)
    return out


@pytest.mark.parametrize("preset", sorted(rc.PRESETS))
def test_shapes_match_save_pretrained(preset, tmp_path):
    import transformers
    from safetensors import safe_open

    c = _shrink(rc.preset_config(preset, layers=4))
    cfg = rc.hf_config(c, "float32")
    arch = rc.architecture(c)
    config_cls = getattr(transformers, arch.replace("ForCausalLM", "Config").replace("ForConditionalGeneration",
                                                                                      "Config"))
    hf = config_cls(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "dtype")})
    getattr(transformers, arch)(hf).save_pretrained(str(tmp_path))
    with safe_open(str(tmp_path / "model.safetensors"), "np") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert rc.checkpoint_shapes(c) == saved
