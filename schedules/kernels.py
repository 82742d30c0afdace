"""Tensor-expression kernels, one per IR op; target independent, unscheduled.

Each kernel takes TE tensors (and the op's attrs) and returns the output tensor, with
the same meaning as the op's numpy reference in `ir.ops`. Reductions accumulate in float32
whatever the storage dtype. Block names are stable ("matmul", "epilogue", ...): the
schedule rules in `schedules.cpu` find blocks by these names.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

from tvm import te, tirx

F32, BF16 = "float32", "bfloat16"


def _f32(x: te.Tensor, *idx) -> tirx.PrimExpr:
    v = x[idx]
    return v if x.dtype == F32 else v.astype(F32)


def embedding(table: te.Tensor, ids: te.Tensor, *scale: te.Tensor, out_dtype: str = F32,
              pack: int | None = None) -> te.Tensor:
    """Rows of table (V, H), or of a packed table (V/B, H, B) (see `ir.ops.pack_rows`); an int8
    table's row v times its ``scale`` [v]."""
    # ids are range-checked by the runtime before the call
    def row(*i):
        v = ids[i[:-1]].astype("int64")
        value = table[v // pack, i[-1], v % pack] if pack else table[v, i[-1]]
        if scale:
            return (value.astype(F32) * scale[0][v]).astype(out_dtype)
        return value.astype(out_dtype)

    return te.compute((*ids.shape, table.shape[1]), row, name="embedding")


def weight_scale(w: te.Tensor, extra: tuple[te.Tensor, ...]) -> tuple[te.Tensor | None, tuple[te.Tensor, ...]]:
    """(the per-row scale of an int8 ``w`` (the first extra operand) or None, the other extras)."""
    return (extra[0], extra[1:]) if w.dtype == "int8" else (None, extra)


def _epilogue(acc: Callable, extra: tuple[te.Tensor, ...], bias: bool, residual: bool, out_dtype: str,
              scale: te.Tensor | None = None, row_scale: Callable | None = None) -> Callable:
    """out[i, j] = acc(i, j) [* row_scale(i)] [* scale[j]] [+ bias[j]] [+ residual[i, j]], cast:
    the tail of both linear kernels (``scale``: an int8 weight's, applied to the finished sum;
    ``row_scale``: a fused rms_norm's 1 / rms of row i)."""
    b = extra[0] if bias else None
    r = extra[-1] if residual else None

    def fn(i, j):
        v = acc(i, j)
        if row_scale is not None:
            v = v * row_scale(i)
        if scale is not None:
            v = v * scale[j]
        if b is not None:
            v = v + _f32(b, j)
        if r is not None:
            v = v + _f32(r, i, j)
        return v.astype(out_dtype)

    return fn


def _with_epilogue(acc: te.Tensor, extra: tuple[te.Tensor, ...], bias: bool, residual: bool,
                   out_dtype: str, scale: te.Tensor | None = None, row_scale: Callable | None = None) -> te.Tensor:
    """acc (T, N) itself where there is nothing to scale, add or cast, else an "epilogue" block."""
    if not (bias or residual) and out_dtype == F32 and scale is None and row_scale is None:
        return acc
    return te.compute(acc.shape, _epilogue(lambda i, j: acc[i, j], extra, bias, residual, out_dtype, scale,
                                           row_scale), name="epilogue")


def _swiglu_at(x: te.Tensor, lead: tuple, c: tirx.PrimExpr, f: tirx.PrimExpr,
               dtype: str | None = None) -> tirx.PrimExpr:
    """swiglu(x)[*lead, c] = silu(x[*lead, c]) * x[*lead, c + f], in ``dtype`` (default x's)."""
    return _swiglu_of(x[(*lead, c)], x[(*lead, c + f)], dtype or x.dtype)


def _x_of(x: te.Tensor, act: str | None, k: tirx.PrimExpr) -> Callable:
    """x[i, c] in fp32 as a linear multiplies it. For act="swiglu" (x is then (T, 2K), gate half
    first) a block "x_act" (T, K) computes swiglu(x) as the `swiglu` kernel does: a schedule
    computes it where the products need it (the CUDA GEMV: once per block, in shared memory)
    or inlines it (the tensor-core GEMM: into the staging of x)."""
    if act is None:
        return lambda i, c: _f32(x, i, c)
    xa = te.compute((x.shape[0], k), lambda i, c: _swiglu_at(x, (i,), c, k).astype(F32), name="x_act")
    return lambda i, c: xa[i, c]


def linear(x: te.Tensor, w: te.Tensor, *extra: te.Tensor, bias: bool = False, residual: bool = False,
           out_dtype: str = F32, act: str | None = None, norm_eps: float | None = None,
           out_act: str | None = None) -> te.Tensor:
    """x (T, K) @ w (N, K)^T [+ bias] [+ residual] -> (T, N); act="swiglu": swiglu(x) (T, 2K) @ w^T;
    norm_eps: rms_norm(x, g, norm_eps) @ w^T, g (K,) the first of ``extra``, computed as
    ((x * g) @ w^T) * rsqrt(mean(x^2) + eps): the norm's one number per row ("sumsq", `rms_norm`'s
    block) scales the finished sums in the epilogue, so the products wait for no reduction over
    x (the CUDA GEMV streams its weights from its first instruction).

    out_act="swiglu": y = x @ w^T [+ bias] (cast to out_dtype, as the linear's own output would
    be) becomes swiglu(y) (T, N/2), as the `swiglu` kernel computes it. The block "matmul" (T, N)
    then holds the products in pairs: [i, 2c] of gate row c, [i, 2c + 1] of up row c + N/2, so a
    schedule that gives a thread consecutive rows has each output's two sums in one thread (the
    CUDA GEMV, `schedules/cuda/gemv.py`); then a block "epilogue" (T, N/2)."""
    t, n, kk = x.shape[0], w.shape[0], w.shape[1]
    k = te.reduce_axis((0, kk), "k")
    xf = _x_of(x, act, kk)
    scale, extra = weight_scale(w, extra)
    row_scale = None
    if norm_eps is not None:
        g, extra = extra[0], extra[1:]
        ss = _sum_squares(x)
        xf = lambda i, c: _f32(x, i, c) * _f32(g, c)  # noqa: E731
        row_scale = lambda i: _inv_rms(ss[i], kk, norm_eps)  # noqa: E731
    f = n // 2
    row = (lambda j: tirx.floormod(j, 2) * f + tirx.floordiv(j, 2)) if out_act == "swiglu" else (lambda j: j)
    acc = te.compute((t, n), lambda i, j: te.sum(xf(i, k) * _f32(w, row(j), k), axis=k), name="matmul")
    if out_act != "swiglu":
        return _with_epilogue(acc, extra, bias, residual, out_dtype, scale, row_scale)

    def y(i, c, p):  # the linear's output at column p * f + c (gate p = 0, up p = 1), in out_dtype
        return _epilogue(lambda *_: acc[i, 2 * c + p], extra, bias, False, out_dtype, scale, row_scale)(i, p * f + c)

    return te.compute((t, f), lambda i, c: _swiglu_of(y(i, c, 0), y(i, c, 1), out_dtype), name="epilogue")


def _swiglu_of(gate: tirx.PrimExpr, up: tirx.PrimExpr, dtype: str) -> tirx.PrimExpr:
    """silu(gate) * up in fp32, cast to ``dtype``: `_swiglu_at`'s math."""
    g = gate.astype(F32)
    return (g * tirx.sigmoid(g) * up.astype(F32)).astype(dtype)


def bf16_bits(v: tirx.PrimExpr) -> tirx.PrimExpr:
    """The bits of bf16(v) (fp32 ``v``, finite; round to nearest even) as uint32, by integer
    operations: TVM's bf16 legalization for LLVM computes in fp32 and drops an
    fp32 -> bf16 -> fp32 round trip."""
    u = tirx.reinterpret("uint32", v)
    return (u + tirx.const(0x7FFF, "uint32") + ((u >> tirx.const(16, "uint32")) & tirx.const(1, "uint32"))) \
        >> tirx.const(16, "uint32")


def bf16_value(bits: tirx.PrimExpr) -> tirx.PrimExpr:
    """The fp32 value of bf16 ``bits`` (uint32)."""
    return tirx.reinterpret(F32, bits << tirx.const(16, "uint32"))


def to_bf16(v: tirx.PrimExpr, bit_round: bool = False) -> tirx.PrimExpr:
    """fp32 ``v`` rounded to bf16 (to nearest even). With ``bit_round`` by integer operations
    (`bf16_bits`), for kernels run on a CPU."""
    if not bit_round:
        return v.astype(BF16)
    return bf16_value(bf16_bits(v)).astype(BF16)


def split_plan(w_dtype: str, dt: str = BF16, precision: str = "high") -> tuple[tuple[int, int], ...]:
    """The products `linear_split` adds up, as (x part, w part), 0 = hi and 1 = lo: x is split
    in two at precision "high" and only rounded (its hi part) at "medium"
    (`passes.matmul_precision`); w is split where it is not in ``dt`` (fp16 weights multiplied
    in bf16), its lo part multiplied by x's hi part only."""
    plan = ((0, 0), (1, 0)) if precision == "high" else ((0, 0),)
    return plan if w_dtype == dt else plan + ((0, 1),)


def split_reduction(k: int, w_dtype: str, dt: str = BF16, tile: int = 16, precision: str = "high") -> tuple[int, int]:
    """(parts, Kp) of `linear_split`'s reduction, parts x Kp long: the number of products in
    `split_plan` (2 where the weights are in ``dt``, 3 for fp16 weights multiplied in bf16; one
    fewer at precision "medium"); Kp = K rounded up to ``tile``."""
    return len(split_plan(w_dtype, dt, precision)), (k + tile - 1) // tile * tile


def linear_split(x: te.Tensor, w: te.Tensor, *extra: te.Tensor, bias: bool = False, residual: bool = False,
                 out_dtype: str = F32, act: str | None = None, tile: int = 16, dt: str | None = None,
                 slices: tuple[tirx.PrimExpr, int] | None = None, bit_round: bool = False,
                 precision: str = "high") -> te.Tensor:
    """`linear` for multipliers that take only 16-bit inputs (tensor cores, AMX) of dtype ``dt``
    (default: w's). x (fp32) is split into hi = dt(x) and lo = dt(x - hi), and the products
    run over a longer reduction, ``parts`` x K (`split_plan`):

        w in dt (parts 2):   hi @ w^T + lo @ w^T
        fp16 w, dt bf16 (3): hi @ w_hi^T + lo @ w_hi^T + hi @ w_lo^T, w = w_hi + w_lo exactly
                             (fp16's 11 significant bits are bf16's 8 plus a remainder of at
                             most 4, and bf16 has fp32's exponent range)

    Either way the result is x @ w^T up to bf16's unit roundoff squared (2^-16 of |x| |w|,
    against 2^-8 for dt(x) alone); the dropped lo @ w_lo^T is of that size too. fp16 weights go
    through bf16 rather than splitting x into fp16 parts because fp16's range cannot hold
    every fp32 activation (|x| > 65504 would become inf). At ``precision`` "medium" x's lo part
    is dropped: hi @ w^T (1 part), or hi @ w_hi^T + hi @ w_lo^T (2), ~1e-3 relative.

    The parts alternate in runs of ``tile`` along the reduction ("x_split" and "w_split",
    (T, parts Kp) and (N, parts Kp), Kp = K rounded up to ``tile`` with zeros), so the copies of
    a weight column are read one right after the other. All dims are int64, as the tensor-core
    schedules' layout rewrites require.

    ``slices`` = (count, most) cuts that reduction into ``count`` equal slices (an expression,
    e.g. of T, at most ``most``, which must divide parts x Kp): "x_split" and "w_split" are then
    (count, T, L) and (count, N, L), L = parts x Kp / count, "matmul" is the batched product
    (count, T, N) of partial sums, and a spatial block "slice_sum" adds them up with the
    epilogue (split-K: a schedule spreads the slices over more thread blocks where T x N alone
    gives too few).

    ``bit_round`` rounds to ``dt`` with integer operations (round to nearest even), for running
    the kernel on a CPU: TVM's bf16 legalization for LLVM computes in fp32 and drops an
    fp32 -> bf16 -> fp32 round trip, which would make hi = x and lo = 0 there."""
    t, kk, n = x.shape[0], int(w.shape[1]), w.shape[0]
    dt = dt or w.dtype
    if w.dtype != dt and (w.dtype, dt) != ("float16", BF16):
        raise ValueError(f"linear_split multiplies in {dt}: weights must be {dt} (or fp16 for bf16), got {w.dtype}")
    plan = split_plan(w.dtype, dt, precision)
    parts, kp = split_reduction(kk, w.dtype, dt, tile, precision)
    xf = _x_of(x, act, w.shape[1])
    rp = tirx.IntImm("int64", parts * kp)
    zero = tirx.const(0, dt)

    def src(r):  # the column of x and w behind reduction index r
        return r // (parts * tile) * tile + r % tile

    def guarded(v, k):
        return v if kp == kk else tirx.if_then_else(k < kk, v, zero)

    if bit_round and dt != BF16:
        raise ValueError("bit_round is implemented for bfloat16 only")

    def to_dt(v):  # v (fp32) rounded to dt
        return to_bf16(v, bit_round) if dt == BF16 else v.astype(dt)

    def hi_lo(v, lo):  # v's dt part, or where ``lo`` holds the dt remainder (v fp32, or fp16 and exactly a dt pair)
        v = v.astype(F32)
        hi = to_dt(v)
        return hi if lo is None else tirx.if_then_else(lo, to_dt(v - hi.astype(F32)), hi)

    def lo_part(r, side):  # whether reduction index r is in a product of that side's lo part (None: never)
        lows = [p for p, product in enumerate(plan) if product[side] == 1]
        return functools.reduce(tirx.Or, [r // tile % parts == p for p in lows]) if lows else None

    x_as_is = x.dtype == dt and act is None and all(product[0] == 0 for product in plan)  # its own rounding

    def x_part(i, r):
        if x_as_is:
            return guarded(x[i, src(r)], src(r))
        return guarded(hi_lo(xf(i, src(r)), lo_part(r, 0)), src(r))

    def w_part(j, r):
        v = w[j, src(r)]
        return guarded(v if w.dtype == dt else hi_lo(v, lo_part(r, 1)), src(r))

    if slices is None:
        a = te.compute((t, rp), x_part, name="x_split")
        b = te.compute((n, rp), w_part, name="w_split")
        r = te.reduce_axis((0, rp), "r")
        acc = te.compute((t, n), lambda i, j: te.sum(a[i, r].astype(F32) * b[j, r].astype(F32), axis=r),
                         name="matmul")
        return _with_epilogue(acc, extra, bias, residual, out_dtype)
    count, most = slices
    if (parts * kp) % most:
        raise ValueError(f"linear_split: {most} slices do not divide a reduction of {parts * kp}")
    ln = tirx.floordiv(tirx.IntImm("int64", most), count) * (parts * kp // most)  # (a multiple the simplifier sees)
    a = te.compute((count, t, ln), lambda z, i, q: x_part(i, z * ln + q), name="x_split")
    b = te.compute((count, n, ln), lambda z, j, q: w_part(j, z * ln + q), name="w_split")
    r = te.reduce_axis((0, ln), "r")
    part = te.compute((count, t, n), lambda z, i, j: te.sum(a[z, i, r].astype(F32) * b[z, j, r].astype(F32), axis=r),
                      name="matmul")

    def total(i, j):  # slice 0 always exists; the others where count reaches them
        v = part[0, i, j]
        for z in range(1, most):
            v = v + tirx.if_then_else(count > z, part[tirx.IntImm("int64", z), i, j], tirx.const(0, F32))
        return v

    return te.compute((t, n), _epilogue(total, extra, bias, residual, out_dtype), name="slice_sum")


ROW_TILE = 6  # linear_packed computes rows in multiples of this, so row tiles have no tail


def linear_packed(x: te.Tensor, wp: te.Tensor, *extra: te.Tensor, n: int, bias: bool = False,
                  residual: bool = False, out_dtype: str = F32) -> te.Tensor:
    """x (T, K) @ packed w (N/B, K, B) [+ bias] [+ residual] -> (T, N).

    "matmul" computes (T', N/B, B) blocks of outputs, T' = T rounded up to ROW_TILE (the
    extra rows repeat the last one, so no row tile needs a bounds check); "epilogue"
    unblocks the first T rows, drops the padding columns and applies an int8 weight's scale,
    bias, residual and the output cast.
    """
    t, (nb, kk, blk) = x.shape[0], wp.shape
    scale, extra = weight_scale(wp, extra)
    k = te.reduce_axis((0, kk), "k")
    if isinstance(t, tirx.IntImm) and int(t) == 1:
        rows, xf = t, lambda i, kk_: _f32(x, i, kk_)
    else:  # x in fp32, rows padded: the row tile's inner loop broadcasts straight from memory
        rows = (t + ROW_TILE - 1) // ROW_TILE * ROW_TILE
        xc = te.compute((rows, kk), lambda i, kk_: _f32(x, tirx.min(i, t - 1), kk_), name="xconv")
        xf = lambda i, kk_: xc[i, kk_]  # noqa: E731
    acc = te.compute((rows, nb, blk), lambda i, jb, jj: te.sum(xf(i, k) * _f32(wp, jb, k, jj), axis=k),
                     name="matmul")
    return te.compute((t, n), _epilogue(lambda i, j: acc[i, j // blk, j % blk], extra, bias, residual, out_dtype,
                                        scale), name="epilogue")


def _outranks(a: tirx.PrimExpr, b: tirx.PrimExpr, ia: tirx.PrimExpr, ib: tirx.PrimExpr) -> tirx.PrimExpr:
    """Whether score a (of index ia) ranks above score b (of ib): higher, or equal at a lower
    index (`ir.ops.moe_gates`' tie rule)."""
    return tirx.Or(a > b, tirx.And(a == b, ia < ib))


def moe_gates(logits: te.Tensor, *bias: te.Tensor, top_k: int, normalize: bool = False, scoring: str = "softmax",
              n_group: int = 1, topk_group: int = 1, scale: float = 1.0) -> te.Tensor:
    """Per token: the weights (softmax, or sigmoid), the choice scores (the logits, or sigmoid +
    bias), each expert's rank among the choices ("rank": how many beat it, a tie going to the
    lower index; with expert groups, only the kept groups' experts compete), then the kept
    weights, normalized and scaled."""
    t, e = logits.shape
    js = [te.reduce_axis((0, e), f"j{i}") for i in range(4)]
    z = lambda i, j: _f32(logits, i, j)  # noqa: E731
    if scoring == "softmax":
        mx = te.compute((t,), lambda i: te.max(z(i, js[0]), axis=js[0]), name="max")
        den = te.compute((t,), lambda i: te.sum(tirx.exp(z(i, js[1]) - mx[i]), axis=js[1]), name="sum")
        weight = lambda i, j: tirx.exp(z(i, j) - mx[i]) / den[i]  # noqa: E731
        choice = z
    else:
        weight = lambda i, j: tirx.sigmoid(z(i, j))  # noqa: E731
        choice = (lambda i, j: weight(i, j) + bias[0][j]) if bias else weight
    eligible = None
    if n_group > 1:  # the topk_group groups whose two best choices sum highest
        size = e // n_group
        ks = te.reduce_axis((0, size), "ks")
        peer = lambda j: (j // size) * size + ks  # noqa: E731  (the experts of j's group)
        top2 = te.compute((t, e), lambda i, j: te.sum(  # rank within its group
            _outranks(choice(i, peer(j)), choice(i, j), peer(j), j).astype("int32"), axis=ks), name="group_rank")
        gscore = te.compute((t, n_group), lambda i, g: te.sum(tirx.if_then_else(
            top2[i, g * size + ks] < 2, choice(i, g * size + ks), tirx.const(0.0, F32)), axis=ks), name="group_score")
        kg = te.reduce_axis((0, n_group), "kg")
        grank = te.compute((t, n_group), lambda i, g: te.sum(
            _outranks(gscore[i, kg], gscore[i, g], kg, g).astype("int32"), axis=kg), name="group_rank_of")
        eligible = lambda i, j: grank[i, j // size] < topk_group  # noqa: E731
    other = js[2]

    def beats(i, j):
        b = _outranks(choice(i, other), choice(i, j), other, j)
        return b if eligible is None else tirx.And(eligible(i, other), b)

    rank = te.compute((t, e), lambda i, j: te.sum(beats(i, j).astype("int32"), axis=other), name="rank")
    chosen = (lambda i, j: rank[i, j] < top_k) if eligible is None else \
        (lambda i, j: tirx.And(eligible(i, j), rank[i, j] < top_k))  # noqa: E731
    kept = te.compute((t, e), lambda i, j: tirx.if_then_else(chosen(i, j), weight(i, j), tirx.const(0.0, F32)),
                      name="kept")
    if not normalize and scale == 1.0:
        return kept
    eps = tirx.const(1e-20 if scoring == "sigmoid" else 0.0, F32)
    tot = te.compute((t,), lambda i: te.sum(kept[i, js[3]], axis=js[3]), name="kept_sum") if normalize else None
    return te.compute((t, e), lambda i, j: (kept[i, j] / (tot[i] + eps) if normalize else kept[i, j])
                      * tirx.const(scale, F32), name="gates")


def moe_scratch(t: Any, e: int, k: int, h: int, f: int) -> tuple[tuple[str, tuple, str], ...]:
    """The scratch outputs (name, shape, dtype) of a moe_experts with attr ``slots`` = k (the
    gates' top_k, `passes.route_experts`), for a kernel that runs only the routed experts in
    several launches (`schedules.cuda.moe`): each token's experts in order (sel, -1 past the
    last) and each expert's slot among them (rank); each expert's tokens (lst, cnt); the
    blocks' work list (tiles: expert and first token of each tile of an expert's tokens, -1
    past the last); the activations per slot (act) and each slot's weighted output (part).
    Outputs rather than the kernel's own allocations for the reason `cache_attention` gives."""
    return (("sel", (t, k), "int32"), ("rank", (t, e), "int32"), ("lst", (e, t), "int32"), ("cnt", (e,), "int32"),
            ("tiles", (2, t * k + e), "int32"), ("act", (t, k, f), F32), ("part", (t, k, h), F32))


def moe_experts(*ops: te.Tensor, pack: int | None = None, inter: int | None = None, pairs: bool = False,
                slots: int | None = None) -> te.Tensor | list[te.Tensor]:
    """The experts' SwiGLU MLPs, written densely (every expert for every token, weighted by its
    gate, mostly 0): the meaning, for any target; `schedules.cpu.moe` and `schedules.cuda.moe`
    replace it with kernels that run only the experts a token was routed to. Operands as
    `ir.ops.expert_operands`. With ``slots`` (at most that many experts per token), the
    result is [out, *scratch] (`moe_scratch`; zeros here)."""
    from ..ir.ops import expert_operands

    x, gates, w_in, s_in, w_out, s_out = expert_operands(ops)
    t, h = x.shape
    e = gates.shape[1]
    f = inter if pack else w_in.shape[1] // 2

    def w(buf, scale, ex, r, c):  # row r, column c of expert ex's matrix, packed (paired) or not, int8 or not
        if pairs:  # element (c, r % pack) of the panel sits at flat (c // 2) * 2B + 2 (r % pack) + c % 2
            pos = c // 2 * (2 * pack) + 2 * (r % pack) + c % 2
            v = _f32(buf, ex, r // pack, pos // pack, pos % pack)
        else:
            v = _f32(buf, ex, r // pack, c, r % pack) if pack else _f32(buf, ex, r, c)
        return v if scale is None else v * scale[ex, r]

    k, ke, kr = te.reduce_axis((0, h), "k"), te.reduce_axis((0, e), "ke"), te.reduce_axis((0, f), "kr")
    gu = te.compute((t, e, 2 * f), lambda i, ex, r: te.sum(_f32(x, i, k) * w(w_in, s_in, ex, r, k), axis=k),
                    name="expert_in")
    act = te.compute((t, e, f), lambda i, ex, r: gu[i, ex, r] * tirx.sigmoid(gu[i, ex, r]) * gu[i, ex, f + r],
                     name="expert_act")
    out = te.compute((t, h), lambda i, c: te.sum(
        _f32(gates, i, ke) * act[i, ke, kr] * w(w_out, s_out, ke, c, kr), axis=[ke, kr]), name="expert_out")
    if slots is None:
        return out
    return [out, *(_zeros(shape, dt, name) for name, shape, dt in moe_scratch(t, int(e), slots, int(h), int(f)))]


def _zeros(shape: tuple, dtype: str, name: str) -> te.Tensor:
    return te.compute(shape, lambda *i: tirx.const(0, dtype), name=name)


def matmul(a: te.Tensor, b: te.Tensor, out_dtype: str = F32) -> te.Tensor:
    """Batched (..., M, K) @ (..., K, N); any number of batch dims (including none)."""
    k = te.reduce_axis((0, a.shape[-1]), "k")
    shape = (*a.shape[:-1], b.shape[-1])
    acc = te.compute(shape, lambda *i: te.sum(_f32(a, *i[:-1], k) * _f32(b, *i[:-2], k, i[-1]), axis=k),
                     name="matmul")
    if out_dtype == F32:
        return acc
    return te.compute(shape, lambda *i: acc[i].astype(out_dtype), name="epilogue")


def _inv_rms(sum_squares: tirx.PrimExpr, d, eps: float) -> tirx.PrimExpr:
    """1 / rms of a row of ``d`` elements (an int or an expression) from its sum of squares."""
    n = tirx.const(float(d), F32) if isinstance(d, int) else d.astype(F32)
    return tirx.rsqrt(sum_squares / n + tirx.const(eps, F32))


def _sum_squares(x: te.Tensor) -> te.Tensor:
    """Block "sumsq": the sum of squares of x's last axis, in fp32."""
    k = te.reduce_axis((0, x.shape[-1]), "k")
    return te.compute(x.shape[:-1], lambda *i: te.sum(_f32(x, *i, k) * _f32(x, *i, k), axis=k), name="sumsq")


def rms_norm(x: te.Tensor, w: te.Tensor, eps: float, offset: float = 0.0, out_dtype: str | None = None,
             name: str = "norm") -> te.Tensor:
    """Normalize the last axis of x (R, D): block "sumsq", then ``name`` (in ``out_dtype``,
    default x's)."""
    d = x.shape[-1]
    ss = _sum_squares(x)

    def norm(*i):
        inv = _inv_rms(ss[i[:-1]], d, eps)
        scale = _f32(w, i[-1]) + tirx.const(offset, F32) if offset else _f32(w, i[-1])
        return (_f32(x, *i) * inv * scale).astype(out_dtype or x.dtype)

    return te.compute(x.shape, norm, name=name)


def _ew(name: str, fn: Callable) -> Callable:
    def kernel(*xs: te.Tensor) -> te.Tensor:
        return te.compute(xs[0].shape, lambda *i: fn(*(_f32(x, *i) for x in xs)).astype(xs[0].dtype), name=name)

    kernel.__name__ = name
    return kernel


add = _ew("add", lambda a, b: a + b)
mul = _ew("mul", lambda a, b: a * b)
silu = _ew("silu", lambda a: a * tirx.sigmoid(a))
sigmoid = _ew("sigmoid", tirx.sigmoid)
gelu = _ew("gelu", lambda a: a * (tirx.erf(a * tirx.const(0.5 ** 0.5, F32)) + tirx.const(1.0, F32)) * tirx.const(0.5, F32))
gelu_tanh = _ew("gelu_tanh", lambda a: a * tirx.const(0.5, F32) * (tirx.const(1.0, F32) + tirx.tanh(
    tirx.const((2 / 3.141592653589793) ** 0.5, F32) * (a + tirx.const(0.044715, F32) * a * a * a))))


def layer_norm(x: te.Tensor, w: te.Tensor, b: te.Tensor, eps: float) -> te.Tensor:
    """LayerNorm of the last axis of x (R, D): blocks "mean" and "var" (sums in fp32), then "norm"."""
    d = x.shape[-1]
    k1, k2 = te.reduce_axis((0, d), "k1"), te.reduce_axis((0, d), "k2")
    inv_d = tirx.const(1.0, F32) / d.astype(F32)
    total = te.compute(x.shape[:-1], lambda *i: te.sum(_f32(x, *i, k1), axis=k1), name="mean")

    def dev(i, k):
        return _f32(x, *i, k) - total[i] * inv_d

    sq = te.compute(x.shape[:-1], lambda *i: te.sum(dev(i, k2) * dev(i, k2), axis=k2), name="var")

    def norm(*i):
        inv = tirx.rsqrt(sq[i[:-1]] * inv_d + tirx.const(eps, F32))
        return (dev(i[:-1], i[-1]) * inv * _f32(w, i[-1]) + _f32(b, i[-1])).astype(x.dtype)

    return te.compute(x.shape, norm, name="norm")


def weighted_rows(table: te.Tensor, idx: te.Tensor, w: te.Tensor) -> te.Tensor:
    """(N, H) fp32: sum over k of w[n, k] * table[idx[n, k]]."""
    k = te.reduce_axis((0, idx.shape[1]), "k")
    return te.compute((idx.shape[0], table.shape[1]),
                      lambda n, h: te.sum(_f32(w, n, k) * _f32(table, idx[n, k].astype("int64"), h), axis=k),
                      name="weighted_rows")


def _rows(h: te.Tensor, feats: te.Tensor, rows: te.Tensor, add: bool) -> te.Tensor:
    def fn(t, c):
        r = rows[t]
        feat = _f32(feats, tirx.max(r, 0).astype("int64"), c)
        value = _f32(h, t, c) + feat if add else feat
        return tirx.if_then_else(r >= 0, value.astype(h.dtype), h[t, c])

    return te.compute(h.shape, fn, name="add_rows" if add else "merge_rows")


def merge_rows(h: te.Tensor, feats: te.Tensor, rows: te.Tensor) -> te.Tensor:
    return _rows(h, feats, rows, add=False)


def add_rows(h: te.Tensor, feats: te.Tensor, rows: te.Tensor) -> te.Tensor:
    return _rows(h, feats, rows, add=True)


def sigmoid_gate(x: te.Tensor, g: te.Tensor) -> te.Tensor:
    """x * sigmoid(g), g of x's shape or one gate per row (..., 1)."""
    per_row = g.shape[-1] != x.shape[-1] or len(x.shape) == 0

    def fn(*i):
        gi = (*i[:-1], 0) if per_row else i
        return (_f32(x, *i) * tirx.sigmoid(_f32(g, *gi))).astype(x.dtype)

    return te.compute(x.shape, fn, name="sigmoid_gate")


def rms_norm_gated(x: te.Tensor, z: te.Tensor, w: te.Tensor, eps: float) -> te.Tensor:
    """rms_norm(x, w, eps) * silu(z) over the last axis: blocks "sumsq", then "norm_gated"."""
    normed = rms_norm(x, w, eps, out_dtype=F32, name="normed")
    return te.compute(x.shape, lambda *i: (normed[i] * _f32(z, *i) * tirx.sigmoid(_f32(z, *i))).astype(x.dtype),
                      name="norm_gated")


def scale(x: te.Tensor, factor: float) -> te.Tensor:
    return te.compute(x.shape, lambda *i: (_f32(x, *i) * tirx.const(factor, F32)).astype(x.dtype), name="scale")


def cast(x: te.Tensor, dtype: str) -> te.Tensor:
    return te.compute(x.shape, lambda *i: x[i].astype(dtype), name="cast")


def swiglu(x: te.Tensor, out_dtype: str | None = None) -> te.Tensor:
    f = x.shape[-1] // 2
    return te.compute((*x.shape[:-1], f), lambda *i: _swiglu_at(x, i[:-1], i[-1], f, out_dtype), name="swiglu")


def softmax(x: te.Tensor) -> te.Tensor:
    n = x.shape[-1]
    k1, k2 = te.reduce_axis((0, n), "k1"), te.reduce_axis((0, n), "k2")
    mx = te.compute(x.shape[:-1], lambda *i: te.max(_f32(x, *i, k1), axis=k1), name="max")
    den = te.compute(x.shape[:-1], lambda *i: te.sum(tirx.exp(_f32(x, *i, k2) - mx[i]), axis=k2), name="sum")
    return te.compute(x.shape, lambda *i: (tirx.exp(_f32(x, *i) - mx[i[:-1]]) / den[i[:-1]]).astype(x.dtype),
                      name="softmax")


def causal_mask(x: te.Tensor) -> te.Tensor:
    t, s = x.shape[-2], x.shape[-1]
    return te.compute(x.shape, lambda *i: tirx.if_then_else(i[-1] <= i[-2] + (s - t), x[i],
                                                             tirx.min_value(x.dtype)), name="causal_mask")


def transpose(x: te.Tensor, perm: tuple[int, ...]) -> te.Tensor:
    inv = [perm.index(a) for a in range(len(perm))]
    return te.compute([x.shape[p] for p in perm], lambda *i: x[tuple(i[inv[a]] for a in range(len(perm)))],
                      name="transpose")


def slice_(x: te.Tensor, axis: int, start: int, stop: int | None = None) -> te.Tensor:
    dim = x.shape[axis]
    begin = start if start >= 0 else dim + start
    end = dim if stop is None else (stop if stop >= 0 else dim + stop)
    shape = list(x.shape)
    shape[axis] = end - begin
    return te.compute(shape, lambda *i: x[tuple(v + begin if a == axis else v for a, v in enumerate(i))],
                      name="slice")


def concat(*xs: te.Tensor, axis: int) -> te.Tensor:
    offsets = [0]
    for x in xs:
        offsets.append(offsets[-1] + int(x.shape[axis]))
    shape = list(xs[0].shape)
    shape[axis] = offsets[-1]

    def fn(*i):
        v = xs[-1][tuple(a - offsets[-2] if d == axis else a for d, a in enumerate(i))]
        for x, off, end in reversed(list(zip(xs[:-1], offsets, offsets[1:]))):
            v = tirx.if_then_else(i[axis] < end, x[tuple(a - off if d == axis else a for d, a in enumerate(i))], v)
        return v

    return te.compute(shape, fn, name="concat")


def repeat(x: te.Tensor, axis: int, times: int) -> te.Tensor:
    shape = list(x.shape)
    shape[axis] = shape[axis] * times
    return te.compute(shape, lambda *i: x[tuple(v // times if a == axis else v for a, v in enumerate(i))],
                      name="repeat")


def rope_table(positions: te.Tensor, inv_freq: te.Tensor, *axes: te.Tensor, rotary_dim: int) -> te.Tensor:
    """(T, R): cos(p * f_j) for j < R/2, then sin. ``inv_freq`` (R/2) is a constant from
    `ir.ops.inv_freq`; multimodal RoPE passes positions (3, T) and ``axes`` (R/2), the constant
    `ir.ops.mrope_axes`: the row of positions each frequency reads."""
    half = rotary_dim // 2

    def fn(t, j):
        f = tirx.floormod(j, half)
        p = positions[axes[0][f], t] if axes else positions[t]
        ang = p.astype(F32) * inv_freq[f]
        return tirx.if_then_else(j < half, tirx.cos(ang), tirx.sin(ang))

    return te.compute((positions.shape[-1], rotary_dim), fn, name="rope_table")


def rotary(x: te.Tensor, table: te.Tensor) -> te.Tensor:
    """Neox-style rotation of the first R dims of x (T, H, D)."""
    r = table.shape[1]
    half = r // 2

    def fn(t, h, d):
        xv = _f32(x, t, h, d)
        j = tirx.floormod(d, half)
        cos, sin = table[t, j], table[t, j + half]
        partner = tirx.if_then_else(d < half, -_f32(x, t, h, tirx.min(d + half, r - 1)),
                                    _f32(x, t, h, tirx.max(d - half, 0)))
        return tirx.if_then_else(d < r, xv * cos + partner * sin, xv).astype(x.dtype)

    return te.compute(x.shape, fn, name="rotary")


def _attention(q: te.Tensor, k: te.Tensor, v: te.Tensor, s: tirx.PrimExpr, scale: float,
               causal: bool, rows: tirx.PrimExpr | None = None, out_dtype: str | None = None) -> te.Tensor:
    """softmax(q k^T * scale) v over key rows [0, s); query row i sits at position i + s - T;
    in ``out_dtype`` (default q's).

    ``rows`` (default s) is the number of key rows the loops cover: where s is data (read from
    a tensor), the loops cover the whole cache and the causal mask hides rows >= s.
    """
    t, hq, d = q.shape
    g = hq // k.shape[1]
    rows = s if rows is None else rows
    rd = te.reduce_axis((0, d), "d")
    dots = te.compute((hq, t, rows), lambda h, i, j: te.sum(_f32(q, i, h, rd) * _f32(k, j, h // g, rd), axis=rd),
                      name="scores")

    def logit(h, i, j):
        x = dots[h, i, j] * tirx.const(scale, F32)
        return tirx.if_then_else(j <= i + (s - t), x, tirx.min_value(F32)) if causal else x

    k1, k2 = te.reduce_axis((0, rows), "k1"), te.reduce_axis((0, rows), "k2")
    mx = te.compute((hq, t), lambda h, i: te.max(logit(h, i, k1), axis=k1), name="max")
    p = te.compute((hq, t, rows), lambda h, i, j: tirx.exp(logit(h, i, j) - mx[h, i]), name="probs")  # unnormalized
    den = te.compute((hq, t), lambda h, i: te.sum(p[h, i, k2], axis=k2), name="sum")
    rs = te.reduce_axis((0, rows), "s")
    if rows is s:
        pv = lambda i, h, e: p[h, i, rs] * _f32(v, rs, h // g, e)  # noqa: E731
    else:  # rows past s may hold anything, NaN included: 0 * NaN is NaN, so select, don't multiply
        pv = lambda i, h, e: tirx.if_then_else(rs < s, p[h, i, rs] * _f32(v, rs, h // g, e), 0.0)  # noqa: E731
    acc = te.compute((t, hq, v.shape[2]), lambda i, h, e: te.sum(pv(i, h, e), axis=rs), name="attn_out")
    out = te.compute(acc.shape, lambda i, h, e: acc[i, h, e] / den[h, i], name="attn_norm")
    dtype = out_dtype or q.dtype
    return out if dtype == F32 else cast(out, dtype)


def norm_rotated(xv: Callable, ss, w, table, eps: float, d: int) -> Callable:
    """(t, h, e) -> rotary(rms_norm(x))[t, h, e] in fp32, given xv(t, h, e) (x in fp32) and the
    head's sum of squares ss[t, h]; ``ss``, ``w`` and ``table`` are TE tensors or TIR buffers."""
    r, half = table.shape[1], table.shape[1] // 2

    def normed(t, h, e):
        inv = _inv_rms(ss[t, h], d, eps)
        return xv(t, h, e) * inv * _f32(w, e)

    def fn(t, h, e):
        j = tirx.floormod(e, half)
        cos, sin = table[t, j], table[t, j + half]
        partner = tirx.if_then_else(e < half, -normed(t, h, tirx.min(e + half, r - 1)),
                                    normed(t, h, tirx.max(e - half, 0)))
        return tirx.if_then_else(e < r, normed(t, h, e) * cos + partner * sin, normed(t, h, e))

    return fn


def norm_rotary(x: te.Tensor, w: te.Tensor, table: te.Tensor, eps: float, start: int | None = None,
                heads: int | None = None) -> te.Tensor:
    """rotary(rms_norm(x, w), table) for x (T, H, D), or for the head window of x (T, N) at
    column ``start`` (``heads`` heads of D): the normalized row is never stored.

    Block names match rms_norm's ("sumsq", "norm"), so its schedule rules apply.
    """
    d = int(w.shape[0])
    shape = (x.shape[0], heads, d) if start is not None else x.shape
    xv = (lambda t, h, e: _f32(x, t, start + h * d + e)) if start is not None else \
        (lambda t, h, e: _f32(x, t, h, e))
    k = te.reduce_axis((0, d), "k")
    ss = te.compute(shape[:-1], lambda t, h: te.sum(xv(t, h, k) * xv(t, h, k), axis=k), name="sumsq")
    fn = norm_rotated(xv, ss, w, table, eps, d)
    return te.compute(shape, lambda t, h, e: fn(t, h, e).astype(x.dtype), name="norm")


def attention(q: te.Tensor, k: te.Tensor, v: te.Tensor, scale: float, causal: bool = True,
              out_dtype: str | None = None) -> te.Tensor:
    """GQA attention: q (T, Hq, D), k (S, Hkv, D), v (S, Hkv, Dv) -> (T, Hq, Dv).

    Materializes the (Hq, T, S) scores: fine for the cache-less forward at moderate T.
    """
    return _attention(q, k, v, k.shape[0], scale, causal, out_dtype=out_dtype)


DECODE_CHUNK = 64  # keys per chunk of a split-key decode attention (schedules/cuda/attention.py)


def decode_scratch_shape(hq: int, dv: int, cache_rows: int) -> tuple[int, int, int]:
    """The scratch output of a static-decode cache_attention: per query head and chunk of
    DECODE_CHUNK keys, a split-key kernel's partial output (Dv), running max and sum."""
    return (hq, -(-cache_rows // DECODE_CHUNK), dv + 2)


def cache_attention(q: te.Tensor, kc: te.Tensor, vc: te.Tensor, kv_len: tirx.Var | te.Tensor, *norm: te.Tensor,
                    scale: float, kv_len_tensor: bool = False, eps: float | None = None, start: int | None = None,
                    heads: int | None = None, out_dtype: str | None = None) -> te.Tensor | list[te.Tensor]:
    """Causal attention of q (T, Hq, D) over cache rows [0, kv_len) of kc/vc (C, Hkv, D);
    ``kv_len_tensor``: kv_len is a (1,) int32 tensor, so the loops cover all C rows. With
    ``norm`` = (w, table), q is `norm_rotary` (q, w, table, eps, start, heads).

    The ``kv_len_tensor`` form (static decode, captured whole by a CUDA graph) has a second
    output, scratch for a split-key kernel's partial results (`decode_scratch_shape`; zeros
    here). A kernel's own global allocations come from TVM's workspace pool at each launch, and
    a captured graph would keep replaying into a workspace page that the pool may free and
    reallocate (it resizes pages: `src/runtime/workspace_pool.cc`), which an H200 reported as
    an illegal address, 2026-12-04. An output is planned by Relax: static storage, kept."""
    if norm:
        q = norm_rotary(q, *norm, eps=eps, start=start, heads=heads)
    if kv_len_tensor:
        out = _attention(q, kc, vc, kv_len[0].astype("int64"), scale, True, rows=kc.shape[0], out_dtype=out_dtype)
        shape = decode_scratch_shape(int(q.shape[1]), int(vc.shape[2]), int(kc.shape[0]))
        return [out, te.compute(shape, lambda *i: tirx.const(0, F32), name="scratch")]
    return _attention(q, kc, vc, kv_len, scale, True, out_dtype=out_dtype)


def attention_tir(body, hq: int, hkv: int, d: int, dv: int, cache_rows: int | None, dtypes: tuple[str, ...],
                  index: Callable = lambda x: x) -> tirx.PrimFunc:
    """A hand-written TIR replacement for the attention TE kernels, with their signatures:
    ``body(q, k, v, out, t, s)`` (a ``T.macro``: T query rows over key rows [0, s)) wrapped as
    attention(q, k, v, out) (cache_rows None) or cache_attention(q, kc, vc, out, kv_len).
    ``index`` converts t and s (int64) to the body's index type. Pass the result to
    `same_params` to match the parameter order of the PrimFunc it replaces."""
    from tvm.script import tirx as T

    qdt, kdt, vdt, odt = dtypes
    if cache_rows is None:
        @T.prim_func(private=True, s_tir=True)
        def attention(var_q: T.handle, var_k: T.handle, var_v: T.handle, var_out: T.handle):
            t, s = T.int64(), T.int64()
            q = T.match_buffer(var_q, (t, hq, d), qdt)
            k = T.match_buffer(var_k, (s, hkv, d), kdt)
            v = T.match_buffer(var_v, (s, hkv, dv), vdt)
            out = T.match_buffer(var_out, (t, hq, dv), odt)
            body(q, k, v, out, index(t), index(s))

        return attention

    @T.prim_func(private=True, s_tir=True)
    def cache_attention(var_q: T.handle, var_kc: T.handle, var_vc: T.handle, var_out: T.handle, kv_len: T.int64):
        t = T.int64()
        q = T.match_buffer(var_q, (t, hq, d), qdt)
        kc = T.match_buffer(var_kc, (cache_rows, hkv, d), kdt)
        vc = T.match_buffer(var_vc, (cache_rows, hkv, dv), vdt)
        out = T.match_buffer(var_out, (t, hq, dv), odt)
        body(q, kc, vc, out, index(t), index(kv_len))

    return cache_attention


def causal_bounds(causal: bool, rows: int):
    """For flash kernels over ``rows`` query rows per block, the T rows of q being positions
    s-T .. s-1: last_key(s, t, i0), the exclusive bound on the keys any row of the block from
    row i0 sees, and visible(j, i, s, t), whether row i sees key j."""
    def last_key(s, t, i0):
        return tirx.min(s, i0 + rows + s - t) if causal else s

    def visible(j, i, s, t):
        return tirx.all(j < s, j <= i + s - t) if causal else j < s

    return last_key, visible


def same_params(f: tirx.PrimFunc, like: tirx.PrimFunc) -> tirx.PrimFunc:
    """``f`` with its parameters in ``like``'s order: its buffers in turn, and its one scalar
    (kv_len) wherever ``like`` has its scalar (emit_te may put it before the output)."""
    from tvm.tirx.buffer import is_buffer_var

    mine = iter([p for p in f.params if is_buffer_var(p)])
    scalar = [p for p in f.params if not is_buffer_var(p)]
    params = [next(mine) if is_buffer_var(p) else scalar[0] for p in like.params]
    return tirx.PrimFunc(params, f.body, f.ret_type, f.attrs)


def linear_operands(func: tirx.PrimFunc) -> tuple | None:
    """(x, w, extra, out) buffers of a lowered `linear` PrimFunc (all parameters buffers), else None."""
    from tvm.tirx.buffer import is_buffer_var

    if len(func.params) < 3 or not all(is_buffer_var(p) for p in func.params):
        return None
    x, w, *extra, out = func.params
    return x, w, extra, out


def kv_append(cache_shape: tuple[int, int, int], cache_dtype: str, k_dtype: str,
              kv_len_tensor: bool = False, start: int | None = None, k_cols: int | None = None,
              norm: tuple[str, int, float] | None = None,
              values: tuple[str, int | None, int] | None = None) -> tirx.PrimFunc:
    """In-place PrimFunc ``(cache, k, kv_len[, w, table])``: cache[kv_len - T + i] = k[i] for the T
    rows of k. kv_len is an int64 scalar, or with ``kv_len_tensor`` a (1,) int32 buffer holding
    it. With ``start``, k is (T, k_cols) and its columns [start, start + H * D) are the rows'
    heads. With ``norm`` = (w's dtype, the table's rotary width, eps), the rows written are
    norm_rotary(k, w, table, eps) (`norm_rotary`): block "sumsq" per (row, head), then "append".
    With ``values`` = (v's dtype, v_start, v's columns) as well (`ir.ops.kv_append_pair`), the
    PrimFunc is ``(cache, k, kv_len, vcache, v, w, table)`` and block "append" also writes
    vcache[kv_len - T + i] = v[i] (a head window at v_start, or (T, H, D)): the values' append
    rides in the keys' kernel, both caches in place.

    Written in TIR, not TE: TE cannot express writing into an operand.
    """
    from tvm.script import tirx as T

    c, h, d = cache_shape
    k_shape = (lambda t: (t, k_cols)) if start is not None else (lambda t: (t, h, d))

    def k_at(k, i, hh, dd):
        return k[i, start + hh * d + dd] if start is not None else k[i, hh, dd]

    @T.macro
    def body(cache, k, t, n):
        for i, hh, dd in T.grid(t, T.int64(h), T.int64(d)):
            with T.sblock("append"):
                vi, vh, vd = T.axis.remap("SSS", [i, hh, dd])
                cache[n - t + vi, vh, vd] = T.Cast(cache_dtype, k_at(k, vi, vh, vd))

    if norm is not None:
        w_dtype, rot, eps = norm

        def xv(k):
            return lambda i, hh, e: k_at(k, i, hh, e).astype(F32)

        pair = values is not None
        if pair:
            v_dtype, v_start, v_cols = values
            v_shape = (lambda t: (t, v_cols)) if v_start is not None else (lambda t: (t, h, d))

            def v_at(v, i, hh, dd):
                return v[i, v_start + hh * d + dd] if v_start is not None else v[i, hh, dd]

        @T.macro
        def body_norm(cache, k, w, table, t, n, vcache, v):  # (vcache, v: the pair form's; else unused)
            with T.sblock("root"):
                T.reads()
                T.writes()
                ss = T.sblock_alloc_buffer((t, h), F32)
                for i, hh, e in T.grid(t, T.int64(h), T.int64(d)):
                    with T.sblock("sumsq"):
                        vi, vh, ve = T.axis.remap("SSR", [i, hh, e])
                        with T.init():
                            ss[vi, vh] = T.float32(0)
                        ss[vi, vh] = ss[vi, vh] + xv(k)(vi, vh, ve) * xv(k)(vi, vh, ve)
                for i, hh, dd in T.grid(t, T.int64(h), T.int64(d)):
                    with T.sblock("append"):
                        vi, vh, vd = T.axis.remap("SSS", [i, hh, dd])
                        cache[n - t + vi, vh, vd] = T.Cast(cache_dtype,
                                                           norm_rotated(xv(k), ss, w, table, eps, d)(vi, vh, vd))
                        if pair:
                            vcache[n - t + vi, vh, vd] = T.Cast(cache_dtype, v_at(v, vi, vh, vd))

    if values is not None and norm is None:
        raise ValueError("kv_append with values: the pair form has the keys' norm (Qwen3's key path)")

    kv_ann, kv_value = kv_len_operand(kv_len_tensor)
    if values is not None:
        @T.prim_func(private=True, s_tir=True)
        def kv_append_pair(var_cache: T.handle, var_k: T.handle, kv_len: kv_ann, var_vcache: T.handle,
                           var_v: T.handle, w: T.Buffer((d,), w_dtype), var_table: T.handle):
            cache = T.match_buffer(var_cache, (c, h, d), cache_dtype)
            vcache = T.match_buffer(var_vcache, (c, h, d), cache_dtype)
            t = T.int64()
            k = T.match_buffer(var_k, k_shape(t), k_dtype)
            v = T.match_buffer(var_v, v_shape(t), v_dtype)
            table = T.match_buffer(var_table, (t, rot), F32)
            body_norm(cache, k, w, table, t, kv_value(kv_len), vcache, v)

        return kv_append_pair

    if norm is not None:
        @T.prim_func(private=True, s_tir=True)
        def kv_append_norm(var_cache: T.handle, var_k: T.handle, kv_len: kv_ann, w: T.Buffer((d,), w_dtype),
                           var_table: T.handle):
            cache = T.match_buffer(var_cache, (c, h, d), cache_dtype)
            t = T.int64()
            k = T.match_buffer(var_k, k_shape(t), k_dtype)
            table = T.match_buffer(var_table, (t, rot), F32)
            body_norm(cache, k, w, table, t, kv_value(kv_len), cache, k)

        return kv_append_norm

    @T.prim_func(private=True, s_tir=True)
    def kv_append(var_cache: T.handle, var_k: T.handle, kv_len: kv_ann):
        cache = T.match_buffer(var_cache, (c, h, d), cache_dtype)
        t = T.int64()
        k = T.match_buffer(var_k, k_shape(t), k_dtype)
        body(cache, k, t, kv_value(kv_len))

    return kv_append


def kv_len_operand(tensor: bool) -> tuple[Any, Callable]:
    """kv_len in a hand-written TIR signature: (its annotation, the int64 value read from it).
    A scalar, or with ``tensor`` (a static decode step, `passes.static_decode`) a (1,) int32
    buffer. One PrimFunc then serves both forms of a kernel."""
    from tvm.script import tirx as T

    if tensor:
        return T.Buffer((1,), "int32"), lambda n: T.Cast("int64", n[0])
    return T.int64, lambda n: n


class AppendAttention(NamedTuple):
    """One decode step's attention with its KV appends (`ir.ops.append_attention`): x (1, cols)
    holds q's hq heads from column q_start, the key's and value's heads from k_start and v_start;
    w, kw: the q and k norms' weights (dtypes w_dtype, kw_dtype); the rotary table is (1, rot)."""
    cols: int
    x_dtype: str
    hq: int
    q_start: int
    k_start: int
    v_start: int
    w_dtype: str
    kw_dtype: str
    rot: int
    eps: float
    scale: float
    out_dtype: str


def append_attention(op: AppendAttention, cache_shape: tuple[int, int, int], cache_dtype: str,
                     kv_len_tensor: bool, sync: int = 0) -> tirx.PrimFunc:
    """In-place PrimFunc ``(x, kc, vc, kv_len, w, table, kw, [sync,] out[, scratch])``: writes the
    step's key (normed by kw, rotated) and value into row kv_len - 1 of kc / vc, then
    out = attention of q (normed by w, rotated) over rows [0, kv_len). ``kv_len_tensor``: kv_len
    is a (1,) int32 buffer and a scratch output follows (as `cache_attention`'s static form).
    ``sync`` > 0 (static form): a (sync,) int32 parameter of zeros, the CUDA kernel's counters
    (`ir.ops.append_attention`); unused here.

    The plain loops here are the op's meaning (a CPU reference); the CUDA rule replaces the
    whole body with the split-key decode kernel (`schedules.cuda.attention`)."""
    from tvm.script import tirx as T

    c, h, d = cache_shape
    hq, g, xdt, cdt, odt = op.hq, op.hq // h, op.x_dtype, cache_dtype, op.out_dtype
    eps, scale = op.eps, op.scale

    def window(x, start):
        return lambda t, hh, e: T.Cast(F32, x[t, start + hh * d + e])

    part = decode_scratch_shape(hq, d, c)

    @T.macro
    def sumsq(x, ss, heads, start):  # ss[0, i]: the sum of squares of x's head i from column start
        for hh, e in T.grid(heads, d):
            with T.sblock("sumsq"):
                vh, ve = T.axis.remap("SR", [hh, e])
                with T.init():
                    ss[0, vh] = T.float32(0)
                ss[0, vh] = ss[0, vh] + window(x, start)(0, vh, ve) * window(x, start)(0, vh, ve)

    @T.macro
    def body(x, kc, vc, n, w, table, kw, out, scratch):  # (scratch: the static form's; else unused)
        with T.sblock("root"):
            T.reads()
            T.writes()
            kss = T.sblock_alloc_buffer((1, h), F32)
            qss = T.sblock_alloc_buffer((1, hq), F32)
            sc = T.sblock_alloc_buffer((hq, c), F32)
            mx = T.sblock_alloc_buffer((hq,), F32)
            den = T.sblock_alloc_buffer((hq,), F32)
            acc = T.sblock_alloc_buffer((hq, d), F32)
            sumsq(x, kss, h, op.k_start)
            for hh, e in T.grid(h, d):
                with T.sblock("append"):
                    vh, ve = T.axis.remap("SS", [hh, e])
                    kc[n - 1, vh, ve] = T.Cast(cdt, norm_rotated(window(x, op.k_start), kss, kw, table, eps, d)(0, vh, ve))
                    vc[n - 1, vh, ve] = T.Cast(cdt, x[0, op.v_start + vh * d + ve])
            sumsq(x, qss, hq, op.q_start)
            for hh, j, e in T.grid(hq, c, d):
                with T.sblock("scores"):
                    vh, vj, ve = T.axis.remap("SSR", [hh, j, e])
                    with T.init():
                        sc[vh, vj] = T.float32(0)
                    sc[vh, vj] = sc[vh, vj] + norm_rotated(window(x, op.q_start), qss, w, table, eps, d)(0, vh, ve) * \
                        T.float32(scale) * T.Cast(F32, kc[vj, vh // g, ve])
            for hh, j in T.grid(hq, c):
                with T.sblock("max"):
                    vh, vj = T.axis.remap("SR", [hh, j])
                    with T.init():
                        mx[vh] = T.min_value(F32)
                    mx[vh] = T.max(mx[vh], T.if_then_else(vj < n, sc[vh, vj], T.min_value(F32)))
            for hh, j in T.grid(hq, c):
                with T.sblock("sum"):
                    vh, vj = T.axis.remap("SR", [hh, j])
                    with T.init():
                        den[vh] = T.float32(0)
                    den[vh] = den[vh] + T.if_then_else(vj < n, T.exp(sc[vh, vj] - mx[vh]), T.float32(0))
            for hh, e, j in T.grid(hq, d, c):
                with T.sblock("pv"):
                    vh, ve, vj = T.axis.remap("SSR", [hh, e, j])
                    with T.init():
                        acc[vh, ve] = T.float32(0)
                    acc[vh, ve] = acc[vh, ve] + T.if_then_else(  # (rows past n may hold NaN: select)
                        vj < n, T.exp(sc[vh, vj] - mx[vh]) * T.Cast(F32, vc[vj, vh // g, ve]), T.float32(0))
            for hh, e in T.grid(hq, d):
                with T.sblock("out"):
                    vh, ve = T.axis.remap("SS", [hh, e])
                    out[0, vh, ve] = T.Cast(odt, acc[vh, ve] / den[vh])
            if kv_len_tensor:
                for i, j, e in T.grid(*part):
                    with T.sblock("scratch"):
                        vi, vj, ve = T.axis.remap("SSS", [i, j, e])
                        scratch[vi, vj, ve] = T.float32(0)

    kv_ann, kv_value = kv_len_operand(kv_len_tensor)
    wdt, kwdt, rot, cols = op.w_dtype, op.kw_dtype, op.rot, op.cols

    def n32(kv_len):
        return T.Cast("int32", kv_value(kv_len))

    if sync:
        if not kv_len_tensor:
            raise ValueError("append_attention takes sync counters in its static form (kv_len_tensor) only")

        @T.prim_func(private=True, s_tir=True)
        def append_attention_synced(x: T.Buffer((1, cols), xdt), kc: T.Buffer((c, h, d), cdt),
                                    vc: T.Buffer((c, h, d), cdt), kv_len: kv_ann, w: T.Buffer((d,), wdt),
                                    table: T.Buffer((1, rot), F32), kw: T.Buffer((d,), kwdt),
                                    counters: T.Buffer((sync,), "int32"), out: T.Buffer((1, hq, d), odt),
                                    scratch: T.Buffer(part, F32)):
            body(x, kc, vc, n32(kv_len), w, table, kw, out, scratch)

        return append_attention_synced

    if kv_len_tensor:
        @T.prim_func(private=True, s_tir=True)
        def append_attention_at(x: T.Buffer((1, cols), xdt), kc: T.Buffer((c, h, d), cdt),
                                vc: T.Buffer((c, h, d), cdt), kv_len: kv_ann, w: T.Buffer((d,), wdt),
                                table: T.Buffer((1, rot), F32), kw: T.Buffer((d,), kwdt),
                                out: T.Buffer((1, hq, d), odt), scratch: T.Buffer(part, F32)):
            body(x, kc, vc, n32(kv_len), w, table, kw, out, scratch)

        return append_attention_at

    @T.prim_func(private=True, s_tir=True)
    def append_attention(x: T.Buffer((1, cols), xdt), kc: T.Buffer((c, h, d), cdt), vc: T.Buffer((c, h, d), cdt),
                         kv_len: kv_ann, w: T.Buffer((d,), wdt), table: T.Buffer((1, rot), F32),
                         kw: T.Buffer((d,), kwdt), out: T.Buffer((1, hq, d), odt)):
        body(x, kc, vc, n32(kv_len), w, table, kw, out, out)

    return append_attention


def _hash32(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """`ir.ops.hash32` on a uint32 expression (multiplication wraps mod 2^32)."""
    u = lambda v: tirx.const(v, "uint32")  # noqa: E731
    x = tirx.bitwise_xor(x, tirx.shift_right(x, u(16)))
    x = x * u(0x7FEB352D)
    x = tirx.bitwise_xor(x, tirx.shift_right(x, u(15)))
    x = x * u(0x846CA68B)
    return tirx.bitwise_xor(x, tirx.shift_right(x, u(16)))


SAMPLE_PARTS = 128  # sample_token: slices of the vocabulary reduced side by side (each >= 1024 tokens)


def sample_token(z: te.Tensor, inv_t: te.Tensor, key: te.Tensor) -> list[te.Tensor]:
    """argmax over V of z (1, V) [* inv_t + Gumbel noise from hash(key, index)] -> (1,) int32.

    Stages with plain reducers (which every backend's cross-thread reduction knows): "scores"
    per token (the noise is computed only when sampling); "part_max", the max of each of up to
    SAMPLE_PARTS slices of the vocabulary, and "max" over those; "part_argmax", the lowest index
    of each slice holding the max, and "argmax" the lowest of those, as numpy's argmax breaks
    ties. Every stage but the token is an output too (after it), not the kernel's own
    allocation, for the reason `cache_attention` gives: a decode step captured by a CUDA graph
    must not take TVM workspace. The slices let a GPU reduce the 151,936 logits of Qwen3 in
    128 blocks: one block each for the max and the argmax took 17 and 15 us on an H200.
    """
    from ..ir.ops import GOLDEN32

    v = int(z.shape[1])
    seed = key[0].astype("uint32") * tirx.const(GOLDEN32, "uint32")

    def score(i, j):
        h = _hash32(j.astype("uint32") + seed)
        u = (tirx.shift_right(h, tirx.const(8, "uint32")).astype(F32) + tirx.const(0.5, F32)) \
            * tirx.const(2.0**-24, F32)
        noisy = _f32(z, i, j) * inv_t[0] - tirx.log(-tirx.log(u))
        return tirx.if_then_else(inv_t[0] > tirx.const(0.0, F32), noisy, _f32(z, i, j))  # lazy: greedy skips logs

    sc = te.compute((1, v), score, name="scores")
    parts = max(1, min(SAMPLE_PARTS, v // 1024))
    chunk = -(-v // parts)
    big = tirx.const(2**31 - 1, "int32")

    def index(b, k):  # the token at position k of slice b (>= v past the end)
        return b * chunk + k

    k1, k2 = te.reduce_axis((0, chunk), "k1"), te.reduce_axis((0, chunk), "k2")
    pmax = te.compute((1, parts), lambda i, b: te.max(tirx.if_then_else(
        index(b, k1) < v, sc[i, tirx.min(index(b, k1), v - 1)], tirx.min_value(F32)), axis=k1), name="part_max")
    kp = te.reduce_axis((0, parts), "kp")
    mx = te.compute((1,), lambda i: te.max(pmax[i, kp], axis=kp), name="max")
    # the token id as an explicit int64 -> int32 cast: Relax widens a kernel's int32 index
    # arithmetic to int64, and an int32 id left implicit would widen with it (the min over
    # int64 then no longer matches its int32 buffer's reducer)
    pidx = te.compute((1, parts), lambda i, b: te.min(tirx.if_then_else(
        tirx.all(index(b, k2) < v, sc[i, tirx.min(index(b, k2), v - 1)] == mx[i]),
        tirx.Cast("int32", index(tirx.Cast("int64", b), tirx.Cast("int64", k2))), big), axis=k2), name="part_argmax")
    kq = te.reduce_axis((0, parts), "kq")
    token = te.compute((1,), lambda i: te.min(pidx[i, kq], axis=kq), name="argmax")
    return [token, sc, pmax, mx, pidx]


KERNELS: dict[str, Callable[..., te.Tensor]] = {
    "embedding": embedding, "linear": linear, "linear_packed": linear_packed, "matmul": matmul, "rms_norm": rms_norm, "add": add,
    "mul": mul, "silu": silu, "sigmoid": sigmoid, "scale": scale, "cast": cast, "swiglu": swiglu,
    "softmax": softmax, "causal_mask": causal_mask, "transpose": transpose, "slice": slice_,
    "concat": concat, "repeat": repeat, "rope_table": rope_table, "rotary": rotary, "norm_rotary": norm_rotary, "attention": attention,
    "cache_attention": cache_attention, "sample_token": sample_token, "moe_gates": moe_gates,
    "moe_experts": moe_experts, "sigmoid_gate": sigmoid_gate, "rms_norm_gated": rms_norm_gated,
    "layer_norm": layer_norm, "gelu": gelu, "gelu_tanh": gelu_tanh, "weighted_rows": weighted_rows,
    "merge_rows": merge_rows, "add_rows": add_rows,
}
