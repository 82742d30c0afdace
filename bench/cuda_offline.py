"""What can be measured of our CUDA kernels without a GPU: ptxas resource use (sm_90a, via
nvcc) and, for the split tensor-core GEMM and the tensor-core prefill attention, their accuracy
when their loop nests run serially on the CPU (tests/cuda_emulation.py; the bf16 splits rounded
as on the GPU).

    python bench/cuda_offline.py

Prints, for the tensor-core linear with bf16 and fp16 weights at Qwen3-0.6B shapes (64x64
tiles: N=1024, K=2048, split-K as the model compiles it and unsliced; 128x128: the LM head,
N=151936, K=1024), for prefill attention at Qwen3-0.6B's heads (ours on CUDA cores, and on
tensor cores), for `top_candidates` (151,936 logits) and the decode GEMVs with their fusions
(norm, swiglu of the output, swiglu of x): registers, spills and static shared memory per
kernel; with cuobjdump on PATH (docs/gpu.md), the memory and tensor-core instructions of
Qwen3-4B's gate+up GEMM over fp32 and over bf16 x. Then the emulated relative
error against float64 math of the GEMM at K=72, N=200, T=1/7/130, beside rounding x and w to
bf16 once (what one bf16 product would give), of its split-K form, of the tensor-core
attention (4 and 8 warps), and of whole tiny 16-bit models against transformers.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "schedules"))
CUDA = {"kind": "cuda", "arch": "sm_90a"}


def _cubin(func, tmp: Path, tir_pipeline: str = "default") -> subprocess.CompletedProcess:
    """``func`` compiled for sm_90a (through ``tir_pipeline``: e.g.
    `schedules.cuda.pdl.pipeline("prefetch")`), its CUDA source run through nvcc into
    ``tmp``/k.cubin with ptxas's report; returns nvcc's process."""
    import tvm

    from inference_pio.targets import resolve
    from inference_pio.targets.cuda_host import enable_cuda_codegen

    enable_cuda_codegen()
    with resolve(CUDA).to_tvm() as tgt:
        ex = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=tgt,
                         tir_pipeline=tir_pipeline)
    src = tmp / "k.cu"
    src.write_text(ex.mod.imports[0].inspect_source(""))
    return subprocess.run(["nvcc", "-arch=sm_90a", "-cubin", "-o", str(tmp / "k.cubin"), "-Xptxas", "-v", str(src)],
                          capture_output=True, text=True, check=True)


def ptxas(func, tir_pipeline: str = "default") -> list[str]:
    """ptxas's register, shared memory and spill lines for ``func`` compiled for sm_90a."""
    with tempfile.TemporaryDirectory() as tmp:
        r = _cubin(func, Path(tmp), tir_pipeline)
    return [re.sub(r"^ptxas info\s*:\s*", "", ln.strip()) for ln in r.stderr.splitlines()
            if "registers" in ln or "spill" in ln]


MEMORY_OPS = ("LDG", "STG", "LDS", "STS", "LDSM", "LD", "ST", "LDL", "STL", "HMMA")


def sass_counts(func) -> dict[str, int] | None:
    """How many of each `MEMORY_OPS` instruction (and tensor-core products) the machine code of
    ``func`` has, from cuobjdump -sass (None where cuobjdump is not on PATH; docs/gpu.md says how
    to get it). Generic LD / ST where shared memory is meant are the slow path: that is how the
    bf16 WMMA fragment loads were found (`targets/cuda_source.py`)."""
    import shutil
    from collections import Counter

    if shutil.which("cuobjdump") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        _cubin(func, Path(tmp))
        sass = subprocess.run(["cuobjdump", "-sass", str(Path(tmp) / "k.cubin")], capture_output=True, text=True,
                              check=True).stdout
    ops = Counter(m.split(".")[0] for m in re.findall(r"^\s+/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)",
                                                      sass, re.M))
    return {op: ops[op] for op in MEMORY_OPS if ops[op]}


def main() -> None:
    import ml_dtypes
    from tvm import tirx

    import cuda_emulation
    from test_cuda_matmul import _linear_func, _reference
    from inference_pio.schedules.cuda.gemv import gemv
    from inference_pio.schedules.cuda.matmul import tensor_core_linear, untensorized
    from inference_pio.schedules.cuda.sample import top_candidates
    from inference_pio.targets import resolve

    cuda = resolve(CUDA)
    print("ptxas, sm_90a")
    for wd in ("bfloat16", "float16"):
        for n, k, cap in ((1024, 2048, None), (1024, 2048, 1), (151936, 1024, None)):
            f = tensor_core_linear(_linear_func(n, k, wd, residual=n == 1024), cuda, max_slices=cap)
            form = " (unsliced)" if cap == 1 else " (split-K: GEMM, sum)" if n == 1024 else ""
            print(f"  linear {wd} N={n} K={k}{form}: " + "; ".join(ptxas(f)))
    print("  top_candidates V=151936: " + "; ".join(ptxas(top_candidates(151936))))
    for xd in ("float32", "bfloat16"):
        gemm = tensor_core_linear(_linear_func(19456, 2560, "bfloat16", x_dtype=xd).with_attr("precision", "medium"),
                                  cuda)
        counts = sass_counts(gemm)
        print(f"  SASS of the Qwen3-4B gate+up GEMM at \"medium\", {xd} x (memory and tensor-core instructions): "
              + (str(counts) if counts is not None else "no cuobjdump on PATH (docs/gpu.md)"))
    from inference_pio.schedules.cuda.attention import _flash_kernel
    from inference_pio.schedules.cuda.flash_tc import flash_tc_kernel

    dims = (16, 8, 128, 128, 4096, ("float32", "bfloat16", "bfloat16", "float32"), 128 ** -0.5)
    print("  prefill attention, CUDA cores (ours), 0.6B heads: " + "; ".join(ptxas(_flash_kernel(*dims, causal=True))))
    print("  prefill attention, tensor cores (flash_tc), 0.6B heads: " + "; ".join(ptxas(flash_tc_kernel(*dims))))
    print("  the same, 8 warps: " + "; ".join(ptxas(flash_tc_kernel(*dims, warps=8))))
    from inference_pio.schedules.cuda.attention import KVAppend, QNorm, _decode_kernel

    for label, hq, sync in (("0.6B", 16, 0), ("0.6B", 16, 8), ("4B", 32, 0), ("4B", 32, 8)):
        f = _decode_kernel(hq, 8, 128, 128, 4096, ("float32", "bfloat16", "bfloat16", "float32"), 128 ** -0.5,
                           kv_len_tensor=True, q_norm=QNorm(0, (hq + 16) * 128, 128, 1e-6, "bfloat16"),
                           append=KVAppend(hq * 128, (hq + 8) * 128, "bfloat16"), sync=sync)
        form = "merged in its last blocks (graphed decode)" if sync else "then the merge kernel"
        print(f"  decode attention with its appends, {label} heads, {form}: " + "; ".join(ptxas(f)))
    one = tirx.IntImm("int64", 1)
    for label, n, k, kw in (("q+k+v, rms_norm fused, 0.6B", 4096, 1024, dict(norm=True)),
                            ("gate+up, rms_norm and swiglu fused, 4B", 19456, 2560, dict(norm=True, out_act="swiglu")),
                            ("down, 4B", 2560, 9728, dict(residual=True)),
                            ("down, swiglu fused (where gate+up cannot take it), 4B", 2560, 9728,
                             dict(act="swiglu", residual=True))):
        sch = gemv(_linear_func(n, k, "bfloat16", t=one, **kw), cuda)
        print(f"  GEMV {label} N={n} K={k}: " + "; ".join(ptxas(sch.mod["main"])))
    print("emulated relative error, K=72 N=200")
    rng = np.random.default_rng(0)
    for wd, np_wd in (("bfloat16", ml_dtypes.bfloat16), ("float16", np.float16)):
        for t in (1, 7, 130):
            with untensorized():
                f = tensor_core_linear(_linear_func(200, 72, wd, t=tirx.Var("t", "int64")), cuda)
            x = (rng.standard_normal((t, 72)) * 3).astype(np.float32)
            w = rng.standard_normal((200, 72)).astype(np_wd)
            got = cuda_emulation.run(f, x, w, np.zeros((t, 200), np.float32))[-1].astype(np.float64)
            ref = _reference(x, w, None, None, None)
            bf = ml_dtypes.bfloat16
            once = x.astype(bf).astype(np.float64) @ w.astype(bf).astype(np.float64).T
            e = lambda a: np.abs(a - ref).max() / np.abs(ref).max()  # noqa: E731
            print(f"  {wd} T={t}: split {e(got):.1e}, bf16(x) bf16(w) {e(once):.1e}")
    print("emulated relative error, split-K (K=512 N=200: 4 slices up to 512 rows, 2 up to 1024, then 1)")
    rng = np.random.default_rng(1)
    for t in (5, 700, 1100):
        with untensorized():
            f = tensor_core_linear(_linear_func(200, 512, "bfloat16", t=tirx.Var("t", "int64")), cuda)
        x = (rng.standard_normal((t, 512)) * 3).astype(np.float32)
        w = rng.standard_normal((200, 512)).astype(ml_dtypes.bfloat16)
        got = cuda_emulation.run(f, x, w, np.zeros((t, 200), np.float32))[-1].astype(np.float64)
        ref = _reference(x, w, None, None, None)
        print(f"  bfloat16 T={t}: {np.abs(got - ref).max() / np.abs(ref).max():.1e}")
    print("emulated relative error, tensor-core prefill attention (6 heads on 2, head dim 48; T new rows "
          "after kv_len - T cached; bf16 cache)")
    from test_cuda_attention import reference

    rng = np.random.default_rng(2)
    bf = ml_dtypes.bfloat16
    for warps, cases in ((4, ((5, 90), (70, 150))), (8, ((140, 280),))):
        with untensorized():
            f = flash_tc_kernel(6, 2, 48, 48, 300, ("float32", "bfloat16", "bfloat16", "float32"), 0.3, warps=warps)
        for t, kv_len in cases:
            q = (rng.standard_normal((t, 6, 48)) * 2).astype(np.float32)
            kc, vc = rng.standard_normal((300, 2, 48)).astype(bf), rng.standard_normal((300, 2, 48)).astype(bf)
            got = cuda_emulation.run(f, q, kc, vc, np.zeros((t, 6, 48), np.float32), kv_len)[3]
            ref = reference(q, kc.astype(np.float32), vc.astype(np.float32), kv_len, 0.3)
            print(f"  {warps} warps, T={t} kv_len={kv_len}: {np.abs(got - ref).max() / np.abs(ref).max():.1e}")
    models()


def models() -> None:
    """Whole tiny 16-bit models compiled with every CUDA schedule and run serially, against
    transformers in fp32 over the same weights (what remote.py's GPU check holds to 1e-4)."""
    import tempfile

    import cuda_emulation
    import hf_fixtures
    from inference_pio import engine, frontends

    print("emulated whole models, relative error vs transformers in fp32 over the same weights (69 tokens)")
    for name, dtype in (("bf16", "bfloat16"), ("wide32", "bfloat16"), ("wide256", "bfloat16"), ("wide32", "float16")):
        with tempfile.TemporaryDirectory() as d:
            ck = hf_fixtures.make_checkpoint(Path(d) / "ck", name, dtype=dtype)
            md = frontends.huggingface.model_def(ck.path)
            art = cuda_emulation.compile_emulated(md, CUDA, max_seq_len=96).save(Path(d) / "art")
            rt = engine.load(art, weights=ck.path, device="cpu")
            ids = [int(i) for i in np.arange(3, 3 + 69) % md.config.vocab_size]
            ref = hf_fixtures.hf_logits(hf_fixtures.rounded_reference(ck.model, dtype), ids)
            print(f"  {name} {dtype}: {hf_fixtures.rel_err(rt.logits(ids), ref):.1e}")


if __name__ == "__main__":
    main()
