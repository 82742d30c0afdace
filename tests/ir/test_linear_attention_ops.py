"""The linear-attention ops (Qwen3-Next's gated DeltaNet): type rules and the references'
meaning, cache-less and cached (state read after position 0, written in place)."""
from __future__ import annotations

import numpy as np
import pytest

from inference_pio.ir import GraphBuilder
from inference_pio.ir.ops import (TypeError_, causal_conv1d, gated_delta_rule, rms_norm_gated, sigmoid_gate,
                                  softplus)


def _conv_operands(rng, t=7, c=5, k=4):
    return rng.standard_normal((t, c)).astype(np.float32), rng.standard_normal((c, 1, k)).astype(np.float32)


def test_conv_is_a_causal_depthwise_convolution_then_silu():
    rng = np.random.default_rng(0)
    x, w = _conv_operands(rng)
    y = causal_conv1d(x, w)
    padded = np.concatenate([np.zeros((3, 5), np.float32), x])
    pre = np.stack([(padded[t: t + 4] * w[:, 0, :].T).sum(0) for t in range(7)])
    np.testing.assert_allclose(y, pre / (1 + np.exp(-pre)), rtol=1e-5, atol=1e-6)


def _delta_operands(rng, t=6, hk=2, hv=4, dk=3, dv=5):
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return f(t, hk, dk), f(t, hk, dk), f(t, hv, dv), f(t, hv), f(t, hv), f(hv), f(hv)


def test_delta_rule_single_step_reads_the_fresh_state():
    """One token from a zero state: S = beta k v^T, so the output is beta (k . q) v."""
    rng = np.random.default_rng(1)
    q, k, v, a, b, a_log, dt_bias = _delta_operands(rng, t=1, hk=1, hv=1)
    out = gated_delta_rule(q, k, v, a, b, a_log, dt_bias)
    qn = q[0, 0] / np.sqrt((q[0, 0] ** 2).sum() + 1e-6) / np.sqrt(3)
    kn = k[0, 0] / np.sqrt((k[0, 0] ** 2).sum() + 1e-6)
    beta = 1 / (1 + np.exp(-b[0, 0]))
    np.testing.assert_allclose(out[0, 0], beta * (kn @ qn) * v[0, 0], rtol=1e-5)


@pytest.mark.parametrize("split", [1, 3, 5])
def test_cached_steps_equal_the_whole_sequence(split):
    """Positions [0, split) then [split, T) through the cached forms, starting from garbage
    state buffers, give what one cache-less pass gives."""
    rng = np.random.default_rng(split)
    x, w = _conv_operands(rng, t=6)
    ops = _delta_operands(rng)
    conv_state = np.full((3, 5), np.nan, np.float32)
    delta_state = np.full((4, 3, 5), np.nan, np.float32)
    ys, outs = [], []
    for lo, hi in ((0, split), (split, 6)):
        kv_len = np.zeros(hi)
        ys.append(causal_conv1d(x[lo:hi], w, conv_state, kv_len))
        outs.append(gated_delta_rule(*(o[lo:hi] for o in ops[:5]), *ops[5:], delta_state, kv_len))
    np.testing.assert_allclose(np.concatenate(ys), causal_conv1d(x, w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(outs), gated_delta_rule(*ops), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(conv_state, x[-3:])  # the last K-1 inputs


def test_gates_and_norms():
    x = np.array([[3.0, -4.0]], np.float32)
    z = np.array([[0.0, 2.0]], np.float32)
    silu = z / (1 + np.exp(-z))
    np.testing.assert_allclose(rms_norm_gated(x, z, np.array([1.0, 2.0], np.float32), eps=0.0),
                               x / np.sqrt(12.5) * [1, 2] * silu, rtol=1e-6)
    np.testing.assert_allclose(sigmoid_gate(x, np.array([[0.0]], np.float32)), x / 2, rtol=1e-6)
    np.testing.assert_allclose(softplus(np.array([-30.0, 0.0, 30.0])), [np.exp(-30.0), np.log(2), 30.0], rtol=1e-6)


@pytest.mark.parametrize("build,match", [
    (lambda b, x: b.causal_conv1d(x, b.param("w", (5, 1, 1), "float32")), "K >= 2"),
    (lambda b, x: b.causal_conv1d(x, b.param("w", (4, 1, 3), "float32")), "depthwise kernel"),
    (lambda b, x: b.causal_conv1d(x, b.param("w", (5, 1, 3), "float32"), b.param("s", (3, 5), "float32"),
                                  b.param("n", (4,), "int64")), r"state must be float32\[2, 5\]"),
    (lambda b, x: b.sigmoid_gate(x, b.param("g", (5,), "float32")), "gate"),
])
def test_type_errors_name_the_problem(build, match):
    b = GraphBuilder("g")
    x = b.input("x", ("t", 5), "float32")
    with pytest.raises(TypeError_, match=match):
        build(b, x)


def test_delta_rule_heads_must_group():
    b = GraphBuilder("g")
    q = b.input("q", ("t", 2, 3), "float32")
    v = b.input("v", ("t", 3, 5), "float32")
    g = b.input("a", ("t", 3), "float32")
    p = b.param("p", (3,), "float32")
    with pytest.raises(TypeError_, match="value heads 3 must be a multiple of key heads 2"):
        b.gated_delta_rule(q, q, v, g, g, p, p)
