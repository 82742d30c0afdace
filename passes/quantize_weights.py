"""quantize_weights: store the packed weights as int8 rows with one fp32 scale each.

Matches: every packed weight param (`pack_weights` ran first) read only by ``linear_packed``
(as its weight), ``embedding`` (as its table) or ``moe_experts`` (an expert stack): the
projections, the LM head, the embedding table and the experts, i.e. nearly all of a model's bytes.
Produces: the same param (same name, same packed layout) with dtype int8 and attr
``quant="int8"``, plus a param ``<name>.scale`` (N,) fp32 ((E, N) for a stack of E experts)
with attr ``scale_of=<name>``; the
loader fills both from the checkpoint's weight with `ir.ops.quantize_rows` (symmetric, per
output row: scale = max |w| / 127). Each reader gets the scale as the operand right after the
weight (the IR's rule for int8 weights, `ir.ops`).
Ensures: the graph computes with ``scale[n] * q[n, k]`` in place of w[n, k] (~0.4% of a row's
largest weight at most), each sum still fp32; kernels multiply by the scale once per output,
after the sum. A batch-1 decode step reads half the bytes of bf16 weights.
"""
from __future__ import annotations

from ..ir import Graph, Node, TensorType, op_node, param_node, rewrite, users
from ..ir.ops import QUANT_DTYPES


def _quantizable(p: Node, readers: list[Node]) -> bool:
    # a weight the model keeps in its own dtype (``keep_dtype``: GLM's fp32 router) stays
    return bool(p.attr("pack")) and not p.attr("keep_dtype") and bool(readers) and all(
        (r.op == "linear_packed" and r.inputs[1] is p and p not in r.inputs[2:]) or
        (r.op == "embedding" and r.inputs[0] is p) or
        (r.op == "moe_experts" and p in r.inputs[2:] and p not in r.inputs[:2]) for r in readers)


def quantize_weights(graph: Graph, dtype: str = "int8") -> Graph:
    if dtype not in QUANT_DTYPES:
        raise ValueError(f"weight quantization must be one of {QUANT_DTYPES}, got {dtype!r}")
    readers = users(graph)
    quantized: dict[int, tuple[Node, Node]] = {}  # id(old param) -> (int8 param, its scale)
    for p in graph.params():
        if _quantizable(p, readers.get(id(p), [])):
            q = param_node(p.name, p.type.with_dtype(dtype), **p.attr_dict, quant=dtype)
            rows = (*p.shape[:-3], p.attr("rows"))  # (N,), or (E, N) for an expert stack
            scale = param_node(f"{p.name}.scale", TensorType(rows, "float32"), scale_of=p.name)
            quantized[id(p)] = (q, scale)

    def fn(n: Node, old: Node) -> Node | None:
        if id(old) in quantized:
            return quantized[id(old)][0]
        if n.op in ("linear_packed", "embedding"):
            w = old.inputs[1 if n.op == "linear_packed" else 0]
            if id(w) in quantized:
                q, scale = quantized[id(w)]
                if n.op == "linear_packed":
                    return op_node(n.op, [n.inputs[0], q, scale, *n.inputs[2:]], **n.attr_dict)
                return op_node(n.op, [q, n.inputs[1], scale], **n.attr_dict)
        if n.op == "moe_experts" and any(id(w) in quantized for w in old.inputs[2:]):
            ops = list(n.inputs[:2])
            for w, cur in zip(old.inputs[2:], n.inputs[2:]):  # each int8 stack followed by its scales
                ops.extend(quantized[id(w)] if id(w) in quantized else [cur])
            return op_node(n.op, ops, **n.attr_dict)
        return None

    return rewrite(graph, fn)
