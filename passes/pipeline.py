"""The pass pipeline: one readable list, every step named; the IR is verified between steps.

    graph = run(graph, default_passes())          # or run(..., dump_dir="dump/") to see each step
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NamedTuple

from ..ir import Graph

Pass = Callable[[Graph], Graph]


class NamedPass(NamedTuple):
    name: str
    fn: Pass


class PassError(RuntimeError):
    """A pass raised or produced an invalid graph; names the pass and those that ran before."""


def default_passes() -> list[NamedPass]:
    from .fold_slices import fold_slices
    from .fuse_epilogues import fuse_norm_rotary, fuse_residual, fuse_swiglu
    from .fuse_projections import fuse_projections
    from .insert_rotary import insert_rotary
    from .rewrite_attention import rewrite_attention

    return [
        # Phase 1. Make the abstract declarations explicit.
        NamedPass("insert_rotary", insert_rotary),
        NamedPass("rewrite_attention", rewrite_attention),
        # Phase 2. Fusion. Projections first: fuse_swiglu matches the gate+up slices it leaves.
        NamedPass("fuse_projections", fuse_projections),
        NamedPass("fuse_swiglu", fuse_swiglu),
        NamedPass("fuse_residual", fuse_residual),
        NamedPass("fuse_norm_rotary", fuse_norm_rotary),  # after insert_rotary made the rotary explicit
        NamedPass("fold_slices", fold_slices),  # q/k windows of the fused q+k+v output, read in place
    ]


def cpu_passes(block: int = 16, quantize: str | None = None, pairs: bool = False) -> list[NamedPass]:
    """Layout passes for the llvm target, after `default_passes`; ``quantize`` ("int8") stores
    the packed weights quantized; ``pairs`` (a CPU with AMX) pairs the rows of bf16 expert
    panels (`pack_weights`; not for int8 weights)."""
    from functools import partial

    from .pack_weights import pack_weights
    from .quantize_weights import quantize_weights

    # after fusion: pack the fused q+k+v / gate+up weights, not their parts
    layout = [NamedPass("pack_weights", partial(pack_weights, block=block, pairs=pairs and not quantize))]
    if quantize:
        layout.append(NamedPass("quantize_weights", partial(quantize_weights, dtype=quantize)))
    return layout


def cuda_passes() -> list[NamedPass]:
    """Passes for the cuda target, after `default_passes` (the fusions that pay on CUDA pay in
    decode only, `decode_passes`): each sparse MLP learns its top_k, for the routed kernels."""
    from .route_experts import route_experts

    return [NamedPass("route_experts", route_experts)]


def cache_passes(target_kind: str) -> list[NamedPass]:
    """Passes for the KV-cached graphs (after `insert_kv_cache`; decode is specialized from them)."""
    from .fuse_epilogues import fuse_append_pair, fuse_norm_append

    if target_kind == "cuda":
        return [NamedPass("fuse_norm_append", fuse_norm_append), NamedPass("fuse_append_pair", fuse_append_pair)]
    return []


def decode_passes(target_kind: str) -> list[NamedPass]:
    """Passes for the one-token decode graph only (after `insert_kv_cache.specialize`)."""
    from .drop_image_inputs import drop_image_inputs
    from .fuse_epilogues import (fuse_append_attention, fuse_linear_swiglu, fuse_norm_attention, fuse_norm_linear,
                                 fuse_swiglu_linear)

    common = [NamedPass("drop_image_inputs", drop_image_inputs)]  # a generated token is never an image's
    if target_kind == "cuda":
        # swiglu in the gate+up GEMV's epilogue (each thread has a gate row and its up row), else
        # (a gate+up that cannot take it) in the down projection's GEMV, once per block. Not in
        # prefill's GEMMs, which would recompute it for every tile of output columns: on an H200
        # (2026-12-04) that made Qwen3-4B's down projection at 128 rows 828 us against 104 for
        # q+k+v (bf16 products)
        return common + [NamedPass("fuse_linear_swiglu", fuse_linear_swiglu),
                         NamedPass("fuse_swiglu_linear", fuse_swiglu_linear),
                         NamedPass("fuse_norm_linear", fuse_norm_linear),
                         NamedPass("fuse_norm_attention", fuse_norm_attention),
                         NamedPass("fuse_append_attention", fuse_append_attention)]
    return common


def gemm_passes(target_kind: str) -> list[NamedPass]:
    """Passes for the graphs whose linears take T rows (forward, prefill, encoders; not decode),
    after `matmul_precision`."""
    from .round_activations import round_activations

    if target_kind == "cuda":
        return [NamedPass("round_activations", round_activations)]
    return []


def run(graph: Graph, passes: list[NamedPass], *, dump_dir: str | Path | None = None,
        verify_each: bool = True) -> Graph:
    """Apply ``passes`` in order. ``dump_dir`` (or $INFERENCE_PIO_DUMP) writes ``NN_<pass>.txt``."""
    dump_dir = dump_dir or os.environ.get("INFERENCE_PIO_DUMP")
    graph.verify()
    done: list[str] = []
    _dump(dump_dir, 0, "input", graph)
    for i, p in enumerate(passes, 1):
        try:
            graph = p.fn(graph)
            if verify_each:
                graph.verify()
        except Exception as e:
            after = f" (after {', '.join(done)})" if done else ""
            raise PassError(f"pass {p.name!r} failed{after}: {e}") from e
        done.append(p.name)
        _dump(dump_dir, i, p.name, graph)
    return graph


def _dump(dump_dir: str | Path | None, i: int, name: str, graph: Graph) -> None:
    if dump_dir:
        Path(dump_dir).mkdir(parents=True, exist_ok=True)
        (Path(dump_dir) / f"{i:02d}_{name}.txt").write_text(str(graph) + "\n")
