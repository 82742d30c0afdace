"""fuse_projections: merge linears that read the same input into one wide linear.

Matches: two or more ``linear(x, w_i)`` (same x, no residual, same bias flag, plain weight
params of one dtype, none marked ``keep_dtype``), e.g. q/k/v or gate/up projections.
Produces: ``linear(x, w_fused)`` followed by one `slice` per original output. The fused
param is named after its parts (``...self_attn.q+k+v_proj.weight``) and records its
sources (``concat``) and their row counts (``splits``) so the loader builds it from the
checkpoint's tensors and checks each one.
Ensures: numerics unchanged; one weight stream per input instead of several (fewer, larger
kernels, the win for decode).
"""
from __future__ import annotations

import os

from ..ir import Graph, Node, op_node, param_node, rewrite


def fused_name(names: list[str]) -> str:
    """``a.q_proj.weight, a.k_proj.weight`` -> ``a.q+k_proj.weight`` (common prefix/suffix kept)."""
    pre = os.path.commonprefix(names)
    pre = pre[: pre.rfind(".") + 1]
    suf = os.path.commonprefix([n[::-1] for n in names])[::-1]
    suf = suf[suf.find("_"):] if "_" in suf else suf[suf.find("."):]
    return pre + "+".join(n[len(pre): len(n) - len(suf)] for n in names) + suf


def _fused_param(params: list[Node]) -> Node:
    rows = sum(p.shape[0] for p in params)
    return param_node(fused_name([p.name for p in params]), params[0].type.with_shape((rows,) + params[0].shape[1:]),
                      concat=tuple(p.name for p in params), splits=tuple(p.shape[0] for p in params), axis=0)


def _fusable(n: Node) -> bool:
    if n.op != "linear" or n.attr("residual"):
        return False
    # a weight that keeps its dtype (a router) stays apart: the fused weight would not
    return all(p.op == "param" and not p.attr("concat") and not p.attr("keep_dtype") for p in n.inputs[1:])


def fuse_projections(graph: Graph) -> Graph:
    groups: dict[tuple, list[Node]] = {}
    for n in graph.nodes():
        if _fusable(n):
            key = (id(n.inputs[0]), n.inputs[1].dtype, bool(n.attr("bias")), n.attr("out_dtype"))
            groups.setdefault(key, []).append(n)
    place: dict[int, tuple[tuple, int, int]] = {}  # id(old linear) -> (group, start, stop)
    for key, group in groups.items():
        off = 0
        for n in group if len(group) > 1 else ():
            place[id(n)] = (key, off, off + n.shape[-1])
            off += n.shape[-1]
    fused: dict[tuple, Node] = {}

    def fn(n: Node, old: Node) -> Node | None:
        if id(old) not in place:
            return None
        key, start, stop = place[id(old)]
        if key not in fused:  # built at the group's first member, over the rewritten input
            group = groups[key]
            ins = [n.inputs[0], _fused_param([g.inputs[1] for g in group])]
            if n.attr("bias"):
                ins.append(_fused_param([g.inputs[2] for g in group]))
            fused[key] = op_node("linear", ins, bias=n.attr("bias"), out_dtype=n.attr("out_dtype"))
        f = fused[key]
        return op_node("slice", [f], axis=f.ndim - 1, start=start, stop=stop)

    return rewrite(graph, fn)
