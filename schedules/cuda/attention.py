"""attention / cache_attention on CUDA: hand-written TIR kernels replacing the TE ones.

The TE kernel materializes every (query, key) score in global memory, stage by stage; these
kernels never store a score outside shared memory.

Decode (one query row), split over the keys ("flash decoding"): one thread block per
(kv head, chunk of KC keys) so that even a short context fills many SMs; the block serves
the G query heads sharing the kv head, so each key and value row is read once. In the block:

    stage the chunk's K and V rows in shared memory (coalesced, storage dtype)
    scores (G, KC): one thread per (head, key), a dot product over D from shared memory
    softmax over the chunk: the max m and sum l per head, p = exp(s - m)
    o (G, Dv) = p @ V, one thread per output column

and writes the unnormalized (o, m, l) of the chunk. A second kernel merges the chunks of each
query head: with M = max m_c, out = sum_c exp(m_c - M) o_c / sum_c exp(m_c - M) l_c.

Prefill (T > 1), flash attention: one block per (query head, tile of BQ query rows); key
tiles of BK rows stream through shared memory with an online softmax. Each thread owns a
(TR x TC) register tile of the (BQ, BK) scores and a (TR x Dv/TC...) slice of the output;
key tiles past the tile's last causal position are never visited. Over a bf16 cache (prefill
of 16-bit models) the rule picks `flash_tc.py`'s tensor-core form of this kernel instead.

Every phase is a loop over the block's threads, and phases only share data through shared
memory, so the kernels are race free and mean the same run serially: tests check them on the
CPU that way (tests/cuda_emulation.py).
"""
from __future__ import annotations

from typing import NamedTuple

from tvm import tirx
from tvm.tirx.buffer import is_buffer_var

from ...targets import TargetDesc
from . import flash_tc
from ..kernels import DECODE_CHUNK, attention_tir, causal_bounds, decode_scratch_shape, norm_rotated, same_params

F32 = "float32"
THREADS = 128
KC = DECODE_CHUNK  # decode: keys per block (the static form's scratch is laid out by chunks of this many)
NEG = -3.0e38  # a masked score: finite, so exp(NEG - m) is 0 and never NaN
FLASH_TC_WARPS = 8  # prefill over a bf16 cache: flash_tc.py's kernel with this many warps


class QNorm(NamedTuple):
    """A decode kernel's fused query norm_rotary: x (1, cols) holds q's heads from column start;
    w (D,) in w_dtype; the rotary table is (1, rot)."""
    start: int
    cols: int
    rot: int
    eps: float
    w_dtype: str


def _ceil(a, b):
    return (a + b - 1) // b


# Launch extents must be expressions of the kernel's parameters, not names bound in its body.
def _i32(kv_len: tirx.PrimExpr) -> tirx.PrimExpr:
    return tirx.Cast("int32", kv_len)  # thread indices are int32


def _chunks(kv_len: tirx.PrimExpr) -> tirx.PrimExpr:
    return _ceil(_i32(kv_len), KC)


def cuda_attention(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc | None:
    """The decode kernel for cache_attention with one query row, the flash kernel for attention
    and cache_attention with T rows; None for anything else."""
    attrs = func.attrs
    if attrs is None or "scale" not in attrs:
        return None
    buffers = [p for p in func.params if is_buffer_var(p)]
    data_len = bool(attrs.get("kv_len_tensor"))  # static decode: (q, kc, vc, kv_len, [w, table,] out, scratch)
    if data_len:
        buffers = buffers[:-1]  # the scratch output (`kernels.cache_attention`): our partial results
    q_norm = None
    if "q_norm_eps" in attrs:  # (x, kc, vc, [kv_len,] w, table, out [, kv_len])
        w, table = buffers[-3:-1]
        buffers = buffers[:-3] + buffers[-1:]
        x = buffers[0]
        if len(x.shape) != 2 or "q_start" not in attrs or not isinstance(x.shape[0], tirx.IntImm):
            return None
        q_norm = QNorm(int(attrs["q_start"]), int(x.shape[1]), int(table.shape[1]), float(attrs["q_norm_eps"]),
                       str(w.dtype))
    q, k, v, out = buffers[:3] + buffers[-1:] if data_len else buffers
    cache = len(func.params) == 5 + (2 if q_norm else 0) + (1 if data_len else 0)  # (+ the scratch)
    dims = dict(hq=int(out.shape[1]), hkv=int(k.shape[1]), d=int(k.shape[2]), dv=int(v.shape[2]),
                dtypes=(q.dtype, k.dtype, v.dtype, out.dtype), scale=float(attrs["scale"]))
    if isinstance(q.shape[0], tirx.IntImm) and int(q.shape[0]) == 1 and cache:
        f = _decode_kernel(cache_rows=int(k.shape[0]), kv_len_tensor=data_len, q_norm=q_norm, **dims)
        return f if data_len else same_params(f, func)
    if data_len or q_norm:  # (a fused query norm: decode only, `passes.decode_passes`)
        return None
    causal = bool(attrs.get("causal", True))
    if cache and flash_tc.supported(dims["d"], dims["dv"], dims["dtypes"]):
        # prefill over a bf16 cache: on tensor cores, 8 warps of 16 query rows. On an H200
        # (2026-12-04, bench/gpu/kernel_bench.py, Qwen3-0.6B heads) 14.6, 39.4, 97 and 501 us at
        # 16, 128, 512 and 2048 rows against 23.2, 46.1, 190 and 1,167 for the CUDA-core kernel
        # below, the outputs 3e-6 apart (4 warps: faster up to 128 rows, 849 us at 2048)
        f = flash_tc.flash_tc_kernel(cache_rows=int(k.shape[0]), causal=causal, warps=FLASH_TC_WARPS, **dims)
        return same_params(f, func)
    if dims["dv"] % TC:
        return None
    f = _flash_kernel(cache_rows=int(k.shape[0]) if cache else None, causal=causal, **dims)
    return same_params(f, func)


def _vector(row: int, dtype: str) -> int:
    """Elements per load: 16 bytes where the row length allows."""
    width = 16 // (4 if dtype == F32 else 2)
    return next(v for v in (width, width // 2, width // 4, 2, 1) if v >= 1 and row % v == 0)


def _decode_kernel(hq: int, hkv: int, d: int, dv: int, cache_rows: int, dtypes: tuple[str, ...],
                   scale: float, kv_len_tensor: bool = False, q_norm: QNorm | None = None) -> tirx.PrimFunc:
    """cache_attention(q, kc, vc, out, kv_len) for one query row; ``kv_len_tensor``: the
    static-decode form (q, kc, vc, kv_len (1,) int32, out), launched over the whole cache.
    ``q_norm``: q is norm_rotary of a head window of x (1, cols), staged in the block (the
    parameters gain w and table after the cache operands and kv_len, as lowering passes them)."""
    from tvm.script import tirx as T

    qdt, kdt, vdt, odt = dtypes
    g = hq // hkv
    max_chunks = _ceil(cache_rows, KC)
    vk, vv = _vector(d, kdt), _vector(dv, vdt)

    if q_norm is None:
        @T.macro
        def stage_q(q, qs, qr, qsum, h, live, w, table):  # (qr, qsum, w, table unused)
            for it in range(_ceil(g * d, THREADS)):
                for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                    if live and it * THREADS + tx < g * d:
                        qs[(it * THREADS + tx) // d, (it * THREADS + tx) % d] = T.Cast(
                            F32, q[0, h * g + (it * THREADS + tx) // d, (it * THREADS + tx) % d]
                        ) * T.float32(scale)
    else:
        start, eps = q_norm.start, q_norm.eps

        @T.macro
        def stage_q(q, qs, qr, qsum, h, live, w, table):
            """qs = norm_rotary(q) * scale (`kernels.norm_rotated`, as norm_rotary computes it),
            through the raw heads (qr) and each head's sum of squares (qsum)."""
            for it in range(_ceil(g * d, THREADS)):
                for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                    if live and it * THREADS + tx < g * d:
                        qr[(it * THREADS + tx) // d, (it * THREADS + tx) % d] = T.Cast(
                            F32, q[0, start + (h * g + (it * THREADS + tx) // d) * d + (it * THREADS + tx) % d])
            for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                if live and tx < g:
                    with T.sblock("q_sumsq"):
                        T.reads()
                        T.writes()
                        acc = T.sblock_alloc_buffer((1,), F32, scope="local")
                        acc[0] = T.float32(0)
                        for e in range(d):
                            acc[0] = acc[0] + qr[tx, e] * qr[tx, e]
                        qsum[0, tx] = acc[0]
            for it in range(_ceil(g * d, THREADS)):
                for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                    if live and it * THREADS + tx < g * d:
                        qs[(it * THREADS + tx) // d, (it * THREADS + tx) % d] = norm_rotated(
                            lambda t, hh, e: qr[hh, e], qsum, w, table, eps, d)(
                            0, (it * THREADS + tx) // d, (it * THREADS + tx) % d) * T.float32(scale)

    @T.macro
    def stage_rows(dst, src, cols, vec, h, j0, n, live):
        """The chunk's KC rows of head h of src (C, Hkv, cols) into dst (KC * cols), vec elements
        of one row per load; rows past the n valid ones repeat row n - 1."""
        for it in range(_ceil(KC * cols // vec, THREADS)):
            for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                if live and it * THREADS + tx < KC * cols // vec:
                    for u in T.vectorized(vec):
                        dst[(it * THREADS + tx) * vec + u] = src[
                            T.min(j0 + (it * THREADS + tx) * vec // cols, n - 1), h, (it * THREADS + tx) * vec % cols + u]

    norm_shape = ((g, d), (1, g)) if q_norm else ((1,), (1,))

    @T.macro
    def body(q, kc, vc, out, n, grid, w, table, part):  # n keys (int32), in a grid of `grid` chunk slots per kv
        # head; part (hq, max_chunks, dv + 2): each chunk's unnormalized output, then its max m and sum l
        with T.sblock("root"):
            T.reads()
            T.writes()
            for bx in T.thread_binding(hkv * grid, thread="blockIdx.x"):
                with T.sblock("chunk"):
                    T.reads()
                    T.writes()
                    qs = T.sblock_alloc_buffer((g, d), F32, scope="shared")
                    ks = T.sblock_alloc_buffer((KC * d,), kdt, scope="shared")  # row-major (KC, D)
                    vs = T.sblock_alloc_buffer((KC * dv,), vdt, scope="shared")
                    ps = T.sblock_alloc_buffer((g, KC), F32, scope="shared")
                    ms = T.sblock_alloc_buffer((g,), F32, scope="shared")
                    qr = T.sblock_alloc_buffer(norm_shape[0], F32, scope="shared")  # a fused q norm's
                    qsum = T.sblock_alloc_buffer(norm_shape[1], F32, scope="shared")  # raw q and sums
                    h = bx // grid
                    j0 = bx % grid * KC
                    live = j0 < n  # a slot past kv_len (static grid) idles; a guard per phase, as
                    # barriers cannot sit inside a condition
                    nk = T.min(n - j0, KC)  # keys in this chunk
                    stage_q(q, qs, qr, qsum, h, live, w, table)
                    stage_rows(ks, kc, d, vk, h, j0, n, live)
                    stage_rows(vs, vc, dv, vv, h, j0, n, live)
                    for it in range(_ceil(g * KC, THREADS)):  # scores, one thread per (head, key)
                        for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                            if live and it * THREADS + tx < g * KC:
                                with T.sblock("dot"):
                                    T.reads()
                                    T.writes()
                                    acc = T.sblock_alloc_buffer((1,), F32, scope="local")
                                    gi = (it * THREADS + tx) // KC
                                    j = (it * THREADS + tx) % KC
                                    acc[0] = T.float32(0)
                                    for e in range(d):  # from column j: a warp's 32 rows hit distinct banks
                                        acc[0] = acc[0] + qs[gi, (e + j) % d] * T.Cast(F32, ks[j * d + (e + j) % d])
                                    ps[gi, j] = T.if_then_else(j < nk, acc[0], T.float32(NEG))
                    for tx in T.thread_binding(THREADS, thread="threadIdx.x"):  # the chunk's max per head
                        if live and tx < g:
                            with T.sblock("max"):
                                T.reads()
                                T.writes()
                                mx = T.sblock_alloc_buffer((1,), F32, scope="local")
                                mx[0] = T.float32(NEG)
                                for j in range(KC):
                                    mx[0] = T.max(mx[0], ps[tx, j])
                                ms[tx] = mx[0]
                    for it in range(_ceil(g * KC, THREADS)):
                        for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                            if live and it * THREADS + tx < g * KC:
                                ps[(it * THREADS + tx) // KC, (it * THREADS + tx) % KC] = T.exp(
                                    ps[(it * THREADS + tx) // KC, (it * THREADS + tx) % KC]
                                    - ms[(it * THREADS + tx) // KC])
                    for it in range(_ceil(g * dv, THREADS)):  # o = p @ V, and l, per (head, column)
                        for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                            if live and it * THREADS + tx < g * dv:
                                with T.sblock("pv"):
                                    T.reads()
                                    T.writes()
                                    acc = T.sblock_alloc_buffer((1,), F32, scope="local")
                                    gi = (it * THREADS + tx) // dv
                                    e = (it * THREADS + tx) % dv
                                    acc[0] = T.float32(0)
                                    for j in range(KC):
                                        acc[0] = acc[0] + ps[gi, j] * T.Cast(F32, vs[j * dv + e])
                                    part[h * g + gi, bx % grid, e] = acc[0]
                                    if e == 0:
                                        acc[0] = T.float32(0)
                                        for j in range(KC):
                                            acc[0] = acc[0] + ps[gi, j]
                                        part[h * g + gi, bx % grid, dv + 1] = acc[0]
                                        part[h * g + gi, bx % grid, dv] = ms[gi]
            for bx in T.thread_binding(hq, thread="blockIdx.x"):  # merge the chunks of each head
                for it in range(_ceil(dv, THREADS)):
                    for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                        if it * THREADS + tx < dv:
                            with T.sblock("merge"):
                                T.reads()
                                T.writes()
                                st = T.sblock_alloc_buffer((3,), F32, scope="local")  # M, numerator, denominator
                                st[0] = T.float32(NEG)
                                for c in range((n + KC - 1) // KC):
                                    st[0] = T.max(st[0], part[bx, c, dv])
                                st[1] = T.float32(0)
                                st[2] = T.float32(0)
                                for c in range((n + KC - 1) // KC):
                                    st[1] = st[1] + T.exp(part[bx, c, dv] - st[0]) * part[bx, c, it * THREADS + tx]
                                    st[2] = st[2] + T.exp(part[bx, c, dv] - st[0]) * part[bx, c, dv + 1]
                                out[0, bx, it * THREADS + tx] = T.Cast(odt, st[1] / st[2])

    q_shape = (1, hq, d) if q_norm is None else (1, q_norm.cols)
    fused = q_norm is not None

    @T.macro
    def run(var_q, var_kc, var_vc, var_out, n, grid, w, table, part):  # (w, table: q's stand-ins without q_norm)
        q = T.match_buffer(var_q, q_shape, qdt)
        kc = T.match_buffer(var_kc, (cache_rows, hkv, d), kdt)
        vc = T.match_buffer(var_vc, (cache_rows, hkv, dv), vdt)
        out = T.match_buffer(var_out, (1, hq, dv), odt)
        body(q, kc, vc, out, n, grid, w if fused else q, table if fused else q, part)

    part_shape = (hq, max_chunks, dv + 2)
    if kv_len_tensor and part_shape != decode_scratch_shape(hq, dv, cache_rows):
        raise ValueError(f"{KC} keys per block do not match the scratch lowering gives: {part_shape}")
    # the parameter orders are lowering's: buffers in operand order, then the output(s), then a
    # scalar. The static form's partial results go to its scratch output (planned by Relax, kept
    # by a CUDA graph); the other's to a global allocation (TVM's workspace, per launch)
    if q_norm is not None:
        wdt, rot = q_norm.w_dtype, q_norm.rot
        if kv_len_tensor:
            @T.prim_func(private=True, s_tir=True)
            def cache_attention_norm_at(var_q: T.handle, var_kc: T.handle, var_vc: T.handle,
                                        kv_len: T.Buffer((1,), "int32"), w: T.Buffer((d,), wdt),
                                        table: T.Buffer((1, rot), F32), var_out: T.handle,
                                        scratch: T.Buffer(part_shape, F32)):
                run(var_q, var_kc, var_vc, var_out, kv_len[0], max_chunks, w, table, scratch)

            return cache_attention_norm_at

        @T.prim_func(private=True, s_tir=True)
        def cache_attention_norm(var_q: T.handle, var_kc: T.handle, var_vc: T.handle, w: T.Buffer((d,), wdt),
                                 table: T.Buffer((1, rot), F32), var_out: T.handle, kv_len: T.int64):
            part = T.sblock_alloc_buffer(part_shape, F32)
            run(var_q, var_kc, var_vc, var_out, _i32(kv_len), _chunks(kv_len), w, table, part)

        return cache_attention_norm

    if kv_len_tensor:  # static shapes: a slot for every chunk of the cache, idle past kv_len
        @T.prim_func(private=True, s_tir=True)
        def cache_attention_at(var_q: T.handle, var_kc: T.handle, var_vc: T.handle, kv_len: T.Buffer((1,), "int32"),
                               var_out: T.handle, scratch: T.Buffer(part_shape, F32)):
            run(var_q, var_kc, var_vc, var_out, kv_len[0], max_chunks, None, None, scratch)

        return cache_attention_at

    @T.prim_func(private=True, s_tir=True)
    def cache_attention(var_q: T.handle, var_kc: T.handle, var_vc: T.handle, var_out: T.handle, kv_len: T.int64):
        part = T.sblock_alloc_buffer(part_shape, F32)
        run(var_q, var_kc, var_vc, var_out, _i32(kv_len), _chunks(kv_len), None, None, part)

    return cache_attention


# prefill: a block computes BQ query rows of one head against key tiles of BK rows, with
# THREADS = TR * TC threads; thread (tr, tc) owns query rows tr*RR .. tr*RR+RR-1, keys
# tc + TC*c of each tile (c < BK/TC) and output columns tc + TC*c (c < Dv/TC): interleaved,
# so a warp's shared-memory reads fall in distinct banks.
BQ, BK, TR, TC = 64, 64, 16, 8
RR, KK = BQ // TR, BK // TC


def _flash_kernel(hq: int, hkv: int, d: int, dv: int, cache_rows: int | None, dtypes: tuple[str, ...],
                  scale: float, causal: bool) -> tirx.PrimFunc:
    """cache_rows=None: attention(q, k, v, out) over all S rows of k and v; else
    cache_attention(q, kc, vc, out, kv_len) over cache rows [0, kv_len)."""
    from tvm.script import tirx as T

    qdt, kdt, vdt, odt = dtypes
    g = hq // hkv
    dc = dv // TC

    last_key, visible = causal_bounds(causal, BQ)

    @T.macro
    def body(q, kc, vc, out, t, s):
        for bx in T.thread_binding(hq * ((t + BQ - 1) // BQ), thread="blockIdx.x"):
            with T.sblock("tile"):
                T.reads()
                T.writes()
                qs = T.sblock_alloc_buffer((d, BQ), F32, scope="shared.dyn")  # Q^T of the block, scaled
                ks = T.sblock_alloc_buffer((d, BK), kdt, scope="shared.dyn")  # K^T of the key tile
                vs = T.sblock_alloc_buffer((BK, dv), vdt, scope="shared.dyn")
                ps = T.sblock_alloc_buffer((BQ, BK + 1), F32, scope="shared.dyn")  # +1: rows in distinct banks
                pm = T.sblock_alloc_buffer((TC, BQ), F32, scope="shared.dyn")  # per-thread row maxima
                sr = T.sblock_alloc_buffer((THREADS, RR, KK), F32, scope="local")  # registers, per thread
                o = T.sblock_alloc_buffer((THREADS, RR, dc), F32, scope="local")
                m = T.sblock_alloc_buffer((THREADS, RR), F32, scope="local")
                lp = T.sblock_alloc_buffer((THREADS, RR), F32, scope="local")  # this thread's share of the row sum
                corr = T.sblock_alloc_buffer((THREADS, RR), F32, scope="local")
                h = bx % hq
                i0 = bx // hq * BQ
                for it in range(_ceil(BQ * d, THREADS)):
                    for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                        if it * THREADS + tx < BQ * d:
                            qs[(it * THREADS + tx) % d, (it * THREADS + tx) // d] = T.Cast(
                                F32, q[T.min(i0 + (it * THREADS + tx) // d, t - 1), h, (it * THREADS + tx) % d]
                            ) * T.float32(scale)
                for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                    for r in T.unroll(RR):
                        m[tx, r] = T.float32(NEG)
                        lp[tx, r] = T.float32(0)
                        for c in T.unroll(dc):
                            o[tx, r, c] = T.float32(0)
                for kb in range((last_key(s, t, i0) + BK - 1) // BK):
                    for it in range(_ceil(BK * d, THREADS)):
                        for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                            if it * THREADS + tx < BK * d:
                                ks[(it * THREADS + tx) % d, (it * THREADS + tx) // d] = kc[
                                    T.min(kb * BK + (it * THREADS + tx) // d, s - 1), h // g, (it * THREADS + tx) % d]
                    for it in range(_ceil(BK * dv, THREADS)):
                        for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                            if it * THREADS + tx < BK * dv:
                                vs[(it * THREADS + tx) // dv, (it * THREADS + tx) % dv] = T.if_then_else(
                                    kb * BK + (it * THREADS + tx) // dv < s,
                                    vc[T.min(kb * BK + (it * THREADS + tx) // dv, s - 1), h // g,
                                       (it * THREADS + tx) % dv], T.Cast(vdt, 0))
                    for tx in T.thread_binding(THREADS, thread="threadIdx.x"):  # S = Q K^T, masked
                        for r in T.unroll(RR):
                            for c in T.unroll(KK):
                                sr[tx, r, c] = T.float32(0)
                        for e in range(d):
                            for r in T.unroll(RR):
                                for c in T.unroll(KK):
                                    sr[tx, r, c] = sr[tx, r, c] + qs[e, tx // TC * RR + r] * T.Cast(
                                        F32, ks[e, tx % TC + TC * c])
                        for r in T.unroll(RR):
                            pm[tx % TC, tx // TC * RR + r] = T.float32(NEG)
                            for c in T.unroll(KK):
                                sr[tx, r, c] = T.if_then_else(
                                    visible(kb * BK + tx % TC + TC * c, i0 + tx // TC * RR + r, s, t),
                                    sr[tx, r, c], T.float32(NEG))
                                pm[tx % TC, tx // TC * RR + r] = T.max(pm[tx % TC, tx // TC * RR + r], sr[tx, r, c])
                    for tx in T.thread_binding(THREADS, thread="threadIdx.x"):  # online softmax
                        for r in T.unroll(RR):
                            corr[tx, r] = m[tx, r]  # the old max, for now
                            for c in T.unroll(TC):
                                m[tx, r] = T.max(m[tx, r], pm[c, tx // TC * RR + r])
                            corr[tx, r] = T.exp(corr[tx, r] - m[tx, r])
                            lp[tx, r] = lp[tx, r] * corr[tx, r]
                            for c in T.unroll(KK):
                                ps[tx // TC * RR + r, tx % TC + TC * c] = T.exp(sr[tx, r, c] - m[tx, r])
                                lp[tx, r] = lp[tx, r] + ps[tx // TC * RR + r, tx % TC + TC * c]
                    for tx in T.thread_binding(THREADS, thread="threadIdx.x"):  # O = O * corr + P V
                        for r in T.unroll(RR):
                            for c in T.unroll(dc):
                                o[tx, r, c] = o[tx, r, c] * corr[tx, r]
                        for j in range(BK):
                            for r in T.unroll(RR):
                                for c in T.unroll(dc):
                                    o[tx, r, c] = o[tx, r, c] + ps[tx // TC * RR + r, j] * T.Cast(
                                        F32, vs[j, tx % TC + TC * c])
                for tx in T.thread_binding(THREADS, thread="threadIdx.x"):  # the row sums, through shared
                    for r in T.unroll(RR):
                        pm[tx % TC, tx // TC * RR + r] = lp[tx, r]
                for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                    for r in T.unroll(RR):
                        lp[tx, r] = T.float32(0)
                        for c in T.unroll(TC):
                            lp[tx, r] = lp[tx, r] + pm[c, tx // TC * RR + r]
                        if i0 + tx // TC * RR + r < t:
                            for c in T.unroll(dc):
                                out[i0 + tx // TC * RR + r, h, tx % TC + TC * c] = T.Cast(odt, o[tx, r, c] / lp[tx, r])

    return attention_tir(body, hq, hkv, d, dv, cache_rows, dtypes, index=_i32)
