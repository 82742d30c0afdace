"""round_activations: a linear's x stored in bf16 where the linear would round it to bf16 anyway.

Matches: `rms_norm`, `swiglu`, `attention` and `cache_attention` nodes that are not graph
outputs and whose every reader is the x of a `linear` with bf16 weights at matmul precision
"medium" (`passes.matmul_precision`), directly or through a `reshape` (the attention's heads
joined into rows for the o projection).
Produces: the node with attr ``out_dtype`` "bfloat16" (the reshape follows its type).
Ensures: the same numbers in half the bytes. At "medium" the tensor-core GEMM multiplies
bf16(x), rounded to nearest even as it stages x; the producer's cast now does that rounding.
The producer writes 2 bytes per value instead of 4, and the GEMM, which reads x once for every
tile of output columns (Qwen3-4B's gate+up at 2048 rows: 152 tiles, so its x comes 152 times
from L2), reads half as many bytes per stage, in 16-byte copies (`schedules.cuda.matmul`:
of the 48 KB a 128 x 128 block loaded per stage of K, 32 were fp32 x).

For the CUDA graphs with T rows (forward, prefill, encoders). Run it after `matmul_precision`,
and not on decode: its GEMVs fuse the norm and the swiglu and multiply in fp32. Not for the
CPU, whose kernels take fp32 x (they round while packing it).
"""
from __future__ import annotations

from ..ir import Graph, Node, op_node, rewrite, users

BF16 = "bfloat16"
PRODUCERS = ("rms_norm", "swiglu", "attention", "cache_attention")


def _rounds_x(reader: Node, x: Node) -> bool:
    """Whether ``reader`` is a linear that multiplies bf16(x): x its first operand (only), its
    weights bf16, its precision "medium", and x multiplied as it is (no fused swiglu or norm of
    x, which would compute on x in fp32 first)."""
    return (reader.op == "linear" and reader.inputs[0] is x and all(i is not x for i in reader.inputs[1:])
            and reader.inputs[1].dtype == BF16 and reader.attr("precision") == "medium"
            and reader.attr("act") is None and reader.attr("norm_eps") is None)


def round_activations(graph: Graph) -> Graph:
    use = users(graph)
    outputs = {id(v) for _, v in graph.outputs}

    def only_rounded(n: Node) -> bool:
        readers = use.get(id(n), [])
        if not readers or id(n) in outputs:
            return False
        for r in readers:
            if r.op == "reshape" and n.ndim == 3:
                if not only_rounded(r):
                    return False
            elif not _rounds_x(r, n):
                return False
        return True

    def fn(n: Node, old: Node) -> Node | None:
        if old.op not in PRODUCERS or old.dtype != "float32" or not only_rounded(old):
            return None
        return op_node(n.op, n.inputs, **{**n.attr_dict, "out_dtype": BF16})

    return rewrite(graph, fn)
