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

ROWS = 4  # output features per register tile


def _lanes_dividing(k: int, lanes: int) -> int:
    while lanes > 1 and k % lanes:
        lanes //= 2
    return lanes


def linear_rows(func: tirx.PrimFunc, target: TargetDesc) -> s_tir.Schedule | None:
    sch = s_tir.Schedule(func)
    try:
        mm = sch.get_sblock("matmul")
    except Exception:  # noqa: BLE001  (not a linear kernel)
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
    try:
        epi = sch.get_sblock("epilogue")
    except Exception:  # noqa: BLE001
        return sch
    sch.reverse_compute_at(epi, i0)
    return sch
