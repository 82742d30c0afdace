"""Fallback for any CPU kernel: every block's data-parallel loops run on all cores."""
from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV

from ...targets import TargetDesc


def spatial_loops(sch: s_tir.Schedule, block: SBlockRV) -> list[LoopRV]:
    """The block's leading loops over data-parallel iters (TE nests put them first)."""
    n = 0
    for iv in sch.get(block).iter_vars:
        if iv.iter_type != tirx.IterVar.DataPar:
            break
        n += 1
    return list(sch.get_loops(block))[:n]


def parallel_outer(func: tirx.PrimFunc, target: TargetDesc) -> s_tir.Schedule | None:
    sch = s_tir.Schedule(func)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        loops = spatial_loops(sch, block)
        if len(loops) > 2:  # keep the innermost for LLVM to vectorize
            loops = loops[:-1]
        if loops:
            sch.parallel(sch.fuse(*loops) if len(loops) > 1 else loops[0])
    return sch
