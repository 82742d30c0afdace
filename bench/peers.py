"""Measurement workers for compare_cpu.py: one engine per subprocess, so peak RSS is its own.

    python bench/peers.py ENGINE SPEC_JSON

ENGINE is one of ENGINES (or "bandwidth", or "compile": our artifact, for `Ours`); SPEC_JSON
holds ckpt, dtype, gguf, threads, prefill/decode context lists, steps and cache. Prints one
line "RESULT {json}".

Every engine is driven the same way (`measure`): warm-up, then for each context C a
C-token random prompt. Prefill tok/s = C / time to first token (prefill + greedy pick);
decode tok/s at C = 1 / median time of `steps` greedy one-token steps after one warm-up
step, with a KV cache holding C.. C + steps tokens.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


class Ours:
    """inference_pio as deployed: the artifact compiled (or found in the artifact cache) by a
    child process, then loaded here by TVM's runtime alone (TVM_USE_RUNTIME_LIB=1), so this
    process's peak RSS is the runtime's; prefill in PREFILL_CHUNK pieces."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import subprocess

        r = subprocess.run([sys.executable, __file__, "compile", json.dumps(spec)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"compiling failed:\n{r.stderr[-3000:]}")
        compiled = json.loads(r.stdout.split("RESULT ", 1)[1])
        os.environ["TVM_USE_RUNTIME_LIB"] = "1"
        from inference_pio import engine

        self.info = {"cache_hit": compiled["cache_hit"], "compile_s": compiled["compile_s"]}
        self.rt = engine.load(compiled["path"], weights=spec["ckpt"])
        self.steps = spec["steps"]
        self._stream = None

    def prefill(self, ids: list[int]) -> int:
        self._stream = self.rt.stream(ids, max_new_tokens=self.steps + 2)
        return next(self._stream)

    def decode(self, tok: int) -> int:
        return next(self._stream)  # the stream feeds back its own greedy token


def compile_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """Our artifact for ``spec`` through the artifact cache: its path, whether the cache held it
    (--fresh removes it first) and the seconds compile_cached took."""
    os.environ["INFERENCE_PIO_CACHE"] = spec["cache"]
    from inference_pio import frontends
    from inference_pio.engine.cache import artifact_key, cache_dir, compile_cached, quantize_option

    md = frontends.huggingface.model_def(spec["ckpt"])
    opts = {"max_seq_len": spec["max_context"] + spec["steps"] + 2,
            "matmul_precision": spec.get("matmul_precision", "auto"), **quantize_option(spec.get("quantize"))}
    cached = cache_dir() / artifact_key(md, "llvm", opts)
    if spec.get("fresh") and cached.is_dir():
        shutil.rmtree(cached)
    hit = cached.is_dir()
    t = time.perf_counter()
    art = compile_cached(md, "llvm", **opts)
    return {"path": str(art), "cache_hit": hit, "compile_s": time.perf_counter() - t}


class LlamaCpp:
    """llama.cpp through llama-cpp-python's low-level eval (n_batch tokens per call).
    Flash attention on, as llama.cpp's own "auto" default picks on CPU."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import llama_cpp

        t = spec["threads"]
        self.lib = llama_cpp
        if spec.get("no_extra_bufts"):  # see compare_cpu.engine_runs: no AMX / repacked weight buffers
            import llama_cpp.llama as high_level

            defaults = high_level.llama_cpp.llama_model_default_params

            def params():
                p = defaults()
                p.use_extra_bufts = False
                return p

            high_level.llama_cpp.llama_model_default_params = params
        self.llm = llama_cpp.Llama(model_path=spec["gguf"], n_ctx=spec["max_context"] + spec["steps"] + 8,
                                   n_batch=512, n_threads=t, n_threads_batch=t, flash_attn=True, verbose=False)
        self.n_vocab = self.llm.n_vocab()
        self.info = {"llama_cpp_version": llama_cpp.__version__, "gguf": Path(spec["gguf"]).name}

    def _greedy(self) -> int:
        logits = self.lib.llama_get_logits_ith(self.llm.ctx, -1)  # the batch's last token
        return int(np.argmax(np.ctypeslib.as_array(logits, shape=(self.n_vocab,))))

    def prefill(self, ids: list[int]) -> int:
        self.llm.reset()  # n_tokens = 0; eval then drops the stale KV cells
        self.llm.eval(ids)
        return self._greedy()

    def decode(self, tok: int) -> int:
        self.llm.eval([tok])
        return self._greedy()


class Transformers:
    """HF transformers, eager PyTorch (no torch.compile), default (sdpa) attention, DynamicCache."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import torch
        import transformers

        torch.set_num_threads(spec["threads"])
        self.torch = torch
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            spec["ckpt"], dtype=getattr(torch, spec["dtype"])).eval()
        self.past = None
        self.info = {"torch_version": torch.__version__, "transformers_version": transformers.__version__,
                     "attn": self.model.config._attn_implementation}

    def _forward(self, ids: list[int], past: Any) -> int:
        with self.torch.inference_mode():
            out = self.model(self.torch.tensor([ids]), past_key_values=past, use_cache=True, logits_to_keep=1)
        self.past = out.past_key_values
        return int(out.logits[0, -1].argmax())

    def prefill(self, ids: list[int]) -> int:
        return self._forward(ids, None)

    def decode(self, tok: int) -> int:
        return self._forward([tok], self.past)


ENGINES: dict[str, Callable[[dict[str, Any]], Any]] = {"ours": Ours, "llama.cpp": LlamaCpp,
                                                       "transformers": Transformers}


def time_context(session: Any, ids: list[int], steps: int) -> tuple[float, float]:
    """(prefill tok/s, decode tok/s) for one prompt; decode is 0.0 when ``steps`` is 0."""
    t = time.perf_counter()
    tok = session.prefill(ids)
    prefill = len(ids) / (time.perf_counter() - t)
    if not steps:
        return prefill, 0.0
    tok = session.decode(tok)  # warm-up step
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        tok = session.decode(tok)
        times.append(time.perf_counter() - t)
    return prefill, 1.0 / statistics.median(times)


def measure(session: Any, prefill_ctx: list[int], decode_ctx: list[int], steps: int, vocab: int,
            seed: int = 0) -> dict[str, dict[int, Any]]:
    """Prefill and decode tok/s of ``session`` (an ENGINES instance) at each context; a
    context that raises is recorded under "errors" and the others still run."""
    rng = np.random.default_rng(seed)
    contexts = sorted(set(prefill_ctx) | set(decode_ctx))
    out: dict[str, dict[int, Any]] = {"prefill": {}, "decode": {}, "errors": {}}
    time_context(session, rng.integers(0, vocab, contexts[0]).tolist(), 1)  # warm-up
    for c in contexts:
        ids = rng.integers(0, vocab, c).tolist()
        try:
            prefill, decode = time_context(session, ids, steps if c in decode_ctx else 0)
        except Exception as e:  # noqa: BLE001  (reported in the table, not fatal)
            out["errors"][c] = f"{type(e).__name__}: {e}"
            continue
        if c in prefill_ctx:
            out["prefill"][c] = prefill
        if c in decode_ctx:
            out["decode"][c] = decode
    return out


def peak_rss_mib() -> float:
    """This process's high-water resident set size (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def read_bandwidth_gbs(threads: int, gib: float = 1.0, repeats: int = 5) -> float:
    """Memory read bandwidth: ``threads`` numpy max-reductions over disjoint halves of a
    ``gib`` GiB float32 buffer (numpy drops the GIL inside reductions); best of ``repeats``."""
    from concurrent.futures import ThreadPoolExecutor

    buf = np.ones(int(gib * 2**30) // 4, np.float32)
    parts = np.array_split(buf, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(np.maximum.reduce, parts))
            best = min(best, time.perf_counter() - t)
    return buf.nbytes / best / 1e9


def run_worker(engine: str, spec: dict[str, Any]) -> dict[str, Any]:
    if engine == "bandwidth":
        return {"read_gbs": read_bandwidth_gbs(spec["threads"])}
    if engine == "compile":
        return compile_ours(spec)
    t = time.perf_counter()
    session = ENGINES[engine](spec)
    result: dict[str, Any] = {"load_s": time.perf_counter() - t, **session.info}
    result.update(measure(session, spec["prefill"], spec["decode"], spec["steps"], spec["vocab"]))
    result["peak_rss_mib"] = peak_rss_mib()
    return result


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in (*ENGINES, "bandwidth", "compile"):
        sys.exit(__doc__)
    print("RESULT " + json.dumps(run_worker(sys.argv[1], json.loads(sys.argv[2]))), flush=True)
