"""A numpy interpreter for graphs: the executable meaning of the IR, used as a test oracle."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .graph import Graph, Node
from .ops import OPS, np_dtype, pack_rows


def param_value(node: Node, weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """A param's array: looked up by name, or built from its ``concat`` sources, then packed
    (`ir.ops.pack_rows`) if the param says ``pack``."""
    if node.name in weights:
        arr = np.asarray(weights[node.name])
    elif node.attr("concat"):
        arr = np.concatenate([np.asarray(weights[s]) for s in node.attr("concat")], axis=node.attr("axis", 0))
    else:
        raise KeyError(f"no weight for param {node.name!r}")
    if node.attr("pack"):
        arr = pack_rows(arr, node.attr("pack"))
    return arr.astype(np_dtype(node.dtype))


def interpret(graph: Graph, feeds: Mapping[str, np.ndarray],
              weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate ``graph`` with input arrays ``feeds`` and parameter arrays ``weights``."""
    vals: dict[int, np.ndarray] = {}
    for n in graph.nodes():
        if n.op == "input":
            vals[id(n)] = np.asarray(feeds[n.name]).astype(np_dtype(n.dtype), copy=False)  # caches: in place
        elif n.op == "param":
            vals[id(n)] = param_value(n, weights)
        else:
            vals[id(n)] = OPS[n.op].ref(*(vals[id(i)] for i in n.inputs), **n.attr_dict)
    return {k: vals[id(v)] for k, v in graph.outputs}
