"""The CUDA kv_append schedule (schedules/cuda/kv_append.py), run serially on the CPU
(tests/cuda_emulation.py) against the op's numpy reference."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import cuda_emulation
from inference_pio.ir.ops import kv_append, rope_table
from inference_pio.schedules import kernels
from inference_pio.schedules.cuda.kv_append import kv_append_rows
from inference_pio.targets import resolve

CUDA = resolve({"kind": "cuda", "arch": "sm_90a"})


@pytest.mark.parametrize("t,h,d,rot,norm,kv_len_tensor", [
    (1, 8, 128, 128, True, True),    # Qwen3's decode step: bf16 cache, head dim 128
    (5, 2, 10, 6, True, False),      # a prompt; partial rotary, head dim not a power of two
    (3, 3, 16, None, False, False),  # the values: a plain copy
])
def test_kv_append_schedule_matches_reference(rng, t, h, d, rot, norm, kv_len_tensor):
    cap, start, cols, kv_len, eps = 40, 7, 7 + h * d + 3, 11, 1e-6
    func = kernels.kv_append((cap, h, d), "bfloat16", "float32", kv_len_tensor, start, cols,
                             norm=("bfloat16", rot, eps) if norm else None)
    sch = kv_append_rows(func, CUDA)
    assert sch is not None
    x = 3 * rng.standard_normal((t, cols)).astype(np.float32)
    cache = rng.standard_normal((cap, h, d)).astype(ml_dtypes.bfloat16)
    w = (1 + 0.3 * rng.standard_normal(d)).astype(ml_dtypes.bfloat16)
    table = rope_table(np.arange(kv_len - t, kv_len, dtype=np.int32), rotary_dim=rot or 2, theta=1e4)
    n = np.array([kv_len], np.int32) if kv_len_tensor else kv_len
    args = [cache.copy(), x, n] + ([w, table] if norm else [])
    got = cuda_emulation.run(sch.mod["main"], *args)[0]
    ref = kv_append(cache.copy(), x, n if kv_len_tensor else np.zeros(kv_len), *([w, table] if norm else []),
                    kv_len_tensor=kv_len_tensor, start=start, eps=eps if norm else None)
    np.testing.assert_array_equal(got[: kv_len - t].astype(np.float32), cache[: kv_len - t].astype(np.float32))
    np.testing.assert_allclose(got.astype(np.float32), ref.astype(np.float32), rtol=1e-2, atol=1e-2)
