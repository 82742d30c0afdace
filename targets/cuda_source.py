"""The CUDA source TVM generates, mended before nvcc compiles it (`tvm_callback_cuda_postproc`).

One mend: bf16 WMMA fragment loads from shared memory. `nvcuda::wmma::load_matrix_sync` for a
bf16 fragment compiles (nvcc 13, sm_90a) to `wmma.load...bf16` on a *generic* address, which
ptxas turns into four 32-bit generic loads (LD.E) per fragment; the same call for an fp16
fragment gets the `.shared` state space inferred and becomes one LDSM (ldmatrix x4). Our
tensor-core GEMM (`schedules/cuda/matmul.py`) and prefill attention (`flash_tc.py`) load every
A and B fragment that way: 128 LD.E for the 64 HMMA of the 4B gate+up GEMM's main loop. So
the calls go through `inference_pio_wmma::load_matrix_sync`, whose overloads for 16x16x16 bf16
A and B fragments issue the same PTX instruction with `.shared` (the address converted with
`__cvta_generic_to_shared`) when the pointer is in shared memory, and call nvcuda's otherwise.
The fragment's registers (4 ints: `load_matrix_sync` itself writes `(int*)&fragment`) and
their layout are the instruction's, so nothing else changes. Every other fragment type goes
to nvcuda's template as before, as does everything on archs before sm_80 (no bf16 fragments).
"""
from __future__ import annotations

WMMA_LOAD = "nvcuda::wmma::load_matrix_sync("
HELPER_NS = "inference_pio_wmma"

_LOAD_BF16 = """
#define INFERENCE_PIO_BF16_LOAD(MAT, LAYOUT, PTX)                                                     \\
  __device__ __forceinline__ void load_matrix_sync(                                                  \\
      nvcuda::wmma::fragment<nvcuda::wmma::MAT, 16, 16, 16, __nv_bfloat16, nvcuda::wmma::LAYOUT>& f, \\
      const __nv_bfloat16* p, unsigned ldm) {                                                         \\
    if (__isShared(p)) {                                                                              \\
      int* r = reinterpret_cast<int*>(&f);                                                            \\
      asm volatile(PTX " {%0, %1, %2, %3}, [%4], %5;"                                                 \\
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])                                   \\
                   : "r"(static_cast<unsigned>(__cvta_generic_to_shared(p))), "r"(ldm) : "memory");    \\
    } else {                                                                                          \\
      nvcuda::wmma::load_matrix_sync(f, p, ldm);                                                      \\
    }                                                                                                 \\
  }
namespace @NS@ {
template <typename Frag, typename P>
__device__ __forceinline__ void load_matrix_sync(Frag& f, const P* p, unsigned ldm) {
  nvcuda::wmma::load_matrix_sync(f, p, ldm);
}
template <typename Frag, typename P>
__device__ __forceinline__ void load_matrix_sync(Frag& f, const P* p, unsigned ldm, nvcuda::wmma::layout_t l) {
  nvcuda::wmma::load_matrix_sync(f, p, ldm, l);
}
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800  // (bf16 fragments: sm_80 and later)
INFERENCE_PIO_BF16_LOAD(matrix_a, row_major, "wmma.load.a.sync.aligned.row.m16n16k16.shared.bf16")
INFERENCE_PIO_BF16_LOAD(matrix_a, col_major, "wmma.load.a.sync.aligned.col.m16n16k16.shared.bf16")
INFERENCE_PIO_BF16_LOAD(matrix_b, row_major, "wmma.load.b.sync.aligned.row.m16n16k16.shared.bf16")
INFERENCE_PIO_BF16_LOAD(matrix_b, col_major, "wmma.load.b.sync.aligned.col.m16n16k16.shared.bf16")
#endif
}  // namespace @NS@
#undef INFERENCE_PIO_BF16_LOAD
""".replace("@NS@", HELPER_NS)


def mend(code: str) -> str:
    """``code`` (one CUDA module's source) with its WMMA fragment loads through our overloads."""
    if WMMA_LOAD not in code or f"namespace {HELPER_NS}" in code:  # (nothing to mend, or mended)
        return code
    include = "#include <mma.h>\n"
    at = code.find(include)
    if at < 0:  # (TVM includes mma.h wherever it emits a wmma call)
        raise RuntimeError("CUDA source calls nvcuda::wmma::load_matrix_sync without including <mma.h>")
    at += len(include)
    body = code[at:].replace(WMMA_LOAD, f"{HELPER_NS}::load_matrix_sync(")
    return code[:at] + _LOAD_BF16 + body


def register() -> None:
    """Mend every CUDA module this process compiles (`mend`)."""
    import tvm_ffi

    @tvm_ffi.register_global_func("tvm_callback_cuda_postproc", override=True)
    def _postproc(code, _target):
        return mend(str(code))
