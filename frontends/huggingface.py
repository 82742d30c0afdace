"""Hugging Face checkpoints: config.json -> model def, safetensors -> parameter arrays.

`model_def` needs only config.json. `load_weights` maps HF tensor names onto the graph's
params (identity names; fused params are concatenations of their sources), checks every
shape, and converts to the dtype the graph declares. Unused checkpoint tensors are an error
unless the family says they may be ignored (e.g. lm_head under tied embeddings).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import model_defs
from ..ir import Graph, Node, np_dtype
from ..ir.ops import join_sources, pack_rows, quantize_rows
from ..model_defs import ConfigError, ModelDef
from .safetensors import SafetensorsFiles, WeightError


def read_config(ckpt: str | Path) -> dict[str, Any]:
    path = Path(ckpt) / "config.json"
    if not path.is_file():
        raise ConfigError(f"no config.json in {ckpt}")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return cfg


def model_def(ckpt: str | Path, dtype: str | None = None) -> ModelDef:
    """The model def for an HF checkpoint directory (reads config.json only).

    ``dtype`` sets the weight storage dtype (default: the config's ``dtype``/``torch_dtype``).
    """
    return model_defs.from_hf_config(read_config(ckpt), dtype)


def open_checkpoint(ckpt: str | Path) -> SafetensorsFiles:
    """Single ``model.safetensors``, or shards listed by ``model.safetensors.index.json``."""
    ckpt = Path(ckpt)
    index = ckpt / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = sorted({ckpt / f for f in weight_map.values()})
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise WeightError(f"{index} lists shards that do not exist: {missing}")
        st = SafetensorsFiles(files)
        for name, f in weight_map.items():
            if name not in st:
                raise WeightError(f"{index} says {name!r} is in {f}, but it is not there")
        return st
    files = sorted(ckpt.glob("*.safetensors"))
    if not files:
        raise WeightError(f"no safetensors weights in {ckpt}")
    return SafetensorsFiles(files)


def _sources(p: Node) -> tuple[str, ...]:
    return tuple(p.attr("concat")) if p.attr("concat") else (p.name,)


def param_source_shape(p: Node) -> tuple[int, ...]:
    """The shape a param has before packing: (N, K), or (E, N, K) for a stack of experts."""
    if p.attr("pack"):
        return (*p.shape[:-3], p.attr("rows"), p.shape[-2])
    return tuple(p.shape)


def _concat_shape(p: Node) -> tuple[int, ...]:
    """What ``p``'s checkpoint tensors concatenate to: its source shape, with a stack of E
    experts (E, N, K) flattened to (E * N, K)."""
    want = param_source_shape(p)
    return (want[0] * want[1], want[2]) if p.attr("experts") else want


def _part_shapes(p: Node, want: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The shape each source tensor of ``p`` must have (``want``: their concatenation's)."""
    srcs = _sources(p)
    if len(srcs) == 1:
        return [want]
    axis = p.attr("axis", 0)
    return [want[:axis] + (n,) + want[axis + 1:] for n in p.attr("splits")]


def load_weights(graph_params: list[Node], ckpt: str | Path, ignored: tuple[str, ...] = (),
                 out: Callable[[Node], np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Arrays for ``graph_params`` (by name, in the params' dtypes and layouts) from the checkpoint
    at ``ckpt``. Every tensor is checked (from the file headers) before anything is read.
    ``out(param)``, when given, returns the array to fill for that param (e.g. a view of a
    weight arena), so a param is written once, without an intermediate copy."""
    st = open_checkpoint(ckpt)
    _check_tensors(graph_params, st, ckpt, ignored)
    arrays: dict[str, np.ndarray] = {}
    scales = {p.attr("scale_of"): p for p in graph_params if p.attr("scale_of")}
    for p in graph_params:
        if p.attr("scale_of"):
            continue  # written with its weight, below
        arr = join_sources([st.get(s) for s in _sources(p)], p.attr("axis", 0), p.attr("experts"))
        if p.attr("stored"):  # the checkpoint holds it in another shape (a conv kernel as a matrix)
            arr = arr.reshape(param_source_shape(p))
        if p.attr("quant"):  # `passes.quantize_weights`: int8 rows and their scales
            arr, scale = quantize_rows(arr)
            sp = scales[p.name]
            if out is not None:  # the scales' slot in the arena
                slot = out(sp)
                slot[...] = scale
                scale = slot
            arrays[sp.name] = scale
        else:
            arr = _convert(arr, p.dtype)
        dst = out(p) if out is not None else None
        if p.attr("pack"):
            arr = pack_rows(arr, p.attr("pack"), out=dst, pairs=bool(p.attr("pairs")))
        elif dst is not None:
            dst[...] = arr
            arr = dst
        arrays[p.name] = arr
        for s in _sources(p):
            st.release(s)
    return arrays


def _check_tensors(graph_params: list[Node], st: SafetensorsFiles, ckpt: str | Path, ignored: tuple[str, ...]) -> None:
    used: set[str] = set()
    for p in graph_params:
        if p.attr("scale_of"):  # computed from its weight
            continue
        srcs, want = _sources(p), tuple(p.attr("stored") or _concat_shape(p))
        for s, part_shape in zip(srcs, _part_shapes(p, want)):
            if s not in st:
                raise WeightError(f"checkpoint {ckpt} is missing tensor {s!r}"
                                  + (f" (needed for {p.name!r})" if s != p.name else ""))
            shape = st.tensors[s].shape
            if shape != part_shape:
                raise WeightError(f"tensor {s!r} has shape {shape} but the model expects {part_shape}"
                                  + (f" (a part of {p.name!r}, {want})" if len(srcs) > 1 else ""))
            used.add(s)
        if len(srcs) > 1:
            axis = p.attr("axis", 0)
            total = sum(st.tensors[s].shape[axis] for s in srcs)
            if total != want[axis]:
                raise WeightError(f"tensors {list(srcs)} concatenate to {total} rows but {p.name!r} expects {want}")
    prefixes = tuple(i for i in ignored if i.endswith("."))  # "model.layers.92.": a whole module
    unexpected = sorted(t for t in set(st.tensors) - used - set(ignored) if not t.startswith(prefixes))
    if unexpected:
        more = f" (and {len(unexpected) - 5} more)" if len(unexpected) > 5 else ""
        raise WeightError(f"checkpoint {ckpt} has tensors the model does not use: {unexpected[:5]}{more}")


def _convert(arr: np.ndarray, dtype: str) -> np.ndarray:
    want = np_dtype(dtype)
    if arr.dtype == want:
        return arr
    if arr.dtype.kind not in "fV" and arr.dtype.name != "bfloat16":
        raise WeightError(f"cannot convert a {arr.dtype} tensor to {dtype}")
    return arr.astype(np.float32).astype(want) if arr.dtype.name == "bfloat16" or want.name == "bfloat16" else arr.astype(want)


def load_for_graph(md: ModelDef, graph: Graph, ckpt: str | Path) -> dict[str, np.ndarray]:
    return load_weights(graph.params(), ckpt, md.spec.ignored(md.config))
