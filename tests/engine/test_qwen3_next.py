"""Qwen3-Next (Qwen3NextForCausalLM: gated DeltaNet + gated attention, MoE with a shared expert)
end to end against transformers, through the public API: tiny random checkpoints with odd
head sizes, grouped and ungrouped value heads, kernel sizes 3 and 4, dense and sparse layers;
fp32, bf16 and int8; whole-prompt logits, and greedy decoding whose linear-attention state
carries across prefill chunks and decode steps."""
from __future__ import annotations

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


def test_cuda_target_is_refused(models):
    from inference_pio import engine, frontends
    from inference_pio.targets import TargetError

    md = frontends.huggingface.model_def(models.checkpoint("next_alt").path)
    with pytest.raises(TargetError, match="qwen3_next does not support target kind 'cuda'"):
        engine.compile(md, target="cuda")
