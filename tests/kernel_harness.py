"""Compile and run an arbitrary IR graph through the real engine path, for kernel tests.

This mirrors what `engine.compile` does for the model's forward graph (lower every op to its
TE kernel, apply the target's schedule rules, ``tvm.compile``), without running the pass
pipeline, so a one-op graph reaches exactly the kernel under test.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from inference_pio.ir import Graph, param_value

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
    args += [tvm.runtime.tensor(np.ascontiguousarray(param_value(p, weights or {})), dev)
             for p in graph.params()]
    out = vm[graph.name](*args)
    outs = [out] if len(graph.outputs) == 1 else list(out)
    return {k: o.numpy() for (k, _), o in zip(graph.outputs, outs)}


def _np(dtype: str):
    from inference_pio.ir import np_dtype

    return np_dtype(dtype)
