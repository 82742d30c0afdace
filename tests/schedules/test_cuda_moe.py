"""The routed CUDA experts kernels (schedules/cuda/moe.py), run serially on the CPU
(tests/cuda_emulation.py) against the op's numpy reference: decode's one token and prompts
whose experts get several tiles, fp32 and bf16 stacks, odd widths; and what the grid bound
promises."""
from __future__ import annotations

import itertools
import shutil

import ml_dtypes
import numpy as np
import pytest
from tvm import te

import cuda_emulation
from inference_pio.ir import ops
from inference_pio.schedules import kernels
from inference_pio.schedules.cuda.moe import TT, cuda_moe, tile_bound
from inference_pio.targets import resolve

CUDA = resolve({"kind": "cuda", "arch": "sm_90a"})


def _routed(t, e, k, h, f, wdt):
    """The rule's kernel for the TE moe_experts with slots=k, as lowering would hand it over:
    T symbolic (prefill's form, also run at T = 1) or, for ``t == "decode"``, static 1."""
    t = 1 if t == "decode" else te.var("T", "int64")
    args = [te.placeholder((t, h), "float32", "x"), te.placeholder((t, e), "float32", "g"),
            te.placeholder((e, 2 * f, h), wdt, "w_in"), te.placeholder((e, h, f), wdt, "w_out")]
    outs = kernels.moe_experts(*args, slots=k)
    func = cuda_moe(te.create_prim_func(args + outs), CUDA)
    assert func is not None
    return func


@pytest.mark.parametrize("t,e,k,h,f,wdt,scoring", [
    (1, 6, 2, 40, 23, "float32", "softmax"),      # one token through the prefill form; odd expert width
    ("decode", 6, 2, 40, 23, "float32", "softmax"),      # decode's form (static T = 1)
    ("decode", 128, 8, 256, 96, "bfloat16", "softmax"),  # ... at Qwen3-MoE's expert count and top_k
    (23, 9, 3, 56, 30, "float32", "softmax"),     # a prompt: partial tiles
    (70, 16, 4, 64, 48, "bfloat16", "sigmoid"),   # several tiles per expert; 16-byte loads
    (37, 40, 1, 64, 32, "float32", "sigmoid"),    # top_k 1, more experts than lanes
    ("decode", 8, 2, 64, 32, "float16", "sigmoid"),  # fp16 stacks
])
def test_routed_kernels_match_reference(rng, t, e, k, h, f, wdt, scoring):
    func = _routed(t, e, k, h, f, wdt)
    decode, t = t == "decode", 1 if t == "decode" else t
    x = rng.standard_normal((t, h)).astype(np.float32)
    g = ops.moe_gates(rng.standard_normal((t, e)).astype(np.float32), top_k=k, normalize=True, scoring=scoring)
    npdt = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[wdt]
    w_in = (0.2 * rng.standard_normal((e, 2 * f, h))).astype(npdt)
    w_out = (0.2 * rng.standard_normal((e, h, f))).astype(npdt)
    scratch = [np.zeros(s, dt) for _, s, dt in kernels.moe_scratch(t, e, k, h, f)]
    got = cuda_emulation.run(func, x, g, w_in, w_out, np.zeros((t, h), np.float32), *scratch)
    out, sel, rank, lst, cnt = got[4:9]
    ref = ops.moe_experts(x, g, w_in, w_out)
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    chosen = [np.nonzero(g[i])[0] for i in range(t)]  # the routing tables, as documented
    for i, c in enumerate(chosen):
        assert list(sel[i, :len(c)]) == list(c) and (sel[i, len(c):] == -1).all()
        assert list(rank[i, c]) == list(range(len(c)))
    for ex in range(e if not decode else 0):  # (decode's form lists no expert's tokens)
        assert list(lst[ex, :cnt[ex]]) == [i for i in range(t) if g[i, ex] != 0]


def test_tiles_never_exceed_the_bound():
    """tile_bound(T, k, E) holds every expert's tiles however the T*k choices fall (the grid
    of the products is that big), and is exact for one token."""
    for t, k, e in itertools.product((1, 2, 5, 9, 64), (1, 2, 8), (8, 16, 128)):
        if k > e:
            continue
        worst = 0
        for counts in ([t] * k + [0] * (e - k), [1] * min(e, t * k) + [0] * (e - min(e, t * k))):
            rest = t * k - sum(counts)
            counts = [c + (rest if i == 0 else 0) for i, c in enumerate(counts)]
            worst = max(worst, sum(-(-c // TT) for c in counts))
        assert worst <= tile_bound(t, k, e)
    assert tile_bound(1, 8, 128) == 8


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")
def test_qwen3_moe_shapes_compile_without_spills():
    """Qwen3-Coder-30B-A3B's and GLM-4.7's expert stacks (GLM's w_in has more than 2^31
    elements: int64 offsets) compile for sm_90a without register spills."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from cuda_offline import ptxas

    from inference_pio.schedules.cuda.moe import routed_experts

    for e, h, f, k in ((128, 2048, 768, 8), (160, 5120, 1536, 8)):
        for decode, launches in ((False, 5), (True, 4)):
            lines = ptxas(routed_experts(e, h, f, k, ("float32", "float32", "bfloat16", "bfloat16", "float32"),
                                         decode=decode))
            spills = [ln for ln in lines if "spill" in ln]
            assert len(spills) == launches and all("0 bytes spill stores, 0 bytes spill loads" in ln for ln in spills)
