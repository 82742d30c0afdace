"""Compile and run an arbitrary IR graph through the real engine path, for kernel tests.

This mirrors what `engine.compile` does for the model's forward graph (lower every op to its
TE kernel, apply the target's schedule rules, ``tvm.compile``), without running the pass
pipeline, so a one-op graph reaches exactly the kernel under test.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from inference_pio.ir import Graph, interpret, np_dtype, param_values

_CACHE: dict[str, object] = {}


def _target():
    from inference_pio.targets import resolve

    return resolve("llvm")


def compile_graph(graph: Graph):
    """A relax VirtualMachine running ``graph`` (cached by the graph's printed form)."""
    key = str(graph)
    if key not in _CACHE:
        import tvm
        from tvm import relax

        from inference_pio.engine.lower import lower
        from inference_pio.schedules import schedule_module

        tdesc = _target()
        mod = schedule_module(lower({graph.name: graph}), tdesc)
        with tdesc.to_tvm() as tgt:
            ex = tvm.compile(mod, target=tgt)
        _CACHE[key] = relax.VirtualMachine(ex, tvm.cpu())
    return _CACHE[key]


def lowered_kernel(graph: Graph, attr: str):
    """The PrimFunc of ``graph``'s lowering that carries schedule hint ``attr`` (e.g. "scale":
    the attention kernel), unscheduled: what a schedule rule receives."""
    from tvm import tirx

    from inference_pio.engine.lower import lower

    mod = lower({graph.name: graph})
    return next(f for f in mod.functions.values()
                if isinstance(f, tirx.PrimFunc) and f.attrs is not None and attr in f.attrs)


def run_graph(graph: Graph, feeds: Mapping[str, np.ndarray],
              weights: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Run the compiled ``graph``; returns its outputs by name, like `ir.interpret`."""
    import tvm

    vm = compile_graph(graph)
    dev = tvm.cpu()
    # a shape-only input (kv_len) is fed as any array of its shape and passed as that shape
    args = [tvm.runtime.ShapeTuple(list(np.shape(feeds[n.name]))) if n.attr("shape_only") else
            tvm.runtime.tensor(np.ascontiguousarray(np.asarray(feeds[n.name]).astype(_np(n.dtype))), dev)
            for n in graph.inputs]
    values = param_values(graph, weights or {})
    args += [tvm.runtime.tensor(np.ascontiguousarray(values[p.name]), dev) for p in graph.params()]
    out = vm[graph.name](*args)
    outs = [out] if len(graph.outputs) == 1 else list(out)
    return {k: o.numpy() for (k, _), o in zip(graph.outputs, outs)}


def _np(dtype: str):
    return np_dtype(dtype)


def rand(rng: np.random.Generator, shape, dtype: str = "float32", scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32).astype(np_dtype(dtype))


def assert_close(ours: np.ndarray, ref: np.ndarray, dtype: str = "float32", rtol: float = 2e-5) -> None:
    """fp32: within rtol of the largest reference value. bf16/f16 outputs: within one rounding
    step of each value (both sides round the same fp32 result, which may differ in the last bits)."""
    assert ours.dtype == ref.dtype, (ours.dtype, ref.dtype)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    o, r = ours.astype(np.float64), ref.astype(np.float64)
    scale = max(float(np.abs(r).max(initial=0.0)), 1e-6)
    if dtype == "float32":
        np.testing.assert_allclose(o, r, rtol=0, atol=rtol * scale)
    else:
        ulp = 2.0**-7 if dtype == "bfloat16" else 2.0**-10
        np.testing.assert_array_less(np.abs(o - r), ulp * np.abs(r) + 1e-5 * scale + 1e-30)


def check(graph, feeds, weights=None, dtype="float32", rtol=2e-5):
    ours = run_graph(graph, feeds, weights)
    ref = interpret(graph, feeds, weights or {})
    for k in ref:
        assert_close(ours[k], ref[k], dtype, rtol)
    return ours, ref
