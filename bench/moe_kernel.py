"""Time the routed experts kernel alone (`schedules/cpu/moe.py`), as the CPU registry builds it.

    python bench/moe_kernel.py --tokens 512                  # Qwen3-Coder-30B-A3B layer, prefill
    python bench/moe_kernel.py --tokens 1 --dtype int8       # one decode step, int8 experts
    python bench/moe_kernel.py --tokens 512 --rows 4 6 8     # sweep the register tile's token rows

Weights packed per expert as `passes/pack_weights.py` packs them for this CPU (int8: with
per-row scales), x fp32, each token routed to --top-k of --experts experts at random (8
routings used in turn, so a call mostly reads its experts from memory, as in a model). Median
and best over --reps calls; prints ms, GFLOP/s of the routed work, and the weight GB/s of the
experts the tokens used (the figure that matters at --tokens 1).
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
    from inference_pio.schedules.cpu import moe
    from inference_pio.schedules.registry import OP_KIND_ATTR, schedule_func
    from inference_pio.targets import resolve

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=512, help="rows of x (1 = decode)")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--inter", type=int, default=768, help="each expert's width F")
    ap.add_argument("--experts", type=int, default=128)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "int8"])
    ap.add_argument("--rows", type=int, nargs="+", default=[moe.ROWS], help="tokens per register tile (T > 1)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--precision", choices=["high", "medium"], default="high",
                    help="the kernel's matmul precision hint (passes/matmul_precision.py)")
    ap.add_argument("--pairs", choices=["auto", "yes", "no"], default="auto",
                    help="panels stored with rows paired (passes/pack_weights.py; auto: as compiled here, bf16 on AMX)")
    a = ap.parse_args()
    td = resolve("llvm")
    from inference_pio.targets import amx_usable

    pairs = a.pairs == "yes" or (a.pairs == "auto" and a.dtype == "bfloat16" and amx_usable(td.cpu_flags))
    print(f"{cpu_threads()} threads (as engine.load sizes the pool; TVM_NUM_THREADS to choose)")
    blk, h, f, e = 2 * td.vector_lanes, a.hidden, a.inter, a.experts
    t = 1 if a.tokens == 1 else tirx.Var("T", "int64")
    quant = a.dtype == "int8"
    x, g = te.placeholder((t, h), "float32", "x"), te.placeholder((t, e), "float32", "gates")
    w_in = te.placeholder((e, -(-2 * f // blk), h, blk), a.dtype, "w_in")
    w_out = te.placeholder((e, -(-h // blk), f, blk), a.dtype, "w_out")
    stacks = [w_in, te.placeholder((e, 2 * f), "float32", "s_in")] if quant else [w_in]
    stacks += [w_out, te.placeholder((e, h), "float32", "s_out")] if quant else [w_out]
    out = kernels.moe_experts(x, g, *stacks, pack=blk, inter=f, pairs=pairs)
    func = te.create_prim_func([x, g, *stacks, out]).with_attrs({OP_KIND_ATTR: "moe_experts",
                                                                 "precision": a.precision, "pairs": pairs})

    rng, dev, npdt = np.random.default_rng(0), tvm.cpu(), np_dtype(a.dtype)
    routings = []  # one random routing per call, in turn: a call's experts are rarely still in cache
    for _ in range(8):
        gates = np.zeros((a.tokens, e), np.float32)
        for i in range(a.tokens):
            gates[i, rng.choice(e, a.top_k, replace=False)] = 1 / a.top_k
        routings.append(tvm.runtime.tensor(gates, dev))
    args = [tvm.runtime.tensor(rng.standard_normal((a.tokens, h)).astype(np.float32), dev), routings[0]]
    for s in stacks:
        shape = tuple(int(d) for d in s.shape)
        if s.dtype == "float32" and s.name.startswith("s_"):
            args.append(tvm.runtime.tensor(rng.random(shape, np.float32) / 127, dev))
        else:
            w = rng.integers(-127, 128, shape) if quant else rng.standard_normal(shape) * 0.02
            args.append(tvm.runtime.tensor(w.astype(npdt), dev))
    args.append(tvm.runtime.tensor(np.zeros((a.tokens, h), np.float32), dev))
    used = int((gates.sum(0) > 0).sum())
    flop = 2 * a.tokens * a.top_k * 3 * h * f
    wbytes = used * 3 * h * f * npdt.itemsize
    for rows in a.rows:
        moe.ROWS = rows
        sched = schedule_func(func, td).with_attr("global_symbol", "main")
        with td.to_tvm() as tgt:
            fn = tvm.compile(tvm.IRModule({"main": sched}), target=tgt)["main"]
        fn(*args)
        ts = []
        for r in range(a.reps):
            args[1] = routings[r % len(routings)]
            t0 = time.perf_counter()
            fn(*args)
            ts.append(time.perf_counter() - t0)
        med, best = float(np.median(ts)), min(ts)
        print(f"moe_experts T={a.tokens} H={h} F={f} E={e} top-{a.top_k} {a.dtype} rows={rows}: median "
              f"{med * 1e3:.2f} ms, best {best * 1e3:.2f} ms = {flop / best / 1e9:.1f} GFLOP/s, weights of the "
              f"{used} experts used {wbytes / best / 1e9:.1f} GB/s (precision {a.precision}, pairs {pairs})")


if __name__ == "__main__":
    main()
