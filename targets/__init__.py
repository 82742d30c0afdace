"""Target descriptions: what schedules need to know about a device, and the TVM target for it.

    resolve("llvm")                          # the host CPU, features detected
    resolve({"kind": "llvm", "mcpu": "znver4"})
    resolve({"kind": "cuda", "arch": "sm_90a"})

Schedules read these fields instead of branching on the TVM target inside each rule.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import Any

# CPU flags (as /proc/cpuinfo spells them) that change the code we generate. An artifact
# records the ones its target uses; loading it on a CPU that lacks one is refused.
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_bf16",
              "avx512_vnni", "avx512_fp16", "amx_tile", "amx_bf16")


class TargetError(ValueError):
    """A target we cannot compile for."""


@dataclass(frozen=True)
class TargetDesc:
    kind: str  # "llvm" or "cuda"
    tvm: dict[str, Any]  # the TVM target as a dict
    vector_lanes: int = 4  # fp32 lanes of one SIMD register (CPU)
    num_cores: int = 1
    cpu_flags: tuple[str, ...] = ()  # SIMD_FLAGS the generated code may use (CPU)
    arch: str = ""  # e.g. "sm_90a" (CUDA)
    max_threads_per_block: int = 1024
    warp_size: int = 32
    max_shared_memory_per_block: int = 49152
    extra: dict[str, Any] = field(default_factory=dict)

    def to_tvm(self):  # -> tvm.target.Target; compile-time only
        import tvm

        return tvm.target.Target(self.tvm)

    @property
    def device(self) -> str:
        return "cpu" if self.kind == "llvm" else "cuda"


def cpu_info_flags() -> frozenset[str]:
    """Every flag this machine's CPU reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def host_cpu_flags() -> tuple[str, ...]:
    """The SIMD_FLAGS this machine's CPU has (empty where /proc/cpuinfo cannot be read)."""
    have = cpu_info_flags()
    return tuple(fl for fl in SIMD_FLAGS if fl in have)


def host_cores() -> int:
    """Physical cores this process may run on (Linux): its CPU affinity, with hyperthread siblings
    counted once, capped by a cgroup v2 CPU quota. Elsewhere: os.cpu_count()."""
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return os.cpu_count() or 1
    cores = set()
    for cpu in allowed:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())  # one line per core, the same for all its hyperthreads
        except OSError:
            cores.add(str(cpu))
    n = len(cores) or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return n


_LLVM_NAMES = {"sse4_2": "sse4.2", "avx512_bf16": "avx512bf16", "avx512_vnni": "avx512vnni",
               "avx512_fp16": "avx512fp16", "amx_tile": "amx-tile", "amx_bf16": "amx-bf16"}


def _llvm_name(flag: str) -> str:
    """LLVM's name for a /proc/cpuinfo flag."""
    return _LLVM_NAMES.get(flag, flag)


AMX_FLAGS = ("amx_tile", "amx_bf16")
_ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA, _SYS_ARCH_PRCTL = 0x1023, 18, 158
_amx_granted: bool | None = None


def amx_usable(flags: tuple[str, ...]) -> bool:
    """Whether code for a CPU with ``flags`` may use AMX bf16 tiles (`schedules/cpu/amx.py`)."""
    return all(f in flags for f in AMX_FLAGS)


def enable_amx() -> bool:
    """Ask Linux for this process's permission to use the AMX tile registers (needed once per
    process before any AMX instruction runs, else it faults). True if granted."""
    global _amx_granted
    if _amx_granted is None:
        _amx_granted = False
        if platform.system() == "Linux" and platform.machine() == "x86_64":
            import ctypes

            try:
                libc = ctypes.CDLL(None, use_errno=True)
                _amx_granted = libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0
            except (OSError, AttributeError):
                pass
    return _amx_granted


def _lanes(flags: tuple[str, ...]) -> int:
    return 16 if "avx512f" in flags else 8 if "avx2" in flags or "avx" in flags else 4


def _llvm(spec: dict[str, Any]) -> TargetDesc:
    from tvm.target import codegen

    spec = dict(spec)
    cores = int(spec.pop("num-cores", 0) or os.cpu_count() or 1)
    host = spec.get("mcpu") in (None, "native")
    if host:
        spec["mcpu"] = codegen.llvm_get_system_cpu()
        flags = host_cpu_flags()
        if amx_usable(flags) and not enable_amx():  # the CPU has AMX but this OS will not let us use it
            flags = tuple(f for f in flags if f not in AMX_FLAGS)
        if amx_usable(flags):  # a VM may name an older model than the CPU is (LLVM calls this one rocketlake)
            import tvm

            t = tvm.target.Target({"kind": "llvm", "mcpu": spec["mcpu"]})
            lacking = [_llvm_name(f) for f in AMX_FLAGS if not codegen.target_has_features(_llvm_name(f), t)]
            if lacking:
                spec["mattr"] = [*spec.get("mattr", []), *(f"+{f}" for f in lacking)]
    else:
        import tvm

        t = tvm.target.Target({"kind": "llvm", **spec})
        flags = tuple(fl for fl in SIMD_FLAGS if codegen.target_has_features(_llvm_name(fl), t))
    if platform.machine() not in ("x86_64", "AMD64"):
        flags = ()
    tvm_spec = {"kind": "llvm", **spec, "num-cores": cores}
    return TargetDesc("llvm", tvm_spec, vector_lanes=_lanes(flags), num_cores=cores, cpu_flags=flags)


def _cuda(spec: dict[str, Any]) -> TargetDesc:
    arch = spec.get("arch", "sm_90a")
    if not (isinstance(arch, str) and arch.startswith("sm_")):
        raise TargetError(f"cuda arch {arch!r} must look like 'sm_90a'")
    smem = spec.get("max_shared_memory_per_block", 232448 if arch.startswith("sm_90") else 49152)
    tvm_spec = {"kind": "cuda", "arch": arch, "max_shared_memory_per_block": smem,
                "max_threads_per_block": 1024, "thread_warp_size": 32}
    return TargetDesc("cuda", tvm_spec, arch=arch, max_shared_memory_per_block=smem)


def resolve(target: str | dict[str, Any] | TargetDesc) -> TargetDesc:
    """A TargetDesc from "llvm", "cuda", a TVM-style dict, or a TargetDesc."""
    if isinstance(target, TargetDesc):
        return target
    spec = {"kind": target} if isinstance(target, str) else dict(target)
    kind = spec.get("kind")
    if kind == "llvm":
        return _llvm({k: v for k, v in spec.items() if k != "kind"})
    if kind == "cuda":
        return _cuda(spec)
    raise TargetError(f"unsupported target {target!r}; expected 'llvm', 'cuda' or a dict with kind llvm/cuda")
