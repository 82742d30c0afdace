"""linear with one row (decode, the last-token LM head) on CUDA: a GEMV that streams the
weights in 16-byte loads.

    block: ROWS output rows (threadIdx.y), L = 32 or 64 lanes per row (threadIdx.x)
    lane l: 16-byte chunks l, l + L, l + 2L, ... of its weight row, up to DEPTH chunks loaded
        before they are used, accumulated in fp32
    then a sum over the lanes (warp shuffles), and the epilogue (bias, residual, cast) in place

Against dlight's GEMV (the baseline, still used where this rule declines): its weight loads are
4 bytes wide and its blocks hold 16 rows of 512 threads, so a 1024-row projection is 64 blocks
for 132 SMs; here a block is 4 rows (256 blocks for 1024 rows, each row read by two warps), and each
load instruction moves 16 bytes. Needs K to be a multiple of 32 (one chunk per lane); the
chunk shrinks from 16 bytes while K does not split evenly. Not yet timed on a GPU: the
bundle of bench/gpu benchmarks dlight's GEMV beside it.
"""
from __future__ import annotations

from tvm import s_tir, tirx
from ...targets import TargetDesc
from ..kernels import linear_operands

ROWS = 4    # output rows per block
LANES = 32  # threads per row: one warp, or two where there are few rows (below)
FEW_ROWS = 4096  # with fewer rows than this, two warps per row keep enough loads in flight
DEPTH = 8   # weight chunks loaded before use, per thread (at most)


def _chunk(k: int, itemsize: int, lanes: int) -> int | None:
    """Elements per lane and step: 16 bytes where K splits evenly over the lanes, else less."""
    return next((v for v in (16 // itemsize, 8 // itemsize, 4 // itemsize, 2 // itemsize, 1)
                 if v >= 1 and k % (lanes * v) == 0), None)


def gemv(func: tirx.PrimFunc, target: TargetDesc) -> s_tir.Schedule | None:
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
    if n < FEW_ROWS and _chunk(k, itemsize, 2 * lanes) == vec:
        lanes *= 2
    sch = s_tir.Schedule(func)
    try:
        mm = sch.get_sblock("matmul")
    except Exception:  # noqa: BLE001  (not a plain linear)
        return None
    _, j, r = sch.get_loops(mm)
    ko, lane, kv = sch.split(r, [None, lanes, vec])
    part = sch.rfactor(lane, 0)  # part[lane, 0, j]: one lane's partial sum
    _, j, ko, lane, kv = sch.get_loops(part)
    jb, jr = sch.split(j, [None, ROWS])
    sch.reorder(jb, jr, lane, ko, kv)
    sch.bind(jb, "blockIdx.x")
    sch.bind(jr, "threadIdx.y")
    sch.bind(lane, "threadIdx.x")
    n_ko = k // (lanes * vec)
    depth = next(d for d in (DEPTH, 4, 2, 1) if n_ko % d == 0)
    koo, ko = sch.split(ko, [None, depth])
    # `depth` weight chunks are loaded before any is used, so that many loads are in flight per
    # lane; the copy is indexed by the block's own iterators (reindex), so it compacts per thread
    wl = sch.reindex(part, ("read", 1))
    sch.set_scope(wl, 0, "local")
    sch.compute_at(wl, koo)
    loops = sch.get_loops(wl)
    copy = loops[[sch.get(q).same_as(sch.get(koo)) for q in loops].index(True) + 1:]
    if vec > 1:
        sch.vectorize(copy[-1])
        copy = copy[:-1]
    for q in copy:
        sch.unroll(q)
    if vec > 1 and not func.attrs.get("act", ""):  # (with a fused swiglu, x is read at two places)
        xl = sch.cache_read(part, 0, "local")
        sch.compute_at(xl, ko)
        sch.vectorize(sch.get_loops(xl)[-1])
    sch.unroll(ko)
    sch.set_scope(part, 0, "local")
    sch.decompose_reduction(part, koo)
    # the sum over lanes (lowered to warp shuffles), then the epilogue, per row
    sch.reverse_compute_at(mm, jr)
    sch.bind(sch.get_loops(mm)[-1], "threadIdx.x")
    consumers = sch.get_consumers(mm)
    if consumers:  # else mm writes the output itself
        sch.set_scope(mm, 0, "local")
    for blk in consumers:
        sch.reverse_compute_at(blk, jr)
    return sch
