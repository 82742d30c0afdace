"""route_experts: tell each sparse MLP how many experts a token can be routed to.

Matches: ``moe_experts(x, gates, ...)`` whose gates are a ``moe_gates(..., top_k=k)``.
Produces: the same node with attr ``slots=k``. Its kernel can then lay out each token's
experts in k slots and run only those (`schedules.cuda.moe`: lists of each expert's tokens,
products per slot, the slots summed per token) instead of reading every gate of every expert
in every kernel. The op's meaning is unchanged: at most k gates of a token are nonzero.
"""
from __future__ import annotations

from ..ir import Graph, Node, op_node, rewrite


def route_experts(graph: Graph) -> Graph:
    def fn(n: Node, _old: Node) -> Node | None:
        if n.op != "moe_experts" or n.attr("slots") is not None or n.inputs[1].op != "moe_gates":
            return None
        return op_node(n.op, list(n.inputs), **{**n.attr_dict, "slots": int(n.inputs[1].attr("top_k"))})

    return rewrite(graph, fn)
