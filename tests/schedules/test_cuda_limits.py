"""Shared memory per CUDA kernel (schedules/cuda/limits.py): a kernel whose static + dynamic
shared memory passes 48 KiB while the dynamic part stays under it cannot launch under TVM's
runtime, which nvcc and TVM accept and only a GPU reports. The check catches it here."""
import pytest
import tvm
from tvm import te, tirx

from inference_pio.schedules import kernels
from inference_pio.schedules.cuda import limits
from inference_pio.schedules.cuda.matmul import SMALL, Tiles, tensor_core_linear
from inference_pio.targets import resolve

CUDA = resolve({"kind": "cuda", "arch": "sm_90a"})


def _linear_func(n: int, k: int, wdtype: str, residual: bool = False) -> tirx.PrimFunc:
    """A linear over T rows (symbolic), tagged as engine/lower.py does."""
    t = tirx.Var("t", "int64")
    x, w = te.placeholder((t, k), "float32", name="x"), te.placeholder((n, k), wdtype, name="w")
    extra = [te.placeholder((t, n), "float32", name="r")] if residual else []
    y = kernels.linear(x, w, *extra, bias=False, residual=residual, out_dtype="float32")
    return te.create_prim_func([x, w, *extra, y]).with_attrs(
        {"op_kind": "linear", "bias": False, "residual": residual, "act": "", "norm": False})


def _module(**funcs):
    return tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in funcs.items()})


def test_the_small_tiles_launch_and_the_old_ones_would_not():
    old = Tiles(warps_m=2, warps_n=2, chunk_k=4)  # what failed every launch on an H200, 2026-12-04
    mod = _module(ours=tensor_core_linear(_linear_func(1024, 3072, "bfloat16", residual=True), CUDA),
                  old=tensor_core_linear(_linear_func(1024, 3072, "bfloat16", residual=True), CUDA, tiles=old))
    use = {u.kernel: u for u in limits.usage(mod, CUDA)}
    # the GEMM (its C tile static, its A and B stages dynamic) and the split-K sum
    assert (use["ours#0"].static, use["ours#0"].dynamic) == (16384, 20480) and SMALL.chunk_k == 2
    assert use["ours#0"].problem is None and use["ours#1"].problem is None
    assert (use["old#0"].static, use["old#0"].dynamic) == (16384, 36864)
    assert "CUDA_ERROR_INVALID_VALUE" in use["old#0"].problem
    with pytest.raises(ValueError, match=r"old#0: 16384 bytes static \+ 36864 dynamic"):
        limits.check(mod, CUDA)


def test_big_dynamic_memory_is_fine():
    """The 128 x 128 tiles keep everything dynamic (72 KiB): TVM's runtime opts in to it."""
    mod = _module(head=tensor_core_linear(_linear_func(151936, 1024, "bfloat16"), CUDA))
    (u,) = limits.usage(mod, CUDA)
    assert (u.static, u.dynamic, u.problem) == (0, 73728, None)


def test_more_than_any_block_can_have():
    assert "more than the" in limits.Usage("k", 0, limits.OPT_IN_LIMIT + 1).problem
    assert limits.Usage("k", 48 * 1024, 0).problem is None  # all static, at the limit


def _calling(name: str, func: tirx.PrimFunc, caller: str) -> tvm.IRModule:
    """A module whose Relax function ``caller`` calls ``func`` (a linear of x, w, r) as ``name``."""
    from tvm import relax

    bb = relax.BlockBuilder()
    t = tirx.Var("t", "int64")
    x, w, r = (relax.Var(n, relax.TensorType(s, d)) for n, s, d in
               (("x", (t, 3072), "float32"), ("w", (1024, 3072), "bfloat16"), ("r", (t, 1024), "float32")))
    with bb.function(caller, [x, w, r]):
        gv = bb.add_func(func, name)
        out = bb.emit(relax.call_tir(gv, [x, w, r], relax.TensorType((t, 1024), "float32")))
        bb.emit_func_output(out)
    return bb.get()


def test_a_graphed_function_may_not_call_a_kernel_that_takes_workspace():
    """The split-K GEMM keeps its partial sums in a global buffer: TVM workspace at every call,
    which a captured CUDA graph would replay into pages the pool may free (an illegal address on
    an H200, 2026-12-04). `engine.compile` then compiles decode without a graph."""
    mod = _calling("gemm", tensor_core_linear(_linear_func(1024, 3072, "bfloat16", residual=True), CUDA), "decode")
    assert limits.called(mod, "decode") == {"gemm"}
    assert limits.check(mod, CUDA) == {}  # (no function graphed)
    blocked = limits.check(mod, CUDA, graphed=("decode",), optional=True)
    assert list(blocked) == ["gemm"] and "alloc_buffer" in blocked["gemm"][0]
    with pytest.raises(ValueError, match=r"gemm \(called by decode, which a CUDA graph captures\): allocates TVM "
                                         r"workspace at each call"):
        limits.check(mod, CUDA, graphed=("decode",))
