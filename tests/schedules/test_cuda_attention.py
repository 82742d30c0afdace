"""CUDA attention kernels, checked on the CPU: their loop nests run serially (tests/cuda_emulation.py).

Kernel level: the decode (split over key chunks, then merged) and flash (prefill) kernels
against numpy at odd sizes, across chunk and tile edges; also the tensor-core flash kernel
(schedules/cuda/flash_tc.py, a variant not yet picked by the rules), with its 16x16 fragment
operations as loops and its bf16 splits rounded as on the GPU, and its WMMA form through nvcc. Model level: a tiny Qwen3 compiled
with every CUDA schedule (ours and dlight's) matches transformers and the CPU engine.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import cuda_emulation
import hf_fixtures
from inference_pio import engine, frontends
from inference_pio.schedules.kernels import decode_scratch_shape
from inference_pio.schedules.cuda.attention import BQ, KC, KVAppend, QNorm, _decode_kernel, _flash_kernel
from inference_pio.schedules.cuda.flash_tc import BK as TC_BK, BQ as TC_BQ, flash_tc_kernel, supported
from inference_pio.schedules.cuda.matmul import untensorized

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
        scratch = np.full(decode_scratch_shape(HQ, 36, cache), np.nan, np.float32)  # the static form's
        args = (q, kcn, vcn, np.array([kv_len], np.int32), out, scratch) if kv_len_tensor else (q, kcn, vcn, out, kv_len)
        got = cuda_emulation.run(f, *args)[-2 if kv_len_tensor else 3]
        ref = reference(q, kc, vc, kv_len, 0.3)
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max(), kv_len


@pytest.mark.parametrize("kv_len_tensor", [False, True])
def test_decode_merge_past_one_round_of_chunks(rng, kv_len_tensor):
    """Head dim 128: the merge's 4 threads per column take 8 chunks each in the first round, so
    past 32 chunks the rest come in a second round."""
    from inference_pio.schedules.cuda.attention import MERGE_UNROLL, DECODE_THREADS

    assert (DECODE_THREADS // 128) * MERGE_UNROLL == 32
    cache = 37 * KC + 3
    f = _decode_kernel(2, 1, 128, 128, cache, ("float32",) * 4, 0.1, kv_len_tensor=kv_len_tensor)
    kc, vc = _randn(rng, cache, 1, 128), _randn(rng, cache, 1, 128)
    for kv_len in (32 * KC, 33 * KC + 5, cache):
        q = _randn(rng, 1, 2, 128)
        out = np.zeros((1, 2, 128), np.float32)
        scratch = np.full(decode_scratch_shape(2, 128, cache), np.nan, np.float32)
        args = (q, kc, vc, np.array([kv_len], np.int32), out, scratch) if kv_len_tensor else (q, kc, vc, out, kv_len)
        got = cuda_emulation.run(f, *args)[-2 if kv_len_tensor else 3]
        ref = reference(q, kc, vc, kv_len, 0.1)
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
    scratch = np.full(decode_scratch_shape(HQ, 36, cache), np.nan, np.float32)
    args = (x, kc, vc, np.array([kv_len], np.int32), w, table, out, scratch) if kv_len_tensor else \
        (x, kc, vc, w, table, out, kv_len)
    got = cuda_emulation.run(f, *args)[-2 if kv_len_tensor else 5]
    q = norm_rotary(x, w, table, 1e-6, start=start, heads=HQ)
    ref = reference(q, kc, vc, kv_len, 0.3)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("kv_len_tensor,rot,kv_len", [(False, 36, KC + 9), (True, 20, 2 * KC), (True, 36, 1),
                                                       (False, 20, 2 * KC + 1)])
def test_decode_kernel_with_the_append_fused(rng, kv_len_tensor, rot, kv_len):
    """append_attention (`passes.fuse_append_attention`): the block whose chunk holds row
    kv_len - 1 writes the step's key (normed, rotated) and value there, and every block attends
    over rows [0, kv_len); the other rows of the caches stay as they were. kv_len at a chunk's
    first row, at its last, and at the first row of all."""
    from inference_pio.ir.ops import append_attention, rope_table

    cache, start, k_start, v_start = 2 * KC + 3, 5, 5 + HQ * 36 + 4, 5 + HQ * 36 + 4 + HKV * 36
    cols = v_start + HKV * 36 + 3
    f = _decode_kernel(HQ, HKV, 36, 36, cache, ("float32",) * 4, 0.3, kv_len_tensor=kv_len_tensor,
                       q_norm=QNorm(start, cols, rot, 1e-6, "float32"), append=KVAppend(k_start, v_start, "float32"))
    x, w, kw = 3 * _randn(rng, 1, cols), 1 + 0.3 * _randn(rng, 36), 1 + 0.3 * _randn(rng, 36)
    table = rope_table(np.array([kv_len - 1], np.int32), theta=1e4, rotary_dim=rot)
    kc, vc = _randn(rng, cache, HKV, 36), _randn(rng, cache, HKV, 36)
    kc[kv_len:], vc[kv_len:] = np.nan, np.nan  # rows past kv_len: never read
    out = np.zeros((1, HQ, 36), np.float32)
    scratch = np.full(decode_scratch_shape(HQ, 36, cache), np.nan, np.float32)
    n = np.array([kv_len], np.int32) if kv_len_tensor else kv_len
    args = (x, kc.copy(), vc.copy(), n, w, table, kw, out) + ((scratch,) if kv_len_tensor else ())
    got = cuda_emulation.run(f, *args)
    kr, vr = kc.copy(), vc.copy()
    ref = append_attention(x, kr, vr, n if kv_len_tensor else np.zeros(kv_len), w, table, kw, scale=0.3, eps=1e-6,
                           start=start, heads=HQ, k_start=k_start, v_start=v_start, kv_len_tensor=kv_len_tensor)
    assert np.abs(got[-2 if kv_len_tensor else -1] - ref).max() <= 1e-5 * np.abs(ref).max()
    np.testing.assert_allclose(got[1], kr, rtol=1e-6, atol=1e-6)  # (NaN rows compare equal)
    np.testing.assert_array_equal(got[2], vr)


@pytest.mark.parametrize("hq,hkv,d,chunks", [(HQ, HKV, 36, 2), (8, 2, 128, 37), (4, 1, 128, 3)])
def test_decode_kernel_merges_in_its_last_block(rng, hq, hkv, d, chunks):
    """append_attention's static form with sync counters: no merge kernel, the last block of
    each kv head to count itself done merges the head's chunks and sets its counter back to
    zero. Run serially, that is the head's last chunk. Shapes: 4 threads per output column of
    the merge (HQ/HKV heads of 36), 1 thread (4 heads of 128) over 37 chunks (several rounds of
    FOLD loads), 2 threads; a spare counter past Hkv stays as it was."""
    from inference_pio.ir.ops import append_attention, rope_table

    cache, start, k_start = chunks * KC + 3, 5, 5 + hq * d + 4
    v_start = k_start + hkv * d
    cols = v_start + hkv * d + 3
    f = _decode_kernel(hq, hkv, d, d, cache, ("float32",) * 4, 0.3, kv_len_tensor=True,
                       q_norm=QNorm(start, cols, 20, 1e-6, "float32"), append=KVAppend(k_start, v_start, "float32"),
                       sync=hkv + 1)
    for kv_len in (1, KC, KC + 1, cache):
        x, w, kw = 3 * _randn(rng, 1, cols), 1 + 0.3 * _randn(rng, d), 1 + 0.3 * _randn(rng, d)
        table = rope_table(np.array([kv_len - 1], np.int32), theta=1e4, rotary_dim=20)
        kc, vc = _randn(rng, cache, hkv, d), _randn(rng, cache, hkv, d)
        kc[kv_len:], vc[kv_len:] = np.nan, np.nan
        n, counters = np.array([kv_len], np.int32), np.array([0] * hkv + [7], np.int32)
        scratch = np.full(decode_scratch_shape(hq, d, cache), np.nan, np.float32)
        got = cuda_emulation.run(f, x, kc.copy(), vc.copy(), n, w, table, kw, counters,
                                 np.zeros((1, hq, d), np.float32), scratch)
        ref = append_attention(x, kc.copy(), vc.copy(), n, w, table, kw, scale=0.3, eps=1e-6, start=start, heads=hq,
                               k_start=k_start, v_start=v_start, kv_len_tensor=True)
        assert np.abs(got[-2] - ref).max() <= 1e-5 * np.abs(ref).max(), kv_len
        np.testing.assert_array_equal(got[-3], [0] * hkv + [7])


def test_decode_kernel_merges_in_its_last_block_only_when_static():
    kw = dict(q_norm=QNorm(0, 9 * 36, 36, 1e-6, "float32"), append=KVAppend(6 * 36, 7 * 36, "float32"))
    with pytest.raises(ValueError, match="only in the static form"):
        _decode_kernel(6, 1, 36, 36, KC, ("float32",) * 4, 0.3, sync=1, **kw)
    with pytest.raises(ValueError, match="a counter per kv head: 1 for 2"):
        _decode_kernel(6, 2, 36, 36, KC, ("float32",) * 4, 0.3, kv_len_tensor=True, sync=1, **kw)


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
    # 16-bit weights: against transformers in fp32 over the same weights, as the GPU check does
    # (0.8e-5 to 1.4e-5 for these bf16 and fp16 models on 2026-12-02, the split GEMM's bf16
    # rounding emulated as on the GPU)
    ref = ck.model if dtype == "float32" else hf_fixtures.rounded_reference(ck.model, dtype)
    assert hf_fixtures.rel_err(rt.logits(ids), hf_fixtures.hf_logits(ref, ids)) <= 1e-4
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


DT = ("float32", "bfloat16", "bfloat16", "float32")


@pytest.mark.parametrize("hq,hkv,d,t,kv_len,warps", [
    (4, 2, 32, 3, 3, 4),                     # one partial query tile, an empty cache before it
    (4, 2, 32, 5, 90, 4),                    # rows after a long cache: two key tiles, the last partial
    (6, 2, 48, TC_BQ + 6, TC_BK + 80, 4),    # two query tiles, three key tiles; GQA group 3
    (2, 2, 16, TC_BQ, TC_BQ, 4),             # exactly one tile each way
    (6, 2, 48, 2 * TC_BQ + 12, 280, 8),      # 8 warps: 128-row query tiles
])
def test_tensor_core_flash_matches_numpy(rng, hq, hkv, d, t, kv_len, warps):
    import ml_dtypes

    bf = ml_dtypes.bfloat16
    cache = kv_len + 7
    with untensorized():
        f = flash_tc_kernel(hq, hkv, d, d, cache, DT, 0.3, warps=warps)
    q = (rng.standard_normal((t, hq, d)) * 2).astype(np.float32)
    kc, vc = rng.standard_normal((cache, hkv, d)).astype(bf), rng.standard_normal((cache, hkv, d)).astype(bf)
    got = cuda_emulation.run(f, q, kc, vc, np.zeros((t, hq, d), np.float32), kv_len)[3]
    ref = reference(q, kc.astype(np.float32), vc.astype(np.float32), kv_len, 0.3)
    # q and P are carried as bf16 hi + lo (2^-16); bf16(q) alone would be ~1e-2 off here
    assert np.abs(got - ref).max() <= 2e-5 * np.abs(ref).max()


def test_tensor_core_flash_supported_shapes():
    assert supported(128, 128, DT) and supported(64, 64, DT)
    assert not supported(20, 16, DT)                       # head dim not a multiple of 16
    assert not supported(128, 128, ("float32",) * 4)       # an fp32 cache: the CUDA-core kernel
    assert not supported(256, 256, DT)                     # P V's accumulators: at most 8 fragments


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
def test_tensor_core_flash_compiles_to_wmma_without_barriers_in_inner_loops(tmp_path):
    """At Qwen3's head shapes: bf16 WMMA, and 8 barriers per key tile, none inside a loop over
    keys or columns (the P buffers are static shared memory for that)."""
    import re

    import tvm

    from inference_pio.targets import resolve
    from inference_pio.targets.cuda_host import enable_cuda_codegen

    enable_cuda_codegen()
    f = flash_tc_kernel(16, 8, 128, 128, 4096, DT, 128 ** -0.5)
    with resolve({"kind": "cuda", "arch": "sm_90a"}).to_tvm() as tgt:
        ex = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=tgt)
    src = ex.mod.imports[0].inspect_source("")
    assert "wmma::matrix_a, 16, 16, 16, nv_bfloat16" in src and "mma_sync" in src
    body = src[src.index("for (int kb = 0;"):]
    assert re.search(r"for \(int c(_\d)? = 0; c(_\d)? < 32; \+\+c(_\d)?\) \{[^}]*__syncthreads", body) is None
    ex.export_library(tmp_path / "k.so")
    assert b".nv.info" in (tmp_path / "k.so").read_bytes()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
def test_decode_kernel_loads_first_and_reads_the_new_row_behind_a_barrier():
    """What the CPU emulation cannot see, from the CUDA source at Qwen3-4B's heads in bf16: the
    block's loads of x (q and the key head), K and V come before its first barrier (their
    latencies overlap), and the step's key and value, written by the block whose chunk holds them, are
    read from shared memory (kn, vn) only after a barrier: the loads from the cache came first."""
    import tvm

    from inference_pio.targets import resolve
    from inference_pio.targets.cuda_host import enable_cuda_codegen

    enable_cuda_codegen()
    hq, hkv, d = 32, 8, 128
    f = _decode_kernel(hq, hkv, d, d, 4096, ("float32", "bfloat16", "bfloat16", "float32"), d ** -0.5,
                       kv_len_tensor=True, q_norm=QNorm(0, (hq + 2 * hkv) * d, d, 1e-6, "bfloat16"),
                       append=KVAppend(hq * d, (hq + hkv) * d, "bfloat16"))
    with resolve({"kind": "cuda", "arch": "sm_90a"}).to_tvm() as tgt:
        ex = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=tgt)
    src = ex.mod.imports[0].inspect_source("")
    # chunk-major blocks: block b is kv head b % 8's chunk b / 8, so the live chunks of all
    # heads come first in the graph's static grid (4096 rows: 64 chunk slots per head)
    assert "h_ptr[0] = (((int)blockIdx.x) & 7);" in src and "slot_ptr[0] = (((int)blockIdx.x) >> 3);" in src
    chunk = src[src.index("for (int _once"):]  # the split kernel's live blocks
    first_barrier = chunk.index("__syncthreads()")
    assert -1 < chunk.find("= q_ptr[") < first_barrier  # x: the query heads and the key head
    assert -1 < chunk.find("= *(uint4*)(kc_ptr") < first_barrier  # 16-byte key loads
    assert -1 < chunk.find("= vc_ptr[") < first_barrier
    for shared, cache, reg in (("kn_ptr", "kc_ptr", "kreg_ptr"), ("vn_ptr", "vc_ptr", "vreg_ptr")):
        write = chunk.index(f"{shared}[((int)threadIdx.x)] =")
        assert f"{cache}[" in chunk[write:write + 400]  # the cache row written from it
        read = chunk.index(f"{reg}[0] = {shared}[", write)  # the scores' or p @ V's registers
        assert "__syncthreads()" in chunk[write:read]
