from __future__ import annotations

import numpy as np
import pytest

from graph_helpers import assert_same_numerics, op_counts, random_weights
from inference_pio.ir import GraphBuilder
from inference_pio.model_defs import blocks
from inference_pio.passes import fuse_projections
from inference_pio.passes.fuse_projections import fused_name


def qkv_graph(bias: bool = False, dtype: str = "float32", k_dtype: str | None = None):
    b = GraphBuilder("qkv")
    x = b.input("x", ("T", 8), "float32")
    q = blocks.linear(b, x, "l.self_attn.q_proj", 8, 6, dtype, bias=bias)
    k = blocks.linear(b, x, "l.self_attn.k_proj", 8, 2, k_dtype or dtype, bias=bias)
    v = blocks.linear(b, x, "l.self_attn.v_proj", 8, 2, dtype, bias=bias)
    o = blocks.linear(b, b.silu(x), "l.self_attn.o_proj", 8, 3, dtype)  # another input: not fused
    return b.build({"q": q, "k": k, "v": v, "o": o})


def run(g, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((5, 8)).astype(np.float32)}, random_weights(g, rng)


def test_fused_name():
    assert fused_name(["a.q_proj.weight", "a.k_proj.weight", "a.v_proj.weight"]) == "a.q+k+v_proj.weight"
    assert fused_name(["m.gate_proj.weight", "m.up_proj.weight"]) == "m.gate+up_proj.weight"
    assert fused_name(["a.q_proj.bias", "a.k_proj.bias"]) == "a.q+k_proj.bias"


@pytest.mark.parametrize("bias", [False, True])
def test_qkv_fused_into_one_linear_and_slices(bias):
    g = qkv_graph(bias=bias)
    g2 = fuse_projections(g)
    assert op_counts(g2) == {"linear": 2, "slice": 3, "silu": 1}
    fused = next(p for p in g2.params() if p.attr("concat"))
    assert fused.name == "l.self_attn.q+k+v_proj.weight"
    assert fused.shape == (10, 8)
    assert fused.attr("concat") == ("l.self_attn.q_proj.weight", "l.self_attn.k_proj.weight",
                                    "l.self_attn.v_proj.weight")
    text = str(g2)
    assert "param @l.self_attn.q+k+v_proj.weight: f32[10, 8] axis=0 concat=(" in text
    assert "slice(%0, axis=1, start=0, stop=6) : f32[T, 6]" in text
    assert "slice(%0, axis=1, start=6, stop=8) : f32[T, 2]" in text
    assert "slice(%0, axis=1, start=8, stop=10) : f32[T, 2]" in text
    if bias:
        assert "param @l.self_attn.q+k+v_proj.bias: f32[10] axis=0 concat=(" in text
    feeds, w = run(g)
    assert_same_numerics(g, g2, feeds, w)


def test_different_weight_dtypes_are_not_fused():
    g = qkv_graph(k_dtype="bfloat16")
    g2 = fuse_projections(g)
    assert op_counts(g2) == {"linear": 3, "slice": 2, "silu": 1}  # q+v fused, k alone
    assert {p.name for p in g2.params() if p.attr("concat")} == {"l.self_attn.q+v_proj.weight"}
    feeds, w = run(g)
    assert_same_numerics(g, g2, feeds, w)


def test_single_linear_and_residual_linears_untouched():
    b = GraphBuilder("g")
    x = b.input("x", ("T", 4), "float32")
    r = b.input("r", ("T", 3), "float32")
    w1, w2 = b.param("a.weight", (3, 4), "float32"), b.param("b.weight", (3, 4), "float32")
    y = b.linear(x, w1, r, residual=True)
    z = b.linear(x, w2)
    g = b.build({"y": y, "z": z})
    g2 = fuse_projections(g)
    assert str(g2) == str(g)


def test_gate_up_of_every_layer_fused():
    b = GraphBuilder("mlp")
    h = b.input("x", ("T", 6), "float32")
    for i in range(2):
        h = b.add(h, blocks.gated_mlp(b, h, f"l{i}.mlp", 6, 5, "bfloat16"))
    g = b.build({"y": h})
    g2 = fuse_projections(g)
    assert op_counts(g2)["linear"] == 4  # per layer: gate+up, down
    assert sorted(p.name for p in g2.params() if p.attr("concat")) == ["l0.mlp.gate+up_proj.weight",
                                                                       "l1.mlp.gate+up_proj.weight"]
    rng = np.random.default_rng(3)
    assert_same_numerics(g, g2, {"x": rng.standard_normal((3, 6)).astype(np.float32)}, random_weights(g, rng))
