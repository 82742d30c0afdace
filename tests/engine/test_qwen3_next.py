"""Qwen3-Next (Qwen3NextForCausalLM: gated DeltaNet + gated attention, MoE with a shared expert)
end to end against transformers, through the public API: tiny random checkpoints with odd
head sizes, grouped and ungrouped value heads, kernel sizes 3 and 4, dense and sparse layers;
fp32, bf16 and int8; whole-prompt logits, and greedy decoding whose linear-attention state
carries across prefill chunks and decode steps."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from hf_fixtures import dequantized_reference, hf_greedy, hf_logits, rel_err, rounded_reference, token_ids

FP32_TOL = 1e-4
FP32 = ["next_odd", "next_alt"]


@pytest.mark.parametrize("name", FP32)
@pytest.mark.parametrize("n", [1, 6, 23])
def test_fp32_logits_match_transformers(models, name, n):
    rt, ck = models.runtime(name), models.checkpoint(name)
    ids = token_ids(ck.config.vocab_size, n, seed=n)
    ours = rt.logits(ids)
    assert ours.shape == (n, ck.config.vocab_size) and ours.dtype == np.float32
    assert rel_err(ours, hf_logits(ck.model, ids)) <= FP32_TOL


@pytest.mark.parametrize("seed", [40, 41])
def test_other_seeds_on_one_artifact(models, seed):
    rt, ck = models.runtime("next_odd", seed=seed), models.checkpoint("next_odd", seed=seed)
    ids = token_ids(ck.config.vocab_size, 17, seed=seed)
    assert rel_err(rt.logits(ids), hf_logits(ck.model, ids)) <= FP32_TOL


@pytest.mark.parametrize("name", FP32)
def test_greedy_generation_matches_transformers(models, name):
    rt, ck = models.runtime(name), models.checkpoint(name)
    ids = token_ids(ck.config.vocab_size, 5, seed=3)
    assert rt.generate(ids, max_new_tokens=12, temperature=0.0) == hf_greedy(ck.model, ids, 12)


def test_state_carries_across_prefill_chunks(models, monkeypatch):
    """A prompt prefilled 4 tokens at a time: each chunk starts from the conv and delta-rule
    states the previous one left (and the first ignores whatever the buffers held)."""
    from inference_pio.engine import runtime

    rt, ck = models.runtime("next_odd"), models.checkpoint("next_odd")
    ids = token_ids(ck.config.vocab_size, 11, seed=5)
    want = hf_greedy(ck.model, ids, 6)
    rt.generate(token_ids(ck.config.vocab_size, 9, seed=6), max_new_tokens=3)  # leaves other states behind
    monkeypatch.setitem(runtime.PREFILL_CHUNK, "cpu", 4)
    assert rt.generate(ids, max_new_tokens=6, temperature=0.0) == want


def test_bf16_weights(models):
    """bf16 storage; transformers in fp32 over the same rounded weights is the reference."""
    rt, ck = models.runtime("next_bf16", ckpt_dtype="bfloat16"), models.checkpoint("next_bf16", dtype="bfloat16")
    ids = token_ids(ck.config.vocab_size, 13, seed=4)
    ref = rounded_reference(ck.model, "bfloat16")
    assert rel_err(rt.logits(ids), hf_logits(ref, ids)) <= FP32_TOL
    assert rt.generate(ids[:6], max_new_tokens=8, temperature=0.0) == hf_greedy(ref, ids[:6], 8)


def test_int8_weights(models):
    """quantize="int8": projections, experts and LM head become int8 rows with fp32 scales (the
    convolution kernels, gates' parameters and routers stay float)."""
    rt, ck = models.runtime("next_alt", quantize="int8"), models.checkpoint("next_alt")
    ref = dequantized_reference(ck.model)
    ids = token_ids(ck.config.vocab_size, 9, seed=2)
    assert rel_err(rt.logits(ids), hf_logits(ref, ids)) <= FP32_TOL
    assert rt.generate(ids[:4], max_new_tokens=8, temperature=0.0) == hf_greedy(ref, ids[:4], 8)


def test_state_inputs_of_the_cached_functions(models):
    """prefill and decode take one conv state and one delta-rule state per linear-attention
    layer (3 of next_odd's 4), and a KV cache for the gated-attention layer."""
    m = models.runtime("next_odd").manifest
    c = models.checkpoint("next_odd").config
    inputs = {i["name"]: i for i in m["functions"]["decode"]["inputs"]}
    convs = sorted(n for n in inputs if n.endswith(".conv"))
    deltas = sorted(n for n in inputs if n.endswith(".delta"))
    assert convs == ["cache.0.conv", "cache.1.conv", "cache.2.conv"] and len(deltas) == 3
    conv_dim = 2 * c.linear_num_key_heads * c.linear_key_head_dim + c.linear_num_value_heads * c.linear_value_head_dim
    assert inputs["cache.0.conv"]["shape"] == [c.linear_conv_kernel_dim - 1, conv_dim]
    assert inputs["cache.0.delta"] == {"name": "cache.0.delta", "dtype": "float32",
                                       "shape": [c.linear_num_value_heads, c.linear_key_head_dim,
                                                 c.linear_value_head_dim]}
    assert {"cache.0.k", "cache.0.v"} <= set(inputs) and "cache.1.k" not in inputs


CUDA = {"kind": "cuda", "arch": "sm_90a"}


@pytest.mark.parametrize("name,dtype", [("next_odd", "float32"), ("next_bf16", "bfloat16")])
def test_cuda_schedules_emulated(models, tmp_path, name, dtype):
    """Every kernel scheduled for CUDA (the recurrences' and routed experts' included; decode
    static, as the CUDA graph needs) and run serially on this CPU (tests/cuda_emulation.py),
    against transformers: logits, and greedy tokens whose state crosses prefill and decode."""
    import cuda_emulation

    from inference_pio import engine, frontends

    ck = models.checkpoint(name, dtype=dtype)
    art = cuda_emulation.compile_emulated(frontends.huggingface.model_def(ck.path), CUDA, max_seq_len=64,
                                          static_decode=True)
    rt = engine.load(art.save(tmp_path / "art"), weights=ck.path, device="cpu")
    ref = ck.model if dtype == "float32" else rounded_reference(ck.model, dtype)
    ids = token_ids(ck.config.vocab_size, 13, seed=7)
    assert rel_err(rt.logits(ids), hf_logits(ref, ids)) <= FP32_TOL
    assert rt.generate(ids[:5], max_new_tokens=8, temperature=0.0) == hf_greedy(ref, ids[:5], 8)


def test_static_decode_on_cpu(models, tmp_path):
    """static_decode=True on the CPU: the recurrences read kv_len from a (1,) int32 tensor."""
    from inference_pio import engine, frontends

    ck = models.checkpoint("next_alt")
    art = engine.compile(frontends.huggingface.model_def(ck.path), target="llvm", max_seq_len=64,
                         static_decode=True, matmul_precision="high")
    rt = engine.load(art.save(tmp_path / "art"), weights=ck.path, device="cpu")
    ids = token_ids(ck.config.vocab_size, 6, seed=8)
    assert rt.generate(ids, max_new_tokens=10, temperature=0.0) == hf_greedy(ck.model, ids, 10)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
def test_cuda_artifact_holds_device_binaries(models, tmp_path):
    """bf16 Qwen3-Next compiles for sm_90a into cubins, its decode step whole in a CUDA graph."""
    from inference_pio import engine, frontends

    md = frontends.huggingface.model_def(models.checkpoint("next_bf16", dtype="bfloat16").path)
    art = engine.compile(md, target=CUDA, max_seq_len=64)
    lib = (art.save(tmp_path / "art") / "model.so").read_bytes()
    assert b"__global__" not in lib and b".nv.info" in lib and b"sm_90a" in lib
    assert art.manifest["cuda_graph"] is True and "cuda_graph_blocked_by" not in art.manifest
