"""rewrite_attention: fold the plain attention subgraph into one fused `attention` op.

Matches (as declared by `model_defs.blocks.plain_attention`)::

    transpose(matmul(softmax([causal_mask](scale(matmul(transpose(q, 1 0 2),
                                                       transpose([repeat](k), 1 2 0))))),
                     transpose([repeat](v), 1 0 2)), 1 0 2)

with q (T, Hq, D) and k/v (S, Hkv, D); ``repeat`` (GQA head sharing) is optional.
Produces: ``attention(q, k, v, scale, causal)``, which shares kv heads without copying them.
Ensures: no softmax of that shape remains; the rest of the graph is untouched.
"""
from __future__ import annotations

from ..ir import Graph, Node, op_node, rewrite


def _is(n: Node, op: str, **attrs: object) -> bool:
    return n.op == op and all(n.attr(k) == v for k, v in attrs.items())


def _unrepeat(n: Node, heads: int) -> Node | None:
    """The un-shared kv tensor under an optional GQA `repeat` on the head axis."""
    if _is(n, "repeat", axis=1):
        n = n.inputs[0]
    return n if n.ndim == 3 and heads % n.shape[1] == 0 else None


def match_attention(n: Node) -> tuple[Node, Node, Node, float, bool] | None:
    if not (_is(n, "transpose", perm=(1, 0, 2)) and _is(n.inputs[0], "matmul")):
        return None
    probs, vt = n.inputs[0].inputs
    if not (_is(probs, "softmax") and _is(vt, "transpose", perm=(1, 0, 2))):
        return None
    s = probs.inputs[0]
    causal = _is(s, "causal_mask")
    s = s.inputs[0] if causal else s
    if not (_is(s, "scale") and _is(s.inputs[0], "matmul")):
        return None
    qt, kt = s.inputs[0].inputs
    if not (_is(qt, "transpose", perm=(1, 0, 2)) and _is(kt, "transpose", perm=(1, 2, 0))):
        return None
    q = qt.inputs[0]
    k, v = _unrepeat(kt.inputs[0], q.shape[1]), _unrepeat(vt.inputs[0], q.shape[1])
    if k is None or v is None or k.shape[1] != v.shape[1]:
        return None
    return q, k, v, s.attr("factor"), causal


def rewrite_attention(graph: Graph) -> Graph:
    def fn(n: Node, _old: Node) -> Node | None:
        m = match_attention(n)
        if m is None:
            return None
        q, k, v, scale, causal = m
        return op_node("attention", [q, k, v], scale=scale, causal=causal)

    return rewrite(graph, fn)
