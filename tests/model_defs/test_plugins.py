"""Third-party families arrive through the `inference_pio.model_families` entry-point group."""
from __future__ import annotations

import sys
import textwrap

import pytest

from inference_pio import model_defs
from inference_pio.model_defs import ConfigError, ModelSpec


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed-looking distribution whose entry point names a ModelSpec."""
    (tmp_path / "toy_family.py").write_text(textwrap.dedent("""
        from inference_pio.model_defs import ModelSpec, qwen3
        SPEC = ModelSpec("toy", ("ToyForCausalLM",), qwen3.Qwen3Config.from_hf, qwen3.build, targets=("llvm",),
                         version="0.1")
    """))
    dist = tmp_path / "toy_family-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-family\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[inference_pio.model_families]\ntoy = toy_family:SPEC\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(model_defs, "_plugins_loaded", False)
    saved = dict(model_defs.MODELS)
    yield
    model_defs.MODELS.clear()
    model_defs.MODELS.update(saved)
    sys.modules.pop("toy_family", None)


def test_entry_point_family_is_found(plugin):
    spec = model_defs.lookup("ToyForCausalLM")
    assert isinstance(spec, ModelSpec) and spec.name == "toy" and spec.version == "0.1"
    hf = {"architectures": ["ToyForCausalLM"], "vocab_size": 11, "hidden_size": 8, "intermediate_size": 12,
          "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4}
    md = model_defs.from_hf_config(hf)
    assert md.family == "toy" and md.graph.count("linear") > 0


def test_unknown_architecture_lists_what_is_supported():
    with pytest.raises(ConfigError, match=r"unknown architecture 'LlamaForCausalLM'; supported: .*Qwen3ForCausalLM"):
        model_defs.lookup("LlamaForCausalLM")
