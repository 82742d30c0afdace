"""Qwen3-VL model def: config parsing, the two graphs, and their meaning (interpreted in
numpy) against transformers."""
from __future__ import annotations

import numpy as np
import pytest

from hf_fixtures import hf_logits, rel_err, token_ids
from inference_pio.frontends import huggingface
from inference_pio.ir import interpret
from inference_pio.model_defs import ConfigError, from_hf_config

TEXT = {"vocab_size": 31, "hidden_size": 16, "intermediate_size": 9, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        "rope_parameters": {"rope_type": "default", "rope_theta": 5e6, "mrope_section": [2, 1, 1],
                            "mrope_interleaved": True}}
VISION = {"depth": 4, "hidden_size": 16, "intermediate_size": 20, "num_heads": 2, "patch_size": 4,
          "temporal_patch_size": 2, "spatial_merge_size": 2, "out_hidden_size": 16, "num_position_embeddings": 9,
          "deepstack_visual_indexes": [1, 2], "hidden_act": "gelu_pytorch_tanh"}
BASE = {"architectures": ["Qwen3VLForConditionalGeneration"], "text_config": TEXT, "vision_config": VISION,
        "image_token_id": 30, "tie_word_embeddings": True}


def test_parses_both_towers():
    md = from_hf_config(BASE)
    c = md.config
    assert md.family == "qwen3_vl" and md.spec.targets == ("llvm", "cuda")
    assert c.mrope_section == (2, 1, 1) and c.rope_theta == 5e6 and c.tie_word_embeddings and c.image_token_id == 30
    assert c.vision.depth == 4 and c.vision.head_dim == 8 and c.vision.patch_dim == 96
    assert c.vision.deepstack_visual_indexes == (1, 2) and c.vision.rope_theta == 10000.0
    g = md.graph
    assert g.count("merge_rows") == 1 and g.count("add_rows") == 2  # deepstack into layers 0 and 1
    assert all(n.attr("sections") == (2, 1, 1) for n in g.ops() if n.op == "positional")
    params = {p.name for p in g.params()}
    assert "model.language_model.layers.2.self_attn.q_norm.weight" in params and "lm_head.weight" not in params
    v = md.encoders["vision"]
    assert [i.name for i in v.inputs] == ["pixels", "pos_idx", "pos_w", "rope"]
    assert [k for k, _ in v.outputs] == ["embeds", "deepstack.0", "deepstack.1"]
    assert v.count("attention") == 4 and v.count("layer_norm") == 4 * 2 + 3
    embed = {p.name: p for p in v.params()}["model.visual.patch_embed.proj.weight"]
    assert embed.shape == (16, 96) and embed.attr("stored") == (16, 3, 2, 4, 4)
    assert md.spec.ignored(c) == ("lm_head.weight",)


@pytest.mark.parametrize("change,match", [
    ({"text_config": None}, "needs 'text_config' and 'vision_config'"),
    ({"text_config": {**TEXT, "rope_parameters": {"mrope_section": [2, 2, 2]}}}, "mrope_section"),
    ({"vision_config": {**VISION, "out_hidden_size": 24}}, "out_hidden_size"),
    ({"vision_config": {**VISION, "num_heads": 8}}, "vision_config.num_heads"),
    ({"vision_config": {**VISION, "num_position_embeddings": 10}}, "a square"),
    ({"vision_config": {**VISION, "hidden_act": "relu"}}, "hidden_act"),
    ({"vision_config": {**VISION, "deepstack_visual_indexes": [4]}}, "deepstack_visual_indexes"),
    ({"image_token_id": 31}, "image_token_id"),
])
def test_config_errors_name_the_field(change, match):
    cfg = {**BASE, **change}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    with pytest.raises(ConfigError, match=match):
        from_hf_config(cfg)


@pytest.mark.parametrize("name", ["vl_odd", "vl_tied"])
def test_interpreted_graphs_match_transformers(models, name):
    """The declared graphs' meaning (numpy), before any pass: the vision tower on one image
    against transformers' image features, and the language model on text (positions 0..T-1 on
    all three rows, no image features)."""
    import torch

    from hf_fixtures import vl_prompt
    from inference_pio.engine import vision

    ck = models.checkpoint(name)
    md = huggingface.model_def(ck.path)
    v, enc = md.config.vision, md.encoders["vision"]
    weights = huggingface.load_weights(md.graph.params() + enc.params(), ck.path, md.spec.ignored(md.config))
    _, [(pixels, grid)] = vl_prompt(ck.config, [(1, 4, 6)], seed=1)
    idx, w = vision.position_taps(grid, 2, 4)
    rope = vision.rotary_table(grid, 2, v.head_dim, v.rope_theta)
    out = interpret(enc, {"pixels": pixels, "pos_idx": idx, "pos_w": w, "rope": rope}, weights)
    with torch.no_grad():
        ref = ck.model.model.get_image_features(torch.from_numpy(pixels), torch.tensor([grid]))
    assert rel_err(out["embeds"], ref.pooler_output[0].numpy()) <= 1e-4
    for j, feat in enumerate(ref.deepstack_features):
        assert rel_err(out[f"deepstack.{j}"], feat[0].numpy()) <= 1e-4

    ids = token_ids(ck.config.text_config.vocab_size, 9, seed=2)
    hidden = ck.config.text_config.hidden_size
    feeds = {"ids": np.array(ids, np.int32), "image_rows": np.full(len(ids), -1, np.int32),
             "image_embeds": np.zeros((1, hidden), np.float32),
             **{f"deepstack.{i}": np.zeros((1, hidden), np.float32) for i in range(2)}}
    ours = interpret(md.graph, feeds, weights)["logits"]
    assert rel_err(ours, hf_logits(ck.model, ids)) <= 1e-4
