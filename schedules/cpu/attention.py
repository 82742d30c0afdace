"""attention / cache_attention on CPU.

One (query row, kv head) pair per task, every stage computed at that pair for the query heads
sharing the kv head (GQA), so key and value rows are read once and rows of scores never
leave L1: each key's dot product over D accumulates in one SIMD register (rfactor
over D, reduced per key); then max, exp and their sum over the key row; then the weighted
sum of value rows with the head dim in SIMD lanes, accumulated in a local tile, normalized
once at the end.
"""
from __future__ import annotations

from tvm import s_tir, tirx

from ...targets import TargetDesc
from ..registry import find_block


def attention_rows(func: tirx.PrimFunc, target: TargetDesc) -> s_tir.Schedule | None:
    names = ("scores", "max", "probs", "sum", "attn_out", "attn_norm")
    if find_block(s_tir.Schedule(func), names[0]) is None:  # not an attention kernel
        return None
    try:
        return _schedule(func, target, names, simd=True)
    except Exception:  # noqa: BLE001  degenerate static extents (e.g. head dim 1): no SIMD stages
        return _schedule(func, target, names, simd=False)


def _schedule(func: tirx.PrimFunc, target: TargetDesc, names: tuple[str, ...], simd: bool) -> s_tir.Schedule:
    sch = s_tir.Schedule(func)
    scores, mx, probs, den, acc, norm = (sch.get_sblock(n) for n in names)
    group = int(func.attrs["gqa_group"]) if func.attrs is not None and "gqa_group" in func.attrs else 1
    i, h = sch.get_loops(norm)[:2]
    if group > 1:  # one task per kv head: its key and value rows are read once for all query heads
        h, _ = sch.split(h, [None, group])
    ih = sch.fuse(i, h)
    sch.parallel(ih)
    for b in (acc, den, probs, mx, scores):
        sch.compute_at(b, ih)
    if simd:
        if group > 1:
            gi, j = sch.get_loops(scores)[-3:-1]
            sch.reorder(j, gi)  # each key row meets the group's query heads in turn
        _dot_products(sch, scores, target.vector_lanes)
        _weighted_sum(sch, acc, group, target.vector_lanes)
        sch.vectorize(sch.get_loops(norm)[-1])
    cast = find_block(sch, "cast")
    if cast is not None:  # (an fp32 output has no cast stage)
        sch.reverse_compute_at(cast, ih)
    return sch


def _dot_products(sch: s_tir.Schedule, scores, lanes: int) -> None:
    """scores[j] = q . k_j with D split into SIMD lanes that stay in one register per key."""
    j, d = sch.get_loops(scores)[-2:]
    d_extent = sch.get(d).extent
    if not (isinstance(d_extent, tirx.IntImm) and int(d_extent) % lanes == 0):
        return
    _, di = sch.split(d, [None, lanes])
    rf = sch.rfactor(di, 0)
    sch.compute_at(rf, j)
    lane, do = sch.get_loops(rf)[-2:]
    sch.reorder(do, lane)
    sch.vectorize(lane)
    init = sch.decompose_reduction(rf, do)
    sch.vectorize(sch.get_loops(init)[-1])


def _weighted_sum(sch: s_tir.Schedule, acc, group: int, lanes: int) -> None:
    """acc[g, e] += p[g, s] * v[s, e] over keys s, the head dim e in SIMD lanes of a local tile;
    each value row is read once for the group's query heads. The head dim goes in chunks of
    at most 8 registers for the whole group (a full 128-wide row per head would spill every
    accumulator on each key); each chunk runs over all the keys."""
    loops = sch.get_loops(acc)
    e, s = (loops[-2], loops[-1])
    e_extent = sch.get(e).extent
    chunk = lanes * max(1, 8 // group)
    if isinstance(e_extent, tirx.IntImm) and int(e_extent) % chunk == 0 and int(e_extent) > chunk:
        eo, e = sch.split(e, [None, chunk])
        sch.reorder(eo, s, *([loops[-3]] if group > 1 else []), e)
    elif group > 1:
        sch.reorder(s, loops[-3], e)
    else:
        sch.reorder(s, e)
    tile = sch.cache_write(acc, 0, "local")  # written back right after, still under the row task
    sch.vectorize(e)
    init = sch.decompose_reduction(acc, s)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.vectorize(sch.get_loops(tile)[-1])
