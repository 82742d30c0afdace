"""sample_token on CUDA: the per-token scores in a grid of 256-thread blocks, then the max
and the argmax each as one block of THREADS threads (a strided slice per thread, then a
cross-thread reduction)."""
from __future__ import annotations

from tvm import s_tir, tirx

from ...targets import TargetDesc
from ..registry import find_blocks

THREADS = 1024


def sample_block(func: tirx.PrimFunc, target: TargetDesc) -> s_tir.Schedule | None:
    sch = s_tir.Schedule(func)
    blocks = find_blocks(sch, "scores", "max", "argmax")
    if blocks is None:  # not a sampling kernel
        return None
    scores, mx, am = blocks
    i, j = sch.get_loops(scores)
    bx, tx = sch.split(sch.fuse(i, j), [None, 256])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    for blk in (mx, am):
        i, k = sch.get_loops(blk)
        _, tx = sch.split(k, [None, THREADS])
        sch.bind(i, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
    return sch
