"""Schedule rules, registered per op kind and target kind; swappable for tuning experiments.

A rule is ``rule(func: PrimFunc, target: TargetDesc) -> s_tir.Schedule | PrimFunc | None``;
None means "not mine". A rule may return a schedule of ``func`` or a hand-written PrimFunc
with the same parameters that replaces it (e.g. a tiled attention kernel). For each
PrimFunc (tagged with the IR op it implements, attr ``op_kind``) the rules registered for
its op kind are tried in order, then the target's fallbacks. A rule recognizes its kernels by
their block names (`find_block`, `find_blocks`: the names `kernels` gives its TE stages). A scheduled function is
tagged ``tirx.is_scheduled`` so nothing touches it again.

    from inference_pio.schedules import registry
    registry.register("llvm", "linear", my_rule, first=True)   # try mine before the default
    with registry.override("cuda", "linear", []):              # only the fallbacks (dlight)
        art = engine.compile(md, target="cuda")

(`compile_cached`, behind the CLI, keys on the code and options, not on registered rules.)
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import tvm
from tvm import s_tir, tirx
from tvm.s_tir.schedule import SBlockRV

from ..targets import TargetDesc

Rule = Callable[[tirx.PrimFunc, TargetDesc], "s_tir.Schedule | tirx.PrimFunc | None"]

OP_KIND_ATTR = "op_kind"
_RULES: dict[tuple[str, str], list[Rule]] = {}
_FALLBACKS: dict[str, list[Rule]] = {}


def find_block(sch: s_tir.Schedule, name: str) -> SBlockRV | None:
    """The block of ``sch`` named ``name``, or None: how a rule tells whether a kernel is of the
    shape it schedules (or has an optional stage)."""
    try:
        return sch.get_sblock(name)
    except s_tir.ScheduleError:
        return None


def find_blocks(sch: s_tir.Schedule, *names: str) -> list[SBlockRV] | None:
    """The blocks named ``names``, or None if one of them is missing."""
    blocks = [find_block(sch, n) for n in names]
    return None if any(b is None for b in blocks) else blocks


def precision(func: tirx.PrimFunc) -> str:
    """The kernel's ``precision`` hint (`passes.matmul_precision`, `ir.ops.PRECISIONS`):
    "medium" lets a rule multiply bf16-rounded operands; "high" (unmarked) does not."""
    return str(func.attrs["precision"]) if func.attrs is not None and "precision" in func.attrs else "high"


def register(target_kind: str, op_kind: str, rule: Rule, *, first: bool = False) -> None:
    rules = _RULES.setdefault((target_kind, op_kind), [])
    rules.insert(0, rule) if first else rules.append(rule)


def register_fallback(target_kind: str, rule: Rule) -> None:
    _FALLBACKS.setdefault(target_kind, []).append(rule)


@contextlib.contextmanager
def override(target_kind: str, op_kind: str, rules: list[Rule]) -> Iterator[None]:
    """Within: exactly ``rules`` (then the fallbacks) for ``op_kind`` on ``target_kind``."""
    _load_builtin()
    key = (target_kind, op_kind)
    saved = _RULES.get(key)
    _RULES[key] = list(rules)
    try:
        yield
    finally:
        if saved is None:
            del _RULES[key]
        else:
            _RULES[key] = saved


def rules_for(target_kind: str, op_kind: str) -> list[Rule]:
    _load_builtin()
    return _RULES.get((target_kind, op_kind), []) + _FALLBACKS.get(target_kind, [])


def schedule_func(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc:
    if func.attrs is not None and func.attrs.get("tirx.is_scheduled"):
        return func
    kind = str(func.attrs[OP_KIND_ATTR]) if func.attrs is not None and OP_KIND_ATTR in func.attrs else ""
    for rule in rules_for(target.kind, kind):
        sch = rule(func, target)
        if isinstance(sch, tirx.PrimFunc):  # a replacement kernel: keep the original's attrs
            return sch.with_attrs({**dict(func.attrs), "tirx.is_scheduled": True})
        if sch is not None:
            return sch.mod["main"].with_attr("tirx.is_scheduled", True)
    return func


def schedule_module(mod: tvm.IRModule, target: TargetDesc) -> tvm.IRModule:
    """Schedule every PrimFunc of ``mod`` for ``target`` (in place, and returned)."""
    for gv, func in list(mod.functions.items()):
        if isinstance(func, tirx.PrimFunc):
            mod.update_func(gv, schedule_func(func, target))
    return mod


_loaded = False


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import cpu  # noqa: F401  (registers the llvm rules)
        from . import cuda  # noqa: F401  (registers the cuda rules)
