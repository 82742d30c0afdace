"""Helpers for reading Hugging Face config dicts into our frozen config dataclasses."""
from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A config.json we cannot build a model from; the message names the field and value."""


def require(ok: bool, field: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"config field {field}={value!r}: expected {expected}")


def pop_rope_theta(cfg: dict[str, Any], default: float) -> float:
    """rope_theta from ``rope_parameters`` (transformers 5) or the older ``rope_theta``/``rope_scaling``.

    Only plain ("default") RoPE is supported so far; scaled variants raise. A
    ``partial_rotary_factor`` inside rope_parameters is moved to the top level of ``cfg``, where
    older configs keep it (see `pop_rotary_fraction`).
    """
    params = cfg.pop("rope_parameters", None) or {}
    if "partial_rotary_factor" in params:
        cfg.setdefault("partial_rotary_factor", params["partial_rotary_factor"])
    scaling = cfg.pop("rope_scaling", None) or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise ConfigError(f"rope type {kind!r} is not supported yet (only 'default')")
    theta = params.get("rope_theta", cfg.pop("rope_theta", default))
    cfg.pop("rope_theta", None)
    require(isinstance(theta, (int, float)) and theta > 0, "rope_theta", theta, "a positive number")
    return float(theta)


def pop_rotary_fraction(cfg: dict[str, Any], head_dim: int) -> int:
    """The number of rotated dims of each head: head_dim * partial_rotary_factor (default 1)."""
    factor = cfg.pop("partial_rotary_factor", None) or 1.0
    dim = int(head_dim * factor)
    require(isinstance(factor, (int, float)) and 0 < factor <= 1 and dim > 0 and dim % 2 == 0, "partial_rotary_factor", factor,
            f"a fraction in (0, 1] giving an even number of the {head_dim} head dims")
    return dim


def pop_moe_fields(cfg: dict[str, Any], count: str) -> dict[str, Any]:
    """The expert count (under ``count``, or transformers 5's ``num_local_experts``),
    moe_intermediate_size and num_experts_per_tok, popped from ``cfg``: every MoE family has them."""
    experts = cfg.pop(count, None)
    local = cfg.pop("num_local_experts", None)
    experts = experts or local
    if experts is None:
        raise ConfigError(f"config.json lacks required field {count!r}")
    try:
        return {count: experts, "moe_intermediate_size": cfg.pop("moe_intermediate_size"),
                "num_experts_per_tok": cfg.pop("num_experts_per_tok")}
    except KeyError as e:
        raise ConfigError(f"config.json lacks required field {e.args[0]!r}") from None
