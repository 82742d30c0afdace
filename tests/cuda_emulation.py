"""Run a CUDA-scheduled PrimFunc on the CPU, to check a GPU schedule's numerics without a GPU.

A race-free scheduled TIR kernel means the same thing when its thread-bound loops run one
after another: every phase between two barriers is a sibling loop over the threads, so
running each such loop to completion before the next is what the barriers guarantee. So
`serialize` turns every ``T.thread_binding`` into ``T.serial`` and GPU memory scopes into
"global", and the result compiles for llvm. Cross-thread reductions become plain
reductions; memory fences and explicit barriers vanish, and an atomic add is a load and a
store. What this cannot check: tensor-core intrinsics (the tensor-core GEMM is
emulated with its 16x16 tiles left as loops, `schedules.cuda.matmul.untensorized`),
warp-level primitives written by hand, and timing. Nor does a cast to bf16 round on llvm when
its result is computed with in fp32 (TVM's bf16 legalization drops the round trip): kernels
that depend on that rounding must round explicitly when emulated (`kernels.linear_split`'s
``bit_round``, which `untensorized` turns on). TVM 0.27's Python API has no statement mutator, so
this goes through the printed TVMScript.
"""
from __future__ import annotations

import re

import numpy as np

_BIND = re.compile(r'T\.thread_binding\((.*), thread="[^"]+"(?:, annotations=(\{.*\}))?\):$', re.M)
_SCOPE = re.compile(r'scope="(shared|shared\.dyn|warp|local|wmma\.\w+)"')
# GPU-only stage/pipeline hints that need shared memory (or do nothing useful serially)
# a fence or barrier means nothing serially; an atomic add returns the old value and adds
_FENCES = re.compile(r'T\.(cuda\.thread_fence\(\)|tvm_storage_sync\("shared".*\))$', re.M)
_ATOMIC_ADD = re.compile(r'^(\s*)(\S+) = T\.cuda\.atomic_add\(T\.address_of\((.+)\), (.+)\)$', re.M)
_GPU_HINTS = re.compile(r'"(tirx\.manifest_shared_memory_local_stage|double_buffer_scope)": \d+(, )?'
                        r'|, annotations=\{(?:"software_pipeline_async_stages": \[[\d, ]*\], )?'
                        r'"software_pipeline_order": \[[\d, ]*\], "software_pipeline_stage": \[[\d, ]*\]\}')


def serialize(func):
    """``func`` (a scheduled CUDA PrimFunc) with every thread loop serial and every buffer global."""
    import tvm

    src = func.script()
    src = _BIND.sub(lambda m: f"T.serial({m.group(1)}" + (f", annotations={m.group(2)}):" if m.group(2) else "):"), src)
    src = _SCOPE.sub('scope="global"', src)
    src = _GPU_HINTS.sub("", src)
    src = _FENCES.sub("T.evaluate(0)", src)
    src = _ATOMIC_ADD.sub(lambda m: f"{m[1]}{m[2]} = {m[3]}\n{m[1]}{m[3]} = {m[3]} + {m[4]}", src)
    out = tvm.script.from_source(src)
    return out["main"] if isinstance(out, tvm.IRModule) else out


def run(func, *args):
    """Compile ``serialize(func)`` for llvm and call it with ``args`` in parameter order: numpy
    arrays (inputs, and outputs written in place) and Python scalars; returns the arrays read back."""
    import tvm

    ex = tvm.compile(tvm.IRModule({"main": serialize(func).with_attr("global_symbol", "main")}), target="llvm")
    conv = [tvm.runtime.tensor(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a for a in args]
    ex["main"](*conv)
    return [c.numpy() for c in conv if not isinstance(c, (int, float))]


def compile_emulated(md, cuda_target: dict, **kwargs):
    """``engine.compile(md, ...)`` with every kernel scheduled for ``cuda_target`` (CUDA layout,
    cache and decode passes, CUDA schedule rules) and then serialized for this CPU: the artifact runs the CUDA
    schedules' loop nests here, through the normal runtime."""
    from tvm import tirx

    from inference_pio import passes
    from inference_pio.engine import compiler
    from inference_pio.schedules import schedule_module
    from inference_pio.schedules.cuda.matmul import untensorized
    from inference_pio.targets import resolve

    cuda = resolve(cuda_target)

    def schedule_serialized(mod, _target):
        with untensorized():  # tensor-core tiles as plain loops
            mod = schedule_module(mod, cuda)
        for gv, func in list(mod.functions.items()):
            if isinstance(func, tirx.PrimFunc):
                mod.update_func(gv, serialize(func).with_attrs(dict(func.attrs)))
        return mod

    saved = (compiler.schedule_module, passes.cpu_passes, passes.cache_passes, passes.decode_passes,
             passes.gemm_passes, compiler.device_top_k)
    compiler.schedule_module, passes.cpu_passes = schedule_serialized, lambda block, quantize=None, pairs=False: passes.cuda_passes()
    passes.cache_passes = lambda kind, f=saved[2]: f("cuda")
    passes.decode_passes = lambda kind, f=saved[3]: f("cuda")
    passes.gemm_passes = lambda kind, f=saved[4]: f("cuda")
    compiler.device_top_k = lambda tdesc: True
    try:
        return compiler.compile(md, target="llvm", **{"matmul_precision": "high", **kwargs})
    finally:
        (compiler.schedule_module, passes.cpu_passes, passes.cache_passes, passes.decode_passes, passes.gemm_passes,
         compiler.device_top_k) = saved
