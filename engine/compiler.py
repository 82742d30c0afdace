"""engine.compile (this module is engine.compiler): model def -> passes -> Relax -> scheduled TIR -> tvm.compile -> Artifact."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import tvm

from .. import __version__, passes
from ..ir import Graph
from ..ir.ops import PRECISIONS, QUANT_DTYPES
from ..model_defs import ModelDef
from ..schedules import schedule_module
from ..targets import TargetDesc, TargetError, amx_usable, resolve
from . import manifest as mf
from ..passes.insert_kv_cache import insert_kv_cache, specialize
from ..passes.insert_sampler import insert_sampler
from .lower import add_kernel_function, graph_signature, kernel_signature, lower


@dataclass
class Artifact:
    """A compiled model: the TVM executable plus its manifest. ``save`` writes both."""

    executable: Any  # tvm.relax.Executable
    manifest: dict[str, Any]
    graphs: dict[str, Graph] = field(repr=False)
    timings: dict[str, float] = field(default_factory=dict)

    def save(self, path: str | Path, checkpoint: str | Path | None = None) -> Path:
        """Write ``model.so`` and ``manifest.json`` into ``path``. ``checkpoint`` records where
        the weights live, so loaders can find them without being told."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.executable.export_library(str(path / mf.LIBRARY))
        m = dict(self.manifest)
        if checkpoint is not None:
            m["checkpoint"] = str(Path(checkpoint).resolve())
        mf.write(path, m)
        return path


def cast_params(graph: Graph, dtype: str) -> Graph:
    """Store every float param as ``dtype`` (kernels widen to fp32 as they read), but those the
    model keeps in their own dtype (``keep_dtype``, e.g. GLM's fp32 router)."""
    from ..ir import param_node, rewrite

    def fn(n, _old):
        if n.op == "param" and n.dtype != dtype and not n.attr("keep_dtype"):
            return param_node(n.name, n.type.with_dtype(dtype), **n.attr_dict)
        return None

    return rewrite(graph, fn)


def device_top_k(tdesc: TargetDesc) -> bool:
    """Whether artifacts for ``tdesc`` carry the `top_k` function (a GPU's: on the CPU the
    host sorts the row where it already is)."""
    return tdesc.kind == "cuda"


MATMUL_PRECISIONS = ("auto", *PRECISIONS)


def resolve_precision(matmul_precision: str, weight_dtype: str) -> str:
    """"auto" made concrete for weights of ``weight_dtype``: "medium" for bf16 weights, whose
    activations torch, llama.cpp and vLLM round to bf16 as well; "high" for fp32 and fp16
    weights (the 16-bit products are bf16: coarser than fp16's own)."""
    if matmul_precision != "auto":
        return matmul_precision
    return "medium" if weight_dtype == "bfloat16" else "high"


def compile(md: ModelDef, target: str | dict | TargetDesc = "llvm", *, dtype: str | None = None,
            max_seq_len: int | None = None, matmul_precision: str = "auto", quantize: str | None = None,
            cuda_graph: bool | None = None, static_decode: bool | None = None, cuda_pdl: bool | str = False,
            dump_dir: str | Path | None = None, progress: Callable[[str], None] | None = None) -> Artifact:
    """Compile ``md`` for ``target`` ("llvm" = this CPU, or a dict such as {"kind": "llvm", "mcpu": ...}).

    ``dtype`` overrides the weight storage dtype; ``max_seq_len`` caps the context the runtime
    accepts (default: the model's max_position_embeddings, at most 4096). ``matmul_precision``
    "medium" lets the linears' and attention's products run on bf16-rounded operands where a
    kernel has such a product (AMX, tensor cores: half their prefill arithmetic), ~1e-3
    relative per op; "high" keeps them within ~1e-5 of fp32 math (`passes.matmul_precision`);
    "auto" (default) is "medium" for bf16 weights, as torch, llama.cpp and vLLM multiply bf16
    weights by bf16 activations, and "high" otherwise (`resolve_precision`).
    ``quantize="int8"`` (llvm only) stores the projection, embedding and LM head weights as int8
    rows with a per-row fp32 scale, quantized from the checkpoint as it loads
    (`passes.quantize_weights`): half the bytes of bf16 for decode to stream. ``cuda_graph``
    (cuda only) has TVM capture CUDA graphs, replayed on later calls: all of a decode step
    (see ``static_decode``), and in prefill the stretches between the kernels that read
    per-call inputs. Its default, None, is True for a cuda target unless a decode kernel takes
    TVM workspace (which a replayed graph must not: `schedules.cuda.limits`; dlight's GEMV at
    some odd shapes), then False, with those kernels in the manifest's
    ``cuda_graph_blocked_by``; True refuses such a kernel. On an H200 (2026-12-04) the graph
    took Qwen3-0.6B decode from 686 to 1,130 tok/s at context 128. ``static_decode``
    (default: ``cuda_graph``) compiles decode with static shapes over persistent input
    buffers (`passes.static_decode`); the runtime follows the manifest. ``cuda_pdl`` (cuda,
    sm_90 and later) launches every kernel with programmatic dependent launch, so that it
    starts while the kernel before it ends, and has decode's GEMVs prefetch their weights into
    L2 meanwhile (`schedules.cuda.pdl`; "launch": without the prefetch). Off by default until
    timed on a GPU. ``progress`` is called with the name of each stage as it starts.
    """
    say = progress or (lambda stage: None)
    say("passes")
    t0 = time.perf_counter()
    tdesc = resolve(target)
    if tdesc.kind not in md.spec.targets:
        raise TargetError(f"{md.family} does not support target kind {tdesc.kind!r}")
    if matmul_precision not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul_precision must be one of {MATMUL_PRECISIONS}, got {matmul_precision!r}")
    if cuda_graph and tdesc.kind != "cuda":
        raise TargetError(f"cuda_graph=True needs a cuda target, not {tdesc.kind!r}")
    pdl_mode = _pdl_mode(cuda_pdl, tdesc)
    graph_auto = cuda_graph is None
    if graph_auto:
        cuda_graph = tdesc.kind == "cuda"
        auto_args = dict(target=tdesc, dtype=dtype, max_seq_len=max_seq_len, matmul_precision=matmul_precision,
                         quantize=quantize, static_decode=static_decode, cuda_pdl=cuda_pdl, dump_dir=dump_dir,
                         progress=progress)
    if quantize is not None:
        if quantize not in QUANT_DTYPES:
            raise ValueError(f"quantize must be one of {QUANT_DTYPES} or None, got {quantize!r}")
        if tdesc.kind != "llvm":
            raise TargetError(f"quantize={quantize!r} has kernels for the llvm (CPU) target only, not {tdesc.kind!r}")
    if tdesc.kind == "cuda":
        from ..targets.cuda_host import enable_cuda_codegen

        enable_cuda_codegen()
    graph = md.graph if dtype is None else cast_params(md.graph, dtype)
    # a packed weight block is two SIMD registers wide: 16 fp32 lanes on AVX2, 32 on AVX-512
    layout = (passes.cpu_passes(block=2 * tdesc.vector_lanes, quantize=quantize,
                                pairs=amx_usable(tdesc.cpu_flags)) if tdesc.kind == "llvm"
              else passes.cuda_passes())
    forward = passes.run(graph, passes.default_passes() + layout, dump_dir=dump_dir)
    max_pos = int(forward.meta_dict().get("max_position_embeddings", 4096))
    max_seq_len = int(max_seq_len or min(max_pos, 4096))
    weight_dtype = graph.params()[0].dtype  # cast_params made them one dtype (before any quantization)
    matmul_precision = resolve_precision(matmul_precision, weight_dtype)
    # fold_slices again: kv_append now reads the v window, and decode's last-row slice is the whole row
    dump_dir = dump_dir or os.environ.get("INFERENCE_PIO_DUMP")
    prefill = passes.fold_slices(insert_sampler(insert_kv_cache(forward, max_seq_len, cache_dtype=weight_dtype)))
    prefill = passes.run(prefill, passes.cache_passes(tdesc.kind), dump_dir=Path(dump_dir) / "prefill" if dump_dir else None)
    decode = passes.fold_slices(specialize(prefill, "decode", seq_len=1))
    decode = passes.run(decode, passes.decode_passes(tdesc.kind), dump_dir=Path(dump_dir) / "decode" if dump_dir else None)
    if static_decode is None:
        static_decode = cuda_graph
    if static_decode:
        decode = passes.static_decode(decode)
    # encoders (Qwen3-VL's vision tower): the same fusions and weight layouts, no cache
    encoders = {name: passes.run(g if dtype is None else cast_params(g, dtype), passes.default_passes() + layout,
                                 dump_dir=Path(dump_dir) / name if dump_dir else None)
                for name, g in md.encoders.items()}
    graphs = {name: passes.matmul_precision(g, matmul_precision)
              for name, g in {"forward": forward, "prefill": prefill, "decode": decode, **encoders}.items()}
    gemm = passes.gemm_passes(tdesc.kind)  # (none for the CPU)
    if gemm:
        graphs = {name: g if name == "decode" else
                  passes.run(g, gemm, dump_dir=Path(dump_dir) / name / "gemm" if dump_dir else None)
                  for name, g in graphs.items()}
    for g in graphs.values():
        g.verify()
    t1 = time.perf_counter()
    say("lower + schedule")
    mod = lower(graphs)
    functions = {name: graph_signature(g) for name, g in graphs.items()}
    if device_top_k(tdesc):  # top-k / top-p sampling reads 64 candidates, not the whole row
        from ..schedules.cuda.sample import TOP_K, top_candidates

        vocab = int(forward.meta_dict()["vocab_size"])
        logits = dict(graphs["decode"].outputs)["logits"]
        if vocab > TOP_K and logits.dtype == "float32":
            inputs, output = [("logits", (1, vocab), "float32")], ("top", (2, TOP_K), "float32")
            mod = add_kernel_function(mod, "top_k", top_candidates(vocab), inputs, output)
            functions["top_k"] = kernel_signature(inputs, output)
    mod = schedule_module(mod, tdesc)
    if tdesc.device == "cuda":  # what only a launch would otherwise reveal
        from ..schedules.cuda import limits

        blockers = limits.check(mod, tdesc, graphed=("decode",) if cuda_graph else (), optional=graph_auto)
        if blockers:  # decode again, with dynamic shapes and no graph
            art = compile(md, cuda_graph=False, **auto_args)
            art.manifest["cuda_graph_blocked_by"] = sorted(blockers)
            return art
    t2 = time.perf_counter()
    say("tvm.compile")
    with tdesc.to_tvm() as tgt, tvm.transform.PassContext(config={"relax.backend.use_cuda_graph": cuda_graph}):
        ex = tvm.compile(mod, target=tgt, tir_pipeline=_tir_pipeline(pdl_mode))
    t3 = time.perf_counter()
    meta = forward.meta_dict()
    manifest = {
        "format": mf.FORMAT,
        "format_version": mf.FORMAT_VERSION,
        "family": md.family,
        "family_version": md.spec.version,
        "model_config": md.config_dict(),
        "vocab_size": int(meta["vocab_size"]),
        "max_seq_len": max_seq_len,
        "functions": functions,
        "params": [{"name": p.name, "shape": list(p.shape), "dtype": p.dtype, **p.attr_dict}
                   for p in _all_params([forward, *encoders.values()])],
        "ignored_tensors": list(md.spec.ignored(md.config)),
        "target": tdesc.tvm,
        "device": tdesc.device,
        "cpu_flags": list(tdesc.cpu_flags),
        "matmul_precision": matmul_precision,
        "quantize": quantize,
        "cuda_graph": cuda_graph,
        "cuda_pdl": pdl_mode,
        "tvm_version": tvm.__version__,
        "inference_pio_version": __version__,
    }
    timings = {"passes_s": t1 - t0, "lower_schedule_s": t2 - t1, "tvm_compile_s": t3 - t2}
    return Artifact(ex, manifest, graphs, timings)


def _pdl_mode(cuda_pdl: bool | str, tdesc: TargetDesc) -> str | None:
    """``cuda_pdl`` as `schedules.cuda.pdl`'s mode ("prefetch" for True), or None (off)."""
    if cuda_pdl is False or cuda_pdl is None:
        return None
    from ..schedules.cuda.pdl import MIN_ARCH, MODES

    mode = "prefetch" if cuda_pdl is True else cuda_pdl
    if mode not in MODES:
        raise ValueError(f"cuda_pdl must be True, False or one of {MODES}, got {cuda_pdl!r}")
    digits = "".join(ch for ch in tdesc.arch if ch.isdigit())
    if tdesc.kind != "cuda" or not digits or int(digits) < MIN_ARCH:
        raise TargetError(f"cuda_pdl needs a cuda target of arch sm_90 or later, not {tdesc.tvm}")
    return mode


def _tir_pipeline(pdl_mode: str | None) -> str:
    """The TIR pipeline `tvm.compile` lowers the kernels with: TVM's default, or with PDL."""
    if pdl_mode is None:
        return "default"
    from ..schedules.cuda import pdl

    return pdl.pipeline(pdl_mode)


def _all_params(graphs: list[Graph]) -> list[Any]:
    """The params of ``graphs``, each once (by name), in order of first use."""
    seen: dict[str, Any] = {}
    for g in graphs:
        for p in g.params():
            seen.setdefault(p.name, p)
    return list(seen.values())


__all__ = ["Artifact", "cast_params", "compile"]
