"""pack_weights: store linear weights in the layout CPU kernels stream best.

Matches: every weight param read only by ``linear`` (as its weight) and ``embedding`` (as
its table), e.g. projections and a tied embedding / lm_head; and the expert stacks (E, N, K)
of ``moe_experts``.
Produces: the same param (same name) with type (ceil(N/B), K, B), or (E, ceil(N/B), K, B)
per expert, and attrs ``pack=B``, ``rows=N`` (the loader packs it with `ir.ops.pack_rows`);
``linear`` becomes ``linear_packed(..., n=N)``, ``embedding`` and ``moe_experts`` get
``pack=B`` (and the experts' ``inter=F``). With ``pairs`` (for CPUs with AMX), bf16 expert
stacks with even K also pair their panels' rows (attr ``pairs``, `ir.ops.pair_panels`): AMX
tile products read them as they are, where they would otherwise interleave every panel on
every call, and the decode kernel reads two rows per 32-bit word.
Ensures: numerics unchanged. Each block of B outputs reads one contiguous (K, B) panel: a
GEMV streams memory linearly and a GEMM reuses the panel from cache across rows.
"""
from __future__ import annotations

from ..ir import Graph, Node, op_node, param_node, rewrite, users


def _packable(p: Node, readers: list[Node]) -> bool:
    if p.op == "param" and p.ndim == 3 and readers:  # an expert stack
        return all(r.op == "moe_experts" and p in r.inputs[2:] and p not in r.inputs[:2] for r in readers)
    return p.op == "param" and p.ndim == 2 and all(
        (r.op == "linear" and r.inputs[1] is p and p not in r.inputs[2:]) or
        (r.op == "embedding" and r.inputs[0] is p) for r in readers)


def _pairable(n: Node) -> bool:
    """Both expert stacks of moe_experts ``n`` bf16 with an even K (H for w_in, F for w_out)."""
    return all(w.dtype == "bfloat16" and w.shape[-1] % 2 == 0 for w in n.inputs[2:4])


def pack_weights(graph: Graph, block: int = 16, pairs: bool = False) -> Graph:
    readers = users(graph)
    paired = {id(w) for n in graph.ops() if n.op == "moe_experts" and pairs and _pairable(n) for w in n.inputs[2:4]}
    packed: dict[int, Node] = {}
    for p in graph.params():
        if _packable(p, readers.get(id(p), [])):
            *lead, n, k = p.shape
            extra = {"pairs": True} if id(p) in paired else {}
            packed[id(p)] = param_node(p.name, p.type.with_shape((*lead, -(-n // block), k, block)),
                                       **p.attr_dict, pack=block, rows=n, **extra)

    def fn(n: Node, old: Node) -> Node | None:
        if id(old) in packed:
            return packed[id(old)]
        if n.op == "linear" and n.inputs[1].attr("pack"):
            return op_node("linear_packed", n.inputs, n=n.shape[-1], **n.attr_dict)
        if n.op == "embedding" and n.inputs[0].attr("pack"):
            return op_node("embedding", n.inputs, pack=n.inputs[0].attr("pack"), **n.attr_dict)
        if n.op == "moe_experts" and n.inputs[2].attr("pack") and not n.attr("pack"):
            extra = {"pairs": True} if n.inputs[2].attr("pairs") else {}
            return op_node("moe_experts", n.inputs, pack=block, inter=old.inputs[2].shape[1] // 2, **extra)
        return None

    return rewrite(graph, fn)
