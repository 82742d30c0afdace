"""Tiled (flash-style) attention for CPU, for prefill and the cache-less forward (T > 1).

The TE kernel materializes every (query, key) score; this one replaces it (same signature)
with a hand-written TIR kernel. One task per (kv head, block of BQ query rows): the block's
query rows for all G query heads of the kv head (R = G * BQ rows) are transposed once into a
(D, R) panel, then key blocks of KB rows stream past it:

    S^T (KB, R) = K_blk (KB, D) @ Q^T (D, R)     register tiles of JT keys x R rows
    online softmax down the key axis              vectorized over the R rows
    O (R, Dv) += P (R, KB) @ V_blk (KB, Dv)       register tiles of RT rows x EV head dims

Key blocks past the block's last causal position are never visited. Small register tiles
are "global"-scope buffers: TVM's CPU lowering puts those on the stack (where LLVM keeps
them in registers), while "local" ones become heap workspace that LLVM re-stores every step.
"""
from __future__ import annotations

from types import SimpleNamespace

from tvm import tirx
from tvm.tirx.buffer import is_buffer_var

from ...targets import TargetDesc
from ..kernels import attention_tir, causal_bounds, same_params

F32 = "float32"
KB = 64  # keys per block
JT = 2  # keys per S^T register tile
RT = 4  # rows per O register tile
NEG = -3.0e38  # masked score: exp() of it minus any real max is 0; finite, so no NaNs

_LOG2E = 1.4426950408889634
_LN2_HI, _LN2_LO = 0.693359375, -2.12194440e-4
_EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
             5.0000001201e-1)


def fast_exp(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """exp(x) as 2^n * p(r), |r| <= ln2/2 (Cephes expf, rel. err ~1e-7); vectorizes, unlike
    the libm call that exp() lowers to. Inputs below -88 give 0."""
    c = lambda v: tirx.const(v, F32)  # noqa: E731
    x = tirx.max(tirx.min(x, c(88.0)), c(-88.0))
    n = tirx.floor(x * c(_LOG2E) + c(0.5))
    r = x - n * c(_LN2_HI) - n * c(_LN2_LO)
    p = c(_EXP_POLY[0])
    for k in _EXP_POLY[1:]:
        p = p * r + c(k)
    p = p * r * r + r + c(1.0)
    return p * tirx.reinterpret(F32, tirx.shift_left(n.astype("int32") + 127, 23))


def block_query(q, g: int, scale: float, h, i0, r, e, t) -> tirx.PrimExpr:
    """Element e of row r of a flash block: query row i0 + r // g of head h * g + r % g (the
    block's G heads interleaved), scaled, in fp32; 0 past the T rows."""
    return tirx.if_then_else(i0 + r // g < t, tirx.Cast(F32, q[tirx.min(i0 + r // g, t - 1), h * g + r % g, e]),
                             tirx.const(0, F32)) * tirx.const(scale, F32)


def online_softmax(visible, g: int, keys: int, rows: int, dv: int, tau: float = 0.0) -> SimpleNamespace:
    """The online softmax of the flash kernels here, as two macros over each row's running max
    m and sum den and its output rows acc (rows x dv). ``start(acc, m, den)`` empties them;
    ``step(st, m, mn, corr, den, j0, i0, kv_len, t)`` takes st, S^T (keys x rows) of the key
    block from key j0 for query rows i0 + r // g: masks the keys a row may not see, updates m
    and den, leaves P^T = exp(S^T - m) in st and the factor that rescales acc in corr.
    ``visible`` from `causal_bounds`, mn is scratch. With ``tau`` > 0 a row's m moves only when
    the block's max passes it by more than tau (FlashAttention-4's lazy rescale), so that corr
    is exactly 1 for most blocks and P stays below e^tau; the result is the same, since m
    cancels between O and den. ``start`` zeroes acc's rows * dv values whatever its shape."""
    from tvm.script import tirx as T

    @T.macro
    def start(acc, m, den):
        flat = T.decl_buffer((rows * dv,), F32, data=acc.data)
        for r in range(rows):
            for e in T.vectorized(dv):
                flat[r * dv + e] = T.float32(0)
        for r in T.vectorized(rows):
            m[r] = T.float32(NEG)
            den[r] = T.float32(0)

    @T.macro
    def step(st, m, mn, corr, den, j0, i0, kv_len, t):
        for r in T.vectorized(rows):
            mn[r] = m[r]
        if visible(j0 + keys - 1, i0, kv_len, t):  # every row sees every key of the block: no mask
            for jj in range(keys):
                for r in T.vectorized(rows):
                    mn[r] = T.max(mn[r], st[jj, r])
        else:
            for jj in range(keys):
                for r in T.vectorized(rows):
                    st[jj, r] = T.if_then_else(visible(j0 + jj, i0 + r // g, kv_len, t), st[jj, r], T.float32(NEG))
                    mn[r] = T.max(mn[r], st[jj, r])
        if tau > 0:  # (decided when the kernel is built)
            for r in T.vectorized(rows):
                mn[r] = T.if_then_else(mn[r] > m[r] + T.float32(tau), mn[r], m[r])
        for r in T.vectorized(rows):
            corr[r] = fast_exp(m[r] - mn[r])
            m[r] = mn[r]
            den[r] = den[r] * corr[r]
        for jj in range(keys):
            for r in T.vectorized(rows):
                st[jj, r] = fast_exp(st[jj, r] - mn[r])
                den[r] = den[r] + st[jj, r]

    return SimpleNamespace(start=start, step=step)


def _head_tile(dv: int) -> int:
    return next(e for e in (16, 8, 4, 2, 1) if dv % e == 0)


def flash_spec(func: tirx.PrimFunc) -> dict | None:
    """For an attention / cache_attention PrimFunc with T > 1 query rows (not static decode, no
    fused q norm), the arguments of a flash kernel builder: hq, hkv, d, dv, cache_rows (None
    without a cache), dtypes (q, k, v, out), scale, causal. None for anything else."""
    attrs = func.attrs
    if attrs is None or "scale" not in attrs or attrs.get("kv_len_tensor") or "q_norm_eps" in attrs:
        return None  # not attention, static decode (one query row: the row-parallel schedule), a fused q norm
    buffers = [p for p in func.params if is_buffer_var(p)]  # q, k, v, out; kv_len may sit among them
    if len(buffers) != 4:
        return None
    q, k, v, out = buffers
    if isinstance(q.shape[0], tirx.IntImm) and int(q.shape[0]) == 1:
        return None  # decode: the row-parallel schedule is the better fit
    cache = len(func.params) == 5
    return dict(hq=int(q.shape[1]), hkv=int(k.shape[1]), d=int(q.shape[2]), dv=int(v.shape[2]),
                cache_rows=int(k.shape[0]) if cache else None, dtypes=(q.dtype, k.dtype, v.dtype, out.dtype),
                scale=float(attrs["scale"]), causal=bool(attrs.get("causal", True)))


def flash_attention(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc | None:
    """The tiled kernel for an attention / cache_attention PrimFunc with T > 1, else None."""
    spec = flash_spec(func)
    return None if spec is None else same_params(_kernel(**spec), func)


def _kernel(hq: int, hkv: int, d: int, dv: int, cache_rows: int | None, dtypes: tuple[str, ...], scale: float,
            causal: bool) -> tirx.PrimFunc:
    """cache_rows=None: attention(q, k, v, out) over all S rows of k and v; else
    cache_attention(q, kc, vc, out, kv_len) over cache rows [0, kv_len)."""
    from tvm.script import tirx as T

    qdt, kdt, vdt, odt = dtypes
    g = hq // hkv
    bq = 4 * max(1, 8 // g)  # query rows per block: R = g * bq rows, a multiple of RT
    r_ = g * bq
    ev = _head_tile(dv)

    last_key, visible = causal_bounds(causal, bq)
    softmax = online_softmax(visible, g, KB, r_, dv)

    @T.macro
    def body(q, kc, vc, out, t, kv_len):
        nb = (t + bq - 1) // bq
        for task in T.parallel(hkv * nb):
            with T.sblock("task"):
                T.reads()
                T.writes()
                qt = T.sblock_alloc_buffer((d, r_), F32)
                kf = T.sblock_alloc_buffer((KB, d), F32)
                vf = T.sblock_alloc_buffer((KB, dv), F32)
                st = T.sblock_alloc_buffer((KB, r_), F32)
                acc = T.sblock_alloc_buffer((r_, dv), F32)
                m = T.sblock_alloc_buffer((r_,), F32)
                mn = T.sblock_alloc_buffer((r_,), F32)
                corr = T.sblock_alloc_buffer((r_,), F32)
                den = T.sblock_alloc_buffer((r_,), F32)
                h = task // nb
                i0 = task % nb * bq
                kmax = last_key(kv_len, t, i0)
                for r in range(r_):  # query rows (padded past t), pre-scaled, transposed to (D, R)
                    for e in range(d):
                        qt[e, r] = block_query(q, g, scale, h, i0, r, e, t)
                softmax.start(acc, m, den)
                for kb in range((kmax + KB - 1) // KB):
                    j0 = kb * KB
                    for jj in range(KB):  # the key block in fp32; value rows past kmax are 0
                        for e in T.vectorized(d):
                            kf[jj, e] = T.Cast(F32, kc[T.min(j0 + jj, kmax - 1), h, e])
                        for e in T.vectorized(dv):
                            vf[jj, e] = T.if_then_else(j0 + jj < kmax, T.Cast(F32, vc[T.min(j0 + jj, kmax - 1), h, e]),
                                                       T.float32(0))
                    for jo in range(KB // JT):  # S^T = K_blk Q^T
                        sreg = T.alloc_buffer((JT, r_), F32)
                        for ji in T.unroll(JT):
                            for r in T.vectorized(r_):
                                sreg[ji, r] = T.float32(0)
                        for e in range(d):
                            for ji in T.unroll(JT):
                                for r in T.vectorized(r_):
                                    sreg[ji, r] = sreg[ji, r] + kf[jo * JT + ji, e] * qt[e, r]
                        for ji in T.unroll(JT):
                            for r in T.vectorized(r_):
                                st[jo * JT + ji, r] = sreg[ji, r]
                    softmax.step(st, m, mn, corr, den, j0, i0, kv_len, t)  # P^T in st, O's factors in corr
                    for ro in range(r_ // RT):  # O = O * corr + P V_blk
                        for eo in range(dv // ev):
                            areg = T.alloc_buffer((RT, ev), F32)
                            for ri in T.unroll(RT):
                                for ei in T.vectorized(ev):
                                    areg[ri, ei] = acc[ro * RT + ri, eo * ev + ei] * corr[ro * RT + ri]
                            for jj in range(KB):
                                for ri in T.unroll(RT):
                                    for ei in T.vectorized(ev):
                                        areg[ri, ei] = areg[ri, ei] + st[jj, ro * RT + ri] * vf[jj, eo * ev + ei]
                            for ri in T.unroll(RT):
                                for ei in T.vectorized(ev):
                                    acc[ro * RT + ri, eo * ev + ei] = areg[ri, ei]
                for r in range(r_):
                    if i0 + r // g < t:
                        for e in T.vectorized(dv):
                            out[i0 + r // g, h * g + r % g, e] = T.Cast(odt, acc[r, e] / den[r])

    return attention_tir(body, hq, hkv, d, dv, cache_rows, dtypes)
