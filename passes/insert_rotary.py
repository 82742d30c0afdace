"""insert_rotary: lower abstract `positional` ops to explicit `rotary` ops.

Matches: ``positional(x, theta, rotary_dim[, sections])`` (RoPE at implicit positions 0..T-1).
Produces: ``rotary(x, rope_table(positions, theta, rotary_dim[, sections]))`` with one table
per (theta, rotary_dim, sections) shared by all layers, reading a new graph input
``positions`` (or the existing one): (T,) int32, or (3, T) for multimodal RoPE (``sections``:
t, h, w rows; all of a graph's positional ops must agree on which).
Ensures: no `positional` op remains; the graph has a ``positions`` input if it rotates anything.
"""
from __future__ import annotations

from ..ir import Graph, Node, TensorType, input_node, op_node, rewrite


def insert_rotary(graph: Graph) -> Graph:
    rot = [n for n in graph.nodes() if n.op == "positional"]
    if not rot:
        return graph
    seq = rot[0].shape[0]
    mrope = {n.attr("sections") is not None for n in rot}
    if len(mrope) > 1:
        raise ValueError("insert_rotary: some positional ops are multimodal (sections) and some are not")
    shape = (3, seq) if mrope.pop() else (seq,)
    positions = next((i for i in graph.inputs if i.name == "positions"), None)
    if positions is None:
        positions = input_node("positions", TensorType(shape, "int32"))
    elif positions.shape != shape:
        raise ValueError(f"insert_rotary: input positions is {positions.shape}, expected {shape}")
    tables: dict[tuple, Node] = {}

    def fn(n: Node, _old: Node) -> Node | None:
        if n.op != "positional":
            return None
        key = (n.attr("theta"), n.attr("rotary_dim"), n.attr("sections"))
        if key not in tables:
            extra = {} if key[2] is None else {"sections": key[2]}
            tables[key] = op_node("rope_table", [positions], theta=key[0], rotary_dim=key[1], **extra)
        return op_node("rotary", [n.inputs[0], tables[key]])

    inputs = graph.inputs if positions in graph.inputs else graph.inputs + (positions,)
    return rewrite(graph, fn, inputs=inputs)
