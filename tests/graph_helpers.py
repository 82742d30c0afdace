"""Helpers for pass tests: random weights for a graph's params and before/after comparisons."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from inference_pio.ir import Graph, interpret, np_dtype


def random_weights(graph: Graph, rng: np.random.Generator, scale: float = 0.5) -> dict[str, np.ndarray]:
    """An array for every (source) weight the graph reads, in the param's dtype."""
    out: dict[str, np.ndarray] = {}
    for p in graph.params():
        if p.attr("concat"):
            continue  # derived: built from its sources by ir.param_values
        a = rng.standard_normal(p.shape).astype(np.float32) * scale
        if p.name.endswith("norm.weight"):
            a = 1.0 + a
        out[p.name] = a.astype(np_dtype(p.dtype))
    return out


def assert_same_numerics(before: Graph, after: Graph, feeds: Mapping[str, np.ndarray],
                         weights: Mapping[str, np.ndarray], rtol: float = 2e-5) -> None:
    """Both graphs, interpreted, give the same outputs (the after graph may read more inputs)."""
    a = interpret(before, {k: v for k, v in feeds.items() if any(i.name == k for i in before.inputs)}, weights)
    b = interpret(after, feeds, weights)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        scale = max(float(np.abs(a[k].astype(np.float32)).max()), 1e-6)
        np.testing.assert_allclose(b[k].astype(np.float32), a[k].astype(np.float32), rtol=0, atol=rtol * scale,
                                   err_msg=f"output {k!r}")


def op_counts(graph: Graph) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in graph.ops():
        out[n.op] = out.get(n.op, 0) + 1
    return out
