"""``inference-pio bench``: prefill and decode throughput of our engine on one model.

Warm-up runs are excluded; compile time is reported separately. Peer comparisons
(llama.cpp, transformers) live in bench/ at the repo root.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def run_bench(a: argparse.Namespace) -> None:
    from .. import frontends
    from ..demo import CHECKPOINT
    from .cache import compile_cached, quantize_option
    from .runtime import load

    ckpt = a.model or CHECKPOINT
    md = frontends.huggingface.model_def(ckpt, dtype=a.dtype)
    t0 = time.perf_counter()
    path = compile_cached(md, "llvm", max_seq_len=max(a.prompt_len) + a.new_tokens + 1,
                          matmul_precision=a.matmul_precision, **quantize_option(a.quantize))
    compile_s = time.perf_counter() - t0
    rt = load(path, weights=ckpt)
    rng = np.random.default_rng(0)
    quant = f", {a.quantize} weights" if a.quantize else ""
    print(f"model {ckpt} ({md.family}, {md.graph.params()[0].dtype}{quant}, matmul precision "
          f"{rt.manifest['matmul_precision']}), {rt.threads} threads, compile/cache {compile_s:.1f}s")
    print(f"{'prompt':>7} {'prefill tok/s':>14} {'decode tok/s':>13}")
    for n in a.prompt_len:
        ids = rng.integers(0, rt.vocab_size, n).tolist()
        rt.generate(ids[:8], max_new_tokens=2)  # warm-up
        t = time.perf_counter()
        stamps = [time.perf_counter() for _ in rt.stream(ids, max_new_tokens=a.new_tokens + 1)]
        prefill = stamps[0] - t  # to the first token
        decode = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)  # per token after it
        print(f"{n:>7} {n / prefill:>14.1f} {1 / decode:>13.1f}")
