"""Whole-model parity with transformers through the public API:

    md = frontends.huggingface.model_def(ckpt); art = engine.compile(md, target="llvm")
    art.save(dir); rt = engine.load(dir, weights=ckpt, device="cpu"); rt.logits(ids)
"""
from __future__ import annotations

import pytest

from hf_fixtures import hf_logits, load_reference, rel_err, rounded_reference, token_ids

FP32_TOL = 1e-4
BF16_TOL = 2e-2  # transformers computing in bf16 vs ours computing in fp32 over bf16 weights
F16_TOL = 5e-3

FP32_CONFIGS = ["gqa5x1", "tied_bias", "mha_theta"]


@pytest.mark.parametrize("name", FP32_CONFIGS)
@pytest.mark.parametrize("n", [1, 2, 7, 19])
def test_fp32_matches_transformers(models, name, n):
    rt = models.runtime(name)
    ck = models.checkpoint(name)
    ids = token_ids(ck.config.vocab_size, n, seed=n)
    ours = rt.logits(ids)
    ref = hf_logits(ck.model, ids)
    assert ours.shape == (n, ck.config.vocab_size)
    assert ours.dtype.name == "float32"
    assert rel_err(ours, ref) <= FP32_TOL


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_one_artifact_serves_checkpoints_of_other_seeds(models, seed):
    """The artifact holds no weights: another random draw of the same config runs on it."""
    rt = models.runtime("gqa5x1", seed=seed)
    ck = models.checkpoint("gqa5x1", seed=seed)
    ids = token_ids(ck.config.vocab_size, 11, seed=seed)
    assert rel_err(rt.logits(ids), hf_logits(ck.model, ids)) <= FP32_TOL


def test_repeated_calls_are_deterministic_and_prefix_consistent(models):
    """Causality: the logits of a prefix are the first rows of the logits of the whole."""
    rt = models.runtime("tied_bias")
    ids = token_ids(131, 12, seed=5)
    full = rt.logits(ids)
    assert (rt.logits(ids) == full).all()
    part = rt.logits(ids[:5])
    assert rel_err(part, full[:5]) <= 1e-5


def test_long_context_up_to_max_seq_len(models):
    rt = models.runtime("gqa5x1")
    ck = models.checkpoint("gqa5x1")
    ids = token_ids(ck.config.vocab_size, rt.max_seq_len, seed=1)
    assert rel_err(rt.logits(ids), hf_logits(ck.model, ids)) <= FP32_TOL


def test_sharded_checkpoint_loads(models):
    """save_pretrained(max_shard_size=...) writes model.safetensors.index.json plus shards."""
    ck = models.checkpoint("gqa5x1", seed=20, max_shard_size="20KB")
    files = sorted(p.name for p in ck.path.iterdir())
    assert "model.safetensors.index.json" in files
    assert sum(f.endswith(".safetensors") for f in files) >= 2
    from inference_pio import engine

    rt = engine.load(models.artifact("gqa5x1"), weights=ck.path, device="cpu")
    ids = token_ids(97, 9, seed=2)
    assert rel_err(rt.logits(ids), hf_logits(ck.model, ids)) <= FP32_TOL


# **** reduced precision ****


@pytest.mark.parametrize("n", [1, 6, 17])
def test_bf16_checkpoint(models, n):
    """A checkpoint saved in bf16 compiles to bf16 weights (from config.json's dtype)."""
    ck = models.checkpoint("bf16", dtype="bfloat16")
    rt = models.runtime("bf16", ckpt_dtype="bfloat16")
    assert {p["dtype"] for p in rt.manifest["params"]} == {"bfloat16"}
    ids = token_ids(97, n, seed=n)
    ours = rt.logits(ids)
    # Exactly the bf16 weights, computed in fp32: what we do.
    assert rel_err(ours, hf_logits(load_reference(ck.path, "float32"), ids)) <= FP32_TOL
    # transformers computing in bf16 throughout.
    assert rel_err(ours, hf_logits(ck.model, ids)) <= BF16_TOL


@pytest.mark.parametrize("n", [3, 40])
def test_bf16_checkpoint_with_wide_projections(models, n):
    """Every K a multiple of 32: on a CPU with AMX, T-row linears take the tile kernel
    (schedules/cpu/amx.py), x split in two bf16 parts; still within fp32 tolerance."""
    ck = models.checkpoint("wide32", dtype="bfloat16")
    rt = models.runtime("wide32", ckpt_dtype="bfloat16")
    ids = token_ids(131, n, seed=n)
    assert rel_err(rt.logits(ids), hf_logits(load_reference(ck.path, "float32"), ids)) <= FP32_TOL


def test_medium_matmul_precision(models, tmp_path):
    """compile(..., matmul_precision="medium"): bf16-rounded activations in the 16-bit products
    (AMX here when the CPU has it), as close to fp32 math as transformers' own bf16 run; greedy
    decoding still runs through the cache. Where a product has no 16-bit form it stays fp32."""
    from inference_pio import engine, frontends
    from inference_pio.targets import amx_usable, resolve

    ck = models.checkpoint("wide32", dtype="bfloat16")
    art = engine.compile(frontends.huggingface.model_def(ck.path), target="llvm", max_seq_len=64,
                         matmul_precision="medium")
    assert art.manifest["matmul_precision"] == "medium"
    rt = engine.load(art.save(tmp_path / "art"), weights=ck.path, device="cpu")
    ids = token_ids(131, 40, seed=5)
    err = rel_err(rt.logits(ids), hf_logits(load_reference(ck.path, "float32"), ids))
    assert err <= BF16_TOL / 2
    if amx_usable(resolve("llvm").cpu_flags):
        assert err > FP32_TOL  # the option reached the tile kernels: x rounded, not split
    assert len(rt.generate(ids[:8], max_new_tokens=4)) == 4


@pytest.mark.parametrize("dtype,precision", [("bfloat16", "medium"), ("float16", "high"), ("float32", "high")])
def test_default_matmul_precision_follows_the_weights(models, tmp_path, dtype, precision):
    """compile()'s default ("auto"): bf16 weights get "medium", as every peer multiplies bf16
    weights by bf16 activations; fp32 and fp16 weights get "high"."""
    from inference_pio import engine, frontends

    ck = models.checkpoint("wide32")
    art = engine.compile(frontends.huggingface.model_def(ck.path, dtype=dtype), target="llvm", max_seq_len=64)
    assert art.manifest["matmul_precision"] == precision
    rt = engine.load(art.save(tmp_path / "art"), weights=ck.path, device="cpu")
    ids = token_ids(131, 40, seed=6)
    tol = FP32_TOL if precision == "high" else BF16_TOL / 2
    assert rel_err(rt.logits(ids), hf_logits(rounded_reference(ck.model, dtype), ids)) <= tol


@pytest.mark.parametrize("dtype,tol", [("bfloat16", BF16_TOL), ("float16", F16_TOL)])
def test_dtype_override_of_fp32_checkpoint(models, dtype, tol):
    """compile(md, dtype=...) stores an fp32 checkpoint's weights in a narrower dtype."""
    ck = models.checkpoint("gqa5x1")
    rt = models.runtime("gqa5x1", compile_dtype=dtype)
    assert {p["dtype"] for p in rt.manifest["params"]} == {dtype}
    ids = token_ids(97, 13, seed=3)
    ours = rt.logits(ids)
    assert rel_err(ours, hf_logits(rounded_reference(ck.model, dtype), ids)) <= FP32_TOL
    assert rel_err(ours, hf_logits(ck.model, ids)) <= tol


def test_model_def_dtype_argument(models, tmp_path):
    """frontends.huggingface.model_def(ckpt, dtype=...) is the other way to pick the storage dtype."""
    from inference_pio import frontends

    ck = models.checkpoint("gqa5x1")
    md = frontends.huggingface.model_def(ck.path, dtype="bfloat16")
    assert md.config.dtype == "bfloat16"
    assert {p.dtype for p in md.graph.params()} == {"bfloat16"}
