"""rms_norm on CPU: one row per iteration, rows across cores; the sum of squares is computed
right before its row is normalized, while the row is in L1."""
from __future__ import annotations

from tvm import s_tir, tirx

from ...targets import TargetDesc
from .generic import is_small, spatial_loops
from ..registry import find_blocks


def rms_norm_rows(func: tirx.PrimFunc, target: TargetDesc) -> s_tir.Schedule | None:
    sch = s_tir.Schedule(func)
    blocks = find_blocks(sch, "sumsq", "norm")
    if blocks is None:
        return None
    ss, norm = blocks
    rows = spatial_loops(sch, norm)[:-1]
    if not rows:
        return None
    row = sch.fuse(*rows) if len(rows) > 1 else rows[0]
    if not is_small(sch, spatial_loops(sch, norm)):
        sch.parallel(row)
    sch.compute_at(ss, row)
    return sch
