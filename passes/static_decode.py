"""static_decode: make a decode function whose every shape is static, for whole-step CUDA graphs.

Matches: a decode function from `insert_kv_cache` + `specialize(seq_len=1)`, whose shape-only
``kv_len`` input is the one symbolic dim left.
Produces: ``kv_len`` as a (1,) int32 *data* input, read by `kv_append`, `cache_attention` and
the linear-attention recurrences (attr ``kv_len_tensor``), so no kernel's shape depends on the step. The graph is marked
``static_inputs``: its caller passes the same input buffers on every call and writes the
step's values (token, position, kv_len, sampler settings) into them. Lowering then declares no
per-call inputs, everything the function reads counts as static, and TVM's RewriteCUDAGraph
can capture the whole step as one CUDA graph, replayed with one launch per token.
Each `append_attention` also gets a new input ``cache.sync``, (max Hkv,) int32 zeros that the
runtime allocates once with the caches: counters by which the blocks of a split-key kernel find
the last of them to finish, which then merges their partial results (on CUDA: no merge kernel)
and sets its counter back to zero. Counters only work over buffers that outlive the step, as
these persistent inputs do.
Costs: attention kernels are launched over the whole cache capacity and skip the rows past
kv_len inside (on CUDA: blocks past the last key chunk exit at once).
"""
from __future__ import annotations

from ..ir import Graph, Node, TensorType, input_node, op_node, rewrite


# where each op takes kv_len (the recurrences: their cached forms, `passes.insert_kv_cache`)
SYNC = "cache.sync"  # the attention kernels' counters (a zeroed input: the runtime allocates it once, with zeros)
KV_LEN_OPERAND = {"kv_append": 2, "kv_append_pair": 2, "cache_attention": 3, "append_attention": 3, "causal_conv1d": 3, "gated_delta_rule": 8}


def static_decode(graph: Graph) -> Graph:
    old = [n for n in graph.inputs if n.attr("shape_only")]
    if [n.name for n in old] != ["kv_len"]:
        raise ValueError(f"static_decode: expected one shape-only input kv_len, got {[n.name for n in old]}")
    kv_len = input_node("kv_len", TensorType((1,), "int32"))
    dynamic = [d for n in graph.nodes() for d in n.shape if isinstance(d, str) and d != "kv_len"]
    if dynamic:
        raise ValueError(f"static_decode: symbolic dims {sorted(set(dynamic))} remain (specialize seq_len first)")

    heads = [int(n.inputs[1].shape[1]) for n in graph.nodes() if n.op == "append_attention"]
    sync = input_node(SYNC, TensorType((max(heads),), "int32"), zeroed=True) if heads else None

    def fn(n: Node, _old: Node) -> Node | None:
        at = KV_LEN_OPERAND.get(n.op)
        if at is None:
            return None
        inputs = list(n.inputs)
        inputs[at] = kv_len
        if n.op == "append_attention":
            inputs = inputs[:7] + [sync]
        return op_node(n.op, inputs, **{**n.attr_dict, "kv_len_tensor": True})

    inputs = [kv_len if n is old[0] else n for n in graph.inputs] + ([sync] if sync is not None else [])
    return rewrite(graph, fn, inputs=inputs, static_inputs=True)
