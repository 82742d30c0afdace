"""The graph IR: types, the builder, the printer, rewriting and the interpreter."""
from __future__ import annotations

import numpy as np
import pytest

from inference_pio.ir import (Graph, GraphBuilder, Node, TensorType, format_graph, input_node, interpret,
                              op_node, param_node, rewrite, users)

GOLDEN = """\
graph tiny(%ids: i32[seq_len]) {
  meta family = t
  meta vocab_size = 11
  param @embed: f32[11, 4]
  %0 = embedding(@embed, %ids) : f32[seq_len, 4]
  param @norm: bf16[4]
  %1 = rms_norm(%0, @norm, eps=1e-06) : f32[seq_len, 4]
  %2 = reshape(%1, shape=(seq_len, 2, 2)) : f32[seq_len, 2, 2]
  %3 = positional(%2, rotary_dim=2, theta=10000.0) : f32[seq_len, 2, 2]
  %4 = reshape(%3, shape=(seq_len, 4)) : f32[seq_len, 4]
  %5 = linear(%4, @embed) : f32[seq_len, 11]
  return logits=%5, hidden=%1
}"""


def tiny() -> Graph:
    b = GraphBuilder("tiny")
    ids = b.input("ids", ("seq_len",), "int32")
    emb = b.param("embed", (11, 4), "float32")
    n = b.rms_norm(b.embedding(emb, ids), b.param("norm", (4,), "bfloat16"), eps=1e-6)
    r = b.positional(b.reshape(n, shape=("seq_len", 2, 2)), theta=10000.0, rotary_dim=2)
    y = b.linear(b.reshape(r, shape=("seq_len", 4)), b.param("embed", (11, 4), "float32"))  # tied: interned
    return b.build({"logits": y, "hidden": n}, family="t", vocab_size=11)


# **** types ****


def test_tensor_type_str_and_helpers():
    t = TensorType(("seq_len", 8), "bfloat16")
    assert str(t) == "bf16[seq_len, 8]"
    assert t.ndim == 2
    assert t.with_dtype("float32") == TensorType(("seq_len", 8), "float32")
    assert t.with_shape([3]) == TensorType((3,), "bfloat16")
    assert str(TensorType((), "int32")) == "i32[]"


@pytest.mark.parametrize("shape,dtype,match", [
    ((2,), "float64", "unsupported dtype 'float64'"),
    ((-1,), "float32", "bad dim -1"),
    (("not an id",), "float32", "bad dim 'not an id'"),
    (("n/0",), "float32", "bad dim 'n/0'"),
    (("n/x",), "float32", "bad dim 'n/x'"),
    ((2.0,), "float32", "bad dim 2.0"),
])
def test_tensor_type_rejects(shape, dtype, match):
    with pytest.raises(ValueError, match=match):
        TensorType(shape, dtype)


def test_divided_dims_reshape_by_their_factor():
    """"patches/4": a symbolic dim divided by 4, so (patches, 8) reshapes to (patches/4, 32)."""
    x = input_node("x", TensorType(("patches", 8), "float32"))
    y = op_node("reshape", [x], shape=("patches/4", 32))
    assert y.shape == ("patches/4", 32)
    with pytest.raises(ValueError, match="cannot reshape"):
        op_node("reshape", [x], shape=("patches/4", 8))


def test_node_attrs_are_sorted_frozen_and_drop_none():
    x = input_node("x", TensorType((4, 6), "float32"))
    n = op_node("transpose", [x], perm=[1, 0])
    assert n.attrs == (("perm", (1, 0)),)  # lists frozen to tuples: hashable, comparable
    s = op_node("slice", [x], axis=1, start=2, stop=None)
    assert s.attr_dict == {"axis": 1, "start": 2}
    assert s.attr("stop") is None and s.attr("stop", 7) == 7
    assert s.shape == (4, 4) and s.dtype == "float32" and s.ndim == 2


def test_op_node_type_errors_name_the_op_and_operands():
    a = input_node("a", TensorType((2, 3), "float32"))
    b = input_node("b", TensorType((2, 3), "bfloat16"))
    with pytest.raises(ValueError, match=r"add\(f32\[2, 3\], bf16\[2, 3\]\): operands must have equal types"):
        op_node("add", [a, b])
    w = input_node("w", TensorType((5, 4), "float32"))
    with pytest.raises(ValueError, match=r"linear\(.*\): x last dim \(3,\) must equal weight dim 1 of \(5, 4\)"):
        op_node("linear", [a, w])
    with pytest.raises(ValueError, match="unknown op 'nope'"):
        op_node("nope", [a])
    with pytest.raises(ValueError, match="silu: expects 1 operands, got 2"):
        op_node("silu", [a, a])


# **** builder ****


def test_builder_interns_params_by_name():
    b = GraphBuilder("g")
    p1 = b.param("w", (3, 4), "float32")
    p2 = b.param("w", (3, 4), "float32")
    assert p1 is p2
    with pytest.raises(ValueError, match=r"param 'w' declared as f32\[3, 4\] and bf16\[3, 4\]"):
        b.param("w", (3, 4), "bfloat16")


def test_tied_params_appear_once():
    g = tiny()
    assert [p.name for p in g.params()] == ["embed", "norm"]
    assert g.count("param") == 2


def test_builder_unknown_op_is_attribute_error():
    with pytest.raises(AttributeError, match="no op named 'conv2d'"):
        GraphBuilder("g").conv2d


def test_build_verifies():
    b = GraphBuilder("g")
    x = b.input("x", (2,), "float32")
    stray = input_node("stray", TensorType((2,), "float32"))  # not declared through the builder
    with pytest.raises(ValueError, match="input 'stray' is used but not a graph input"):
        b.build({"y": b.add(x, stray)})


# **** printer ****


def test_printer_golden():
    assert str(tiny()) == GOLDEN
    assert format_graph(tiny()) == GOLDEN


def test_printer_is_stable():
    """Same graph built twice prints identically (node numbering does not depend on ids)."""
    assert str(tiny()) == str(tiny())
    g = tiny()
    assert str(g) == str(g)


def test_printer_shows_param_attrs_and_shape_only_inputs():
    p = param_node("a.q+k_proj.weight", TensorType((6, 4), "float32"), concat=("a.q_proj.weight", "a.k_proj.weight"),
                   axis=0)
    x = input_node("x", TensorType((2, 4), "float32"))
    g = Graph("g", (x,), (("y", op_node("linear", [x, p])),))
    text = str(g)
    assert "  param @a.q+k_proj.weight: f32[6, 4] axis=0 concat=(a.q_proj.weight, a.k_proj.weight)" in text
    assert "%0 = linear(%x, @a.q+k_proj.weight) : f32[2, 6]" in text


# **** traversal ****


def test_nodes_are_topological_and_unique():
    g = tiny()
    order = g.nodes()
    pos = {id(n): i for i, n in enumerate(order)}
    assert len(pos) == len(order)
    for n in order:
        for i in n.inputs:
            assert pos[id(i)] < pos[id(n)]
    assert [n.op for n in g.ops()] == ["embedding", "rms_norm", "reshape", "positional", "reshape", "linear"]
    assert g.output("hidden").op == "rms_norm"
    with pytest.raises(KeyError, match="no output 'nope'"):
        g.output("nope")


def test_users():
    g = tiny()
    u = users(g)
    emb = g.params()[0]
    assert sorted(n.op for n in u[id(emb)]) == ["embedding", "linear"]
    assert [n.op for n in u[id(g.output("hidden"))]] == ["reshape"]


# **** rewrite ****


def _double_silu(n: Node, _old: Node):
    return op_node("scale", [n], factor=2.0) if n.op == "silu" else None


def _chain() -> Graph:
    b = GraphBuilder("chain")
    x = b.input("x", ("T", 3), "float32")
    return b.build({"y": b.add(b.silu(x), x)}, note="kept")


def test_rewrite_leaves_the_input_graph_unchanged():
    g = _chain()
    before, nodes_before = str(g), g.nodes()
    g2 = rewrite(g, _double_silu)
    assert str(g) == before
    assert all(a is b for a, b in zip(g.nodes(), nodes_before))
    assert g2.count("scale") == 1 and g.count("scale") == 0
    assert "%1 = scale(%0, factor=2.0) : f32[T, 3]" in str(g2)


def test_rewrite_identity_shares_nodes():
    g = _chain()
    g2 = rewrite(g, lambda n, old: None)
    assert all(a is b for a, b in zip(g.nodes(), g2.nodes()))
    assert str(g2) == str(g)


def test_rewrite_keeps_inputs_and_merges_meta():
    g = _chain()
    g2 = rewrite(g, _double_silu, name="chain2", extra=3)
    assert g2.inputs == g.inputs
    assert g2.name == "chain2"
    assert g2.meta_dict() == {"note": "kept", "extra": 3}
    g2.verify()


def test_rewrite_numerics_match_interpretation():
    g = _chain()
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    y1 = interpret(g, {"x": x}, {})["y"]
    y2 = interpret(rewrite(g, _double_silu), {"x": x}, {})["y"]
    silu = x / (1 + np.exp(-x))
    np.testing.assert_allclose(y1, silu + x, rtol=1e-6)
    np.testing.assert_allclose(y2, 2 * silu + x, rtol=1e-6)


# **** interpreter ****


def test_interpret_tiny_against_hand_numpy():
    g = tiny()
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((11, 4)).astype(np.float32)
    norm = rng.standard_normal(4).astype(np.float32)
    ids = np.array([3, 0, 10], np.int32)
    out = interpret(g, {"ids": ids}, {"embed": emb, "norm": norm})
    h = emb[ids]
    import ml_dtypes

    nw = norm.astype(ml_dtypes.bfloat16).astype(np.float32)  # the param is stored in bf16
    hn = h / np.sqrt((h * h).mean(-1, keepdims=True) + 1e-6) * nw
    np.testing.assert_allclose(out["hidden"], hn, rtol=1e-5)
    # positional at positions 0..2 with rotary_dim 2 over head dim 2: a plain 2-D rotation
    q = hn.reshape(3, 2, 2)
    ang = np.arange(3, dtype=np.float32)[:, None, None]
    rot = np.concatenate([q[..., :1] * np.cos(ang) - q[..., 1:] * np.sin(ang),
                          q[..., 1:] * np.cos(ang) + q[..., :1] * np.sin(ang)], -1)
    np.testing.assert_allclose(out["logits"], rot.reshape(3, 4) @ emb.T, rtol=1e-5, atol=1e-5)


def test_interpret_missing_weight_names_it():
    with pytest.raises(KeyError, match="no weight for param 'norm'"):
        interpret(tiny(), {"ids": np.array([1], np.int32)}, {"embed": np.zeros((11, 4), np.float32)})
