"""Time one packed linear kernel alone, as the CPU schedule registry builds it.

    python bench/linear_kernel.py --tokens 256 --k 1024 --n 6144     # Qwen3-0.6B gate+up, prefill
    python bench/linear_kernel.py --tokens 1 --k 1024 --n 6144       # the same at decode

Weights packed as `passes/pack_weights.py` packs them for this CPU (blocks of two SIMD
registers), --dtype weights and activations (--x-dtype float32: fp32 rows of x, as the models
pass them; on an AMX CPU that takes the split hi + lo tile products; --dtype int8: int8 weights
with a per-row scale, `passes/quantize_weights.py`, and fp32 x), fp32 accumulation. Median and best over --reps
calls; prints ms and GFLOP/s (and weight GB/s, the figure that matters at --tokens 1).
Handy when swapping a linear schedule rule.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    import tvm
    from tvm import te, tirx

    from inference_pio.engine.runtime import cpu_threads
    from inference_pio.ir import np_dtype
    from inference_pio.schedules import kernels
    from inference_pio.schedules.registry import OP_KIND_ATTR, schedule_func
    from inference_pio.targets import resolve

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=256, help="rows of x (1 = decode)")
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--n", type=int, default=6144)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16", "int8"])
    ap.add_argument("--x-dtype", choices=["bfloat16", "float32", "float16"],
                    help="activations (default --dtype); the models feed fp32 rows of x to every linear")
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--precision", choices=["high", "medium"], default="high",
                    help="the kernel's matmul precision hint (passes/matmul_precision.py)")
    a = ap.parse_args()
    td = resolve("llvm")
    print(f"{cpu_threads()} threads (as engine.load sizes the pool; TVM_NUM_THREADS to choose)")
    blk = 2 * td.vector_lanes
    t = 1 if a.tokens == 1 else tirx.Var("T", "int64")
    quant = a.dtype == "int8"
    xdt = a.x_dtype or ("float32" if quant else a.dtype)
    odt = "float32" if quant else a.dtype
    x = te.placeholder((t, a.k), xdt, "x")
    wp = te.placeholder((-(-a.n // blk), a.k, blk), a.dtype, "wp")
    scale = [te.placeholder((a.n,), "float32", "scale")] if quant else []
    out = kernels.linear_packed(x, wp, *scale, n=a.n, out_dtype=odt)
    func = te.create_prim_func([x, wp, *scale, out]).with_attrs({OP_KIND_ATTR: "linear_packed", "precision": a.precision})
    func = schedule_func(func, td).with_attr("global_symbol", "main")
    with td.to_tvm() as tgt:
        fn = tvm.compile(tvm.IRModule({"main": func}), target=tgt)["main"]
    rng, dev, npdt = np.random.default_rng(0), tvm.cpu(), np_dtype(a.dtype)
    xa = tvm.runtime.tensor(rng.standard_normal((a.tokens, a.k)).astype(np_dtype(xdt)), dev)
    wshape = tuple(int(s) for s in wp.shape)
    w = rng.integers(-127, 128, wshape) if quant else rng.standard_normal(wshape)
    args = [xa, tvm.runtime.tensor(w.astype(npdt), dev)]
    args += [tvm.runtime.tensor(rng.random(a.n, np.float32) / 127, dev)] if quant else []
    args.append(tvm.runtime.tensor(np.zeros((a.tokens, a.n), np_dtype(odt)), dev))
    fn(*args)
    ts = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        fn(*args)
        ts.append(time.perf_counter() - t0)
    med, best = float(np.median(ts)), min(ts)
    flop, wbytes = 2 * a.tokens * a.k * a.n, a.k * a.n * npdt.itemsize
    print(f"linear_packed T={a.tokens} K={a.k} N={a.n} {a.dtype} (x {xdt}, precision {a.precision}): median {med * 1e3:.2f} ms, "
          f"best {best * 1e3:.2f} ms = {flop / best / 1e9:.1f} GFLOP/s, weights {wbytes / best / 1e9:.1f} GB/s")


if __name__ == "__main__":
    main()
