"""Schedule rules: lookup order, and that lowering + scheduling tags every kernel as scheduled."""
from __future__ import annotations

import numpy as np
from tvm import tirx

from inference_pio.ir import GraphBuilder
from inference_pio.schedules import registry, rules_for, schedule_module
from inference_pio.schedules.cpu import linear_rows, parallel_outer, rms_norm_rows
from inference_pio.targets import resolve
from kernel_harness import run_graph


def small_graph():
    b = GraphBuilder("g")
    x = b.input("x", ("T", 8), "float32")
    h = b.rms_norm(x, b.param("n", (8,), "float32"), eps=1e-6)
    return b.build({"y": b.softmax(b.linear(h, b.param("w", (5, 8), "float32")))})


def lowered():
    from inference_pio.engine.lower import lower

    g = small_graph()
    return lower({g.name: g})


def test_rules_for_lists_op_rules_then_fallbacks():
    assert rules_for("llvm", "linear")[0] is linear_rows
    assert rules_for("llvm", "rms_norm")[0] is rms_norm_rows
    assert rules_for("llvm", "softmax")[-1] is parallel_outer
    assert rules_for("llvm", "linear")[-1] is parallel_outer
    assert rules_for("nonexistent-target", "linear") == []


def test_override_swaps_an_op_kinds_rules_for_a_while():
    from inference_pio.schedules.cuda import dlight_baseline
    from inference_pio.schedules.cuda.gemv import cuda_gemv as gemv
    from inference_pio.schedules.cuda.matmul import tensor_core_linear

    assert rules_for("cuda", "linear")[:2] == [tensor_core_linear, gemv]
    with registry.override("cuda", "linear", []):
        assert rules_for("cuda", "linear") == [dlight_baseline]
    with registry.override("cuda", "no_such_op", [gemv]):
        assert rules_for("cuda", "no_such_op")[0] is gemv
    assert rules_for("cuda", "linear")[:2] == [tensor_core_linear, gemv]
    assert rules_for("cuda", "no_such_op") == [dlight_baseline]


def test_every_kernel_gets_scheduled_and_tagged():
    mod = schedule_module(lowered(), resolve("llvm"))
    prims = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    assert {"linear", "rms_norm", "softmax"} <= set(prims)
    for name, f in prims.items():
        assert f.attrs["tirx.is_scheduled"], name
        assert str(f.attrs[registry.OP_KIND_ATTR]) == name


def test_a_rule_registered_first_wins_and_none_passes_on():
    calls = []

    def declines(func, target):
        calls.append("declines")
        return None

    def mine(func, target):
        calls.append("mine")
        return parallel_outer(func, target)

    registry.register("llvm", "softmax", mine, first=True)
    registry.register("llvm", "softmax", declines, first=True)
    try:
        assert rules_for("llvm", "softmax")[:2] == [declines, mine]
        schedule_module(lowered(), resolve("llvm"))
        assert calls == ["declines", "mine"]
    finally:
        rules = registry._RULES[("llvm", "softmax")]
        rules.remove(mine)
        rules.remove(declines)
    assert mine not in rules_for("llvm", "softmax")


def test_already_scheduled_functions_are_left_alone():
    mod = schedule_module(lowered(), resolve("llvm"))
    again = schedule_module(mod, resolve("llvm"))
    for gv, f in again.functions.items():
        if isinstance(f, tirx.PrimFunc):
            assert f.same_as(mod[gv])


def test_scheduled_graph_computes_the_reference():
    from inference_pio.ir import interpret

    g = small_graph()
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((6, 8)).astype(np.float32)}
    w = {"n": rng.standard_normal(8).astype(np.float32), "w": rng.standard_normal((5, 8)).astype(np.float32)}
    np.testing.assert_allclose(run_graph(g, feeds, w)["y"], interpret(g, feeds, w)["y"], rtol=1e-5, atol=1e-6)
