"""The tensor-core linear (schedules/cuda/matmul.py), checked on the CPU.

Its loop nest runs serially with the 16x16 wmma tiles left as loops
(tests/cuda_emulation.py): padding of T, N and K, the hi/lo split of x, the fused epilogue
and the tiling are all exercised; only the wmma intrinsics themselves are TVM's. The
tensorized form is checked for what it calls and, with nvcc, compiled to a cubin.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from tvm import te, tirx

import cuda_emulation
from inference_pio.schedules import kernels
from inference_pio.schedules.cuda.gemv import gemv
from inference_pio.schedules.cuda.matmul import tensor_core_linear, untensorized
from inference_pio.targets import resolve

CUDA = resolve({"kind": "cuda", "arch": "sm_90a"})
F32, BF16, F16 = "float32", "bfloat16", "float16"


def _linear_func(n: int, k: int, wdtype: str = BF16, bias: bool = False, residual: bool = False,
                 out_dtype: str = "float32", t=None, act: str | None = None, norm: bool = False,
                 out_act: str | None = None, x_dtype: str = "float32") -> tirx.PrimFunc:
    """The lowered form of a linear: T symbolic (int64), tagged like engine/lower.py does."""
    t = tirx.Var("t", "int64") if t is None else t
    x = te.placeholder((t, 2 * k if act else k), x_dtype, name="x")
    w = te.placeholder((n, k), wdtype, name="w")
    extra = ([te.placeholder((k,), wdtype, name="g")] if norm else []) + \
            ([te.placeholder((n,), "float32", name="b")] if bias else []) + \
            ([te.placeholder((t, n), "float32", name="r")] if residual else [])
    y = kernels.linear(x, w, *extra, bias=bias, residual=residual, out_dtype=out_dtype, act=act,
                       norm_eps=NORM_EPS if norm else None, out_act=out_act)
    return te.create_prim_func([x, w, *extra, y]).with_attrs(
        {"op_kind": "linear", "bias": bias, "residual": residual, "act": act or "", "norm": norm,
         "out_act": out_act or ""})


NORM_EPS = 1e-5


def _reference(x, w, b, r, act, g=None):
    x = x.astype(np.float64)
    if act:
        gate, up = np.split(x, 2, axis=1)
        x = gate / (1 + np.exp(-gate)) * up
    if g is not None:
        x = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + NORM_EPS) * g.astype(np.float64)
    return x @ w.astype(np.float64).T + (0 if b is None else b) + (0 if r is None else r)


@pytest.mark.parametrize("t,n,k,bias,residual,out_dtype,act,wdtype", [
    (1, 200, 72, False, False, "float32", None, BF16),
    (9, 40, 24, True, False, "float32", None, BF16),       # K below one 64-wide chunk
    (133, 150, 100, False, True, "float32", None, BF16),   # two row tiles; K not a multiple of 16
    (20, 72, 48, True, True, BF16, None, BF16),
    (17, 64, 37, False, True, "float32", "swiglu", BF16),  # the down projection with swiglu fused
    (21, 72, 40, True, False, "float32", None, F16),       # fp16 weights: three bf16 parts
    (70, 136, 56, False, True, "float32", "swiglu", F16),
])
def test_tensor_core_linear_matches_fp32(rng, t, n, k, bias, residual, out_dtype, act, wdtype):
    with untensorized():
        f = tensor_core_linear(_linear_func(n, k, wdtype, bias=bias, residual=residual, out_dtype=out_dtype,
                                            act=act), CUDA)
    assert f is not None
    err = _emulated_error(rng, f, t, n, k, bias, residual, out_dtype, act, wdtype)
    # close to fp32 although the multiplies take bf16: hi + lo carries x to within 2^-16 (the emulation
    # rounds to bf16 as the GPU does, `linear_split(bit_round=True)`: 2.5e-6 to 3.5e-6 here),
    # where x's bf16 rounding alone gives ~2e-3 (and, for fp16 weights, w's as much again)
    assert err <= (1e-2 if out_dtype == BF16 else SPLIT_TOL), err


SPLIT_TOL = 1e-5


@pytest.mark.parametrize("label", ["128x128, 8 warps of 64x32", "128x128, 4 warps of 64x64"])
def test_kernel_bench_warp_tiles_are_right(rng, label, monkeypatch):
    """bench/gpu/kernel_bench.py's warp-tile variants of the GEMM (a row tile and a column tile
    partly past the end)."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench" / "gpu"))
    from kernel_bench import WARP_TILES

    from inference_pio.schedules.cuda.matmul import Tiles

    with untensorized():
        f = tensor_core_linear(_linear_func(136, 80, BF16, residual=True).with_attr("precision", "medium"), CUDA,
                               tiles=Tiles(**WARP_TILES[label]), max_slices=1)
    assert _emulated_error(rng, f, 130, 136, 80, False, True, "float32", None, BF16) <= 1e-2


def _emulated_error(rng, f, t, n, k, bias, residual, out_dtype, act, wdtype) -> float:
    """The emulated linear ``f`` on random inputs, against float64 math: max error / max |ref|."""
    import ml_dtypes

    x = (rng.standard_normal((t, 2 * k if act else k)) * 3).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(ml_dtypes.bfloat16 if wdtype == BF16 else np.float16)
    b = rng.standard_normal(n).astype(np.float32)
    r = rng.standard_normal((t, n)).astype(np.float32)
    out = np.zeros((t, n), ml_dtypes.bfloat16 if out_dtype == BF16 else np.float32)
    args = [x, w] + ([b] if bias else []) + ([r] if residual else []) + [out]
    got = cuda_emulation.run(f, *args)[-1].astype(np.float64)
    ref = _reference(x, w, b if bias else None, r if residual else None, act)
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("t,n,k,residual", [(130, 136, 80, True), (17, 40, 37, False)])
def test_tensor_core_linear_of_bf16_x(rng, t, n, k, residual):
    """x in bf16 (what a producer rounding its output for a "medium" GEMM would give): one
    product per weight, staged 16 bytes a copy where K needs no padding, and exact but for
    the fp32 sums."""
    import ml_dtypes

    with untensorized():
        f = tensor_core_linear(_linear_func(n, k, BF16, residual=residual, x_dtype=BF16), CUDA)
    bf = ml_dtypes.bfloat16
    x = (rng.standard_normal((t, k)) * 3).astype(bf)
    w = rng.standard_normal((n, k)).astype(bf)
    r = rng.standard_normal((t, n)).astype(np.float32)
    got = cuda_emulation.run(f, x, w, *([r] if residual else []), np.zeros((t, n), np.float32))[-1]
    ref = _reference(x.astype(np.float32), w, None, r if residual else None, None)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("t,n,k,stages,prec,xdt", [(130, 136, 128, 3, "medium", F32), (17, 40, 64, 2, "high", F32),
                                                   (300, 256, 256, 3, "high", F32), (130, 136, 128, 3, "medium", BF16),
                                                   (300, 256, 256, 2, "medium", BF16)])
def test_tensor_core_linear_with_weights_by_cp_async(rng, t, n, k, stages, prec, xdt):
    """``async_stages``: the weights straight into shared memory (cp.async on the GPU), 2 or 3
    stages, over an fp32 or a bf16 x (a bf16 x by cp.async too, its copy reading row T - 1 for
    the tile's rows past T: `matmul._clamped_rows`); the same loop nest otherwise. Partly filled
    row and column tiles; the 128 x 128 tiles (N = 256); "high" splits x, "medium" rounds it."""
    import ml_dtypes

    with untensorized():
        f = tensor_core_linear(_linear_func(n, k, BF16, residual=True, x_dtype=xdt).with_attr("precision", prec),
                               CUDA, async_stages=stages)
    assert '"software_pipeline_async_stages": [0]' in f.script()
    assert ("x[T.min(" in f.script()) == (xdt == BF16)
    x = (rng.standard_normal((t, k)) * 3).astype(np.float32 if xdt == F32 else ml_dtypes.bfloat16)
    w = rng.standard_normal((n, k)).astype(ml_dtypes.bfloat16)
    r = rng.standard_normal((t, n)).astype(np.float32)
    got = cuda_emulation.run(f, x, w, r, np.zeros((t, n), np.float32))[-1]
    xr = x.astype(ml_dtypes.bfloat16).astype(np.float32) if prec == "medium" else x
    ref = _reference(xr, w, None, r, None)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_emulated_split_rounds_like_the_gpu(rng):
    """On LLVM, TVM's bf16 legalization computes in fp32 and drops an fp32 -> bf16 -> fp32 round
    trip, so x's bf16 parts would be hi = x, lo = 0 and the emulation would test plain fp32 math.
    With bit_round the parts are rounded with integer operations: the result is the split's,
    hi @ w + lo @ w with numpy's bf16 rounding, not x @ w."""
    import ml_dtypes
    import tvm

    bf = ml_dtypes.bfloat16
    x = (rng.standard_normal((5, 48)) * 3).astype(np.float32)
    w = rng.standard_normal((7, 48)).astype(bf)
    tx, tw = te.placeholder((5, 48), "float32", name="x"), te.placeholder((7, 48), BF16, name="w")
    y = kernels.linear_split(tx, tw, bit_round=True)
    ex = tvm.compile(tvm.IRModule({"main": te.create_prim_func([tx, tw, y]).with_attr("global_symbol", "main")}),
                     target="llvm")
    out = tvm.runtime.tensor(np.zeros((5, 7), np.float32))
    ex["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w), out)
    hi = x.astype(bf).astype(np.float64)
    lo = (x - hi).astype(np.float32).astype(bf).astype(np.float64)
    wf = w.astype(np.float64)
    split, exact = hi @ wf.T + lo @ wf.T, x.astype(np.float64) @ wf.T
    off_split, off_exact = np.abs(out.numpy() - split).max(), np.abs(out.numpy() - exact).max()
    assert off_split <= 1e-6 * np.abs(split).max() and off_exact > 3 * off_split, (off_split, off_exact)


def _at(e, t: int) -> int:
    """An int64 expression of the kernel's T (IntImm, Select, + * // <= < and), evaluated at T = t."""
    import operator

    if isinstance(e, tirx.IntImm):
        return int(e.value)
    if isinstance(e, tirx.Var):
        return t
    if isinstance(e, tirx.Select):
        return _at(e.true_value if _at(e.condition, t) else e.false_value, t)
    ops = {tirx.Add: operator.add, tirx.Mul: operator.mul, tirx.FloorDiv: operator.floordiv, tirx.LE: operator.le,
           tirx.LT: operator.lt, tirx.And: operator.and_}
    return int(ops[type(e)](_at(e.a, t), _at(e.b, t)))


def test_weights_are_staged_16_bytes_a_copy_where_k_needs_no_padding():
    from inference_pio.schedules.cuda.matmul import BIG, SMALL, stage_vectors

    assert [stage_vectors(k, BIG) for k in (2560, 9728, 1024)] == [(4, 8)] * 3  # (fp32 x: converted, 4)
    assert stage_vectors(1024, SMALL, BF16) == (8, 8)  # 64 x 32 per stage over 128 threads: 16 each
    assert [stage_vectors(k, BIG, BF16) for k in (37, 72)] == [(4, 4)] * 2  # padded to 48 / 80: guarded loads


def test_big_tiles_split_by_waves():
    """The 128 x 128 tiles (one block per SM) take the slices whose waves cost least, where that
    beats fewer slices by a fifth (`matmul._by_waves`): Qwen3-4B's o and down (N = 2560, 20
    column tiles, up to 4 slices) and q+k+v (N = 6144, 48 column tiles, up to 2)."""
    from inference_pio.schedules.cuda.matmul import BIG, slice_count

    t = tirx.Var("t", "int64")
    o = slice_count(t, 2560, BIG, 4)
    assert [_at(o, rows) for rows in (16, 128, 512, 1024, 2048)] == [4, 4, 1, 2, 1]
    qkv = slice_count(t, 6144, BIG, 2)
    assert [_at(qkv, rows) for rows in (16, 128, 512, 1024, 2048)] == [2, 2, 2, 1, 1]


@pytest.mark.parametrize("t", [5, 130, 300])
def test_big_tiles_split_k_is_right(rng, t):
    """The split-K form of the 128 x 128 tiles (by `matmul._by_waves` at run time): 2 row tiles
    x 2 column tiles at 130 rows, 2 slices of a 512-long reduction; 1 slice at 300 rows."""
    from inference_pio.schedules.cuda.matmul import BIG

    with untensorized():
        f = tensor_core_linear(_linear_func(136, 512, BF16, residual=True).with_attr("precision", "medium"), CUDA,
                               tiles=BIG, max_slices=2)
    assert "slice_sum" in f.script()
    assert _emulated_error(rng, f, t, 136, 512, False, True, "float32", None, BF16) <= 1e-2


def test_split_k_policy_at_qwen3_shapes():
    """Split-K only where a 128-token prompt gets too few blocks from T and N, and as many
    slices as fill one wave (132 blocks) at the prompt's length."""
    from inference_pio.schedules.cuda.matmul import SMALL, slice_count, slices_for, tiles_for

    # Qwen3-0.6B: o (K=2048) and down (K=3072) are 1024 wide (small tiles); q+k+v 4096, gate+up
    # 6144 (big tiles: 32 and 48 blocks at 128 tokens)
    assert [slices_for(n, 2 * k, tiles_for(n)) for n, k in ((1024, 2048), (1024, 3072), (4096, 1024),
                                                          (6144, 1024))] == [8, 8, 4, 4]
    # Qwen3-4B: o and down (N = 2560, 20 big tiles), q+k+v (48); gate+up (N = 19456, 152) unsliced
    assert [slices_for(n, k, tiles_for(n)) for n, k in ((2560, 4096), (2560, 9728), (6144, 2560),
                                                       (19456, 2560))] == [4, 4, 4, 1]
    assert [tiles_for(n) == SMALL for n in (1024, 2048, 2112, 2176, 2560, 4096)] == [True] * 3 + [False] * 3
    assert slices_for(200, 2 * 72, SMALL) == 1  # 144 products: no whole stages to cut
    count = slice_count(tirx.Var("t", "int64"), 1024, SMALL, 8)
    assert [_at(count, t) for t in (1, 64, 65, 128, 129, 256, 257, 2048)] == [8, 8, 4, 4, 2, 2, 1, 1]


@pytest.mark.parametrize("t,n,k,bias,residual,out_dtype,act,wdtype", [
    (5, 200, 512, False, True, "float32", None, BF16),     # 4 slices (of 256 products)
    (130, 64, 256, True, False, "float32", None, BF16),    # 2 slices, two row tiles
    (70, 136, 512, False, True, "float32", "swiglu", F16),  # fp16 weights: 3 parts, 2 slices of 768
    (20, 40, 512, True, True, BF16, None, BF16),           # a bf16 output; N not a multiple of 4
    (1100, 200, 512, False, True, "float32", None, BF16),  # 72 blocks: 1 slice, still through the sum
])
def test_split_k_linear_matches_fp32(rng, t, n, k, bias, residual, out_dtype, act, wdtype):
    """The split-K form (few blocks from T and N): partial sums of slices of the reduction,
    then a kernel adding them with the epilogue; the slice count depends on T at run time."""
    from inference_pio.schedules.cuda.matmul import slices_for, tiles_for

    parts = 2 if wdtype == BF16 else 3
    assert slices_for(n, parts * k, tiles_for(n)) > 1
    with untensorized():
        f = tensor_core_linear(_linear_func(n, k, wdtype, bias=bias, residual=residual, out_dtype=out_dtype,
                                            act=act), CUDA)
    assert "slice_sum" in f.script()
    err = _emulated_error(rng, f, t, n, k, bias, residual, out_dtype, act, wdtype)
    assert err <= (1e-2 if out_dtype == BF16 else SPLIT_TOL), err


def test_split_k_takes_fewer_slices_where_tvm_cannot_schedule_them():
    """Qwen3-Coder-30B-A3B's o projection (N = 2048, K = 4096): 8 slices fail in TVM's
    cache_read (column tiles x slices > 128), so the rule takes 4 (still split-K), and
    tensorized as the GPU gets it."""
    from inference_pio.schedules.cuda.matmul import slices_for, tiles_for

    assert slices_for(2048, 2 * 4096, tiles_for(2048)) == 8
    for prec in ("high", "medium"):
        f = tensor_core_linear(_linear_func(2048, 4096, BF16, residual=True).with_attr("precision", prec), CUDA)
        assert "slice_sum" in f.script()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
def test_split_k_compiles_to_two_kernels_in_a_cubin(tmp_path):
    """Qwen3-0.6B's o projection: the tensor-core kernel over a grid with T's slice count in z,
    then the sum; the partial sums live in a workspace TVM allocates per call."""
    import tvm

    from inference_pio.targets.cuda_host import enable_cuda_codegen

    enable_cuda_codegen()
    f = tensor_core_linear(_linear_func(1024, 2048, BF16, residual=True), CUDA)
    with CUDA.to_tvm() as tgt:
        ex = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=tgt)
    src = ex.mod.imports[0].inspect_source("")
    assert src.count("__global__ void") == 2 * 2 and "mma_sync" in src  # (declared, then defined)
    assert "TVMBackendAllocWorkspace" in ex.mod.inspect_source("ll")
    ex.export_library(tmp_path / "k.so")
    assert b".nv.info" in (tmp_path / "k.so").read_bytes()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
@pytest.mark.parametrize("n,stages,xdt", [(2560, 3, F32), (136, 2, F32), (2560, 3, BF16)])
def test_weights_by_cp_async_compile_to_a_cubin(tmp_path, n, stages, xdt):
    """The cp.async form at Qwen3-4B's o projection (K = 4096, 128 x 128 tiles) and at a column
    count the tiles only partly fill (guarded copies, zero-filled): compiled under
    `matmul.ASYNC_COPY`, 16-byte cp.async in the source (for a bf16 x's copies too: one per
    operand per stage), and nvcc accepts it."""
    import tvm

    from inference_pio.schedules.cuda.matmul import ASYNC_COPY
    from inference_pio.targets.cuda_host import enable_cuda_codegen

    enable_cuda_codegen()
    f = tensor_core_linear(_linear_func(n, 4096, BF16, residual=True, x_dtype=xdt).with_attr("precision", "medium"),
                           CUDA, async_stages=stages)
    with tvm.transform.PassContext(config=ASYNC_COPY), CUDA.to_tvm() as tgt:
        ex = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=tgt)
    src = ex.mod.imports[0].inspect_source("")
    assert "cp.async.cg.shared.global" in src and "mma_sync" in src
    assert ("ptx_cp_async_legacy_pred_cg_16" in src) == (n == 136)  # (a guard: zeros where it fails)
    if n == 2560:  # the prologue's stages - 1 chunks and the loop's one, per operand (and the helper)
        assert src.count("ptx_cp_async_legacy_cg_16_2_2(") == 1 + stages * (2 if xdt == BF16 else 1)
    ex.export_library(tmp_path / "k.so")
    assert b".nv.info" in (tmp_path / "k.so").read_bytes()


@pytest.mark.parametrize("wdtype", [BF16, F16])
def test_tensorized_form_uses_bf16_wmma(wdtype):
    f = tensor_core_linear(_linear_func(256, 128, wdtype, bias=True), CUDA)
    text = f.script()
    for call in ("tvm_load_matrix_sync", "tvm_mma_sync", "tvm_fill_fragment", "tvm_store_matrix_sync"):
        assert call in text, call
    assert 'scope="wmma.matrix_a"' in text and '"bfloat16", scope="wmma.matrix_b"' in text


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
def test_fp16_weights_compile_to_a_cubin_with_16_byte_loads(tmp_path):
    """fp16 weights are split into bf16 parts while staged: the loads stay vectors (8 halves in
    16 bytes, `matmul.stage_vectors`, and float4) and nvcc accepts the conversions."""
    import tvm

    from inference_pio.targets.cuda_host import enable_cuda_codegen

    enable_cuda_codegen()
    f = tensor_core_linear(_linear_func(256, 128, F16, residual=True), CUDA)
    with CUDA.to_tvm() as tgt:
        ex = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=tgt)
    src = ex.mod.imports[0].inspect_source("")
    assert "*(uint4*)(w_ptr" in src and "*(float4*)(x_ptr" in src and "mma_sync" in src
    ex.export_library(tmp_path / "k.so")
    assert b".nv.info" in (tmp_path / "k.so").read_bytes()  # a cubin, not source


@pytest.mark.parametrize("kw", [dict(wdtype="float32"), dict(t=tirx.IntImm("int64", 1))])
def test_other_linears_are_left_to_dlight(kw):
    assert tensor_core_linear(_linear_func(64, 32, **kw), CUDA) is None


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
@pytest.mark.parametrize("name,precision,split", [("gqa5x1", "high", False), ("wide256", "high", True),
                                                  ("wide256", "medium", False)])
def test_bf16_model_compiles_to_tensor_core_kernels(models, name, precision, split):
    """A bf16 checkpoint's prefill GEMMs are WMMA kernels in the shipped cubin's source;
    wide256's o and down projections (K = 256) take the split-K form, a
    reduction of 2 x 256 products, but not at matmul precision "medium": 256 products are one
    slice (`MIN_SLICE`)."""
    from inference_pio import engine, frontends

    md = frontends.huggingface.model_def(models.checkpoint(name, dtype=BF16).path)
    art = engine.compile(md, target={"kind": "cuda", "arch": "sm_90a"}, max_seq_len=64, matmul_precision=precision)
    assert art.manifest["matmul_precision"] == precision
    def cuda_sources(m):
        yield m.inspect_source("") if m.kind == "cuda" else ""
        for sub in m.imports:
            yield from cuda_sources(sub)

    src = "".join(cuda_sources(art.executable.mod))
    assert "nvcuda::wmma::mma_sync" in src and "wmma::matrix_a, 16, 16, 16, nv_bfloat16" in src
    assert ("slice_sum" in src) == split
    # swiglu fused into the gate+up projection's GEMV in decode only (`decode_passes`), its own
    # kernel before prefill's GEMM, which would recompute it for every tile of output columns
    ops = {name: {n.op for n in g.ops()} for name, g in art.graphs.items()}
    assert "swiglu" in ops["prefill"] and "swiglu" in ops["forward"] and "swiglu" not in ops["decode"]
    assert any(n.op == "linear" and n.attr("out_act") == "swiglu" for n in art.graphs["decode"].ops())


@pytest.mark.parametrize("n,k,wdtype,bias,residual,out_dtype,act,norm", [
    (37, 512, BF16, False, False, "float32", None, False),   # 16-byte chunks; rows not a multiple of 4
    (64, 96, BF16, True, True, "float32", None, False),      # K = 3 x 32: one element per lane and step
    (21, 320, "float32", False, True, BF16, None, False),    # fp32 weights, 8-byte chunks
    (40, 256, BF16, False, True, "float32", "swiglu", False),  # swiglu(x) once per block, in shared memory
    (24, 96, BF16, False, True, "float32", "swiglu", False),   # ... per row (K does not split over the block)
    (12, 2432, BF16, True, False, "float32", None, False),     # 19 chunks per lane: the last 8 partly guarded
    (37, 512, BF16, False, True, "float32", None, True),     # rms_norm fused: two warps per row
    (4100, 1024, BF16, True, False, "float32", None, True),  # one warp per row, 4 chunks per lane
    (24, 96, "float32", False, False, "float32", None, True),
])
def test_gemv_matches_numpy(rng, n, k, wdtype, bias, residual, out_dtype, act, norm):
    _check_gemv(rng, n, k, wdtype, bias, residual, out_dtype, act, norm, rows=None)


@pytest.mark.parametrize("n,k,wdtype,bias,residual,out_dtype,act,norm,rows", [
    (37, 512, BF16, False, True, "float32", None, True, 2),      # weights loaded before the norm
    (40, 256, BF16, False, True, "float32", "swiglu", False, 4),
    (12, 2432, BF16, True, False, "float32", None, False, 2),    # 19 chunks per lane: groups of 7, 7, 5
    (21, 320, "float32", False, True, BF16, None, False, 4),     # 8 rows of a block past the end
    (24, 96, "float32", False, False, "float32", None, True, 2),  # the norm per row
])
def test_gemv_rows_per_thread(rng, n, k, wdtype, bias, residual, out_dtype, act, norm, rows):
    """A thread multiplies its chunk of x into ``rows`` rows (the default for wide projections:
    `rows_per_thread`), loads of all of them in flight."""
    _check_gemv(rng, n, k, wdtype, bias, residual, out_dtype, act, norm, rows=rows)


@pytest.mark.parametrize("n,k,wdtype,bias,norm,rows", [
    (38, 512, BF16, False, True, None),    # the gate+up form: norm fused, 2 rows (a pair) per thread
    (64, 96, BF16, True, False, None),     # bias before the swiglu; one element per lane and step
    (22, 320, "float32", False, False, 4),  # two pairs per thread, a block's last rows past the end
    (4104, 1024, BF16, False, True, None),  # one warp per row, 2 pairs per thread
])
def test_gemv_with_swiglu_of_its_output(rng, n, k, wdtype, bias, norm, rows):
    """out_act="swiglu": each thread sums a gate row and its up row and writes silu(gate) * up."""
    _check_gemv(rng, n, k, wdtype, bias, False, "float32", None, norm, rows=rows, out_act="swiglu")


def test_gemv_rows_and_loads_ahead():
    from inference_pio.schedules.cuda.gemv import loads_ahead, rows_per_thread

    assert [rows_per_thread(n) for n in (1024, 2560, 4096, 6144, 19456, 151936)] == [1, 1, 2, 2, 4, 4]
    assert [loads_ahead(10, r) for r in (1, 2, 4)] == [5, 4, 2]   # Qwen3-4B's K = 2560
    assert loads_ahead(19, 1) == 7 and loads_ahead(19, 1, ahead=16) == 10 and loads_ahead(4, 4) == 2


def _check_gemv(rng, n, k, wdtype, bias, residual, out_dtype, act, norm, rows, out_act=None):
    import ml_dtypes

    f = _linear_func(n, k, wdtype=wdtype, bias=bias, residual=residual, out_dtype=out_dtype,
                     t=tirx.IntImm("int64", 1), act=act, norm=norm, out_act=out_act)
    sch = gemv(f, CUDA, rows=rows)
    assert sch is not None
    f = sch.mod["main"]
    wnp = ml_dtypes.bfloat16 if wdtype == BF16 else np.float32
    x = 3 * rng.standard_normal((1, 2 * k if act else k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(wnp)
    g = (1 + 0.3 * rng.standard_normal(k)).astype(wnp)
    b, r = rng.standard_normal(n).astype(np.float32), rng.standard_normal((1, n)).astype(np.float32)
    out = np.zeros((1, n // 2 if out_act else n), ml_dtypes.bfloat16 if out_dtype == BF16 else np.float32)
    args = [x, w] + ([g] if norm else []) + ([b] if bias else []) + ([r] if residual else []) + [out]
    got = cuda_emulation.run(f, *args)[-1].astype(np.float64)
    ref = _reference(x, w, b if bias else None, r if residual else None, act, g if norm else None)
    if out_act:
        gate, up = np.split(ref, 2, axis=1)
        ref = gate / (1 + np.exp(-gate)) * up
    assert np.abs(got - ref).max() <= (1e-2 if out_dtype == BF16 else 1e-5) * np.abs(ref).max()


def test_gemv_loads_16_bytes_and_reduces_with_warp_shuffles():
    import tvm

    sch = gemv(_linear_func(256, 1024, residual=True, t=tirx.IntImm("int64", 1)), CUDA)
    with CUDA.to_tvm() as tgt:
        lowered = tvm.s_tir.transform.LowerCrossThreadReduction()(sch.mod)
    text = lowered["main"].script()
    assert 'T.thread_binding(64, thread="blockIdx.x")' in text and "T.vectorized(8)" in text
    assert "tvm_thread_allreduce" in text
    del tgt
    assert gemv(_linear_func(64, 40, t=tirx.IntImm("int64", 1)), CUDA) is None  # K not a multiple of 32


@pytest.mark.parametrize("wdtype", [BF16, F16])
def test_medium_precision_multiplies_bf16_x(rng, wdtype):
    """At matmul precision "medium" x is rounded to bf16 instead of split: one product per
    weight part (bf16 weights 1, fp16 weights 2, still exact), so the result is bf16(x) @ w."""
    import ml_dtypes

    from inference_pio.schedules.kernels import split_reduction

    t, n, k = 37, 72, 48
    assert split_reduction(k, wdtype, precision="medium")[0] == split_reduction(k, wdtype)[0] - 1
    with untensorized():
        f = tensor_core_linear(_linear_func(n, k, wdtype).with_attr("precision", "medium"), CUDA)
    x = (rng.standard_normal((t, k)) * 3).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(ml_dtypes.bfloat16 if wdtype == BF16 else np.float16)
    got = cuda_emulation.run(f, x, w, np.zeros((t, n), np.float32))[-1].astype(np.float64)
    wf = w.astype(np.float64)
    rounded, exact = x.astype(ml_dtypes.bfloat16).astype(np.float64) @ wf.T, x.astype(np.float64) @ wf.T
    scale = np.abs(exact).max()
    assert np.abs(got - rounded).max() / scale <= SPLIT_TOL
    assert 1e-4 < np.abs(got - exact).max() / scale < 1e-2
