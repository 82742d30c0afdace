"""A numpy interpreter for graphs: the executable meaning of the IR, used as a test oracle."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .graph import Graph, Node
from .ops import OPS, join_sources, np_dtype, pack_rows, quantize_rows


def _source(node: Node, weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """A param's unpacked array: looked up by name, or built from its ``concat`` sources."""
    if node.name in weights:
        return np.asarray(weights[node.name])
    if node.attr("concat"):
        return join_sources([np.asarray(weights[s]) for s in node.attr("concat")], node.attr("axis", 0),
                            node.attr("experts"))
    raise KeyError(f"no weight for param {node.name!r}")


def param_values(graph: Graph, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every param's array, by name: its source (by name or ``concat``), quantized
    (`ir.ops.quantize_rows`) if it says ``quant``, then packed (`ir.ops.pack_rows`) if it says
    ``pack`` (its panels' rows paired if it says ``pairs``); a param that says ``scale_of`` holds the per-row scales of that weight."""
    params = {p.name: p for p in graph.params()}
    out = {}
    for name, p in params.items():
        if p.attr("scale_of"):
            out[name] = quantize_rows(_source(params[p.attr("scale_of")], weights))[1]
            continue
        arr = _source(p, weights)
        if p.attr("quant"):
            arr = quantize_rows(arr)[0]
        if p.attr("pack"):
            arr = pack_rows(arr, p.attr("pack"), pairs=bool(p.attr("pairs")))
        out[name] = arr.astype(np_dtype(p.dtype))
    return out


def interpret(graph: Graph, feeds: Mapping[str, np.ndarray],
              weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate ``graph`` with input arrays ``feeds`` and parameter arrays ``weights``."""
    vals: dict[int, np.ndarray] = {}
    params = param_values(graph, weights)
    for n in graph.nodes():
        if n.op == "input":
            vals[id(n)] = np.asarray(feeds[n.name]).astype(np_dtype(n.dtype), copy=False)  # caches: in place
        elif n.op == "param":
            vals[id(n)] = params[n.name]
        else:
            vals[id(n)] = OPS[n.op].ref(*(vals[id(i)] for i in n.inputs), **n.attr_dict)
    return {k: vals[id(v)] for k, v in graph.outputs}
