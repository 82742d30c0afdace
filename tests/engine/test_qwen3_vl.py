"""Qwen3-VL (Qwen3VLForConditionalGeneration) end to end against transformers, through the
public API: tiny random checkpoints (odd head sizes, tied and untied, biases), prompts with
and without images; logits, greedy decoding, prompts prefilled in chunks that split an image,
bf16 and int8 weights, a runtime-only process, and the errors a user can make."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hf_fixtures import (dequantized_reference, hf_greedy, hf_logits, hf_vl_inputs, rel_err, rounded_reference,
                         token_ids, vl_prompt)

FP32_TOL = 1e-4
FP32 = ["vl_odd", "vl_tied"]
GRIDS = [(1, 4, 6), (1, 2, 2)]  # in patches: 6 and 1 tokens (2 x 2 patches merge into one)


def _hf_logits(model, ids, images) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(**hf_vl_inputs(model.config, ids, images)).logits[0].float().numpy()


def _hf_greedy(model, ids, images, n: int) -> list[int]:
    return hf_greedy(model, ids, n, **hf_vl_inputs(model.config, ids, images))


@pytest.mark.parametrize("name", FP32)
@pytest.mark.parametrize("n", [1, 7, 20])
def test_text_logits_match_transformers(models, name, n):
    rt, ck = models.runtime(name), models.checkpoint(name)
    vocab = ck.config.text_config.vocab_size
    ids = [i if i != ck.config.image_token_id else 0 for i in token_ids(vocab, n, seed=n)]
    ours = rt.logits(ids)
    assert ours.shape == (n, vocab) and ours.dtype == np.float32
    assert rel_err(ours, hf_logits(ck.model, ids)) <= FP32_TOL


@pytest.mark.parametrize("name", FP32)
@pytest.mark.parametrize("seed", [0, 1])
def test_image_logits_match_transformers(models, name, seed):
    """Two images: the vision tower, the merged features in place of the image tokens, the
    deepstack features added in the first layers, and the multimodal positions."""
    rt, ck = models.runtime(name), models.checkpoint(name)
    ids, images = vl_prompt(ck.config, GRIDS, seed=seed)
    ours = rt.logits(ids, images=images)
    assert rel_err(ours, _hf_logits(ck.model, ids, images)) <= FP32_TOL
    # the images matter: other pixels, other logits after the first image token
    other = [(p[::-1].copy(), g) for p, g in images]
    first = ids.index(ck.config.image_token_id)
    assert rel_err(rt.logits(ids, images=other)[first:], ours[first:]) > 1e-2


def test_other_seed_on_one_artifact(models):
    rt, ck = models.runtime("vl_odd", seed=40), models.checkpoint("vl_odd", seed=40)
    ids, images = vl_prompt(ck.config, [(1, 6, 4)], seed=3)
    assert rel_err(rt.logits(ids, images=images), _hf_logits(ck.model, ids, images)) <= FP32_TOL


@pytest.mark.parametrize("name", FP32)
def test_greedy_generation_with_images_matches_transformers(models, name):
    """Decode continues at positions offset by the images (a 4 x 6 grid takes max(2, 3) = 3
    positions for its 6 tokens)."""
    rt, ck = models.runtime(name), models.checkpoint(name)
    ids, images = vl_prompt(ck.config, GRIDS, seed=5)
    assert rt.generate(ids, max_new_tokens=10, temperature=0.0, images=images) == _hf_greedy(ck.model, ids, images, 10)


def test_text_generation_matches_transformers(models):
    rt, ck = models.runtime("vl_odd"), models.checkpoint("vl_odd")
    ids, _ = vl_prompt(ck.config, [], seed=6, text=6)
    assert rt.generate(ids, max_new_tokens=8, temperature=0.0) == _hf_greedy(ck.model, ids, [], 8)


def test_prefill_chunks_split_an_image(models, monkeypatch):
    """Prefilled 4 tokens at a time: the 6 tokens of the first image fall in three chunks, each
    reading its own rows of the features."""
    from inference_pio.engine import runtime

    rt, ck = models.runtime("vl_odd"), models.checkpoint("vl_odd")
    ids, images = vl_prompt(ck.config, GRIDS, seed=7)
    want = _hf_greedy(ck.model, ids, images, 6)
    monkeypatch.setitem(runtime.PREFILL_CHUNK, "cpu", 4)
    assert rt.generate(ids, max_new_tokens=6, temperature=0.0, images=images) == want


def test_bf16_weights(models):
    """bf16 storage (the vision tower's too); transformers in fp32 over the same rounded weights
    is the reference."""
    rt, ck = models.runtime("vl_tied", ckpt_dtype="bfloat16"), models.checkpoint("vl_tied", dtype="bfloat16")
    ref = rounded_reference(ck.model, "bfloat16")
    ids, images = vl_prompt(ck.config, GRIDS, seed=8)
    assert rel_err(rt.logits(ids, images=images), _hf_logits(ref, ids, images)) <= FP32_TOL
    assert rt.generate(ids, max_new_tokens=6, images=images) == _hf_greedy(ref, ids, images, 6)


def test_int8_weights(models):
    """quantize="int8": the projections of both towers (the patch embedding too) and the LM head
    become int8 rows; the position embedding stays float."""
    rt, ck = models.runtime("vl_odd", quantize="int8"), models.checkpoint("vl_odd")
    ref = dequantized_reference(ck.model)
    ids, images = vl_prompt(ck.config, GRIDS, seed=9)
    assert rel_err(rt.logits(ids, images=images), _hf_logits(ref, ids, images)) <= FP32_TOL
    assert rt.generate(ids, max_new_tokens=6, images=images) == _hf_greedy(ref, ids, images, 6)


def test_functions_and_their_inputs(models):
    """prefill reads the image features; decode, which never sees an image token, does not;
    "vision" maps one image's patches to its tokens' features and the deepstack features."""
    m = models.runtime("vl_odd").manifest
    fns = m["functions"]

    def names(fn):
        return [i["name"] for i in fns[fn]["inputs"]]

    image_inputs = ["image_rows", "image_embeds", "deepstack.0", "deepstack.1"]
    assert set(image_inputs) <= set(names("prefill")) and set(image_inputs) <= set(names("forward"))
    assert not set(image_inputs) & set(names("decode"))
    positions = {i["name"]: i for i in fns["decode"]["inputs"]}["positions"]
    assert positions["shape"] == [3, 1]
    assert names("vision") == ["pixels", "pos_idx", "pos_w", "rope"]
    assert [o["name"] for o in fns["vision"]["outputs"]] == ["embeds", "deepstack.0", "deepstack.1"]
    assert fns["vision"]["outputs"][0]["shape"] == ["patches/4", 40]


@pytest.mark.parametrize("case,match", [
    ("count", "2 runs of image tokens .* but 1 images"),
    ("size", r"grid \(1, 2, 2\) is 1 tokens but its run of image tokens at \[\d+, \d+\) has 6"),
    ("pixels", r"image pixels have shape \(24, 95\), expected \(24, 96\)"),
    ("grid", "multiples of spatial_merge_size=2"),
    ("video", "only single-frame images"),
    ("missing", "holds image tokens .* but no images were given"),
])
def test_image_errors(models, case, match):
    from inference_pio import engine

    rt, ck = models.runtime("vl_odd"), models.checkpoint("vl_odd")
    ids, images = vl_prompt(ck.config, GRIDS, seed=1)
    (p0, g0), (p1, g1) = images
    bad = {"count": (ids, images[:1]), "size": (ids, [(p1, g1), (p0, g0)]),
           "pixels": (ids, [(p0[:, :95], g0), (p1, g1)]), "grid": (ids, [(p0[:18], (1, 3, 6)), (p1, g1)]),
           "video": (ids, [(np.concatenate([p0, p0]), (2, 4, 6)), (p1, g1)]), "missing": (ids, None)}[case]
    with pytest.raises(engine.InputError, match=match):
        rt.generate(bad[0], max_new_tokens=2, images=bad[1])


def test_images_to_a_text_model_are_an_error(models):
    from inference_pio import engine

    rt = models.runtime("gqa5x1")
    with pytest.raises(engine.InputError, match="qwen3 artifact takes no images"):
        rt.logits([1, 2, 3], images=[(np.zeros((4, 96), np.float32), (1, 2, 2))])


SCRIPT = """
import json, sys
import numpy as np
from inference_pio import engine
rt = engine.load(sys.argv[1], weights=sys.argv[2], device="cpu")
d = np.load(sys.argv[3])
ids, images = d["ids"].tolist(), [(d["pixels"], tuple(d["grid"]))]
out = {"gen": rt.generate(ids, max_new_tokens=6, images=images), "logits": rt.logits(ids, images=images).tolist(),
       "relax": any(m.startswith("tvm.relax") for m in sys.modules)}
print(json.dumps(out))
"""


def test_images_without_the_compiler(models, tmp_path):
    """The vision tower and the image features through a runtime-only process (TVM_USE_RUNTIME_LIB=1)."""
    art, ck = models.artifact("vl_odd"), models.checkpoint("vl_odd")
    ids, images = vl_prompt(ck.config, [(1, 4, 4)], seed=11)
    np.savez(tmp_path / "prompt.npz", ids=np.array(ids), pixels=images[0][0], grid=np.array(images[0][1]))
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(art), str(ck.path), str(tmp_path / "prompt.npz")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["relax"] is False
    assert out["gen"] == _hf_greedy(ck.model, ids, images, 6)
    assert rel_err(np.array(out["logits"]), _hf_logits(ck.model, ids, images)) <= FP32_TOL
