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


def _sample_func(v: int):
    from tvm import te

    from inference_pio.schedules.kernels import sample_token

    z, it, key = te.placeholder((1, v), "float32", "z"), te.placeholder((1,), "float32", "it"), \
        te.placeholder((1,), "int32", "key")
    outs = sample_token(z, it, key)
    # int64 indices, as Relax's emit_te makes them (engine.lower)
    func = te.create_prim_func([z, it, key, *outs], index_dtype_override="int64")
    return func, [o.shape for o in outs], [str(o.dtype) for o in outs]


@pytest.mark.parametrize("v,temperature", [(151936, 0.0), (151936, 0.7), (5000, 0.0)])
def test_sample_token_schedule_matches_the_reference(rng, v, temperature):
    """sample_token with the CUDA rule (schedules/cuda/sample.py: a block per slice of the
    vocabulary for the max and the argmax), run serially: the reference's token, the first
    maximum where two slices tie."""
    from inference_pio.ir.ops import sample_token
    from inference_pio.schedules.cuda.sample import sample_block
    from inference_pio.targets import resolve

    func, shapes, dtypes = _sample_func(v)
    sch = sample_block(func, resolve({"kind": "cuda", "arch": "sm_90a"}))
    z = (2 * rng.standard_normal((1, v))).astype(np.float32)
    z[0, [v // 3, v // 2]] = z.max() + 1  # a tie for the max in two slices
    inv_t = np.array([1 / temperature if temperature else 0.0], np.float32)
    for k in (3, 11):
        key = np.array([k], np.int32)
        outs = [np.zeros([int(d) for d in s], dt) for s, dt in zip(shapes, dtypes)]
        got = cuda_emulation.run(sch.mod["main"], z, inv_t, key, *outs)[3]
        assert got[0] == sample_token(z, inv_t, key)[0]
        if not temperature:
            assert got[0] == v // 3
