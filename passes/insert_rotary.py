"""insert_rotary: lower abstract `positional` ops to explicit `rotary` ops.

Matches: ``positional(x, theta, rotary_dim)`` (RoPE at implicit positions 0..T-1).
Produces: ``rotary(x, rope_table(positions, theta, rotary_dim))`` with one table per
(theta, rotary_dim) shared by all layers, reading a new graph input ``positions`` (T,) int32
(or the existing one).
Ensures: no `positional` op remains; the graph has a ``positions`` input if it rotates anything.
"""
from __future__ import annotations

from ..ir import Graph, Node, TensorType, input_node, op_node, rewrite


def insert_rotary(graph: Graph) -> Graph:
    rot = [n for n in graph.nodes() if n.op == "positional"]
    if not rot:
        return graph
    seq = rot[0].shape[0]
    positions = next((i for i in graph.inputs if i.name == "positions"), None)
    if positions is None:
        positions = input_node("positions", TensorType((seq,), "int32"))
    tables: dict[tuple[float, int], Node] = {}

    def fn(n: Node, _old: Node) -> Node | None:
        if n.op != "positional":
            return None
        key = (n.attr("theta"), n.attr("rotary_dim"))
        if key not in tables:
            tables[key] = op_node("rope_table", [positions], theta=key[0], rotary_dim=key[1])
        return op_node("rotary", [n.inputs[0], tables[key]])

    inputs = graph.inputs if positions in graph.inputs else graph.inputs + (positions,)
    return rewrite(graph, fn, inputs=inputs)
