from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from graph_helpers import assert_same_numerics, op_counts, random_weights
from inference_pio.ir import GraphBuilder
from inference_pio.passes import fuse_append_attention, fuse_append_pair, fuse_linear_swiglu, fuse_norm_append, fuse_norm_attention, fuse_norm_linear, fuse_norm_rotary, fuse_residual, fuse_swiglu, fuse_swiglu_linear


def swiglu_graph(swap: bool = False, f: int = 5, stops=None):
    b = GraphBuilder("swiglu")
    y = b.input("y", ("T", 2 * f), "float32")
    start2, stop1 = stops or (f, f)
    gate = b.slice(y, axis=1, start=0, stop=stop1)
    up = b.slice(y, axis=1, start=start2, stop=2 * f)
    s = b.silu(gate)
    return b.build({"o": b.mul(up, s) if swap else b.mul(s, up)})


@pytest.mark.parametrize("swap", [False, True])
def test_swiglu_fused(swap):
    g = swiglu_graph(swap)
    g2 = fuse_swiglu(g)
    assert op_counts(g2) == {"swiglu": 1}
    assert "%0 = swiglu(%y) : f32[T, 5]" in str(g2)
    rng = np.random.default_rng(0)
    assert_same_numerics(g, g2, {"y": rng.standard_normal((4, 10)).astype(np.float32)}, {})


def test_swiglu_not_fused_for_other_slices():
    b = GraphBuilder("g")
    y = b.input("y", ("T", 10), "float32")
    g = b.build({"o": b.mul(b.silu(b.slice(y, axis=1, start=0, stop=4)), b.slice(y, axis=1, start=6, stop=10))})
    assert str(fuse_swiglu(g)) == str(g)


def mlp_graph(extra_user: bool = False):
    b = GraphBuilder("mlp")
    x = b.input("x", ("T", 6), "float32")
    r = b.input("r", ("T", 6), "float32")
    h = b.swiglu(b.linear(x, b.param("gate_up", (10, 6), "bfloat16")))
    out = {"o": b.linear(h, b.param("down", (6, 5), "bfloat16"), r, residual=True)}
    if extra_user:
        out["h"] = h
    return b.build(out)


def test_swiglu_folded_into_the_down_projection():
    g = mlp_graph()
    g2 = fuse_swiglu_linear(g)
    assert op_counts(g2) == {"linear": 2}
    down = g2.output("o")
    assert down.attr("act") == "swiglu" and down.attr("residual") is True and down.inputs[0].op == "linear"
    rng = np.random.default_rng(2)
    feeds = {k: rng.standard_normal((3, 6)).astype(np.float32) for k in ("x", "r")}
    assert_same_numerics(g, g2, feeds, random_weights(g, rng))


def test_swiglu_kept_when_read_elsewhere():
    g = mlp_graph(extra_user=True)
    assert str(fuse_swiglu_linear(g)) == str(g)


@pytest.mark.parametrize("bias", [False, True])
def test_swiglu_folded_into_the_gate_up_projection(bias):
    """The swiglu becomes the gate+up linear's epilogue (out_act); the down projection then
    reads a plain x, and fuse_swiglu_linear finds nothing left to fold."""
    b = GraphBuilder("mlp")
    x, r = b.input("x", ("T", 6), "float32"), b.input("r", ("T", 6), "float32")
    extra = [b.param("gate_up.bias", (10,), "float32")] if bias else []
    h = b.swiglu(b.linear(x, b.param("gate_up", (10, 6), "bfloat16"), *extra, bias=bias))
    g = b.build({"o": b.linear(h, b.param("down", (6, 5), "bfloat16"), r, residual=True)})
    g2 = fuse_linear_swiglu(g)
    assert op_counts(g2) == {"linear": 2}
    gate_up = g2.output("o").inputs[0]
    assert gate_up.op == "linear" and gate_up.attr("out_act") == "swiglu" and gate_up.shape == ("T", 5)
    assert str(fuse_swiglu_linear(g2)) == str(g2)
    rng = np.random.default_rng(3)
    feeds = {k: rng.standard_normal((3, 6)).astype(np.float32) for k in ("x", "r")}
    assert_same_numerics(g, g2, feeds, random_weights(g, rng))


def test_swiglu_kept_apart_from_a_linear_read_elsewhere():
    b = GraphBuilder("mlp")
    y = b.linear(b.input("x", ("T", 6), "float32"), b.param("gate_up", (10, 6), "bfloat16"))
    g = b.build({"o": b.swiglu(y), "y": y})
    assert str(fuse_linear_swiglu(g)) == str(g)


def norm_linear_graph(extra_user: bool = False, bias: bool = False, offset: float = 0.0):
    """r + linear(rms_norm(x, g), w [, bias]) over an fp32 residual stream x (T, 7)."""
    b = GraphBuilder("norm_linear")
    x = b.input("x", ("T", 7), "float32")
    r = b.input("r", ("T", 5), "float32")
    normed = b.rms_norm(x, b.param("norm.weight", (7,), "bfloat16"), eps=1e-5, offset=offset)
    extra = [b.param("w.bias", (5,), "float32")] if bias else []
    lin = b.linear(normed, b.param("w.weight", (5, 7), "bfloat16"), *extra, r, bias=bias, residual=True)
    return b.build({"o": lin, **({"n": normed} if extra_user else {})})


@pytest.mark.parametrize("bias", [False, True])
def test_norm_folded_into_the_next_linear(bias):
    g = norm_linear_graph(bias=bias)
    g2 = fuse_norm_linear(g)
    assert op_counts(g2) == {"linear": 1}
    lin = g2.output("o")
    assert lin.attr("norm_eps") == 1e-5 and lin.inputs[0] is g2.inputs[0] and lin.inputs[2].name == "norm.weight"
    rng = np.random.default_rng(5)
    feeds = {"x": 3 * rng.standard_normal((4, 7)).astype(np.float32), "r": rng.standard_normal((4, 5)).astype(np.float32)}
    assert_same_numerics(g, g2, feeds, random_weights(g, rng))


@pytest.mark.parametrize("kw", [{"extra_user": True}, {"offset": 1.0}])
def test_norm_kept_when_read_elsewhere_or_offset(kw):
    g = norm_linear_graph(**kw)
    assert str(fuse_norm_linear(g)) == str(g)


def key_append_graph(extra_user: bool = False):
    """kv_append(cache, norm_rotary(window of x, w, table), kv_len): Qwen3's keys into the cache."""
    from inference_pio.ir import Graph, TensorType, input_node, op_node

    x = input_node("x", TensorType(("T", 20), "float32"))
    w = input_node("w", TensorType((6,), "float32"))
    table = input_node("table", TensorType(("T", 4), "float32"))
    kc = input_node("kc", TensorType((9, 2, 6), "bfloat16"))
    n = input_node("kv_len", TensorType(("kv_len",), "int64"), shape_only=True)
    k = op_node("norm_rotary", [x, w, table], eps=1e-6, start=8, heads=2)
    outs = (("kc2", op_node("kv_append", [kc, k, n])),) + ((("k", k),) if extra_user else ())
    return Graph("keys", (x, w, table, kc, n), outs)


def test_key_norm_folded_into_the_cache_append():
    from inference_pio.ir import interpret

    g = key_append_graph()
    g2 = fuse_norm_append(g)
    assert op_counts(g2) == {"kv_append": 1}
    ka = g2.output("kc2")
    assert ka.attr("eps") == 1e-6 and ka.attr("start") == 8 and [i.name for i in ka.inputs] == ["kc", "x", "kv_len", "w", "table"]
    rng = np.random.default_rng(6)
    feeds = {"x": rng.standard_normal((3, 20)).astype(np.float32), "w": rng.standard_normal(6).astype(np.float32),
             "table": rng.standard_normal((3, 4)).astype(np.float32), "kv_len": np.zeros(5)}
    cache = rng.standard_normal((9, 2, 6)).astype(np.float32)
    a = interpret(g, {**feeds, "kc": cache.astype(ml_dtypes.bfloat16)}, {})["kc2"]
    b = interpret(g2, {**feeds, "kc": cache.astype(ml_dtypes.bfloat16)}, {})["kc2"]  # (a fresh copy each)
    np.testing.assert_array_equal(a.astype(np.float32), b.astype(np.float32))
    assert not np.array_equal(a[2:5].astype(np.float32), cache[2:5].astype(ml_dtypes.bfloat16).astype(np.float32))


def test_key_norm_kept_when_read_elsewhere():
    g = key_append_graph(extra_user=True)
    assert str(fuse_norm_append(g)) == str(g)


def query_attention_graph(extra_user: bool = False):
    """cache_attention(norm_rotary(window of x, w, table), kc, vc, kv_len): Qwen3's queries."""
    from inference_pio.ir import Graph, TensorType, input_node, op_node

    x = input_node("x", TensorType((1, 30), "float32"))
    w = input_node("w", TensorType((6,), "float32"))
    table = input_node("table", TensorType((1, 4), "float32"))
    kc, vc = (input_node(n, TensorType((9, 2, 6), "float32")) for n in ("kc", "vc"))
    n = input_node("kv_len", TensorType(("kv_len",), "int64"), shape_only=True)
    q = op_node("norm_rotary", [x, w, table], eps=1e-6, start=2, heads=4)
    outs = (("o", op_node("cache_attention", [q, kc, vc, n], scale=0.4)),) + ((("q", q),) if extra_user else ())
    return Graph("queries", (x, w, table, kc, vc, n), outs)


def test_query_norm_folded_into_decode_attention():
    g = query_attention_graph()
    g2 = fuse_norm_attention(g)
    assert op_counts(g2) == {"cache_attention": 1}
    att = g2.output("o")
    assert (att.attr("eps"), att.attr("start"), att.attr("heads"), att.attr("scale")) == (1e-6, 2, 4, 0.4)
    rng = np.random.default_rng(7)
    feeds = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in
             (("x", g.inputs[0]), ("w", g.inputs[1]), ("table", g.inputs[2]), ("kc", g.inputs[3]), ("vc", g.inputs[4]))}
    assert_same_numerics(g, g2, {**feeds, "kv_len": np.zeros(6)}, {})


def test_query_norm_kept_when_read_elsewhere():
    g = query_attention_graph(extra_user=True)
    assert str(fuse_norm_attention(g)) == str(g)


def residual_graph(swap: bool = False, extra_user: str = "", bias: bool = False):
    b = GraphBuilder("res")
    x = b.input("x", ("T", 4), "float32")
    r = b.input("r", ("T", 3), "float32")
    extra = [b.param("w.bias", (3,), "float32")] if bias else []
    lin = b.linear(x, b.param("w.weight", (3, 4), "bfloat16"), *extra, bias=bias)
    out = {"o": b.add(lin, r) if swap else b.add(r, lin)}
    if extra_user == "node":
        out["s"] = b.silu(lin)
    elif extra_user == "output":
        out["lin"] = lin
    return b.build(out)


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_residual_folded_into_linear(swap, bias):
    g = residual_graph(swap, bias=bias)
    g2 = fuse_residual(g)
    assert op_counts(g2) == {"linear": 1}
    lin = g2.output("o")
    assert lin.op == "linear" and lin.attr("residual") is True and lin.inputs[-1] is g.inputs[1]
    assert ("residual=True" in str(g2)) and ("add(" not in str(g2))
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((3, 4)).astype(np.float32), "r": rng.standard_normal((3, 3)).astype(np.float32)}
    assert_same_numerics(g, g2, feeds, random_weights(g, rng))


def test_residual_not_folded_when_linear_has_other_users():
    g = residual_graph(extra_user="node")
    assert str(fuse_residual(g)) == str(g)


def test_residual_not_folded_when_linear_is_also_an_output():
    g = residual_graph(extra_user="output")
    g2 = fuse_residual(g)
    assert g2.count("linear") == 1
    assert str(g2) == str(g)


def test_residual_chain_folds_once_per_add():
    b = GraphBuilder("chain")
    x = b.input("x", ("T", 3), "float32")
    h = x
    for i in range(3):
        h = b.add(h, b.linear(h, b.param(f"w{i}", (3, 3), "float32")))
    g = b.build({"h": h})
    g2 = fuse_residual(g)
    assert op_counts(g2) == {"linear": 3}
    assert sum(1 for n in g2.ops() if n.attr("residual")) == 3
    rng = np.random.default_rng(2)
    assert_same_numerics(g, g2, {"x": rng.standard_normal((2, 3)).astype(np.float32)}, random_weights(g, rng))


def norm_rotary_graph(extra_user: bool = False, rotary_dim: int = 6):
    b = GraphBuilder("qk")
    x = b.input("x", ("T", 3, 8), "float32")
    pos = b.input("positions", ("T",), "int32")
    n = b.rms_norm(x, b.param("w", (8,), "float32"), eps=1e-6)
    r = b.rotary(n, b.rope_table(pos, theta=1e4, rotary_dim=rotary_dim))
    return b.build({"o": b.add(r, n)} if extra_user else {"o": r})


@pytest.mark.parametrize("rotary_dim", [8, 6])
def test_norm_rotary_fused(rotary_dim):
    g = norm_rotary_graph(rotary_dim=rotary_dim)
    g2 = fuse_norm_rotary(g)
    assert op_counts(g2) == {"norm_rotary": 1, "rope_table": 1}
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((5, 3, 8)).astype(np.float32), "positions": np.arange(3, 8)}
    assert_same_numerics(g, g2, feeds, random_weights(g, rng))


def test_norm_rotary_not_fused_when_the_norm_is_used_elsewhere():
    g = norm_rotary_graph(extra_user=True)
    assert str(fuse_norm_rotary(g)) == str(g)


def append_pair_graph(v_shape=(9, 2, 6), extra_user: bool = False):
    """cache_attention(q, kv_append(kc, x keys, normed), kv_append(vc, x values), kv_len): a
    Qwen3 layer's appends after fuse_norm_append, both from windows of one q+k+v row."""
    from inference_pio.ir import Graph, TensorType, input_node, op_node

    x = input_node("x", TensorType((1, 48), "float32"))
    w = input_node("w", TensorType((6,), "float32"))
    table = input_node("table", TensorType((1, 4), "float32"))
    q = input_node("q", TensorType((1, 4, 6), "float32"))
    kc = input_node("kc", TensorType((9, 2, 6), "float32"))
    vc = input_node("vc", TensorType(v_shape, "float32"))
    n = input_node("kv_len", TensorType(("kv_len",), "int64"), shape_only=True)
    ka = op_node("kv_append", [kc, x, n, w, table], eps=1e-6, start=24)
    va = op_node("kv_append", [vc, x, n], start=36)
    outs = (("o", op_node("cache_attention", [q, ka, va, n], scale=0.4)),) + ((("kc2", ka),) if extra_user else ())
    return Graph("appends", (x, w, table, q, kc, vc, n), outs)


def test_key_and_value_appends_in_one_kernel():
    from inference_pio.ir import interpret

    g = append_pair_graph()
    g2 = fuse_append_pair(g)
    assert op_counts(g2) == {"kv_append_pair": 1, "cache_attention": 1}
    att = g2.output("o")
    pair = att.inputs[1]
    assert [i.name for i in pair.inputs] == ["kc", "x", "kv_len", "vc", "x", "w", "table"]
    assert (pair.attr("start"), pair.attr("v_start"), pair.attr("eps")) == (24, 36, 1e-6)
    assert att.inputs[2].name == "vc"  # written in place by the pair, which the attention follows
    rng = np.random.default_rng(8)
    feeds = {k.name: rng.standard_normal(tuple(d if isinstance(d, int) else 1 for d in k.shape)).astype(np.float32)
             for k in g.inputs if k.name != "kv_len"}
    feeds["kv_len"] = np.zeros(5)
    caches = {k: feeds[k].copy() for k in ("kc", "vc")}
    a = interpret(g, {**feeds, **{k: v.copy() for k, v in caches.items()}}, {})["o"]
    b = interpret(g2, {**feeds, **{k: v.copy() for k, v in caches.items()}}, {})["o"]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kw", [{"v_shape": (9, 2, 5)}, {"extra_user": True}])
def test_appends_kept_apart(kw):
    """Caches of two shapes, or a key append read elsewhere: no pair."""
    g = append_pair_graph(**kw)
    assert str(fuse_append_pair(g)) == str(g)


def decode_attention_graph(q_eps: float = 1e-6, kv_len_tensor: bool = False):
    """A Qwen3 layer's decode attention after fuse_append_pair and fuse_norm_attention: the pair
    and the attention read windows of one q+k+v row x and one rotary table."""
    from inference_pio.ir import Graph, TensorType, input_node, op_node

    x = input_node("x", TensorType((1, 48), "float32"))
    w = input_node("w", TensorType((6,), "float32"))
    kw = input_node("kw", TensorType((6,), "float32"))
    table = input_node("table", TensorType((1, 4), "float32"))
    kc = input_node("kc", TensorType((9, 2, 6), "float32"))
    vc = input_node("vc", TensorType((9, 2, 6), "float32"))
    n = input_node("kv_len", TensorType((1,), "int32")) if kv_len_tensor else \
        input_node("kv_len", TensorType(("kv_len",), "int64"), shape_only=True)
    static = {"kv_len_tensor": True} if kv_len_tensor else {}
    pair = op_node("kv_append_pair", [kc, x, n, vc, x, kw, table], eps=1e-6, start=24, v_start=36, **static)
    att = op_node("cache_attention", [x, pair, vc, n, w, table], scale=0.4, eps=q_eps, start=0, heads=4, **static)
    return Graph("decode_attention", (x, w, kw, table, kc, vc, n), (("o", att),))


@pytest.mark.parametrize("kv_len_tensor", [False, True])
def test_append_inside_the_decode_attention(kv_len_tensor):
    from inference_pio.ir import interpret

    g = decode_attention_graph(kv_len_tensor=kv_len_tensor)
    g2 = fuse_append_attention(g)
    assert op_counts(g2) == {"append_attention": 1}
    att = g2.output("o")
    assert [i.name for i in att.inputs] == ["x", "kc", "vc", "kv_len", "w", "table", "kw"]
    assert (att.attr("start"), att.attr("k_start"), att.attr("v_start"), att.attr("heads")) == (0, 24, 36, 4)
    rng = np.random.default_rng(9)
    feeds = {k.name: rng.standard_normal(k.shape).astype(np.float32) for k in g.inputs if k.name != "kv_len"}
    feeds["kv_len"] = np.array([5], np.int32) if kv_len_tensor else np.zeros(5)
    caches = {k: feeds[k].copy() for k in ("kc", "vc")}
    a = interpret(g, {**feeds, **caches}, {})
    fused = {k: v.copy() for k, v in caches.items()}
    b = interpret(g2, {**feeds, **fused}, {})
    np.testing.assert_array_equal(a["o"], b["o"])
    for k in ("kc", "vc"):  # both caches written in place, alike
        np.testing.assert_array_equal(caches[k], fused[k])
        assert not np.array_equal(caches[k], feeds[k])


def test_append_kept_apart_from_an_attention_of_another_eps():
    g = decode_attention_graph(q_eps=1e-5)
    assert str(fuse_append_attention(g)) == str(g)
