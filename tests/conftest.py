"""Shared fixtures: tiny HF checkpoints and their compiled artifacts, made once per session.

Compiling takes a second or more per model, so artifacts are cached by everything that
changes the compiled code (config, storage dtype, max_seq_len) and shared by every test and
every checkpoint (seed) with that config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hf_fixtures


class Models:
    """Session cache of checkpoints (transformers) and artifacts (our compiler)."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._ckpts: dict[tuple, hf_fixtures.Checkpoint] = {}
        self._arts: dict[tuple, Path] = {}
        self._rts: dict[tuple, Any] = {}

    def checkpoint(self, name: str, seed: int | None = None, dtype: str = "float32",
                   max_shard_size: str | None = None) -> hf_fixtures.Checkpoint:
        key = (name, seed, dtype, max_shard_size)
        if key not in self._ckpts:
            d = self._tmp.mktemp(f"ckpt_{name}_{seed}_{dtype}_{max_shard_size or 'single'}")
            self._ckpts[key] = hf_fixtures.make_checkpoint(d, name, seed, dtype, max_shard_size)
        return self._ckpts[key]

    def artifact(self, name: str, ckpt_dtype: str = "float32", compile_dtype: str | None = None,
                 max_seq_len: int = 64, quantize: str | None = None) -> Path:
        """The saved artifact for config ``name`` (compiled from its default checkpoint's config.json)."""
        key = (name, ckpt_dtype, compile_dtype, max_seq_len, quantize)
        if key not in self._arts:
            from inference_pio import engine, frontends

            ck = self.checkpoint(name, dtype=ckpt_dtype)
            md = frontends.huggingface.model_def(ck.path)
            art = engine.compile(md, target="llvm", dtype=compile_dtype, max_seq_len=max_seq_len, quantize=quantize,
                                 matmul_precision="high")  # the tests hold bf16 weights to fp32 math
            out = self._tmp.mktemp(f"art_{name}_{ckpt_dtype}_{compile_dtype}_{max_seq_len}_{quantize}")
            art.save(out)
            self._arts[key] = out
        return self._arts[key]

    def runtime(self, name: str, seed: int | None = None, ckpt_dtype: str = "float32",
                compile_dtype: str | None = None, max_seq_len: int = 64, quantize: str | None = None):
        key = (name, seed, ckpt_dtype, compile_dtype, max_seq_len, quantize)
        if key not in self._rts:
            from inference_pio import engine

            art = self.artifact(name, ckpt_dtype, compile_dtype, max_seq_len, quantize)
            ck = self.checkpoint(name, seed, ckpt_dtype)
            self._rts[key] = engine.load(art, weights=ck.path, device="cpu")
        return self._rts[key]


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return Models(tmp_path_factory)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
