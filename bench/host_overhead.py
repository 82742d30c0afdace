"""The host's share of a decode step: a whole `generate` step against the VM call alone, on a
tiny model whose kernels take microseconds, so the difference is the runtime's Python.

    python bench/host_overhead.py                   # CPU, tiny random Qwen3, 300 steps
    python bench/host_overhead.py --static-decode   # decode compiled as for CUDA graphs

The model is written with bench/random_checkpoint.py (random weights, no downloads) and compiled
for this CPU. The VM call alone is the decode function called again with the arguments the
runtime passed it last (recorded by a thin wrapper around the VM that stays in place for the
steps too). Prints the median of --runs runs of each, then what one input write costs through
TVM's `copyfrom` and through `copyto` from a host tensor (`engine/runtime.py`, `_KeptInputs`).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import random_checkpoint as rc  # noqa: E402

TINY = dict(vocab_size=131, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, tie_word_embeddings=False, max_position_embeddings=4096,
            rope_theta=1000000.0, rms_norm_eps=1e-6)


class _Recording:
    """The VM, handing out functions that remember their last arguments."""

    def __init__(self, vm) -> None:
        self.vm, self.args = vm, {}

    def __getitem__(self, fn: str):
        f = self.vm[fn]

        def call(*a):
            self.args[fn] = a
            return f(*a)
        return call


def main() -> None:
    from inference_pio import engine, frontends

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--static-decode", action="store_true")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ck = Path(tmp) / "ckpt"
        ck.mkdir()
        (ck / "config.json").write_text(json.dumps(rc.hf_config(TINY, "float32")))
        rc.write_safetensors(ck / "model.safetensors", rc.qwen3_shapes(TINY), "float32")
        md = frontends.huggingface.model_def(ck)
        art = engine.compile(md, target="llvm", max_seq_len=a.steps + 16, static_decode=a.static_decode)
        rt = engine.load(art.save(Path(tmp) / "art"), weights=ck, device="cpu")
        rt.vm = rec = _Recording(rt.vm)
        ids = [3, 4, 5]
        rt.generate(ids, max_new_tokens=8)
        f, args = rec.vm["decode"], rec.args["decode"]
        steps, alone = [], []
        for _ in range(a.runs):
            t = time.perf_counter()
            rt.generate(ids, max_new_tokens=a.steps)
            steps.append((time.perf_counter() - t) / a.steps * 1e6)
            t = time.perf_counter()
            for _ in range(a.steps):
                f(*args)
            alone.append((time.perf_counter() - t) / a.steps * 1e6)
        s, v = statistics.median(steps), statistics.median(alone)
        print(f"static_decode={a.static_decode}: step {s:.1f} us, VM call alone {v:.1f} us, host Python {s - v:.1f} us")
    print(f"writing 4 bytes into a (1,) int32 tensor: TVM copyfrom(numpy) {_per_call_us(copy_from=True):.1f} us, "
          f"copyto from a host tensor {_per_call_us(copy_from=False):.1f} us")


def _per_call_us(copy_from: bool, n: int = 20000) -> float:
    import numpy as np
    import tvm

    buf, host, v = tvm.runtime.empty((1,), "int32", tvm.cpu()), tvm.runtime.empty((1,), "int32", tvm.cpu()), \
        np.array([5], np.int32)
    t = time.perf_counter()
    for _ in range(n):
        buf.copyfrom(v) if copy_from else host.copyto(buf)
    return (time.perf_counter() - t) / n * 1e6


if __name__ == "__main__":
    main()
