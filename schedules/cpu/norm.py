"""rms_norm and layer_norm on CPU: one row per iteration, rows across cores; a row's sums are
computed right before it is normalized, while the row is in L1."""
from __future__ import annotations

from tvm import s_tir, tirx

from ...targets import TargetDesc
from .generic import is_small, spatial_loops
from ..registry import find_blocks


def rms_norm_rows(func: tirx.PrimFunc, target: TargetDesc) -> s_tir.Schedule | None:
    return _rows(func, ("sumsq",))


def layer_norm_rows(func: tirx.PrimFunc, target: TargetDesc) -> s_tir.Schedule | None:
    return _rows(func, ("mean", "var"))


def _rows(func: tirx.PrimFunc, sums: tuple[str, ...]) -> s_tir.Schedule | None:
    sch = s_tir.Schedule(func)
    blocks = find_blocks(sch, *sums, "norm")
    if blocks is None:
        return None
    *reductions, norm = blocks
    rows = spatial_loops(sch, norm)[:-1]
    if not rows:
        return None
    row = sch.fuse(*rows) if len(rows) > 1 else rows[0]
    if not is_small(sch, spatial_loops(sch, norm)):
        sch.parallel(row)
    for r in reversed(reductions):  # var reads mean: compute_at the consumer first
        sch.compute_at(r, row)
    return sch
