"""Sampling on CUDA.

sample_token (greedy, temperature): the per-token scores in a grid of 256-thread blocks; then
the max of each slice of the vocabulary (a block of PART_THREADS threads per slice: a strided
part per thread, then a cross-thread reduction) and one block over the slices' maxima; then the
same for the lowest index holding the max (`kernels.sample_token`).

top_candidates (the artifact's `top_k` function): the TOP_K best logits and their token ids,
so that top-k / top-p sampling on the host reads 512 bytes instead of the whole row (600 KB
for Qwen3) and sorts 64 candidates instead of 151,936 (`engine/sampler.py`)."""
from __future__ import annotations

from tvm import s_tir, tirx

from ...targets import TargetDesc
from ..registry import find_blocks

THREADS = 1024
PART_THREADS = 256  # sample_token: threads per slice of the vocabulary
TOP_K = 64      # candidates top_candidates returns
BLOCKS = 64     # blocks of its first kernel
NO_TOKEN = 2**31 - 1  # the id of padding (never a token)


def sample_block(func: tirx.PrimFunc, target: TargetDesc) -> s_tir.Schedule | None:
    sch = s_tir.Schedule(func)
    blocks = find_blocks(sch, "scores", "part_max", "max", "part_argmax", "argmax")
    if blocks is None:  # not a sampling kernel
        return None
    scores, pmax, mx, pidx, am = blocks
    i, j = sch.get_loops(scores)
    bx, tx = sch.split(sch.fuse(i, j), [None, 256])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    for blk in (pmax, pidx):  # a block per slice of the vocabulary, a cross-thread reduction in it
        i, b, k = sch.get_loops(blk)
        _, tx = sch.split(k, [None, PART_THREADS])
        sch.bind(sch.fuse(i, b), "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
    for blk in (mx, am):  # over the slices: one block (one thread for a vocabulary of one slice)
        i, k = sch.get_loops(blk)
        sch.bind(i, "blockIdx.x")
        if int(sch.get(k).extent) > 1:
            _, tx = sch.split(k, [None, min(THREADS, _pow2(int(sch.get(k).extent)))])
            sch.bind(tx, "threadIdx.x")
    return sch


def _pow2(n):
    p = 1
    while p < n:
        p *= 2
    return p


def top_candidates(v: int, k: int = TOP_K, blocks: int | None = None) -> tirx.PrimFunc:
    """PrimFunc ``(z (1, v) f32, out (2, k) f32)``: the k largest logits, best first, ties by
    lower token id (numpy's stable order), in out[0], and their token ids (exact in f32 up to
    2^24) in out[1]. Two kernels: ``blocks`` blocks (BLOCKS for a real vocabulary) each sort
    their slice of z in shared memory (bitonic, 1024 threads, two compare-exchanges per thread
    and phase: all reads, a barrier, all writes) and keep its best k; then one block sorts
    those blocks * k. Padding sorts last, as the lowest float with id NO_TOKEN."""
    from tvm.script import tirx as T

    blocks = blocks or max(1, min(BLOCKS, v // k))  # (each block's slice holds at least k tokens)
    chunk = -(-v // blocks)
    n1 = max(_pow2(chunk), 2 * THREADS, _pow2(k))
    n2 = max(_pow2(blocks * k), 2 * THREADS)
    assert chunk >= k

    def first_slot(t, lg_stride):  # of compare-exchange t at stride 2^lg_stride
        return T.shift_left(T.shift_right(t, lg_stride), lg_stride + 1) + T.bitwise_and(t, T.shift_left(1, lg_stride) - 1)

    def trades(av, ai, bv, bi, i, ls):  # do slots i and i + stride trade places? A run that
        # sorts down (every run at the last size) wants the better one first, the others last
        b_better = tirx.any(bv > av, tirx.all(bv == av, bi < ai))
        down = T.bitwise_and(i, T.shift_left(1, ls + 1)) == 0
        return tirx.any(tirx.all(down, b_better), tirx.all(tirx.Not(down), tirx.Not(b_better)))

    @T.macro
    def sort(sv, si, log_n, pairs):  # bitonic, 2^log_n slots into descending value, ties by
        # ascending id; each thread compare-exchanges `pairs` pairs per phase
        at = T.sblock_alloc_buffer((pairs,), "int32", scope="local")  # a pair's first slot
        a_v = T.sblock_alloc_buffer((pairs,), "float32", scope="local")
        a_i = T.sblock_alloc_buffer((pairs,), "int32", scope="local")
        b_v = T.sblock_alloc_buffer((pairs,), "float32", scope="local")
        b_i = T.sblock_alloc_buffer((pairs,), "int32", scope="local")
        sw = T.sblock_alloc_buffer((pairs,), "int32", scope="local")  # 1: the pair trades places
        for ls in range(log_n):  # runs of 2^(ls + 1) elements
            for ss in range(ls + 1):  # pairs at stride 2^(ls - ss)
                for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                    with T.sblock("cmp"):
                        T.reads()
                        T.writes()
                        for p in range(pairs):  # every pair read first, then written: one barrier between
                            at[p] = first_slot(p * THREADS + tx, ls - ss)
                            a_v[p] = sv[at[p]]
                            a_i[p] = si[at[p]]
                            b_v[p] = sv[at[p] + T.shift_left(1, ls - ss)]
                            b_i[p] = si[at[p] + T.shift_left(1, ls - ss)]
                            sw[p] = T.Select(trades(a_v[p], a_i[p], b_v[p], b_i[p], at[p], ls), 1, 0)
                        for p in range(pairs):
                            sv[at[p]] = T.Select(sw[p] == 1, b_v[p], a_v[p])
                            si[at[p]] = T.Select(sw[p] == 1, b_i[p], a_i[p])
                            sv[at[p] + T.shift_left(1, ls - ss)] = T.Select(sw[p] == 1, a_v[p], b_v[p])
                            si[at[p] + T.shift_left(1, ls - ss)] = T.Select(sw[p] == 1, a_i[p], b_i[p])

    @T.macro
    def best(sv, si, n, b, valid, value, token):  # slots e < n: source element (b, e) where valid, else
        # padding; then sorted
        for it in range(n // THREADS):
            for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                with T.sblock("load"):
                    T.reads()
                    T.writes()
                    sv[it * THREADS + tx] = T.if_then_else(valid(b, it * THREADS + tx), value(b, it * THREADS + tx),
                                                           T.min_value("float32"))
                    si[it * THREADS + tx] = T.if_then_else(valid(b, it * THREADS + tx), token(b, it * THREADS + tx),
                                                           NO_TOKEN)
        sort(sv, si, n.bit_length() - 1, n // 2 // THREADS)

    def in_slice(b, e):  # element e of block b's slice of the row
        return tirx.all(e < chunk, b * chunk + e < v)

    @T.prim_func(private=True, s_tir=True)
    def top_k(z: T.Buffer((1, v), "float32"), out: T.Buffer((2, k), "float32")):
        with T.sblock("root"):
            T.reads()
            T.writes()
            part_v = T.sblock_alloc_buffer((blocks * k,), "float32")
            part_i = T.sblock_alloc_buffer((blocks * k,), "int32")
            for bx in T.thread_binding(blocks, thread="blockIdx.x"):
                with T.sblock("slice"):
                    T.reads()
                    T.writes()
                    sv = T.sblock_alloc_buffer((n1,), "float32", scope="shared")
                    si = T.sblock_alloc_buffer((n1,), "int32", scope="shared")
                    best(sv, si, n1, bx, in_slice, lambda b, e: z[0, T.min(b * chunk + e, v - 1)],
                         lambda b, e: b * chunk + e)
                    for tx in T.thread_binding(THREADS, thread="threadIdx.x"):  # (every k-th thread
                        part_v[bx * k + tx % k] = sv[tx % k]  # writes the same element)
                        part_i[bx * k + tx % k] = si[tx % k]
            for bx in T.thread_binding(1, thread="blockIdx.x"):
                with T.sblock("merge"):
                    T.reads()
                    T.writes()
                    sv = T.sblock_alloc_buffer((n2,), "float32", scope="shared")
                    si = T.sblock_alloc_buffer((n2,), "int32", scope="shared")
                    best(sv, si, n2, 0, lambda b, e: e < blocks * k, lambda b, e: part_v[T.min(e, blocks * k - 1)],
                         lambda b, e: part_i[T.min(e, blocks * k - 1)])
                    for tx in T.thread_binding(THREADS, thread="threadIdx.x"):
                        out[0, tx % k] = sv[tx % k]
                        out[1, tx % k] = T.Cast("float32", si[tx % k])

    return top_k
