"""Per-kernel time of one decode (or prefill) step, timed through the VM's instrument hook.

    python bench/profile_step.py /tmp/qwen3-0.6b --context 128 [--prefill 128] [--quantize int8]
    python bench/profile_step.py /tmp/qwen3-vl-2b --image 448      # Qwen3-VL's vision tower, one image

Compiles in-process (the hook needs the compiler-side VM); prints time per kernel, summed.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    import tvm
    from tvm import relax

    from inference_pio import engine, frontends

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--prefill", type=int, default=0, help="profile a prefill of this many tokens instead")
    ap.add_argument("--quantize", choices=["int8"], default=None, help="int8 weights (passes/quantize_weights.py)")
    ap.add_argument("--image", type=int, default=0, help="profile the vision tower on an image of this side instead")
    ap.add_argument("--matmul-precision", default="high", choices=["high", "medium"])
    a = ap.parse_args()
    md = frontends.huggingface.model_def(a.checkpoint)
    art = engine.compile(md, "llvm", max_seq_len=a.context + max(a.prefill, 1) + 1, quantize=a.quantize,
                         matmul_precision=a.matmul_precision)
    rt = engine.Runtime.__new__(engine.Runtime)  # reuse the runtime's weight loading and feeds
    path = art.save(f"/tmp/inference-pio-profile-{md.family}")
    rt.__init__(path, a.checkpoint)
    vm = relax.VirtualMachine(art.executable, tvm.cpu())
    rt.vm = vm
    rng = np.random.default_rng(0)
    if a.image:
        fn, feeds, title = "vision", _image_feeds(rt, a.image, rng), f"vision tower on a {a.image}px image"
    else:
        if a.context:
            rt.generate(rng.integers(0, rt.vocab_size, a.context).tolist(), max_new_tokens=1)  # fill the cache
        fn, feeds = _step_feeds(rt, a, rng)
        title = f"{fn} at context {a.context}"
    sig = rt.manifest["functions"][fn]
    args = [feeds[i["name"]] if not isinstance(feeds[i["name"]], np.ndarray) else tvm.runtime.tensor(feeds[i["name"]])
            for i in sig["inputs"]] + [rt.params[p] for p in sig["params"]]
    _profile(vm, fn, args, title)


def _step_feeds(rt, a, rng):
    import tvm

    fn, n = ("prefill", a.prefill) if a.prefill else ("decode", 1)
    ids = rng.integers(0, rt.vocab_size, n).astype(np.int32)
    feeds = {**rt._prompt(ids, None).feeds(0, n),  # (Qwen3-VL: no image features)
             "ids": ids, "positions": rt._positions(a.context, a.context + n),
             "kv_len": tvm.runtime.ShapeTuple([a.context + n]), **rt._caches(),
             "inv_temperature": np.zeros(1, np.float32), "sample_key": np.zeros(1, np.int32)}
    return fn, feeds


def _image_feeds(rt, side, rng):
    from inference_pio.engine import vision

    v = rt.manifest["model_config"]["vision"]
    g = side // v["patch_size"]
    pixels = rng.standard_normal((g * g, v["in_channels"] * v["temporal_patch_size"] * v["patch_size"] ** 2))
    return vision.tower_inputs(vision.Image(pixels.astype(np.float32), (1, g, g)), v)


def _profile(vm, fn, args, title):
    vm[fn](*args)  # warm-up
    total, calls, start = {}, {}, {}

    def instrument(func, name, before, ret, *_args):
        now = time.perf_counter()
        if before:
            start[name] = now
        else:
            total[name] = total.get(name, 0.0) + now - start[name]
            calls[name] = calls.get(name, 0) + 1
        return 0

    vm.set_instrument(instrument)
    t = time.perf_counter()
    vm[fn](*args)
    wall = time.perf_counter() - t
    print(f"{title}: {wall * 1e3:.2f} ms wall, {sum(total.values()) * 1e3:.2f} ms in calls")
    for name, sec in sorted(total.items(), key=lambda kv: -kv[1]):
        print(f"{name:<40} {calls[name]:>5} calls {sec * 1e3:>9.3f} ms {100 * sec / wall:>5.1f}%")


if __name__ == "__main__":
    main()
