"""Epilogue fusions: fold elementwise work into the kernel that produces its operand.

fuse_swiglu
    Matches ``mul(silu(slice(y, 0:F)), slice(y, F:2F))`` over a (fused gate+up) tensor y
    (..., 2F). Produces ``swiglu(y)``: one pass over y instead of three kernels.
fuse_residual
    Matches ``add(r, linear(...))`` (either operand order) where the linear has no other
    user (a graph output counts as one) and no residual yet. Produces ``linear(..., residual=r)``: the residual add happens
    in the matmul's epilogue, saving a round trip of the activations through memory.
fuse_norm_rotary
    Matches ``rotary(rms_norm(x, w), table)`` where the norm has no other user (Qwen3's
    qk-norm). Produces ``norm_rotary(x, w, table)``: one kernel, the normalized head never
    stored.
fuse_swiglu_linear (CUDA decode; a prologue fusion)
    Matches ``linear(swiglu(y), w, ...)`` where the swiglu has no other user (the MLP's down
    projection). Produces ``linear(y, w, ..., act="swiglu")``: the kernel computes silu(gate) *
    up while loading x, so the (T, F) product is never stored and one launch per layer goes.
    Only where one block computes it once for all its rows (the CUDA GEMV, `decode_passes`):
    a GEMM or the CPU's GEMV would recompute it for every block of output columns.
fuse_linear_swiglu (CUDA decode; before fuse_swiglu_linear)
    Matches ``swiglu(linear(x, w, ...))`` where the linear (no residual) has no other user (the
    MLP's gate+up projection). Produces ``linear(x, w, ..., out_act="swiglu")`` (..., F): each
    GEMV thread sums a gate row and its up row and writes silu(gate) * up, so the (T, 2F)
    product is never stored and the down projection reads a plain x. Its alternative, swiglu
    in the down projection's GEMV (fuse_swiglu_linear), has every block compute it from 2F
    floats first, before its weights stream (Qwen3-4B: 78 KB from L2 per block, 50 MB in all).
fuse_norm_linear (CUDA decode; a prologue fusion)
    Matches ``linear(rms_norm(x, g), w, ...)`` where the norm (fp32, no offset) has no other
    user. Produces ``linear(x, w, g, ..., norm_eps=eps)``: the GEMV's lanes sum x^2 over the
    row they multiply anyway and normalize x as they load it, so the norm's launch goes (two
    per layer, and the final norm before the LM head). For the one-token decode graph only:
    the tensor-core GEMM over many rows does not take it.
fuse_norm_append (CUDA, after insert_kv_cache)
    Matches ``kv_append(cache, norm_rotary(x, w, table), kv_len)`` where the norm_rotary has no
    other user (Qwen3's keys). Produces ``kv_append(cache, x, kv_len, w, table, eps=...)``: the
    keys are normalized and rotated on their way into the cache, one launch per layer fewer.
fuse_append_pair (CUDA, after fuse_norm_append)
    Matches ``cache_attention(q, kv_append(kc, k, kv_len, w, table), kv_append(vc, v, kv_len), ...)``
    where each append has no other user and the two caches have one shape. Produces
    ``cache_attention(q, kv_append_pair(kc, k, kv_len, vc, v, w, table), vc, ...)``: one kernel
    appends the keys (normed, rotated) and the values, one launch per layer fewer. The
    attention reads vc itself, written in place by the pair, which it follows (it reads the
    pair's result).
fuse_norm_attention (CUDA decode)
    Matches ``cache_attention(norm_rotary(x, w, table), kc, vc, kv_len)`` where the norm_rotary
    has no other user (Qwen3's queries). Produces ``cache_attention(x, kc, vc, kv_len, w, table,
    eps=..., start=..., heads=...)``: the decode kernel normalizes and rotates the query heads as
    it stages them, one launch per layer fewer. For the one-token decode graph only (prefill's
    flash kernel does not take it).
fuse_append_attention (CUDA decode, after fuse_norm_attention)
    Matches ``cache_attention(x, kv_append_pair(kc, x, kv_len, vc, x, kw, table), vc, kv_len, w, table)``:
    one step's q, k and v all head windows of one x (the fused q+k+v projection), one eps and
    one rotary table, the pair read by nothing else. Produces ``append_attention(x, kc, vc,
    kv_len, w, table, kw, start=..., k_start=..., v_start=...)``: the decode attention kernel
    writes the step's key and value rows itself (the block whose chunk holds the new row), one
    launch per layer fewer.
All ensure numerics unchanged.
"""
from __future__ import annotations

from ..ir import Graph, Node, op_node, rewrite, users


def _half_slices(a: Node, b: Node) -> Node | None:
    if not (a.op == b.op == "slice" and a.inputs[0] is b.inputs[0]):
        return None
    y = a.inputs[0]
    last, width = y.ndim - 1, y.shape[-1]
    if not (a.attr("axis") == b.attr("axis") == last and isinstance(width, int) and width % 2 == 0):
        return None
    ok = (a.attr("start"), a.attr("stop"), b.attr("start"), b.attr("stop")) == (0, width // 2, width // 2, width)
    return y if ok else None


def fuse_swiglu(graph: Graph) -> Graph:
    def fn(n: Node, _old: Node) -> Node | None:
        if n.op != "mul":
            return None
        for gate, up in (n.inputs, n.inputs[::-1]):
            if gate.op == "silu":
                y = _half_slices(gate.inputs[0], up)
                if y is not None:
                    return op_node("swiglu", [y])
        return None

    return rewrite(graph, fn)


def _readers(graph: Graph) -> dict[int, list[Node]]:
    """`users`, with a graph output counted as read once more (by the caller)."""
    readers = users(graph)
    for _, out in graph.outputs:
        readers.setdefault(id(out), []).append(out)
    return readers


def fuse_residual(graph: Graph) -> Graph:
    readers = _readers(graph)

    def fn(n: Node, old: Node) -> Node | None:
        if n.op != "add":
            return None
        for i, (lin, r) in enumerate((n.inputs, n.inputs[::-1])):
            old_lin = old.inputs[i]
            if lin.op == "linear" and not lin.attr("residual") and len(readers[id(old_lin)]) == 1:
                return op_node("linear", list(lin.inputs) + [r], **{**lin.attr_dict, "residual": True})
        return None

    return rewrite(graph, fn)


def fuse_norm_rotary(graph: Graph) -> Graph:
    readers = users(graph)

    def fn(n: Node, old: Node) -> Node | None:
        if n.op != "rotary" or n.inputs[0].op != "rms_norm" or n.inputs[0].attr("offset"):
            return None
        if len(readers[id(old.inputs[0])]) != 1 or any(v is old.inputs[0] for _, v in graph.outputs):
            return None
        x, w = n.inputs[0].inputs
        return op_node("norm_rotary", [x, w, n.inputs[1]], eps=n.inputs[0].attr("eps"))

    return rewrite(graph, fn)

def fuse_swiglu_linear(graph: Graph) -> Graph:
    readers = _readers(graph)

    def fn(n: Node, old: Node) -> Node | None:
        if n.op != "linear" or n.attr("act") or n.inputs[0].op != "swiglu" or len(readers[id(old.inputs[0])]) != 1:
            return None
        return op_node("linear", [n.inputs[0].inputs[0], *n.inputs[1:]], **{**n.attr_dict, "act": "swiglu"})

    return rewrite(graph, fn)


def fuse_linear_swiglu(graph: Graph) -> Graph:
    readers = _readers(graph)

    def fn(n: Node, old: Node) -> Node | None:
        if n.op != "swiglu" or n.inputs[0].op != "linear" or len(readers[id(old.inputs[0])]) != 1:
            return None
        lin = n.inputs[0]
        if lin.attr("residual") or lin.attr("out_act") or n.ndim != 2:
            return None
        return op_node("linear", list(lin.inputs), **{**lin.attr_dict, "out_act": "swiglu"})

    return rewrite(graph, fn)


def fuse_norm_linear(graph: Graph) -> Graph:
    readers = _readers(graph)

    def fn(n: Node, old: Node) -> Node | None:
        if n.op != "linear" or n.attr("act") or n.attr("norm_eps") is not None:
            return None
        norm = n.inputs[0]
        if norm.op != "rms_norm" or norm.attr("offset") or norm.dtype != "float32":
            return None
        if len(readers[id(old.inputs[0])]) != 1:
            return None
        x, g = norm.inputs
        return op_node("linear", [x, n.inputs[1], g, *n.inputs[2:]], **{**n.attr_dict, "norm_eps": norm.attr("eps")})

    return rewrite(graph, fn)


def _fold_norm_rotary(graph: Graph, op: str, at: int, arity: int, heads: bool) -> Graph:
    """``op``(..., norm_rotary(x, w, table) at operand ``at``, ...) with ``arity`` operands ->
    ``op``(..., x, ..., w, table, eps=..., start=... [, heads=...]), where the norm_rotary has
    no other user and ``op`` reads no window of its own."""
    readers = _readers(graph)

    def fn(n: Node, old: Node) -> Node | None:
        if n.op != op or len(n.inputs) != arity or n.inputs[at].op != "norm_rotary" or n.attr("start") is not None:
            return None
        if len(readers[id(old.inputs[at])]) != 1:
            return None
        nr = n.inputs[at]
        x, w, table = nr.inputs
        attrs = {**n.attr_dict, "eps": nr.attr("eps")}
        if nr.attr("start") is not None:
            attrs.update(start=nr.attr("start"), **({"heads": nr.attr("heads")} if heads else {}))
        inputs = list(n.inputs)
        inputs[at] = x
        return op_node(op, inputs + [w, table], **attrs)

    return rewrite(graph, fn)


def fuse_norm_append(graph: Graph) -> Graph:
    return _fold_norm_rotary(graph, "kv_append", at=1, arity=3, heads=False)  # (heads: the cache's)


def fuse_norm_attention(graph: Graph) -> Graph:
    return _fold_norm_rotary(graph, "cache_attention", at=0, arity=4, heads=True)


def fuse_append_pair(graph: Graph) -> Graph:
    readers = _readers(graph)

    def fn(n: Node, old: Node) -> Node | None:
        if n.op != "cache_attention":
            return None
        ka, va = n.inputs[1], n.inputs[2]
        if ka.op != "kv_append" or va.op != "kv_append" or len(ka.inputs) != 5 or len(va.inputs) != 3:
            return None
        if ka.inputs[2] is not va.inputs[2] or any(len(readers[id(old.inputs[i])]) != 1 for i in (1, 2)):
            return None
        kc, k, kv_len, w, table = ka.inputs
        vc, v = va.inputs[:2]
        if vc.shape != kc.shape or vc.dtype != kc.dtype:
            return None
        attrs = {**ka.attr_dict, **({"v_start": va.attr("start")} if va.attr("start") is not None else {})}
        pair = op_node("kv_append_pair", [kc, k, kv_len, vc, v, w, table], **attrs)
        return op_node("cache_attention", [n.inputs[0], pair, vc, *n.inputs[3:]], **n.attr_dict)

    return rewrite(graph, fn)


def fuse_append_attention(graph: Graph) -> Graph:
    readers = _readers(graph)

    def fn(n: Node, old: Node) -> Node | None:
        if n.op != "cache_attention" or len(n.inputs) != 6 or n.attr("start") is None:
            return None
        x, pair, vc, kv_len, w, table = n.inputs
        if pair.op != "kv_append_pair" or len(readers[id(old.inputs[1])]) != 1:
            return None
        kc, k, pair_len, pair_vc, v, kw, pair_table = pair.inputs
        same = k is x and v is x and pair_len is kv_len and pair_vc is vc and pair_table is table
        if not same or pair.attr("eps") != n.attr("eps") or None in (pair.attr("start"), pair.attr("v_start")):
            return None
        attrs = {**n.attr_dict, "k_start": pair.attr("start"), "v_start": pair.attr("v_start")}
        return op_node("append_attention", [x, kc, vc, kv_len, w, table, kw], **attrs)

    return rewrite(graph, fn)
