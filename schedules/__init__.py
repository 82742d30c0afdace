"""Kernels (TE, target independent) and their schedules per op kind and target."""
from . import kernels
from .kernels import KERNELS
from .registry import register, register_fallback, rules_for, schedule_func, schedule_module

__all__ = ["KERNELS", "kernels", "register", "register_fallback", "rules_for", "schedule_func", "schedule_module"]
