"""Qwen3-Next model def: config parsing, layer kinds and the declared graph."""
from __future__ import annotations

import pytest

from inference_pio.model_defs import ConfigError, from_hf_config

BASE = {"architectures": ["Qwen3NextForCausalLM"], "vocab_size": 31, "hidden_size": 16, "intermediate_size": 9,
        "moe_intermediate_size": 5, "shared_expert_intermediate_size": 7, "num_hidden_layers": 6,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "num_experts": 6,
        "num_experts_per_tok": 2, "linear_key_head_dim": 4, "linear_value_head_dim": 6, "linear_num_key_heads": 2,
        "linear_num_value_heads": 4}


def test_layer_kinds_follow_the_full_attention_interval():
    md = from_hf_config({**BASE, "full_attention_interval": 3, "mlp_only_layers": [0]})
    c = md.config
    assert md.family == "qwen3_next" and md.spec.targets == ("llvm", "cuda")
    assert c.layer_types == ("linear_attention", "linear_attention", "full_attention") * 2
    assert c.rotary_dim == 2 and c.rope_theta == 10000.0 and c.norm_topk_prob  # transformers' defaults
    g = md.graph
    assert g.count("gated_delta_rule") == 4 and g.count("causal_conv1d") == 4 and g.count("rms_norm_gated") == 4
    assert g.count("softmax") == 2  # the plain attention of the two full-attention layers
    assert g.count("moe_experts") == 5  # all but the mlp-only layer 0
    params = {p.name: p for p in g.params()}
    assert params["model.layers.0.linear_attn.conv1d.weight"].shape == (2 * 8 + 24, 1, 4)
    assert params["model.layers.0.linear_attn.in_proj_qkvz.weight"].shape == (2 * 8 + 2 * 24, 16)
    assert params["model.layers.2.self_attn.q_proj.weight"].shape == (2 * 4 * 8, 16)
    assert params["model.layers.1.mlp.shared_expert_gate.weight"].shape == (1, 16)
    norms = [n for n in g.ops() if n.op == "rms_norm"]
    assert norms and all(n.attr("offset") == 1.0 for n in norms)  # weights stored as w - 1


def test_explicit_layer_types_win():
    types = ["full_attention", "linear_attention"] * 3
    assert from_hf_config({**BASE, "layer_types": types}).config.layer_types == tuple(types)


@pytest.mark.parametrize("kw,match", [
    ({"layer_types": ["full_attention"] * 5}, "layer_types"),
    ({"layer_types": ["sliding_attention"] * 6}, "layer_types"),
    ({"linear_num_value_heads": 3}, "linear_num_value_heads=3: expected a multiple of linear_num_key_heads=2"),
    ({"linear_conv_kernel_dim": 1}, "linear_conv_kernel_dim=1"),
    ({"partial_rotary_factor": 0.375}, "partial_rotary_factor"),
    ({"num_experts": None}, "lacks required field 'num_experts'"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn' is not supported"),
])
def test_bad_configs_name_the_field(kw, match):
    with pytest.raises(ConfigError, match=match):
        from_hf_config({**BASE, **kw})
