"""The mixture-of-experts ops: type rules and the references' meaning."""
from __future__ import annotations

import numpy as np
import pytest

from inference_pio.ir import GraphBuilder
from inference_pio.ir.ops import TypeError_, moe_experts, moe_gates, pack_rows


def test_gates_keep_the_top_k_softmax_weights():
    z = np.array([[0.0, 3.0, 1.0, 2.0], [1.0, 1.0, 1.0, 0.0]], np.float32)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    g = moe_gates(z, top_k=2)
    np.testing.assert_allclose(g[0], [0, p[0, 1], 0, p[0, 3]], rtol=1e-6)
    np.testing.assert_allclose(g[1], [p[1, 0], p[1, 1], 0, 0], rtol=1e-6)  # a tie goes to the lower expert
    gn = moe_gates(z, top_k=2, normalize=True)
    np.testing.assert_allclose(gn.sum(-1), 1, rtol=1e-6)
    np.testing.assert_allclose(gn[0, 1] / gn[0, 3], p[0, 1] / p[0, 3], rtol=1e-6)


def test_experts_are_a_gated_sum_of_swiglu_mlps():
    rng = np.random.default_rng(0)
    t, h, f, e = 3, 5, 4, 3
    x = rng.standard_normal((t, h)).astype(np.float32)
    w_in, w_out = rng.standard_normal((e, 2 * f, h)).astype(np.float32), rng.standard_normal((e, h, f)).astype(np.float32)
    gates = np.array([[0.5, 0, 0.5], [0, 1, 0], [0, 0, 0]], np.float32)
    want = np.zeros((t, h), np.float32)
    for i in range(t):
        for j in range(e):
            gu = w_in[j] @ x[i]
            want[i] += gates[i, j] * (w_out[j] @ (gu[:f] / (1 + np.exp(-gu[:f])) * gu[f:]))
    np.testing.assert_allclose(moe_experts(x, gates, w_in, w_out), want, rtol=1e-5, atol=1e-6)
    packed = moe_experts(x, gates, pack_rows(w_in, 4), pack_rows(w_out, 4), pack=4, inter=f)
    np.testing.assert_allclose(packed, want, rtol=1e-5, atol=1e-6)


def test_type_errors_name_the_problem():
    b = GraphBuilder("g")
    x, z = b.input("x", ("T", 6), "float32"), b.input("z", ("T", 4), "float32")
    with pytest.raises(TypeError_, match=r"top_k must be an int in \[1, 4\]"):
        b.moe_gates(z, top_k=5)
    g = b.moe_gates(z, top_k=2)
    with pytest.raises(TypeError_, match=r"w_out f32\[4, 6, 3\] must be \(4, 6, 5\)"):
        b.moe_experts(x, g, b.param("w_in", (4, 10, 6), "float32"), b.param("w_out", (4, 6, 3), "float32"))
    with pytest.raises(TypeError_, match="packed experts need attr inter"):
        b.moe_experts(x, g, b.param("p_in", (4, 3, 6, 4), "float32"), b.param("p_out", (4, 2, 5, 4), "float32"), pack=4)
