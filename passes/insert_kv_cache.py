"""insert_kv_cache: turn the cache-less forward into the functions of a KV-cached generator.

Matches: every fused ``attention(q, k, v)`` (run rewrite_attention first), layer by layer
in graph order.
Produces, for layer i: ``kc = kv_append(cache.i.k, k, kv_len)``, likewise for v, and
``cache_attention(q, kc, vc, kv_len)``. New graph inputs: a shape-only ``kv_len`` (rows valid
after this step) and the caches ``cache.{i}.k`` / ``cache.{i}.v`` of shape
(max_seq_len, Hkv, D) in ``cache_dtype``. The logits output is narrowed to the last
position (`last_token_logits`): a generator samples only from it.
Linear-attention layers (Qwen3-Next) keep a fixed-size state instead: each `causal_conv1d`
gets ``cache.{j}.conv`` (K-1, C) (its last inputs, in the activations' dtype) and each
`gated_delta_rule` ``cache.{j}.delta`` (Hv, Dk, Dv) float32, both read and written in place
by the cached form of the op (see `ir.ops`), for the j-th such op in graph order.
Ensures: no plain `attention` remains; a step over T new tokens costs O(T) in projections
and O(T * kv_len) in attention (O(T) in a linear-attention layer), never re-running the prompt.

`specialize` then pins ``seq_len`` (1 for the decode function).
"""
from __future__ import annotations

from ..ir import Graph, Node, TensorType, input_node, op_node, rewrite


def insert_kv_cache(graph: Graph, max_seq_len: int, cache_dtype: str = "float32") -> Graph:
    kv_len = input_node("kv_len", TensorType(("kv_len",), "int64"), shape_only=True)
    caches: list[Node] = []
    states: list[Node] = []
    count = {"conv": 0, "delta": 0}  # states of each kind so far: the next one's number

    def state(n: Node, kind: str, shape: tuple, dtype: str) -> Node:
        s = input_node(f"cache.{count[kind]}.{kind}", TensorType(shape, dtype))
        count[kind] += 1
        states.append(s)
        return op_node(n.op, [*n.inputs, s, kv_len], **n.attr_dict)

    def fn(n: Node, _old: Node) -> Node | None:
        if n.op == "causal_conv1d":
            x, w = n.inputs
            return state(n, "conv", (w.shape[2] - 1, x.shape[1]), x.dtype)
        if n.op == "gated_delta_rule":
            q, v = n.inputs[0], n.inputs[2]
            return state(n, "delta", (v.shape[1], q.shape[2], v.shape[2]), "float32")
        if n.op != "attention":
            return None
        if not n.attr("causal"):
            raise ValueError("insert_kv_cache: non-causal attention cannot be cached")
        q, k, v = n.inputs
        i = len(caches) // 2
        kc = input_node(f"cache.{i}.k", TensorType((max_seq_len,) + k.shape[1:], cache_dtype))
        vc = input_node(f"cache.{i}.v", TensorType((max_seq_len,) + v.shape[1:], cache_dtype))
        caches.extend([kc, vc])
        ka, va = op_node("kv_append", [kc, k, kv_len]), op_node("kv_append", [vc, v, kv_len])
        return op_node("cache_attention", [q, ka, va, kv_len], scale=n.attr("scale"))

    g = rewrite(graph, fn, name="prefill")
    if not caches and not states:
        raise ValueError("insert_kv_cache: the graph has no fused attention (run rewrite_attention first)")
    g = Graph(g.name, graph.inputs + (kv_len, *caches, *states), g.outputs, g.meta)
    return last_token_logits(g)


def last_token_logits(graph: Graph) -> Graph:
    """logits = linear(x, w) -> linear(x[-1:], w): (1, vocab) instead of (T, vocab)."""
    out = graph.output("logits")
    if out.op not in ("linear", "linear_packed") or out.attr("residual") or out.attr("bias"):
        raise ValueError(f"last_token_logits: expected logits = linear(x, w), got {out.op}")

    def fn(n: Node, old: Node) -> Node | None:
        if old is out:
            x = op_node("slice", [n.inputs[0]], axis=0, start=-1)
            return op_node(n.op, [x, *n.inputs[1:]], **n.attr_dict)
        return None

    return rewrite(graph, fn)


def specialize(graph: Graph, name: str, **dims: int) -> Graph:
    """Pin symbolic dims to sizes, e.g. ``specialize(g, "decode", seq_len=1)``."""
    def sub(shape: tuple) -> tuple:
        return tuple(dims.get(d, d) if isinstance(d, str) else d for d in shape)

    inputs = {id(n): input_node(n.name, n.type.with_shape(sub(n.shape)), shape_only=bool(n.attr("shape_only")),
                                zeroed=bool(n.attr("zeroed")))
              for n in graph.inputs}

    def attrs(n: Node) -> dict:
        return {**n.attr_dict, "shape": sub(n.attr("shape"))} if n.op == "reshape" else n.attr_dict

    return rewrite(graph, lambda n, old: inputs.get(id(old)), name=name,
                   inputs=[inputs[id(n)] for n in graph.inputs], attrs=attrs)
