"""Decode time per token vs context length: with the KV cache only attention grows.

    python bench/decode_context.py /tmp/qwen3-0.6b --contexts 16 64 128 256 512

Prints one row per context: ms per decoded token (median of N steps after a warm-up).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from inference_pio import engine, frontends
from inference_pio.engine.cache import compile_cached


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--contexts", type=int, nargs="+", default=[16, 64, 128, 256, 512])
    ap.add_argument("--steps", type=int, default=16)
    a = ap.parse_args()
    md = frontends.huggingface.model_def(a.checkpoint)
    t = time.perf_counter()
    art = compile_cached(md, "llvm", max_seq_len=max(a.contexts) + a.steps + 2)
    print(f"compile (or cache hit): {time.perf_counter() - t:.1f}s")
    rt = engine.load(art, weights=a.checkpoint)
    rng = np.random.default_rng(0)
    print(f"{'context':>8} {'ms/token':>9} {'tok/s':>7}")
    for ctx in a.contexts:
        ids = rng.integers(0, rt.vocab_size, ctx).tolist()
        times = []
        stream = rt.stream(ids, max_new_tokens=a.steps + 2)
        next(stream)  # prefill + first token
        next(stream)  # warm-up decode step
        for _ in range(a.steps):
            t = time.perf_counter()
            next(stream)
            times.append(time.perf_counter() - t)
        ms = 1e3 * float(np.median(times))
        print(f"{ctx:>8} {ms:>9.2f} {1e3 / ms:>7.1f}")


if __name__ == "__main__":
    main()
