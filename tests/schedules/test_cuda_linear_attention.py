"""The CUDA kernels of the gated DeltaNet's recurrences (schedules/cuda/linear_attention.py),
run serially on the CPU (tests/cuda_emulation.py) against the ops' numpy references: whole
prompts, and cached steps (a prompt, then one-token decode) that carry the state between
calls, with kv_len a scalar or, as static decode passes it, a (1,) int32 tensor."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import cuda_emulation
from inference_pio.ir import ops
from inference_pio.schedules.cuda.linear_attention import conv1d_kernel, delta_rule_kernel

NP = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}


def _kv(n: int, tensor: bool):
    return np.array([n], np.int32) if tensor else n


@pytest.mark.parametrize("c,k,dtype", [(12, 4, "float32"), (7, 3, "bfloat16"), (200, 4, "float32")])
def test_conv_whole_prompt(rng, c, k, dtype):
    x = rng.standard_normal((9, c)).astype(NP[dtype])
    w = rng.standard_normal((c, 1, k)).astype(NP[dtype])
    (y,) = cuda_emulation.run(conv1d_kernel(c, k, dtype, dtype, False, False), x, w, np.zeros_like(x))[2:]
    np.testing.assert_allclose(y.astype(np.float32), ops.causal_conv1d(x, w).astype(np.float32), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tensor", [False, True])
@pytest.mark.parametrize("first", [1, 2, 6])
def test_conv_steps_carry_the_state(rng, first, tensor):
    c, k = 7, 4
    w = rng.standard_normal((c, 1, k)).astype(np.float32)
    func = conv1d_kernel(c, k, "float32", "float32", True, tensor)
    state = np.full((k - 1, c), np.nan, np.float32)
    ref_state = state.copy()
    n = 0
    for t in (first, 2, 1, 1):
        x = rng.standard_normal((t, c)).astype(np.float32)
        n += t
        _, _, state, *rest = cuda_emulation.run(func, x, w, state, _kv(n, tensor), np.zeros_like(x))
        y = rest[-1]
        want = ops.causal_conv1d(x, w, ref_state, np.zeros(n))
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(state, ref_state)


def _delta_feeds(rng, t, hk, hv, dk, dv, dtype):
    r = lambda *s: rng.standard_normal(s).astype(NP[dtype])  # noqa: E731
    return [r(t, hk, dk), r(t, hk, dk), r(t, hv, dv), r(t, hv), r(t, hv)]


@pytest.mark.parametrize("hk,hv,dk,dv,dtype", [(2, 4, 6, 10, "float32"), (3, 3, 16, 40, "bfloat16"),
                                               (1, 2, 128, 128, "float32")])
def test_delta_rule_whole_prompt(rng, hk, hv, dk, dv, dtype):
    feeds = _delta_feeds(rng, 7, hk, hv, dk, dv, dtype)
    a_log, dt_bias = (rng.standard_normal(hv).astype(NP[dtype]) for _ in range(2))
    func = delta_rule_kernel(hk, hv, dk, dv, (dtype,) * 7, False, False)
    out = cuda_emulation.run(func, *feeds, a_log, dt_bias, np.zeros_like(feeds[2]))[-1]
    want = ops.gated_delta_rule(*feeds, a_log, dt_bias)
    np.testing.assert_allclose(out.astype(np.float32), want.astype(np.float32), rtol=2e-2 if dtype != "float32" else 1e-4,
                               atol=2e-2 if dtype != "float32" else 1e-5)


@pytest.mark.parametrize("tensor", [False, True])
def test_delta_rule_steps_carry_the_state(rng, tensor):
    hk, hv, dk, dv = 2, 4, 6, 37  # two column slices, the second partial
    a_log, dt_bias = (rng.standard_normal(hv).astype(np.float32) for _ in range(2))
    func = delta_rule_kernel(hk, hv, dk, dv, ("float32",) * 7, True, tensor)
    state = np.full((hv, dk, dv), np.nan, np.float32)
    ref_state = state.copy()
    n = 0
    for t in (5, 3, 1, 1):
        feeds = _delta_feeds(rng, t, hk, hv, dk, dv, "float32")
        n += t
        res = cuda_emulation.run(func, *feeds, a_log, dt_bias, state, _kv(n, tensor), np.zeros_like(feeds[2]))
        state, out = res[7], res[-1]
        want = ops.gated_delta_rule(*feeds, a_log, dt_bias, ref_state, np.zeros(n))
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(state, ref_state, rtol=1e-4, atol=1e-5)
