"""Prefill attention over a bf16 KV cache on tensor cores (WMMA 16x16x16): what
`attention.cuda_attention` picks for such a cache (8 warps) since an H200 timed it against
the CUDA-core `attention._flash_kernel` (2026-12-04, bench/gpu/kernel_bench.py: faster at every
prompt length, 2.3x at 2048 rows, outputs within 3e-6 of each other).

A block computes BQ = 64 query rows of one head with 4 warps, 16 rows each; key tiles of BK = 64
rows stream through shared memory with an online softmax, as in the CUDA-core kernel, but
both products run on tensor cores:

    S (16 x BK per warp) = Q K^T     q is fp32: split into bf16 hi + lo (two products), as
                                     the tensor-core GEMM does; K is bf16 already (the cache)
    P = exp(S - m)                   by the lanes: lane pairs share a row, 32 keys each
    O += P V                         P in [0, 1] split into bf16 hi + lo (two products); V bf16

The fragments' layout is opaque, so S and P V go through shared memory (one fp32 scratch tile)
and each lane keeps half a row of O in registers, rescaled there. With `matmul.untensorized()`
the fragment operations are plain loops over 16 x 16 tiles (and the bf16 splits round with
integer operations), so the kernel runs serially on the CPU (tests/cuda_emulation.py).
"""
from __future__ import annotations

from tvm import tirx

from ..kernels import attention_tir, causal_bounds, to_bf16

F32, BF16 = "float32", "bfloat16"
BQ, BK, WARPS = 64, 64, 4
THREADS = 32 * WARPS
NEG = -3.0e38


def supported(d: int, dv: int, dtypes: tuple[str, ...]) -> bool:
    qdt, kdt, vdt, odt = dtypes
    return qdt == F32 and kdt == vdt == BF16 and d % 16 == 0 and dv % 16 == 0 and dv <= 128


def _fragment_ops(tensorize: bool):
    """(fill, load_a, load_b_col, load_b_row, mma, store) as T.macros: WMMA intrinsics, or loops.
    load_a(frag, src, r0, c0, ld): A (16 x 16) = src[r0:+16, c0:+16];
    load_b_col(frag, src, k0, n0, ld): B (k, n) = src[n0 + n, k0 + k] (src holds B transposed);
    load_b_row(frag, src, k0, n0, ld): B (k, n) = src[k0 + k, n0 + n];
    mma(acc, j, a, b): accumulator j += A B; store(dst, r0, c0, ld, acc, j): dst[r0:+16, c0:+16] = acc j."""
    from tvm.script import tirx as T

    if tensorize:
        @T.macro
        def fill(acc, j):
            T.evaluate(T.tvm_fill_fragment(acc.data, 16, 16, 16, j, T.float32(0)))

        @T.macro
        def load_a(frag, src, r0, c0, ld):
            T.evaluate(T.tvm_load_matrix_sync(frag.data, 16, 16, 16, 0, T.tvm_access_ptr(
                T.type_annotation("bfloat16"), src.data, r0 * ld + c0, 16 * ld, 1), ld, "row_major"))

        @T.macro
        def load_b_col(frag, src, k0, n0, ld):
            T.evaluate(T.tvm_load_matrix_sync(frag.data, 16, 16, 16, 0, T.tvm_access_ptr(
                T.type_annotation("bfloat16"), src.data, n0 * ld + k0, 16 * ld, 1), ld, "col_major"))

        @T.macro
        def load_b_row(frag, src, k0, n0, ld):
            T.evaluate(T.tvm_load_matrix_sync(frag.data, 16, 16, 16, 0, T.tvm_access_ptr(
                T.type_annotation("bfloat16"), src.data, k0 * ld + n0, 16 * ld, 1), ld, "row_major"))

        @T.macro
        def mma(acc, j, a, b):
            T.evaluate(T.tvm_mma_sync(acc.data, j, a.data, 0, b.data, 0, acc.data, j))

        @T.macro
        def store(dst, r0, c0, ld, acc, j):
            T.evaluate(T.tvm_store_matrix_sync(acc.data, 16, 16, 16, j, T.tvm_access_ptr(
                T.type_annotation("float32"), dst.data, r0 * ld + c0, 16 * ld, 2), ld, "row_major"))

        return fill, load_a, load_b_col, load_b_row, mma, store

    @T.macro
    def fill(acc, j):
        for i, n in T.grid(16, 16):
            acc[i, j * 16 + n] = T.float32(0)

    @T.macro
    def load_a(frag, src, r0, c0, ld):
        for i, k in T.grid(16, 16):
            frag[i, k] = src[r0 + i, c0 + k]

    @T.macro
    def load_b_col(frag, src, k0, n0, ld):
        for k, n in T.grid(16, 16):
            frag[k, n] = src[n0 + n, k0 + k]

    @T.macro
    def load_b_row(frag, src, k0, n0, ld):
        for k, n in T.grid(16, 16):
            frag[k, n] = src[k0 + k, n0 + n]

    @T.macro
    def mma(acc, j, a, b):
        for i, n, k in T.grid(16, 16, 16):
            acc[i, j * 16 + n] = acc[i, j * 16 + n] + T.Cast(F32, a[i, k]) * T.Cast(F32, b[k, n])

    @T.macro
    def store(dst, r0, c0, ld, acc, j):
        for i, n in T.grid(16, 16):
            dst[r0 + i, c0 + n] = acc[i, j * 16 + n]

    return fill, load_a, load_b_col, load_b_row, mma, store


def _split_product(fill, load_a, load_b, mma, store):
    """A warp's 16 rows of A B into ``nout`` accumulators, A given as bf16 hi + lo (two products
    per step) over ``nk`` steps of 16, B loaded with ``load_b``; stored to dst[row0:+16, :]."""
    from tvm.script import tirx as T

    @T.macro
    def product(acc, fa_hi, fa_lo, fb, a_hi, a_lo, lda, b, ldb, row0, nk, nout, dst, ldd):
        for j in range(nout):
            fill(acc, j)
        for e in range(nk):
            load_a(fa_hi, a_hi, row0, e * 16, lda)
            load_a(fa_lo, a_lo, row0, e * 16, lda)
            for j in range(nout):
                load_b(fb, b, e * 16, j * 16, ldb)
                mma(acc, j, fa_hi, fb)
                mma(acc, j, fa_lo, fb)
        for j in range(nout):
            store(dst, row0, j * 16, ldd, acc, j)

    return product


def flash_tc_kernel(hq: int, hkv: int, d: int, dv: int, cache_rows: int, dtypes: tuple[str, ...],
                    scale: float, causal: bool = True, warps: int = WARPS) -> tirx.PrimFunc:
    """cache_attention(q, kc, vc, out, kv_len) for T query rows over cache rows [0, kv_len), with
    ``warps`` warps of 16 query rows per block (BQ = 64 rows by default)."""
    from tvm.script import tirx as T

    from .matmul import _TENSORIZE as tensorize

    qdt, kdt, vdt, odt = dtypes
    assert supported(d, dv, dtypes), (d, dv, dtypes)
    bq, threads = 16 * warps, 32 * warps
    g = hq // hkv
    fill, load_a, load_b_col, load_b_row, mma, store = _fragment_ops(tensorize)
    qk_product = _split_product(fill, load_a, load_b_col, mma, store)  # K^T: the K tile holds it transposed
    pv_product = _split_product(fill, load_a, load_b_row, mma, store)
    sa, sb, sc_ = ("wmma.matrix_a", "wmma.matrix_b", "wmma.accumulator") if tensorize else ("local",) * 3
    lq, lv, lp = d + 8, dv + 8, BK + 8          # shared rows padded (bank conflicts; WMMA needs ld % 8 == 0)
    ls = max(BK, dv) + 4                        # the fp32 scratch: S, then P V
    nacc = max(BK, dv) // 16
    half_k, half_v = BK // 2, dv // 2
    exact = not tensorize

    def bf(v):
        return to_bf16(v, exact)

    last_key, visible = causal_bounds(causal, bq)

    @T.macro
    def stage_tile(dst, cache, width, row0, head, s):  # cache rows row0 .. row0 + BK of a kv head (clamped)
        for it in range((BK * width + threads - 1) // threads):
            for ty in T.thread_binding(warps, thread="threadIdx.y"):
                for tx in T.thread_binding(32, thread="threadIdx.x"):
                    if (it * threads + ty * 32 + tx) < BK * width:
                        dst[(it * threads + ty * 32 + tx) // width, (it * threads + ty * 32 + tx) % width] = cache[
                            T.min(row0 + (it * threads + ty * 32 + tx) // width, s - 1), head,
                            (it * threads + ty * 32 + tx) % width]

    @T.macro
    def body(q, kc, vc, out, t, s):
        for bx in T.thread_binding(hq * ((t + bq - 1) // bq), thread="blockIdx.x"):
            with T.sblock("tile"):
                T.reads()
                T.writes()
                qh = T.sblock_alloc_buffer((bq, lq), BF16, scope="shared.dyn")
                ql = T.sblock_alloc_buffer((bq, lq), BF16, scope="shared.dyn")
                ks = T.sblock_alloc_buffer((BK, lq), BF16, scope="shared.dyn")
                vs = T.sblock_alloc_buffer((BK, lv), BF16, scope="shared.dyn")
                sc = T.sblock_alloc_buffer((bq, ls), F32, scope="shared.dyn")
                # static, not in the dynamic pool: TVM's barrier placement cannot tell buffers of one
                # pool apart, and would put barriers inside the softmax's loops (reads of sc, writes of P)
                ph = T.sblock_alloc_buffer((bq, lp), BF16, scope="shared")
                pl = T.sblock_alloc_buffer((bq, lp), BF16, scope="shared")
                pm = T.sblock_alloc_buffer((bq, 2), F32, scope="shared")
                fa_hi = T.sblock_alloc_buffer((16, 16), BF16, scope=sa)
                fa_lo = T.sblock_alloc_buffer((16, 16), BF16, scope=sa)
                fbk = T.sblock_alloc_buffer((16, 16), BF16, scope=sb)
                fbv = T.sblock_alloc_buffer((16, 16), BF16, scope=sb)
                acc = T.sblock_alloc_buffer((16, nacc * 16), F32, scope=sc_)
                o = T.sblock_alloc_buffer((threads, half_v), F32, scope="local")
                m = T.sblock_alloc_buffer((threads,), F32, scope="local")
                lsum = T.sblock_alloc_buffer((threads,), F32, scope="local")
                red = T.sblock_alloc_buffer((threads, 3), F32, scope="local")
                h = bx % hq
                i0 = bx // hq * bq
                for it in range((bq * d + threads - 1) // threads):  # Q, scaled, as bf16 hi + lo
                    for ty in T.thread_binding(warps, thread="threadIdx.y"):
                        for tx in T.thread_binding(32, thread="threadIdx.x"):
                            if (it * threads + ty * 32 + tx) < bq * d:
                                red[ty * 32 + tx, 2] = T.Cast(F32, q[T.min(i0 + (it * threads + ty * 32 + tx) // d,
                                                                           t - 1), h, (it * threads + ty * 32 + tx) % d]
                                                              ) * T.float32(scale)
                                qh[(it * threads + ty * 32 + tx) // d, (it * threads + ty * 32 + tx) % d] = bf(
                                    red[ty * 32 + tx, 2])
                                ql[(it * threads + ty * 32 + tx) // d, (it * threads + ty * 32 + tx) % d] = bf(
                                    red[ty * 32 + tx, 2] - T.Cast(F32, bf(red[ty * 32 + tx, 2])))
                for ty in T.thread_binding(warps, thread="threadIdx.y"):
                    for tx in T.thread_binding(32, thread="threadIdx.x"):
                        m[ty * 32 + tx] = T.float32(NEG)
                        lsum[ty * 32 + tx] = T.float32(0)
                        for c in T.unroll(half_v):
                            o[ty * 32 + tx, c] = T.float32(0)
                for kb in range((last_key(s, t, i0) + BK - 1) // BK):
                    stage_tile(ks, kc, d, kb * BK, h // g, s)
                    stage_tile(vs, vc, dv, kb * BK, h // g, s)
                    for ty in T.thread_binding(warps, thread="threadIdx.y"):  # S = Q K^T, per warp
                        qk_product(acc, fa_hi, fa_lo, fbk, qh, ql, lq, ks, lq, ty * 16, d // 16, BK // 16, sc, ls)
                    for ty in T.thread_binding(warps, thread="threadIdx.y"):  # masked row maxima, half rows
                        for tx in T.thread_binding(32, thread="threadIdx.x"):
                            red[ty * 32 + tx, 0] = T.float32(NEG)
                            for c in range(half_k):
                                red[ty * 32 + tx, 0] = T.max(red[ty * 32 + tx, 0], T.if_then_else(
                                    visible(kb * BK + tx % 2 * half_k + c, i0 + ty * 16 + tx // 2, s, t),
                                    sc[ty * 16 + tx // 2, tx % 2 * half_k + c], T.float32(NEG)))
                            pm[ty * 16 + tx // 2, tx % 2] = red[ty * 32 + tx, 0]
                    for ty in T.thread_binding(warps, thread="threadIdx.y"):  # online softmax, P as hi + lo
                        for tx in T.thread_binding(32, thread="threadIdx.x"):
                            red[ty * 32 + tx, 1] = T.max(m[ty * 32 + tx], T.max(pm[ty * 16 + tx // 2, 0],
                                                                                pm[ty * 16 + tx // 2, 1]))
                            red[ty * 32 + tx, 0] = T.exp(m[ty * 32 + tx] - red[ty * 32 + tx, 1])  # rescale
                            m[ty * 32 + tx] = red[ty * 32 + tx, 1]
                            lsum[ty * 32 + tx] = lsum[ty * 32 + tx] * red[ty * 32 + tx, 0]
                            for c in range(half_k):  # p = 0 where masked
                                red[ty * 32 + tx, 2] = T.if_then_else(
                                    visible(kb * BK + tx % 2 * half_k + c, i0 + ty * 16 + tx // 2, s, t),
                                    T.exp(sc[ty * 16 + tx // 2, tx % 2 * half_k + c] - m[ty * 32 + tx]), T.float32(0))
                                ph[ty * 16 + tx // 2, tx % 2 * half_k + c] = bf(red[ty * 32 + tx, 2])
                                pl[ty * 16 + tx // 2, tx % 2 * half_k + c] = bf(
                                    red[ty * 32 + tx, 2] - T.Cast(F32, bf(red[ty * 32 + tx, 2])))
                                lsum[ty * 32 + tx] = lsum[ty * 32 + tx] + red[ty * 32 + tx, 2]
                            for c in T.unroll(half_v):
                                o[ty * 32 + tx, c] = o[ty * 32 + tx, c] * red[ty * 32 + tx, 0]
                    for ty in T.thread_binding(warps, thread="threadIdx.y"):  # P V, per warp
                        pv_product(acc, fa_hi, fa_lo, fbv, ph, pl, lp, vs, lv, ty * 16, BK // 16, dv // 16, sc, ls)
                    for ty in T.thread_binding(warps, thread="threadIdx.y"):
                        for tx in T.thread_binding(32, thread="threadIdx.x"):
                            for c in T.unroll(half_v):
                                o[ty * 32 + tx, c] = o[ty * 32 + tx, c] + sc[ty * 16 + tx // 2, tx % 2 * half_v + c]
                for ty in T.thread_binding(warps, thread="threadIdx.y"):  # the row sums of the two halves
                    for tx in T.thread_binding(32, thread="threadIdx.x"):
                        pm[ty * 16 + tx // 2, tx % 2] = lsum[ty * 32 + tx]
                for ty in T.thread_binding(warps, thread="threadIdx.y"):
                    for tx in T.thread_binding(32, thread="threadIdx.x"):
                        if i0 + ty * 16 + tx // 2 < t:
                            for c in T.unroll(half_v):
                                out[i0 + ty * 16 + tx // 2, h, tx % 2 * half_v + c] = T.Cast(
                                    odt, o[ty * 32 + tx, c] / (pm[ty * 16 + tx // 2, 0] + pm[ty * 16 + tx // 2, 1]))

    return attention_tir(body, hq, hkv, d, dv, cache_rows, dtypes, index=lambda x: tirx.Cast("int32", x))
