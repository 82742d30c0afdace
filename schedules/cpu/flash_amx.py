"""Prefill attention on Intel AMX: `flash_attention.py`'s structure with both products on tiles.

For T > 1 query rows over a bf16 K/V (the KV cache), on a CPU with AMX. First, once per call,
each kv head's keys and values are copied into the layouts the tile loads want, 1 KB tiles in
a row: K as 16 x 32 tiles (16 keys of 32 head dims), V^T as 16 x 32 tiles (16 head dims of 32
keys, in key pairs); zeros past kv_len. Then one task per (kv head, block of 32 / G query
rows): the R = 32 rows of the block's G query heads. Their q rows are scaled, split into bf16
hi + lo (as `amx.py` splits x) and stored once as pairs of head-dim values, the layout a tile
product's second operand takes. Then blocks of KB = 64 keys:

    S^T (KB, R) = K_blk Q^T           4 accumulator tiles per 32 keys, D / 32 steps, hi and lo of q
    online softmax down the keys, vectorized over the R rows (as the FMA kernel); a row's
    running max moves only when a block passes it by more than TAU, so O is rarely rescaled
    P^T (KB, R) split into hi and lo, in key pairs: already the second operand of
    O^T (Dv, R) += V^T_blk P^T        O^T in memory, loaded and stored 32 head dims at a time

Computing O^T rather than O is what spares a transposition of P in every block (it was ~20%
of the kernel): V is transposed instead, once per call for all query blocks of its head.
Key blocks past the block's last causal position are never visited. The split keeps q and P
to within 2^-16 of their values (bf16 alone: 2^-8), so the result stays within ~1e-5 of fp32
math. fp32 keys and values (the cache-less forward's, a vision tower's) are split the same way
as they are copied, and each product takes three tile products (hi * hi, hi * lo, lo * hi). At
precision "medium" (`passes.matmul_precision`) q, P and fp32 keys and values are rounded to
their hi parts instead: one product each.
"""
from __future__ import annotations

from tvm import tirx

from ...targets import TargetDesc, amx_usable
from ..kernels import attention_tir, causal_bounds, same_params
from ..registry import precision
from .amx import BF16, F32, W0, W1, X0, X1, _tile, pair, split_bits, tile_macros
from .flash_attention import block_query, flash_spec, online_softmax

R = 32  # query rows per task: 2 tiles of 16
KB = 64  # keys per block: two 32-key steps of each product, so O^T moves in and out of the tiles half as often
TAU = 5.545  # ln 256: how far a block's max may pass a row's running max before O is rescaled


def amx_flash_attention(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc | None:
    """The AMX kernel for an attention / cache_attention PrimFunc with T > 1 rows over bf16 or
    fp32 keys and values, else None."""
    spec = flash_spec(func) if amx_usable(target.cpu_flags) else None
    if spec is None:
        return None
    medium = precision(func) == "medium"
    qdt, kdt, vdt, _ = spec["dtypes"]
    if (kdt, vdt) not in {(BF16, BF16), (F32, F32)} or qdt not in (F32, BF16) or spec["hq"] // spec["hkv"] > R \
            or spec["d"] % 32 or spec["dv"] % 32:
        return None
    return same_params(_kernel(**spec, parts=1 if medium else 2), func)


def _kernel(hq: int, hkv: int, d: int, dv: int, cache_rows: int | None, dtypes: tuple[str, ...], scale: float,
            causal: bool, parts: int = 2, kb: int = KB) -> tirx.PrimFunc:
    """The kernel, with q and P as ``parts`` bf16 parts: 2 (hi and lo) or 1 (hi), over blocks
    of ``kb`` keys (a multiple of 32)."""
    from tvm.script import tirx as T

    odt = dtypes[3]
    g = hq // hkv
    bq = R // g  # query rows per block (the last R - bq * g rows of a task are spare when G does not divide R)
    last_key, visible = causal_bounds(causal, bq)
    softmax = online_softmax(visible, g, kb, R, dv, tau=TAU)
    tiles = tile_macros()
    f32_kv = dtypes[1] == F32  # fp32 keys and values: split into bf16 hi and lo as copied (medium: hi)
    kparts = 2 if f32_kv and parts == 2 else 1

    def kv_bits(c16, h, j, e, s, checked, part):  # the bf16 bits of row j's part (checked: 0 past s)
        if not checked:  # (a bf16 row before s)
            return tirx.Cast("uint32", c16[j, h, e])
        v = split_bits(c16[tirx.min(j, s - 1), h, e], part) if f32_kv else tirx.Cast("uint32", c16[tirx.min(j, s - 1), h, e])
        return tirx.if_then_else(j < s, v, tirx.const(0, "uint32"))

    def blocks(s):  # key blocks over s keys
        return (s + kb - 1) // kb

    def padded(s):  # the keys, to whole blocks
        return blocks(s) * kb

    @T.macro
    def copy_part(k16, v16, kt, vt32, h, j0, s, checked, part):  # a block of keys into kt, of values into vt32
        vp = T.alloc_buffer((kb // 2, dv), "uint32")  # the value rows in key pairs
        for jj in range(kb):
            for ds in range(d // 32):
                for c in T.vectorized(32):
                    kt[part, h, (j0 + jj) // 16, ds, jj % 16, c] = T.Cast(
                        "uint16", kv_bits(k16, h, j0 + jj, ds * 32 + c, s, checked, part))
        for jp in range(kb // 2):
            for e in T.vectorized(dv):
                vp[jp, e] = pair(kv_bits(v16, h, j0 + 2 * jp, e, s, checked, part),
                                 kv_bits(v16, h, j0 + 2 * jp + 1, e, s, checked, part))
        for e in range(dv):  # transposed, a word (two keys) at a time
            for jp in T.unroll(kb // 2):
                vt32[part, h, j0 // 32 + jp // 16, e // 16, e % 16, jp % 16] = vp[jp, e]

    @T.macro
    def copy_block(k16, v16, kt, vt32, h, j0, s, checked):  # the block's hi parts (and lo parts)
        copy_part(k16, v16, kt, vt32, h, j0, s, checked, 0)
        if kparts == 2:
            copy_part(k16, v16, kt, vt32, h, j0, s, checked, 1)

    @T.macro
    def scores_t(kt, h, j16, qp):  # the accumulators = S^T of the 32 keys from key 16 * j16
        tiles.zero()
        for ds in range(d // 32):
            _tile("tileloadd64", T.uint8(X0), T.address_of(kt[0, h, j16, ds, 0, 0]), T.int64(64))
            _tile("tileloadd64", T.uint8(X1), T.address_of(kt[0, h, j16 + 1, ds, 0, 0]), T.int64(64))
            for p in T.unroll(parts):
                _tile("tileloadd64", T.uint8(W0), T.address_of(qp[p, ds * 16, 0]), T.int64(R * 4))
                _tile("tileloadd64", T.uint8(W1), T.address_of(qp[p, ds * 16, 16]), T.int64(R * 4))
                tiles.product(X0, X1, W0, W1)
            if kparts == 2:  # the keys' lo parts, times q's hi part
                _tile("tileloadd64", T.uint8(X0), T.address_of(kt[1, h, j16, ds, 0, 0]), T.int64(64))
                _tile("tileloadd64", T.uint8(X1), T.address_of(kt[1, h, j16 + 1, ds, 0, 0]), T.int64(64))
                _tile("tileloadd64", T.uint8(W0), T.address_of(qp[0, ds * 16, 0]), T.int64(R * 4))
                _tile("tileloadd64", T.uint8(W1), T.address_of(qp[0, ds * 16, 16]), T.int64(R * 4))
                tiles.product(X0, X1, W0, W1)

    @T.macro
    def body(q, kc, vc, out, t, kv_len):
        nb = (t + bq - 1) // bq
        # bf16 bits, read as such (fp32 keys and values are read as they are, and rounded)
        k16 = kc if f32_kv else T.decl_buffer(kc.shape, "uint16", data=kc.data)
        v16 = vc if f32_kv else T.decl_buffer(vc.shape, "uint16", data=vc.data)
        # once per call, for all query blocks of a kv head: its keys as 16 x 32 tiles (16 keys
        # of 32 head dims) and V^T as 16 x 32 tiles (16 head dims of 32 keys), each 1 KB in a row
        # for the tile loads; zeros past kv_len (the cache may hold NaNs there)
        # (fp32 keys and values at "high": a hi and a lo part of each)
        kt = T.alloc_buffer((kparts, hkv, padded(kv_len) // 16, d // 32, 16, 32), "uint16")
        vt = T.alloc_buffer((kparts, hkv, padded(kv_len) // 32, dv // 16, 16, 32), "uint16")
        vt32 = T.decl_buffer((kparts, hkv, padded(kv_len) // 32, dv // 16, 16, 16), "uint32", data=vt.data)
        for task in T.parallel(hkv * blocks(kv_len)):
            ch = task // blocks(kv_len)
            cj = task % blocks(kv_len) * kb
            if f32_kv or cj + kb > kv_len:  # rounded, or the last block
                copy_block(k16, v16, kt, vt32, ch, cj, kv_len, True)
            else:  # bf16 rows, all before kv_len: no checks
                copy_block(k16, v16, kt, vt32, ch, cj, kv_len, False)
        for task in T.parallel(hkv * nb):
            qa = T.alloc_buffer((parts, R, d), "uint16")  # the block's q rows, scaled: hi (and lo)
            qa32 = T.decl_buffer((parts, R, d // 2), "uint32", data=qa.data)  # the same, in head-dim pairs
            qp = T.alloc_buffer((parts, d // 2, R), "uint32")  # q^T in head-dim pairs, hi (and lo)
            st = T.alloc_buffer((kb, R), F32)  # S^T, then P^T
            pt = T.alloc_buffer((parts, kb // 2, R), "uint32")  # P^T in key pairs, hi (and lo)
            acc = T.alloc_buffer((dv, R), F32)  # O^T
            m = T.alloc_buffer((R,), F32)
            mn = T.alloc_buffer((R,), F32)
            corr = T.alloc_buffer((R,), F32)
            den = T.alloc_buffer((R,), F32)
            moved = T.alloc_buffer((1,), "int32")
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
            for blk in range(blocks(kmax)):
                j0 = blk * kb
                for ks in T.unroll(kb // 32):  # S^T, 32 keys at a time
                    scores_t(kt, h, j0 // 16 + 2 * ks, qp)
                    tiles.accumulators("tilestored64", st, R, ks * 32, 0)
                softmax.step(st, m, mn, corr, den, j0, i0, kv_len, t)  # P^T in st, O's factors in corr
                for jp in range(kb // 2):  # P^T split and paired, vectorized over the rows
                    for r in T.vectorized(R):
                        pt[0, jp, r] = pair(split_bits(st[2 * jp, r], 0), split_bits(st[2 * jp + 1, r], 0))
                        if parts == 2:
                            pt[1, jp, r] = pair(split_bits(st[2 * jp, r], 1), split_bits(st[2 * jp + 1, r], 1))
                moved[0] = 0
                for r in range(R):
                    moved[0] = moved[0] + T.Cast("int32", corr[r] != T.float32(1))
                if moved[0] > 0 and blk > 0:  # a running max moved: rescale O^T's columns
                    for e in range(dv):
                        for r in T.vectorized(R):
                            acc[e, r] = acc[e, r] * corr[r]
                for ec in range(dv // 32):  # O^T += V^T P^T, 32 head dims at a time
                    tiles.accumulators("tileloadd64", acc, R, ec * 32, 0)
                    for ks in T.unroll(kb // 32):
                        _tile("tileloadd64", T.uint8(X0), T.address_of(vt[0, h, j0 // 32 + ks, 2 * ec, 0, 0]),
                              T.int64(64))
                        _tile("tileloadd64", T.uint8(X1), T.address_of(vt[0, h, j0 // 32 + ks, 2 * ec + 1, 0, 0]),
                              T.int64(64))
                        for p in T.unroll(parts):
                            _tile("tileloadd64", T.uint8(W0), T.address_of(pt[p, ks * 16, 0]), T.int64(R * 4))
                            _tile("tileloadd64", T.uint8(W1), T.address_of(pt[p, ks * 16, 16]), T.int64(R * 4))
                            tiles.product(X0, X1, W0, W1)
                        if kparts == 2:  # the values' lo parts, times P's hi part
                            _tile("tileloadd64", T.uint8(X0), T.address_of(vt[1, h, j0 // 32 + ks, 2 * ec, 0, 0]),
                                  T.int64(64))
                            _tile("tileloadd64", T.uint8(X1),
                                  T.address_of(vt[1, h, j0 // 32 + ks, 2 * ec + 1, 0, 0]), T.int64(64))
                            _tile("tileloadd64", T.uint8(W0), T.address_of(pt[0, ks * 16, 0]), T.int64(R * 4))
                            _tile("tileloadd64", T.uint8(W1), T.address_of(pt[0, ks * 16, 16]), T.int64(R * 4))
                            tiles.product(X0, X1, W0, W1)
                    tiles.accumulators("tilestored64", acc, R, ec * 32, 0)
            _tile("tilerelease")
            for r in range(R):
                if r < bq * g and i0 + r // g < t:
                    for e in T.vectorized(dv):
                        out[i0 + r // g, h * g + r % g, e] = T.Cast(odt, acc[e, r] / den[r])

    return attention_tir(body, hq, hkv, d, dv, cache_rows, dtypes)
