"""attention / cache_attention on CUDA: hand-written TIR kernels replacing the TE ones.

The TE kernel materializes every (query, key) score in global memory, stage by stage; these
kernels never store a score outside shared memory.

Decode (one query row), split over the keys ("flash decoding"): one thread block per
(kv head, chunk of KC keys) so that even a short context fills many SMs (chunk-major: block b
is kv head b % Hkv's chunk b / Hkv, so in the static grid of a CUDA graph, which spans the
whole cache, the live chunks of every head come before the idle slots); the block serves
the G query heads sharing the kv head, so each key and value row is read once. In the block
of DECODE_THREADS (512) threads:

    load, first, every element of q, K and V the thread will use into registers: its share
        of the query heads (of x's row, with a fused norm), its slice of a key row (16-byte
        loads) for the scores, its column of a group of value rows for p @ V. No barrier comes
        before these loads, so their latencies overlap each other and the query's staging
    stage q (G, D) in shared memory, scaled (a fused query norm: its sums of squares 32
        threads per head, then rotary), one padded row per slice of D; with a fused append
        (`ir.ops.append_attention`) the step's key head is staged and normed alongside, and the
        block whose chunk holds the new row writes its key and value into the caches
    scores (G, KC): DECODE_THREADS / KC (8) threads per key, each multiplying its key slice
        with all G heads; the slices' partial dots are summed in a second phase, keys past
        kv_len masked
    softmax over the chunk: the max m per head (over groups of 8 keys, then the groups),
        p = exp(s - m)
    o (G, Dv) = p @ V: DECODE_THREADS / Dv (4) threads per column, each over its group of keys,
        each V element serving the G heads, then the groups summed; the sum l of p alongside

and writes the unnormalized (o, m, l) of the chunk. A second kernel merges the chunks of each
query head: with M = max m_c, out = sum_c exp(m_c - M) o_c / sum_c exp(m_c - M) l_c. Its 512
threads are 4 per column (at Dv = 128), each over every 4th chunk; each loads its first
MERGE_UNROLL chunks of o while the block loads every chunk's (m, l) into shared memory, all
before the one barrier (so up to 32 chunks, 2048 keys, the merge waits on memory once), and
the 4 partial sums meet in shared memory. Before, a thread per column took the chunks 8 at a
time after the (m, l) had arrived: at 1024 keys two memory latencies after the first. On an
H200 (2026-12-04), inside a CUDA graph at context 1024, the two kernels took 8.4 + 3.0 us per
Qwen3-4B layer, against 11.9 + 3.9 for the first form of this kernel (K and V staged in shared
memory, one thread per (head, key) summing D products, one thread per head for the norm).
Since then (not yet timed on a GPU): the loads moved ahead of the query's staging (three
memory latencies one after another became one; 62 registers a thread at Qwen3-4B's heads and
64 at Qwen3-0.6B's, instead of 44 and 40: 2 blocks of 512 threads per SM, as 44 already allowed
and 40 did not), decode's appends moved inside (one kernel fewer), and the merge took its
present form.

Where decode is static (`passes.static_decode`, under a CUDA graph), the merge is no kernel of
its own: `append_attention` gets counters, a persistent (Hkv,) int32 input of zeros. A block
writes its chunk's (o, m, l), fences them (`__threadfence`), and one thread adds 1 to its kv
head's counter; the block that gets back the head's chunk count - 1 is the last of that head,
and merges it (`merge_last`: thread (r, head, column) folds every rl-th chunk into a running max and
sums, FOLD chunks' loads at a time; rl = 1 at Qwen3-4B's 4 heads of 128 per kv head), then
resets the counter. That saves a launch and the gap after it per layer: in run 3's profile the
merge kernel took 2.97 us per Qwen3-4B layer, plus about 1.75 us of gap. The merge's extra
registers made ptxas take 125 a thread, so the kernel tells ptxas it wants BLOCKS_PER_SM (2)
blocks resident (launch bounds): 64 registers, no spills at FOLD = 4 (20 bytes at 8). Not yet
timed on a GPU.

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
DECODE_THREADS = 512  # decode: threads per block (8 per key in the scores, 4 per column in p @ V)
MAX_GROUP = 8  # decode: the chunk's max per head is taken over groups of this many keys first
FOLD = 4  # decode's merge in the last block (``sync``): chunks whose (o, m, l) a thread loads together (8 spill)
BLOCKS_PER_SM = 2  # decode: blocks of DECODE_THREADS resident per SM, as ptxas is told (launch bounds)
MERGE_UNROLL = 8  # decode's merge: chunks whose partial outputs a thread loads together
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


class KVAppend(NamedTuple):
    """A decode kernel's fused KV append (`ir.ops.append_attention`, with a QNorm): the step's key
    head at column k_start + h * D of x, normed by kw (kw_dtype) and rotated, and its value head
    at v_start + h * D, written into cache row kv_len - 1 by the block whose chunk holds it."""
    k_start: int
    v_start: int
    kw_dtype: str


def _ceil(a, b):
    return (a + b - 1) // b


# Launch extents must be expressions of the kernel's parameters, not names bound in its body.
def _i32(kv_len: tirx.PrimExpr) -> tirx.PrimExpr:
    return tirx.Cast("int32", kv_len)  # thread indices are int32


def _chunks(kv_len: tirx.PrimExpr, chunk: int = KC) -> tirx.PrimExpr:
    return _ceil(_i32(kv_len), chunk)


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


def cuda_append_attention(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc:
    """The decode kernel for append_attention (`kernels.append_attention`): its parameters
    (x, kc, vc, kv_len, w, table, kw, [sync,] out[, scratch]), the caches written in place; with
    the sync counters, the last block of each kv head merges its chunks (no merge kernel)."""
    attrs = func.attrs
    static = bool(attrs.get("kv_len_tensor"))
    buffers = [p for p in func.params if is_buffer_var(p)]
    x, kc, vc = buffers[:3]
    sync = int(buffers[7].shape[0]) if static and len(buffers) == 10 else 0
    w, table, kw = buffers[4:7] if static else buffers[3:6]
    out = buffers[-2] if static else buffers[-1]
    if kc.shape != vc.shape or len(x.shape) != 2:
        raise ValueError(f"append_attention: caches {kc.shape} / {vc.shape} and x {x.shape} do not fit")
    q_norm = QNorm(int(attrs["q_start"]), int(x.shape[1]), int(table.shape[1]), float(attrs["q_norm_eps"]), str(w.dtype))
    append = KVAppend(int(attrs["k_start"]), int(attrs["v_start"]), str(kw.dtype))
    return _decode_kernel(hq=int(out.shape[1]), hkv=int(kc.shape[1]), d=int(kc.shape[2]), dv=int(vc.shape[2]),
                          cache_rows=int(kc.shape[0]), dtypes=(x.dtype, kc.dtype, vc.dtype, out.dtype),
                          scale=float(attrs["scale"]), kv_len_tensor=static, q_norm=q_norm, append=append, sync=sync)


def _vector(row: int, dtype: str) -> int:
    """Elements per load: 16 bytes where the row length allows."""
    width = 16 // (4 if dtype == F32 else 2)
    return next(v for v in (width, width // 2, width // 4, 2, 1) if v >= 1 and row % v == 0)


def _decode_kernel(hq: int, hkv: int, d: int, dv: int, cache_rows: int, dtypes: tuple[str, ...],
                   scale: float, kv_len_tensor: bool = False, q_norm: QNorm | None = None,
                   threads: int | None = None, append: KVAppend | None = None, chunk: int = KC,
                   sync: int = 0) -> tirx.PrimFunc:
    """cache_attention(q, kc, vc, out, kv_len) for one query row; ``kv_len_tensor``: the
    static-decode form (q, kc, vc, kv_len (1,) int32, out), launched over the whole cache.
    ``q_norm``: q is norm_rotary of a head window of x (1, cols), staged in the block (the
    parameters gain w and table after the cache operands and kv_len, as lowering passes them).
    ``threads`` per block (default DECODE_THREADS), ``chunk`` keys per block (default KC; the
    static form's scratch is laid out by KC's chunks). ``append`` (with ``q_norm``): the kernel of
    `kernels.append_attention`, (x, kc, vc, kv_len, w, table, kw, out[, scratch]): the step's key
    head is staged and normed with the query heads (one more row), and the block whose chunk
    holds row kv_len - 1 writes that row's key and value before its scores read it. ``sync`` > 0
    (the static form with ``append``): no merge kernel; the last block of each kv head to finish
    merges that head's chunks, found through a counter per kv head in parameter ``counters``
    ((sync,) int32, sync >= Hkv, after kw), which must hold zeros and holds zeros again when the
    kernel ends."""
    from tvm.script import tirx as T

    qdt, kdt, vdt, odt = dtypes
    g = hq // hkv
    nt = threads or DECODE_THREADS
    max_chunks = _ceil(cache_rows, chunk)
    sl = max(1, nt // chunk)  # threads per key in the scores, each a slice of ds dims
    ds = _ceil(d, sl)
    even = d % sl == 0
    vk = _vector(ds, kdt) if even else 1
    rq = max(1, nt // dv)  # threads per output column in p @ V, each a group of kq keys
    kq = _ceil(chunk, rq)
    nmg = _ceil(chunk, MAX_GROUP)
    rm = max(1, nt // dv)  # merge: threads per output column, each over every rm-th chunk
    if nt < dv:  # (the merge gives each output column rm >= 1 threads)
        raise ValueError(f"a decode attention block of {nt} threads is narrower than the head ({dv})")
    if sync and (not kv_len_tensor or append is None):
        raise ValueError("a decode kernel merges in its last blocks (sync) only in the static form with append")
    if 0 < sync < hkv:
        raise ValueError(f"a decode kernel's sync needs a counter per kv head: {sync} for {hkv}")
    if append is not None and (q_norm is None or dv != d):
        raise ValueError("a decode kernel's fused append needs the fused query norm and D == Dv")
    appends = append is not None
    nd, npv = _ceil(chunk * sl, nt), _ceil(rq * dv, nt)  # trips of the scores' and p @ V's thread loops
    nh = g + (1 if appends else 0)  # heads staged and normed: the query heads [, the key head]
    # q's elements a thread loads into registers ahead (xreg), then stages: (g, sl, ds) padded
    # slices of the heads, or with a fused norm the nh raw heads
    nqe = nh * d if q_norm else g * sl * ds
    nqi = _ceil(nqe, nt)
    # ``sync``: the last block of a kv head merges its g heads' chunks, rl threads per column
    # of the (g, dv) outputs, each folding every rl-th chunk into a running (max, sum o, sum l)
    synced = sync > 0
    rl = max(1, nt // (g * dv))
    merge_shape = ((rl, g, dv), (rl, g)) if synced else ((1, 1, 1), (1, 1))

    if q_norm is None:
        @T.macro
        def load_q(q, xreg, h):
            for it in T.unroll(nqi):
                for tx in T.thread_binding(nt, thread="threadIdx.x"):
                    if it * nt + tx < nqe:
                        xreg[it, tx] = T.Cast(F32, q[0, h * g + (it * nt + tx) // (sl * ds),
                                                     T.min((it * nt + tx) % (sl * ds), d - 1)])

        @T.macro
        def stage_q(xreg, qs, qr, qpart, qsum, h, w, table):  # (xreg, qs used)
            for it in T.unroll(nqi):
                for tx in T.thread_binding(nt, thread="threadIdx.x"):
                    if it * nt + tx < nqe:
                        qs[(it * nt + tx) // ds * (ds + 1) + (it * nt + tx) % ds] = T.if_then_else(
                            (it * nt + tx) % (sl * ds) < d, xreg[it, tx] * T.float32(scale), T.float32(0))
    else:
        start, eps = q_norm.start, q_norm.eps
        k_start, v_start = (append.k_start, append.v_start) if append else (0, 0)

        @T.macro
        def load_q(q, xreg, h):  # the query heads [and the key head] of x's row
            for it in T.unroll(nqi):
                for tx in T.thread_binding(nt, thread="threadIdx.x"):
                    if it * nt + tx < nqe:
                        xreg[it, tx] = T.Cast(F32, q[0, T.if_then_else(
                            (it * nt + tx) // d < g, start + (h * g + (it * nt + tx) // d) * d, k_start + h * d)
                            + (it * nt + tx) % d])

        @T.macro
        def stage_q(xreg, qs, qr, qpart, qsum, h, w, table):
            """qs = norm_rotary(q) * scale (`kernels.norm_rotated`, as norm_rotary computes it),
            through the raw heads (qr) and each head's sum of squares (qsum): partial sums of
            every 32nd element (qpart) first, so no thread sums a whole head. With a fused
            append, row g of qr and qsum is the step's key head (`append_row`)."""
            for it in T.unroll(nqi):  # (x was loaded into xreg by load_q)
                for tx in T.thread_binding(nt, thread="threadIdx.x"):
                    if it * nt + tx < nqe:
                        qr[(it * nt + tx) // d, (it * nt + tx) % d] = xreg[it, tx]
            for it in range(_ceil(nh * 32, nt)):
                for tx in T.thread_binding(nt, thread="threadIdx.x"):
                    if it * nt + tx < nh * 32:
                        with T.sblock("q_sumsq"):
                            T.reads()
                            T.writes()
                            acc = T.sblock_alloc_buffer((1,), F32, scope="local")
                            acc[0] = T.float32(0)
                            for u in range(_ceil(d, 32)):
                                if (it * nt + tx) % 32 + u * 32 < d:
                                    acc[0] = acc[0] + qr[(it * nt + tx) // 32, (it * nt + tx) % 32 + u * 32] * \
                                        qr[(it * nt + tx) // 32, (it * nt + tx) % 32 + u * 32]
                            qpart[(it * nt + tx) // 32, (it * nt + tx) % 32] = acc[0]
            for tx in T.thread_binding(nt, thread="threadIdx.x"):
                if tx < nh:
                    with T.sblock("q_sum"):
                        T.reads()
                        T.writes()
                        acc = T.sblock_alloc_buffer((1,), F32, scope="local")
                        acc[0] = T.float32(0)
                        for c in range(32):
                            acc[0] = acc[0] + qpart[tx, c]
                        qsum[0, tx] = acc[0]
            for it in range(_ceil(g * sl * ds, nt)):
                for tx in T.thread_binding(nt, thread="threadIdx.x"):
                    if it * nt + tx < g * sl * ds:
                        qs[(it * nt + tx) // ds * (ds + 1) + (it * nt + tx) % ds] = T.if_then_else(
                            (it * nt + tx) % (sl * ds) < d,
                            norm_rotated(lambda t, hh, e: qr[hh, e], qsum, w, table, eps, d)(
                                0, (it * nt + tx) // (sl * ds), T.min((it * nt + tx) % (sl * ds), d - 1))
                            * T.float32(scale),
                            T.float32(0))

        @T.macro
        def append_row(q, qr, qsum, h, table, kc, vc, n, j0, kw, kn, vn):
            """The block holding row n - 1 writes the step's key (row g of qr, normed by kw,
            rotated) and value head into the caches, and into kn and vn: its scores and p @ V
            read them from there (a barrier away, which TVM places for shared memory, not for
            global; and the block's loads from the cache came first)."""
            for it in range(_ceil(d, nt)):
                for tx in T.thread_binding(nt, thread="threadIdx.x"):
                    if it * nt + tx < d and n <= j0 + chunk:  # this block's chunk holds row n - 1
                        kn[it * nt + tx] = T.Cast(kdt, norm_rotated(
                            lambda t, hh, e: qr[hh, e], qsum, kw, table, eps, d)(0, g, it * nt + tx))
                        kc[n - 1, h, it * nt + tx] = kn[it * nt + tx]
                        vn[it * nt + tx] = T.Cast(vdt, q[0, v_start + h * d + it * nt + tx])
                        vc[n - 1, h, it * nt + tx] = vn[it * nt + tx]

    @T.macro
    def merge_last(part, out, h, nch, counters, flag, fl, mnum, mden, mmax):
        """``sync``: count this block's chunk done (its outputs made visible device-wide first),
        and if it was the last of kv head h's nch chunks, merge them for the head's g query
        heads and set the counter back to zero. Thread (r, gi, e) folds chunks r, r + rl, ...
        of column e of head gi, FOLD chunks' loads at a time, into a running max M and
        sums exp(m_c - M) o_c and exp(m_c - M) l_c; the rl partial folds meet in shared memory."""
        T.tvm_storage_sync("shared")  # every thread's writes to part fenced (`combine`), before thread 0 counts
        for tx in T.thread_binding(nt, thread="threadIdx.x"):
            if tx == 0:
                flag[0] = T.cuda.atomic_add(T.address_of(counters[h]), 1)
        for tx in T.thread_binding(nt, thread="threadIdx.x"):
            fl[0] = flag[0]  # (a loop's extent may not read shared memory)
        for _last in range(T.Select(fl[0] == nch - 1, 1, 0)):
            for it in range(_ceil(rl * g * dv, nt)):
                for tx in T.thread_binding(nt, thread="threadIdx.x"):
                    if it * nt + tx < rl * g * dv:
                        with T.sblock("merge_fold"):
                            T.reads()
                            T.writes()
                            st = T.sblock_alloc_buffer((4,), F32, scope="local")  # M, sum o, sum l, next M
                            ld = T.sblock_alloc_buffer((FOLD, 3), F32, scope="local")  # o, m, l
                            r = (it * nt + tx) // (g * dv)
                            hd = h * g + (it * nt + tx) % (g * dv) // dv
                            e = (it * nt + tx) % dv
                            if tx == 0 and it == 0:
                                counters[h] = 0  # every block of this head has counted
                            T.cuda.thread_fence()  # the other blocks' part, after their count
                            st[0] = T.float32(NEG)
                            st[1] = T.float32(0)
                            st[2] = T.float32(0)
                            for k in range((nch + rl * FOLD - 1) // (rl * FOLD)):
                                for u in T.unroll(FOLD):
                                    if r + rl * (k * FOLD + u) < nch:
                                        ld[u, 0] = part[hd, r + rl * (k * FOLD + u), e]
                                        ld[u, 1] = part[hd, r + rl * (k * FOLD + u), dv]
                                        ld[u, 2] = part[hd, r + rl * (k * FOLD + u), dv + 1]
                                for u in T.unroll(FOLD):
                                    if r + rl * (k * FOLD + u) < nch:
                                        # rescale by exp(M - M'), M' = max(M, m_c): exp(NEG - M') is 0
                                        st[3] = T.max(st[0], ld[u, 1])
                                        st[1] = st[1] * T.exp(st[0] - st[3]) + ld[u, 0] * T.exp(ld[u, 1] - st[3])
                                        st[2] = st[2] * T.exp(st[0] - st[3]) + ld[u, 2] * T.exp(ld[u, 1] - st[3])
                                        st[0] = st[3]
                            mnum[r, hd - h * g, e] = st[1]
                            if e == 0:
                                mden[r, hd - h * g] = st[2]
                                mmax[r, hd - h * g] = st[0]
            for it in range(_ceil(g * dv, nt)):
                for tx in T.thread_binding(nt, thread="threadIdx.x"):
                    if it * nt + tx < g * dv:
                        with T.sblock("merge_out"):
                            T.reads()
                            T.writes()
                            st = T.sblock_alloc_buffer((3,), F32, scope="local")  # M, numerator, denominator
                            gi = (it * nt + tx) // dv
                            e = (it * nt + tx) % dv
                            st[0] = T.float32(NEG)
                            for r in T.unroll(rl):
                                st[0] = T.max(st[0], mmax[r, gi])
                            st[1] = T.float32(0)
                            st[2] = T.float32(0)
                            for r in T.unroll(rl):
                                st[1] = st[1] + T.exp(mmax[r, gi] - st[0]) * mnum[r, gi, e]
                                st[2] = st[2] + T.exp(mmax[r, gi] - st[0]) * mden[r, gi]
                            out[0, h * g + gi, e] = T.Cast(odt, st[1] / st[2])

    @T.macro
    def merge_chunks(part, out, n):
        """Without ``sync``: a second kernel merges the chunks of each query head (see above)."""
        for bx in T.thread_binding(hq, thread="blockIdx.x"):  # merge the chunks of each head
            with T.sblock("merge"):
                T.reads()
                T.writes()
                # each chunk's m and l (indexed mod max_chunks, which chunk indices never reach:
                # else compaction would size these by kv_len, which shared memory cannot be)
                mc = T.sblock_alloc_buffer((max_chunks,), F32, scope="shared")
                lc = T.sblock_alloc_buffer((max_chunks,), F32, scope="shared")
                num = T.sblock_alloc_buffer((rm, dv), F32, scope="shared")  # per group of chunks
                den = T.sblock_alloc_buffer((rm,), F32, scope="shared")
                pr = T.sblock_alloc_buffer((nt, MERGE_UNROLL), F32, scope="local")  # registers, per thread
                nch = (n + chunk - 1) // chunk  # chunks
                # thread (r, e) sums column e over chunks r, r + rm, r + 2 rm, ...; its first
                # MERGE_UNROLL of them load with every chunk's (m, l), before the one barrier
                for it in range(_ceil(max_chunks, nt)):
                    for tx in T.thread_binding(nt, thread="threadIdx.x"):
                        if it * nt + tx < nch:
                            mc[(it * nt + tx) % max_chunks] = part[bx, it * nt + tx, dv]
                            lc[(it * nt + tx) % max_chunks] = part[bx, it * nt + tx, dv + 1]
                for tx in T.thread_binding(nt, thread="threadIdx.x"):
                    if tx < rm * dv:
                        for u in T.unroll(MERGE_UNROLL):
                            if tx // dv + rm * u < nch:
                                pr[tx, u] = part[bx, tx // dv + rm * u, tx % dv]
                for tx in T.thread_binding(nt, thread="threadIdx.x"):
                    if tx < rm * dv:
                        with T.sblock("merge_part"):
                            T.reads()
                            T.writes()
                            st = T.sblock_alloc_buffer((3,), F32, scope="local")  # M, numerator, denominator
                            r = tx // dv
                            st[0] = T.float32(NEG)
                            for c in range(nch):
                                st[0] = T.max(st[0], mc[c % max_chunks])
                            st[1] = T.float32(0)
                            st[2] = T.float32(0)
                            for u in T.unroll(MERGE_UNROLL):
                                if r + rm * u < nch:
                                    st[1] = st[1] + T.exp(mc[(r + rm * u) % max_chunks] - st[0]) * pr[tx, u]
                                    st[2] = st[2] + T.exp(mc[(r + rm * u) % max_chunks] - st[0]) * \
                                        lc[(r + rm * u) % max_chunks]
                            # more than rm * MERGE_UNROLL chunks (long contexts): the rest in rounds
                            for k in range((n + chunk * rm * MERGE_UNROLL - 1) // (chunk * rm * MERGE_UNROLL) - 1):
                                for u in T.unroll(MERGE_UNROLL):
                                    if r + rm * ((k + 1) * MERGE_UNROLL + u) < nch:
                                        st[1] = st[1] + T.exp(
                                            mc[(r + rm * ((k + 1) * MERGE_UNROLL + u)) % max_chunks] - st[0]) * \
                                            part[bx, r + rm * ((k + 1) * MERGE_UNROLL + u), tx % dv]
                                        st[2] = st[2] + T.exp(
                                            mc[(r + rm * ((k + 1) * MERGE_UNROLL + u)) % max_chunks] - st[0]) * \
                                            lc[(r + rm * ((k + 1) * MERGE_UNROLL + u)) % max_chunks]
                            num[r, tx % dv] = st[1]
                            if tx % dv == 0:
                                den[r] = st[2]
                for it in range(_ceil(dv, nt)):
                    for tx in T.thread_binding(nt, thread="threadIdx.x"):
                        if it * nt + tx < dv:
                            with T.sblock("merge_col"):
                                T.reads()
                                T.writes()
                                st = T.sblock_alloc_buffer((2,), F32, scope="local")
                                st[0] = T.float32(0)
                                st[1] = T.float32(0)
                                for r in T.unroll(rm):
                                    st[0] = st[0] + num[r, it * nt + tx]
                                    st[1] = st[1] + den[r]
                                out[0, bx, it * nt + tx] = T.Cast(odt, st[0] / st[1])

    norm_shape = ((nh, d), (nh, 32), (1, nh)) if q_norm else ((1,), (1,), (1,))

    @T.macro
    def body(q, kc, vc, out, n, grid, w, table, part, kw, counters):  # n keys (int32), in a grid of `grid` chunk
        # slots per kv head; part (hq, max_chunks, dv + 2): each chunk's unnormalized output, then its max m and
        # sum l; counters (Hkv,): ``sync``'s
        with T.sblock("root"):
            T.reads()
            T.writes()
            for bx in T.thread_binding(hkv * grid, thread="blockIdx.x"):
                with T.sblock("chunk"):
                    T.reads()
                    T.writes()
                    # q as (g, sl, ds + 1): a padded row per slice, so that the 8 slices a warp reads
                    # fall in distinct banks (flat: compaction would drop a padding column)
                    qs = T.sblock_alloc_buffer((g * sl * (ds + 1),), F32, scope="shared")
                    pp = T.sblock_alloc_buffer((g, chunk, sl), F32, scope="shared")  # partial dot products
                    ps = T.sblock_alloc_buffer((g, chunk), F32, scope="shared")
                    mp = T.sblock_alloc_buffer((g, nmg), F32, scope="shared")
                    ms = T.sblock_alloc_buffer((g,), F32, scope="shared")
                    op = T.sblock_alloc_buffer((rq, g, dv), F32, scope="shared")  # p @ V per key group
                    lp = T.sblock_alloc_buffer((rq, g), F32, scope="shared")
                    qr = T.sblock_alloc_buffer(norm_shape[0], F32, scope="shared")  # a fused q norm's
                    qpart = T.sblock_alloc_buffer(norm_shape[1], F32, scope="shared")  # raw q and sums
                    qsum = T.sblock_alloc_buffer(norm_shape[2], F32, scope="shared")
                    kn = T.sblock_alloc_buffer((d,) if appends else (1,), kdt, scope="shared")  # the step's key
                    vn = T.sblock_alloc_buffer((d,) if appends else (1,), vdt, scope="shared")  # and value
                    # registers, per thread: its slice of a key row (scores) and its column of
                    # kq value rows (p @ V), loaded before anything else
                    kreg = T.sblock_alloc_buffer((nd, nt, ds), kdt, scope="local")
                    vreg = T.sblock_alloc_buffer((npv, nt, kq), vdt, scope="local")
                    xreg = T.sblock_alloc_buffer((nqi, nt), F32, scope="local")  # its elements of q (x)
                    flag = T.sblock_alloc_buffer((1,), "int32", scope="shared")  # ``sync``: the count before ours
                    # two blocks per SM: at most 64 registers a thread (ptxas takes up to 125 else)
                    T.attr(0, "tirx.launch_bounds_min_blocks_per_sm", BLOCKS_PER_SM)
                    fl = T.sblock_alloc_buffer((1,), "int32", scope="local")
                    mnum = T.sblock_alloc_buffer(merge_shape[0], F32, scope="shared")  # ``sync``'s partial folds
                    mden = T.sblock_alloc_buffer(merge_shape[1], F32, scope="shared")
                    mmax = T.sblock_alloc_buffer(merge_shape[1], F32, scope="shared")
                    # chunk-major: the blocks of every kv head's live chunks come first, so in the
                    # static grid (graph) they are all dispatched before the idle slots past kv_len
                    h = bx % hkv
                    slot = bx // hkv
                    j0 = slot * chunk
                    live = j0 < n  # a slot past kv_len (static grid) idles
                    nk = T.min(n - j0, chunk)  # keys in this chunk
                    # an idle slot (static grid) runs no phase: a loop of 0 or 1 trips, as TVM places
                    # barriers inside a loop but not inside a condition
                    for _once in range(T.Select(live, 1, 0)):
                        # every load from global memory first (q, K, V), so that their latencies
                        # overlap each other and the query's staging: no barrier comes before them
                        load_q(q, xreg, h)
                        for it in T.unroll(nd):  # the scores' mapping: thread (key, slice)
                            for tx in T.thread_binding(nt, thread="threadIdx.x"):
                                if it * nt + tx < chunk * sl:
                                    with T.sblock("k_load"):
                                        T.reads()
                                        T.writes()
                                        row = T.min(j0 + (it * nt + tx) // sl, n - 1)
                                        s = (it * nt + tx) % sl
                                        if even:
                                            for c in T.unroll(ds // vk):
                                                for u in T.vectorized(vk):
                                                    kreg[it, tx, c * vk + u] = kc[row, h, s * ds + c * vk + u]
                                        else:
                                            for e in T.unroll(ds):  # (q is 0 past d)
                                                kreg[it, tx, e] = kc[row, h, T.min(s * ds + e, d - 1)]
                        for it in T.unroll(npv):  # p @ V's mapping: thread (key group, column)
                            for tx in T.thread_binding(nt, thread="threadIdx.x"):
                                if it * nt + tx < rq * dv:
                                    for jj in T.unroll(kq):
                                        vreg[it, tx, jj] = vc[T.min(j0 + T.min((it * nt + tx) // dv * kq + jj, chunk - 1),
                                                                    n - 1), h, (it * nt + tx) % dv]
                        stage_q(xreg, qs, qr, qpart, qsum, h, w, table)
                        if appends:
                            append_row(q, qr, qsum, h, table, kc, vc, n, j0, kw, kn, vn)
                        for it in T.unroll(nd):  # scores: thread (key, slice)
                            for tx in T.thread_binding(nt, thread="threadIdx.x"):
                                if it * nt + tx < chunk * sl:
                                    with T.sblock("dot"):
                                        T.reads()
                                        T.writes()
                                        acc = T.sblock_alloc_buffer((1,), F32, scope="local")
                                        row = T.min(j0 + (it * nt + tx) // sl, n - 1)
                                        s = (it * nt + tx) % sl
                                        if appends:  # the step's key: loaded before this block wrote it, so from kn
                                            if row == n - 1:
                                                for e in T.unroll(ds):
                                                    kreg[it, tx, e] = kn[T.min(s * ds + e, d - 1)]
                                        for gi in T.unroll(g):
                                            acc[0] = T.float32(0)
                                            for e in T.unroll(ds):
                                                acc[0] = acc[0] + qs[(gi * sl + s) * (ds + 1) + e] * T.Cast(
                                                    F32, kreg[it, tx, e])
                                            pp[gi, (it * nt + tx) // sl, s] = acc[0]
                        for it in range(_ceil(g * chunk, nt)):  # sum the slices; mask keys past the chunk's nk
                            for tx in T.thread_binding(nt, thread="threadIdx.x"):
                                if it * nt + tx < g * chunk:
                                    with T.sblock("score"):
                                        T.reads()
                                        T.writes()
                                        acc = T.sblock_alloc_buffer((1,), F32, scope="local")
                                        acc[0] = T.float32(0)
                                        for s in T.unroll(sl):
                                            acc[0] = acc[0] + pp[(it * nt + tx) // chunk, (it * nt + tx) % chunk, s]
                                        ps[(it * nt + tx) // chunk, (it * nt + tx) % chunk] = T.if_then_else(
                                            (it * nt + tx) % chunk < nk, acc[0], T.float32(NEG))
                        for it in range(_ceil(g * nmg, nt)):  # the max per head: per group of keys, then of groups
                            for tx in T.thread_binding(nt, thread="threadIdx.x"):
                                if it * nt + tx < g * nmg:
                                    with T.sblock("max_part"):
                                        T.reads()
                                        T.writes()
                                        mx = T.sblock_alloc_buffer((1,), F32, scope="local")
                                        mx[0] = T.float32(NEG)
                                        for jj in T.unroll(MAX_GROUP):
                                            if (it * nt + tx) % nmg * MAX_GROUP + jj < chunk:
                                                mx[0] = T.max(mx[0], ps[(it * nt + tx) // nmg,
                                                                        (it * nt + tx) % nmg * MAX_GROUP + jj])
                                        mp[(it * nt + tx) // nmg, (it * nt + tx) % nmg] = mx[0]
                        for tx in T.thread_binding(nt, thread="threadIdx.x"):
                            if tx < g:
                                with T.sblock("max"):
                                    T.reads()
                                    T.writes()
                                    mx = T.sblock_alloc_buffer((1,), F32, scope="local")
                                    mx[0] = T.float32(NEG)
                                    for r in range(nmg):
                                        mx[0] = T.max(mx[0], mp[tx, r])
                                    ms[tx] = mx[0]
                        for it in range(_ceil(g * chunk, nt)):
                            for tx in T.thread_binding(nt, thread="threadIdx.x"):
                                if it * nt + tx < g * chunk:
                                    ps[(it * nt + tx) // chunk, (it * nt + tx) % chunk] = T.exp(
                                        ps[(it * nt + tx) // chunk, (it * nt + tx) % chunk] - ms[(it * nt + tx) // chunk])
                        for it in T.unroll(npv):  # p @ V: thread (key group, column)
                            for tx in T.thread_binding(nt, thread="threadIdx.x"):
                                if it * nt + tx < rq * dv:
                                    with T.sblock("pv"):
                                        T.reads()
                                        T.writes()
                                        acc = T.sblock_alloc_buffer((g,), F32, scope="local")
                                        lac = T.sblock_alloc_buffer((g,), F32, scope="local")
                                        r = (it * nt + tx) // dv
                                        e = (it * nt + tx) % dv
                                        if appends:  # the step's value (every read of row n - 1): from vn
                                            for jj in T.unroll(kq):
                                                if j0 + T.min(r * kq + jj, chunk - 1) >= n - 1:
                                                    vreg[it, tx, jj] = vn[e]
                                        for gi in T.unroll(g):
                                            acc[gi] = T.float32(0)
                                            lac[gi] = T.float32(0)
                                            for jj in T.unroll(kq):
                                                if r * kq + jj < chunk:
                                                    acc[gi] = acc[gi] + ps[gi, r * kq + jj] * T.Cast(
                                                        F32, vreg[it, tx, jj])
                                                    lac[gi] = lac[gi] + ps[gi, r * kq + jj]
                                            op[r, gi, e] = acc[gi]
                                            if e == 0:
                                                lp[r, gi] = lac[gi]
                        for it in range(_ceil(g * dv, nt)):  # the key groups' sums: the chunk's (o, m, l)
                            for tx in T.thread_binding(nt, thread="threadIdx.x"):
                                if it * nt + tx < g * dv:
                                    with T.sblock("combine"):
                                        T.reads()
                                        T.writes()
                                        acc = T.sblock_alloc_buffer((1,), F32, scope="local")
                                        gi = (it * nt + tx) // dv
                                        e = (it * nt + tx) % dv
                                        acc[0] = T.float32(0)
                                        for r in T.unroll(rq):
                                            acc[0] = acc[0] + op[r, gi, e]
                                        part[h * g + gi, slot, e] = acc[0]
                                        if e == 0:
                                            acc[0] = T.float32(0)
                                            for r in T.unroll(rq):
                                                acc[0] = acc[0] + lp[r, gi]
                                            part[h * g + gi, slot, dv + 1] = acc[0]
                                            part[h * g + gi, slot, dv] = ms[gi]
                                        if synced:
                                            T.cuda.thread_fence()  # visible device-wide before the count
                        if synced:
                            merge_last(part, out, h, (n + chunk - 1) // chunk, counters, flag, fl, mnum, mden, mmax)
            if not synced:  # a second kernel merges the chunks of each head
                merge_chunks(part, out, n)

    q_shape = (1, hq, d) if q_norm is None else (1, q_norm.cols)
    fused = q_norm is not None

    @T.macro
    def run(var_q, var_kc, var_vc, var_out, n, grid, w, table, part, kw=None, counters=None):
        # (w, table: q's stand-ins without q_norm; kw without append; counters without sync)
        q = T.match_buffer(var_q, q_shape, qdt)
        kc = T.match_buffer(var_kc, (cache_rows, hkv, d), kdt)
        vc = T.match_buffer(var_vc, (cache_rows, hkv, dv), vdt)
        out = T.match_buffer(var_out, (1, hq, dv), odt)
        body(q, kc, vc, out, n, grid, w if fused else q, table if fused else q, part, kw if appends else q,
             counters if synced else q)

    part_shape = (hq, max_chunks, dv + 2)
    if kv_len_tensor and part_shape != decode_scratch_shape(hq, dv, cache_rows):
        raise ValueError(f"{chunk} keys per block do not match the scratch lowering gives: {part_shape}")
    # the parameter orders are lowering's: buffers in operand order, then the output(s), then a
    # scalar. The static form's partial results go to its scratch output (planned by Relax, kept
    # by a CUDA graph); the other's to a global allocation (TVM's workspace, per launch)
    if append is not None:  # `kernels.append_attention`'s parameters
        wdt, rot, kwdt = q_norm.w_dtype, q_norm.rot, append.kw_dtype
        if sync:
            @T.prim_func(private=True, s_tir=True)
            def append_attention_synced(var_q: T.handle, var_kc: T.handle, var_vc: T.handle,
                                        kv_len: T.Buffer((1,), "int32"), w: T.Buffer((d,), wdt),
                                        table: T.Buffer((1, rot), F32), kw: T.Buffer((d,), kwdt),
                                        counters: T.Buffer((sync,), "int32"), var_out: T.handle,
                                        scratch: T.Buffer(part_shape, F32)):
                run(var_q, var_kc, var_vc, var_out, kv_len[0], max_chunks, w, table, scratch, kw, counters)

            return append_attention_synced

        if kv_len_tensor:
            @T.prim_func(private=True, s_tir=True)
            def append_attention_at(var_q: T.handle, var_kc: T.handle, var_vc: T.handle,
                                    kv_len: T.Buffer((1,), "int32"), w: T.Buffer((d,), wdt),
                                    table: T.Buffer((1, rot), F32), kw: T.Buffer((d,), kwdt), var_out: T.handle,
                                    scratch: T.Buffer(part_shape, F32)):
                run(var_q, var_kc, var_vc, var_out, kv_len[0], max_chunks, w, table, scratch, kw)

            return append_attention_at

        @T.prim_func(private=True, s_tir=True)
        def append_attention(var_q: T.handle, var_kc: T.handle, var_vc: T.handle, kv_len: T.int64,
                             w: T.Buffer((d,), wdt), table: T.Buffer((1, rot), F32), kw: T.Buffer((d,), kwdt),
                             var_out: T.handle):
            part = T.sblock_alloc_buffer(part_shape, F32)
            run(var_q, var_kc, var_vc, var_out, _i32(kv_len), _chunks(kv_len, chunk), w, table, part, kw)

        return append_attention

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
            run(var_q, var_kc, var_vc, var_out, _i32(kv_len), _chunks(kv_len, chunk), w, table, part)

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
        run(var_q, var_kc, var_vc, var_out, _i32(kv_len), _chunks(kv_len, chunk), None, None, part)

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
