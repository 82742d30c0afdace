"""Mixture-of-experts families end to end against transformers, through the public API:
Qwen3-MoE (Qwen3MoeForCausalLM) and GLM-4.5 MoE (Glm4MoeForCausalLM: sigmoid routing in expert
groups, shared experts, partial rotary). Tiny random checkpoints with odd widths, dense and
sparse layers, normalized and plain gates, fp32, bf16 and int8, several seeds; logits of whole
prompts and KV-cached greedy decoding."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from hf_fixtures import dequantized_reference, hf_logits, rel_err, rounded_reference, token_ids

FP32_TOL = 1e-4


FP32 = ["moe_odd", "moe_norm", "glm_groups", "glm_plain"]


@pytest.mark.parametrize("name", FP32)
@pytest.mark.parametrize("n", [1, 6, 23])
def test_fp32_logits_match_transformers(models, name, n):
    rt, ck = models.runtime(name), models.checkpoint(name)
    ids = token_ids(ck.config.vocab_size, n, seed=n)
    ours = rt.logits(ids)
    assert ours.shape == (n, ck.config.vocab_size) and ours.dtype == np.float32
    assert rel_err(ours, hf_logits(ck.model, ids)) <= FP32_TOL


@pytest.mark.parametrize("name,seed", [("moe_odd", 30), ("moe_odd", 31), ("glm_groups", 32), ("glm_groups", 33)])
def test_other_seeds_on_one_artifact(models, name, seed):
    rt, ck = models.runtime(name, seed=seed), models.checkpoint(name, seed=seed)
    ids = token_ids(ck.config.vocab_size, 17, seed=seed)
    assert rel_err(rt.logits(ids), hf_logits(ck.model, ids)) <= FP32_TOL


@pytest.mark.parametrize("name", FP32)
def test_greedy_generation_matches_transformers(models, name):
    import torch

    rt, ck = models.runtime(name), models.checkpoint(name)
    ids = token_ids(ck.config.vocab_size, 5, seed=3)
    x = torch.tensor([ids])  # the mask says every id is real (token_ids ends with id 0 = the pad id)
    with torch.no_grad():
        ref = ck.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=12, min_new_tokens=12,
                                do_sample=False, pad_token_id=0)[0, len(ids):].tolist()
    assert rt.generate(ids, max_new_tokens=12, temperature=0.0) == ref


@pytest.mark.parametrize("name", ["moe_bf16", "glm_bf16"])
def test_bf16_weights(models, name):
    """bf16 storage (the packed experts widen as they load; GLM's router stays fp32);
    transformers in fp32 over the same rounded weights is the reference."""
    rt, ck = models.runtime(name, ckpt_dtype="bfloat16"), models.checkpoint(name, dtype="bfloat16")
    ids = token_ids(ck.config.vocab_size, 13, seed=4)
    assert rel_err(rt.logits(ids), hf_logits(rounded_reference(ck.model, "bfloat16"), ids)) <= FP32_TOL


def test_medium_precision(models, tmp_path):
    """matmul_precision="medium" reaches the experts (on AMX: one bf16 product); ~1e-3 per op."""
    from inference_pio import engine, frontends

    ck = models.checkpoint("moe_bf16", dtype="bfloat16")
    art = engine.compile(frontends.huggingface.model_def(ck.path), target="llvm", max_seq_len=64,
                         matmul_precision="medium").save(tmp_path / "art")
    rt = engine.load(art, weights=ck.path, device="cpu")
    ids = token_ids(ck.config.vocab_size, 13, seed=4)
    assert rel_err(rt.logits(ids), hf_logits(rounded_reference(ck.model, "bfloat16"), ids)) <= 2e-2


@pytest.mark.parametrize("name", ["moe_odd", "moe_norm", "glm_groups"])
def test_int8_weights(models, name):
    """quantize="int8": the projections, router, LM head and every expert become int8 rows with
    fp32 scales; transformers over the weights those stand for is the reference."""
    import torch

    rt, ck = models.runtime(name, quantize="int8"), models.checkpoint(name)
    ref = dequantized_reference(ck.model)
    ids = token_ids(ck.config.vocab_size, 9, seed=2)
    assert rel_err(rt.logits(ids), hf_logits(ref, ids)) <= FP32_TOL
    x = torch.tensor([ids[:4]])
    with torch.no_grad():
        want = ref.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=8, min_new_tokens=8,
                            do_sample=False, pad_token_id=0)[0, 4:].tolist()
    assert rt.generate(ids[:4], max_new_tokens=8, temperature=0.0) == want
    stacks = [p for p in rt.manifest["params"] if p["name"].endswith(("experts.gate_up_proj", "experts.down_proj"))]
    assert stacks and all(p["dtype"] == "int8" for p in stacks)


CUDA = {"kind": "cuda", "arch": "sm_90a"}


@pytest.mark.parametrize("name,dtype", [("moe_odd", "float32"), ("glm_groups", "float32"), ("moe_bf16", "bfloat16")])
def test_cuda_schedules_emulated(models, tmp_path, name, dtype):
    """Every kernel scheduled for CUDA, the routed experts' included (tests/cuda_emulation.py:
    the loop nests run serially on this CPU), against transformers, logits and greedy tokens."""
    import cuda_emulation
    import torch

    from inference_pio import engine, frontends
    from inference_pio.schedules import registry
    from inference_pio.schedules.cuda.moe import cuda_moe

    routed = []

    def counting(func, target):
        f = cuda_moe(func, target)
        routed.append(f is not None)
        return f

    ck = models.checkpoint(name, dtype=dtype)
    with registry.override("cuda", "moe_experts", [counting]):
        art = cuda_emulation.compile_emulated(frontends.huggingface.model_def(ck.path), CUDA, max_seq_len=64,
                                              static_decode=True)  # (as a CUDA graph has it)
    assert routed and all(routed)  # every sparse MLP, in prefill and decode, took the routed kernels
    rt = engine.load(art.save(tmp_path / "art"), weights=ck.path, device="cpu")
    ref = ck.model if dtype == "float32" else rounded_reference(ck.model, dtype)
    ids = token_ids(ck.config.vocab_size, 19, seed=5)
    assert rel_err(rt.logits(ids), hf_logits(ref, ids)) <= FP32_TOL
    x = torch.tensor([ids[:6]])
    with torch.no_grad():
        want = ref.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=10, min_new_tokens=10,
                            do_sample=False, pad_token_id=0)[0, 6:].tolist()
    assert rt.generate(ids[:6], max_new_tokens=10, temperature=0.0) == want


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
def test_cuda_artifact_holds_device_binaries(models, tmp_path):
    """Both families compile for sm_90a into cubins; the routed experts take no TVM workspace,
    so they never keep the decode step out of a CUDA graph (bf16 at widths our GEMV takes:
    nothing does)."""
    from inference_pio import engine, frontends

    for name in ("moe_bf16", "glm_bf16"):
        md = frontends.huggingface.model_def(models.checkpoint(name, dtype="bfloat16").path)
        art = engine.compile(md, target=CUDA, max_seq_len=64)
        out = art.save(tmp_path / name)
        lib = (out / "model.so").read_bytes()
        assert b"__global__" not in lib and b".nv.info" in lib and b"sm_90a" in lib
        assert not any("moe_experts" in k for k in art.manifest.get("cuda_graph_blocked_by", []))


def test_missing_expert_tensor_is_named(models, tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    from inference_pio import engine
    from inference_pio.frontends.safetensors import WeightError

    ck = models.checkpoint("moe_odd")
    shutil.copy(ck.path / "config.json", tmp_path / "config.json")
    tensors = load_file(str(ck.path / "model.safetensors"))
    del tensors["model.layers.2.mlp.experts.4.up_proj.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightError, match=r"missing tensor 'model\.layers\.2\.mlp\.experts\.4\.up_proj\.weight' "
                                          r"\(needed for 'model\.layers\.2\.mlp\.experts\.gate_up_proj'\)"):
        engine.load(models.artifact("moe_odd"), weights=tmp_path, device="cpu")


def test_multi_token_prediction_layers_are_ignored(models, tmp_path):
    """GLM checkpoints carry num_nextn_predict_layers extra layers after the decoder's; the
    loader skips them (and still refuses any other unknown tensor)."""
    import json
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    from inference_pio import engine
    from inference_pio.frontends.safetensors import WeightError

    ck = models.checkpoint("glm_groups")
    cfg = json.loads((ck.path / "config.json").read_text())
    assert cfg["num_nextn_predict_layers"] == 1 and cfg["num_hidden_layers"] == 3
    tensors = load_file(str(ck.path / "model.safetensors"))
    tensors["model.layers.3.eh_proj.weight"] = np.zeros((40, 80), np.float32)
    tensors["model.layers.3.self_attn.q_proj.weight"] = np.zeros((40, 40), np.float32)
    shutil.copy(ck.path / "config.json", tmp_path / "config.json")
    save_file(tensors, str(tmp_path / "model.safetensors"))
    rt = engine.load(models.artifact("glm_groups"), weights=tmp_path, device="cpu")
    ids = token_ids(ck.config.vocab_size, 7, seed=1)
    assert rel_err(rt.logits(ids), hf_logits(ck.model, ids)) <= FP32_TOL
    tensors["model.layers.4.extra.weight"] = np.zeros((2, 2), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightError, match="model.layers.4.extra.weight"):
        engine.load(models.artifact("glm_groups"), weights=tmp_path, device="cpu")
