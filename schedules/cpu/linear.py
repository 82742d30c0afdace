"""linear on CPU: weight-streaming register tiles, fp32 accumulation.

For y (T, N) = x (T, K) @ w (N, K)^T: split K into SIMD-wide chunks and rfactor them, so
each output keeps ``lanes`` partial sums in one vector register; give each core blocks of 4
output features (4 weight rows stream at once, reused across all T rows while they are in
cache), then sum the lanes and apply the epilogue (bias, residual, cast) right there.
At T=1 this is the GEMV that reached ~38 GB/s fp32 on AVX-512 (see docs/).
"""
from __future__ import annotations

from tvm import s_tir, tirx

from ...targets import TargetDesc
from ..kernels import ROW_TILE
from ..registry import find_block, find_blocks
from .prefetch import prefetch, stream_plan

ROWS = 4  # output features per register tile
ROW_BLOCK = 8  # row tiles per pass over the weights: their fp32 rows of x stay in L2
SPLIT_K = 4  # independent accumulator chains in the T=1 GEMV


def _lanes_dividing(k: int, lanes: int) -> int:
    while lanes > 1 and k % lanes:
        lanes //= 2
    return lanes


def linear_rows(func: tirx.PrimFunc, target: TargetDesc) -> s_tir.Schedule | None:
    sch = s_tir.Schedule(func)
    mm = find_block(sch, "matmul")
    if mm is None:  # not a linear kernel
        return None
    loops = sch.get_loops(mm)
    if len(loops) != 3:
        return None
    k_extent = sch.get(loops[2]).extent
    if not isinstance(k_extent, tirx.IntImm):
        return None
    lanes = _lanes_dividing(int(k_extent), 2 * target.vector_lanes)
    i, j, k = loops
    ko, ki = sch.split(k, [None, lanes])
    rf = sch.rfactor(ki, 0)
    i0, j0, ko0, ki0 = sch.get_loops(rf)
    jo, ji = sch.split(j0, [None, ROWS])
    sch.reorder(jo, i0, ko0, ji, ki0)
    sch.parallel(jo)
    sch.unroll(ji)
    if lanes > 1:
        sch.vectorize(ki0)
    sch.reverse_compute_at(mm, i0)
    epi = find_block(sch, "epilogue")
    if epi is None or find_block(sch, "sumsq") is not None:  # (a fused rms_norm's epilogue reads its sum too)
        return sch
    sch.reverse_compute_at(epi, i0)
    return sch


def linear_packed_rows(func: tirx.PrimFunc, target: TargetDesc) -> s_tir.Schedule | None:
    """linear_packed: each core takes blocks of B outputs.

    T > 1: x is converted to fp32 once ("xconv"), so the inner loop broadcasts its values
    straight from memory. For each block of ROW_BLOCK x ROW_TILE rows (their x rows stay in
    L2), every (K, B) weight panel streams past ROW_TILE rows at a time, accumulating a
    ROW_TILE x B tile in registers (6 x 2 vectors: 12 of AVX2's 16); the epilogue unblocks
    the tile right after.
    T = 1 (decode): the panel streams from memory once, with K split over SPLIT_K
    independent accumulators to hide FMA latency, asking for its cache lines PREFETCH_BYTES
    ahead (`prefetch.py`)."""
    sch = s_tir.Schedule(func)
    blocks = find_blocks(sch, "matmul", "epilogue")
    if blocks is None:  # not a packed linear kernel
        return None
    mm, epi = blocks
    i, jb, jj, k = sch.get_loops(mm)
    t, kk = sch.get(i).extent, sch.get(k).extent
    if isinstance(t, tirx.IntImm) and int(t) == 1 and int(kk) % SPLIT_K == 0:
        ko, ki = sch.split(k, [None, SPLIT_K])
        rf = sch.rfactor(ki, 2)  # rf (T, NB, SPLIT_K, B) partial sums
        ri, rjb, rjj, rko, rki = sch.get_loops(rf)
        sch.reorder(rjb, ri, rko, rki, rjj)
        sch.unroll(rki)
        sch.vectorize(rjj)
        sch.parallel(rjb)
        sch.reverse_compute_at(mm, ri)
        sch.reverse_compute_at(epi, ri)
        init = sch.decompose_reduction(rf, rko)
        sch.vectorize(sch.get_loops(init)[-1])
        return _prefetch_ahead(sch, _weights(sch, rf), (rjb, rko, rki))
    if not (isinstance(t, tirx.IntImm) and int(t) == 1):  # T = 1 reads x as is, no fp32 copy
        xi, xk = sch.get_loops(sch.get_sblock("xconv"))
        sch.parallel(xi)
        lanes = _lanes_dividing(int(kk), target.vector_lanes)
        if lanes > 1:  # vectorize SIMD-wide chunks; a whole-row vector (K lanes) takes LLVM ages
            sch.vectorize(sch.split(xk, [None, lanes])[1])
    ib, io, ii = sch.split(i, [None, ROW_BLOCK, ROW_TILE])  # ii exact: the kernel pads rows to ROW_TILE
    sch.reorder(ib, jb, io, k, ii, jj)
    acc = sch.cache_write(mm, 0, "local")  # the R x B tile lives in registers across k
    sch.reverse_compute_at(acc, io)
    sch.reverse_compute_at(epi, io)
    sch.unroll(ii)
    sch.vectorize(jj)
    sch.parallel(jb)
    init = sch.decompose_reduction(mm, k)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.vectorize(sch.get_loops(acc)[-1])
    return sch


def _weights(sch: s_tir.Schedule, block) -> tirx.Buffer:
    """The packed weight (N/B, K, B) that ``block`` reads: its only 3-d input."""
    return next(r.source for r in sch.get(block).reads if len(r.source.shape) == 3)


def _prefetch_ahead(sch: s_tir.Schedule, wp: tirx.Buffer, loops: tuple) -> tirx.PrimFunc | s_tir.Schedule:
    """Prefetch, at each k of the GEMV, the cache lines PREFETCH_BYTES ahead in the weights.

    Each core streams its panels front to back, (jb, k, :) after (jb, k - 1, :), so the address
    (jb, k + d, :) runs on into the next panel: one flat stream. (The schedule as it is if its
    loop nest is not the one expected.)"""
    jb_loop, ko_loop, ki_loop = (sch.get(lp) for lp in loops)
    jb, ko, ki = jb_loop.loop_var, ko_loop.loop_var, ki_loop.loop_var
    split, blk = int(ki_loop.extent), int(wp.shape[2])
    ahead, per_line = stream_plan(wp.dtype, blk)  # ahead in k: each k is one row of B weights
    row = [jb, ko * split + ki + ahead]
    lines = [tirx.Evaluate(prefetch(tirx.address_of(tirx.BufferLoad(wp, [*row, tirx.const(off, "int32")]))))
             for off in range(0, blk, per_line)]
    func = sch.mod["main"]
    body = _in_loop(func.body, ki, lambda inner: tirx.SeqStmt([*lines, inner]))
    return sch if body is None else func.with_body(body)


def _in_loop(stmt, var: tirx.Var, make):
    """``stmt`` with the body of the loop over ``var`` replaced by make(body), or None if no such
    loop. Rebuilds only the path down to it (TVM 0.27's Python has no IR mutator): scheduled
    kernels nest just loops, sequences and blocks."""
    if isinstance(stmt, tirx.For):
        body = make(stmt.body) if stmt.loop_var.same_as(var) else _in_loop(stmt.body, var, make)
        if body is None:
            return None
        return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, body, stmt.thread_binding, stmt.annotations)
    if isinstance(stmt, tirx.SeqStmt):
        for i, part in enumerate(stmt.seq):
            new = _in_loop(part, var, make)
            if new is not None:
                return tirx.SeqStmt([*stmt.seq[:i], new, *stmt.seq[i + 1:]])
        return None
    if isinstance(stmt, s_tir.SBlockRealize):
        b = stmt.block
        body = _in_loop(b.body, var, make)
        if body is None:
            return None
        return s_tir.SBlockRealize(stmt.iter_values, stmt.predicate, s_tir.SBlock(
            b.iter_vars, b.reads, b.writes, b.name_hint, body, b.init, b.alloc_buffers, b.match_buffers,
            b.annotations))
    return None
