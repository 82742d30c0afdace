from __future__ import annotations

import numpy as np
import pytest

from graph_helpers import assert_same_numerics, op_counts
from inference_pio.ir import GraphBuilder
from inference_pio.model_defs import blocks
from inference_pio.passes import rewrite_attention


def attn_graph(hq: int, hkv: int, d: int = 4, causal: bool = True, scaled: bool = True):
    b = GraphBuilder("attn")
    q, k, v = b.input("q", ("T", hq, d), "float32"), b.input("k", ("T", hkv, d), "float32"), \
        b.input("v", ("T", hkv, d), "float32")
    if causal and scaled:
        o = blocks.plain_attention(b, q, k, v, scale=0.5)
    else:  # written out by hand: non-causal, or without the scale the pattern requires
        if hq != hkv:
            k, v = b.repeat(k, axis=1, times=hq // hkv), b.repeat(v, axis=1, times=hq // hkv)
        s = b.matmul(b.transpose(q, perm=(1, 0, 2)), b.transpose(k, perm=(1, 2, 0)))
        if scaled:
            s = b.scale(s, factor=0.5)
        if causal:
            s = b.causal_mask(s)
        o = b.transpose(b.matmul(b.softmax(s), b.transpose(v, perm=(1, 0, 2))), perm=(1, 0, 2))
    return b.build({"o": b.silu(o)})


def feeds(hq, hkv, d=4, t=5, seed=0):
    rng = np.random.default_rng(seed)
    return {"q": rng.standard_normal((t, hq, d)).astype(np.float32),
            "k": rng.standard_normal((t, hkv, d)).astype(np.float32),
            "v": rng.standard_normal((t, hkv, d)).astype(np.float32)}


@pytest.mark.parametrize("hq,hkv", [(2, 2), (6, 2), (5, 1)])
@pytest.mark.parametrize("causal", [True, False])
def test_plain_attention_is_fused(hq, hkv, causal):
    g = attn_graph(hq, hkv, causal=causal)
    g2 = rewrite_attention(g)
    assert op_counts(g2) == {"attention": 1, "silu": 1}
    att = g2.output("o").inputs[0]
    assert att.op == "attention" and att.attr("causal") is causal and att.attr("scale") == 0.5
    # kv heads stay un-repeated: the fused op shares them
    assert att.inputs[1] is g.inputs[1] and att.inputs[2] is g.inputs[2]
    assert f"= attention(%q, %k, %v, causal={causal}, scale=0.5) : f32[T, {hq}, 4]" in str(g2)
    assert_same_numerics(g, g2, feeds(hq, hkv), {})


def test_non_matching_pattern_is_left_alone():
    g = attn_graph(2, 2, causal=False, scaled=False)  # no scale op: not the declared pattern
    g2 = rewrite_attention(g)
    assert g2.count("attention") == 0 and g2.count("softmax") == 1
    assert str(g2) == str(g)


def test_each_layer_fused_independently():
    b = GraphBuilder("two")
    x = b.input("x", ("T", 2, 4), "float32")
    h = blocks.plain_attention(b, x, x, x, scale=0.5)
    h = blocks.plain_attention(b, h, h, h, scale=0.25)
    g = b.build({"o": h})
    g2 = rewrite_attention(g)
    assert op_counts(g2) == {"attention": 2}
    rng = np.random.default_rng(1)
    assert_same_numerics(g, g2, {"x": rng.standard_normal((4, 2, 4)).astype(np.float32)}, {})
