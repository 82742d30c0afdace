"""fold_slices: let consumers read column windows of a fused projection instead of copies.

Matches: ``reshape(slice(p, axis=-1, start, stop), (T, H, D))`` of a 2-D ``p`` (the q, k and v
parts of a fused q+k+v output) read only by `norm_rotary` or `kv_append`; and slices that
keep the whole operand (``x[-1:]`` of a single row, once decode pins seq_len to 1).
Produces: the consumer over ``p`` itself with attr ``start`` (and ``heads`` for norm_rotary):
it reads columns [start, start + H * D) as (T, H, D) (see the head window in `ir.ops`); the
identity slice is dropped.
Ensures: no copy kernel between the projection and the per-head ops (three fewer kernel
launches per layer), and none for the last-row slice in decode. Run it after
`insert_kv_cache` (and `specialize`) to also fold into `kv_append`; it is idempotent.
"""
from __future__ import annotations

from ..ir import Graph, Node, op_node, rewrite, users

_WINDOWED = ("norm_rotary", "kv_append")


def _window(x: Node, use: dict[int, list[Node]]) -> tuple[Node, int] | None:
    """(p, start) when x = reshape(slice(p, last axis, start:stop), (T, H, D)) and is read only by windowed ops."""
    if x.op != "reshape" or x.ndim != 3 or any(u.op not in _WINDOWED for u in use.get(id(x), [])):
        return None
    sl = x.inputs[0]
    if sl.op != "slice" or len(use.get(id(sl), [])) != 1:
        return None
    p = sl.inputs[0]
    start = sl.attr("start")
    if p.ndim != 2 or sl.attr("axis") not in (1, -1) or not isinstance(start, int) or start < 0:
        return None
    if x.shape[0] != p.shape[0] or sl.shape[1] != x.shape[1] * x.shape[2]:
        return None
    return p, start


def fold_slices(graph: Graph) -> Graph:
    use = users(graph)

    def fn(n: Node, old: Node) -> Node | None:
        if n.op == "slice" and n.shape == n.inputs[0].shape:
            return n.inputs[0]
        if n.op not in _WINDOWED or n.attr("start") is not None:
            return None
        x = n.inputs[0] if n.op == "norm_rotary" else n.inputs[1]
        x_old = old.inputs[0] if n.op == "norm_rotary" else old.inputs[1]
        w = _window(x_old, use)
        if w is None or x.op != "reshape":
            return None
        p = x.inputs[0].inputs[0]  # the rewritten graph's projection output
        start = w[1]
        if n.op == "norm_rotary":
            return op_node(n.op, [p, *n.inputs[1:]], **n.attr_dict, start=start, heads=x.shape[1])
        return op_node(n.op, [n.inputs[0], p, n.inputs[2]], **n.attr_dict, start=start)

    return rewrite(graph, fn)
