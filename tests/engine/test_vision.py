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
