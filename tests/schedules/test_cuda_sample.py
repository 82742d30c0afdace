"""The CUDA top-candidates kernel (schedules/cuda/sample.py), run serially on the CPU
(tests/cuda_emulation.py), against numpy's stable order."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import cuda_emulation
from inference_pio.schedules.cuda.sample import top_candidates


@pytest.mark.parametrize("v,k,ties", [(131, 64, False),    # one block: a tiny vocabulary
                                      (5003, 16, True),    # several blocks, the last one short
                                      (151936, 64, True)])  # Qwen3's vocabulary: 64 blocks
def test_top_candidates_are_the_best_in_stable_order(rng, v, k, ties):
    z = (2 * rng.standard_normal((1, v))).astype(np.float32)
    if ties:  # a run of equal logits straddling the cut: lower token ids first
        z[0, v // 3: v // 3 + k + 5] = np.sort(z[0])[-k // 2]
    got = cuda_emulation.run(top_candidates(v, k), z, np.zeros((2, k), np.float32))[-1]
    best = np.lexsort((np.arange(v), -z[0]))[:k]
    np.testing.assert_array_equal(got[1].astype(np.int64), best)
    np.testing.assert_array_equal(got[0], z[0, best])


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
def test_top_candidates_compile_with_two_barriers_per_phase(tmp_path):
    import tvm

    from inference_pio.targets import resolve
    from inference_pio.targets.cuda_host import enable_cuda_codegen

    enable_cuda_codegen()
    cuda = resolve({"kind": "cuda", "arch": "sm_90a"})
    with cuda.to_tvm() as tgt:
        ex = tvm.compile(tvm.IRModule({"main": top_candidates(151936).with_attr("global_symbol", "main")}),
                         target=tgt)
    src = ex.mod.imports[0].inspect_source("")
    assert src.count("__syncthreads()") == 6  # per kernel: in each sort phase 2, after it 1
    ex.export_library(tmp_path / "k.so")
    assert b".nv.info" in (tmp_path / "k.so").read_bytes()
