"""GLM-4.5 MoE model def: config parsing, the declared graph, multi-token-prediction layers."""
from __future__ import annotations

import pytest

from inference_pio.model_defs import ConfigError, from_hf_config

BASE = {"architectures": ["Glm4MoeForCausalLM"], "vocab_size": 31, "hidden_size": 16, "intermediate_size": 9,
        "moe_intermediate_size": 5, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 8, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1,
        "first_k_dense_replace": 1, "attention_bias": True, "use_qk_norm": True, "routed_scaling_factor": 2.5,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "partial_rotary_factor": 0.5}}


def test_parses_the_published_fields():
    md = from_hf_config({**BASE, "num_nextn_predict_layers": 1})
    c = md.config
    assert md.family == "glm4_moe" and md.spec.targets == ("llvm", "cuda")
    assert (c.n_routed_experts, c.n_group, c.topk_group, c.routed_scaling_factor) == (8, 2, 1, 2.5)
    assert (c.rotary_dim, c.rope_theta, c.use_qk_norm, c.n_shared_experts) == (4, 1e6, True, 1)
    g = md.graph
    assert g.count("moe_experts") == 2 and g.count("moe_gates") == 2  # layer 0 is dense
    gates = next(n for n in g.nodes() if n.op == "moe_gates")
    assert gates.attr_dict == {"top_k": 2, "normalize": True, "scoring": "sigmoid", "n_group": 2, "topk_group": 1,
                               "scale": 2.5}
    params = {p.name: p for p in g.params()}
    router = params["model.layers.1.mlp.gate.weight"]
    assert router.dtype == "float32" and router.attr("keep_dtype")
    assert params["model.layers.1.mlp.gate.e_score_correction_bias"].shape == (8,)
    assert "model.layers.1.mlp.shared_experts.gate_proj.weight" in params
    assert "model.layers.0.self_attn.q_proj.bias" in params and "model.layers.0.self_attn.o_proj.bias" not in params
    assert md.spec.ignored(c) == ("model.layers.3.",)  # the MTP layer after the 3 decoder layers
    rot = next(n for n in g.nodes() if n.op == "positional")
    assert rot.attr("rotary_dim") == 4


def test_older_config_spellings():
    cfg = {k: v for k, v in BASE.items() if k not in ("rope_parameters", "n_routed_experts")}
    c = from_hf_config({**cfg, "rope_theta": 5e5, "partial_rotary_factor": 0.25, "num_local_experts": 8}).config
    assert (c.rope_theta, c.rotary_dim, c.n_routed_experts) == (5e5, 2, 8)
    c = from_hf_config(cfg | {"n_routed_experts": 8}).config  # transformers' defaults: theta 1e4, half rotated
    assert (c.rope_theta, c.rotary_dim) == (1e4, 4)


def test_bf16_compile_keeps_the_router_fp32():
    from inference_pio.engine.compiler import cast_params

    g = cast_params(from_hf_config(BASE).graph, "bfloat16")
    params = {p.name: p for p in g.params()}
    assert params["model.layers.1.mlp.gate.weight"].dtype == "float32"
    assert params["model.layers.1.mlp.gate.e_score_correction_bias"].dtype == "float32"
    assert params["model.layers.1.mlp.experts.gate_up_proj"].dtype == "bfloat16"


@pytest.mark.parametrize("kw,match", [
    ({"n_routed_experts": None}, "lacks required field 'n_routed_experts'"),
    ({"n_group": 3}, "n_group=3: expected a divisor of n_routed_experts=8"),
    ({"num_experts_per_tok": 5}, "num_experts_per_tok=5: expected at most topk_group=1 groups of 4 experts"),
    ({"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.375}},
     "partial_rotary_factor=0.375: expected a fraction in"),
])
def test_bad_configs_name_the_field(kw, match):
    cfg = {k: v for k, v in {**BASE, **kw}.items() if v is not None}
    with pytest.raises(ConfigError, match=match):
        from_hf_config(cfg)


def test_qwen3_refuses_partial_rotary():
    from inference_pio.model_defs import from_hf_config as f

    with pytest.raises(ConfigError, match="partial_rotary_factor=0.5 is not supported for qwen3"):
        f({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 31, "hidden_size": 16, "intermediate_size": 9,
           "num_hidden_layers": 1, "num_attention_heads": 4, "partial_rotary_factor": 0.5})
