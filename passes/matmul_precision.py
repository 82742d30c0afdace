"""matmul_precision: let the products of linears and attention run on bf16 operands.

Matches: every ``linear``, ``linear_packed``, ``attention``, ``cache_attention`` and ``moe_experts``.
Produces: the same nodes with attr ``precision`` (see `ir.ops.PRECISIONS`). "high", the
default and what an unmarked node means, keeps each product within ~1e-5 of fp32 math: where
a kernel multiplies 16-bit values (AMX, tensor cores), it splits the fp32 operand into a bf16
hi and lo part and does two products. "medium" allows one product over the bf16-rounded
operand, ~1e-3 relative per op, as torch's ``set_float32_matmul_precision("medium")`` and
oneDNN's bf16 path do: half the tile arithmetic in prefill. Sums stay fp32 either way.
Kernels without a 16-bit product (the decode GEMV, CPUs without AMX) compute in fp32 under
both: a precision is an allowance, not a rounding the result must show.
"""
from __future__ import annotations

from ..ir import Graph, Node, op_node, rewrite
from ..ir.ops import check_precision

OPS = ("linear", "linear_packed", "attention", "cache_attention", "moe_experts")


def matmul_precision(graph: Graph, precision: str) -> Graph:
    check_precision(precision)

    def fn(n: Node, _old: Node) -> Node | None:
        if n.op not in OPS or n.attr("precision", "high") == precision:
            return None
        return op_node(n.op, n.inputs, **{**n.attr_dict, "precision": None if precision == "high" else precision})

    return rewrite(graph, fn)
