"""Time Qwen3-Next's linear-attention kernels alone (`schedules/linear_attention.py`, as the
CPU registry schedules them), at one layer's shapes.

    python bench/linear_attention_kernel.py --tokens 1 512      # a decode step and a prompt

Both in their cached form, as prefill and decode run them: the causal conv over the 2 key
and 1 value projections (C = 2 * Hk * Dk + Hv * Dv channels, kernel K), and the gated delta
rule (Hk key heads, Hv value heads, Dk x Dv fp32 state per head), from a step starting at
position 1 (so the state is read). Inputs fp32, as the graph feeds them. Prints the median
and best of --reps calls.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def _time(fn, args, reps: int) -> tuple[float, float]:
    fn(*args)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(*args)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), min(ts)


def main() -> None:
    import tvm

    from inference_pio.engine.runtime import cpu_threads
    from inference_pio.schedules import linear_attention as la
    from inference_pio.schedules.registry import OP_KIND_ATTR, schedule_func
    from inference_pio.targets import resolve

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 512])
    ap.add_argument("--key-heads", type=int, default=16)
    ap.add_argument("--value-heads", type=int, default=32)
    ap.add_argument("--head-dim", type=int, default=128, help="Dk = Dv")
    ap.add_argument("--kernel", type=int, default=4)
    ap.add_argument("--reps", type=int, default=10)
    a = ap.parse_args()
    td = resolve("llvm")
    print(f"{cpu_threads()} threads (as engine.load sizes the pool; TVM_NUM_THREADS to choose)")
    hk, hv, d, k = a.key_heads, a.value_heads, a.head_dim, a.kernel
    c = 2 * hk * d + hv * d
    f32 = ("float32",) * 7
    kernels = {"causal_conv1d": la.causal_conv1d(c, k, "float32", "float32", cached=True),
               "gated_delta_rule": la.gated_delta_rule(hk, hv, d, d, f32, cached=True)}
    fns = {}
    for op, func in kernels.items():
        sched = schedule_func(func.with_attr(OP_KIND_ATTR, op), td).with_attr("global_symbol", "main")
        with td.to_tvm() as tgt:
            fns[op] = tvm.compile(tvm.IRModule({"main": sched}), target=tgt)["main"]
    rng, dev = np.random.default_rng(0), tvm.cpu()

    def arr(*shape):
        return tvm.runtime.tensor(rng.standard_normal(shape).astype(np.float32), dev)

    for t in a.tokens:
        conv = [arr(t, c), arr(c, 1, k), arr(k - 1, c), t + 1, arr(t, c)]
        delta = [arr(t, hk, d), arr(t, hk, d), arr(t, hv, d), arr(t, hv), arr(t, hv), arr(hv), arr(hv),
                 arr(hv, d, d), t + 1, arr(t, hv, d)]
        for op, args in (("causal_conv1d", conv), ("gated_delta_rule", delta)):
            med, best = _time(fns[op], args, a.reps)
            print(f"{op} T={t} C={c} K={k} Hk={hk} Hv={hv} D={d}: median {med * 1e3:.3f} ms, "
                  f"best {best * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
