"""Qwen3 model def: config parsing, the registry, the declared graph, and the graph's meaning
(interpreted in numpy) against transformers."""
from __future__ import annotations

import numpy as np
import pytest

from hf_fixtures import QWEN3_CONFIGS, hf_logits, rel_err, token_ids
from inference_pio import model_defs
from inference_pio.frontends import huggingface
from inference_pio.ir import interpret
from inference_pio.model_defs import ConfigError, ModelSpec, from_hf_config, lookup
from inference_pio.model_defs.qwen3 import Qwen3Config

BASE = {"architectures": ["Qwen3ForCausalLM"], "vocab_size": 31, "hidden_size": 16, "intermediate_size": 9,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 6}


def cfg(**kw):
    d = dict(BASE)
    for k, v in kw.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def test_parses_a_transformers_5_config():
    md = from_hf_config(cfg(rope_parameters={"rope_type": "default", "rope_theta": 5e5}, rms_norm_eps=1e-5,
                            tie_word_embeddings=True, attention_bias=True, max_position_embeddings=128,
                            dtype="bfloat16", use_cache=True))
    c = md.config
    assert (c.rope_theta, c.rms_norm_eps, c.tie_word_embeddings, c.attention_bias) == (5e5, 1e-5, True, True)
    assert c.max_position_embeddings == 128 and c.dtype == "bfloat16"
    assert md.family == "qwen3"
    assert "extra" not in md.config_dict() and md.config_dict()["head_dim"] == 6
    assert c.extra.get("use_cache") is True  # unknown fields are kept aside, not rejected


def test_defaults_and_legacy_fields():
    md = from_hf_config(cfg(num_key_value_heads=None, head_dim=None, rope_theta=1e4, torch_dtype="torch.float16"))
    c = md.config
    assert c.num_key_value_heads == 4 and c.head_dim == 4 and c.rope_theta == 1e4 and c.dtype == "float16"
    assert from_hf_config(cfg()).config.dtype == "float32"
    assert from_hf_config(cfg(), dtype="bfloat16").config.dtype == "bfloat16"  # explicit override wins


@pytest.mark.parametrize("kw,match", [
    ({"architectures": None}, "no 'architectures' list"),
    ({"architectures": ["LlamaForCausalLM"]}, r"unknown architecture 'LlamaForCausalLM'; supported: .*Qwen3ForCausalLM"),
    ({"hidden_size": None}, "lacks required field 'hidden_size'"),
    ({"vocab_size": None}, "lacks required field 'vocab_size'"),
    ({"head_dim": 7}, r"head_dim=7: expected even"),
    ({"num_key_value_heads": 3}, r"num_attention_heads=4: expected a multiple of num_key_value_heads=3"),
    ({"vocab_size": 0}, r"vocab_size=0: expected a positive int"),
    ({"hidden_size": "16"}, r"hidden_size='16': expected a positive int"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported"),
    ({"use_sliding_window": True}, "use_sliding_window=true is not supported"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn' is not supported"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope type 'linear' is not supported"),
    ({"rope_theta": -1}, r"rope_theta=-1: expected a positive number"),
    ({"dtype": "float64"}, r"dtype 'float64' is not supported by qwen3"),
])
def test_config_errors_name_the_field(kw, match):
    with pytest.raises(ConfigError, match=match):
        from_hf_config(cfg(**kw))


def test_lookup_and_plugin_registration():
    assert lookup("Qwen3ForCausalLM").name == "qwen3"
    spec = ModelSpec("toy", ("ToyForCausalLM",), Qwen3Config.from_hf, lambda c: None)
    model_defs.register(spec)
    try:
        assert lookup("ToyForCausalLM") is spec
    finally:
        model_defs.MODELS.pop("ToyForCausalLM")
    with pytest.raises(ConfigError, match="unknown architecture 'ToyForCausalLM'"):
        lookup("ToyForCausalLM")


@pytest.mark.parametrize("tied", [True, False])
def test_graph_structure(tied):
    md = from_hf_config(cfg(tie_word_embeddings=tied))
    g = md.graph
    names = {p.name for p in g.params()}
    assert ("lm_head.weight" in names) is not tied
    assert md.spec.ignored(md.config) == (("lm_head.weight",) if tied else ())
    assert "model.layers.1.self_attn.q_norm.weight" in names and "model.norm.weight" in names
    assert len(names) == 1 + (not tied) + 1 + 2 * 11  # embed, [head], final norm, 11 per layer
    assert [i.name for i in g.inputs] == ["ids"]
    assert g.output("logits").type.shape == ("seq_len", 31)
    assert g.output("logits").dtype == "float32"
    assert g.count("positional") == 4 and g.count("softmax") == 2 and g.count("repeat") == 4
    assert g.meta_dict() == {"family": "qwen3", "num_hidden_layers": 2, "vocab_size": 31,
                             "max_position_embeddings": 40960}


def test_attention_bias_covers_qkv_and_o():
    """transformers' Qwen3Attention gives o_proj a bias too when attention_bias is set."""
    names = {p.name for p in from_hf_config(cfg(attention_bias=True)).graph.params()}
    for proj in ("q", "k", "v", "o"):
        assert f"model.layers.0.self_attn.{proj}_proj.bias" in names


@pytest.mark.parametrize("name", sorted(QWEN3_CONFIGS))
def test_interpreted_graph_matches_transformers(models, name):
    """The declared graph, run by the numpy interpreter on the checkpoint's weights, is the model."""
    dtype = "bfloat16" if name == "bf16" else "float32"
    ck = models.checkpoint(name, dtype=dtype)
    md = huggingface.model_def(ck.path)
    weights = huggingface.load_for_graph(md, md.graph, ck.path)
    ids = token_ids(ck.config.vocab_size, 9, seed=4)
    ours = interpret(md.graph, {"ids": np.array(ids, np.int32)}, weights)["logits"]
    if dtype == "float32":
        ref = hf_logits(ck.model, ids)
        assert rel_err(ours, ref) <= 1e-4
    else:
        from hf_fixtures import load_reference

        assert rel_err(ours, hf_logits(load_reference(ck.path, "float32"), ids)) <= 1e-4
