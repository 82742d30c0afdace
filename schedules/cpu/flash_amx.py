"""Prefill attention on Intel AMX: `flash_attention.py`'s structure with both products on tiles.

For T > 1 query rows over a bf16 K/V (the KV cache), on a CPU with AMX. One task per (kv head,
block of 32 / G query rows): the R = 32 rows of the block's G query heads. Their q rows are
scaled, split into bf16 hi + lo (as `amx.py` splits x) and stored once as pairs of head-dim
values, the layout a tile product's second operand takes. Then blocks of KB = 32 keys:

    copy the key rows (bf16, exact: no split) and interleave value rows in pairs; rows past
    the last visible key are zero
    S^T (KB, R) = K_blk Q^T         4 accumulator tiles, D / 32 steps, hi and lo parts of q
    online softmax down the keys, vectorized over the R rows (as the FMA kernel)
    P (R, KB), hi and lo            the probabilities transposed for the next product
    O (R, Dv) = O * corr + P V_blk  O in memory, loaded and stored 32 columns at a time

Key blocks past the block's last causal position are never visited. The split keeps q and P
to within 2^-16 of their values (bf16 alone: 2^-8), so the result stays within ~1e-5 of fp32
math. At precision "medium" (`passes.matmul_precision`) q and P are rounded to their hi parts
instead: one product each; and fp32 keys and values (the cache-less forward's) are taken too,
rounded to bf16 as each block is copied.
"""
from __future__ import annotations

from tvm import tirx

from ...targets import TargetDesc, amx_usable
from ..kernels import attention_tir, bf16_bits, causal_bounds, same_params
from ..registry import precision
from .amx import BF16, F32, W0, W1, X0, X1, _tile, pair, split_bits, tile_macros
from .flash_attention import block_query, flash_spec, online_softmax

R = 32  # query rows per task: 2 tiles of 16
KB = 32  # keys per block: one 32-wide step of the P V product


def amx_flash_attention(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc | None:
    """The AMX kernel for an attention / cache_attention PrimFunc with T > 1 rows over bf16
    keys and values (or fp32 ones at precision "medium"), else None."""
    spec = flash_spec(func) if amx_usable(target.cpu_flags) else None
    if spec is None:
        return None
    medium = precision(func) == "medium"
    qdt, kdt, vdt, _ = spec["dtypes"]
    kv = {(BF16, BF16)} | ({(F32, F32)} if medium else set())  # fp32 keys would need splitting too
    if (kdt, vdt) not in kv or qdt not in (F32, BF16) or R % (spec["hq"] // spec["hkv"]) \
            or spec["d"] % 32 or spec["dv"] % 32:
        return None
    return same_params(_kernel(**spec, parts=1 if medium else 2), func)


def _kernel(hq: int, hkv: int, d: int, dv: int, cache_rows: int | None, dtypes: tuple[str, ...], scale: float,
            causal: bool, parts: int = 2) -> tirx.PrimFunc:
    """The kernel, with q and P as ``parts`` bf16 parts: 2 (hi and lo) or 1 (hi)."""
    from tvm.script import tirx as T

    odt = dtypes[3]
    g = hq // hkv
    bq = R // g  # query rows per block
    last_key, visible = causal_bounds(causal, bq)
    softmax = online_softmax(visible, g, KB, R, dv)
    tiles = tile_macros()

    f32_kv = dtypes[1] == F32  # fp32 keys and values ("medium" only): rounded to bf16 as copied

    def kv_bits(c16, h, j, e, kmax):  # the bf16 bits of row j (0 past kmax)
        row = tirx.min(j, kmax - 1)
        v = bf16_bits(c16[row, h, e]) if f32_kv else tirx.Cast("uint32", c16[row, h, e])
        return tirx.if_then_else(j < kmax, v, tirx.const(0, "uint32"))

    @T.macro
    def scores_t(keys, j, hh, ld, qp):  # the accumulators = S^T: keys[j:j+32, hh] @ (q's pairs)
        tiles.zero()
        for ds in range(d // 32):
            _tile("tileloadd64", T.uint8(X0), T.address_of(keys[j, hh, ds * 32]), T.int64(ld))
            _tile("tileloadd64", T.uint8(X1), T.address_of(keys[j + 16, hh, ds * 32]), T.int64(ld))
            for p in T.unroll(parts):
                _tile("tileloadd64", T.uint8(W0), T.address_of(qp[p, ds * 16, 0]), T.int64(R * 4))
                _tile("tileloadd64", T.uint8(W1), T.address_of(qp[p, ds * 16, 16]), T.int64(R * 4))
                tiles.product(X0, X1, W0, W1)

    @T.macro
    def copied_block(k16, v16, kf, vp, st, qp, h, j0, kmax):  # S^T of keys j0.. via a copy; rows past kmax are zeros
        for jj in range(KB):  # (the cache may hold NaNs there)
            for e in T.vectorized(d):
                kf[jj, 0, e] = T.Cast("uint16", kv_bits(k16, h, j0 + jj, e, kmax))
        scores_t(kf, 0, 0, d * 2, qp)
        tiles.accumulators("tilestored64", st, R, 0)
        for jp in range(KB // 2):
            for e in T.vectorized(dv):
                vp[jp, e] = pair(kv_bits(v16, h, j0 + 2 * jp, e, kmax), kv_bits(v16, h, j0 + 2 * jp + 1, e, kmax))

    @T.macro
    def body(q, kc, vc, out, t, kv_len):
        nb = (t + bq - 1) // bq
        # bf16 bits, read as such (fp32 keys and values are read as they are, and rounded)
        k16 = kc if f32_kv else T.decl_buffer(kc.shape, "uint16", data=kc.data)
        v16 = vc if f32_kv else T.decl_buffer(vc.shape, "uint16", data=vc.data)
        for task in T.parallel(hkv * nb):
            qa = T.alloc_buffer((parts, R, d), "uint16")  # the block's q rows, scaled: hi (and lo)
            qa32 = T.decl_buffer((parts, R, d // 2), "uint32", data=qa.data)  # the same, in head-dim pairs
            qp = T.alloc_buffer((parts, d // 2, R), "uint32")  # q^T in head-dim pairs, hi (and lo)
            kf = T.alloc_buffer((KB, 1, d), "uint16")  # a copied block of keys: the last, partial one, or any fp32 one
            vp = T.alloc_buffer((KB // 2, dv), "uint32")  # value rows in key pairs
            st = T.alloc_buffer((KB, R), F32)  # S^T, then P^T
            pt = T.alloc_buffer((parts, KB // 2, R), "uint32")  # P^T in key pairs, hi (and lo)
            pa = T.alloc_buffer((parts, R, KB // 2), "uint32")  # P, the same pairs transposed
            acc = T.alloc_buffer((R, dv), F32)
            m = T.alloc_buffer((R,), F32)
            mn = T.alloc_buffer((R,), F32)
            corr = T.alloc_buffer((R,), F32)
            den = T.alloc_buffer((R,), F32)
            tiles.configure()
            h = task // nb
            i0 = task % nb * bq
            kmax = last_key(kv_len, t, i0)
            for r in range(R):  # q's rows split (vectorized along them), then transposed in pairs
                for e in T.vectorized(d):
                    qa[0, r, e] = T.Cast("uint16", split_bits(block_query(q, g, scale, h, i0, r, e, t), 0))
                    if parts == 2:
                        qa[1, r, e] = T.Cast("uint16", split_bits(block_query(q, g, scale, h, i0, r, e, t), 1))
            for p in range(parts):
                for r in range(R):
                    for dp in range(d // 2):
                        qp[p, dp, r] = qa32[p, r, dp]
            softmax.start(acc, m, den)
            for kb in range((kmax + KB - 1) // KB):
                j0 = kb * KB
                if f32_kv:  # every block copied (and rounded)
                    copied_block(k16, v16, kf, vp, st, qp, h, j0, kmax)
                elif j0 + KB <= kmax:  # a whole block: K straight from the cache
                    scores_t(k16, j0, h, hkv * d * 2, qp)
                    tiles.accumulators("tilestored64", st, R, 0)
                    for jp in range(KB // 2):  # (vector work while the tile stores drain)
                        for e in T.vectorized(dv):
                            vp[jp, e] = pair(T.Cast("uint32", v16[j0 + 2 * jp, h, e]),
                                              T.Cast("uint32", v16[j0 + 2 * jp + 1, h, e]))
                else:  # the last block
                    copied_block(k16, v16, kf, vp, st, qp, h, j0, kmax)
                softmax.step(st, m, mn, corr, den, j0, i0, kv_len, t)  # P^T in st, O's factors in corr
                for jp in range(KB // 2):  # P^T split and paired, vectorized over the rows
                    for r in T.vectorized(R):
                        pt[0, jp, r] = pair(split_bits(st[2 * jp, r], 0), split_bits(st[2 * jp + 1, r], 0))
                        if parts == 2:
                            pt[1, jp, r] = pair(split_bits(st[2 * jp, r], 1), split_bits(st[2 * jp + 1, r], 1))
                for p in T.unroll(parts):  # transposed: P's rows
                    for r in T.unroll(R):
                        for jp in T.unroll(KB // 2):
                            pa[p, r, jp] = pt[p, jp, r]
                for r in range(R):
                    for e in T.vectorized(dv):
                        acc[r, e] = acc[r, e] * corr[r]
                # O += P V_blk, 32 columns of O at a time
                for ec in range(dv // 32):
                    tiles.accumulators("tileloadd64", acc, dv, ec * 32)
                    _tile("tileloadd64", T.uint8(W0), T.address_of(vp[0, ec * 32]), T.int64(dv * 4))
                    _tile("tileloadd64", T.uint8(W1), T.address_of(vp[0, ec * 32 + 16]), T.int64(dv * 4))
                    for p in T.unroll(parts):
                        _tile("tileloadd64", T.uint8(X0), T.address_of(pa[p, 0, 0]), T.int64(KB * 2))
                        _tile("tileloadd64", T.uint8(X1), T.address_of(pa[p, 16, 0]), T.int64(KB * 2))
                        tiles.product(X0, X1, W0, W1)
                    tiles.accumulators("tilestored64", acc, dv, ec * 32)
            _tile("tilerelease")
            for r in range(R):
                if i0 + r // g < t:
                    for e in T.vectorized(dv):
                        out[i0 + r // g, h * g + r % g, e] = T.Cast(odt, acc[r, e] / den[r])

    return attention_tir(body, hq, hkv, d, dv, cache_rows, dtypes)
