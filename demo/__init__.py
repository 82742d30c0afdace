"""Tiny embedded demo model: a Qwen3 checkpoint trained on Python's standard library."""

import pathlib

CHECKPOINT = pathlib.Path(__file__).parent / "pystdlib"
