"""Time host-side top-k / top-p sampling (`engine/sampler.py`) against the whole-row definition,
in the same run, on a row the size of Qwen3's vocabulary.

    python bench/sampler_speed.py                 # 151,936 tokens, 20 reps per setting

The whole-row definition is softmax over every token, masked to the top_k and the nucleus by a
full stable sort, then `Generator.choice` (what `sample` did before 2026-12-02). Two rows:
"random" (N(0, 9) logits) and "peaked" (N(0, 4) plus 30 tokens raised by 8 to 14). Prints ms
per draw (median) and whether both draw the same tokens for the same seeds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sampling_reference import whole_row  # noqa: E402  (the definition the tests hold `sample` to)

SETTINGS = [dict(temperature=0.6, top_k=20, top_p=0.95), dict(temperature=0.7, top_k=50),
            dict(temperature=0.7, top_p=0.9), dict(temperature=0.7), dict(temperature=1.0, top_p=0.999)]


def _median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main() -> None:
    from inference_pio.engine.sampler import sample

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = {"random": (rng.standard_normal(a.vocab) * 3).astype(np.float32)}
    peaked = (rng.standard_normal(a.vocab) * 2).astype(np.float32)
    peaked[rng.choice(a.vocab, 30, replace=False)] += rng.uniform(8, 14, 30).astype(np.float32)
    rows["peaked"] = peaked
    print(f"{'row':8} {'setting':42} {'sample ms':>10} {'whole row ms':>13} {'same draws':>11}")
    for name, z in rows.items():
        for kw in SETTINGS:
            ours = _median_ms(lambda: sample(z, rng, **kw), a.reps)
            ref = _median_ms(lambda: whole_row(z, rng, **kw), a.reps)
            same = sum(sample(z, np.random.default_rng(s), **kw) == whole_row(z, np.random.default_rng(s), **kw)
                       for s in range(50))
            setting = ", ".join(f"{k}={v}" for k, v in kw.items())
            print(f"{name:8} {setting:42} {ours:10.2f} {ref:13.2f} {same:8}/50")


if __name__ == "__main__":
    main()
