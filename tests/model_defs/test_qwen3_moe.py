"""Qwen3-MoE model def: config parsing and the declared graph's layers."""
from __future__ import annotations

import pytest

from inference_pio.model_defs import ConfigError, from_hf_config

BASE = {"architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 31, "hidden_size": 16, "intermediate_size": 9,
        "moe_intermediate_size": 5, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 6, "num_experts": 6, "num_experts_per_tok": 2}


def test_parses_the_published_fields_and_picks_sparse_layers():
    md = from_hf_config({**BASE, "norm_topk_prob": True, "decoder_sparse_step": 2, "mlp_only_layers": [3],
                         "router_aux_loss_coef": 0.001})
    c = md.config
    assert md.family == "qwen3_moe" and md.spec.targets == ("llvm", "cuda")
    assert (c.num_experts, c.num_experts_per_tok, c.moe_intermediate_size, c.norm_topk_prob) == (6, 2, 5, True)
    assert [c.sparse(i) for i in range(4)] == [False, True, False, False]  # step 2: layers 1, 3; 3 is mlp-only
    assert md.graph.count("moe_experts") == 1 and md.graph.count("moe_gates") == 1
    assert md.config_dict()["mlp_only_layers"] == (3,)
    params = {p.name: p for p in md.graph.params()}
    w_in = params["model.layers.1.mlp.experts.gate_up_proj"]
    assert w_in.shape == (6, 10, 16) and w_in.attr("experts") == 6
    assert w_in.attr("concat")[:3] == ("model.layers.1.mlp.experts.0.gate_proj.weight",
                                       "model.layers.1.mlp.experts.0.up_proj.weight",
                                       "model.layers.1.mlp.experts.1.gate_proj.weight")
    assert params["model.layers.1.mlp.experts.down_proj"].shape == (6, 16, 5)
    assert "model.layers.0.mlp.gate_proj.weight" in params  # a dense layer


def test_transformers_5_name_for_the_expert_count():
    cfg = {k: v for k, v in BASE.items() if k != "num_experts"}
    assert from_hf_config({**cfg, "num_local_experts": 7}).config.num_experts == 7


@pytest.mark.parametrize("kw,match", [
    ({"num_experts": None}, "lacks required field 'num_experts'"),
    ({"moe_intermediate_size": None}, "lacks required field 'moe_intermediate_size'"),
    ({"num_experts_per_tok": 7}, "num_experts_per_tok=7: expected at most num_experts=6"),
    ({"mlp_only_layers": [4]}, r"mlp_only_layers=\(4,\): expected layer indices in \[0, 4\)"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported"),
])
def test_bad_configs_name_the_field(kw, match):
    cfg = {k: v for k, v in {**BASE, **kw}.items() if v is not None}
    with pytest.raises(ConfigError, match=match):
        from_hf_config(cfg)
