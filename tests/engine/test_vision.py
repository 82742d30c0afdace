"""engine.vision: the host-side numpy for Qwen3-VL images, against transformers' own functions."""
from __future__ import annotations

import numpy as np
import pytest

from inference_pio.engine import vision

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("grid,side", [((1, 4, 6), 4), ((1, 8, 2), 3), ((1, 2, 2), 48), ((1, 16, 12), 48)])
def test_position_taps_match_transformers(grid, side):
    from transformers.vision_utils import get_vision_interpolation_indices_and_weights

    idx, w = get_vision_interpolation_indices_and_weights(torch.tensor([grid]), num_grid_per_side=side,
                                                         mode="bilinear", align_corners=True, spatial_merge_size=2)
    ours_idx, ours_w = vision.position_taps(grid, 2, side)
    np.testing.assert_array_equal(ours_idx, idx.numpy())
    np.testing.assert_array_equal(ours_w, w.numpy())


@pytest.mark.parametrize("grid,head_dim", [((1, 4, 6), 16), ((1, 8, 8), 72), ((1, 2, 10), 8)])
def test_rotary_table_matches_transformers(grid, head_dim):
    """transformers rotates q with cos/sin (patches, head_dim) duplicated halves; ours keeps
    one half of each ([cos | sin]), as `ir.ops.rotary` reads it."""
    from transformers import Qwen3VLConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionRotaryEmbedding
    from transformers.vision_utils import get_vision_position_ids

    cfg = Qwen3VLConfig(vision_config=dict(hidden_size=2 * head_dim, num_heads=2)).vision_config
    rot = Qwen3VLVisionRotaryEmbedding(cfg)
    pos = get_vision_position_ids(torch.tensor([grid]), 2)
    cos, sin = rot(torch.zeros(1), pos)
    ours = vision.rotary_table(grid, 2, head_dim, cfg.rope_parameters["rope_theta"])
    np.testing.assert_allclose(ours[:, : head_dim // 2], cos.numpy()[:, : head_dim // 2], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours[:, head_dim // 2:], sin.numpy()[:, : head_dim // 2], rtol=0, atol=1e-6)


def test_rope_positions_match_transformers(models):
    from hf_fixtures import vl_prompt

    ck = models.checkpoint("vl_odd")
    ids, images = vl_prompt(ck.config, [(1, 4, 6), (1, 2, 2), (1, 6, 2)], seed=3)
    x = torch.tensor([ids])
    want, delta = ck.model.model.get_rope_index(x, (x == ck.config.image_token_id).int(),
                                                image_grid_thw=torch.tensor([g for _, g in images]))
    ours, offset = vision.rope_positions(np.array(ids), [vision.Image(p, g) for p, g in images],
                                         ck.config.image_token_id, 2)
    np.testing.assert_array_equal(ours, want[:, 0].numpy())
    assert offset == int(delta)


def test_split_a_processor_output():
    pixels = np.arange(20 * 3, dtype=np.float32).reshape(20, 3)
    a, b = vision.split(pixels, [[1, 4, 4], [1, 2, 2]])
    assert a.grid == (1, 4, 4) and a.pixels.shape == (16, 3) and b.patches == 4
    np.testing.assert_array_equal(b.pixels, pixels[16:])
    with pytest.raises(vision.ImageError, match="has 20 patches but pixel_values has 19 rows"):
        vision.split(pixels[:19], [[1, 4, 4], [1, 2, 2]])


@pytest.mark.parametrize("h,w", [(64, 96), (32, 32)])
def test_patchify_matches_the_processor(h, w):
    """An image whose sides are multiples of 32, cut as Qwen3-VL's image processor cuts it
    (no resize)."""
    from transformers import Qwen2VLImageProcessorPil

    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    proc = Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
                                    image_std=[0.5] * 3, do_resize=False)
    want = proc(images=[img], return_tensors="np")
    cfg = {"patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3}
    ours = vision.patchify(img, cfg)
    assert ours.grid == tuple(want["image_grid_thw"][0])
    np.testing.assert_allclose(ours.pixels, want["pixel_values"], rtol=0, atol=1e-6)
    with pytest.raises(vision.ImageError, match="multiples of 32"):
        vision.patchify(img[:16], cfg)


CFG = {"patch_size": 4, "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3}
PRE = vision.Preprocess(min_pixels=64, max_pixels=1024, mean=(0.48, 0.46, 0.41), std=(0.27, 0.26, 0.28))


def _processor(pre: vision.Preprocess = PRE):
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, temporal_patch_size=2, image_mean=list(pre.mean),
                                    image_std=list(pre.std),
                                    size={"shortest_edge": pre.min_pixels, "longest_edge": pre.max_pixels})


@pytest.mark.parametrize("h,w", [(50, 75), (7, 300), (33, 33), (1000, 20), (5, 5), (24, 32), (2000, 1999)])
@pytest.mark.parametrize("factor,budget", [(8, (64, 1024)), (32, (65536, 16777216)), (28, (56 * 56, 28 * 28 * 1280))])
def test_smart_resize_matches_transformers(h, w, factor, budget):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    assert vision.smart_resize(h, w, factor, *budget) == smart_resize(h, w, factor, *budget)


def _rgba(h, w, seed=0):
    import PIL.Image

    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")


@pytest.mark.parametrize("kind", ["uint8", "rgba", "gray", "png", "fits"])
def test_load_matches_the_processor(kind, tmp_path):
    """Resized bicubically into the pixel budget and normalized as transformers' (PIL) Qwen2-VL
    image processor does: the same patches, bit for bit, from arrays, PIL images in other
    modes (transparency over white) and files."""
    import PIL.Image

    img = {"uint8": lambda: np.random.default_rng(1).integers(0, 256, (30, 45, 3), dtype=np.uint8),
           "rgba": lambda: _rgba(41, 23), "gray": lambda: _rgba(50, 75).convert("L"),
           "png": lambda: _rgba(19, 60), "fits": lambda: np.random.default_rng(2).integers(0, 256, (16, 24, 3),
                                                                                          dtype=np.uint8)}[kind]()
    ours_in = img
    if kind == "png":
        img.save(tmp_path / "x.png")
        ours_in, img = str(tmp_path / "x.png"), PIL.Image.open(tmp_path / "x.png")
    want = _processor()(images=[img], return_tensors="np")
    ours = vision.load(ours_in, CFG, PRE)
    assert ours.grid == tuple(want["image_grid_thw"][0])
    np.testing.assert_allclose(ours.pixels, want["pixel_values"], rtol=0, atol=1e-6)


def test_preprocess_reads_the_checkpoint(tmp_path):
    import json

    assert vision.Preprocess.read(tmp_path) == vision.Preprocess()  # Qwen3-VL's defaults
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"shortest_edge": 64, "longest_edge": 1024}, "image_mean": [0.48, 0.46, 0.41],
         "image_std": [0.27, 0.26, 0.28]}))
    assert vision.Preprocess.read(tmp_path) == PRE
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"min_pixels": 3136, "max_pixels": 12845056}))
    assert (vision.Preprocess.read(tmp_path).min_pixels, vision.Preprocess.read(tmp_path).max_pixels) == (3136, 12845056)


@pytest.mark.parametrize("image,match", [
    (np.zeros((30, 45, 3), np.float32), "must be resized to 24 x 32: pass it as uint8"),
    (np.zeros((2, 500, 3), np.uint8), "aspect ratio must be at most 200"),
    (np.zeros((30, 45), np.uint8), r"\(height, width, 3\) pixels, got shape \(30, 45\)"),
    ("/nonexistent/cat.png", "cannot read image '/nonexistent/cat.png'"),
])
def test_load_errors(image, match):
    with pytest.raises(vision.ImageError, match=match):
        vision.load(image, CFG, PRE)
