"""Images for Qwen3-VL artifacts, on the host in numpy: what the vision tower and the language
model read besides pixels and token ids. Each function follows transformers' Qwen3-VL
(`get_vision_interpolation_indices_and_weights`, `Qwen3VLVisionRotaryEmbedding`,
`Qwen3VLModel.get_rope_index`) and is tested against it.

An image arrives as its patches, as the Qwen3-VL image processor emits them: ``pixels``
(t*h*w, channels*temporal_patch_size*patch_size^2), rows ordered so that each group of
m x m neighbouring patches (m = spatial_merge_size) is consecutive, and its ``grid`` (t, h, w)
in patches. Its t*h*w/m^2 tokens stand in the prompt as that many ``image_token_id`` ids.
`load` makes one from a file, a PIL image or an array, resized as the checkpoint's image
processor resizes (`smart_resize`, bicubic through Pillow, the `vision` extra).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..ir.ops import inv_freq


class ImageError(ValueError):
    """An image that does not fit the model or the prompt."""


@dataclass(frozen=True)
class Image:
    """One image's patches (patches, patch_dim) float32 and its grid (t, h, w) in patches."""

    pixels: np.ndarray
    grid: tuple[int, int, int]

    @property
    def patches(self) -> int:
        t, h, w = self.grid
        return t * h * w


def split(pixel_values: Any, image_grid_thw: Any) -> list[Image]:
    """The images of one processor output (all images' patches concatenated, and a (n, 3) grid)."""
    pixels = np.asarray(pixel_values, dtype=np.float32)
    grids = [tuple(int(v) for v in g) for g in np.asarray(image_grid_thw).reshape(-1, 3)]
    sizes = [t * h * w for t, h, w in grids]
    if sum(sizes) != pixels.shape[0]:
        raise ImageError(f"image_grid_thw {grids} has {sum(sizes)} patches but pixel_values has {pixels.shape[0]} rows")
    return [Image(p, g) for p, g in zip(np.split(pixels, np.cumsum(sizes)[:-1]), grids)]


def patchify(image: Any, vision: dict[str, Any], mean: Sequence[float] = (0.5, 0.5, 0.5),
             std: Sequence[float] = (0.5, 0.5, 0.5)) -> Image:
    """An `Image` from pixels (H, W, channels), uint8 (0-255) or float (0-1), whose sides are
    multiples of patch_size * spatial_merge_size (32 for Qwen3-VL): normalized by ``mean`` and
    ``std`` (Qwen3-VL's processor's defaults) and cut into patches as the processor cuts them,
    the frame repeated temporal_patch_size times. Resizing is left to the caller (the processor
    resizes to such sides, keeping the aspect ratio within a pixel budget)."""
    x = np.asarray(image)
    if x.ndim != 3:
        raise ImageError(f"an image is (height, width, channels) pixels, got shape {x.shape}")
    x = x.astype(np.float32) / np.float32(255) if x.dtype == np.uint8 else x.astype(np.float32)
    p, m, tp, c = vision["patch_size"], vision["spatial_merge_size"], vision["temporal_patch_size"], vision["in_channels"]
    h, w = x.shape[:2]
    if h % (p * m) or w % (p * m) or x.shape[2] != c:
        raise ImageError(f"image of shape {x.shape}: expected (H, W, {c}) with H and W multiples of {p * m}")
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    frames = np.repeat(x.transpose(2, 0, 1)[None], tp, axis=0)  # (tp, C, H, W)
    gh, gw = h // p, w // p
    x = frames.reshape(1, tp, c, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return Image(np.ascontiguousarray(x.reshape(gh * gw, c * tp * p * p)), (1, gh, gw))


@dataclass(frozen=True)
class Preprocess:
    """How a checkpoint's image processor sizes and normalizes images: the pixel budget an image
    is resized into and the per-channel mean and std. Defaults: Qwen3-VL's
    preprocessor_config.json."""

    min_pixels: int = 65536
    max_pixels: int = 16777216
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    @classmethod
    def read(cls, ckpt: str | Path) -> Preprocess:
        """From ``ckpt``/preprocessor_config.json (``size`` {shortest_edge, longest_edge} as
        transformers 5 writes it, or min_pixels/max_pixels); the defaults where it is absent."""
        f = Path(ckpt) / "preprocessor_config.json"
        if not f.is_file():
            return cls()
        cfg = json.loads(f.read_text())
        size = cfg.get("size") or {}
        return cls(min_pixels=int(size.get("shortest_edge", cfg.get("min_pixels", cls.min_pixels))),
                   max_pixels=int(size.get("longest_edge", cfg.get("max_pixels", cls.max_pixels))),
                   mean=tuple(cfg.get("image_mean", cls.mean)), std=tuple(cfg.get("image_std", cls.std)))


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The size (height, width) the Qwen-VL image processors resize an image to: both sides
    multiples of ``factor`` (patch_size * spatial_merge_size), near the aspect ratio, the area
    within [min_pixels, max_pixels] (transformers' ``smart_resize``)."""
    if min(height, width) < 1:
        raise ImageError(f"an image of {height} x {width} pixels is empty")
    if max(height, width) / min(height, width) > 200:
        raise ImageError(f"an image of {height} x {width} pixels: the aspect ratio must be at most 200")
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def _pil():
    try:
        import PIL.Image
        import PIL.ImageOps
    except ImportError:
        raise ImageError("reading or resizing images needs Pillow: pip install 'inference-pio[vision]'") from None
    return PIL


def _rgb(img: Any) -> Any:
    """A PIL image as RGB, transparency laid over white (as transformers' ``convert_to_rgb``)."""
    if img.mode == "RGB":
        return img
    PIL = _pil()
    rgba = img.convert("RGBA")
    return PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, (255, 255, 255)), rgba).convert("RGB")


def load(image: Any, vision: dict[str, Any], pre: Preprocess = Preprocess()) -> Image:
    """An `Image` from a file path, a PIL image, or pixels (H, W, channels) (uint8, or float in
    [0, 1] whose sides need no resize), as Qwen3-VL's image processor makes it: oriented by
    its EXIF tag, made RGB, resized bicubically to `smart_resize`'s size, normalized and cut by
    `patchify`. An `Image` or a (pixels, grid) pair passes through `check`."""
    if isinstance(image, Image) or isinstance(image, tuple):
        return check(image, vision)
    if isinstance(image, (str, Path)):
        PIL = _pil()
        try:
            with PIL.Image.open(image) as f:
                image = PIL.ImageOps.exif_transpose(f)
                image.load()
        except (OSError, PIL.Image.UnidentifiedImageError) as e:
            raise ImageError(f"cannot read image {str(image)!r}: {e}") from None
    if not isinstance(image, np.ndarray) and hasattr(image, "convert"):  # a PIL image
        image = np.asarray(_rgb(image))
    x = np.asarray(image)
    if x.ndim != 3 or x.shape[2] != vision["in_channels"]:
        raise ImageError(f"an image is (height, width, {vision['in_channels']}) pixels, got shape {x.shape}")
    factor = vision["patch_size"] * vision["spatial_merge_size"]
    size = smart_resize(x.shape[0], x.shape[1], factor, pre.min_pixels, pre.max_pixels)
    if size != x.shape[:2]:
        if x.dtype != np.uint8:
            raise ImageError(f"an image of {x.shape[0]} x {x.shape[1]} pixels must be resized to {size[0]} x "
                             f"{size[1]}: pass it as uint8 pixels or a PIL image, or at that size")
        PIL = _pil()
        x = np.asarray(PIL.Image.fromarray(x).resize((size[1], size[0]), resample=PIL.Image.Resampling.BICUBIC))
    return patchify(x, vision, pre.mean, pre.std)


def check(image: Image | tuple, vision: dict[str, Any]) -> Image:
    """``image`` (an `Image` or a (pixels, grid) pair) checked against the vision config."""
    if not isinstance(image, Image):
        try:
            pixels, grid = image
        except (TypeError, ValueError):
            raise ImageError(f"an image is an engine.vision.Image or a (pixels, grid) pair, not {type(image)}") from None
        image = Image(np.asarray(pixels, dtype=np.float32), tuple(int(v) for v in grid))
    m = vision["spatial_merge_size"]
    dim = vision["in_channels"] * vision["temporal_patch_size"] * vision["patch_size"] ** 2
    t, h, w = image.grid
    if len(image.grid) != 3 or min(image.grid) < 1 or h % m or w % m:
        raise ImageError(f"image grid {image.grid} must be (t, h, w) >= 1 with h and w multiples of "
                         f"spatial_merge_size={m}")
    if t != 1:
        raise ImageError(f"image grid {image.grid}: only single-frame images (t = 1) are supported, not video")
    if image.pixels.shape != (image.patches, dim):
        raise ImageError(f"image pixels have shape {image.pixels.shape}, expected {(image.patches, dim)} "
                         f"for grid {image.grid}")
    return image


def merge_order(grid: tuple[int, int, int], m: int) -> tuple[np.ndarray, np.ndarray]:
    """Each patch's (row, column) on its grid, in the order patches arrive: m x m blocks in
    raster order, the patches of a block in raster order."""
    t, h, w = grid
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    block = (h // m, m, w // m, m)
    rows, cols = (a.reshape(block).transpose(0, 2, 1, 3).reshape(-1) for a in (rows, cols))
    return np.tile(rows, t), np.tile(cols, t)


def position_taps(grid: tuple[int, int, int], m: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The learned (side x side) position embedding resampled to ``grid`` bilinearly with
    aligned corners: per patch, 4 table rows (patches, 4) int32 and their weights float32."""
    t, h, w = grid
    rows, cols = merge_order(grid, m)

    def axis(index: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        src = index.astype(np.float32) * np.float32(side - 1) / np.float32(max(size - 1, 1))
        floor, offsets = np.floor(src), np.arange(2, dtype=np.float32)  # float32 throughout, as torch
        taps = floor.astype(np.int64)[:, None] + np.arange(2)
        weights = np.clip(np.float32(1) - np.abs(src[:, None] - floor[:, None] - offsets), 0, None)
        return np.clip(taps, 0, side - 1), weights.astype(np.float32)

    (ht, hw), (wt, ww) = axis(rows, h), axis(cols, w)
    idx = (ht[:, :, None] * side + wt[:, None, :]).reshape(-1, 4)
    weights = (hw[:, :, None] * ww[:, None, :]).reshape(-1, 4)
    return idx.astype(np.int32), weights.astype(np.float32)


def rotary_table(grid: tuple[int, int, int], m: int, head_dim: int, theta: float) -> np.ndarray:
    """The vision tower's 2-D rotary table (patches, head_dim) in `ir.ops.rotary`'s layout: the
    first half of each head rotates by the patch's row, the second by its column."""
    rows, cols = merge_order(grid, m)
    f = inv_freq(theta, head_dim // 2)  # head_dim/4 frequencies per axis
    ang = np.concatenate([rows[:, None].astype(np.float32) * f, cols[:, None].astype(np.float32) * f], axis=1)
    return np.concatenate([np.cos(ang), np.sin(ang)], axis=1).astype(np.float32)


def tower_inputs(image: Image, vision: dict[str, Any]) -> dict[str, np.ndarray]:
    """The vision tower's inputs for ``image`` (function "vision" of a Qwen3-VL artifact)."""
    m = vision["spatial_merge_size"]
    idx, w = position_taps(image.grid, m, int(round(vision["num_position_embeddings"] ** 0.5)))
    rope = rotary_table(image.grid, m, vision["hidden_size"] // vision["num_heads"], vision["rope_theta"])
    return {"pixels": image.pixels, "pos_idx": idx, "pos_w": w, "rope": rope}


def layout(ids: np.ndarray, images: Sequence[Any], config: dict[str, Any]) -> tuple[list[Image], np.ndarray, int]:
    """``images`` checked against a Qwen3-VL model config (as `check`) and against the runs of
    image tokens in ``ids``, and the prompt's positions and offset (`rope_positions`)."""
    v = config["vision"]
    imgs = [check(i, v) for i in images]
    return (imgs, *rope_positions(ids, imgs, config["image_token_id"], v["spatial_merge_size"]))


def rope_positions(ids: np.ndarray, images: Sequence[Image], image_token_id: int, m: int) -> tuple[np.ndarray, int]:
    """Multimodal positions (3, T) of a prompt and the offset (max position + 1 - T) that the
    tokens after it add to their index. Text tokens count up on all three rows; each run of
    image tokens is the next image, laid on its grid (rows and columns from the position where
    it starts); the text after an image resumes max(h, w)/m past that start."""
    is_image = ids == image_token_id
    edges = np.flatnonzero(np.diff(np.concatenate([[0], is_image.astype(np.int8), [0]])))
    runs = list(zip(edges[::2], edges[1::2]))  # [start, stop) of each run of image tokens
    if len(runs) != len(images):
        raise ImageError(f"the prompt has {len(runs)} runs of image tokens (id {image_token_id}) "
                         f"but {len(images)} images were given")
    out = np.empty((3, ids.size), np.int64)
    pos, at = 0, 0
    for (start, stop), image in zip(runs, images):
        out[:, at:start] = pos + np.arange(start - at)
        pos += start - at
        t, h, w = image.grid
        n = t * (h // m) * (w // m)
        if stop - start != n:
            raise ImageError(f"an image of grid {image.grid} is {n} tokens but its run of image tokens at "
                             f"[{start}, {stop}) has {stop - start}")
        tt, hh, ww = np.meshgrid(np.arange(t), np.arange(h // m), np.arange(w // m), indexing="ij")
        out[:, start:stop] = pos + np.stack([tt.reshape(-1), hh.reshape(-1), ww.reshape(-1)])
        pos += max(h, w) // m
        at = stop
    out[:, at:] = pos + np.arange(ids.size - at)
    return out.astype(np.int32), int(out.max()) + 1 - ids.size if ids.size else 0
