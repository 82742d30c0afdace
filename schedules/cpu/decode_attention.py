"""Decode attention on CPU (one query row over the KV cache), split over the keys.

The cache is (C, Hkv, D): one kv head's key rows are 256 bytes (Qwen3's D = 128, bf16) 2 KB
apart, a stride the hardware prefetchers follow poorly, so a task per kv head (the
row-parallel schedule of `attention.py`) waits on its loads. Here a task takes a chunk of KC
consecutive keys for all heads instead, reading whole cache rows front to back:

    scores (Hq, KC): per key, the Hq dot products over D run side by side (independent FMA
        chains, each in SIMD lanes), then each sums its lanes
    softmax over the chunk: max m and sum l per head, p = exp(s - m)
    o (Hq, Dv) = p @ V_chunk, per key for all heads

and writes the unnormalized (o, m, l) of its chunk (each pass over K and V asks for the rows
PREFETCH_BYTES ahead: ~0.95 -> ~0.83 ms per layer at 2048 keys, `bench/attention_kernel.py
--cold`); a second loop merges the chunks of each
head: out = sum_c exp(m_c - M) o_c / sum_c exp(m_c - M) l_c. Everything is fp32 over the
stored K and V, as the other attention kernels compute.
"""
from __future__ import annotations

from tvm import tirx
from tvm.tirx.buffer import is_buffer_var

from ...targets import TargetDesc
from ..kernels import same_params
from .flash_attention import NEG, fast_exp
from .prefetch import prefetch, stream_plan

F32 = "float32"
KC = 64  # keys per chunk (task)


def split_key_attention(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc | None:
    """The split-key kernel for a one-row cache_attention with kv_len a scalar, else None."""
    attrs = func.attrs
    if attrs is None or "scale" not in attrs or attrs.get("kv_len_tensor") or "q_norm_eps" in attrs:
        return None
    buffers = [p for p in func.params if is_buffer_var(p)]
    if len(buffers) != 4 or len(func.params) != 5:  # cache_attention(q, kc, vc, out, kv_len) only
        return None
    q, kc, vc, out = buffers
    if not (isinstance(q.shape[0], tirx.IntImm) and int(q.shape[0]) == 1):
        return None
    hq, d, hkv, dv = int(q.shape[1]), int(q.shape[2]), int(kc.shape[1]), int(vc.shape[2])
    lanes = target.vector_lanes
    if hq % hkv or d % lanes or dv % lanes or lanes > 16:
        return None
    f = _kernel(hq, hkv, d, dv, int(kc.shape[0]), (q.dtype, kc.dtype, vc.dtype, out.dtype), float(attrs["scale"]),
                lanes)
    return same_params(f, func)  # lowering may pass kv_len before the output


def _kernel(hq: int, hkv: int, d: int, dv: int, cache_rows: int, dtypes: tuple[str, ...], scale: float,
            lanes: int) -> tirx.PrimFunc:
    from tvm.script import tirx as T

    qdt, kdt, vdt, odt = dtypes
    g = hq // hkv
    chunks = (cache_rows + KC - 1) // KC
    k_row, v_row = hkv * d, hkv * dv  # elements per cache row
    (k_ahead, k_line), (v_ahead, v_line) = stream_plan(kdt, k_row), stream_plan(vdt, v_row)

    @T.macro
    def ask(flat, row, row_len, line):  # prefetch every cache line of one cache row
        for ln in T.unroll((row_len + line - 1) // line):
            T.evaluate(prefetch(T.address_of(flat[row * row_len + ln * line])))

    @T.macro
    def halve(acc, h, w):
        if w > 0:
            for ln in T.vectorized(w):
                acc[h, ln] = acc[h, ln] + acc[h, ln + w]

    @T.macro
    def body(q, kc, vc, out, kv_len):
        po = T.alloc_buffer((chunks, hq, dv), F32)
        pm = T.alloc_buffer((chunks, hq), F32)
        pl = T.alloc_buffer((chunks, hq), F32)
        kf = T.decl_buffer((cache_rows * k_row,), kdt, data=kc.data)  # flat views, for the prefetches
        vf = T.decl_buffer((cache_rows * v_row,), vdt, data=vc.data)
        for c in T.parallel((kv_len + KC - 1) // KC):
            qf = T.alloc_buffer((hq, d), F32)
            acc = T.alloc_buffer((hq, lanes), F32)
            s = T.alloc_buffer((hq, KC), F32)
            o = T.alloc_buffer((hq, dv), F32)
            m = T.alloc_buffer((hq,), F32)
            den = T.alloc_buffer((hq,), F32)
            for h in range(hq):
                for e in T.vectorized(d):
                    qf[h, e] = T.Cast(F32, q[0, h, e]) * T.float32(scale)
                for e in T.vectorized(dv):
                    o[h, e] = T.float32(0)
            for jj in range(T.min(KC, kv_len - c * KC)):
                ask(kf, c * KC + jj + k_ahead, k_row, k_line)
                for h in T.unroll(hq):
                    for ln in T.vectorized(lanes):
                        acc[h, ln] = T.float32(0)
                for dc in range(d // lanes):
                    for h in T.unroll(hq):
                        for ln in T.vectorized(lanes):
                            acc[h, ln] = acc[h, ln] + qf[h, dc * lanes + ln] * T.Cast(
                                F32, kc[c * KC + jj, h // g, dc * lanes + ln])
                for h in T.unroll(hq):  # each head's lanes summed by halves (lanes <= 16)
                    halve(acc, h, lanes // 2)
                    halve(acc, h, lanes // 4)
                    halve(acc, h, lanes // 8)
                    halve(acc, h, lanes // 16)
                    s[h, jj] = acc[h, 0]
            for h in range(hq):
                m[h] = T.float32(NEG)
                for jj in range(T.min(KC, kv_len - c * KC)):
                    m[h] = T.max(m[h], s[h, jj])
                den[h] = T.float32(0)
                for jj in range(T.min(KC, kv_len - c * KC)):
                    s[h, jj] = fast_exp(s[h, jj] - m[h])
                    den[h] = den[h] + s[h, jj]
            for jj in range(T.min(KC, kv_len - c * KC)):
                ask(vf, c * KC + jj + v_ahead, v_row, v_line)
                for h in range(hq):
                    for e in T.vectorized(dv):
                        o[h, e] = o[h, e] + s[h, jj] * T.Cast(F32, vc[c * KC + jj, h // g, e])
            for h in range(hq):
                pm[c, h] = m[h]
                pl[c, h] = den[h]
                for e in T.vectorized(dv):
                    po[c, h, e] = o[h, e]
        for h in T.parallel(hq):
            mx = T.alloc_buffer((1,), F32)
            tot = T.alloc_buffer((1,), F32)
            wc = T.alloc_buffer((1,), F32)  # the chunk's weight, exp(m_c - M)
            res = T.alloc_buffer((dv,), F32)
            mx[0] = T.float32(NEG)
            for c in range((kv_len + KC - 1) // KC):
                mx[0] = T.max(mx[0], pm[c, h])
            tot[0] = T.float32(0)
            for e in T.vectorized(dv):
                res[e] = T.float32(0)
            for c in range((kv_len + KC - 1) // KC):
                wc[0] = fast_exp(pm[c, h] - mx[0])
                tot[0] = tot[0] + wc[0] * pl[c, h]
                for e in T.vectorized(dv):
                    res[e] = res[e] + wc[0] * po[c, h, e]
            for e in T.vectorized(dv):
                out[0, h, e] = T.Cast(odt, res[e] / tot[0])

    @T.prim_func(private=True, s_tir=True)
    def cache_attention_split(var_q: T.handle, var_kc: T.handle, var_vc: T.handle, var_out: T.handle,
                              kv_len: T.int64):
        q = T.match_buffer(var_q, (1, hq, d), qdt)
        kc = T.match_buffer(var_kc, (cache_rows, hkv, d), kdt)
        vc = T.match_buffer(var_vc, (cache_rows, hkv, dv), vdt)
        out = T.match_buffer(var_out, (1, hq, dv), odt)
        with T.sblock("root"):
            body(q, kc, vc, out, kv_len)

    return cache_attention_split
