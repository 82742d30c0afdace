"""The linear-attention kernels (`schedules.linear_attention`, parallel on CPU) against the
ops' references: cache-less over a whole prompt, and cached steps (prefill chunks, then
one-token decode) that carry the state in place between calls."""
from __future__ import annotations

import numpy as np
import pytest

from inference_pio.ir import GraphBuilder, interpret, param_values
from inference_pio.ir.ops import np_dtype
from inference_pio.passes.insert_kv_cache import specialize
from kernel_harness import assert_close, check, compile_graph, rand


def _delta_graph(hk, hv, dk, dv, dtype, cached):
    b = GraphBuilder("delta")
    q, k = b.input("q", ("seq_len", hk, dk), dtype), b.input("k", ("seq_len", hk, dk), dtype)
    v = b.input("v", ("seq_len", hv, dv), dtype)
    a, bb = b.input("a", ("seq_len", hv), dtype), b.input("b", ("seq_len", hv), dtype)
    extra = []
    if cached:
        extra = [b.input("state", (hv, dk, dv), "float32"), b.input("kv_len", ("kv_len",), "int64")]
    out = b.gated_delta_rule(q, k, v, a, bb, b.param("a_log", (hv,), dtype), b.param("dt_bias", (hv,), dtype),
                             *extra)
    g = b.build({"out": out})
    return g if not cached else _shape_only(g)


def _conv_graph(c, k, dtype, cached):
    b = GraphBuilder("conv")
    x = b.input("x", ("seq_len", c), dtype)
    extra = [b.input("state", (k - 1, c), dtype), b.input("kv_len", ("kv_len",), "int64")] if cached else []
    g = b.build({"y": b.causal_conv1d(x, b.param("w", (c, 1, k), dtype), *extra)})
    return g if not cached else _shape_only(g)


def _shape_only(g):
    from inference_pio.ir import Graph, input_node, rewrite

    kv = next(n for n in g.inputs if n.name == "kv_len")
    new = input_node("kv_len", kv.type, shape_only=True)
    g2 = rewrite(g, lambda n, old: new if old is kv else None, inputs=[new if n is kv else n for n in g.inputs])
    return Graph(g2.name, g2.inputs, g2.outputs, g2.meta)


def _feeds(rng, g, t, dtype):
    return {n.name: rand(rng, (t,) + tuple(n.shape[1:]), dtype) for n in g.inputs
            if n.name not in ("state", "kv_len")}


def _weights(rng, g, dtype):
    return {p.name: rand(rng, p.shape, dtype) for p in g.params()}


@pytest.mark.parametrize("hk,hv,dk,dv", [(2, 4, 6, 10), (3, 3, 16, 8)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_delta_rule_whole_prompt(rng, hk, hv, dk, dv, dtype):
    g = _delta_graph(hk, hv, dk, dv, dtype, cached=False)
    check(g, _feeds(rng, g, 13, dtype), _weights(rng, g, dtype), dtype=dtype, rtol=1e-5)


@pytest.mark.parametrize("c,k", [(12, 4), (7, 3), (5, 2)])
def test_conv_whole_prompt(rng, c, k):
    g = _conv_graph(c, k, "float32", cached=False)
    check(g, _feeds(rng, g, 9, "float32"), _weights(rng, g, "float32"))


def _run_steps(g, steps, weights, state_shape, state_dtype):
    """Run ``g`` (cached form) over the feeds of each step with one state tensor kept on the
    device between calls; its outputs, and the interpreter's over a numpy state."""
    import tvm

    dev = tvm.cpu()
    state = tvm.runtime.tensor(np.full(state_shape, np.nan, np_dtype(state_dtype)), dev)
    ref_state = np.full(state_shape, np.nan, np_dtype(state_dtype))
    values = param_values(g, weights)
    ours, refs, n = [], [], 0
    for feeds in steps:
        t = next(iter(feeds.values())).shape[0]
        n += t
        graph = g if t > 1 else specialize(g, g.name + "_one", seq_len=1)
        vm = compile_graph(graph)
        args = [state if i.name == "state" else tvm.runtime.ShapeTuple([n]) if i.name == "kv_len"
                else tvm.runtime.tensor(feeds[i.name], dev) for i in graph.inputs]
        args += [tvm.runtime.tensor(np.ascontiguousarray(values[p.name]), dev) for p in graph.params()]
        ours.append(vm[graph.name](*args).numpy())
        refs.append(interpret(graph, {**feeds, "state": ref_state, "kv_len": np.zeros(n)}, weights)[graph.outputs[0][0]])
    return ours, refs, state.numpy(), ref_state


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_delta_rule_steps_carry_the_state(rng, dtype):
    g = _delta_graph(2, 4, 6, 10, dtype, cached=True)
    weights = _weights(rng, g, dtype)
    steps = [_feeds(rng, g, t, dtype) for t in (5, 3, 1, 1)]
    ours, refs, state, ref_state = _run_steps(g, steps, weights, (4, 6, 10), "float32")
    for o, r in zip(ours, refs):
        assert_close(o, r, dtype, rtol=1e-5)
    assert_close(state, ref_state, rtol=1e-5)


@pytest.mark.parametrize("first", [1, 2, 6])
def test_conv_steps_carry_the_state(rng, first):
    g = _conv_graph(7, 4, "float32", cached=True)
    weights = _weights(rng, g, "float32")
    steps = [_feeds(rng, g, t, "float32") for t in (first, 2, 1, 1)]
    ours, refs, state, ref_state = _run_steps(g, steps, weights, (3, 7), "float32")
    for o, r in zip(ours, refs):
        assert_close(o, r)
    np.testing.assert_array_equal(state, ref_state)
