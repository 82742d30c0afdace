from __future__ import annotations

import numpy as np
import pytest

from graph_helpers import op_counts, random_weights
from inference_pio.ir import GraphBuilder, TensorType, interpret, np_dtype, op_node, param_node
from inference_pio.ir.ops import QMAX, TypeError_, dequantize_rows, quantize_rows
from inference_pio.passes.pack_weights import pack_weights
from inference_pio.passes.quantize_weights import quantize_weights


def test_quantize_rows_bounds_and_round_trip():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((37, 19)).astype(np.float32) * rng.uniform(0.01, 10, (37, 1)).astype(np.float32)
    w[3] = 0  # a zero row: scale 0, q 0
    q, s = quantize_rows(w, chunk=8)  # several chunks, the last partial
    assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == (37,)
    assert s[3] == 0 and not q[3].any()
    assert (np.abs(q).max(axis=1)[s > 0] == QMAX).all()  # each row's largest weight maps to +-127
    err = np.abs(dequantize_rows(q, s) - w)
    assert (err <= s[:, None] / 2 * (1 + 1e-6)).all()  # rounded to nearest
    q2, s2 = quantize_rows(w)
    assert (q2 == q).all() and (s2 == s).all()  # chunking does not change the result
    wb = w.astype(np_dtype("bfloat16"))  # bf16 is widened by its bits: the same as through fp32
    for a, b in zip(quantize_rows(wb, chunk=8), quantize_rows(wb.astype(np.float32))):
        assert (a == b).all()


def _model_graph(table_dtype: str = "bfloat16"):
    """An embedding tied to the LM head and a projection with bias and residual."""
    b = GraphBuilder("g")
    ids = b.input("ids", ("T",), "int32")
    emb = b.param("embed", (11, 6), table_dtype)
    h = b.embedding(emb, ids)
    up = b.linear(h, b.param("up", (6, 6), "float32"), b.param("up.bias", (6,), "float32"), h,
                  bias=True, residual=True)
    return b.build({"logits": b.linear(up, emb), "h": up})


def test_packed_weights_become_int8_with_scales():
    g = pack_weights(_model_graph(), block=4)
    q = quantize_weights(g)
    p = {x.name: x for x in q.params()}
    assert p["embed"].dtype == "int8" and p["embed"].attr("quant") == "int8" and p["embed"].shape == (3, 6, 4)
    assert p["embed.scale"].type == TensorType((11,), "float32") and p["embed.scale"].attr("scale_of") == "embed"
    assert p["up"].dtype == "int8" and p["up.scale"].shape == (6,)
    assert p["up.bias"].dtype == "float32"  # read as a bias, not a weight: kept
    assert op_counts(q) == op_counts(g)
    readers = [n for n in q.ops() if n.op in ("embedding", "linear_packed")]
    for n in readers:  # each reader takes the scale right after the weight (the table, for embedding)
        w, scale = (n.inputs[0], n.inputs[2]) if n.op == "embedding" else (n.inputs[1], n.inputs[2])
        assert scale.attr("scale_of") == w.name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numerics_are_those_of_the_dequantized_weights(seed):
    """The interpreted quantized graph equals the graph run on the fp32 weights scale * q."""
    rng = np.random.default_rng(seed)
    weights = random_weights(_model_graph(), rng)
    deq = {k: dequantize_rows(*quantize_rows(v)) if k in ("embed", "up") else v for k, v in weights.items()}
    feeds = {"ids": np.array([0, 10, 3, 7], np.int32)}
    ref = interpret(pack_weights(_model_graph("float32"), block=4), feeds, deq)
    ours = interpret(quantize_weights(pack_weights(_model_graph(), block=4)), feeds, weights)
    for k in ref:
        np.testing.assert_allclose(ours[k], ref[k], rtol=0, atol=1e-5 * np.abs(ref[k]).max())


def test_only_packed_weights_are_quantized():
    b = GraphBuilder("g")
    x = b.input("x", ("T", 4), "float32")
    g = b.build({"y": b.linear(x, b.param("w", (4, 4), "float32"))})
    assert op_counts(quantize_weights(g)) == op_counts(g)
    assert [p.dtype for p in quantize_weights(g).params()] == ["float32"]


def test_unknown_quantization_is_an_error():
    with pytest.raises(ValueError, match="int4"):
        quantize_weights(_model_graph(), dtype="int4")


def test_int8_weight_needs_its_scale():
    x = op_node("embedding", [param_node("t", TensorType((5, 3), "float32")),
                              param_node("i", TensorType(("T",), "int32"))])
    w8 = param_node("w", TensorType((4, 3), "int8"))
    with pytest.raises(TypeError_, match="scale"):
        op_node("linear", [x, w8])
    with pytest.raises(TypeError_, match="scale"):
        op_node("linear", [x, w8, param_node("s", TensorType((3,), "float32"))])  # one per row: 4
    y = op_node("linear", [x, w8, param_node("s", TensorType((4,), "float32"))])
    assert y.type == TensorType(("T", 4), "float32")


def _experts_graph():
    b = GraphBuilder("g")
    x = b.input("x", ("T", 6), "float32")
    gates = b.moe_gates(b.linear(x, b.param("router", (4, 6), "float32")), top_k=2)
    w_in, w_out = b.param("w_in", (4, 10, 6), "float32"), b.param("w_out", (4, 6, 5), "float32")
    return b.build({"y": b.moe_experts(x, gates, w_in, w_out)})


def test_expert_stacks_get_per_expert_row_scales():
    q = quantize_weights(pack_weights(_experts_graph(), block=4))
    p = {x.name: x for x in q.params()}
    assert p["w_in"].dtype == "int8" and p["w_in.scale"].type == TensorType((4, 10), "float32")
    assert p["w_out.scale"].shape == (4, 6) and p["router.scale"].shape == (4,)
    moe = next(n for n in q.ops() if n.op == "moe_experts")
    assert [i.name for i in moe.inputs[2:]] == ["w_in", "w_in.scale", "w_out", "w_out.scale"]
    rng = np.random.default_rng(0)
    weights = random_weights(_experts_graph(), rng)
    deq = {k: dequantize_rows(*quantize_rows(v)) for k, v in weights.items()}
    feeds = {"x": rng.standard_normal((5, 6)).astype(np.float32)}
    ref = interpret(_experts_graph(), feeds, deq)["y"]
    np.testing.assert_allclose(interpret(q, feeds, weights)["y"], ref, rtol=0, atol=1e-5 * np.abs(ref).max())
