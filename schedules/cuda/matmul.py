"""linear on CUDA tensor cores (prefill and forward: T rows; bf16 or fp16 weights, fp32 out).

Tensor cores multiply 16-bit inputs and accumulate in fp32; our activations are fp32. The
kernel is `kernels.linear_split`: x = hi + lo, both bf16, against the same weights, which
carries x to within 2^-16 of |x| per product instead of bf16's 2^-8 (fp32's is 2^-24) for twice
the multiplies, still far cheaper than fp32 FMAs. fp16 weights are split the same way while they
are staged (w = w_hi + w_lo in bf16, exactly), for three products instead of two: x stays in
bf16 parts because fp16's range cannot hold every fp32 activation. At matmul precision "medium"
(`passes.matmul_precision`) x is rounded to bf16 instead of split: half the products, and on
CUDA x then arrives in bf16, rounded by the op that produced it (`passes.round_activations`),
so it is copied as is. The schedule is WMMA 16x16x16 (bf16 x bf16 -> fp32), in the shape of
TVM dlight's fp16 MatmulTensorization, which has no bf16 path:

    C[t, n] tiles of BM x BN per block (64 x 64 where N is narrow enough for split-K, else
    128 x 128: `tiles_for`),
    warps in a WM x WN grid, each owning FM x FN fragments
    K in chunks of BK through shared memory (two stages, software pipelined); the fp32 -> bf16
    hi/lo split (and a fused swiglu, act="swiglu") happens while staging x, so x is read once
    per chunk and never stored split
    fragments: wmma.load_matrix_sync from shared memory, mma_sync into fp32 accumulators
    epilogue (bias, residual, output cast) fused into the store through shared memory

T is padded to BM inside the kernel (predicated loads and stores), so any prompt length runs
the same binary.

Split-K: where T and N alone give a short prompt few blocks (Qwen3-0.6B's o and down
projections, N = 1024: 32 blocks of 64 x 64 at 128 tokens, for 132 SMs; Qwen3-4B's o and down,
N = 2560: 20 blocks of 128 x 128), the reduction is cut into slices, a third grid dimension:
each block accumulates one slice of one tile into a workspace of partial sums, and a second
kernel adds them up with the epilogue. How many slices is decided at run time from T
(`slice_count`: at N = 1024, 8 up to 64 rows, 4 up to 128, ..., 1 from 257 on), so a long
prompt keeps one slice and pays only the partial sums' round trip.

One query row (decode) is our GEMV's, and fp32 weights stay with dlight's rules: they need fp32
multiplies.

`untensorized()` builds the same loop nest with the wmma blocks left as plain loops, so
tests run it serially on the CPU (tests/cuda_emulation.py); tensorize only swaps 16x16 tiles
for TVM's wmma intrinsics.
"""
from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass

import tvm
from tvm import s_tir, te, tirx

from ...targets import TargetDesc
from ..kernels import linear_operands, linear_split, same_params, split_reduction
from ..registry import find_block, precision

F32, BF16, F16 = "float32", "bfloat16", "float16"
MIN_ROWS = 16  # a static T below one fragment is left to the GEMV rules


@dataclass(frozen=True)
class Tiles:
    """Tile sizes, in 16x16x16 fragments: the block is (WM*FM) x (WN*FN) fragments of C."""
    warps_m: int = 4
    warps_n: int = 4
    frags_m: int = 2
    frags_n: int = 2
    chunk_k: int = 4  # fragments of K per shared-memory stage

    @property
    def rows(self) -> int:
        return 16 * self.warps_m * self.frags_m

    @property
    def cols(self) -> int:
        return 16 * self.warps_n * self.frags_n


BIG = Tiles()                        # 128 x 128, 16 warps
# 64 x 64, 4 warps. 32 of K per stage, not 64: with 64, the two stages of A and B (36 KiB,
# dynamic) and the C tile (16 KiB, static) passed the 48 KiB a block gets unless the kernel opts
# in, which TVM's runtime does only for 48 KiB of dynamic memory alone, and every launch failed
# on an H200 (limits.py); now 20 + 16 KiB
SMALL = Tiles(warps_m=2, warps_n=2, chunk_k=2)
WAVE_PROMPT = 128  # tiles are picked so that a prompt of this many tokens fills the GPU...
WAVE_BLOCKS = 132  # ...i.e. this many blocks (H100/H200 SMs)


def _blocks(t, n: int, tiles: Tiles):
    """Thread blocks of one slice: tiles of C for T rows (an int or an int64 expression)."""
    if isinstance(t, int):
        return -(-t // tiles.rows) * -(-n // tiles.cols)
    return tirx.floordiv(t + (tiles.rows - 1), tiles.rows) * ((n + tiles.cols - 1) // tiles.cols)


def tiles_for(n: int) -> Tiles:
    """T is only known at run time. The small tiles are for split-K: where N gives a 128-token
    prompt at most half a wave of small tiles (`slices_for`; Qwen3-0.6B's o and down, N =
    1024, and Qwen3-Coder-30B-A3B's o, N = 2048), their slices fill the GPU at short prompts.
    Everywhere else the big tiles: in run 3's kernel table (H200, 2026-12-04, matmul precision
    "high") they beat the small ones at every prompt length from 16 to 2048 tokens on each
    wider projection of Qwen3-0.6B and Qwen3-4B, e.g. Qwen3-4B's down 1015 us against 1424 at
    128 tokens, its q+k+v 418 against 581 at 512. (Until 2026-12-05 the big tiles were only
    for N giving a 128-token prompt a full wave of them: the LM head.)"""
    return SMALL if _half_a_wave(n, SMALL) else BIG


def _half_a_wave(n: int, tiles: Tiles) -> bool:
    """Whether N gives a 128-token prompt at most half a wave of ``tiles``: where split-K pays."""
    return 2 * _blocks(WAVE_PROMPT, n, tiles) <= WAVE_BLOCKS


def _one_block_per_sm(tiles: Tiles) -> bool:
    """Whether an SM holds one block of ``tiles`` at a time (the 128 x 128 tiles: 16 warps of
    about 100 registers, or the 64 KB C tile with fewer, bigger warps)."""
    return tiles.rows * tiles.cols >= 128 * 128


def _big_c(tiles: Tiles) -> bool:
    """Whether the fp32 C tile outgrows static shared memory (the 128 x 128 tiles)."""
    return tiles.rows * tiles.cols * 4 > 32 * 1024


# the pass option under which a kernel with ``async_stages`` must be compiled: without it TVM
# builds the pipeline's commit groups and waits but leaves the copies plain loads and stores
ASYNC_COPY = {"tirx.use_async_copy": True}

MAX_SLICES = 8   # split-K: at most this many slices of the reduction (the big tiles: BIG_SLICES)...
MIN_SLICE = 256  # ...each at least this long (in bf16 products: 4 stages of 64)
BIG_SLICES = 4   # (their partial sums are slices x T x N floats of workspace at the run-time count)


def slices_for(n: int, reduction: int, tiles: Tiles, cap: int | None = None) -> int:
    """The most slices the reduction (parts x K, `kernels.linear_split`) may be cut into: 1
    where a 128-token prompt already gets half a wave of blocks from T and N; else the largest
    power of two up to MAX_SLICES, BIG_SLICES for the big tiles (or ``cap``, which skips those
    tests), that cuts it into whole stages of MIN_SLICE or more. At Qwen3-0.6B's o and down
    projections (N = 1024: 32 blocks of 64 x 64 at 128 tokens) that is 8, at Qwen3-4B's
    (N = 2560: 20 blocks of 128 x 128) 4.

    The big tiles split since 2026-12-05 (session 22), by `_by_waves`, which fits run 3's kernel
    table (H200, 2026-12-04): there each of Qwen3-4B's GEMMs took about the same time at 16, 128
    and 512 rows (its o 128-167 us, its down 314-441 at "medium"), i.e. one wave of 20 to 80
    blocks, each as slow as its reduction is long. Not yet timed; kernel_bench's "no split-K" is
    the form before."""
    if cap is None and not _half_a_wave(n, tiles):
        return 1
    most = cap or (BIG_SLICES if _one_block_per_sm(tiles) else MAX_SLICES)
    while most > 1 and (reduction % (most * 16 * tiles.chunk_k) or reduction // most < MIN_SLICE):
        most //= 2
    return most


SLICE_COST = 16  # a slice's fixed work (pipeline fill, the C tile's store), in 1/SLICE_COST of a whole reduction


def slice_count(t: tirx.PrimExpr, n: int, tiles: Tiles, most: int) -> tirx.PrimExpr:
    """Slices used at run time, for T rows, a power of two up to ``most``. Small tiles: the
    largest that keeps the blocks within one wave (e.g. N = 1024 on 64 x 64 tiles: 8 up to 64
    rows, 4 up to 128, 2 up to 256, then 1; a long prompt has blocks enough, and only pays the
    partial sums' round trip through memory, T x N x 4 bytes each way). Big tiles, one block
    per SM (512 threads of about 100 registers): `_by_waves`."""
    blocks = _blocks(t, n, tiles)
    if _one_block_per_sm(tiles):
        return _by_waves(blocks, most)
    count = tirx.IntImm("int64", 1)
    s = 2
    while s <= most:
        count = tirx.Select(blocks * s <= WAVE_BLOCKS, tirx.IntImm("int64", s), count)
        s *= 2
    return count


def _by_waves(blocks: tirx.PrimExpr, most: int) -> tirx.PrimExpr:
    """The most slices s (a power of two up to ``most``) of ``blocks`` tiles (one block per SM)
    whose cost beats that of every fewer slices by a fifth (the partial sums' round trip):
    waves(s) x (1/s + 1/SLICE_COST) in whole reductions, waves(s) = ceil(s x blocks /
    WAVE_BLOCKS). E.g. Qwen3-4B's o and down projections (N = 2560: 20 column tiles): 160 blocks
    at 1024 rows take 2 waves of which the second keeps 28 of 132 SMs busy; 2 slices take 3
    waves of half the reduction (cost 2 x 1.06 against 3 x 0.56). At 128 rows 4 slices (80
    blocks), at 2048 none. (Each condition compares fixed candidates: a running best inside
    the comparisons would nest Selects that TVM's simplifier takes minutes over.)"""
    def waves(s: int) -> tirx.PrimExpr:
        return tirx.floordiv(blocks * s + (WAVE_BLOCKS - 1), WAVE_BLOCKS)

    def beats(s: int, fewer: int) -> tirx.PrimExpr:  # cost(s) * 6/5 < cost(fewer), times s * fewer * SLICE_COST
        return waves(s) * ((SLICE_COST + s) * fewer * 6) < waves(fewer) * ((SLICE_COST + fewer) * s * 5)

    count = tirx.IntImm("int64", 1)
    s = 2
    while s <= most:
        cond = functools.reduce(tirx.And, [beats(s, f) for f in _powers_below(s)])
        count = tirx.Select(cond, tirx.IntImm("int64", s), count)
        s *= 2
    return count


def _powers_below(s: int) -> list[int]:
    return [1 << i for i in range(s.bit_length() - 1)]


def stage_vectors(k: int, tiles: Tiles, x_dtype: str = F32) -> tuple[int, int]:
    """Elements of x and of the weights a thread copies per step into shared memory: 8 (16-byte
    loads and stores) for a 16-bit operand where K needs no padding (no guard, rows 16-byte
    aligned) and its stage splits evenly over the threads, else 4. fp32 x stays at 4: it is
    converted on the way, and 8 of its values would be 32 bytes. At Qwen3-4B's gate+up (SASS,
    sm_90a) the weights' 4 LDG.64 + 4 STS.64 per stage became 2 LDG.128 + 2 STS.128."""
    threads = tiles.warps_m * tiles.warps_n * 32

    def each(rows: int, dtype: str) -> int:
        wide = dtype != F32 and k % 16 == 0 and rows * 16 * tiles.chunk_k % (threads * 8) == 0
        return 8 if wide else 4

    return each(tiles.rows, x_dtype), each(tiles.cols, BF16)


_TENSORIZE = True


@contextlib.contextmanager
def untensorized():
    """Within: the rule leaves the wmma blocks as loops (for running schedules on the CPU)."""
    global _TENSORIZE
    _TENSORIZE = False
    try:
        yield
    finally:
        _TENSORIZE = True


def _intrinsics() -> dict[str, str]:
    """Registered names of the bf16 WMMA intrinsics (TVM registers only the f16/s8 ones)."""
    from tvm.s_tir import TensorIntrin
    from tvm.s_tir.tensor_intrin import cuda as ci

    specs = {"load_a": (ci.get_wmma_load_intrin, (16, 16, 16, BF16, "shared.dyn", False, False)),
             "load_b": (ci.get_wmma_load_intrin, (16, 16, 16, BF16, "shared.dyn", True, True)),
             "compute": (ci.get_wmma_sync_intrin, (16, 16, 16, BF16, F32, True)),
             "init": (ci.get_wmma_fill_intrin, (16, 16, 16, F32)),
             "store": (ci.get_wmma_store_intrin, (16, 16, 16, F32, "shared.dyn")),
             "store_static": (ci.get_wmma_store_intrin, (16, 16, 16, F32, "shared"))}
    names = {}
    for key, (make, args) in specs.items():
        names[key] = f"inference_pio_wmma_{key}_16x16x16_bf16_f32"
        try:
            TensorIntrin.get(names[key])
        except Exception:  # noqa: BLE001  (not registered yet)
            TensorIntrin.register(names[key], *make(*args))
    return names


def _i64(v) -> tirx.PrimExpr:
    return tirx.IntImm("int64", int(v)) if isinstance(v, (int, tirx.IntImm)) else v


def tensor_core_linear(func: tirx.PrimFunc, target: TargetDesc, tiles: Tiles | None = None,
                       max_slices: int | None = None, async_stages: int = 0) -> tirx.PrimFunc | None:
    """The split-bf16 tensor-core kernel for a linear with fp32 or bf16 x (T rows) and bf16 or
    fp16 weights. ``tiles`` and ``max_slices`` override `tiles_for` and `slices_for`,
    ``async_stages`` (2 or 3) copies bf16 weights with cp.async through that many stages where
    their copies are 16 bytes, and a bf16 x too where K needs no padding (`schedule`; fp16
    weights and fp32 x are converted on their way: registers). bench/gpu/kernel_bench.py times
    the alternatives."""
    ops = linear_operands(func)
    if ops is None:
        return None
    x, w, extra, out = ops
    t = x.shape[0]
    if x.dtype not in (F32, BF16) or w.dtype not in (BF16, F16) or len(x.shape) != 2 or len(w.shape) != 2:
        return None
    if isinstance(t, tirx.IntImm) and int(t) < MIN_ROWS:
        return None
    attrs = func.attrs
    bias, residual = bool(attrs.get("bias", False)), bool(attrs.get("residual", False))
    act = str(attrs.get("act", "")) or None
    if len(extra) != bias + residual or attrs.get("norm", False) or attrs.get("out_act", ""):
        return None  # (a fused rms_norm or swiglu of the output: decode's GEMV only)
    n, k = _i64(w.shape[0]), _i64(w.shape[1])
    tx = te.placeholder((t, _i64(x.shape[1])), x.dtype, name="x")
    tw = te.placeholder((n, k), w.dtype, name="w")
    te_extra = []
    if bias:
        te_extra.append(te.placeholder((n,), extra[0].dtype, name="bias"))
    if residual:
        te_extra.append(te.placeholder((t, n), extra[-1].dtype, name="residual"))
    tiles = tiles or tiles_for(int(n))
    # "medium": x rounded to bf16, not split (half the products); a bf16 x is its own rounding
    prec = "medium" if x.dtype == BF16 else precision(func)
    parts, kp = split_reduction(int(k), w.dtype, precision=prec)
    most = slices_for(int(n), parts * kp, tiles, max_slices)
    vectors = stage_vectors(int(k), tiles, x.dtype)
    stages = async_stages if vectors[1] == 8 and w.dtype == BF16 else 0
    async_x = bool(stages) and vectors[0] == 8 and int(k) % (16 * tiles.chunk_k) == 0
    while True:
        slices = (slice_count(_i64(t), int(n), tiles, most), most) if most > 1 else None
        y = linear_split(tx, tw, *te_extra, bias=bias, residual=residual, out_dtype=out.dtype, act=act, dt=BF16,
                         slices=slices, bit_round=not _TENSORIZE, precision=prec)  # (bit_round: emulated on a CPU)
        try:
            sch = schedule(te.create_prim_func([tx, tw, *te_extra, y]), tiles, tensorize=_TENSORIZE, vectors=vectors,
                           async_stages=stages, async_x=async_x)
            break
        except s_tir.ScheduleError:
            # TVM 0.27's cache_read fails the split-K form (region cover) where the column tiles
            # times the slices pass 128 (N = 1536 to 3072 at 8 slices: Qwen3-Coder-30B-A3B's o
            # projection, N = 2048): fewer slices
            if most == 1:
                raise
            most //= 2
    scheduled = _clamped_rows(sch.mod["main"]) if async_x else sch.mod["main"]
    return same_params(scheduled.without_attr("global_symbol"), func)


# the copy of a bf16 x into shared memory as pad_einsum leaves it: row v of the padded tile, zero
# past T (the column: an index expression without brackets)
_GUARDED_X = re.compile(r'T\.if_then_else\((v\d+) < t, x\[\1, ([^\[\]]+)\], T\.bfloat16\(0\.0\)\)')


def _clamped_rows(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with x's copy into shared memory reading row min(v, T - 1) instead of zeros past
    T: an unguarded 16-byte load, which TVM turns into cp.async (its InjectPTXAsyncCopy takes a
    guarded copy only element by element). The tile's rows past T then multiply a copy of row
    T - 1, and their results are never stored. TVM 0.27's Python API has no IR mutator, so the
    rewrite goes through the printed TVMScript; it must find the copy exactly once."""
    src, found = _GUARDED_X.subn(lambda m: f"x[T.min({m[1]}, t - T.int64(1)), {m[2]}]", func.script())
    if found != 1:
        raise ValueError(f"matmul: expected one guarded copy of x to clamp, found {found}")
    return tvm.script.from_source(src)


def schedule(func: tirx.PrimFunc, tiles: Tiles, tensorize: bool = True,
             vectors: tuple[int, int] = (4, 4), async_stages: int = 0, async_x: bool = False) -> s_tir.Schedule:
    """Tensor-core schedule of a PrimFunc with one C[i, j] += A[i, r] * B[j, r] block (16-bit A
    and B produced by spatial blocks that get inlined into the shared-memory loads) and
    optional spatial consumers (inlined into the store). Each thread copies ``vectors`` (of A,
    of B; 4 or 8: `stage_vectors`) elements per step into shared memory.

    By default both copies go through registers (global -> local -> shared), two stages
    software pipelined. ``async_stages`` (2 or 3; not yet timed, a kernel-table variant): B, the
    weights, is copied straight into shared memory with cp.async (no registers, no wait before
    the next copy is issued), through that many stages: a stage's weights are requested
    async_stages - 1 chunks of K before their products. x keeps its registers (it is converted
    on the way, or its copy is guarded by T, which TVM leaves a plain load and store) unless
    ``async_x``: a bf16 x whose copy `tensor_core_linear` then clamps to row T - 1
    (`_clamped_rows`) goes by cp.async too, every stage's copies one commit group, and the
    products of a chunk wait for its group. TVM's software pipeline builds the commit groups
    and waits, and under the pass option `ASYNC_COPY` the copies (16 bytes, zero-filled where
    guarded); 4 stages fail in its shared-memory planning (the fp32 C tile's alias)."""
    if async_stages not in (0, 2, 3):
        raise ValueError(f"async_stages must be 0, 2 or 3, not {async_stages}")
    from tvm.s_tir.dlight.gpu.matmul import (auto_inline_consumer_chain, auto_inline_consumers,
                                            auto_inline_producers, get_index_map)

    sch = s_tir.Schedule(func)
    mm = sch.get_sblock("matmul")
    # normalize to C[1, I, J] += A[1, I, K] * B[1, J, K] over reindexed copies
    ra, rb = sch.reindex(mm, ("read", 0)), sch.reindex(mm, ("read", 1))
    rc = sch.reindex(mm, ("write", 0))
    block_map, a_map, b_map, c_map = get_index_map(sch.get(mm))
    sch.transform_layout(ra, ("write", 0), a_map)
    sch.transform_layout(rb, ("write", 0), b_map)
    sch.transform_layout(rc, ("read", 0), c_map)
    sch.transform_block_layout(mm, block_map)
    tl = tiles
    sch.pad_einsum(mm, [1, tl.rows, tl.cols, 16 * tl.chunk_k])

    batch, i, j, k = sch.get_loops(mm)
    i, ii = sch.split(i, [None, 16])
    j, jj = sch.split(j, [None, 16])
    k, kk = sch.split(k, [None, 16])
    sch.reorder(i, j, k, ii, jj, kk)
    frag = mm                      # one 16x16x16 product: becomes mma_sync
    tile = sch.blockize(ii)        # the per-fragment block the caches attach to
    i0, i1, i2, i3 = sch.split(i, [None, 1, tl.warps_m, tl.frags_m])
    j0, j1, j2, j3 = sch.split(j, [1, None, tl.warps_n, tl.frags_n])
    k0, k1 = sch.split(k, [None, tl.chunk_k])
    sch.reorder(i0, j0, i1, j1, j2, i2, k0, k1, i3, j3)
    # the body of k0 once k1's pipeline is in: A to registers, A to shared, B to registers, B to
    # shared (with async_stages one async statement), then k1's prologue, body and epilogue
    # (fragment loads, products). Run in the order: the loads (and the async copy) of the next
    # chunk, k1's body on this one, the stores to shared memory, k1's prologue and epilogue
    if async_x:  # A, B to shared (both async), then k1's prologue, body and epilogue on a chunk
        # copied async_stages - 1 chunks before (its fragments double-buffered across chunks
        # instead, at stage s - 2, TVM's pipeline fails: no wmma fragment info)
        s = async_stages
        sch.annotate(k0, "software_pipeline_order", [0, 1, 2, 3, 4])
        sch.annotate(k0, "software_pipeline_stage", [0, 0, s - 1, s - 1, s - 1])
        sch.annotate(k0, "software_pipeline_async_stages", [0])
    elif async_stages:
        s = async_stages
        sch.annotate(k0, "software_pipeline_order", [0, 3, 1, 4, 2, 5])
        sch.annotate(k0, "software_pipeline_stage", [0, 0, 0, s - 2, s - 1, s - 1])
        sch.annotate(k0, "software_pipeline_async_stages", [0])
    else:
        sch.annotate(k0, "software_pipeline_order", [0, 3, 1, 4, 5, 2, 6])
        sch.annotate(k0, "software_pipeline_stage", [0, 0, 0, 0, 0, 1, 1])
    sch.annotate(k1, "software_pipeline_order", [0, 1, 2])
    sch.annotate(k1, "software_pipeline_stage", [0, 0, 1])
    sch.bind(batch, "blockIdx.z")
    sch.bind(sch.fuse(i0, j0), "blockIdx.x")
    sch.bind(sch.fuse(i1, j1), "blockIdx.y")
    warp = sch.fuse(j2, i2)
    sch.bind(warp, "threadIdx.y")
    warps = tl.warps_m * tl.warps_n

    for idx in (0, 1):  # A and B chunks to shared memory, 4 or 8 elements per thread per step
        stage = sch.cache_read(tile, idx, "shared.dyn")
        sch.compute_at(stage, k0)
        each = vectors[idx]
        _, ty, tx, vec = sch.split(sch.fuse(*sch.get_loops(stage)[-2:]), [None, warps, 32, each])
        sch.bind(tx, "threadIdx.x")
        sch.bind(ty, "threadIdx.y")
        sch.vectorize(vec)
        sch.storage_align(stage, 0, axis=-2, factor=16, offset=8)  # rows 8 elements apart: no bank conflicts
        if not (async_stages and idx == 1 or async_x and idx == 0):  # (cp.async copies straight to shared memory)
            sch.annotate(stage, "tirx.manifest_shared_memory_local_stage", 1)
        sch.annotate(stage, "double_buffer_scope", 0)
        auto_inline_producers(sch, stage)  # the hi/lo split (A) and the weight copy (B)

    frag_a = sch.cache_read(tile, 0, "wmma.matrix_a")
    frag_b = sch.cache_read(tile, 1, "wmma.matrix_b")
    sch.compute_at(frag_a, k1)
    sch.compute_at(frag_b, k1)
    # the C tile on its way out: in dynamic shared memory when big; a small one gets its own
    # static buffer (in the dynamic pool, TVM would let it reuse a bf16 stage's bytes, and the
    # fp32 wmma store into that buffer then fails to lower)
    big_c = _big_c(tl)
    c_shared = sch.cache_write(tile, 0, "shared.dyn" if big_c else "shared")
    sch.storage_align(c_shared, 0, -2, 16, 4)
    c_frag = sch.cache_write(tile, 0, "wmma.accumulator")
    sch.reverse_compute_at(c_frag, warp)
    sch.reverse_compute_at(c_shared, warp)
    si, sj = sch.get_loops(c_frag)[-2:]
    si0, si1 = sch.split(si, [None, 16])
    sj0, sj1 = sch.split(sj, [None, 16])
    sch.reorder(si0, sj0, si1, sj1)
    init = sch.get_child_blocks(sch.decompose_reduction(tile, k0))[0]

    names = _intrinsics() if tensorize else {}
    for blk, key in ((frag_a, "load_a"), (frag_b, "load_b")):
        fi, fj = sch.get_loops(blk)[-2:]
        fi0, fi1 = sch.split(fi, [None, 16])
        fj0, fj1 = sch.split(fj, [None, 16])
        sch.reorder(fi0, fj0, fi1, fj1)
        sch.unroll(fi0)
        sch.unroll(fj0)
        if tensorize:
            sch.tensorize(fi1, names[key])
    if tensorize:
        sch.tensorize(sch.get_loops(init)[-2], names["init"])
        sch.tensorize(sch.get_loops(c_frag)[-2], names["store" if big_c else "store_static"])
        sch.tensorize(sch.get_loops(frag)[-3], names["compute"])

    sums = find_block(sch, "slice_sum")
    if sums is None:
        auto_inline_consumer_chain(sch, c_shared)  # bias, residual, output cast
    else:
        auto_inline_consumers(sch, c_shared)  # (the copy back out of the reindexed layout)
    _, tx, vec = sch.split(sch.fuse(*sch.get_loops(c_shared)[-2:]), [None, 32, 4])
    sch.bind(tx, "threadIdx.x")
    sch.vectorize(vec)
    if sums is not None:
        _schedule_slice_sum(sch, sums)
    return sch


def _schedule_slice_sum(sch: s_tir.Schedule, sums) -> None:
    """Split-K's second kernel: each thread adds up the slices of 4 consecutive outputs (or 1
    where N is odd) and applies the epilogue."""
    i, j = sch.get_loops(sums)
    n = int(sch.get(j).extent)
    vec = 4 if n % 4 == 0 else 1
    j, v = sch.split(j, [None, vec])
    bx, tx = sch.split(sch.fuse(i, j), [None, 128])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.vectorize(v)
