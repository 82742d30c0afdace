"""kv_append on CUDA: one block per (new row, kv head), one thread per element of the head.

With a fused norm_rotary (Qwen3's keys, `kernels.kv_append` with ``norm``) the block first sums
the head's squares across its threads (an all-reduce: warp shuffles, then shared memory), and
each thread then writes its element normalized and rotated; the rotation's partner element is
read back from x (an L1 hit). Without it, each thread copies (and casts) one element. dlight's
Fallback, the baseline, would run the norm's reduction serially per thread.
"""
from __future__ import annotations

from tvm import s_tir, tirx

from ...targets import TargetDesc
from ..registry import find_block

MAX_THREADS = 1024


def kv_append_rows(func: tirx.PrimFunc, target: TargetDesc) -> s_tir.Schedule | None:
    sch = s_tir.Schedule(func)
    ap = find_block(sch, "append")
    if ap is None:  # not a kv_append kernel
        return None
    loops = sch.get_loops(ap)
    if len(loops) != 3 or not isinstance(sch.get(loops[2]).extent, tirx.IntImm):
        return None
    d = int(sch.get(loops[2]).extent)
    if d > MAX_THREADS:
        return None
    row_head = sch.fuse(loops[0], loops[1])
    sch.bind(row_head, "blockIdx.x")
    sch.bind(loops[2], "threadIdx.x")
    ss = find_block(sch, "sumsq")
    if ss is None:  # a plain copy
        return sch
    sch.compute_at(ss, row_head)
    sch.bind(sch.get_loops(ss)[-1], "threadIdx.x")
    sch.set_scope(ss, 0, "local")
    return sch
