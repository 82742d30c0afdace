"""CUDA attention kernels, checked on the CPU: their loop nests run serially (tests/cuda_emulation.py).

Kernel level: the decode (split over key chunks, then merged) and flash (prefill) kernels
against numpy at odd sizes, across chunk and tile edges. Model level: a tiny Qwen3 compiled
with every CUDA schedule (ours and dlight's) matches transformers and the CPU engine.
"""
from __future__ import annotations

import numpy as np
import pytest

import cuda_emulation
import hf_fixtures
from inference_pio import engine, frontends
from inference_pio.schedules.cuda.attention import BQ, KC, QNorm, _decode_kernel, _flash_kernel

CUDA = {"kind": "cuda", "arch": "sm_90a"}
HQ, HKV, D, DV = 6, 2, 20, 16


def reference(q, k, v, s, scale):
    """Causal GQA attention of the T rows of q, at positions s-T .. s-1, over rows [0, s) of k, v."""
    t, g = q.shape[0], q.shape[1] // k.shape[1]
    out = np.zeros((t, q.shape[1], v.shape[2]), np.float32)
    visible = np.arange(s)[None, :] <= np.arange(t)[:, None] + s - t
    for h in range(q.shape[1]):
        sc = np.where(visible, q[:, h] @ k[:s, h // g].T * scale, -np.inf)
        p = np.exp(sc - sc.max(1, keepdims=True))
        out[:, h] = (p / p.sum(1, keepdims=True)) @ v[:s, h // g]
    return out


def _randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("kv_len_tensor", [False, True])
def test_decode_kernel_merges_key_chunks(rng, kv_len_tensor):
    cache = 3 * KC + 5
    f = _decode_kernel(HQ, HKV, 36, 36, cache, ("float32",) * 4, 0.3, kv_len_tensor=kv_len_tensor)
    # rows past kv_len are garbage, NaN included: they must never be read
    kc, vc = _randn(rng, cache, HKV, 36), _randn(rng, cache, HKV, 36)
    for kv_len in (1, KC - 1, KC, KC + 1, cache):  # one partial chunk .. several, the last one partial
        q = _randn(rng, 1, HQ, 36)
        kcn, vcn = kc.copy(), vc.copy()
        kcn[kv_len:], vcn[kv_len:] = np.nan, np.nan
        out = np.zeros((1, HQ, 36), np.float32)
        args = (q, kcn, vcn, np.array([kv_len], np.int32), out) if kv_len_tensor else (q, kcn, vcn, out, kv_len)
        got = cuda_emulation.run(f, *args)[-1 if kv_len_tensor else 3]
        ref = reference(q, kc, vc, kv_len, 0.3)
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max(), kv_len


@pytest.mark.parametrize("kv_len_tensor,rot", [(False, 36), (True, 20)])
def test_decode_kernel_with_the_query_norm_fused(rng, kv_len_tensor, rot):
    """q = norm_rotary(x, w, table) of a head window of x (`passes.fuse_norm_attention`), full
    and partial rotary."""
    from inference_pio.ir.ops import norm_rotary, rope_table

    cache, start, cols, kv_len = 2 * KC + 3, 5, 5 + HQ * 36 + 7, KC + 9
    f = _decode_kernel(HQ, HKV, 36, 36, cache, ("float32",) * 4, 0.3, kv_len_tensor=kv_len_tensor,
                       q_norm=QNorm(start, cols, rot, 1e-6, "float32"))
    x, w = 3 * _randn(rng, 1, cols), 1 + 0.3 * _randn(rng, 36)
    table = rope_table(np.array([kv_len - 1], np.int32), theta=1e4, rotary_dim=rot)
    kc, vc = _randn(rng, cache, HKV, 36), _randn(rng, cache, HKV, 36)
    out = np.zeros((1, HQ, 36), np.float32)
    args = (x, kc, vc, np.array([kv_len], np.int32), w, table, out) if kv_len_tensor else \
        (x, kc, vc, w, table, out, kv_len)
    got = cuda_emulation.run(f, *args)[-1 if kv_len_tensor else 5]
    q = norm_rotary(x, w, table, 1e-6, start=start, heads=HQ)
    ref = reference(q, kc, vc, kv_len, 0.3)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_flash_kernel_without_cache(rng):
    f = _flash_kernel(HQ, HKV, D, DV, None, ("float32",) * 4, 0.3, causal=True)
    for t in (1, 5, BQ + 6):  # the last query tile partial, key tiles past the causal limit skipped
        q, k, v = _randn(rng, t, HQ, D), _randn(rng, t, HKV, D), _randn(rng, t, HKV, DV)
        got = cuda_emulation.run(f, q, k, v, np.zeros((t, HQ, DV), np.float32))[3]
        ref = reference(q, k, v, t, 0.3)
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max(), t


@pytest.mark.parametrize("t,kv_len", [(3, 3), (5, 90), (BQ + 2, 150)])
def test_flash_kernel_over_the_cache(rng, t, kv_len):
    cache = 160
    f = _flash_kernel(HQ, HKV, D, DV, cache, ("float32",) * 4, 0.3, causal=True)
    q, kc, vc = _randn(rng, t, HQ, D), _randn(rng, cache, HKV, D), _randn(rng, cache, HKV, DV)
    got = cuda_emulation.run(f, q, kc, vc, np.zeros((t, HQ, DV), np.float32), kv_len)[3]
    ref = reference(q, kc, vc, kv_len, 0.3)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("name,dtype,tol,static", [("gqa5x1", "float32", 1e-4, False),
                                                   ("bf16", "bfloat16", None, True),
                                                   ("wide32", "bfloat16", None, False),
                                                   ("wide256", "bfloat16", None, False),
                                                   ("gqa5x1", "float16", None, False)])
def test_model_with_cuda_schedules_matches_transformers(models, tmp_path, name, dtype, tol, static):
    """static: decode compiled as for whole-step CUDA graphs (`passes.static_decode`)."""
    ck = models.checkpoint(name, dtype=dtype)
    md = frontends.huggingface.model_def(ck.path)
    art = cuda_emulation.compile_emulated(md, CUDA, max_seq_len=96, static_decode=static).save(tmp_path / "art")
    rt = engine.load(art, weights=ck.path, device="cpu")
    ids = [int(i) for i in np.arange(3, 3 + BQ + 5) % md.config.vocab_size]  # two query tiles
    if tol is not None:
        assert hf_fixtures.rel_err(rt.logits(ids), hf_fixtures.hf_logits(ck.model, ids)) <= tol
    cpu = models.runtime(name, ckpt_dtype=dtype, max_seq_len=96)
    np.testing.assert_allclose(rt.logits(ids[:9]), cpu.logits(ids[:9]), rtol=0, atol=0.05 if tol is None else 1e-4)
    assert rt.generate(ids[:9], max_new_tokens=12) == cpu.generate(ids[:9], max_new_tokens=12)
    # top-k sampling reads the best candidates from the `top_k` function, with the same draws
    assert "top_k" in rt.manifest["functions"] and "top_k" not in cpu.manifest["functions"]
    kw = dict(max_new_tokens=12, temperature=0.8, top_k=10, top_p=0.9, seed=3)
    assert rt.generate(ids[:9], **kw) == cpu.generate(ids[:9], **kw)


def test_kernels_at_qwen3_head_shapes_in_bf16(rng):
    """Head dim 128 in bf16: the decode kernel's 16-byte (8-element) row loads, GQA group 4."""
    import ml_dtypes

    bf16 = ml_dtypes.bfloat16
    hq, hkv, d, cache, kv_len = 8, 2, 128, 2 * KC + 3, 2 * KC + 1
    q = _randn(rng, 1, hq, d).astype(bf16)
    kc, vc = _randn(rng, cache, hkv, d).astype(bf16), _randn(rng, cache, hkv, d).astype(bf16)
    f = _decode_kernel(hq, hkv, d, d, cache, ("bfloat16",) * 4, d ** -0.5)
    got = cuda_emulation.run(f, q, kc, vc, np.zeros((1, hq, d), bf16), kv_len)[3].astype(np.float32)
    ref = reference(*(a.astype(np.float32) for a in (q, kc, vc)), kv_len, d ** -0.5)
    assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max()
    t = 9
    q = _randn(rng, t, hq, d).astype(bf16)
    f = _flash_kernel(hq, hkv, d, d, cache, ("bfloat16",) * 4, d ** -0.5, causal=True)
    got = cuda_emulation.run(f, q, kc, vc, np.zeros((t, hq, d), bf16), kv_len)[3].astype(np.float32)
    ref = reference(*(a.astype(np.float32) for a in (q, kc, vc)), kv_len, d ** -0.5)
    assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max()
