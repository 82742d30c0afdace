"""Frontends: read checkpoints from other ecosystems into model defs and weight arrays."""
from . import huggingface
from .safetensors import WeightError

__all__ = ["WeightError", "huggingface"]
