"""The MoE kernels on CPU against the ops' numpy references: the router's top-k gates (TE,
ties included) and the routed experts kernel (`schedules.cpu.moe`) over packed weights, for
decode (T = 1, static) and prompts of several lengths, fp32, bf16 and int8 weights; on a CPU
with AMX the tile kernel takes the prompts with 32-wide panels."""
from __future__ import annotations

import numpy as np
import pytest
from tvm import tirx

from inference_pio.engine.lower import lower
from inference_pio.ir import GraphBuilder
from kernel_harness import check, rand


def gates_graph(e: int, k: int, normalize: bool, t="T"):
    b = GraphBuilder("g")
    z = b.input("z", (t, e), "float32")
    return b.build({"gates": b.moe_gates(z, top_k=k, normalize=normalize)})


@pytest.mark.parametrize("e,k,normalize", [(6, 2, False), (9, 3, True), (128, 8, True), (5, 5, False)])
def test_moe_gates(rng, e, k, normalize):
    g = gates_graph(e, k, normalize)
    for t in (1, 4, 33):
        ours, _ = check(g, {"z": rand(rng, (t, e))})
        assert ((ours["gates"] > 0).sum(axis=1) == k).all()


def test_moe_gates_ties_go_to_the_lower_expert(rng):
    z = rng.integers(-2, 3, size=(17, 8)).astype(np.float32)  # many equal logits
    ours, ref = check(gates_graph(8, 3, True), {"z": z})
    assert ((ours["gates"] > 0) == (ref["gates"] > 0)).all()


def experts_graph(t, h, f, e, k, dtype, block=16, precision=None, pairs=False):
    """x, router logits -> moe_experts over packed weights (as pack_weights leaves them; int8:
    with their scales, as quantize_weights does; ``pairs``: panels' rows paired)."""
    b = GraphBuilder("moe")
    x, z = b.input("x", (t, h), "float32"), b.input("z", (t, e), "float32")
    stacks = []
    for name, nb, k_len, rows in (("w_in", -(-2 * f // block), h, 2 * f), ("w_out", -(-h // block), f, h)):
        quant = {"quant": "int8"} if dtype == "int8" else {}
        paired = {"pairs": True} if pairs else {}
        stacks.append(b.param(name, (e, nb, k_len, block), dtype, pack=block, rows=rows, **quant, **paired))
        if quant:
            stacks.append(b.param(f"{name}.scale", (e, rows), "float32", scale_of=name))
    gates = b.moe_gates(z, top_k=k, normalize=True)
    return b.build({"y": b.moe_experts(x, gates, *stacks, pack=block, inter=f, precision=precision,
                                       **({"pairs": True} if pairs else {}))})


@pytest.mark.parametrize("h,f,e,k,dtype,block", [
    (40, 23, 6, 2, "float32", 16), (64, 32, 8, 2, "bfloat16", 16), (33, 17, 5, 5, "float32", 16),
    (48, 40, 16, 3, "bfloat16", 16), (40, 23, 6, 2, "int8", 16), (64, 32, 8, 3, "int8", 16),
    # 32-wide panels, H and F multiples of 32: on a CPU with AMX, the tile kernel
    (64, 32, 4, 2, "bfloat16", 32), (96, 64, 6, 3, "int8", 32), (64, 32, 3, 1, "float32", 32)])
def test_routed_experts(rng, h, f, e, k, dtype, block):
    src = "float32" if dtype == "int8" else dtype  # int8 stacks quantize fp32 sources (param_values)
    weights = {"w_in": rand(rng, (e, 2 * f, h), src, h ** -0.5), "w_out": rand(rng, (e, h, f), src, f ** -0.5)}
    g = experts_graph("T", h, f, e, k, dtype, block)
    for t in (1, 2, 7, 30, 75):  # 30 and 75 tokens over few experts: several row tiles per expert, one short
        check(g, {"x": rand(rng, (t, h)), "z": rand(rng, (t, e))}, weights)
    check(experts_graph(1, h, f, e, k, dtype, block), {"x": rand(rng, (1, h)), "z": rand(rng, (1, e))}, weights)


@pytest.mark.parametrize("h,f,e,k,block", [(64, 32, 8, 2, 16), (48, 22, 5, 3, 16), (64, 32, 4, 2, 32),
                                           (96, 64, 6, 3, 32)])
def test_paired_panels(rng, h, f, e, k, block):
    """bf16 stacks whose panels' rows are stored in pairs (pack_weights on AMX CPUs): the decode
    kernel reads two rows per word; on an AMX CPU, prompts' tile products read them as stored."""
    weights = {"w_in": rand(rng, (e, 2 * f, h), "bfloat16", h ** -0.5),
               "w_out": rand(rng, (e, h, f), "bfloat16", f ** -0.5)}
    g = experts_graph("T", h, f, e, k, "bfloat16", block, pairs=True)
    for t in (2, 7, 30, 75):
        check(g, {"x": rand(rng, (t, h)), "z": rand(rng, (t, e))}, weights)
    check(experts_graph(1, h, f, e, k, "bfloat16", block, pairs=True), {"x": rand(rng, (1, h)),
                                                                        "z": rand(rng, (1, e))}, weights)


def test_pair_panels_round_trip(rng):
    from inference_pio.ir.ops import pack_rows, pair_panels, unpack_rows, unpair_panels

    w = rng.standard_normal((2, 10, 6)).astype(np.float32)
    p = pack_rows(w, 4, pairs=True)
    np.testing.assert_array_equal(unpack_rows(p, 10, pairs=True), w)
    np.testing.assert_array_equal(unpair_panels(p), pack_rows(w, 4))
    words = pair_panels(pack_rows(w, 4)).reshape(2, 3, 3, 2, 4)[0, 0]  # panel 0: (K/2, [2 x B] flat)
    np.testing.assert_array_equal(words.reshape(3, 4, 2)[:, :, 0], w[0, :4, 0::2].T)  # even rows, low halves
    np.testing.assert_array_equal(words.reshape(3, 4, 2)[:, :, 1], w[0, :4, 1::2].T)


def gated_graph(h, f, e, blk=16):
    """moe_experts with the gates as an input."""
    b = GraphBuilder("moe")
    x, gates = b.input("x", ("T", h), "float32"), b.input("g", ("T", e), "float32")
    w_in = b.param("w_in", (e, -(-2 * f // blk), h, blk), "float32", pack=blk, rows=2 * f)
    w_out = b.param("w_out", (e, -(-h // blk), f, blk), "float32", pack=blk, rows=h)
    return b.build({"y": b.moe_experts(x, gates, w_in, w_out, pack=blk, inter=f)})


def _experts_kernel(graph):
    mod = lower({"moe": graph})
    return next(f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)
                and str(f.attrs["op_kind"]) == "moe_experts")


@pytest.mark.parametrize("graph", [lambda: gated_graph(40, 23, 6),
                                   lambda: experts_graph("T", 40, 23, 6, 2, "int8")])
def test_routed_kernel_replaces_the_dense_one(graph):
    from inference_pio.schedules import schedule_func
    from inference_pio.targets import resolve

    func = _experts_kernel(graph())
    assert "expert_in" in func.script()  # the dense TE statement of the op
    routed = schedule_func(func, resolve("llvm")).script()
    assert "expert_in" not in routed and "T.parallel" in routed


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_amx_kernel_chosen_for_prompts_on_amx_cpus(dtype):
    """With AMX in the target's flags: tile products for T > 1 over 32-wide panels; decode
    (T = 1, memory-bound) stays on the FMA kernel, as do panels of other widths."""
    import dataclasses

    from inference_pio.schedules import schedule_func
    from inference_pio.targets import AMX_FLAGS, resolve

    amx = dataclasses.replace(resolve("llvm"), cpu_flags=tuple(resolve("llvm").cpu_flags) + AMX_FLAGS)
    script = lambda g: schedule_func(_experts_kernel(g), amx).script()  # noqa: E731
    assert "tdpbf16ps" in script(experts_graph("T", 64, 32, 4, 2, dtype, 32))
    assert "tdpbf16ps" not in script(experts_graph(1, 64, 32, 4, 2, dtype, 32))
    assert "tdpbf16ps" not in script(experts_graph("T", 64, 32, 4, 2, dtype, 16))


def test_a_token_with_no_expert_gets_zero(rng):
    """Gates are data: a row of zeros (no expert) adds nothing."""
    h, f, e = 24, 9, 4
    weights = {"w_in": rand(rng, (e, 2 * f, h)), "w_out": rand(rng, (e, h, f))}
    gv = np.zeros((5, e), np.float32)
    gv[1, 2], gv[3, [0, 3]] = 0.7, (0.25, 0.75)
    ours, _ = check(gated_graph(h, f, e), {"x": rand(rng, (5, h)), "g": gv}, weights)
    assert (ours["y"][[0, 2, 4]] == 0).all() and (ours["y"][[1, 3]] != 0).any()


@pytest.mark.parametrize("e,k,groups,kept,normalize,bias", [(8, 2, 1, 1, True, True), (8, 2, 2, 1, True, True),
                                                            (12, 3, 4, 2, False, True), (9, 4, 3, 3, True, False)])
def test_moe_gates_sigmoid_grouped(rng, e, k, groups, kept, normalize, bias):
    """GLM-4.5's router: sigmoid weights, chosen by sigmoid + bias within the best groups."""
    b = GraphBuilder("g")
    z = b.input("z", ("T", e), "float32")
    extra = [b.param("bias", (e,), "float32")] if bias else []
    g = b.build({"gates": b.moe_gates(z, *extra, top_k=k, normalize=normalize, scoring="sigmoid", n_group=groups,
                                      topk_group=kept, scale=2.5)})
    weights = {"bias": rand(rng, (e,), scale=0.3)} if bias else {}
    for t in (1, 5, 19):
        ours, _ = check(g, {"z": rand(rng, (t, e))}, weights)
        assert ((ours["gates"] > 0).sum(axis=1) == k).all()
        if groups > 1:  # the chosen experts lie in at most topk_group groups
            assert ((ours["gates"].reshape(t, groups, -1) > 0).any(-1).sum(-1) <= kept).all()


def test_medium_precision_rounds_x_to_bf16(rng):
    """precision="medium": on AMX, one tile product over bf16-rounded activations (~1e-3); other
    CPUs compute in fp32 either way."""
    h, f, e = 64, 32, 4
    weights = {"w_in": rand(rng, (e, 2 * f, h), "bfloat16", h ** -0.5),
               "w_out": rand(rng, (e, h, f), "bfloat16", f ** -0.5)}
    g = experts_graph("T", h, f, e, 2, "bfloat16", 32, precision="medium")
    check(g, {"x": rand(rng, (40, h)), "z": rand(rng, (40, e))}, weights, rtol=1e-2)
