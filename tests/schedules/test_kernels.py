"""Every op's TE kernel, lowered and scheduled for the CPU exactly as `engine.compile` does,
against the op's numpy reference (`ir.OPS[op].ref`, run by `ir.interpret`).

Shapes are drawn by hypothesis and kept small; the leading (token) axis is usually the
symbolic dim ``T`` as in the model, so one compiled kernel serves several lengths.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_pio.ir import OPS, GraphBuilder, interpret, np_dtype
from inference_pio.ir.ops import TypeError_
from inference_pio.schedules import KERNELS
from kernel_harness import check, rand, run_graph

SETTINGS = settings(max_examples=6, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
seeds = st.integers(0, 2**31 - 1)
float_dtypes = st.sampled_from(["float32", "bfloat16"])
small = st.integers(1, 9)


# ops that deliberately have no TE kernel, and why
NO_KERNEL = {"positional": "abstract; insert_rotary lowers it to rope_table + rotary",
             "reshape": "lowered to a Relax reshape (a view)",
             "kv_append": "an in-place TIR function built by engine.lower",
             "kv_append_pair": "kv_append's form for keys and values together, built by engine.lower",
             "append_attention": "the decode attention with its KV appends: in-place TIR, built by engine.lower",
             "causal_conv1d": "a recurrence: TIR in schedules/linear_attention.py, emitted by engine.lower",
             "gated_delta_rule": "a recurrence: TIR in schedules/linear_attention.py, emitted by engine.lower"}


def test_every_op_has_a_kernel():
    assert set(OPS) - set(KERNELS) <= set(NO_KERNEL)
    assert set(KERNELS) <= set(OPS)


# **** projections ****


@SETTINGS
@given(t=small, k=st.sampled_from([1, 3, 16, 37, 64, 96]) | st.integers(1, 80), n=st.integers(1, 40),
       wdt=st.sampled_from(["float32", "bfloat16", "float16"]), bias=st.booleans(), residual=st.booleans(),
       out=st.sampled_from(["float32", "bfloat16"]), static=st.booleans(), seed=seeds)
def test_linear(t, k, n, wdt, bias, residual, out, static, seed):
    rng = np.random.default_rng(seed)
    b = GraphBuilder("linear")
    x = b.input("x", (t if static else "T", k), "float32")
    w = b.param("w", (n, k), wdt)
    extra, feeds, weights = [], {"x": rand(rng, (t, k))}, {"w": rand(rng, (n, k), wdt, 1 / np.sqrt(k))}
    if bias:
        extra.append(b.param("b", (n,), wdt))
        weights["b"] = rand(rng, (n,), wdt)
    if residual:
        extra.append(b.input("r", (t if static else "T", n), out))
        feeds["r"] = rand(rng, (t, n), out)
    g = b.build({"y": b.linear(x, w, *extra, bias=bias, residual=residual, out_dtype=out)})
    check(g, feeds, weights, out, rtol=5e-5)


@pytest.mark.parametrize("t,k,n,wdt,residual", [(1, 24, 7, "bfloat16", True), (5, 37, 11, "float32", False)])
def test_linear_with_rms_norm_fused(t, k, n, wdt, residual):
    """linear(x, w, g, norm_eps=e) = linear(rms_norm(x, g, e), w) (`passes.fuse_norm_linear`)."""
    rng = np.random.default_rng(k)
    b = GraphBuilder("norm_linear")
    x = b.input("x", (t, k), "float32")
    extra, feeds = [], {"x": 3 * rand(rng, (t, k))}
    if residual:
        extra.append(b.input("r", (t, n), "float32"))
        feeds["r"] = rand(rng, (t, n))
    y = b.linear(x, b.param("w", (n, k), wdt), b.param("g", (k,), wdt), *extra, residual=residual, norm_eps=1e-5)
    weights = {"w": rand(rng, (n, k), wdt, 1 / np.sqrt(k)), "g": 1 + 0.3 * rand(rng, (k,), wdt)}
    check(b.build({"y": y}), feeds, weights, rtol=5e-5)


@pytest.mark.parametrize("t,k,f,wdt,bias,norm,out", [(1, 24, 7, "bfloat16", True, True, "float32"),
                                                     (5, 37, 4, "float32", False, False, "bfloat16")])
def test_linear_with_swiglu_of_its_output(t, k, f, wdt, bias, norm, out):
    """linear(x, w, out_act="swiglu") = swiglu(linear(x, w)) (`passes.fuse_linear_swiglu`)."""
    rng = np.random.default_rng(k)
    b = GraphBuilder("linear_swiglu")
    x = b.input("x", (t, k), "float32")
    g = [b.param("g", (k,), wdt)] if norm else []
    extra = [b.param("b", (2 * f,), "float32")] if bias else []
    y = b.linear(x, b.param("w", (2 * f, k), wdt), *g, *extra, bias=bias, out_dtype=out, out_act="swiglu",
                 norm_eps=1e-5 if norm else None)
    weights = {"w": rand(rng, (2 * f, k), wdt, 1 / np.sqrt(k)), **({"g": 1 + 0.3 * rand(rng, (k,), wdt)} if norm else {}),
               **({"b": rand(rng, (2 * f,))} if bias else {})}
    check(b.build({"y": y}), {"x": 3 * rand(rng, (t, k))}, weights, out, rtol=5e-5)


@SETTINGS
@given(t=st.sampled_from([1, 1, 2, 5, 9]), k=st.sampled_from([4, 8, 12, 40, 64]) | st.integers(1, 50),
       n=st.integers(1, 40), block=st.sampled_from([4, 16]), wdt=st.sampled_from(["float32", "bfloat16"]),
       bias=st.booleans(), residual=st.booleans(), static=st.booleans(), quant=st.booleans(), seed=seeds)
def test_linear_packed(t, k, n, block, wdt, bias, residual, static, quant, seed):
    """linear after pack_weights: weight (ceil(N/B), K, B), including the static T=1 (decode) GEMV;
    ``quant``: then quantize_weights (int8 rows, a scale each)."""
    from inference_pio.passes.pack_weights import pack_weights
    from inference_pio.passes.quantize_weights import quantize_weights

    rng = np.random.default_rng(seed)
    b = GraphBuilder("linear_packed")
    rows = t if static else "T"
    x = b.input("x", (rows, k), "float32")
    extra, feeds, weights = [], {"x": rand(rng, (t, k))}, {"w": rand(rng, (n, k), wdt, 1 / np.sqrt(k))}
    if bias:
        extra.append(b.param("b", (n,), wdt))
        weights["b"] = rand(rng, (n,), wdt)
    if residual:
        extra.append(b.input("r", (rows, n), "float32"))
        feeds["r"] = rand(rng, (t, n))
    g = pack_weights(b.build({"y": b.linear(x, b.param("w", (n, k), wdt), *extra, bias=bias, residual=residual)}),
                     block=block)
    assert g.count("linear_packed") == 1 and g.count("linear") == 0
    check(quantize_weights(g) if quant else g, feeds, weights, rtol=5e-5)


@pytest.mark.parametrize("wdt", ["float32", "bfloat16"])
def test_decode_gemv_prefetches_its_weight_stream(wdt):
    """The T=1 GEMV prefetches every cache line of its panel row PREFETCH_BYTES ahead
    (test_linear_packed checks its numbers)."""
    from tvm import te

    from inference_pio.schedules import kernels
    from inference_pio.schedules.cpu.prefetch import LINE
    from inference_pio.schedules.registry import OP_KIND_ATTR, schedule_func
    from inference_pio.targets import resolve

    blk = 32
    x, wp = te.placeholder((1, 64), "float32", "x"), te.placeholder((3, 64, blk), wdt, "wp")
    func = te.create_prim_func([x, wp, kernels.linear_packed(x, wp, n=80)]).with_attrs({OP_KIND_ATTR: "linear_packed"})
    text = schedule_func(func, resolve("llvm")).script()
    lines_per_row = max(1, blk * np.dtype("float32" if wdt == "float32" else "float16").itemsize // LINE)
    assert text.count("llvm.prefetch") == lines_per_row


@SETTINGS
@given(v=st.integers(1, 40), h=small, t=small, block=st.sampled_from([4, 16]), dt=float_dtypes, quant=st.booleans(),
       seed=seeds)
def test_embedding_packed(v, h, t, block, dt, quant, seed):
    from inference_pio.passes.pack_weights import pack_weights
    from inference_pio.passes.quantize_weights import quantize_weights

    rng = np.random.default_rng(seed)
    b = GraphBuilder("embedding_packed")
    g = pack_weights(b.build({"y": b.embedding(b.param("table", (v, h), dt), b.input("ids", ("T",), "int32"))}),
                     block=block)
    g = quantize_weights(g) if quant else g
    assert g.output("y").attr("pack") == block
    ids = rng.integers(0, v, size=t).astype(np.int32)
    ids[-1] = v - 1
    ours, ref = check(g, {"ids": ids}, {"table": rand(rng, (v, h), dt)})
    assert (ours["y"] == ref["y"]).all()


@SETTINGS
@given(t=small, k=st.integers(1, 40), n=st.integers(1, 20), seed=seeds)
def test_linear_bf16_activations(t, k, n, seed):
    """bf16 x and w, fp32 accumulation (the reference widens both)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("linear_bf16")
    g = b.build({"y": b.linear(b.input("x", ("T", k), "bfloat16"), b.param("w", (n, k), "bfloat16"))})
    check(g, {"x": rand(rng, (t, k), "bfloat16")}, {"w": rand(rng, (n, k), "bfloat16")}, rtol=5e-5)


@SETTINGS
@given(bat=st.integers(1, 5), m=small, k=small, n=small, dt=float_dtypes,
       out=st.sampled_from(["float32", "bfloat16"]), seed=seeds)
def test_matmul_batched(bat, m, k, n, dt, out, seed):
    rng = np.random.default_rng(seed)
    b = GraphBuilder("matmul")
    g = b.build({"y": b.matmul(b.input("a", (bat, "T", k), dt), b.input("b", (bat, k, n), dt), out_dtype=out)})
    check(g, {"a": rand(rng, (bat, m, k), dt), "b": rand(rng, (bat, k, n), dt)}, dtype=out)


@pytest.mark.parametrize("batch", [(), (2, 3)], ids=["2d", "4d"])
def test_matmul_other_ranks(batch):
    rng = np.random.default_rng(0)
    b = GraphBuilder("matmul_rank")
    g = b.build({"y": b.matmul(b.input("a", (*batch, 3, 4), "float32"), b.input("b", (*batch, 4, 5), "float32"))})
    check(g, {"a": rand(rng, (*batch, 3, 4)), "b": rand(rng, (*batch, 4, 5))})


@SETTINGS
@given(v=st.integers(1, 40), h=small, t=small, dt=st.sampled_from(["float32", "bfloat16", "float16"]),
       out=st.sampled_from(["float32", "bfloat16"]), seed=seeds)
def test_embedding(v, h, t, dt, out, seed):
    rng = np.random.default_rng(seed)
    b = GraphBuilder("embedding")
    g = b.build({"y": b.embedding(b.param("table", (v, h), dt), b.input("ids", ("T",), "int32"), out_dtype=out)})
    ids = rng.integers(0, v, size=t).astype(np.int32)
    ids[0] = v - 1
    ours, ref = check(g, {"ids": ids}, {"table": rand(rng, (v, h), dt)}, out)
    assert (ours["y"] == ref["y"]).all()  # a gather: bit exact


# **** normalization and elementwise ****


@SETTINGS
@given(rows=st.lists(small, min_size=1, max_size=2), d=st.integers(1, 70), xdt=float_dtypes, wdt=float_dtypes,
       eps=st.sampled_from([1e-6, 1e-5, 0.1]), offset=st.sampled_from([0.0, 1.0]), seed=seeds)
def test_rms_norm(rows, d, xdt, wdt, eps, offset, seed):
    rng = np.random.default_rng(seed)
    b = GraphBuilder("rms_norm")
    shape = ("T", *rows[1:], d)
    g = b.build({"y": b.rms_norm(b.input("x", shape, xdt), b.param("w", (d,), wdt), eps=eps, offset=offset)})
    check(g, {"x": rand(rng, (rows[0], *rows[1:], d), xdt, 3.0)}, {"w": rand(rng, (d,), wdt)}, xdt)


@SETTINGS
@given(rows=st.lists(small, min_size=1, max_size=2), d=st.integers(1, 70), xdt=float_dtypes, wdt=float_dtypes,
       eps=st.sampled_from([1e-6, 1e-5]), seed=seeds)
def test_layer_norm(rows, d, xdt, wdt, eps, seed):
    rng = np.random.default_rng(seed)
    b = GraphBuilder("layer_norm")
    shape = ("T", *rows[1:], d)
    g = b.build({"y": b.layer_norm(b.input("x", shape, xdt), b.param("w", (d,), wdt), b.param("b", (d,), wdt),
                                   eps=eps)})
    x = (rand(rng, (rows[0], *rows[1:], d), "float32", 3.0) + 2).astype(np_dtype(xdt))  # a mean to take out
    check(g, {"x": x}, {"w": rand(rng, (d,), wdt), "b": rand(rng, (d,), wdt)}, xdt)


@SETTINGS
@given(rows=st.lists(small, min_size=1, max_size=2), d=st.integers(1, 40), dt=float_dtypes, seed=seeds)
def test_rms_norm_gated(rows, d, dt, seed):
    rng = np.random.default_rng(seed)
    b = GraphBuilder("rms_norm_gated")
    shape = ("T", *rows[1:], d)
    g = b.build({"y": b.rms_norm_gated(b.input("x", shape, dt), b.input("z", shape, dt), b.param("w", (d,), dt),
                                       eps=1e-6)})
    check(g, {"x": rand(rng, (*rows, d), dt, 3.0), "z": rand(rng, (*rows, d), dt, 3.0)}, {"w": rand(rng, (d,), dt)},
          dt)


@SETTINGS
@given(rows=st.lists(small, min_size=1, max_size=2), d=st.integers(1, 40), per_row=st.booleans(), dt=float_dtypes,
       seed=seeds)
def test_sigmoid_gate(rows, d, per_row, dt, seed):
    rng = np.random.default_rng(seed)
    b = GraphBuilder("sigmoid_gate")
    gd = 1 if per_row else d
    g = b.build({"y": b.sigmoid_gate(b.input("x", ("T", *rows[1:], d), dt), b.input("g", ("T", *rows[1:], gd), dt))})
    check(g, {"x": rand(rng, (*rows, d), dt, 3.0), "g": rand(rng, (*rows, gd), dt, 3.0)}, dtype=dt)


def _ew_shape(draw_dims):
    return ("T", *draw_dims[1:]), tuple(draw_dims)


@SETTINGS
@given(dims=st.lists(small, min_size=1, max_size=3), dt=float_dtypes,
       op=st.sampled_from(["add", "mul", "silu", "sigmoid", "gelu", "gelu_tanh"]), seed=seeds)
def test_elementwise(dims, dt, op, seed):
    rng = np.random.default_rng(seed)
    sym, shape = _ew_shape(dims)
    b = GraphBuilder(op)
    n = 2 if op in ("add", "mul") else 1
    xs = [b.input(f"x{i}", sym, dt) for i in range(n)]
    g = b.build({"y": getattr(b, op)(*xs)})
    check(g, {f"x{i}": rand(rng, shape, dt, 3.0) for i in range(n)}, dtype=dt)


@SETTINGS
@given(dims=st.lists(small, min_size=1, max_size=3), dt=float_dtypes, factor=st.floats(-4, 4, width=32),
       seed=seeds)
def test_scale(dims, dt, factor, seed):
    rng = np.random.default_rng(seed)
    sym, shape = _ew_shape(dims)
    b = GraphBuilder("scale")
    g = b.build({"y": b.scale(b.input("x", sym, dt), factor=float(factor))})
    check(g, {"x": rand(rng, shape, dt)}, dtype=dt)


@SETTINGS
@given(dims=st.lists(small, min_size=1, max_size=3), src=st.sampled_from(["float32", "bfloat16", "float16"]),
       dst=st.sampled_from(["float32", "bfloat16", "float16"]), seed=seeds)
def test_cast(dims, src, dst, seed):
    rng = np.random.default_rng(seed)
    sym, shape = _ew_shape(dims)
    b = GraphBuilder("cast")
    g = b.build({"y": b.cast(b.input("x", sym, src), dtype=dst)})
    check(g, {"x": rand(rng, shape, src, 5.0)}, dtype=dst)


@SETTINGS
@given(rows=st.lists(small, min_size=1, max_size=2), f=st.integers(1, 40), dt=float_dtypes, seed=seeds)
def test_swiglu(rows, f, dt, seed):
    rng = np.random.default_rng(seed)
    b = GraphBuilder("swiglu")
    g = b.build({"y": b.swiglu(b.input("x", ("T", *rows[1:], 2 * f), dt))})
    check(g, {"x": rand(rng, (*rows, 2 * f), dt, 3.0)}, dtype=dt)


@SETTINGS
@given(dims=st.lists(small, min_size=1, max_size=3), last=st.integers(1, 40), dt=float_dtypes,
       scale=st.sampled_from([1.0, 30.0]), seed=seeds)
def test_softmax(dims, last, dt, scale, seed):
    rng = np.random.default_rng(seed)
    b = GraphBuilder("softmax")
    g = b.build({"y": b.softmax(b.input("x", ("T", *dims[1:], last), dt))})
    ours, _ = check(g, {"x": rand(rng, (*dims, last), dt, scale)}, dtype=dt)
    np.testing.assert_allclose(ours["y"].astype(np.float32).sum(-1), 1.0, rtol=2e-2 if dt != "float32" else 1e-5)


@SETTINGS
@given(h=small, t=small, extra=st.integers(0, 4), seed=seeds)
def test_causal_mask_then_softmax(h, t, extra, seed):
    """causal_mask with more keys than queries (S = T + extra), as its numpy reference defines."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder("masked_softmax")
    g = b.build({"y": b.softmax(b.causal_mask(b.input("x", (h, t, t + extra), "float32")))})
    ours, _ = check(g, {"x": rand(rng, (h, t, t + extra), "float32", 3.0)})
    allowed = np.arange(t + extra)[None, :] <= np.arange(t)[:, None] + extra
    assert (ours["y"][:, ~allowed] == 0).all()


def test_causal_mask_alone():
    """Masked logits are -inf in the reference; the kernel may use the dtype's lowest finite
    value instead (same result after softmax). Allowed positions pass through unchanged."""
    rng = np.random.default_rng(1)
    b = GraphBuilder("mask")
    g = b.build({"y": b.causal_mask(b.input("x", (2, "T", "T"), "float32"))})
    x = rand(rng, (2, 5, 5))
    ours, ref = run_graph(g, {"x": x})["y"], interpret(g, {"x": x}, {})["y"]
    allowed = np.isfinite(ref)
    assert (ours[allowed] == ref[allowed]).all()
    assert (ours[~allowed] <= np.finfo(np.float32).min).all()
    assert allowed.sum() == 2 * 15


# **** layout ****


@SETTINGS
@given(dims=st.lists(small, min_size=1, max_size=3), data=st.data(), dt=float_dtypes, seed=seeds)
def test_slice(dims, data, dt, seed):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(0, len(dims) - 1), "axis")
    n = dims[axis]
    start = data.draw(st.integers(-n, n - 1), "start")
    stop = data.draw(st.none() | st.integers(-n, n), "stop")
    if len(range(n)[start:stop]) == 0:
        stop = None
    b = GraphBuilder("slice")
    g = b.build({"y": b.slice(b.input("x", tuple(dims), dt), axis=axis, start=start, stop=stop)})
    ours, ref = check(g, {"x": rand(rng, dims, dt)}, dtype=dt)
    assert (ours["y"] == ref["y"]).all()


@SETTINGS
@given(t=small, k=st.integers(1, 5), seed=seeds)
def test_slice_tail_of_symbolic_dim(t, k, seed):
    """A symbolic dim may only be sliced as a tail [-k:] (e.g. the last token's logits)."""
    if k > t:
        k = t
    rng = np.random.default_rng(seed)
    b = GraphBuilder("tail")
    g = b.build({"y": b.slice(b.input("x", ("T", 3), "float32"), axis=0, start=-k)})
    x = rand(rng, (t, 3))
    assert (run_graph(g, {"x": x})["y"] == x[-k:]).all()


@SETTINGS
@given(dims=st.lists(small, min_size=1, max_size=3), data=st.data(), dt=float_dtypes, seed=seeds)
def test_concat(dims, data, dt, seed):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(0, len(dims) - 1), "axis")
    widths = data.draw(st.lists(small, min_size=1, max_size=4), "widths")
    b = GraphBuilder("concat")
    shapes = [tuple(w if a == axis else d for a, d in enumerate(dims)) for w in widths]
    xs = [b.input(f"x{i}", s, dt) for i, s in enumerate(shapes)]
    g = b.build({"y": b.concat(*xs, axis=axis)})
    ours, ref = check(g, {f"x{i}": rand(rng, s, dt) for i, s in enumerate(shapes)}, dtype=dt)
    assert (ours["y"] == ref["y"]).all()


@SETTINGS
@given(dims=st.lists(small, min_size=1, max_size=3), data=st.data(), times=st.integers(1, 4), seed=seeds)
def test_repeat(dims, data, times, seed):
    rng = np.random.default_rng(seed)
    axis = data.draw(st.integers(0, len(dims) - 1), "axis")
    b = GraphBuilder("repeat")
    g = b.build({"y": b.repeat(b.input("x", tuple(dims), "float32"), axis=axis, times=times)})
    ours, ref = check(g, {"x": rand(rng, dims)})
    assert (ours["y"] == ref["y"]).all()


@SETTINGS
@given(dims=st.lists(small, min_size=1, max_size=4), data=st.data(), dt=float_dtypes, seed=seeds)
def test_transpose(dims, data, dt, seed):
    rng = np.random.default_rng(seed)
    perm = tuple(data.draw(st.permutations(range(len(dims))), "perm"))
    b = GraphBuilder("transpose")
    g = b.build({"y": b.transpose(b.input("x", ("T", *dims[1:]), dt), perm=perm)})
    ours, ref = check(g, {"x": rand(rng, dims, dt)}, dtype=dt)
    assert (ours["y"] == ref["y"]).all()


# **** vision (Qwen3-VL) ****


@SETTINGS
@given(n=small, v=st.integers(1, 20), h=st.integers(1, 40), k=st.sampled_from([1, 4]), dt=float_dtypes, seed=seeds)
def test_weighted_rows(n, v, h, k, dt, seed):
    rng = np.random.default_rng(seed)
    b = GraphBuilder("weighted_rows")
    g = b.build({"y": b.weighted_rows(b.param("table", (v, h), dt), b.input("idx", ("N", k), "int32"),
                                      b.input("w", ("N", k), "float32"))})
    check(g, {"idx": rng.integers(0, v, (n, k)).astype(np.int32), "w": rng.random((n, k)).astype(np.float32)},
          {"table": rand(rng, (v, h), dt)}, "float32")


@SETTINGS
@given(t=small, n=small, h=st.integers(1, 40), op=st.sampled_from(["merge_rows", "add_rows"]), dt=float_dtypes,
       seed=seeds)
def test_rows(t, n, h, op, dt, seed):
    """Image features put in place of (merge_rows) or added to (add_rows) the rows they belong to."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder(op)
    g = b.build({"y": getattr(b, op)(b.input("h", ("T", h), dt), b.input("feats", ("N", h), "float32"),
                                     b.input("rows", ("T",), "int32"))})
    rows = np.where(rng.random(t) < 0.5, rng.integers(0, n, t), -1).astype(np.int32)
    check(g, {"h": rand(rng, (t, h), dt), "feats": rand(rng, (n, h), "float32"), "rows": rows}, dtype=dt)


# **** positions and attention ****


@SETTINGS
@given(t=small, offset=st.sampled_from([0, 7, 1000]), sections=st.sampled_from([(2, 2, 2), (4, 2, 2), (24, 20, 20),
                                                                                 (3, 0, 1)]), seed=seeds)
def test_rope_table_multimodal(t, offset, sections, seed):
    """(3, T) positions, each frequency reading its row of (t, h, w) (`ir.ops.mrope_axes`)."""
    b = GraphBuilder("mrope")
    half = sum(sections)
    g = b.build({"y": b.rope_table(b.input("positions", (3, "T"), "int32"), theta=5e6, rotary_dim=2 * half,
                                   sections=sections)})
    pos = (offset + np.random.default_rng(seed).integers(0, 40, (3, t))).astype(np.int32)
    ours, ref = run_graph(g, {"positions": pos})["y"], interpret(g, {"positions": pos}, {})["y"]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-5 if offset < 1000 else 5e-5)


@SETTINGS
@given(t=small, offset=st.sampled_from([0, 7, 1000, 30000]), theta=st.sampled_from([1e4, 1e6, 5e5]),
       half=st.integers(1, 16))
def test_rope_table(t, offset, theta, half):
    b = GraphBuilder("rope")
    g = b.build({"y": b.rope_table(b.input("positions", ("T",), "int32"), theta=theta, rotary_dim=2 * half)})
    pos = (offset + np.arange(t)).astype(np.int32)
    ours, ref = run_graph(g, {"positions": pos})["y"], interpret(g, {"positions": pos}, {})["y"]
    # |cos|, |sin| <= 1; the angle itself is rounded to fp32 identically on both sides
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-5 if offset < 1000 else 5e-5)


@SETTINGS
@given(t=small, h=st.integers(1, 5), half=st.integers(1, 8), extra=st.integers(0, 6), dt=float_dtypes,
       seed=seeds)
def test_rotary(t, h, half, extra, dt, seed):
    """Rotates the first R = 2*half dims of (T, H, D >= R) by a (T, R) table."""
    rng = np.random.default_rng(seed)
    r, d = 2 * half, 2 * half + extra
    b = GraphBuilder("rotary")
    g = b.build({"y": b.rotary(b.input("x", ("T", h, d), dt), b.input("table", ("T", r), "float32"))})
    ang = rng.uniform(-np.pi, np.pi, size=(t, half)).astype(np.float32)
    table = np.concatenate([np.cos(ang), np.sin(ang)], axis=-1)
    ours, ref = check(g, {"x": rand(rng, (t, h, d), dt), "table": table}, dtype=dt)
    if extra:  # the tail beyond the rotary dims passes through untouched
        assert (ours["y"][..., r:] == ref["y"][..., r:]).all()



@SETTINGS
@given(t=small, h=st.integers(1, 4), half=st.integers(1, 6), extra=st.integers(0, 3),
       dt=st.sampled_from(["float32", "bfloat16"]), seed=seeds)
def test_norm_rotary(t, h, half, extra, dt, seed):
    """qk-norm + RoPE in one kernel equals rms_norm then rotary."""
    rng = np.random.default_rng(seed)
    r, d = 2 * half, 2 * half + extra
    b = GraphBuilder("norm_rotary")
    x, tab = b.input("x", ("T", h, d), dt), b.input("table", ("T", r), "float32")
    g = b.build({"y": b.norm_rotary(x, b.param("w", (d,), dt), tab, eps=1e-6)})
    ang = rng.uniform(-np.pi, np.pi, size=(t, half)).astype(np.float32)
    table = np.concatenate([np.cos(ang), np.sin(ang)], axis=-1)
    check(g, {"x": rand(rng, (t, h, d), dt), "table": table}, {"w": rand(rng, (d,), dt)}, dtype=dt)

@SETTINGS
@given(t=small, hkv=st.integers(1, 3), group=st.integers(1, 3), d=st.integers(2, 12), dv=st.integers(1, 8),
       causal=st.booleans(), dt=float_dtypes, scale=st.sampled_from([0.3, 1.0]), seed=seeds)
def test_attention_self(t, hkv, group, d, dv, causal, dt, scale, seed):
    """Self attention as the model uses it: q and k/v share the symbolic length T; GQA groups."""
    rng = np.random.default_rng(seed)
    hq = hkv * group
    b = GraphBuilder("attention")
    q, k, v = (b.input("q", ("T", hq, d), dt), b.input("k", ("T", hkv, d), dt), b.input("v", ("T", hkv, dv), dt))
    g = b.build({"o": b.attention(q, k, v, scale=scale, causal=causal)})
    feeds = {"q": rand(rng, (t, hq, d), dt, 2.0), "k": rand(rng, (t, hkv, d), dt, 2.0),
             "v": rand(rng, (t, hkv, dv), dt)}
    check(g, feeds, dtype=dt, rtol=5e-5)


def test_attention_head_dim_1_symbolic_length():
    rng = np.random.default_rng(0)
    b = GraphBuilder("attention_d1")
    q, k, v = (b.input("q", ("T", 2, 1), "float32"), b.input("k", ("T", 1, 1), "float32"),
               b.input("v", ("T", 1, 1), "float32"))
    g = b.build({"o": b.attention(q, k, v, scale=1.0, causal=True)})
    check(g, {"q": rand(rng, (3, 2, 1)), "k": rand(rng, (3, 1, 1)), "v": rand(rng, (3, 1, 1))})


@SETTINGS
@given(t=small, extra=st.integers(0, 5), hkv=st.integers(1, 2), group=st.integers(1, 3), d=small,
       causal=st.booleans(), seed=seeds)
def test_attention_more_keys_than_queries(t, extra, hkv, group, d, causal, seed):
    """S = T + extra keys (the shape decode with a cache produces): query i sees keys <= i + extra."""
    rng = np.random.default_rng(seed)
    hq, s = hkv * group, t + extra
    b = GraphBuilder("attention_ts")
    q, k, v = (b.input("q", (t, hq, d), "float32"), b.input("k", (s, hkv, d), "float32"),
               b.input("v", (s, hkv, d), "float32"))
    g = b.build({"o": b.attention(q, k, v, scale=float(d) ** -0.5, causal=causal)})
    check(g, {"q": rand(rng, (t, hq, d)), "k": rand(rng, (s, hkv, d)), "v": rand(rng, (s, hkv, d))}, rtol=5e-5)


@pytest.mark.parametrize("t,extra,hkv,group,d,dv,causal", [
    (130, 0, 2, 2, 13, 16, True),   # several key blocks and query blocks, a tail in both
    (70, 75, 1, 3, 8, 12, True),    # keys past the queries (prefill after a cached prefix)
    (200, 0, 1, 1, 16, 5, False),
    (64, 64, 2, 4, 7, 8, True),     # exact block multiples
])
def test_attention_long(t, extra, hkv, group, d, dv, causal):
    """Lengths past one key block (64) and one query block: the tiled prefill kernel's
    online softmax, block skipping and tails."""
    rng = np.random.default_rng(t + extra)
    hq, s = hkv * group, t + extra
    b = GraphBuilder("attention_long")
    q, k, v = (b.input("q", ("T", hq, d), "float32"), b.input("k", (s, hkv, d), "float32"),
               b.input("v", (s, hkv, dv), "float32"))
    g = b.build({"o": b.attention(q, k, v, scale=float(d) ** -0.5, causal=causal)})
    check(g, {"q": rand(rng, (t, hq, d), scale=3.0), "k": rand(rng, (s, hkv, d)), "v": rand(rng, (s, hkv, dv))},
          rtol=5e-5)


@pytest.mark.parametrize("t,kv_len,dt", [(1, 37, "float32"), (1, 130, "bfloat16"), (5, 5, "float32"),
                                         (96, 150, "float32"), (40, 40, "bfloat16")])
def test_cache_attention(t, kv_len, dt):
    """Attention over the first kv_len rows of a (C, Hkv, D) cache, as prefill (T > 1) and
    decode (T = 1) run it; rows past kv_len hold garbage that must not leak in."""
    from inference_pio.ir import Graph, TensorType, input_node, op_node

    rng = np.random.default_rng(kv_len)
    cap, hkv, group, d = 160, 2, 2, 16
    q = input_node("q", TensorType(("T", hkv * group, d), dt))
    kc, vc = (input_node(n, TensorType((cap, hkv, d), dt)) for n in ("kc", "vc"))
    n = input_node("kv_len", TensorType(("kv_len",), "int64"), shape_only=True)
    g = Graph("cache_attention", (q, kc, vc, n), (("o", op_node("cache_attention", [q, kc, vc, n], scale=0.25)),))
    cache = lambda: rand(rng, (cap, hkv, d), dt) * np.where(np.arange(cap) < kv_len, 1, 1e4)[:, None, None]  # noqa: E731
    check(g, {"q": rand(rng, (t, hkv * group, d), dt), "kc": cache(), "vc": cache(), "kv_len": np.zeros(kv_len)},
          dtype=dt, rtol=5e-5)


@pytest.mark.parametrize("kv_len,dt", [(1, "float32"), (37, "float32"), (160, "bfloat16")])
def test_cache_attention_and_append_with_kv_len_as_data(kv_len, dt):
    """The static-decode forms (`passes.static_decode`): kv_len is a (1,) int32 tensor, the
    loops cover the whole cache, and rows past kv_len must still not leak in."""
    from inference_pio.ir import Graph, TensorType, input_node, op_node

    rng = np.random.default_rng(kv_len)
    cap, hkv, group, d = 160, 2, 2, 16
    q, k = input_node("q", TensorType((1, hkv * group, d), dt)), input_node("k", TensorType((1, hkv, d), dt))
    kc, vc = (input_node(n, TensorType((cap, hkv, d), dt)) for n in ("kc", "vc"))
    n = input_node("kv_len", TensorType((1,), "int32"))
    ka = op_node("kv_append", [kc, k, n], kv_len_tensor=True)
    o = op_node("cache_attention", [q, ka, vc, n], scale=0.25, kv_len_tensor=True)
    g = Graph("static_step", (q, k, kc, vc, n), (("o", o),))
    # rows past kv_len hold garbage, NaN included (a fresh cache is uninitialized memory)
    cache = lambda: rand(rng, (cap, hkv, d), dt) * np.where(np.arange(cap) < kv_len, 1, np.nan)[:, None, None]  # noqa: E731
    check(g, {"q": rand(rng, (1, hkv * group, d), dt), "k": rand(rng, (1, hkv, d), dt), "kc": cache(), "vc": cache(),
              "kv_len": np.array([kv_len], np.int32)}, dtype=dt, rtol=5e-5)


@pytest.mark.parametrize("dt", ["float32", "bfloat16"])
def test_head_windows_of_a_fused_projection(dt):
    """norm_rotary and kv_append reading (T, H, D) heads in place from columns of a (T, N) tensor."""
    from inference_pio.ir import Graph, TensorType, input_node, op_node

    rng = np.random.default_rng(3)
    t, d, cap = 5, 6, 9
    x = input_node("x", TensorType((t, 31), dt))
    w = input_node("w", TensorType((d,), dt))
    pos = input_node("pos", TensorType((t,), "int32"))
    kc = input_node("kc", TensorType((cap, 2, d), dt))
    n = input_node("kv_len", TensorType(("kv_len",), "int64"), shape_only=True)
    table = op_node("rope_table", [pos], rotary_dim=4, theta=100.0)
    g = Graph("windows", (x, w, pos, kc, n), (
        ("q", op_node("norm_rotary", [x, w, table], eps=1e-6, start=7, heads=3)),
        ("kc2", op_node("kv_append", [kc, x, n], start=19))))
    check(g, {"x": rand(rng, (t, 31), dt), "w": rand(rng, (d,), dt), "pos": np.arange(3, 3 + t, dtype=np.int32),
              "kc": rand(rng, (cap, 2, d), dt), "kv_len": np.zeros(7)}, dtype=dt, rtol=5e-5)


@pytest.mark.parametrize("dt,kv_len_tensor", [("float32", False), ("bfloat16", True)])
def test_kv_append_with_key_norm_and_rotary(dt, kv_len_tensor):
    """kv_append(cache, x, kv_len, w, table, eps=...) writes norm_rotary's rows (`passes.fuse_norm_append`)."""
    from inference_pio.ir import Graph, TensorType, input_node, op_node

    rng = np.random.default_rng(4)
    t, d, cap, kv_len = (1 if kv_len_tensor else 5), 6, 9, 7
    x = input_node("x", TensorType((t, 31), "float32"))
    w = input_node("w", TensorType((d,), dt))
    pos = input_node("pos", TensorType((t,), "int32"))
    kc = input_node("kc", TensorType((cap, 2, d), dt))
    n = input_node("kv_len", TensorType((1,), "int32") if kv_len_tensor else TensorType(("kv_len",), "int64"),
                   **({} if kv_len_tensor else {"shape_only": True}))
    table = op_node("rope_table", [pos], rotary_dim=4, theta=100.0)
    kc2 = op_node("kv_append", [kc, x, n, w, table], eps=1e-6, start=19, kv_len_tensor=kv_len_tensor)
    g = Graph("key_append", (x, w, pos, kc, n), (("kc2", kc2),))
    check(g, {"x": rand(rng, (t, 31)), "w": rand(rng, (d,), dt), "pos": np.arange(3, 3 + t, dtype=np.int32),
              "kc": rand(rng, (cap, 2, d), dt),
              "kv_len": np.array([kv_len], np.int32) if kv_len_tensor else np.zeros(kv_len)}, dtype=dt, rtol=5e-5)


@pytest.mark.parametrize("dt,kv_len_tensor", [("float32", False), ("bfloat16", True)])
def test_kv_append_pair_writes_keys_and_values(dt, kv_len_tensor):
    """kv_append_pair(kc, x, kv_len, vc, x, w, table): the keys normed and rotated, the values
    copied, from two head windows of one row (`passes.fuse_append_pair`); both caches out."""
    from inference_pio.ir import Graph, TensorType, input_node, op_node

    rng = np.random.default_rng(5)
    t, d, cap, kv_len = (1 if kv_len_tensor else 5), 6, 9, 7
    x = input_node("x", TensorType((t, 43), "float32"))
    w = input_node("w", TensorType((d,), dt))
    pos = input_node("pos", TensorType((t,), "int32"))
    kc, vc = (input_node(name, TensorType((cap, 2, d), dt)) for name in ("kc", "vc"))
    n = input_node("kv_len", TensorType((1,), "int32") if kv_len_tensor else TensorType(("kv_len",), "int64"),
                   **({} if kv_len_tensor else {"shape_only": True}))
    table = op_node("rope_table", [pos], rotary_dim=4, theta=100.0)
    kc2 = op_node("kv_append_pair", [kc, x, n, vc, x, w, table], eps=1e-6, start=19, v_start=31,
                  kv_len_tensor=kv_len_tensor)
    # the values' cache: read after the pair (an op that depends on it), as the attention does
    vc2 = op_node("add", [vc, op_node("scale", [kc2], factor=0.0)])
    g = Graph("pair", (x, w, pos, kc, vc, n), (("kc2", kc2), ("vc2", vc2)))
    check(g, {"x": rand(rng, (t, 43)), "w": rand(rng, (d,), dt), "pos": np.arange(3, 3 + t, dtype=np.int32),
              "kc": rand(rng, (cap, 2, d), dt), "vc": rand(rng, (cap, 2, d), dt),
              "kv_len": np.array([kv_len], np.int32) if kv_len_tensor else np.zeros(kv_len)}, dtype=dt, rtol=5e-5)


@pytest.mark.parametrize("dt,kv_len_tensor,sync", [("float32", False, False), ("bfloat16", True, False),
                                                    ("float32", True, True)])
def test_append_attention_reference(dt, kv_len_tensor, sync):
    """append_attention's own TIR (`kernels.append_attention`, built by engine.lower; the CUDA
    rule replaces its body) against the op: the step's key and value written at row kv_len - 1
    and attended to with the rows before. ``sync``: with `passes.static_decode`'s counters
    (unused here)."""
    from inference_pio.ir import Graph, TensorType, input_node, op_node

    rng = np.random.default_rng(9)
    cap, hkv, group, d, kv_len = 20, 2, 2, 8, 13
    x = input_node("x", TensorType((1, 70), "float32"))
    w, kw = (input_node(name, TensorType((d,), dt)) for name in ("w", "kw"))
    pos = input_node("pos", TensorType((1,), "int32"))
    kc, vc = (input_node(name, TensorType((cap, hkv, d), dt)) for name in ("kc", "vc"))
    n = input_node("kv_len", TensorType((1,), "int32") if kv_len_tensor else TensorType(("kv_len",), "int64"),
                   **({} if kv_len_tensor else {"shape_only": True}))
    table = op_node("rope_table", [pos], rotary_dim=6, theta=100.0)
    counters = [input_node("sync", TensorType((hkv + 1,), "int32"))] if sync else []
    o = op_node("append_attention", [x, kc, vc, n, w, table, kw, *counters], scale=0.3, eps=1e-6, start=3,
                heads=hkv * group, k_start=36, v_start=53, kv_len_tensor=kv_len_tensor)
    g = Graph("append_attention", (x, w, kw, pos, kc, vc, n, *counters), (("o", o),))
    check(g, {"x": rand(rng, (1, 70)), "w": rand(rng, (d,), dt), "kw": rand(rng, (d,), dt),
              "pos": np.array([kv_len - 1], np.int32), "kc": rand(rng, (cap, hkv, d), dt),
              "vc": rand(rng, (cap, hkv, d), dt), **({"sync": np.zeros(hkv + 1, np.int32)} if sync else {}),
              "kv_len": np.array([kv_len], np.int32) if kv_len_tensor else np.zeros(kv_len)}, dtype=dt, rtol=5e-5)
    with pytest.raises(TypeError_, match=r"sync must be int32 \(S,\) with S >= 2"):
        op_node("append_attention", [x, kc, vc, n, w, table, kw, input_node("s", TensorType((1,), "int32"))],
                scale=0.3, eps=1e-6, start=3, heads=hkv * group, k_start=36, v_start=53, kv_len_tensor=kv_len_tensor)


def test_cache_attention_with_query_norm_and_rotary():
    """cache_attention(x, kc, vc, kv_len, w, table, eps=...) attends with q = norm_rotary of x's
    head window (`passes.fuse_norm_attention`)."""
    from inference_pio.ir import Graph, TensorType, input_node, op_node

    rng = np.random.default_rng(8)
    cap, hkv, group, d, kv_len = 20, 2, 2, 8, 13
    x = input_node("x", TensorType((1, 40), "float32"))
    w = input_node("w", TensorType((d,), "float32"))
    pos = input_node("pos", TensorType((1,), "int32"))
    kc, vc = (input_node(n, TensorType((cap, hkv, d), "float32")) for n in ("kc", "vc"))
    n = input_node("kv_len", TensorType(("kv_len",), "int64"), shape_only=True)
    table = op_node("rope_table", [pos], rotary_dim=6, theta=100.0)
    o = op_node("cache_attention", [x, kc, vc, n, w, table], scale=0.3, eps=1e-6, start=3, heads=hkv * group)
    g = Graph("q_norm_attention", (x, w, pos, kc, vc, n), (("o", o),))
    check(g, {"x": rand(rng, (1, 40)), "w": rand(rng, (d,)), "pos": np.array([kv_len - 1], np.int32),
              "kc": rand(rng, (cap, hkv, d)), "vc": rand(rng, (cap, hkv, d)), "kv_len": np.zeros(kv_len)}, rtol=5e-5)


def _sample_graph(v: int, dt: str = "float32"):
    b = GraphBuilder("sample")
    z, it, key = b.input("z", (1, v), dt), b.input("it", (1,), "float32"), b.input("key", (1,), "int32")
    return b.build({"tok": b.sample_token(z, it, key)})


def test_sample_token_greedy_takes_the_first_maximum():
    g = _sample_graph(9)
    z = np.array([[0, 3, 1, 3, -2, 3, 0, 0, 1]], np.float32)
    check(g, {"z": z, "it": np.zeros(1, np.float32), "key": np.array([5], np.int32)})
    assert run_graph(g, {"z": z, "it": np.zeros(1, np.float32), "key": np.array([5], np.int32)})["tok"][0] == 1


def test_sample_token_first_maximum_across_slices():
    """4100 logits: four slices of 1025 (`kernels.SAMPLE_PARTS`); the max in slices 1 and 2 and
    at the end of the last: the lowest index wins."""
    g = _sample_graph(4100)
    z = np.zeros((1, 4100), np.float32)
    z[0, [3000, 1500, 4099]] = 5.0
    feeds = {"z": z, "it": np.zeros(1, np.float32), "key": np.array([5], np.int32)}
    check(g, feeds)
    assert run_graph(g, feeds)["tok"][0] == 1500


@pytest.mark.parametrize("v,dt", [(37, "float32"), (1000, "bfloat16"), (5000, "float32")])
def test_sample_token_matches_the_reference_draw(v, dt):
    """The kernel's hash and Gumbel noise are the reference's: the same token for every key."""
    rng = np.random.default_rng(v)
    g = _sample_graph(v, dt)
    z = rand(rng, (1, v), dt, 2.0)
    for key in rng.integers(-2**31, 2**31 - 1, 40):
        check(g, {"z": z, "it": np.array([1.3], np.float32), "key": np.array([key], np.int32)})


def test_sample_token_reference_is_a_softmax_draw():
    from inference_pio.ir.ops import sample_token

    z = np.array([[0.0, 1.0, 2.0, -1.0]], np.float32)
    draws = np.bincount([sample_token(z, np.array([1 / 0.7], np.float32), np.array([k], np.int32))[0]
                         for k in range(6000)], minlength=4) / 6000
    p = np.exp(z[0] / 0.7)
    np.testing.assert_allclose(draws, p / p.sum(), atol=0.02)


def test_symbolic_kernel_serves_several_lengths():
    """One compiled graph with a symbolic T runs at T = 1, 3, 17."""
    rng = np.random.default_rng(2)
    b = GraphBuilder("norm_linear")
    x = b.input("x", ("T", 24), "float32")
    y = b.linear(b.rms_norm(x, b.param("g", (24,), "float32"), eps=1e-6), b.param("w", (5, 24), "bfloat16"))
    g = b.build({"y": y})
    w = {"g": rand(rng, (24,)), "w": rand(rng, (5, 24), "bfloat16")}
    for t in (1, 3, 17):
        check(g, {"x": rand(rng, (t, 24))}, w)
