"""targets/cuda_source.py: bf16 WMMA fragment loads from shared memory as ldmatrix, not as four
generic loads each."""
import re
import shutil
import subprocess

import pytest

from inference_pio.targets import cuda_source

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")

SNIPPET = """#include <cuda_bf16.h>
#include <mma.h>
extern "C" __global__ void k(float* out) {
  nvcuda::wmma::load_matrix_sync(a[0], (&(((nv_bfloat16*)buf)[0])), 72);
  nvcuda::wmma::load_matrix_sync(c[0], out, 16, nvcuda::wmma::mem_row_major);
}
"""


def test_mend_routes_every_load_through_the_overloads_once():
    out = cuda_source.mend(SNIPPET)
    head, body = out.split("extern \"C\"", 1)
    assert "namespace inference_pio_wmma" in head and head.index("#include <mma.h>") < head.index("namespace")
    assert body.count("inference_pio_wmma::load_matrix_sync(") == 2 and "nvcuda::wmma::load_matrix_sync" not in body
    assert cuda_source.mend(out) == out  # mended once only
    assert cuda_source.mend("extern \"C\" __global__ void k() {}") == "extern \"C\" __global__ void k() {}"


@needs_nvcc
def test_the_tensor_core_linear_loads_its_bf16_fragments_from_shared_memory(tmp_path):
    """The PTX of the tensor-core GEMM (and so, ptxas, LDSM): `.shared` bf16 fragment loads, no
    generic ones. nvcc infers the state space for fp16 fragments but not for bf16."""
    import tvm
    from tvm import te, tirx

    from inference_pio.schedules import kernels
    from inference_pio.schedules.cuda.matmul import tensor_core_linear
    from inference_pio.targets import resolve
    from inference_pio.targets.cuda_host import enable_cuda_codegen

    cuda = resolve({"kind": "cuda", "arch": "sm_90a"})
    t = tirx.Var("t", "int64")
    x, w = te.placeholder((t, 256), "float32", name="x"), te.placeholder((512, 256), "bfloat16", name="w")
    f = te.create_prim_func([x, w, kernels.linear(x, w)]).with_attrs(
        {"op_kind": "linear", "bias": False, "residual": False, "act": "", "norm": False, "precision": "medium"})
    enable_cuda_codegen()
    with cuda.to_tvm() as tgt:
        ex = tvm.compile(tvm.IRModule({"main": tensor_core_linear(f, cuda).with_attr("global_symbol", "main")}),
                         target=tgt)
    src = next(m for m in ex.mod.imports if m.kind == "cuda").inspect_source("")
    (tmp_path / "k.cu").write_text(src)
    subprocess.run(["nvcc", "-arch=sm_90a", "-ptx", "-o", str(tmp_path / "k.ptx"), str(tmp_path / "k.cu")],
                   check=True, capture_output=True)
    loads = re.findall(r"wmma\.load\.[ab]\.sync\.aligned\.\w+\.m16n16k16(\.shared)?\.bf16", (tmp_path / "k.ptx").read_text())
    assert loads and all(loads), f"{loads.count('')} generic bf16 fragment loads of {len(loads)}"


@needs_nvcc
def test_mended_source_still_compiles_where_bf16_fragments_do_not_exist(tmp_path):
    """An fp16-only WMMA kernel (e.g. dlight's) for sm_75, which has no bf16 fragments: the bf16
    overloads are left out there."""
    code = cuda_source.mend("""#include <mma.h>
extern "C" __global__ void k(const half* a) {
  nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, half, nvcuda::wmma::row_major> f;
  nvcuda::wmma::load_matrix_sync(f, a, 16);
}
""")
    (tmp_path / "k.cu").write_text(code)
    subprocess.run(["nvcc", "-arch=sm_75", "-cubin", "-o", str(tmp_path / "k.cubin"), str(tmp_path / "k.cu")],
                   check=True, capture_output=True)
