"""The AMX prefill GEMM (`schedules/cpu/amx.py`).

Numerics run only on a CPU with AMX whose OS grants it (Sapphire Rapids and later); the rule's
choices and the code generation are checked everywhere, by compiling for such a CPU.
"""
from __future__ import annotations

import numpy as np
import pytest

from inference_pio.ir import GraphBuilder, interpret
from inference_pio.targets import amx_usable, resolve
from kernel_harness import check, lowered_kernel, rand, run_graph

HOST_AMX = amx_usable(resolve("llvm").cpu_flags)
needs_amx = pytest.mark.skipif(not HOST_AMX, reason="this CPU (or its OS) has no AMX bf16")
SPLIT_TOL = 1e-5  # x as two bf16 parts: ~2^-16 of |x| per product, against 2^-8 for one


def linear_func(t, k: int, n: int, xdt: str = "float32", wdt: str = "bfloat16", bias: bool = False,
                residual: bool = False, block: int = 32):
    """linear_packed's TE kernel as lowering makes it (T a variable unless ``t`` is an int)."""
    from tvm import te, tirx

    from inference_pio.schedules import kernels
    from inference_pio.schedules.registry import OP_KIND_ATTR

    rows = t if isinstance(t, int) else tirx.Var("T", "int64")
    x = te.placeholder((rows, k), xdt, "x")
    wp = te.placeholder((-(-n // block), k, block), wdt, "wp")
    extra = ([te.placeholder((n,), "float32", "scale")] if wdt == "int8" else []) + \
        ([te.placeholder((n,), "float32", "b")] if bias else []) + \
        ([te.placeholder((rows, n), "float32", "r")] if residual else [])
    out = kernels.linear_packed(x, wp, *extra, n=n, bias=bias, residual=residual)
    return te.create_prim_func([x, wp, *extra, out]).with_attr(OP_KIND_ATTR, "linear_packed")


SPR = resolve({"kind": "llvm", "mcpu": "sapphirerapids"})


def test_rule_takes_bf16_panels_of_32_over_t_rows():
    from inference_pio.schedules.cpu.amx import amx_linear

    assert amx_usable(SPR.cpu_flags)
    assert amx_linear(linear_func("T", 64, 40), SPR) is not None
    assert amx_linear(linear_func("T", 64, 40, xdt="bfloat16", bias=True, residual=True), SPR) is not None
    assert amx_linear(linear_func(1, 64, 40), SPR) is None  # decode: the GEMV streams the weights
    assert amx_linear(linear_func("T", 48, 40), SPR) is None  # K not a multiple of 32
    assert amx_linear(linear_func("T", 64, 40, wdt="int8", bias=True, residual=True), SPR) is not None
    assert amx_linear(linear_func("T", 64, 40, wdt="float32"), SPR) is None
    assert amx_linear(linear_func("T", 64, 40, wdt="float16"), SPR) is None
    assert amx_linear(linear_func("T", 64, 40, block=16), SPR) is None  # AVX2's panels
    no_amx = resolve({"kind": "llvm", "mcpu": "skylake-avx512"})
    assert not amx_usable(no_amx.cpu_flags)
    assert amx_linear(linear_func("T", 64, 40), no_amx) is None


def test_compiles_to_tile_instructions_for_an_amx_cpu():
    """Cross-compiled for Sapphire Rapids (runs on any host): the object has the tile products."""
    import tvm

    from inference_pio.schedules.registry import schedule_func

    func = schedule_func(linear_func("T", 96, 70, bias=True, residual=True), SPR).with_attr("global_symbol", "main")
    with SPR.to_tvm() as tgt:
        lib = tvm.compile(tvm.IRModule({"main": func}), target=tgt)
    asm = lib.mod.inspect_source("asm") if hasattr(lib, "mod") else lib.inspect_source("asm")
    for insn in ("ldtilecfg", "tdpbf16ps", "tileloadd", "tilestored", "tilerelease"):
        assert insn in asm, insn


@needs_amx
@pytest.mark.parametrize("t", [2, 5, 31, 32, 33, 70])
@pytest.mark.parametrize("k,n", [(32, 1), (64, 33), (96, 64), (64, 541)])
def test_amx_linear(t, k, n):
    """(64, 541): 17 panels, the last partial; on 2 cores, tasks of 4 panels and a last of 1."""
    from inference_pio.passes.pack_weights import pack_weights

    rng = np.random.default_rng(t * 1000 + k + n)
    b = GraphBuilder("amx_linear")
    x = b.input("x", ("T", k), "float32")
    r = b.input("r", ("T", n), "float32")
    y = b.linear(x, b.param("w", (n, k), "bfloat16"), b.param("b", (n,), "bfloat16"), r, bias=True, residual=True)
    g = pack_weights(b.build({"y": y}), block=32)
    feeds = {"x": rand(rng, (t, k)), "r": rand(rng, (t, n))}
    weights = {"w": rand(rng, (n, k), "bfloat16", 1 / np.sqrt(k)), "b": rand(rng, (n,), "bfloat16")}
    check(g, feeds, weights, rtol=SPLIT_TOL)


@needs_amx
@pytest.mark.parametrize("t", [3, 33])
@pytest.mark.parametrize("k,n", [(64, 33), (96, 541)])
def test_amx_linear_int8_weights(t, k, n):
    """int8 weights (`passes/quantize_weights.py`): each converted to bf16 exactly as the pairs
    are made, the row's scale applied to the finished sum, before bias and residual."""
    from inference_pio.passes.pack_weights import pack_weights
    from inference_pio.passes.quantize_weights import quantize_weights

    rng = np.random.default_rng(t + k + n)
    b = GraphBuilder("amx_linear_int8")
    x = b.input("x", ("T", k), "float32")
    r = b.input("r", ("T", n), "float32")
    y = b.linear(x, b.param("w", (n, k), "bfloat16"), b.param("b", (n,), "float32"), r, bias=True, residual=True)
    g = quantize_weights(pack_weights(b.build({"y": y}), block=32))
    assert {p.name: p.dtype for p in g.params()}["w"] == "int8"
    feeds = {"x": rand(rng, (t, k)), "r": rand(rng, (t, n))}
    weights = {"w": rand(rng, (n, k), "bfloat16", 1 / np.sqrt(k)), "b": rand(rng, (n,))}
    check(g, feeds, weights, rtol=SPLIT_TOL)


@needs_amx
@pytest.mark.parametrize("xdt,out", [("bfloat16", "float32"), ("float32", "bfloat16")])
def test_amx_linear_16_bit_activations(xdt, out):
    """A bf16 x takes one tile part (exact); a bf16 output is one rounding of the fp32 sums."""
    from inference_pio.passes.pack_weights import pack_weights

    rng = np.random.default_rng(7)
    b = GraphBuilder("amx_linear_16")
    x = b.input("x", ("T", 64), xdt)
    g = pack_weights(b.build({"y": b.linear(x, b.param("w", (40, 64), "bfloat16"), out_dtype=out)}), block=32)
    check(g, {"x": rand(rng, (37, 64), xdt)}, {"w": rand(rng, (40, 64), "bfloat16", 0.125)}, dtype=out,
          rtol=SPLIT_TOL)


@needs_amx
def test_split_is_needed_for_fp32_accuracy():
    """Against bf16(x) alone (what the tile products would give without the lo part) the
    split kernel is ~100x closer to fp32 math."""
    from inference_pio.passes.pack_weights import pack_weights

    rng = np.random.default_rng(3)
    b = GraphBuilder("amx_split")
    x = b.input("x", ("T", 256), "float32")
    g = pack_weights(b.build({"y": b.linear(x, b.param("w", (64, 256), "bfloat16"))}), block=32)
    xs, w = rand(rng, (40, 256)), rand(rng, (64, 256), "bfloat16", 1 / 16)
    ours = run_graph(g, {"x": xs}, {"w": w})["y"]
    exact = xs.astype(np.float64) @ w.astype(np.float64).T
    rounded = xs.astype(np.dtype(w.dtype)).astype(np.float64) @ w.astype(np.float64).T
    scale = np.abs(exact).max()
    assert np.abs(ours - exact).max() / scale <= SPLIT_TOL
    assert np.abs(rounded - exact).max() / scale > 100 * np.abs(ours - exact).max() / scale


def cache_attention_graph(hkv: int, group: int, d: int, cap: int, qdt: str, causal: bool = True):
    from inference_pio.ir import Graph, TensorType, input_node, op_node

    q = input_node("q", TensorType(("T", hkv * group, d), qdt))
    kc, vc = (input_node(n, TensorType((cap, hkv, d), "bfloat16")) for n in ("kc", "vc"))
    n = input_node("kv_len", TensorType(("kv_len",), "int64"), shape_only=True)
    o = op_node("cache_attention", [q, kc, vc, n], scale=d ** -0.5, **({} if causal else {"causal": False}))
    return Graph("cache_attention", (q, kc, vc, n), (("o", o),))


def test_attention_rule_takes_bf16_caches_over_t_rows():
    from inference_pio.schedules.cpu.flash_amx import amx_flash_attention

    def func(group=2, d=64, qdt="float32"):
        return lowered_kernel(cache_attention_graph(2, group, d, 96, qdt), "scale")

    assert amx_flash_attention(func(), SPR) is not None
    assert amx_flash_attention(func(qdt="bfloat16", group=4), SPR) is not None
    assert amx_flash_attention(func(group=3), SPR) is not None  # 32 rows per task: 30 used, 2 spare
    assert amx_flash_attention(func(group=33), SPR) is None  # more heads than a task's 32 rows
    assert amx_flash_attention(func(d=48), SPR) is None
    assert amx_flash_attention(func(), resolve({"kind": "llvm", "mcpu": "skylake-avx512"})) is None


@needs_amx
@pytest.mark.parametrize("t,kv_len,group,d,qdt", [(2, 2, 2, 32, "float32"), (33, 70, 2, 64, "float32"),
                                                  (70, 70, 4, 32, "bfloat16"), (5, 150, 1, 64, "float32"),
                                                  (40, 100, 8, 32, "float32"), (64, 64, 2, 128, "float32"),
                                                  (7, 40, 12, 128, "float32"), (9, 9, 3, 32, "bfloat16")])
def test_amx_cache_attention(t, kv_len, group, d, qdt):
    """Prefill over a bf16 cache: rows past kv_len are NaN garbage that must not leak in."""
    rng = np.random.default_rng(t + kv_len)
    cap, hkv = 160, 2
    g = cache_attention_graph(hkv, group, d, cap, qdt)
    cache = lambda: (rand(rng, (cap, hkv, d)) * np.where(np.arange(cap) < kv_len, 1, np.nan)[:, None, None]).astype(  # noqa: E731
        np.dtype("float32")).astype(rand(rng, (1,), "bfloat16").dtype)
    check(g, {"q": rand(rng, (t, hkv * group, d), qdt, 3.0), "kc": cache(), "vc": cache(),
              "kv_len": np.zeros(kv_len)}, dtype=qdt, rtol=2e-5)


@needs_amx
@pytest.mark.parametrize("t,k,n", [(5, 64, 33), (70, 96, 64)])
def test_medium_precision_rounds_x_to_bf16(t, k, n):
    """At matmul precision "medium" the kernel multiplies bf16(x) (one tile product, not two):
    bf16(x) @ w to within the fp32 sums' rounding, ~1e-3 from x @ w."""
    from inference_pio.passes import matmul_precision
    from inference_pio.passes.pack_weights import pack_weights

    rng = np.random.default_rng(t + k)
    b = GraphBuilder("amx_medium")
    x = b.input("x", ("T", k), "float32")
    g = pack_weights(b.build({"y": b.linear(x, b.param("w", (n, k), "bfloat16"))}), block=32)
    xs, w = rand(rng, (t, k)), rand(rng, (n, k), "bfloat16", 1 / np.sqrt(k))
    ours = run_graph(matmul_precision(g, "medium"), {"x": xs}, {"w": w})["y"]
    wf = w.astype(np.float64)
    rounded, exact = xs.astype(w.dtype).astype(np.float64) @ wf.T, xs.astype(np.float64) @ wf.T
    scale = np.abs(exact).max()
    assert np.abs(ours - rounded).max() / scale <= SPLIT_TOL
    assert 1e-4 < np.abs(ours - exact).max() / scale < 1e-2


@needs_amx
@pytest.mark.parametrize("t,kv_len,group,d", [(33, 70, 2, 64), (40, 100, 8, 32)])
def test_medium_precision_attention(t, kv_len, group, d):
    """q and P as bf16 (one tile product each): ~1e-3 from fp32 math, and not the split's ~1e-5."""
    from inference_pio.passes import matmul_precision

    rng = np.random.default_rng(t * kv_len)
    cap, hkv = 128, 2
    g = cache_attention_graph(hkv, group, d, cap, "float32")
    feeds = {"q": rand(rng, (t, hkv * group, d), "float32", 3.0), "kc": rand(rng, (cap, hkv, d), "bfloat16"),
             "vc": rand(rng, (cap, hkv, d), "bfloat16"), "kv_len": np.zeros(kv_len)}
    ref = interpret(g, feeds, {})["o"].astype(np.float64)
    err = np.abs(run_graph(matmul_precision(g, "medium"), feeds)["o"] - ref).max() / np.abs(ref).max()
    assert 2e-5 < err < 2e-2, err


def forward_attention_graph(hkv: int, group: int, d: int, causal: bool = True):
    """The cache-less forward's attention: fp32 q, k and v."""
    from inference_pio.ir import Graph, TensorType, input_node, op_node

    q = input_node("q", TensorType(("T", hkv * group, d), "float32"))
    k, v = (input_node(n, TensorType(("T", hkv, d), "float32")) for n in ("k", "v"))
    o = op_node("attention", [q, k, v], scale=d ** -0.5, **({} if causal else {"causal": False}))
    return Graph("attention", (q, k, v), (("o", o),))


def test_fp32_keys_take_the_tiles_at_both_precisions():
    from inference_pio.passes import matmul_precision
    from inference_pio.schedules.cpu.flash_amx import amx_flash_attention

    g = forward_attention_graph(2, 2, 64)
    assert amx_flash_attention(lowered_kernel(g, "scale"), SPR) is not None  # split into hi and lo parts
    assert amx_flash_attention(lowered_kernel(matmul_precision(g, "medium"), "scale"), SPR) is not None


@needs_amx
@pytest.mark.parametrize("t,hkv,group,d,causal", [(70, 2, 2, 64, True), (33, 2, 4, 32, False), (100, 1, 8, 128, True),
                                                  (90, 16, 1, 64, False), (21, 1, 12, 64, True)])
def test_forward_attention_splits_fp32_keys_and_values(t, hkv, group, d, causal):
    """fp32 q, k, v and P each as bf16 hi + lo (three tile products per product), causal or not
    (a vision tower's attention): within ~3e-5, twice the error of a split q over exact bf16
    keys, since the keys' own split now rounds too (each part to 2^-17 relative)."""
    rng = np.random.default_rng(t * d + hkv)
    g = forward_attention_graph(hkv, group, d, causal)
    check(g, {"q": rand(rng, (t, hkv * group, d), "float32", 3.0), "k": rand(rng, (t, hkv, d)),
              "v": rand(rng, (t, hkv, d))}, dtype="float32", rtol=5e-5)


@needs_amx
@pytest.mark.parametrize("t,hkv,group,d,causal", [(70, 2, 2, 64, True), (33, 2, 4, 32, False), (100, 1, 8, 128, True)])
def test_medium_precision_forward_attention(t, hkv, group, d, causal):
    """fp32 k and v rounded to bf16 as each block is copied, q and P too: ~1e-3 relative."""
    from inference_pio.passes import matmul_precision

    rng = np.random.default_rng(t * d)
    g = forward_attention_graph(hkv, group, d, causal)
    feeds = {"q": rand(rng, (t, hkv * group, d), "float32", 3.0), "k": rand(rng, (t, hkv, d)),
             "v": rand(rng, (t, hkv, d))}
    ref = interpret(g, feeds, {})["o"].astype(np.float64)
    err = np.abs(run_graph(matmul_precision(g, "medium"), feeds)["o"] - ref).max() / np.abs(ref).max()
    assert 2e-5 < err < 2e-2, err
