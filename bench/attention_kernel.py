"""Time one cache_attention kernel alone, as the CPU schedule registry builds it.

    python bench/attention_kernel.py --context 2048            # decode (T=1), Qwen3-0.6B heads
    python bench/attention_kernel.py --context 768 --tokens 256 --q-heads 32 --kv-heads 8

Median and best over --reps calls of the compiled kernel (bf16 cache, all threads), in ms
per layer, and the median times --layers. The best is the steadier figure on a noisy VM. Handy when swapping an attention schedule rule.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    import ml_dtypes
    import tvm
    from tvm import te, tirx

    from inference_pio.schedules import kernels
    from inference_pio.schedules.registry import OP_KIND_ATTR, schedule_func
    from inference_pio.targets import resolve

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--context", type=int, default=2048, help="valid cache rows (kv_len), new tokens included")
    ap.add_argument("--tokens", type=int, default=1, help="query rows T (1 = decode)")
    ap.add_argument("--q-heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--precision", choices=["high", "medium"], default="high",
                    help="the kernel's matmul precision hint (passes/matmul_precision.py)")
    a = ap.parse_args()
    td = resolve("llvm")
    cap, d, dt = a.context + 4, a.head_dim, "bfloat16"
    kv_len = tirx.Var("kv_len", "int64")
    t = 1 if a.tokens == 1 else tirx.Var("T", "int64")
    q = te.placeholder((t, a.q_heads, d), dt, "q")
    kc, vc = (te.placeholder((cap, a.kv_heads, d), dt, n) for n in ("kc", "vc"))
    scale = d ** -0.5
    out = kernels.cache_attention(q, kc, vc, kv_len, scale=scale)
    func = te.create_prim_func([q, kc, vc, out, kv_len]).with_attrs(
        {OP_KIND_ATTR: "cache_attention", "gqa_group": a.q_heads // a.kv_heads, "scale": scale, "causal": True,
         "precision": a.precision})
    func = schedule_func(func, td).with_attr("global_symbol", "main")
    with td.to_tvm() as tgt:
        fn = tvm.compile(tvm.IRModule({"main": func}), target=tgt)["main"]
    rng, dev = np.random.default_rng(0), tvm.cpu()
    args = [tvm.runtime.tensor(rng.standard_normal(s).astype(ml_dtypes.bfloat16), dev)
            for s in [(a.tokens, a.q_heads, d), (cap, a.kv_heads, d), (cap, a.kv_heads, d)]]
    res = tvm.runtime.tensor(np.zeros((a.tokens, a.q_heads, d), ml_dtypes.bfloat16), dev)
    fn(*args, res, a.context)
    ts = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        fn(*args, res, a.context)
        ts.append(time.perf_counter() - t0)
    ms, best = 1e3 * float(np.median(ts)), 1e3 * min(ts)
    print(f"cache_attention T={a.tokens} kv_len={a.context} precision {a.precision} heads {a.q_heads}/{a.kv_heads}x{d}: "
          f"{ms:.3f} ms per layer (best {best:.3f}), x{a.layers} = {ms * a.layers:.1f} ms")


if __name__ == "__main__":
    main()
