"""The pass pipeline: ordering, verification between passes, errors naming the pass, dumps;
and the default pipeline over a whole Qwen3 graph keeps its numerics."""
from __future__ import annotations

import numpy as np
import pytest

from graph_helpers import assert_same_numerics, random_weights
from inference_pio import model_defs
from inference_pio.ir import GraphBuilder, GraphError, Node, TensorType
from inference_pio.passes import NamedPass, PassError, default_passes, insert_rotary, run


def small_graph():
    b = GraphBuilder("g")
    x = b.input("x", ("T", 2, 4), "float32")
    return b.build({"y": b.silu(b.positional(x, theta=1e4, rotary_dim=4))})


def boom(_g):
    raise RuntimeError("kaboom")


def breaks_types(g):
    """Returns a graph whose silu claims a wrong type: the verifier must catch it."""
    from inference_pio.ir import Graph

    out = g.outputs[0][1]
    bad = Node("silu", out.inputs, TensorType(("T", 9), "float32"))
    return Graph(g.name, g.inputs, (("y", bad),), g.meta)


def test_pass_error_names_the_failing_pass_and_those_before():
    passes = [NamedPass("insert_rotary", insert_rotary), NamedPass("boom", boom)]
    with pytest.raises(PassError, match=r"pass 'boom' failed \(after insert_rotary\): kaboom") as e:
        run(small_graph(), passes)
    assert isinstance(e.value.__cause__, RuntimeError)


def test_first_pass_failing_has_no_after_clause():
    with pytest.raises(PassError, match=r"^pass 'boom' failed: kaboom$"):
        run(small_graph(), [NamedPass("boom", boom)])


def test_invalid_output_graph_is_caught_between_passes():
    with pytest.raises(PassError, match=r"pass 'breaks_types' failed.*stored type f32\[T, 9\]") as e:
        run(small_graph(), [NamedPass("breaks_types", breaks_types), NamedPass("insert_rotary", insert_rotary)])
    assert isinstance(e.value.__cause__, GraphError)


def test_verify_each_false_skips_verification():
    g = run(small_graph(), [NamedPass("breaks_types", breaks_types)], verify_each=False)
    assert g.output("y").shape == ("T", 9)


def test_invalid_input_graph_rejected_before_any_pass():
    g = breaks_types(small_graph())
    with pytest.raises(GraphError, match="stored type"):
        run(g, [NamedPass("boom", boom)])


def test_dump_dir_writes_one_numbered_file_per_pass(tmp_path):
    g = small_graph()
    out = run(g, [NamedPass("insert_rotary", insert_rotary), NamedPass("noop", lambda g: g)], dump_dir=tmp_path / "d")
    files = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert files == ["00_input.txt", "01_insert_rotary.txt", "02_noop.txt"]
    assert (tmp_path / "d" / "00_input.txt").read_text() == str(g) + "\n"
    assert (tmp_path / "d" / "02_noop.txt").read_text() == str(out) + "\n"
    assert "rotary(" in (tmp_path / "d" / "01_insert_rotary.txt").read_text()


def test_dump_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("INFERENCE_PIO_DUMP", str(tmp_path / "env"))
    run(small_graph(), [NamedPass("insert_rotary", insert_rotary)])
    assert sorted(p.name for p in (tmp_path / "env").iterdir()) == ["00_input.txt", "01_insert_rotary.txt"]


def test_no_dump_by_default(tmp_path, monkeypatch):
    monkeypatch.delenv("INFERENCE_PIO_DUMP", raising=False)
    monkeypatch.chdir(tmp_path)
    run(small_graph(), [NamedPass("insert_rotary", insert_rotary)])
    assert list(tmp_path.iterdir()) == []


def test_default_passes_are_named_and_ordered():
    names = [p.name for p in default_passes()]
    assert len(set(names)) == len(names)
    for earlier, later in [("insert_rotary", "rewrite_attention"), ("rewrite_attention", "fuse_projections"),
                           ("fuse_projections", "fuse_swiglu")]:
        assert names.index(earlier) < names.index(later)


# **** the default pipeline on a whole model ****

HF = {"architectures": ["Qwen3ForCausalLM"], "vocab_size": 23, "hidden_size": 12, "intermediate_size": 7,
      "num_hidden_layers": 2, "num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 4,
      "attention_bias": True, "tie_word_embeddings": False, "dtype": "float32"}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_default_pipeline_on_qwen3_keeps_numerics(dtype, tmp_path):
    md = model_defs.from_hf_config(HF, dtype)
    g = md.graph
    g2 = run(g, default_passes(), dump_dir=tmp_path)
    layers = HF["num_hidden_layers"]
    assert g2.count("positional") == 0 and g2.count("softmax") == 0 and g2.count("causal_mask") == 0
    assert g2.count("attention") == layers
    assert g2.count("rope_table") == 1  # one table, shared by q and k of every layer
    fused = sorted(p.name for p in g2.params() if p.attr("concat"))
    assert "model.layers.0.self_attn.q+k+v_proj.weight" in fused
    assert "model.layers.0.self_attn.q+k+v_proj.bias" in fused
    assert "model.layers.1.mlp.gate+up_proj.weight" in fused
    assert len(list(tmp_path.iterdir())) == len(default_passes()) + 1
    rng = np.random.default_rng(0)
    ids = rng.integers(0, HF["vocab_size"], size=6).astype(np.int32)
    feeds = {"ids": ids, "positions": np.arange(6, dtype=np.int32)}
    assert_same_numerics(g, g2, feeds, random_weights(g, rng), rtol=1e-4)
