"""Qwen3-VL (Qwen3VLForConditionalGeneration) end to end against transformers, through the
public API: tiny random checkpoints (odd head sizes, tied and untied, biases), prompts with
and without images; logits, greedy decoding, prompts prefilled in chunks that split an image,
bf16 and int8 weights, a runtime-only process, and the errors a user can make."""
from __future__ import annotations

import json
import os
import shutil
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


CUDA = {"kind": "cuda", "arch": "sm_90a"}


@pytest.mark.parametrize("name,dtype", [("vl_odd", "float32"), ("vl_tied", "bfloat16")])
def test_cuda_schedules_emulated(models, tmp_path, name, dtype):
    """Every kernel scheduled for CUDA, both towers (tests/cuda_emulation.py: the loop nests
    run serially on this CPU), against transformers with images, as on the CPU."""
    import cuda_emulation
    from inference_pio import engine, frontends

    ck = models.checkpoint(name, dtype=dtype)
    art = cuda_emulation.compile_emulated(frontends.huggingface.model_def(ck.path), CUDA, max_seq_len=64)
    rt = engine.load(art.save(tmp_path / "art"), weights=ck.path, device="cpu")
    ref = ck.model if dtype == "float32" else rounded_reference(ck.model, dtype)
    ids, images = vl_prompt(ck.config, GRIDS, seed=12)
    assert rel_err(rt.logits(ids, images=images), _hf_logits(ref, ids, images)) <= FP32_TOL
    assert rt.generate(ids, max_new_tokens=6, images=images) == _hf_greedy(ref, ids, images, 6)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
def test_cuda_artifact_holds_both_towers_as_device_binaries(models, tmp_path):
    from inference_pio import engine, frontends

    md = frontends.huggingface.model_def(models.checkpoint("vl_tied", dtype="bfloat16").path)
    art = engine.compile(md, target=CUDA, max_seq_len=64).save(tmp_path / "art")
    lib = (art / "model.so").read_bytes()
    assert b"__global__" not in lib and b".nv.info" in lib and b"sm_90a" in lib
    m = json.loads((art / "manifest.json").read_text())
    assert m["device"] == "cuda" and {"prefill", "decode", "vision"} <= set(m["functions"])
    assert m["matmul_precision"] == "medium"  # bf16 weights: the default "auto"


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


# ---- images from files, through the text API and the CLI ----

@pytest.fixture(scope="module")
def vl_text(models, tmp_path_factory):
    """A Qwen3-VL checkpoint with a tokenizer, a chat template and an image processor config
    (and its artifact), loaded through `inference_pio.load_model`; and an RGBA png of 30 x 45
    pixels (resized to 24 x 32: 6 x 8 patches, 12 tokens)."""
    import shutil

    import PIL.Image

    import inference_pio
    from hf_fixtures import write_vl_text_files

    ck = models.checkpoint("vl_odd")
    d = tmp_path_factory.mktemp("vl_text")
    shutil.copytree(ck.path, d, dirs_exist_ok=True)
    write_vl_text_files(d, ck.config)
    png = d / "image.png"
    pixels = np.random.default_rng(7).integers(0, 256, (30, 45, 4), dtype=np.uint8)
    PIL.Image.fromarray(pixels, "RGBA").save(png)
    return inference_pio.load_model(models.artifact("vl_odd"), weights=d), ck, d, png


def _hf_prompt(d, messages, images):
    """transformers' ids and image inputs for chat ``messages``: the chat template, each
    <|image_pad|> repeated once per image token (Qwen3VLProcessor.replace_image_token), the
    PIL image processor with the checkpoint's preprocessor_config.json."""
    from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessorPil

    tok = PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
    text = tok.apply_chat_template(messages, chat_template=json.loads((d / "tokenizer_config.json").read_text())
                                   ["chat_template"], tokenize=False, add_generation_prompt=True)
    proc = Qwen2VLImageProcessorPil.from_pretrained(str(d), temporal_patch_size=2)
    out = proc(images=images, return_tensors="np")
    n = [int(np.prod(g)) // 4 for g in out["image_grid_thw"]]
    parts = text.split("<|image_pad|>")
    text = parts[0] + "".join("<|image_pad|>" * k + p for k, p in zip(n, parts[1:]))
    return tok(text)["input_ids"], [(p, tuple(g)) for p, g in zip(np.split(out["pixel_values"], np.cumsum(
        [int(np.prod(g)) for g in out["image_grid_thw"]])[:-1]), out["image_grid_thw"])]


def test_chat_with_an_image_file_matches_transformers(vl_text):
    """An image file in a chat message: the prompt ids, the patches and the greedy tokens equal
    transformers' (chat template, image processor, Qwen3VLForConditionalGeneration.generate)."""
    import PIL.Image

    model, ck, d, png = vl_text
    messages = [{"role": "user", "content": [{"type": "image", "image": str(png)},
                                             {"type": "text", "text": "describe this image"}]}]
    ids, imgs = model.encode_prompt(messages)
    want_ids, want_images = _hf_prompt(d, [{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": "describe this image"}]}], [PIL.Image.open(png)])
    assert ids == want_ids and ids.count(ck.config.image_token_id) == 12
    assert imgs[0].grid == tuple(want_images[0][1])
    np.testing.assert_allclose(imgs[0].pixels, want_images[0][0], rtol=0, atol=1e-6)
    tokens = _hf_greedy(ck.model, ids, want_images, 8)
    assert model.runtime.generate(ids, max_new_tokens=8, images=imgs) == tokens
    stops = model.tokenizer.stop_ids
    upto = next((i for i, t in enumerate(tokens) if t in stops), len(tokens))
    assert model.generate(messages, max_new_tokens=8) == model.tokenizer.decode(tokens[:upto])


def test_text_prompt_with_images(vl_text):
    """Beside a text prompt, images go first, each as <|vision_start|> pads <|vision_end|>; a
    prompt that places its own pads keeps them; counts must agree."""
    from inference_pio import engine

    model, ck, d, png = vl_text
    arr = np.random.default_rng(3).integers(0, 256, (16, 24, 3), dtype=np.uint8)  # fits: 4 x 6 patches, 6 tokens
    ids, imgs = model.encode_prompt("describe this", images=[arr, str(png)])
    c = ck.config
    run = lambda n: [c.vision_start_token_id] + [c.image_token_id] * n + [c.vision_end_token_id]  # noqa: E731
    assert ids == run(6) + run(12) + model.tokenizer.encode("describe this")
    assert [i.grid for i in imgs] == [(1, 4, 6), (1, 6, 8)]
    # the artifact records the ids around an image (engine.text reads them there, not in config.json)
    mc = model.runtime.manifest["model_config"]
    assert (mc["vision_start_token_id"], mc["vision_end_token_id"]) == (c.vision_start_token_id, c.vision_end_token_id)
    placed, _ = model.encode_prompt("describe <|vision_start|><|image_pad|><|vision_end|> this", images=[arr])
    assert placed == model.tokenizer.encode("describe") + run(6) + model.tokenizer.encode("this")
    with pytest.raises(engine.InputError, match="2 image placeholders .* but 1 images"):
        model.encode_prompt("<|image_pad|> and <|image_pad|>", images=[arr])
    with pytest.raises(engine.InputError, match="cannot read image"):
        model.generate("describe", images=[str(d / "missing.png")])
    with pytest.raises(engine.InputError, match="not as images="):
        model.generate([{"role": "user", "content": "describe"}], images=[arr])
    assert model.generate("describe this", max_new_tokens=4, images=[arr]) == \
        model.generate("<|vision_start|><|image_pad|><|vision_end|>describe this", max_new_tokens=4, images=[arr])


def test_images_to_a_text_model_through_the_text_api(models):
    import inference_pio
    from inference_pio.demo import CHECKPOINT

    model = inference_pio.engine.text.Model(models.runtime("gqa5x1"), inference_pio.engine.tokenizer.Tokenizer(
        CHECKPOINT))
    with pytest.raises(inference_pio.engine.InputError, match="qwen3 model takes no images"):
        model.generate("def f():", images=[np.zeros((32, 32, 3), np.uint8)])


def test_cli_run_with_an_image(vl_text, models):
    model, ck, d, png = vl_text
    r = subprocess.run([sys.executable, "-m", "inference_pio.engine", "run", "--model", str(models.artifact("vl_odd")),
                        "--weights", str(d), "--image", str(png), "--max-new-tokens", "5", "describe this"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "describe this" + model.generate("describe this", max_new_tokens=5, images=[str(png)]) + "\n"
    # chat: the image goes with the first message
    r = subprocess.run([sys.executable, "-m", "inference_pio.engine", "chat", "--model", str(models.artifact("vl_odd")),
                        "--weights", str(d), "--image", str(png), "--max-new-tokens", "5"],
                       input="describe this\n\n", capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    first = [{"role": "user", "content": [{"type": "image", "image": str(png)}, {"type": "text", "text": "describe this"}]}]
    assert r.stdout.startswith("> " + model.generate(first, max_new_tokens=5) + "\n")
