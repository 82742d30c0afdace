"""passes.matmul_precision: the precision attr on linears and attention, nothing else changed."""
from __future__ import annotations

import numpy as np
import pytest

from inference_pio.ir import GraphBuilder, interpret
from inference_pio.passes import matmul_precision


def _graph():
    b = GraphBuilder("g")
    x = b.input("x", ("T", 8), "float32")
    h = b.linear(x, b.param("w1", (12, 8), "float32"))
    y = b.linear(b.swiglu(h), b.param("w2", (5, 6), "float32"))
    return b.build({"y": y})


def test_marks_linears_and_leaves_the_rest():
    g = matmul_precision(_graph(), "medium")
    ops = {n.op: n.attr("precision") for n in g.ops()}
    assert ops == {"linear": "medium", "swiglu": None}
    assert all(n.attr("precision") is None for n in matmul_precision(g, "high").ops())  # high = unmarked


def test_references_compute_in_fp32_under_every_precision():
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((3, 8)).astype(np.float32)}
    w = {"w1": rng.standard_normal((12, 8)).astype(np.float32), "w2": rng.standard_normal((5, 6)).astype(np.float32)}
    g = _graph()
    np.testing.assert_array_equal(interpret(matmul_precision(g, "medium"), feeds, w)["y"], interpret(g, feeds, w)["y"])


def test_unknown_precision_is_named():
    with pytest.raises(ValueError, match="highest"):
        matmul_precision(_graph(), "highest")
    b = GraphBuilder("g")
    x = b.input("x", ("T", 8), "float32")
    with pytest.raises(ValueError, match="precision must be one of"):
        b.linear(x, b.param("w", (4, 8), "float32"), precision="low")
