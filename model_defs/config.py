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

    Only plain ("default") RoPE is supported so far; scaled variants raise.
    """
    params = cfg.pop("rope_parameters", None) or {}
    scaling = cfg.pop("rope_scaling", None) or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise ConfigError(f"rope type {kind!r} is not supported yet (only 'default')")
    theta = params.get("rope_theta", cfg.pop("rope_theta", default))
    cfg.pop("rope_theta", None)
    require(isinstance(theta, (int, float)) and theta > 0, "rope_theta", theta, "a positive number")
    return float(theta)
