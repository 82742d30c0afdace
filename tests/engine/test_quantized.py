"""int8 weights (engine.compile(..., quantize="int8"), `passes/quantize_weights.py`) through
the public API: the oracle is transformers running the weights that int8 rows with per-row
scales stand for, so the fp32 tolerance holds; and bad requests are clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from hf_fixtures import dequantized_reference, hf_logits, rel_err, token_ids

FP32_TOL = 1e-4
PROMPT = [3, 17, 5, 42, 8, 1, 29]

# fp32 with odd dims (the FMA GEMM), tied embeddings + bias, bf16 with every K a multiple of
# 32 (on an AMX CPU: the tile kernel, int8 weights converted to bf16 as they are paired)
CASES = [("gqa5x1", "float32"), ("tied_bias", "float32"), ("wide32", "bfloat16")]


def _reference(models, name, dtype):
    return dequantized_reference(models.checkpoint(name, dtype=dtype).model)


@pytest.mark.parametrize("name,dtype", CASES)
def test_logits_match_the_dequantized_weights(models, name, dtype):
    rt = models.runtime(name, ckpt_dtype=dtype, quantize="int8")
    ref = _reference(models, name, dtype)
    vocab = models.checkpoint(name, dtype=dtype).config.vocab_size
    for n in (1, 7, 19):
        ids = token_ids(vocab, n, seed=n)
        assert rel_err(rt.logits(ids), hf_logits(ref, ids)) <= FP32_TOL


@pytest.mark.parametrize("name,dtype", CASES)
def test_greedy_matches_the_dequantized_weights(models, name, dtype):
    import torch

    rt = models.runtime(name, ckpt_dtype=dtype, quantize="int8")
    ref = _reference(models, name, dtype)
    with torch.no_grad():
        want = ref.generate(torch.tensor([PROMPT]), max_new_tokens=24, min_new_tokens=24, do_sample=False,
                            pad_token_id=0)[0, len(PROMPT):].tolist()
    assert rt.generate(PROMPT, max_new_tokens=24) == want


def test_weights_are_stored_as_int8(models):
    rt = models.runtime("tied_bias", quantize="int8")
    assert rt.manifest["quantize"] == "int8"
    params = {p["name"]: p for p in rt.manifest["params"]}
    embed = params["model.embed_tokens.weight"]
    assert embed["dtype"] == "int8" and embed["quant"] == "int8"
    assert params["model.embed_tokens.weight.scale"]["scale_of"] == "model.embed_tokens.weight"
    assert params["model.norm.weight"]["dtype"] == "float32"  # norms and biases are not quantized
    int8 = [p for p in params.values() if p["dtype"] == "int8"]
    assert len(int8) == len([p for p in params.values() if p.get("scale_of")]) > 1
    assert np.from_dlpack(rt.params["model.embed_tokens.weight"]).dtype == np.int8


def test_one_artifact_serves_checkpoints_of_other_seeds(models):
    """Quantized as the weights load: the artifact holds none."""
    rt = models.runtime("gqa5x1", seed=9, quantize="int8")
    ck = models.checkpoint("gqa5x1", seed=9)
    ids = token_ids(ck.config.vocab_size, 9, seed=9)
    assert rel_err(rt.logits(ids), hf_logits(dequantized_reference(ck.model), ids)) <= FP32_TOL


def test_bad_requests_are_clear_errors(models):
    from inference_pio import engine, frontends
    from inference_pio.targets import TargetError

    md = frontends.huggingface.model_def(models.checkpoint("gqa5x1").path)
    with pytest.raises(ValueError, match="quantize must be one of"):
        engine.compile(md, target="llvm", quantize="int4")
    with pytest.raises(TargetError, match="llvm"):
        engine.compile(md, target={"kind": "cuda", "arch": "sm_90a"}, quantize="int8")


def test_cli_takes_quantize():
    from inference_pio.engine.__main__ import parser

    for cmd in (["compile", "ckpt", "-o", "out"], ["run", "hi"], ["chat"], ["bench"]):
        assert parser().parse_args([*cmd, "--quantize", "int8"]).quantize == "int8"
        assert parser().parse_args(cmd).quantize is None
