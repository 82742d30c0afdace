"""attention / cache_attention on CPU.

One (query row, head) pair per task, all stages computed at that pair: the dot products
over D run as SIMD partial sums (rfactor) across a key row, then max, sum and
probabilities over the key rows, then the weighted sum of value rows with the head dim in
SIMD lanes. Scores never leave L1.
"""
from __future__ import annotations

from tvm import s_tir, tirx

from ...targets import TargetDesc


def attention_rows(func: tirx.PrimFunc, target: TargetDesc) -> s_tir.Schedule | None:
    sch = s_tir.Schedule(func)
    try:
        scores, mx, den, probs, out = (sch.get_sblock(n) for n in ("scores", "max", "sum", "probs", "attn_out"))
    except Exception:  # noqa: BLE001  (not an attention kernel)
        return None
    i, h, e, rs = sch.get_loops(out)
    ih = sch.fuse(i, h)
    sch.reorder(ih, rs, e)
    sch.parallel(ih)
    for b in (probs, den, mx, scores):
        sch.compute_at(b, ih)
    d = sch.get_loops(scores)[-1]
    d_extent = sch.get(d).extent
    lanes = target.vector_lanes
    if isinstance(d_extent, tirx.IntImm) and int(d_extent) % lanes == 0:
        _, di = sch.split(d, [None, lanes])
        rf = sch.rfactor(di, 0)
        sch.vectorize(sch.get_loops(rf)[-1])
    sch.vectorize(sch.get_loops(out)[-1])
    sch.decompose_reduction(out, rs)
    try:
        sch.reverse_compute_at(sch.get_sblock("cast"), ih)
    except Exception:  # noqa: BLE001  (fp32 output: no cast stage)
        pass
    return sch
