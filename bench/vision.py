"""Qwen3-VL on the CPU against HF transformers in the same run: one image through the vision
tower, then a prompt holding it (time to first token), then decode.

    python bench/vision.py                                   # Qwen3-VL-2B shapes, 448x448 and 896x896
    python bench/vision.py --layers 4 --sizes 448 --steps 8 --engines ours ours-high transformers

The checkpoint has random bf16 weights at Qwen3-VL-2B's shapes (random_checkpoint.py,
preset qwen3-vl-2b; --layers cuts the language model, not the vision tower). Each engine runs
in its own process with the same threads. An S x S image is (S/16)^2 patches and (S/32)^2
tokens; the prompt is 16 text tokens, the image's tokens, 16 text tokens. Times are medians
of --repeats runs after one warm-up run. transformers runs eager PyTorch in the checkpoint's
dtype with its default (sdpa) attention. "ours" is ours at the default matmul precision (for
these bf16 weights "medium": bf16-rounded activations in the AMX products, as transformers'
bf16); "ours-high" and "ours-medium" ask for a precision (passes/matmul_precision.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import random_checkpoint  # noqa: E402

PRESET = "qwen3-vl-2b"


def prompt(cfg: dict[str, Any], size: int, seed: int = 0) -> tuple[list[int], np.ndarray, tuple[int, int, int]]:
    """ids with one S x S image, its patches and grid (random pixel values)."""
    v = cfg["vision_config"]
    g = size // v["patch_size"]
    grid = (1, g, g)
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 150000, 32).tolist()
    n = g * g // v["spatial_merge_size"] ** 2
    ids = words[:16] + [cfg["vision_start_token_id"]] + [cfg["image_token_id"]] * n + [cfg["vision_end_token_id"]] + words[16:]
    pixels = rng.standard_normal((g * g, v["in_channels"] * v["temporal_patch_size"] * v["patch_size"] ** 2))
    return ids, pixels.astype(np.float32), grid


def _median(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def worker(engine: str, spec: dict[str, Any]) -> dict[str, Any]:
    cfg = json.loads((Path(spec["ckpt"]) / "config.json").read_text())
    out: dict[str, Any] = {}
    if engine.startswith("ours"):
        os.environ["INFERENCE_PIO_CACHE"] = spec["cache"]
        from inference_pio import engine as eng
        from inference_pio import frontends
        from inference_pio.engine import vision
        from inference_pio.engine.cache import compile_cached

        t = time.perf_counter()
        art = compile_cached(frontends.huggingface.model_def(spec["ckpt"]), "llvm", max_seq_len=4096,
                             matmul_precision={"ours": "auto", "ours-medium": "medium", "ours-high": "high"}[engine])
        out["compile_s"] = time.perf_counter() - t
        rt = eng.load(art, weights=spec["ckpt"])
        for size in spec["sizes"]:
            ids, pixels, grid = prompt(cfg, size)
            feeds = vision.tower_inputs(vision.Image(pixels, grid), rt.manifest["model_config"]["vision"])
            out[f"encode@{size}"] = _median(lambda: rt._call("vision", feeds), spec["repeats"])
            images = [(pixels, grid)]
            out[f"ttft@{size}"] = _median(lambda: next(rt.stream(ids, max_new_tokens=1, images=images)), spec["repeats"])
            stream = rt.stream(ids, max_new_tokens=spec["steps"] + 1, images=images)
            next(stream)
            t = time.perf_counter()
            for _ in stream:
                pass
            out[f"decode@{size}"] = spec["steps"] / (time.perf_counter() - t)
    else:
        import torch
        import transformers

        torch.set_num_threads(spec["threads"])
        model = transformers.Qwen3VLForConditionalGeneration.from_pretrained(spec["ckpt"], dtype=torch.bfloat16).eval()
        out["torch_version"] = torch.__version__
        for size in spec["sizes"]:
            ids, pixels, grid = prompt(cfg, size)
            x = torch.tensor([ids])
            kw = {"input_ids": x, "attention_mask": torch.ones_like(x), "mm_token_type_ids": (x == cfg["image_token_id"]).int(),
                  "pixel_values": torch.from_numpy(pixels), "image_grid_thw": torch.tensor([grid])}
            with torch.inference_mode():
                out[f"encode@{size}"] = _median(lambda: model.model.get_image_features(kw["pixel_values"], kw["image_grid_thw"]),
                                                spec["repeats"])
                out[f"ttft@{size}"] = _median(lambda: model(**kw, logits_to_keep=1), spec["repeats"])
                res = model(**kw, use_cache=True, logits_to_keep=1)  # later steps reuse its rope offset
                past, tok = res.past_key_values, res.logits[0, -1].argmax()
                t = time.perf_counter()
                for _ in range(spec["steps"]):
                    res = model(input_ids=tok.view(1, 1), past_key_values=past, use_cache=True)
                    past, tok = res.past_key_values, res.logits[0, -1].argmax()
                out[f"decode@{size}"] = spec["steps"] / (time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, help="language-model layers (default: the preset's 28)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[448, 896], help="image sides in pixels (multiples of 32)")
    ap.add_argument("--steps", type=int, default=16, help="decode steps after the prompt")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--engines", nargs="+", default=["ours", "ours-high", "transformers"],
                    choices=["ours", "ours-medium", "ours-high", "transformers"])
    ap.add_argument("--dir", default="/tmp/inference-pio-bench")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(worker(a.worker, json.loads(a.spec))))
        return
    name = PRESET + (f"-{a.layers}l" if a.layers else "")
    ckpt = Path(a.dir) / "ckpt" / f"{name}-bfloat16"
    if not (ckpt / "model.safetensors").is_file():
        print(f"writing {ckpt}", file=sys.stderr)
        random_checkpoint.make(PRESET, ckpt, "bfloat16", layers=a.layers)
    spec = {"ckpt": str(ckpt), "sizes": a.sizes, "steps": a.steps, "repeats": a.repeats, "threads": a.threads,
            "cache": str(Path(a.dir) / "cache")}
    env = {**os.environ, "TVM_NUM_THREADS": str(a.threads), "OMP_NUM_THREADS": str(a.threads)}
    res: dict[str, dict[str, Any]] = {}
    for e in a.engines:
        r = subprocess.run([sys.executable, __file__, "--worker", e, "--spec", json.dumps(spec)], capture_output=True,
                           text=True, env=env)
        line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
        if r.returncode or not line:
            sys.exit(f"{e} failed:\n{r.stderr[-3000:]}")
        res[e] = json.loads(line[-1][7:])
    print(f"Qwen3-VL-2B shapes ({a.layers or 28} language layers, 24 vision layers), bf16 weights, {a.threads} threads")
    ours = [e for e in a.engines if e.startswith("ours")] if "transformers" in res else []
    print(f"{'':26}" + "".join(f"{e:>14}" for e in a.engines) + "".join(f"{e + '/transformers':>26}" for e in ours))
    for size in a.sizes:
        tokens = (size // 32) ** 2
        for key, label, speed in (("encode", f"encode {size}px ({tokens} tok), s", False),
                                  ("ttft", "  prompt + image TTFT, s", False), ("decode", "  decode, tok/s", True)):
            vals = {e: res[e][f"{key}@{size}"] for e in a.engines}
            t = vals.get("transformers")
            ratios = "".join(f"{(vals[e] / t if speed else t / vals[e]):>25.2f}x" for e in ours)
            print(f"{label:26}" + "".join(f"{v:>14.3f}" for v in vals.values()) + ratios)
    for e in ours or [e for e in a.engines if e.startswith("ours")]:
        print(f"({e}: compile {res[e]['compile_s']:.0f} s, cached after the first run)")
    if ours:
        print("(ratios are speedups: above 1, ours is faster)")


if __name__ == "__main__":
    main()
