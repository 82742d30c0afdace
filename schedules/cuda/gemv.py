"""linear with one row (decode, the last-token LM head) on CUDA: a GEMV that streams the
weights in 16-byte loads.

    block: ROWS thread rows (threadIdx.y) of L = 32 or 64 lanes (threadIdx.x); each thread row
        computes R consecutive output rows (`rows_per_thread`: 4 or 2 where the grid keeps
        MIN_BLOCKS blocks, else 1), so a block covers ROWS * R rows
    lane l: 16-byte chunks l, l + L, l + 2L, ... of its R weight rows, loaded in equal groups
        of at most AHEAD chunks over the R rows before any is used (`loads_ahead`; a last,
        shorter group guarded), each chunk of x loaded once for the R rows, accumulated in fp32
    then a sum over the lanes per row (warp shuffles), and the epilogue (bias, residual, cast)

A fused rms_norm (decode's q+k+v and gate+up projections and the LM head,
`passes.fuse_norm_linear`) needs no prologue: `kernels.linear` computes it as ((x * g) @ w^T)
scaled by the row's 1 / rms, so the lanes load x's and g's chunks beside the weights', and sum
x^2 after the products (a warp all-reduce per row). Nothing waits before the first weight load:
no reduction, no barrier. (Until 2026-12-05 the block summed x^2 and wrote rms_norm(x) to shared
memory first, two barriers and a round trip to L2 before the weights could stream.) The extra
chunks of x and g in registers take a thread with 4 rows past 48 registers at 8 chunks ahead
(54: 9 blocks of 128 threads per SM, and Qwen3-4B's gate+up, 1216 blocks, past one wave of
1188), so such a thread loads 4 ahead (44 registers; run 3 timed 4 and 8 ahead equal there).

swiglu of the output (decode's gate+up projection, `passes.fuse_linear_swiglu`, out_act):
the kernel's row j is weight row (j % 2) * N/2 + j // 2, a gate row and then its up row, and a
thread takes an even number of rows, so each output's two sums meet in one thread's epilogue,
which writes silu(gate) * up (N/2 floats; the down projection then reads a plain x). Same
registers as without it at Qwen3-4B's shapes (44), half the stores.

A fused swiglu(x) (the down projection, `passes.fuse_swiglu_linear`, now only where the gate+up
linear could not take it) is computed once per block into shared memory, from which every row
reads its chunks (`_x_into_shared`): one sigmoid per element and block, not per element and
row. At Qwen3-4B's shapes that is 78 KB read from L2 by each of 640 blocks, with a barrier,
before the weights stream (39 KB of shared memory per block). Where K does not split over the
block's threads, each row's lanes compute it for their own chunks. Where all of a lane's
chunks fit in one group (Qwen3-0.6B's K = 3072), they are loaded before the prologue, so that
the weights are in flight while it runs.

On an H200 (2026-12-04, bench/gpu/kernel_bench.py, alone, launch included) at Qwen3-4B's
shapes: q+k+v 11.1 us, o 8.6, gate+up 27.9, down 17.6, LM head 179.6 (4.3 TB/s), against
dlight's GEMV at 12.2, 12.0, 31.6, 24.0 and 203.8 (its loads are 4 bytes wide, its blocks 16
rows of 512 threads). One row per thread with 8 then 2 chunks ahead (before `loads_ahead`) ran
gate+up at 30.1 us; rows per thread 1/2/4 and 4/8/16 chunks ahead all fall within 10%. Needs
K to be a multiple of 32 (one chunk per lane); the chunk shrinks from 16 bytes while K does
not split evenly.
"""
from __future__ import annotations

from typing import NamedTuple

from tvm import s_tir, tirx
from ...targets import TargetDesc
from ..kernels import linear_operands
from ..registry import find_block
from .pdl import l2_prefetch

ROWS = 4    # threads per block along threadIdx.y (each a group of LANES lanes)
LANES = 32  # threads per row: one warp, or two where there are few rows (below)
FEW_ROWS = 4096  # with fewer rows than this, two warps per row keep enough loads in flight
AHEAD = 8   # weight chunks a thread loads before using any, over all of its rows (at most)
MIN_BLOCKS = 512  # a thread takes 4 or 2 rows while the grid keeps this many blocks


def rows_per_thread(n: int) -> int:
    """Rows each thread multiplies (sharing its chunk of x): 4 or 2 where the grid keeps
    MIN_BLOCKS blocks, else 1. More rows per block spread a fused prologue (computed once per
    block) and the reads of x over more weight bytes."""
    return next((r for r in (4, 2) if -(-n // (ROWS * r)) >= MIN_BLOCKS), 1)


def loads_ahead(n_ko: int, rows: int, ahead: int = AHEAD) -> int:
    """Chunks per row loaded before use: a lane's n_ko chunks in equal groups (the last one
    guarded) of at most ahead // rows. Unequal groups cost: at Qwen3-4B's K = 2560 (10 chunks),
    8 then 2 ran at 30.1 us on the H200 where 4 + 4 + 2 or all 10 ran at 27.8."""
    most = max(1, ahead // rows)
    groups = -(-n_ko // most)
    return -(-n_ko // groups)


def _chunk(k: int, itemsize: int, lanes: int) -> int | None:
    """Elements per lane and step: 16 bytes where K splits evenly over the lanes, else less."""
    return next((v for v in (16 // itemsize, 8 // itemsize, 4 // itemsize, 2 // itemsize, 1)
                 if v >= 1 and k % (lanes * v) == 0), None)


class Plan(NamedTuple):
    """How `gemv` cuts one linear: N rows of K weights of ``itemsize`` bytes; ``lanes`` threads
    per row, ``vec`` elements per load, ``rows`` rows per thread, ``depth`` chunks per row loaded
    before any is used."""
    n: int
    k: int
    itemsize: int
    lanes: int
    vec: int
    rows: int
    depth: int

    @property
    def rows_per_block(self) -> int:
        return ROWS * self.rows

    @property
    def first_bytes(self) -> int:
        """The bytes at the start of each row that its lanes load first (their first group)."""
        return self.depth * self.lanes * self.vec * self.itemsize


def plan(func: tirx.PrimFunc, rows: int | None = None, ahead: int | None = None,
         warps_per_row: int | None = None) -> Plan | None:
    """`gemv`'s cut of ``func`` (the knobs as there), or None where the rule does not apply."""
    ops = linear_operands(func)
    if ops is None:
        return None
    x, w = ops[0], ops[1]
    if len(x.shape) != 2 or len(w.shape) != 2 or not all(isinstance(d, tirx.IntImm) for d in (*x.shape, *w.shape)):
        return None
    if int(x.shape[0]) != 1:
        return None
    n, k = int(w.shape[0]), int(w.shape[1])
    itemsize = {"float32": 4, "bfloat16": 2, "float16": 2}.get(str(w.dtype))
    if itemsize is None:
        return None
    lanes = LANES
    vec = _chunk(k, itemsize, lanes)
    if vec is None:
        return None
    if warps_per_row is None:
        warps_per_row = 2 if n < FEW_ROWS and _chunk(k, itemsize, 2 * lanes) == vec else 1
    if warps_per_row > 1:
        lanes *= warps_per_row
        vec = _chunk(k, itemsize, lanes)
        if vec is None:
            return None
    rows = rows or rows_per_thread(n)
    if _paired(func):  # a thread's rows come in (gate, up) pairs
        rows += rows % 2
    if ahead is None:  # (x's and g's chunks sit in registers beside the weights': module docstring)
        ahead = AHEAD // 2 if func.attrs.get("norm", False) and rows == 4 else AHEAD
    return Plan(n, k, itemsize, lanes, vec, rows, loads_ahead(k // (lanes * vec), rows, ahead))


def gemv(func: tirx.PrimFunc, target: TargetDesc, rows: int | None = None,
         ahead: int | None = None, warps_per_row: int | None = None) -> s_tir.Schedule | None:
    """The schedule, or None where this rule does not apply. ``rows`` per thread (default
    `rows_per_thread`), ``ahead`` (AHEAD, or AHEAD // 2 for 4 rows with a fused norm) and
    ``warps_per_row`` (default: 2 below FEW_ROWS rows where K splits as evenly over them, else
    1) are the knobs bench/gpu/kernel_bench.py varies."""
    p = plan(func, rows, ahead, warps_per_row)
    return None if p is None else _schedule(func, p)


def _schedule(func: tirx.PrimFunc, p: Plan) -> s_tir.Schedule | None:
    """`gemv`'s schedule of ``func`` cut as ``p`` says (None for a linear without a plain "matmul")."""
    k, lanes, vec, rows, depth = p.k, p.lanes, p.vec, p.rows, p.depth
    x, w, extra, _ = linear_operands(func)
    n_ko = k // (lanes * vec)
    norm, act = bool(func.attrs.get("norm", False)), bool(func.attrs.get("act", ""))
    sch = s_tir.Schedule(func)
    mm = find_block(sch, "matmul")
    if mm is None:  # not a plain linear
        return None
    _, j, r = sch.get_loops(mm)
    ko, lane, kv = sch.split(r, [None, lanes, vec])
    part = sch.rfactor(lane, 0)  # part[lane, 0, j]: one lane's partial sum
    _, j, ko, lane, kv = sch.get_loops(part)
    jb, jr, jw = sch.split(j, [None, ROWS, rows])
    sch.reorder(jb, jr, lane, ko, jw, kv)  # a chunk of x serves the thread's `rows` rows
    sch.bind(jb, "blockIdx.x")
    sch.bind(jr, "threadIdx.y")
    sch.bind(lane, "threadIdx.x")
    koo, ko = sch.split(ko, [None, depth])
    # a fused swiglu(x) (`kernels.linear`) is computed once per block into shared memory where K
    # splits over the block's threads, else by each row's lanes for their own chunks. A fused
    # rms_norm needs no prologue: the lanes multiply x * g, and the row's 1 / rms scales the sums
    prologue = "x_act" if act else None
    per_block = prologue is not None and k % (ROWS * lanes) == 0
    # `depth` weight chunks are loaded before any is used, so that many loads are in flight per
    # lane (where depth does not divide the chunks, the last step's extra loads are guarded
    # off); the copy is indexed by the block's own iterators (reindex), so it compacts per thread
    wl = sch.reindex(part, ("read", _read_index(sch, part, w)))
    sch.set_scope(wl, 0, "local")
    if per_block and n_ko <= depth:
        # all of a lane's chunks fit in one group: load them first thing, so that the weights
        # stream in while the block computes the prologue
        sch.compute_at(wl, jb, index=0)
        lane_w, row_w, *copy = _below(sch, wl, jb)
        row_w, jw_w = sch.split(row_w, [ROWS, rows])
        copy = [jw_w, *copy]
        sch.bind(row_w, "threadIdx.y")
        sch.bind(lane_w, "threadIdx.x")
    else:
        sch.compute_at(wl, koo)
        copy = _below(sch, wl, koo)
    if vec > 1:
        sch.vectorize(copy[-1])
        copy = copy[:-1]
    for q in copy:
        sch.unroll(q)
    # this lane's chunk of x (or of the prologue's result) to registers
    xl = None
    if per_block:
        xs = _x_into_shared(sch, prologue, jb, lanes, k // (ROWS * lanes))
        xl = sch.cache_read(part, _read_index(sch, part, sch.get(xs).writes[0].source), "local",
                            consumer_blocks=[part])
        sch.compute_at(xl, ko)
    elif prologue is not None:
        xl = sch.get_sblock(prologue)
        sch.compute_at(xl, ko)
        sch.set_scope(xl, 0, "local")
    elif vec > 1:
        xl = sch.cache_read(part, _read_index(sch, part, x), "local", consumer_blocks=[part])
        sch.compute_at(xl, ko)
    if xl is not None and vec > 1:  # at most float4: CUDA has no wider fp32 vector arithmetic
        sch.vectorize(sch.split(sch.get_loops(xl)[-1], [None, min(vec, 4)])[-1])
    if norm and vec > 1:  # the norm's weights g: the lane's chunk, one load beside x's
        gl = sch.cache_read(part, _read_index(sch, part, extra[0]), "local", consumer_blocks=[part])
        sch.compute_at(gl, ko)
        sch.vectorize(sch.get_loops(gl)[-1])
    sch.unroll(ko)
    sch.unroll(jw)
    sch.set_scope(part, 0, "local")
    sch.decompose_reduction(part, koo)
    # the sum over lanes (lowered to warp shuffles), then the epilogue, per row
    sch.reverse_compute_at(mm, jr)
    below = _below(sch, mm, jr)  # the thread's rows and the lanes, in either order
    lane_sum = next(q for q in below if int(sch.get(q).extent) == lanes)
    sch.reorder(*(q for q in below if q != lane_sum), lane_sum)
    sch.bind(lane_sum, "threadIdx.x")
    if norm:  # each row's lanes sum the squares of x after their products: nothing waits for it
        _sum_squares(sch, jr, lanes, vec)
    consumers = sch.get_consumers(mm)
    if consumers:  # else mm writes the output itself
        sch.set_scope(mm, 0, "local")
    for blk in consumers:
        sch.reverse_compute_at(blk, jr)
    return sch


def _paired(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` is a linear with out_act="swiglu" (`kernels.linear`): its rows of products
    come in pairs, a gate row and its up row, and its epilogue writes silu(gate) * up."""
    return str(func.attrs.get("out_act", "")) == "swiglu"


def cuda_gemv(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc | None:
    """The registered rule: `gemv`'s kernel, marked with what each block loads first, the first
    group of each of its weight rows (`pdl.l2_prefetch`: where the kernel is launched with PDL,
    it prefetches those into L2 before it waits for the kernel before it)."""
    p = plan(func)
    sch = None if p is None else _schedule(func, p)
    if sch is None:
        return None
    prefetch = l2_prefetch(linear_operands(func)[1], p.rows_per_block, p.k * p.itemsize, p.first_bytes, p.n,
                           paired=_paired(func)) if p.rows_per_block <= p.lanes else {}  # (a lane per row prefetches)
    return sch.mod["main"].with_attrs(prefetch)


def _below(sch: s_tir.Schedule, block, loop) -> list:
    """The loops around ``block`` inside ``loop``."""
    loops = sch.get_loops(block)
    return loops[[sch.get(q).same_as(sch.get(loop)) for q in loops].index(True) + 1:]


def _read_index(sch: s_tir.Schedule, block, buf) -> int:
    return [r.source.same_as(buf) for r in sch.get(block).reads].index(True)


def _sum_squares(sch: s_tir.Schedule, at, lanes: int, vec: int) -> None:
    """A fused rms_norm's sum of squares of x (block "sumsq", `kernels.linear`) at the end of
    loop ``at`` (a row of ``lanes`` threads, threadIdx.x), ``vec`` elements per load, then an
    all-reduce across the lanes."""
    ss = sch.get_sblock("sumsq")
    sch.split(sch.get_loops(ss)[-1], [None, lanes, vec])
    part = sch.rfactor(sch.get_loops(ss)[-2], 0)  # (rfactor at the root: inside, it copies the outer loops)
    sch.reverse_compute_at(part, at)  # (x has no producer here: after everything else in ``at``)
    sch.reverse_compute_at(ss, at)
    thread, *steps = _below(sch, part, at)  # thread, [ko,] v (a ko of extent 1 is not there)
    sch.bind(thread, "threadIdx.x")
    if vec > 1:
        xl = sch.cache_read(part, 0, "local", consumer_blocks=[part])
        sch.compute_at(xl, steps[0] if len(steps) == 2 else thread)
        sch.vectorize(sch.split(sch.get_loops(xl)[-1], [None, min(vec, 4)])[-1])
    if len(steps) == 2:
        sch.unroll(steps[0])
    sch.set_scope(part, 0, "local")
    sch.bind(_below(sch, ss, at)[0], "threadIdx.x")
    sch.set_scope(ss, 0, "local")


def _x_into_shared(sch: s_tir.Schedule, name: str, jb, lanes: int, each: int):
    """A fused prologue's block ``name`` (swiglu(x), K floats) computed once per block by all its
    threads into shared memory, ``each`` elements per thread, from which every row's lanes read.
    Returns the block that fills the shared copy."""
    vx = next(v for v in (4, 2, 1) if each % v == 0)
    xs = sch.get_sblock(name)
    sch.compute_at(xs, jb)
    sch.set_scope(xs, 0, "shared")
    _, ty, tx, v = sch.split(sch.fuse(*_below(sch, xs, jb)), [None, ROWS, lanes, vx])
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")
    sch.vectorize(v)
    return xs
