"""The runtime: load a saved artifact and its weights, run forward passes.

Imports only ``tvm.runtime`` (never the compiler), so it works with TVM_USE_RUNTIME_LIB=1
on a machine that has just TVM's runtime libraries.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ..frontends.huggingface import load_weights
from ..ir import TensorType, param_node
from ..targets import amx_usable, enable_amx, host_cores, host_cpu_flags
from . import manifest as mf
from . import vision
from .arena import Arena
from .manifest import ArtifactError
from .sampler import check_settings, sample, sample_top

# Prompt tokens per prefill call, per device: bounds the activations (and the (heads, T, kv_len)
# scores where an attention kernel is not tiled). On a GPU a long chunk is also what fills it: a
# GEMM over 256 rows in 64x64 tiles is 64 blocks for a 1024-wide projection, half of an H100's
# SMs, and a 1024-token prompt would be 4 calls of every kernel instead of 1.
PREFILL_CHUNK = {"cpu": 256, "cuda": 2048}


class InputError(ValueError):
    """Bad input to a loaded model: token ids out of range, empty or too long contexts."""


def _tvm_runtime(device: str = "cpu"):
    import tvm.runtime
    import tvm.runtime.vm  # noqa: F401  (registers VirtualMachine)

    if device == "cuda":
        _load_cuda_runtime()
    return tvm.runtime


def _load_cuda_runtime() -> None:
    """Runtime-only TVM does not load its CUDA backend by itself: load it before the artifact."""
    import ctypes
    import os

    import tvm

    if tvm.get_global_func("ffi.Module.load_from_bytes.cuda", allow_missing=True) is not None:
        return
    lib = os.path.join(os.path.dirname(tvm.__file__), "lib", "libtvm_runtime_cuda.so")
    try:
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise ArtifactError(f"cannot load TVM's CUDA runtime ({e}); a CUDA artifact needs an NVIDIA driver "
                            "and libcudart.so.13 on the library path") from None


def cpu_threads() -> int:
    """Size TVM's CPU thread pool for this thread and return its size.

    TVM makes a thread's pool once, at its first parallel kernel, with TVM_NUM_THREADS workers,
    or else half the logical CPUs, assuming two hyperthreads per core. Where the CPUs are whole
    cores (SMT off, or a VM whose vCPUs are not sibling pairs) that leaves half of them idle: on a
    2-vCPU VM, Qwen3-0.6B decoded 2.7x and prefilled 3x slower. So unless the user set it, the
    variable becomes the physical cores this process may run on (`targets.host_cores`).
    A pool made before this call keeps its size, which is what the return value reports."""
    import tvm

    os.environ.setdefault("TVM_NUM_THREADS", str(host_cores()))
    return int(tvm.get_global_func("runtime.NumThreads")())


def _check_device(m: dict[str, Any], device: str) -> None:
    if device != m["device"]:
        raise ArtifactError(f"artifact was compiled for {m['device']!r} ({m['target'].get('kind')}) "
                            f"but device={device!r} was requested")
    if device == "cpu":
        have = host_cpu_flags()  # empty where /proc/cpuinfo cannot be read: nothing to check against
        missing = sorted(set(m.get("cpu_flags", ())) - set(have)) if have else []
        if missing:
            raise ArtifactError(f"artifact was compiled for a CPU with {missing}, which this CPU lacks; "
                                "recompile it here (target='llvm')")
        if amx_usable(tuple(m.get("cpu_flags", ()))) and not enable_amx():
            raise ArtifactError("artifact may use AMX tiles, but this OS does not grant their use to the process "
                                "(Linux >= 5.16 needed); recompile it here (target='llvm')")


def _check_weights_config(m: dict[str, Any], weights: Path) -> None:
    cfg_file = weights / "config.json"
    if not cfg_file.is_file():
        return
    try:
        hf = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{cfg_file} is not valid JSON: {e}") from None
    hf = {**hf, **(hf.get("text_config") or {})}  # Qwen3-VL nests its language model's fields
    ours = m["model_config"]
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "head_dim", "intermediate_size"):
        if key in hf and key in ours and hf[key] != ours[key]:
            raise ArtifactError(f"weights at {weights} have {key}={hf[key]} but the artifact was compiled "
                                f"for {key}={ours[key]}")


class Runtime:
    """A compiled model with its weights on a device."""

    def __init__(self, path: str | Path, weights: str | Path, device: str = "cpu") -> None:
        path, weights = Path(path), Path(weights)
        self.manifest = m = mf.read(path)
        _check_device(m, device)
        _check_weights_config(m, weights)
        rt = _tvm_runtime(device)
        self._rt = rt
        self.device = rt.device(device, 0)
        self.threads = cpu_threads() if device == "cpu" else 0  # host threads running the kernels
        self.vm = rt.vm.VirtualMachine(rt.load_module(str(path / mf.LIBRARY)), self.device)
        nodes = [param_node(p["name"], TensorType(tuple(p["shape"]), p["dtype"]),
                            **{k: v for k, v in p.items() if k not in ("name", "shape", "dtype")})
                 for p in m["params"]]
        ignored = tuple(m.get("ignored_tensors", ()))
        if device == "cpu":  # weights land in one huge-page arena, once; tensors are views of it
            self._arena = Arena(nodes)
            load_weights(nodes, weights, ignored, out=self._arena.array)
            self.params = self._arena.tensors(rt)
        else:
            arrays = load_weights(nodes, weights, ignored)
            self.params = {k: rt.tensor(np.ascontiguousarray(v), self.device) for k, v in arrays.items()}
        self._cache: dict[str, Any] | None = None
        self._plans: dict[str, _Plan] = {}  # per function, made at its first call
        self._token = _HostBuffer(rt, (1,), "int32")  # where a drawn token is read back
        top = m["functions"].get("top_k")  # (GPU artifacts: the best candidates of a row of logits)
        self._top = _HostBuffer(rt, tuple(top["outputs"][0]["shape"]), "float32") if top else None
        # each function's output names, in order (prefill/decode also return the drawn "token")
        self._outputs: dict[str, list[str]] = {fn: [o["name"] for o in sig["outputs"]]
                                               for fn, sig in m["functions"].items()}
        self.vocab_size: int = m["vocab_size"]
        self.max_seq_len: int = m["max_seq_len"]
        # multimodal RoPE (Qwen3-VL) reads (t, h, w) positions (3, T): a text token's three are equal
        self._mrope = any(i["name"] == "positions" and len(i["shape"]) == 2 for i in m["functions"]["forward"]["inputs"])
        # the image features the language model reads (Qwen3-VL), by input name
        self._image_inputs = [i for i in m["functions"]["forward"]["inputs"]
                              if i["name"] == "image_embeds" or i["name"].startswith("deepstack.")]

    def _positions(self, start: int, stop: int, offset: int = 0) -> np.ndarray:
        p = np.arange(start + offset, stop + offset, dtype=np.int32)
        return np.stack([p] * 3) if self._mrope else p

    def _prompt(self, arr: np.ndarray, images: Sequence[Any] | None) -> _Prompt:
        """The prompt's positions and image features (running the vision tower over ``images``)."""
        if images and "vision" not in self.manifest["functions"]:
            raise InputError(f"this {self.manifest['family']} artifact takes no images")
        feats: dict[str, np.ndarray] = {}
        positions, offset = self._positions(0, arr.size), 0
        image_token = self.manifest["model_config"].get("image_token_id")
        if self._image_inputs and not images and (arr == image_token).any():
            raise InputError(f"the prompt holds image tokens (id {image_token}) but no images were given")
        if images:
            cfg = self.manifest["model_config"]
            try:
                imgs, positions, offset = vision.layout(arr, images, cfg)
            except vision.ImageError as e:
                raise InputError(str(e)) from None
            names = self._outputs["vision"]  # embeds, deepstack.0, ...
            outs = [self._call("vision", vision.tower_inputs(img, cfg["vision"])) for img in imgs]
            outs = [[t.numpy() for t in out] if len(names) > 1 else [out.numpy()] for out in outs]
            feats = {("image_embeds" if n == "embeds" else n): np.concatenate([o[j] for o in outs])
                     for j, n in enumerate(names)}
        return _Prompt(arr, positions, offset, feats, self._image_inputs, image_token)

    def _check_ids(self, ids: Sequence[int]) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.ndim != 1 or arr.size == 0:
            raise InputError(f"ids must be a non-empty list of token ids, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"ids must be integers, got {arr.dtype}")
        bad = arr[(arr < 0) | (arr >= self.vocab_size)]
        if bad.size:
            raise InputError(f"token id {int(bad[0])} is out of range [0, {self.vocab_size})")
        if arr.size > self.max_seq_len:
            raise InputError(f"context of {arr.size} tokens is longer than the compiled maximum {self.max_seq_len}")
        return arr.astype(np.int32)

    def _call(self, fn: str, feeds: dict[str, Any]):
        plan = self._plans.get(fn)
        if plan is None:
            plan = self._plans[fn] = _Plan(self, fn, feeds)
        return plan(feeds)

    def _caches(self) -> dict[str, Any]:
        """The KV-cache tensors, allocated once per runtime (kv_len bounds what is read); an
        input the manifest marks "zeroed" (the attention kernels' counters, ``cache.sync``:
        `passes.static_decode`) starts at zero, and the kernels leave it so."""
        if self._cache is None:
            self._cache = {i["name"]: self._rt.tensor(np.zeros(i["shape"], i["dtype"]), self.device)
                           if i.get("zeroed") else self._rt.empty(tuple(i["shape"]), i["dtype"], self.device)
                           for i in self.manifest["functions"]["decode"]["inputs"] if i["name"].startswith("cache.")}
        return self._cache

    def _step(self, fn: str, ids: np.ndarray, start: int, inv_temperature: float, key: int,
              prompt: _Prompt | None = None) -> dict[str, Any]:
        """Run ``ids`` at positions start.. through ``fn`` (prefill/decode); its outputs by name,
        on the device: the last token's logits, and the drawn token where the artifact draws it.
        A prefill chunk of ``prompt`` reads its positions and image features from it."""
        n = start + ids.size
        static = self.manifest["functions"][fn].get("static_inputs", False)  # kv_len is data, not a shape
        feeds = {"ids": ids, "kv_len": np.array([n], np.int32) if static else self._rt.ShapeTuple([n]),
                 **self._caches(), "inv_temperature": np.array([inv_temperature], np.float32),
                 "sample_key": np.array([key], np.int32)}
        if prompt is not None and fn == "prefill":
            feeds.update(prompt.feeds(start, n))
        else:
            feeds["positions"] = self._positions(start, n, prompt.offset if prompt is not None else 0)
        out = self._call(fn, feeds)
        names = self._outputs[fn]
        return dict(zip(names, out)) if len(names) > 1 else {names[0]: out}

    def stream(self, ids: Sequence[int], max_new_tokens: int = 32, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, seed: int | None = None, stop: Iterable[int] = (),
               images: Sequence[Any] | None = None) -> Iterator[int]:
        """Yield generated token ids one by one (KV-cached decode); ends after ``max_new_tokens``
        or after yielding a token in ``stop``. ``images`` (Qwen3-VL): one `vision.Image` or
        (pixels, grid) pair per run of image tokens in ``ids``, in order."""
        arr = self._check_ids(ids)
        if max_new_tokens < 0:
            raise InputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if arr.size + max_new_tokens > self.max_seq_len:
            raise InputError(f"{arr.size} prompt tokens + max_new_tokens={max_new_tokens} exceed the compiled "
                             f"maximum context of {self.max_seq_len} tokens")
        check_settings(temperature, top_k, top_p)
        prompt = self._prompt(arr, images)
        stop = set(stop)
        rng = np.random.default_rng(seed)
        if max_new_tokens == 0:
            return
        # the compiled sampler (greedy / plain temperature) runs where the logits are; top-k and
        # top-p copy the logits to the host, or, where the artifact has a `top_k` function (GPU),
        # only the best 64 candidates when they decide the draw (`sample_top`)
        on_device = "token" in self._outputs["decode"] and top_k in (0, self.vocab_size) and top_p == 1.0
        candidates = self._top is not None and temperature > 0 and 0 < top_k < self._top.shape[1]
        inv_t = 0.0 if temperature == 0 else 1.0 / temperature

        def step(fn: str, ids: np.ndarray, start: int) -> int:
            key = 0 if inv_t == 0 else int(rng.integers(0, 2**31 - 1))  # (greedy: no draw, no new key)
            out = self._step(fn, ids, start, inv_t, key, prompt)
            if on_device:
                tok = int(self._token.read(out["token"])[0])
                if not 0 <= tok < self.vocab_size:  # argmax found no maximum: NaN logits
                    raise RuntimeError(f"{fn}: no token could be drawn (the logits are not finite)")
                return tok
            if candidates:
                top = self._top.read(self._call("top_k", {"logits": out["logits"]}))
                tok = sample_top(top, self.vocab_size, rng, temperature, top_k, top_p)
                if tok is not None:
                    return tok
            return sample(out["logits"].numpy()[-1], rng, temperature, top_k, top_p)

        n, size = 0, PREFILL_CHUNK[self.manifest["device"]]
        for s in range(0, arr.size, size):
            chunk = arr[s: s + size]
            if s + size < arr.size:  # an earlier chunk only fills the cache
                self._step("prefill", chunk, n, inv_t, 0, prompt)
            else:
                tok = step("prefill", chunk, n)
            n += chunk.size
        for i in range(max_new_tokens):
            yield tok
            if tok in stop or i == max_new_tokens - 1:
                return
            tok = step("decode", np.array([tok], dtype=np.int32), n)
            n += 1

    def generate(self, ids: Sequence[int], max_new_tokens: int = 32, temperature: float = 0.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int | None = None, stop: Iterable[int] = (),
                 images: Sequence[Any] | None = None) -> list[int]:
        """The generated token ids (not including the prompt); greedy at temperature 0."""
        return list(self.stream(ids, max_new_tokens, temperature, top_k, top_p, seed, stop, images))

    def logits(self, ids: Sequence[int], images: Sequence[Any] | None = None) -> np.ndarray:
        """Full causal forward: float32 logits (T, vocab) for every position of ``ids`` (and
        ``images``, as in `stream`)."""
        arr = self._check_ids(ids)
        out = self._call("forward", {"ids": arr, **self._prompt(arr, images).feeds(0, arr.size)})
        return out.numpy().astype(np.float32, copy=False)


class _Prompt:
    """A prompt's positions (where images move them: Qwen3-VL) and the image features its
    prefill chunks read. ``offset`` is what the tokens after the prompt add to their index."""

    def __init__(self, ids: np.ndarray, positions: np.ndarray, offset: int, feats: dict[str, np.ndarray],
                 image_inputs: list[dict[str, Any]], image_token_id: int | None) -> None:
        self.positions, self.offset = positions, offset
        self._feats, self._inputs = feats, image_inputs
        # what a chunk without image tokens reads as features: one row of zeros per input
        self._none = {i["name"]: np.zeros((1, i["shape"][1]), np.float32) for i in image_inputs}
        self._rows = np.full(ids.size, -1, np.int32)  # each token's row of the features; -1: text
        if feats:
            at = ids == image_token_id
            self._rows[at] = np.arange(int(at.sum()), dtype=np.int32)

    def feeds(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The inputs of the prefill chunk [start, stop) beyond its ids: its positions and the
        features of the image tokens in it (one row of zeros where there are none)."""
        out = {"positions": np.ascontiguousarray(self.positions[..., start:stop])}
        if not self._inputs:
            return out
        rows = self._rows[start:stop]
        at = rows >= 0
        lo, hi = (int(rows[at].min()), int(rows[at].max()) + 1) if at.any() else (0, 0)
        out["image_rows"] = np.where(at, rows - lo, -1).astype(np.int32)
        for i in self._inputs:
            out[i["name"]] = self._feats[i["name"]][lo:hi] if hi > lo else self._none[i["name"]]
        return out


class _Plan:
    """One compiled function's call, worked out at its first call: the VM function, its
    weights in order, and its inputs. Where every array input has a static shape (decode),
    those inputs live in device buffers kept across calls (`_KeptInputs`), as a captured CUDA
    graph requires (`passes.static_decode`); else each call uploads its arrays."""

    def __init__(self, runtime: Runtime, fn: str, feeds: dict[str, Any]) -> None:
        sig = runtime.manifest["functions"][fn]
        self.func = runtime.vm[fn]
        self.names = [i["name"] for i in sig["inputs"]]
        self.params = [runtime.params[name] for name in sig["params"]]
        self._rt, self._device = runtime._rt, runtime.device
        arrays = [i for i in sig["inputs"] if isinstance(feeds[i["name"]], np.ndarray)]
        static = all(isinstance(d, int) for i in arrays for d in i["shape"])
        self.kept = _KeptInputs(runtime._rt, runtime.device, arrays) if static else None

    def __call__(self, feeds: dict[str, Any]):
        if self.kept is not None:
            self.kept.fill(feeds)
            bufs = self.kept.bufs
            args = [bufs[n] if n in bufs else feeds[n] for n in self.names]
        else:
            args = [feeds[n] for n in self.names]
            args = [self._rt.tensor(v, self._device) if isinstance(v, np.ndarray) else v for v in args]
        return self.func(*args, *self.params)


class _KeptInputs:
    """Device buffers for a function's array inputs, kept from call to call: nothing is
    allocated per call, and a buffer is written only when its value changed (the temperature
    stays put through a generation, and so does the sampling key when greedy). Values go in
    through a numpy view of a host buffer (the device buffer itself on the CPU), then one
    copy to the device: TVM's ``copyfrom`` checks and converts its argument, 6-12 us per call
    here against 0.2 us for ``copyto`` (bench/host_overhead.py)."""

    def __init__(self, rt: Any, device: Any, inputs: list[dict[str, Any]]) -> None:
        on_host = device.dlpack_device_type() == rt.cpu().dlpack_device_type()
        self.bufs: dict[str, Any] = {}
        self._host: dict[str, tuple[Any, np.ndarray]] = {}  # name -> (host buffer, its view)
        for i in inputs:
            shape, dtype = tuple(i["shape"]), i["dtype"]
            buf = rt.empty(shape, dtype, device)
            host = buf if on_host else rt.empty(shape, dtype, rt.cpu())
            self.bufs[i["name"]] = buf
            self._host[i["name"]] = (host, np.from_dlpack(host))
        self._last: dict[str, bytes] = {}

    def fill(self, feeds: dict[str, Any]) -> None:
        """Write the values in ``feeds`` that changed since the last call to the device."""
        for name, (host, view) in self._host.items():
            v = feeds[name]
            raw = v.tobytes()
            if self._last.get(name) != raw:
                view[...] = v
                if host is not self.bufs[name]:
                    host.copyto(self.bufs[name])
                self._last[name] = raw


class _HostBuffer:
    """A host buffer that small device tensors (the drawn token, the top-k candidates) are
    copied into and read from: one ``copyto``, not a new numpy array per read (TVM's
    ``numpy()``). The returned view is overwritten by the next read."""

    def __init__(self, rt: Any, shape: tuple[int, ...], dtype: str) -> None:
        self.shape = shape
        self._buf = rt.empty(shape, dtype, rt.cpu())
        self._view = np.from_dlpack(self._buf)

    def read(self, t: Any) -> np.ndarray:
        t.copyto(self._buf)
        return self._view


def load(path: str | Path, weights: str | Path, device: str = "cpu") -> Runtime:
    """Load an artifact saved by `Artifact.save` with the HF checkpoint at ``weights``."""
    return Runtime(path, weights, device)
