"""The graph verifier: every node's stored type must be what its op's type rule derives.

Run at the start of the pass pipeline and after every pass (see `passes.pipeline`).
"""
from __future__ import annotations

from .graph import Graph, Node
from .ops import OPS, TypeError_, infer_type


class GraphError(ValueError):
    """A malformed graph; the message names the node and what is wrong."""


def verify(graph: Graph) -> None:
    """Check op arity and types, unique and consistent names, and that inputs are declared."""
    declared = {id(n) for n in graph.inputs}
    names: dict[str, Node] = {}
    for n in graph.nodes():
        where = f"graph {graph.name!r}, node {n.op}{'@' + n.name if n.name else ''}"
        if n.op in ("input", "param"):
            if not n.name:
                raise GraphError(f"{where}: {n.op} without a name")
            if n.inputs:
                raise GraphError(f"{where}: {n.op} cannot have operands")
            other = names.setdefault(n.name, n)
            if other is not n:
                raise GraphError(f"{where}: name {n.name!r} used by two different nodes "
                                 f"({other.op} {other.type} and {n.op} {n.type})")
            if n.op == "input" and id(n) not in declared:
                raise GraphError(f"{where}: input {n.name!r} is used but not a graph input")
            continue
        if n.op not in OPS:
            raise GraphError(f"{where}: unknown op")
        try:
            t = infer_type(n.op, [i.type for i in n.inputs], n.attr_dict)
        except (TypeError_, KeyError) as e:
            raise GraphError(f"{where}: {e}") from None
        if t != n.type:
            raise GraphError(f"{where}: stored type {n.type} but operands give {t}")
    if len({k for k, _ in graph.outputs}) != len(graph.outputs):
        raise GraphError(f"graph {graph.name!r}: duplicate output names")
