"""Fallback for any CPU kernel: every block's data-parallel loops run on all cores, unless
the kernel is so small (static shapes, e.g. decode) that waking the thread pool costs more
than the work."""
from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.schedule import LoopRV, SBlockRV

from ...targets import TargetDesc

SERIAL_BELOW = 1 << 15  # static output elements under which a kernel runs on one core


def spatial_loops(sch: s_tir.Schedule, block: SBlockRV) -> list[LoopRV]:
    """The block's leading loops over data-parallel iters (TE nests put them first)."""
    n = 0
    for iv in sch.get(block).iter_vars:
        if iv.iter_type != tirx.IterVar.DataPar:
            break
        n += 1
    return list(sch.get_loops(block))[:n]


def is_small(sch: s_tir.Schedule, loops: list[LoopRV]) -> bool:
    """All extents static and their product below SERIAL_BELOW."""
    total = 1
    for loop in loops:
        ext = sch.get(loop).extent
        if not isinstance(ext, tirx.IntImm):
            return False
        total *= int(ext)
    return total < SERIAL_BELOW


def parallel_outer(func: tirx.PrimFunc, target: TargetDesc) -> s_tir.Schedule | None:
    sch = s_tir.Schedule(func)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        loops = spatial_loops(sch, block)
        if is_small(sch, loops):
            continue
        if len(loops) > 2:  # keep the innermost for LLVM to vectorize
            loops = loops[:-1]
        if loops:
            sch.parallel(sch.fuse(*loops) if len(loops) > 1 else loops[0])
    return sch
