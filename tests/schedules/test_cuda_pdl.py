"""Programmatic dependent launch (schedules/cuda/pdl.py, engine.compile's cuda_pdl): checked in
the CUDA source and the launch tags TVM stores, compiled with nvcc; not run (no GPU here)."""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import tvm
from tvm import tirx

from inference_pio import engine, frontends
from inference_pio.schedules.cuda import pdl
from inference_pio.schedules.cuda.gemv import cuda_gemv
from inference_pio.targets import TargetError, resolve

sys.path.insert(0, str(Path(__file__).parent))  # (as bench/gpu/kernel_bench.py does)
from test_cuda_matmul import _linear_func  # noqa: E402

CUDA = resolve({"kind": "cuda", "arch": "sm_90a"})
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
WAIT, TRIGGER = "tvm_builtin_ptx_griddepcontrol_wait();", "tvm_builtin_ptx_griddepcontrol_launch_dependents();"
PREFETCH = "tvm_builtin_ptx_cp_async_bulk_prefetch_async_bulk_prefetch_L2_global("


def _cuda_module(m):
    if m.kind == "cuda":
        return m
    return next((c for c in map(_cuda_module, m.imports) if c is not None), None)


def _kernels(src: str) -> dict[str, str]:
    """Each __global__ kernel's body in the CUDA source, by name."""
    out = {}
    for m in re.finditer(r'extern "C" __global__ void (?:__launch_bounds__\([\d, ]+\) )?(\w+)\([^)]*\) \{\n', src):
        out[m.group(1)] = src[m.end():src.find('\n}\n', m.end())]
    return out


def _build(func: tirx.PrimFunc, mode: str):
    from inference_pio.targets.cuda_host import enable_cuda_codegen

    enable_cuda_codegen()
    with CUDA.to_tvm() as tgt:
        return tvm.tirx.build(tvm.IRModule({"gemv": func.with_attr("global_symbol", "gemv")}), target=tgt,
                              pipeline=pdl.pipeline(mode))


@needs_nvcc
@pytest.mark.parametrize("mode", ["prefetch", "launch"])
def test_gemv_prefetches_its_rows_then_waits(tmp_path, mode):
    """Lane r of each block's first warp prefetches the start of the block's r-th weight row into
    L2, what its lanes load first ("prefetch" mode only); then every thread waits for the
    kernel before and lets the next one launch, before anything else; the module stores the
    PDL launch tag for the runtime."""
    n, k = 300, 1024  # 4 x 1 rows of 2 KiB per block (rows_per_thread(300) = 1): 75 blocks
    f = cuda_gemv(_linear_func(n, k, residual=True, t=tirx.IntImm("int64", 1)), CUDA)
    # 2 warps per row (300 < FEW_ROWS), 8 bf16 per load: 2 chunks per lane, both in its first
    # group, so the whole row; at Qwen3-4B's gate+up only the first of 10 (512 of 5120 bytes)
    assert list(f.attrs[pdl.L2_PREFETCH_ATTR]) == ["w", 4, k * 2, k * 2, n, 0]
    big = cuda_gemv(_linear_func(19456, 2560, norm=True, t=tirx.IntImm("int64", 1)), CUDA)
    assert list(big.attrs[pdl.L2_PREFETCH_ATTR]) == ["w", 16, 5120, 512, 19456, 0]
    lib = _build(f, mode)
    (body,) = _kernels(_cuda_module(lib).inspect_source("")).values()
    code = [ln.strip() for ln in body.splitlines() if ln.strip() and not ln.strip().startswith(("alignas", "__shared__"))]
    if mode == "prefetch":
        assert code[0].startswith("if (") and "threadIdx.x) < 4)" in code[0] and "< (int64_t)300)" in code[0]
        assert "threadIdx.y) == 0)" in code[0]
        assert code[1].startswith(PREFETCH) and "(uint)2048)" in code[1] and "* (int64_t)1024)" in code[1]
        assert code[3:5] == [WAIT, TRIGGER]
    else:
        assert code[:2] == [WAIT, TRIGGER] and PREFETCH not in body
    lib.export_library(str(tmp_path / "k.so"))
    assert pdl.PDL_TAG.encode() in (tmp_path / "k.so").read_bytes()


@needs_nvcc
def test_gemv_with_swiglu_of_its_output_prefetches_gate_and_up_rows():
    """The gate+up GEMV with out_act="swiglu": the block's rows alternate between the gate half
    and the up half of the weight (row j is weight row (j % 2) * N / 2 + j // 2), and so do
    the rows its lanes prefetch."""
    f = cuda_gemv(_linear_func(19456, 2560, norm=True, out_act="swiglu", t=tirx.IntImm("int64", 1)), CUDA)
    assert list(f.attrs[pdl.L2_PREFETCH_ATTR]) == ["w", 16, 5120, 512, 19456, 1]
    (body,) = _kernels(_cuda_module(_build(f, "prefetch")).inspect_source("")).values()
    line = next(ln for ln in body.splitlines() if ln.strip().startswith(PREFETCH))
    # lane r: (r & 1) * 9728 rows + block b's 8 rows of each half + (r >> 1) rows, 2560 elements each
    assert "& (int64_t)1) * (int64_t)24903680)" in line and "blockIdx.x)) * (int64_t)20480)" in line, line
    assert ">> (int64_t)1) * (int64_t)2560)" in line, line


def test_kernel_without_prefetch_attr_only_waits():
    """The device pass on a kernel after the host/device split: the tag goes before the dynamic
    shared memory tag (which must stay last), the wait and the trigger inside the thread bindings."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def kern(a: T.Buffer((64,), "float32")):
        T.func_attr({"tirx.kernel_launch_params": ["blockIdx.x", "threadIdx.x", pdl.DYN_SMEM_TAG],
                     "global_symbol": "kern"})
        bx = T.launch_thread("blockIdx.x", 2)
        tx = T.launch_thread("threadIdx.x", 32)
        a[bx * 32 + tx] = T.float32(1)

    out = pdl.pdl_kernel(kern)
    assert [str(t) for t in out.attrs[pdl.LAUNCH_PARAMS]] == ["blockIdx.x", "threadIdx.x", pdl.PDL_TAG,
                                                              pdl.DYN_SMEM_TAG]
    text = out.script()
    assert text.index("griddepcontrol(\"wait\"") > text.index('"threadIdx.x"')
    assert text.index("griddepcontrol(\"wait\"") < text.index("griddepcontrol(\"launch_dependents\"") < text.index("a[")
    assert pdl.pdl_kernel(out).same_as(out)  # once


def test_cuda_pdl_needs_sm90_and_a_known_mode(models):
    md = frontends.huggingface.model_def(models.checkpoint("gqa5x1").path)
    with pytest.raises(TargetError, match="sm_90 or later"):
        engine.compile(md, target="llvm", cuda_pdl=True)
    with pytest.raises(TargetError, match="sm_90 or later"):
        engine.compile(md, target={"kind": "cuda", "arch": "sm_80"}, cuda_pdl=True)
    with pytest.raises(ValueError, match="cuda_pdl must be"):
        engine.compile(md, target=CUDA, cuda_pdl="soon")


@needs_nvcc
def test_compiled_model_launches_every_kernel_with_pdl(models, tmp_path):
    """Every kernel of a model waits first; decode's GEMVs (wide32: every K a multiple of 32)
    prefetch their weights before; the decode step is still one CUDA graph."""
    md = frontends.huggingface.model_def(models.checkpoint("wide32", dtype="bfloat16").path)
    art = engine.compile(md, target=CUDA, max_seq_len=64, cuda_pdl=True)
    assert art.manifest["cuda_pdl"] == "prefetch" and art.manifest["cuda_graph"] is True
    kernels = _kernels(_cuda_module(art.executable.mod).inspect_source(""))
    assert len(kernels) > 20
    declaration = re.compile(r"(alignas|__shared__|extern __shared__|nvcuda::wmma::fragment)\b")
    for name, body in kernels.items():
        head = body.split(TRIGGER, 1)[0]
        assert WAIT in head, name
        # before the wait: declarations, and the lanes' prefetches
        before = [ln.strip() for ln in head.split(WAIT)[0].splitlines() if ln.strip()]
        assert all(declaration.match(ln) or ln.startswith((PREFETCH, "if (", "}")) for ln in before), (name, before)
        assert sum(ln.startswith("if (") for ln in before) == (PREFETCH in head), (name, before)
    prefetching = [n for n, b in kernels.items() if PREFETCH in b]
    # q+k+v, o, gate+up, down, LM head: one GEMV kernel each (the layers share theirs)
    assert len(prefetching) == 5, prefetching
    path = art.save(tmp_path / "art")
    assert (path / "model.so").read_bytes().count(pdl.PDL_TAG.encode()) >= 1
