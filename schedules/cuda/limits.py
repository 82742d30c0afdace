"""Shared memory per CUDA kernel, read from the lowered TIR, and the launch limit it must fit.

A block gets 48 KiB of shared memory unless its kernel opts in to more (up to 227 KiB on
sm_80 and later). TVM's CUDA runtime opts in (cuFuncSetAttribute with
MAX_DYNAMIC_SHARED_SIZE_BYTES) only when a kernel's *dynamic* shared memory alone is 48 KiB
or more, so a kernel whose static plus dynamic shared memory passes 48 KiB while its dynamic
part stays under it fails every launch with CUDA_ERROR_INVALID_VALUE. nvcc and TVM both
accept such a kernel; only a GPU notices (an H200, 2026-12-04: our 64 x 64 tensor-core GEMM,
16 KiB static + 36 KiB dynamic). `check` finds them without one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import tvm
from tvm import tirx

from ...targets import TargetDesc

DEFAULT_LIMIT = 48 * 1024  # what a block gets without opting in
OPT_IN_LIMIT = 227 * 1024  # sm_80 and later, with the opt-in

# how the lowered TIR prints a shared allocation: T.alloc_shared((4096,)) for static memory
# (float32 unless a dtype follows), T.alloc_buffer((36864,), "uint8", scope="shared.dyn") for the
# dynamic pool that MergeSharedMemoryAllocations makes
_STATIC = re.compile(r'T\.alloc_shared\(\(([^)]*)\)(?:,\s*"(\w+)")?|'
                     r'T\.alloc_buffer\(\(([^)]*)\),\s*(?:"(\w+)",\s*)?scope="shared"')
_DYNAMIC = re.compile(r'T\.alloc_buffer\(\(([^)]*)\),\s*(?:"(\w+)",\s*)?scope="shared\.dyn"')
# a global allocation: TVMBackendAllocWorkspace at each call (no scope= printed)
_GLOBAL = re.compile(r'T\.alloc_buffer\((?![^\n]*scope=)[^\n]*')
_KERNEL = re.compile(r'^(\s*)(?:with T\.launch_thread\("blockIdx|blockIdx_\w+ = T\.launch_thread\()')


@dataclass(frozen=True)
class Usage:
    kernel: str
    static: int
    dynamic: int

    @property
    def problem(self) -> str | None:
        total = self.static + self.dynamic
        if total > OPT_IN_LIMIT:
            return f"{total} bytes of shared memory, more than the {OPT_IN_LIMIT} a block can have"
        if total > DEFAULT_LIMIT and self.dynamic < DEFAULT_LIMIT:
            return (f"{self.static} bytes static + {self.dynamic} dynamic shared memory: over {DEFAULT_LIMIT} in all, "
                    f"but TVM's runtime asks for more only when the dynamic part alone reaches {DEFAULT_LIMIT}, "
                    "so every launch would fail (CUDA_ERROR_INVALID_VALUE)")
        return None


def _bytes(shape: str, dtype: str | None) -> int | None:
    n = 1
    for d in (s.strip() for s in shape.split(",") if s.strip()):
        d = re.sub(r"^T\.int64\((\d+)\)$", r"\1", d)
        if not d.isdigit():
            return None  # a symbolic size: the launch computes it
        n *= int(d)
    return n * tvm.DataType(dtype or "float32").bits // 8


def _lowered(mod: tvm.IRModule, target: TargetDesc) -> tvm.IRModule:
    prims = {gv: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    if not prims:
        return tvm.IRModule({})
    with target.to_tvm() as tgt:
        lowered = tvm.tirx.transform.BindTarget(tgt)(tvm.IRModule(prims))
        return tvm.tirx.get_tir_pipeline("s_tir")[0](lowered)


def usage(mod: tvm.IRModule, target: TargetDesc) -> list[Usage]:
    """Static and dynamic shared memory of every device kernel in ``mod`` (scheduled PrimFuncs)."""
    return _usage(_lowered(mod, target))


def _usage(lowered: tvm.IRModule) -> list[Usage]:
    out = []
    for gv, f in lowered.functions_items():
        if isinstance(f, tirx.PrimFunc):
            for i, text in enumerate(_kernels(f.script())):
                static = sum(_bytes(m[0] or m[2], m[1] or m[3]) or 0 for m in _STATIC.findall(text))
                dynamic = sum(_bytes(*m) or 0 for m in _DYNAMIC.findall(text))
                out.append(Usage(f"{gv.name_hint}#{i}", static, dynamic))
    return out


def _kernels(script: str) -> list[str]:
    """The text of each kernel launch in a lowered function: the outermost blockIdx scopes."""
    lines = script.splitlines()
    starts = [(i, len(m.group(1))) for i, ln in enumerate(lines) if (m := _KERNEL.match(ln))]
    if not starts:
        return []
    top = min(ind for _, ind in starts)
    cuts = [i for i, ind in starts if ind == top] + [len(lines)]
    return ["\n".join(lines[a:b]) for a, b in zip(cuts, cuts[1:])]


def _workspace(lowered: tvm.IRModule, functions: set[str] | None) -> dict[str, list[str]]:
    """The global allocations of each lowered PrimFunc (of those named in ``functions``): what
    it takes from TVM's workspace pool at every call. A CUDA graph that captured such a call
    would replay into a pool page that a later, bigger request may free (the pool resizes
    pages: `src/runtime/workspace_pool.cc`); an H200 reported an illegal address, 2026-12-04."""
    out = {}
    for gv, f in lowered.functions_items():
        if isinstance(f, tirx.PrimFunc) and (functions is None or gv.name_hint in functions):
            allocs = _GLOBAL.findall(f.script())
            if allocs:
                out[gv.name_hint] = [a.strip() for a in allocs]
    return out


def called(mod: tvm.IRModule, function: str) -> set[str]:
    """The PrimFuncs that the Relax function ``function`` calls."""
    return set(re.findall(r"R\.call_tir(?:_inplace)?\((?:cls\.)?(\w+),", mod[function].script()))


def check(mod: tvm.IRModule, target: TargetDesc, graphed: tuple[str, ...] = (),
          optional: bool = False) -> dict[str, list[str]]:
    """Raise naming every kernel of ``mod`` whose shared memory could not be launched, and
    every kernel that the functions in ``graphed`` (captured whole by a CUDA graph) call and
    that allocates TVM workspace. With ``optional`` (the graph is the caller's default, not
    asked for), such kernels are returned instead, before anything is raised: the caller then
    compiles without the graph. Else returns {}."""
    lowered = _lowered(mod, target)  # once, for both checks
    blocked = {fn: _workspace(lowered, called(mod, fn)) for fn in graphed}
    if optional and any(blocked.values()):
        return {name: allocs for per_fn in blocked.values() for name, allocs in per_fn.items()}
    bad = [f"{u.kernel}: {u.problem}" for u in _usage(lowered) if u.problem]
    for fn, per_fn in blocked.items():
        for name, allocs in per_fn.items():
            bad.append(f"{name} (called by {fn}, which a CUDA graph captures): allocates TVM workspace at each call "
                       f"({'; '.join(allocs)}); a replayed graph would write into pages the pool may free")
    if bad:
        raise ValueError("CUDA kernels that would fail on the GPU:\n  " + "\n  ".join(bad))
    return {}
