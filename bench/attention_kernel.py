"""Time one cache_attention kernel alone, as the CPU schedule registry builds it.

    python bench/attention_kernel.py --context 2048            # decode (T=1), Qwen3-0.6B heads
    python bench/attention_kernel.py --context 768 --tokens 256 --q-heads 32 --kv-heads 8
    python bench/attention_kernel.py --context 1024 --forward     # the cache-less forward's attention

Median and best over --reps calls of the compiled kernel (bf16 cache, all threads; with --forward,
the `attention` op over --context fp32 rows of q, k and v, as `rt.logits` runs it), in ms
per layer, and the median times --layers (--cold: a cache per layer, as a decode step reads them). The best is the steadier figure on a noisy VM. Handy when swapping an attention schedule rule.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    import ml_dtypes
    import tvm
    from tvm import te, tirx

    from inference_pio.engine.runtime import cpu_threads
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
    ap.add_argument("--forward", action="store_true", help="causal attention of --context fp32 rows, no cache")
    ap.add_argument("--cold", action="store_true",
                    help="one cache per layer, called in turn, so that K and V come from memory as in a decode "
                         "step, not from the last level cache")
    ap.add_argument("--precision", choices=["high", "medium"], default="high",
                    help="the kernel's matmul precision hint (passes/matmul_precision.py)")
    a = ap.parse_args()
    td = resolve("llvm")
    print(f"{cpu_threads()} threads (as engine.load sizes the pool; TVM_NUM_THREADS to choose)")
    d, scale = a.head_dim, a.head_dim ** -0.5
    hints = {"gqa_group": a.q_heads // a.kv_heads, "scale": scale, "causal": True, "precision": a.precision}
    if a.forward:  # attention(q, k, v) over T = S = --context fp32 rows
        t, dt, rows, kvr = tirx.Var("T", "int64"), "float32", a.context, a.context
        q, k, v = (te.placeholder((t, h, d), dt, n) for n, h in (("q", a.q_heads), ("k", a.kv_heads), ("v", a.kv_heads)))
        out, op, extra = kernels.attention(q, k, v, scale), "attention", []
        func = te.create_prim_func([q, k, v, out])
    else:  # cache_attention over a bf16 cache of kv_len = --context valid rows
        kv_len = tirx.Var("kv_len", "int64")
        t, dt, rows, kvr = (1 if a.tokens == 1 else tirx.Var("T", "int64")), "bfloat16", a.tokens, a.context + 4
        q = te.placeholder((t, a.q_heads, d), dt, "q")
        kc, vc = (te.placeholder((kvr, a.kv_heads, d), dt, n) for n in ("kc", "vc"))
        out, op, extra = kernels.cache_attention(q, kc, vc, kv_len, scale=scale), "cache_attention", [a.context]
        func = te.create_prim_func([q, kc, vc, out, kv_len])
    func = schedule_func(func.with_attrs({OP_KIND_ATTR: op, **hints}), td).with_attr("global_symbol", "main")
    with td.to_tvm() as tgt:
        fn = tvm.compile(tvm.IRModule({"main": func}), target=tgt)["main"]
    rng, dev, npdt = np.random.default_rng(0), tvm.cpu(), (np.float32 if dt == "float32" else ml_dtypes.bfloat16)
    args = [tvm.runtime.tensor(rng.standard_normal(s).astype(npdt), dev)
            for s in [(rows, a.q_heads, d), (kvr, a.kv_heads, d), (kvr, a.kv_heads, d)]]
    args += [tvm.runtime.tensor(np.zeros((rows, a.q_heads, d), npdt), dev)] + extra
    layers = [args]
    if a.cold and not a.forward:
        layers += [[args[0], *(tvm.runtime.tensor(rng.standard_normal(x.shape).astype(npdt), dev) for x in args[1:3]),
                    *args[3:]] for _ in range(a.layers - 1)]
    fn(*args)
    ts = []
    for _ in range(a.reps):
        for layer in layers:
            t0 = time.perf_counter()
            fn(*layer)
            ts.append(time.perf_counter() - t0)
    ms, best = 1e3 * float(np.median(ts)), 1e3 * min(ts)
    print(f"{op} T={rows} kv_len={a.context} precision {a.precision} heads {a.q_heads}/{a.kv_heads}x{d}: "
          f"{ms:.3f} ms per layer (best {best:.3f}), x{a.layers} = {ms * a.layers:.1f} ms")


if __name__ == "__main__":
    main()
