"""Correctness and speed of our compiled artifacts on a GPU, against transformers on the same device.

Runs on the GPU machine from the repo root, with the bundle made by bench/gpu/stage.py carried:

    python3 bench/gpu/remote.py --bundle gpu_bundle --sections correctness,kernels,bench --presets qwen3-0.6b
    python3 bench/gpu/remote.py --bundle gpu_bundle --sections bench --presets qwen3-4b

and here, as a dry run against CPU artifacts (stage.py --cpu-dry-run):

    python bench/gpu/remote.py --bundle gpu_bundle --device cpu --allow-host-tvm-ffi

Sections
  correctness  each tiny checkpoint (Qwen3; Qwen3-VL with a prompt holding two images; Qwen3-MoE,
               GLM-4.5 MoE, Qwen3-Next): our logits
               vs transformers' on the same device (fp32: rel err
               <= 1e-4; a bf16 checkpoint: <= 1e-4 vs transformers computing in fp32 over the same
               bf16 weights, which is what we do, and <= 5e-2 vs transformers computing in bf16), and
               32 greedy tokens equal (a divergence at a near-tie of the reference is reported as such).
  kernels      every linear of the real presets alone (bench/gpu/kernel_bench.py): the prefill GEMM at
               T = 16..2048 and decode's GEMV, each as our schedule compiles it and a few alternatives
               (tile size, split-K, loads in flight, warps per row) and as TVM dlight's rules do; decode
               attention (keys per block) and prefill attention (CUDA cores, tensor cores); µs per call,
               and each variant's output against ours' on the same inputs.
  bench        per preset (real Qwen3 shapes, or Qwen3-Coder-30B-A3B's cut to 4 layers, random bf16
               weights generated here into /tmp): our
               prefill tok/s (prompt 128, 1024) and decode tok/s (context 128, 2048), transformers
               eager (sdpa) and transformers with a static cache + torch.compile(mode="reduce-overhead"),
               the fraction of peak HBM bandwidth each decode step reaches (weights + KV bytes read per
               token / step time) and the per-step time above that bandwidth floor; plus a sanity check
               of our logits at real shapes against transformers in fp32 over the same weights.

Order, so that a tight deadline cuts the least needed: correctness (every preset's weights are
generated meanwhile); every preset's main bench rows (ours; ours pdl and ours pdl launch,
compiled with cuda_pdl=True and "launch": programmatic dependent launch, with and without the
GEMVs' L2 prefetch; ours no graph; with --sections profile the decode step of ours, ours pdl
and ours no graph profiled kernel by kernel; transformers eager); transformers
compiled (its compile takes minutes); the kernel table; the "ours high" rows (compiled with
matmul_precision="high": x as a bf16 hi + lo pair in the tensor-core products, twice the
products; the "ours" and "ours no graph" rows are at the default, "medium" for bf16 weights:
bf16-rounded activations, as torch's bf16 matmuls, sanity bound 3e-2) and the dlight rows.
"ours" is engine.compile's default, which on cuda replays each decode step as a CUDA graph
(since 2026-12-04; before, that was the "ours graph" row and "ours" had no graph).

Every measurement runs in its own subprocess (ours never imports torch; theirs never imports TVM),
with a timeout and an overall deadline, so one failure or hang is recorded in the table, not fatal.
Results: one table on stdout, $OUT/gpu_results.json (+ .md, logs/) when $OUT is set.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("INFERENCE_PIO_GPU_WORK", "/tmp/inference_pio_gpu"))

# vs transformers in fp32 (what we compute); vs transformers computing in bf16/fp16 (its own
# rounding of every activation dominates: 1.4e-2 to 2.4e-2 for bf16 on the tiny fixtures)
FP32_TOL, BF16_TOL = 1e-4, 5e-2
# more rows of ours: the same model compiled another way (bundle artifact "<device>_<suffix>");
# benchmarked in this order; AFTER_PEERS rows run after every preset's main rows and the kernel table (least needed)
OURS_VARIANTS = {"ours_pdl": "pdl", "ours_pdl_launch": "pdl_launch", "ours_nograph": "nograph",
                 "ours_high": "high", "ours_dlight": "dlight"}
AFTER_PEERS = {"ours_high", "ours_dlight"}
SANITY_TOL = 1e-3  # real shapes, fp32 vs fp32 over the same bf16 weights (long reductions, other order)
# matmul_precision="medium" (bf16-rounded activations in the tensor-core products): ~7e-3 on the
# tiny bf16 fixture on an AMX CPU, where transformers' own bf16 run is 1.6e-2 off
MEDIUM_SANITY_TOL = 3e-2
# the cached path keeps K and V in the weights' dtype (bf16), which transformers' fp32 forward
# does not: 1.0e-3 at the CPU dry run's small preset
DECODE_SANITY_TOL = 1e-2
# peak HBM bandwidth, bytes/s, by device name (first match wins)
PEAK_BW = [("H100 NVL", 3.9e12), ("H100 PCIe", 2.0e12), ("H100", 3.35e12), ("H200", 4.8e12),
           ("A100-SXM4-80GB", 2.039e12), ("A100 80GB PCIe", 1.935e12), ("A100", 1.555e12)]
TIMEOUTS = {"probe": 120, "ours_correct": 240, "hf_correct": 240, "weights": 360, "ours_bench": 300,
            "hf_eager": 300, "hf_compiled": 420, "kernels": 150, "profile": 180}
KERNELS_BUDGET_S = 75  # the kernels section stops starting new kernels after this


# ----------------------------------------------------------------------------------------------
# worker side: each runs in a fresh process, reads a job file, writes a result file (also as it goes)

class Result(dict):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self, f, indent=1, default=str)
        os.replace(tmp, self.path)


def _maps(*needles: str) -> list[str]:
    """Shared libraries this process has loaded whose path contains one of ``needles``."""
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if "/" in ln}
    except OSError:
        return []
    return sorted(p for p in paths if any(n in os.path.basename(p) for n in needles))


def _preload_cudart(path: str | None) -> str:
    import ctypes

    if not path:
        raise RuntimeError("no libcudart.so.13 found (TVM's CUDA runtime needs it); set INFERENCE_PIO_CUDART")
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    return path


def tvm_env(job: dict, torch_ok: bool = False) -> dict:
    """Import the bundle's runtime-only TVM and the repo as `inference_pio` (before anything imports
    tvm). Torch stays out unless ``torch_ok`` (the profile worker, which uses its profiler)."""
    b = Path(job["bundle"])
    os.environ["TVM_USE_RUNTIME_LIB"] = "1"
    os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")
    if not torch_ok:
        sys.modules["torch"] = None  # type: ignore[assignment]  # tvm_ffi imports torch if it can: keep it out
    tag = f"cpython-{sys.version_info[0]}{sys.version_info[1]}-"
    bundled = sorted(p.name for p in (b / "site_ffi" / "tvm_ffi").glob("core.*.so"))
    front = [b / "pkgs", b / "site_tvm"]
    env: dict[str, Any] = {"python": sys.version.split()[0]}
    if any(tag in n for n in bundled):
        front.append(b / "site_ffi")
        env["tvm_ffi_from"] = "bundle"
    elif job.get("allow_host_ffi"):
        env["tvm_ffi_from"] = (f"HOST FALLBACK: the bundle's tvm_ffi is {bundled} and this is Python "
                               f"{env['python']}, so the installed tvm_ffi is used (dry run only)")
    else:
        raise RuntimeError(f"the bundle's tvm_ffi has {bundled}, none for Python {env['python']}; restage for this "
                           "Python, or pass --allow-host-tvm-ffi to use an installed tvm_ffi (dry runs)")
    sys.path[:0] = [str(p) for p in front]
    sys.path.append(str(b / "site_fallback"))  # ml_dtypes, only if this Python has none
    if job["device"] == "cuda":
        env["cudart_preloaded"] = _preload_cudart(job.get("cudart"))
    import tvm
    import tvm_ffi

    import inference_pio
    from inference_pio.engine import runtime as _rt

    env["tvm"] = tvm.__file__
    env["tvm_ffi"] = tvm_ffi.__file__
    env["inference_pio"] = _rt.__file__
    if not Path(tvm.__file__).resolve().is_relative_to(b.resolve()):
        raise RuntimeError(f"imported tvm from {tvm.__file__}, not from the bundle {b}")
    if not Path(_rt.__file__).resolve().is_relative_to(REPO):
        raise RuntimeError(f"imported inference_pio from {_rt.__file__}, not from the repo {REPO}")
    env["runtime_only"] = bool(getattr(tvm.base, "_RUNTIME_ONLY", None))
    env["inference_pio_version"] = inference_pio.__version__
    return env


def tvm_provenance(env: dict) -> dict:
    import ml_dtypes

    env["libs"] = _maps("libtvm", "libcudart", "libcuda.so")
    env["ml_dtypes"] = ml_dtypes.__file__
    env["relax_imported"] = any(m.startswith("tvm.relax") for m in sys.modules)
    env["torch_imported"] = sys.modules.get("torch") is not None
    return env


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def timed_lengths(res: Result, key: str, lengths: list[int], vocab: int, n_new: int, warmup: tuple[int, int],
                  reps: int, run: Callable[[list[int], int], list[float]],
                  extra: Callable[[], dict] | None = None) -> None:
    """For each prompt length P: ``run(ids, n_new)`` returns [t_start, t_tok1, ..., t_tokN]; the first
    token's time is the prefill (prompt + first token), the rest are decode steps (context P..P+N).
    Warm-up runs (at least warmup[0], at most warmup[1]) go on until two in a row agree on the step time
    within 15% (compiles, CUDA-graph recording and background compile workers settle at different times)."""
    import numpy as np

    out = res.setdefault(key, {})
    for P in lengths:
        ids = np.random.default_rng(P).integers(0, vocab, P).tolist()
        try:
            t = time.perf_counter()
            steps: list[float] = []
            while len(steps) < warmup[1]:
                ts = run(ids, n_new)
                steps.append((ts[-1] - ts[1]) / max(len(ts) - 2, 1))
                if len(steps) >= max(warmup[0], 2) and abs(steps[-1] - steps[-2]) <= 0.15 * steps[-1]:
                    break
            warm_s = time.perf_counter() - t
            pre, step = [], []
            if extra is not None:
                extra()  # reset counters
            for _ in range(reps):
                ts = run(ids, n_new)
                pre.append(ts[1] - ts[0])
                step.append((ts[-1] - ts[1]) / max(len(ts) - 2, 1))
            out[str(P)] = {"prefill_s": _median(pre), "prefill_tok_s": P / _median(pre),
                           "step_ms": 1e3 * _median(step), "decode_tok_s": 1 / _median(step),
                           "warmup_s": warm_s, "warmup_runs": len(steps), "reps_prefill_s": pre,
                           "reps_step_ms": [1e3 * s for s in step],
                           **(extra() if extra is not None else {})}
        except Exception as e:  # noqa: BLE001
            out[str(P)] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
        res.save()


def sampled_check(rt: Any, ids: list[int], images: Any = None) -> dict:
    """Top-k + top-p sampling through the artifact's `top_k` function (the best 64 logits,
    sorted on the device) against the host sorting the whole row: the same seeded tokens."""
    kw = dict(max_new_tokens=16, temperature=0.8, top_k=20, top_p=0.9, seed=7, images=images)
    if "top_k" not in rt.manifest["functions"]:
        return {"skipped": "the artifact has no top_k function"}
    got = rt.generate(ids, **kw)
    functions = rt.manifest["functions"]
    rt.manifest = {**rt.manifest, "functions": {k: v for k, v in functions.items() if k != "top_k"}}
    try:
        ref = rt.generate(ids, **kw)
    finally:
        rt.manifest = {**rt.manifest, "functions": functions}
    return {"equal": got == ref, "tokens": got, "host": ref}


def w_ours_correct(job: dict, res: Result) -> None:
    import numpy as np

    res["env"] = tvm_env(job)
    from inference_pio import engine

    b, dev = Path(job["bundle"]), job["device"]
    res["models"] = {}
    for name, m in job["models"].items():
        r = res["models"][name] = {}
        try:
            t = time.perf_counter()
            rt = engine.load(b / m["artifact"], weights=b / m["ckpt"], device=dev)
            r["load_s"] = time.perf_counter() - t
            # Qwen3-VL: the prompt's images as (patches, grid)
            images = [(np.load(i["pixels"]), tuple(i["grid"])) for i in m.get("images", [])] or None
            logits = rt.logits(m["ids_logits"], images=images)
            np.save(m["out"], logits)
            r["logits"] = m["out"]
            r["greedy"] = rt.generate(m["ids_prompt"], max_new_tokens=m["n_greedy"], images=images)
            r["sampled"] = sampled_check(rt, m["ids_prompt"], images)
        except Exception as e:  # noqa: BLE001
            r["error"] = f"{type(e).__name__}: {e}"
            r["traceback"] = traceback.format_exc()[-2000:]
        res.save()
    tvm_provenance(res["env"])


def _torch_setup(job: dict) -> Any:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 references must be fp32
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return torch


def hf_load(path: str, dtype: str, device: str, vision: bool = False) -> Any:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    dt = getattr(torch, dtype)
    major, minor = (int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    kw = {"dtype": dt} if (major, minor) >= (4, 56) else {"torch_dtype": dt}
    auto = AutoModelForImageTextToText if vision else AutoModelForCausalLM
    arch = " ".join(json.loads((Path(path) / "config.json").read_text()).get("architectures", []))
    if "Moe" in arch or "Next" in arch:  # their default grouped_mm needs 16-byte strides (odd tiny widths lack them)
        kw["experts_implementation"] = "eager"
    model = auto.from_pretrained(path, **kw).to(device).eval()
    got = next(model.parameters()).dtype
    if got != dt:
        model = model.to(dt)
    return model


def w_hf_correct(job: dict, res: Result) -> None:
    import numpy as np

    torch = _torch_setup(job)
    import transformers

    res["env"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    dev = job["device"]
    res["models"] = {}
    for name, m in job["models"].items():
        res["models"][name] = {}
        for label, dtype in m["refs"].items():
            r = res["models"][name][label] = {"dtype": dtype}
            try:
                model = hf_load(m["ckpt"], dtype, dev, vision=bool(m.get("images")))
                with torch.no_grad():
                    run = hf_forward(torch, model, m, dev)
                    np.save(m["out"][label], run(m["ids_logits"]).logits[0].float().cpu().numpy())
                    seq, gen, margins = list(m["ids_prompt"]), [], []
                    for _ in range(m["n_greedy"]):  # full recompute each step: the plainest reference
                        last = run(seq).logits[0, -1].float()
                        top = torch.topk(last, 2).values
                        margins.append(float((top[0] - top[1]) / last.abs().max()))
                        tok = int(last.argmax())
                        gen.append(tok)
                        seq.append(tok)
                r.update(logits=m["out"][label], greedy=gen, margins=margins)
                del model
            except Exception as e:  # noqa: BLE001
                r["error"] = f"{type(e).__name__}: {e}"
                r["traceback"] = traceback.format_exc()[-2000:]
            res.save()


def hf_forward(torch: Any, model: Any, m: dict, dev: str) -> Any:
    """ids -> transformers' output; for Qwen3-VL with the prompt's images (patches and grids)
    and, where this transformers asks for it, which tokens are image tokens."""
    import inspect

    import numpy as np

    if not m.get("images"):
        return lambda ids: model(torch.tensor([ids], dtype=torch.long, device=dev))
    pixels = torch.from_numpy(np.concatenate([np.load(i["pixels"]) for i in m["images"]])).to(dev)
    grids = torch.tensor([i["grid"] for i in m["images"]], device=dev)
    typed = "mm_token_type_ids" in inspect.signature(model.model.forward).parameters

    def run(ids: list[int]) -> Any:
        x = torch.tensor([ids], dtype=torch.long, device=dev)
        kw = {"mm_token_type_ids": (x == m["image_token_id"]).int()} if typed else {}
        return model(input_ids=x, attention_mask=torch.ones_like(x), pixel_values=pixels, image_grid_thw=grids, **kw)

    return run


def w_probe(job: dict, res: Result) -> None:
    import platform

    res["python"] = sys.version.split()[0]
    res["host"] = platform.node()
    try:
        import torch
        import transformers

        res.update(torch=torch.__version__, torch_cuda=torch.version.cuda, transformers=transformers.__version__)
    except Exception as e:  # noqa: BLE001
        res["torch_error"] = f"{type(e).__name__}: {e}"
        torch = None
    if job["device"] == "cuda":
        if torch is None or not torch.cuda.is_available():
            raise RuntimeError("device=cuda but torch sees no CUDA device")
        torch.ones(1, device="cuda").add_(1)
        torch.cuda.synchronize()
        p = torch.cuda.get_device_properties(0)
        res.update(name=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                   total_mem_gib=round(p.total_memory / 2**30, 1), sm_count=p.multi_processor_count)
        res["cudart"] = [p for p in _maps("libcudart.so") if ".so.13" in p]
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.memory",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            res["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
        except (OSError, subprocess.SubprocessError) as e:
            res["nvidia_smi"] = f"unavailable: {e}"
    else:
        try:
            with open("/proc/cpuinfo") as f:
                res["name"] = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
        except (OSError, StopIteration):
            res["name"] = platform.processor() or "cpu"


def w_weights(job: dict, res: Result) -> None:
    """Random bf16 weights at the preset's shapes via bench/random_checkpoint.make(), cached in /tmp."""
    import shutil

    sys.path.insert(0, str(REPO / "bench"))
    sys.path.append(str(Path(job["bundle"]) / "site_fallback"))  # ml_dtypes, only if missing here
    import random_checkpoint as rc

    preset, out = job["preset"], Path(job["out"])
    rc.PRESETS.setdefault(preset, job["preset_config"])
    if rc.PRESETS[preset] != job["preset_config"]:
        raise RuntimeError(f"preset {preset} differs between the bundle and bench/random_checkpoint.py")
    done = out / "DONE"
    if done.is_file() and json.loads(done.read_text()) == job["preset_config"]:
        res.update(path=str(out), cached=True, bytes=(out / "model.safetensors").stat().st_size)
        return
    shutil.rmtree(out, ignore_errors=True)
    need = 2 * sum(_prod(s) for s in rc.checkpoint_shapes(job["preset_config"]).values())
    free = shutil.disk_usage(out.parent if out.parent.exists() else "/tmp").free
    if free < need * 1.1:
        raise RuntimeError(f"need {need / 2**30:.1f} GiB for weights, {free / 2**30:.1f} GiB free")
    t = time.perf_counter()
    rc.make(preset, out, "bfloat16", seed=0)
    done.write_text(json.dumps(job["preset_config"]))
    res.update(path=str(out), cached=False, make_s=time.perf_counter() - t,
               bytes=(out / "model.safetensors").stat().st_size)


def _prod(s: Any) -> int:
    n = 1
    for x in s:
        n *= int(x)
    return n


def decode_logits(rt: Any, ids: list[int]) -> Any:
    """The logits of the cached path, teacher-forced: prefill the first half of ``ids``, then
    decode the rest one token at a time, feeding ``ids`` rather than what was drawn. Row i is
    the prediction after ids[: h + i], h = len(ids) // 2: what forward's rows h - 1.. say. This
    runs decode's own kernels (GEMV with the fused norm, split-key attention with the appends) at
    the real shapes, which forward (tensor-core GEMMs, flash attention) does not."""
    import numpy as np

    h = max(1, len(ids) // 2)
    rows = [rt._step("prefill", np.asarray(ids[:h], np.int32), 0, 0.0, 0)["logits"].numpy().reshape(-1)]
    for j in range(h, len(ids)):
        out = rt._step("decode", np.asarray(ids[j: j + 1], np.int32), j, 0.0, 0)
        rows.append(out["logits"].numpy().reshape(-1))
    return np.stack(rows).astype(np.float32)


def w_ours_bench(job: dict, res: Result) -> None:
    import numpy as np

    res["env"] = tvm_env(job)
    from inference_pio import engine

    dev = job["device"]
    t = time.perf_counter()
    rt = engine.load(Path(job["bundle"]) / job["artifact"], weights=job["weights"], device=dev)
    res["load_s"] = time.perf_counter() - t
    res.save()
    try:
        np.save(job["sanity_out"], rt.logits(job["sanity_ids"]))
        res["sanity_logits"] = job["sanity_out"]
        np.save(job["sanity_decode_out"], decode_logits(rt, job["sanity_ids"]))
        res["sanity_decode_logits"] = job["sanity_decode_out"]
    except Exception as e:  # noqa: BLE001
        res["sanity_error"] = f"{type(e).__name__}: {e}"
    res.save()

    # host time inside each VM call (inputs uploaded, kernels launched; the GPU may still be running):
    # close to the step time means the step is bound by the host, not by the GPU
    calls: list[tuple[str, float]] = []
    call = getattr(rt, "_call", None)
    if call is not None:
        def timed_call(fn: str, feeds: dict) -> Any:
            t0 = time.perf_counter()
            r = call(fn, feeds)
            calls.append((fn, time.perf_counter() - t0))
            return r

        rt._call = timed_call

    def launch() -> dict:
        d = [s for fn, s in calls if fn == "decode"]
        calls.clear()
        return {"launch_ms": 1e3 * _median(d)} if d else {}

    def run(ids: list[int], n: int) -> list[float]:
        ts = [time.perf_counter()]
        for _ in rt.stream(ids, max_new_tokens=n):
            ts.append(time.perf_counter())
        return ts

    timed_lengths(res, "lengths", job["lengths"], rt.vocab_size, job["n_new"], (1, 3), job["reps"], run,
                  launch if call is not None else None)
    tvm_provenance(res["env"])


def w_profile(job: dict, res: Result) -> None:
    """Where a decode step's time goes: every kernel's device time (CUPTI, through torch's profiler,
    the only use of torch on our side, in this worker alone) over ``steps`` decode steps after a
    prompt of ``context`` tokens; busy = the kernels' time, span = first start to last end."""
    if job["device"] != "cuda":
        res["error"] = "skipped: the profile reads the GPU's kernel timeline (CUPTI)"
        return
    import numpy as np
    from torch.profiler import ProfilerActivity, profile  # (torch before TVM: tvm_env lets it in)

    res["env"] = tvm_env(job, torch_ok=True)
    from inference_pio import engine

    rt = engine.load(Path(job["bundle"]) / job["artifact"], weights=job["weights"], device=job["device"])
    ids = np.random.default_rng(job["context"]).integers(0, rt.vocab_size, job["context"]).tolist()
    n = job["steps"]
    for _ in range(2):  # warm-up
        list(rt.stream(ids, max_new_tokens=n + 1))
    gen = rt.stream(ids, max_new_tokens=n + 1)
    next(gen)  # the prompt and the first token, outside the profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        steps = sum(1 for _ in gen)
        wall = time.perf_counter() - t
    kern = [e for e in prof.events() if str(getattr(e, "device_type", "")).endswith("CUDA")]
    if not kern:
        res["error"] = "the profiler saw no device activity"
        return
    by: dict[str, list[float]] = {}
    for e in kern:
        by.setdefault(e.name, []).append(e.time_range.end - e.time_range.start)
    busy = sum(sum(v) for v in by.values())
    span = max(e.time_range.end for e in kern) - min(e.time_range.start for e in kern)
    res["profile"] = {
        "steps": steps, "context": job["context"], "wall_ms": 1e3 * wall / steps, "span_ms": span / 1e3 / steps,
        "busy_ms": busy / 1e3 / steps, "launches": len(kern) / steps,
        "kernels": sorted(([name[:90], len(v) / steps, sum(v) / steps, sum(v) / len(v)] for name, v in by.items()),
                          key=lambda r: -r[2])}


def w_hf_bench(job: dict, res: Result) -> None:
    import numpy as np

    torch = _torch_setup(job)
    import transformers
    from transformers.generation.streamers import BaseStreamer

    dev, mode = job["device"], job["mode"]
    res["env"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    t = time.perf_counter()
    model = hf_load(job["weights"], "bfloat16", dev)
    res["load_s"] = time.perf_counter() - t
    res["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    warmup = (1, 3)
    if mode == "compiled":
        # transformers' own recipe: with a static cache, generate compiles the decode step
        # (torch.compile, mode="reduce-overhead": CUDA graphs) and runs the prompt eagerly.
        # (Compiling model.forward whole, prompt included, took over 140 s for Qwen3-0.6B on the
        # H200 machine's host, 2026-12-04, before the first timed run.)
        model.generation_config.cache_implementation = "static"
        res["recipe"] = ('generation_config.cache_implementation="static"; generate compiles the decode step '
                         '(its CompileConfig: inductor, mode="reduce-overhead"); the prompt runs eagerly')
        warmup = (3, 8)  # compile, then cudagraph record, then replay; more if still unsettled
    res.save()
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    class Stamps(BaseStreamer):
        def __init__(self) -> None:
            self.t: list[float] = []

        def put(self, value: Any) -> None:  # called with the prompt, then after every new token
            sync()
            self.t.append(time.perf_counter())

        def end(self) -> None:
            pass

    def run(ids: list[int], n: int) -> list[float]:
        x = torch.tensor([ids], dtype=torch.long, device=dev)
        s = Stamps()
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, streamer=s, pad_token_id=0)
        if len(s.t) != n + 1:
            raise RuntimeError(f"expected {n + 1} streamer calls, got {len(s.t)}")
        return [t0] + s.t[1:]

    # compiled: the longest prompt first, so that generate keeps its static cache (big enough for the
    # shorter ones) and the decode step's graph keeps its shapes: one compile of it, not one per length
    lengths = sorted(job["lengths"], reverse=mode == "compiled")
    timed_lengths(res, "lengths", lengths, model.config.vocab_size, job["n_new"], warmup, job["reps"], run)
    if mode == "compiled":
        import torch._dynamo.utils as du

        res["dynamo_compiles"] = {k: v for k, v in du.counters["stats"].items()}
        res["decode_compiled"] = hasattr(model, "_compiled_call")  # what generate's auto-compile leaves
    if job.get("sanity_out"):  # transformers in fp32 over the same bf16 weights: what we should reproduce
        try:
            model = model.float()
            with torch.no_grad():
                x = torch.tensor([job["sanity_ids"]], dtype=torch.long, device=dev)
                np.save(job["sanity_out"], model(x).logits[0].float().cpu().numpy())
            res["sanity_logits"] = job["sanity_out"]
        except Exception as e:  # noqa: BLE001
            res["sanity_error"] = f"{type(e).__name__}: {e}"
        res.save()


def w_kernels(job: dict, res: Result) -> None:
    res["env"] = tvm_env(job)
    import kernel_bench

    def save(partial: dict) -> None:
        res.update(partial)
        res.save()

    save(kernel_bench.measure(Path(job["bundle"]) / job["path"], job["device"], job["budget_s"], save,
                              first=tuple(job.get("presets", ()))))
    tvm_provenance(res["env"])


WORKERS = {"profile": w_profile, "probe": w_probe, "ours_correct": w_ours_correct, "hf_correct": w_hf_correct, "weights": w_weights,
           "ours_bench": w_ours_bench, "hf_bench": w_hf_bench, "kernels": w_kernels}


def worker_main(kind: str, jobfile: str) -> None:
    job = json.loads(Path(jobfile).read_text())
    res = Result(job["result"])
    try:
        WORKERS[kind](job, res)
    except BaseException as e:  # noqa: BLE001
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()[-3000:]
    res.save()


# ----------------------------------------------------------------------------------------------
# orchestrator: stdlib + numpy only

class Runner:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.t0 = time.monotonic()
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.work = WORK / f"run-{stamp}"
        self.work.mkdir(parents=True, exist_ok=True)
        out = os.environ.get("OUT")
        self.out = Path(out) if out else self.work
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        self.seq = 0
        self.cudart: str | None = None
        self.weights: dict[str, dict] = {}  # preset -> the started weights worker

    def remaining(self) -> float:
        return self.a.deadline_s - (time.monotonic() - self.t0)

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        if self.cudart:
            d = str(Path(self.cudart).parent)
            env["LD_LIBRARY_PATH"] = d + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
        return env

    def worker(self, kind: str, job: dict, label: str, timeout_key: str | None = None) -> dict:
        """Run one worker to its end (or its timeout) and return its result."""
        return self.join(self.start(kind, job, label, timeout_key))

    def start(self, kind: str, job: dict, label: str, timeout_key: str | None = None) -> dict:
        """Start one worker in the background; `join` waits for it. Its time limit counts from now."""
        self.seq += 1
        tag = f"{self.seq:02d}_{label}"
        budget = min(TIMEOUTS[timeout_key or kind], self.remaining() - 10)
        if budget < 20:
            return {"label": label, "skipped": f"skipped: out of time (deadline {self.a.deadline_s:.0f}s)"}
        job = {**job, "bundle": str(self.a.bundle), "device": self.a.device, "cudart": self.cudart,
               "allow_host_ffi": self.a.allow_host_tvm_ffi, "result": str(self.work / f"{tag}.result.json")}
        jobfile = self.work / f"{tag}.job.json"
        jobfile.write_text(json.dumps(job, indent=1))
        log = self.out / "logs" / f"{tag}.log"
        with open(log, "w") as lf:
            p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--job",
                                  str(jobfile)], stdout=lf, stderr=subprocess.STDOUT, env=self.env(),
                                 cwd=str(REPO), start_new_session=True)
        return {"label": label, "proc": p, "t": time.monotonic(), "budget": budget, "log": log,
                "result": job["result"]}

    def join(self, h: dict) -> dict:
        label = h["label"]
        if "skipped" in h:
            print(f"  {label}: skipped (deadline)", flush=True)
            return {"error": h["skipped"]}
        p, t, log = h["proc"], h["t"], h["log"]
        try:
            rc = p.wait(timeout=max(1.0, h["budget"] - (time.monotonic() - t)))
            why = None if rc == 0 else f"worker exited with status {rc}"
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # the worker and whatever it started (compile workers)
            p.wait()
            why = f"timed out after {h['budget']:.0f}s"
        took = time.monotonic() - t
        try:
            res = json.loads(Path(h["result"]).read_text())
        except (OSError, json.JSONDecodeError):
            res = {}
        if why and "error" not in res:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            res["error"] = f"{why}; log tail: {tail}"
        res["wall_s"] = round(took, 1)
        status = "ok" if "error" not in res else "ERROR " + _short(res["error"], 160)
        print(f"  {label}: {took:.0f}s {status}", flush=True)
        return res


def _short(s: Any, n: int = 70) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 3] + "..."


def find_cudart() -> str | None:
    """libcudart.so.13 without importing torch: $INFERENCE_PIO_CUDART, pip's nvidia packages, the toolkit."""
    if os.environ.get("INFERENCE_PIO_CUDART"):
        return os.environ["INFERENCE_PIO_CUDART"]
    import glob
    import site

    roots = [p for p in sys.path if p.endswith("-packages")]
    try:
        roots += site.getsitepackages() + [site.getusersitepackages()]
    except AttributeError:
        pass
    pats = [f"{r}/nvidia/**/libcudart.so.13*" for r in dict.fromkeys(roots)]
    pats += ["/usr/local/cuda*/lib64/libcudart.so.13*", "/usr/local/cuda*/targets/*/lib/libcudart.so.13*",
             "/usr/lib/x86_64-linux-gnu/libcudart.so.13*", "/usr/lib64/libcudart.so.13*"]
    for pat in pats:
        hits = sorted(glob.glob(pat, recursive=True))
        if hits:
            return hits[0]
    return None


def rel_err(ours: Any, ref: Any) -> float:
    import numpy as np

    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if ours.shape != ref.shape:
        raise ValueError(f"shapes differ: {ours.shape} vs {ref.shape}")
    if not np.all(np.isfinite(ours)):
        return float("inf")
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def greedy_check(ours: list[int], ref: dict, tie_tol: float) -> dict:
    ref_gen, margins = ref["greedy"], ref["margins"]
    k = next((i for i, (x, y) in enumerate(zip(ours, ref_gen)) if x != y), min(len(ours), len(ref_gen)))
    equal = k == len(ref_gen) == len(ours)
    d = {"match": k, "of": len(ref_gen), "equal": equal}
    if not equal and k < len(margins):
        d["ref_margin_at_divergence"] = margins[k]
        d["near_tie"] = margins[k] < tie_tol
    return d


def section_correctness(r: Runner, info: dict, results: dict) -> None:
    b = r.a.bundle
    tiny = {n: m for n, m in info["tiny"].items() if r.a.device in m["artifacts"]}
    if not tiny:
        results["correctness"] = {"error": f"the bundle has no {r.a.device} artifacts for the tiny models"}
        return
    cw = r.work / "correctness"
    cw.mkdir(exist_ok=True)
    ours_job, hf_job = {"models": {}}, {"models": {}}
    for name, m in tiny.items():
        v = m["vocab_size"]
        ids_logits = [(7 * i + 3) % v for i in range(19)]
        ids_logits[0], ids_logits[-1] = v - 1, 0  # both ends of the vocabulary
        ids_prompt = [3, 17, 5, 42 % v, 8, 1, 29]
        common = {"ids_logits": ids_logits, "ids_prompt": ids_prompt, "n_greedy": r.a.greedy_tokens}
        if "vl" in m:  # Qwen3-VL: its prompt with two images, for both
            vl = m["vl"]
            common.update(ids_logits=vl["ids"], ids_prompt=vl["ids"], image_token_id=vl["image_token_id"],
                          images=[{"pixels": str(b / i["pixels"]), "grid": i["grid"]} for i in vl["images"]])
        ours_job["models"][name] = {**common, "artifact": m["artifacts"][r.a.device]["path"], "ckpt": m["ckpt"],
                                    "out": str(cw / f"ours_{name}.npy")}
        refs = {"hf": m["dtype"]} if m["dtype"] == "float32" else {"hf_fp32": "float32", "hf": m["dtype"]}
        hf_job["models"][name] = {**common, "ckpt": str(b / m["ckpt"]), "refs": refs,
                                  "out": {lab: str(cw / f"{lab}_{name}.npy") for lab in refs}}
    # both at once: separate processes, the device shared (the tiny models leave it mostly idle)
    ours_h = r.start("ours_correct", ours_job, "correctness_ours")
    hf_h = r.start("hf_correct", hf_job, "correctness_hf")
    ours, hf = r.join(ours_h), r.join(hf_h)
    import numpy as np

    rows: dict[str, Any] = {"env": {"ours": ours.get("env"), "hf": hf.get("env")}}
    for name, m in tiny.items():
        row: dict[str, Any] = {"dtype": m["dtype"]}
        o = ours.get("models", {}).get(name, {"error": ours.get("error", "no result")})
        h = hf.get("models", {}).get(name, {})
        try:
            if "error" in o:
                raise RuntimeError(f"ours: {o['error']}")
            # the strict reference: same weights computed in fp32 (for bf16: what we compute)
            strict = "hf" if m["dtype"] == "float32" else "hf_fp32"
            # (transformers' own 16-bit Qwen3-Next strays from its fp32 by ~0.5 at these shapes: its
            # recurrences run in bf16, so that comparison is shown, not required)
            loose = None if m.get("family") == "qwen3_next" else BF16_TOL
            checks = [(strict, FP32_TOL, True)] + ([("hf", loose, False)] if strict != "hf" else [])
            ok = True
            for lab, tol, strict_greedy in checks:
                ref = h.get(lab, {"error": hf.get("error", "no result")})
                if "error" in ref:
                    raise RuntimeError(f"{lab}: {ref['error']}")
                err = rel_err(np.load(o["logits"]), np.load(ref["logits"]))
                g = greedy_check(o["greedy"], ref, tol if tol is not None else BF16_TOL)
                row[lab] = {"rel_err": err, "tol": tol, "greedy": g}
                if strict_greedy:
                    ok &= err <= tol and (g["equal"] or g.get("near_tie", False))
                elif tol is not None:  # bf16 compute: logits within tolerance; greedy reported (it drifts after a near-tie)
                    ok &= err <= tol
            row["sampled"] = o.get("sampled", {"skipped": "not run"})
            ok &= row["sampled"].get("equal", True)  # (device top-k candidates = host full sort)
            row["ok"] = bool(ok)
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {e}"
            row["ok"] = False
        rows[name] = row
    results["correctness"] = rows


def sanity(ours: dict, hf: dict, tokens: int, tol: float = SANITY_TOL) -> dict:
    """Our forward logits and cached-path logits (`decode_logits`) against transformers' fp32
    forward over the same weights: relative errors, within ``tol`` (and DECODE_SANITY_TOL)."""
    import numpy as np

    if not ours.get("sanity_logits") or not hf.get("sanity_logits"):
        return {"error": ours.get("sanity_error") or hf.get("sanity_error") or "no logits from one side"}
    decode_tol = max(tol, DECODE_SANITY_TOL)
    try:
        ref = np.load(hf["sanity_logits"])
        fwd = np.load(ours["sanity_logits"])
        out = {"rel_err": rel_err(fwd, ref), "tol": tol, "tokens": tokens,
               "argmax_agree": float((fwd.argmax(-1) == ref.argmax(-1)).mean())}
        if ours.get("sanity_decode_logits"):
            dec = np.load(ours["sanity_decode_logits"])
            out["decode_rel_err"] = rel_err(dec, ref[len(ref) - len(dec):])
            out["decode_tol"] = decode_tol
        out["ok"] = out["rel_err"] <= tol and out.get("decode_rel_err", 0.0) <= decode_tol
        return out
    except Exception as e:  # noqa: BLE001
        return {"error": f"{type(e).__name__}: {e}"}


def section_bench(r: Runner, info: dict, results: dict, preset: str, phase: str = "main") -> None:
    """One preset's rows, in three phases so that a tight deadline cuts the least needed: "main"
    (ours, its variants, transformers eager), "compiled" (transformers with a static cache and
    torch.compile, whose compile takes minutes) and "late" (AFTER_PEERS: the dlight baseline,
    which the kernel table also covers kernel by kernel); the later ones reuse the main
    phase's weights and jobs."""
    import numpy as np

    a = r.a
    res = results.setdefault("bench", {}).setdefault(preset, {})
    p = info["presets"].get(preset)
    if phase != "main":
        if "job_common" not in res:
            return
        common, bw = res["job_common"], Path(res["job_dir"])
        if phase == "late":
            _bench_variants(r, res, p, preset, common, bw, late=True)
        elif "compiled" in a.hf_modes:
            res["hf_compiled"] = r.worker("hf_bench", {**common, "mode": "compiled", "sanity_out": None},
                                          f"{preset}_hf_compiled", timeout_key="hf_compiled")
        _derive(res, p, a, results)
        return
    if p is None or a.device not in p["artifacts"]:
        res["error"] = f"the bundle has no {a.device} artifact for {preset}"
        return
    art = p["artifacts"][a.device]
    lengths = sorted(set(a.prefill) | set(a.contexts))
    if max(lengths) + a.decode_tokens + 1 > art["max_seq_len"]:
        res["error"] = f"lengths need {max(lengths) + a.decode_tokens + 1} > max_seq_len {art['max_seq_len']}"
        return
    bw = r.work / "bench" / preset
    bw.mkdir(parents=True, exist_ok=True)
    w = r.join(r.weights.pop(preset, None) or start_weights(r, info, preset))
    res["weights"] = w
    if "error" in w:
        return
    vocab = p["preset"]["vocab_size"]
    sanity_ids = np.random.default_rng(1).integers(0, vocab, a.sanity_tokens).tolist()
    common = {"weights": w["path"], "lengths": lengths, "n_new": a.decode_tokens, "reps": a.reps,
              "sanity_ids": sanity_ids}
    res["job_common"], res["job_dir"] = common, str(bw)
    res["ours"] = r.worker("ours_bench", {**common, "artifact": art["path"], "sanity_out": str(bw / "ours.npy"),
                                          "sanity_decode_out": str(bw / "ours_decode.npy")}, f"{preset}_ours")
    _bench_variants(r, res, p, preset, common, bw, late=False)
    if "profile" in a.sections:
        for eng in ("ours", "ours_pdl", "ours_nograph"):
            v = p["artifacts"].get(_artifact_key(a.device, eng))
            if v is not None:
                res[f"profile_{eng}"] = r.worker("profile", {"artifact": v["path"], "weights": w["path"],
                                                             "context": a.profile_context, "steps": 16},
                                                 f"{preset}_profile_{eng}")
    for mode in [m for m in a.hf_modes if m != "compiled"]:
        job = {**common, "mode": mode, "sanity_out": str(bw / "hf_fp32.npy") if mode == "eager" else None}
        res[f"hf_{mode}"] = r.worker("hf_bench", job, f"{preset}_hf_{mode}", timeout_key=f"hf_{mode}")
    _derive(res, p, a, results)


def start_weights(r: Runner, info: dict, preset: str) -> dict:
    """Generate a preset's random weights in the background (on the host's CPUs)."""
    return r.start("weights", {"preset": preset, "preset_config": info["presets"][preset]["preset"],
                               "out": str(WORK / "weights" / f"{preset}-bfloat16")}, f"{preset}_weights")


def _artifact_key(device: str, eng: str) -> str:
    """The bundle artifact a row of ours runs: "<device>" for "ours", "<device>_<suffix>" for a variant."""
    return device if eng == "ours" else f"{device}_{OURS_VARIANTS[eng]}"


def _bench_variants(r: Runner, res: dict, p: dict, preset: str, common: dict, bw: Path, late: bool) -> None:
    """The rows of ours compiled another way (OURS_VARIANTS), those in AFTER_PEERS or the others."""
    for eng in OURS_VARIANTS:
        v = p["artifacts"].get(_artifact_key(r.a.device, eng))
        if v is not None and (eng in AFTER_PEERS) == late:
            res[eng] = r.worker("ours_bench", {**common, "artifact": v["path"], "sanity_out": str(bw / f"{eng}.npy"),
                                               "sanity_decode_out": str(bw / f"{eng}_decode.npy")},
                                f"{preset}_{eng}")


def _derive(res: dict, p: dict, a: argparse.Namespace, results: dict) -> None:
    """Sanity and bandwidth figures of every row measured so far."""
    # sanity: our logits at real shapes vs transformers in fp32 over the same weights, for forward
    # and for the cached path (prefill + teacher-forced decode steps), per variant of ours
    for eng in ["ours", *OURS_VARIANTS]:
        if eng in res:
            art = p["artifacts"].get(_artifact_key(a.device, eng), {})
            tol = MEDIUM_SANITY_TOL if art.get("matmul_precision") == "medium" else SANITY_TOL
            res[eng]["sanity"] = sanity(res[eng], res.get("hf_eager", {}), a.sanity_tokens, tol)
    res["sanity"] = res["ours"]["sanity"]
    # bandwidth: bytes a decode step must read (weights + KV rows so far) over its time
    cfg = p["preset"]
    sys.path.insert(0, str(REPO / "bench"))
    import random_checkpoint as rc

    wbytes = 2 * rc.decode_elems(cfg)  # (a MoE layer: the top_k experts a token reads)
    kv_per_tok = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * cfg["head_dim"] * 2
    peak = results["device"].get("peak_bw")
    res["decode_bytes"] = {"weights": wbytes, "kv_per_context_token": kv_per_tok}
    for eng in ["ours", *OURS_VARIANTS] + [f"hf_{m}" for m in a.hf_modes]:
        for P, d in res.get(eng, {}).get("lengths", {}).items():
            if "step_ms" not in d:
                continue
            ctx = int(P) + a.decode_tokens / 2  # mean context over the decoded tokens
            byt = wbytes + kv_per_tok * ctx
            d["gb_per_s"] = byt / (d["step_ms"] * 1e-3) / 1e9
            if peak:
                d["floor_ms"] = 1e3 * byt / peak
                d["hbm_frac"] = d["floor_ms"] / d["step_ms"]
                d["overhead_ms"] = d["step_ms"] - d["floor_ms"]


def peak_bw(name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    for key, bw in PEAK_BW:
        if key.lower() in name.lower():
            return bw
    return None


def _fmt(x: Any, spec: str = ".0f") -> str:
    return "-" if x is None else format(x, spec)


def tables(results: dict, a: argparse.Namespace) -> str:
    lines = []
    dev = results.get("device", {})
    peak = dev.get("peak_bw")
    lines.append(f"device: {dev.get('name', '?')} ({a.device}); peak HBM {_fmt(peak and peak / 1e12, '.2f')} TB/s; "
                 f"torch {dev.get('torch', '?')}, transformers {dev.get('transformers', '?')}; {results['date']}; "
                 f"bundle {results['bundle'].get('created')} at {(results['bundle'].get('git') or {}).get('head')}")
    c = results.get("correctness")
    if c:
        lines += ["", "| correctness | dtype | logits rel err (tol) | greedy (vs same ref) | top-k sampled: device "
                  "candidates vs host sort | ok |", "|---|---|---|---|---|---|"]
        if "error" in c and not any(isinstance(v, dict) and "dtype" in v for v in c.values()):
            lines.append(f"| all | | ERROR {_short(c['error'], 100)} | | | no |")
        for name, row in c.items():
            if not isinstance(row, dict) or "dtype" not in row:
                continue
            if "error" in row:
                lines.append(f"| {name} | {row['dtype']} | ERROR {_short(row['error'], 100)} | | | no |")
                continue
            errs, gs = [], []
            for lab in ("hf_fp32", "hf"):
                if lab in row:
                    q = row[lab]
                    who = f"hf-fp32 over {row['dtype']} weights" if lab == "hf_fp32" else f"hf-{row['dtype']}"
                    errs.append(f"{q['rel_err']:.1e} vs {who} ({q['tol']:g})" if q["tol"] is not None
                                else f"{q['rel_err']:.1e} vs {who} (shown only)")
                    g = q["greedy"]
                    gs.append(f"{g['match']}/{g['of']} vs {who}" + (" (near-tie)" if g.get("near_tie") else ""))
            sm = row.get("sampled", {})
            sampled = sm["skipped"] if "skipped" in sm else ("same 16 tokens" if sm.get("equal") else
                                                             f"DIFFER {sm.get('tokens')} vs {sm.get('host')}")
            lines.append(f"| {name} | {row['dtype']} | {'; '.join(errs)} | {'; '.join(gs)} | {sampled} | "
                         f"{'yes' if row['ok'] else 'NO'} |")
    bench = results.get("bench", {})
    if bench:
        P, C = a.prefill, a.contexts
        head = (["preset", "engine", "load s"] + [f"prefill tok/s P={p}" for p in P]
                + [f"decode tok/s C={c}" for c in C] + [f"step ms C={c}" for c in C]
                + [f"HBM % C={c}" for c in C] + [f"over floor ms C={c}" for c in C]
                + [f"launch ms C={c}" for c in C] + ["notes"])
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for preset, res in bench.items():
            if "error" in res and not any(k in res for k in ("ours", "weights")):
                lines.append(f"| {preset} | all | | {_short(res['error'], 100)} |")
                continue
            for eng in ["ours", *OURS_VARIANTS] + [f"hf_{m}" for m in a.hf_modes]:
                if eng in OURS_VARIANTS and eng not in res:
                    continue
                e = res.get(eng, {})
                L = e.get("lengths", {})
                notes = []
                if "error" in e:
                    notes.append("ERROR " + _short(e["error"], 90))
                if eng == "ours" or eng in OURS_VARIANTS:
                    s = e.get("sanity", {})
                    dec = f", decode {s['decode_rel_err']:.1e}" if "decode_rel_err" in s else ""
                    notes.append(f"sanity rel err {s['rel_err']:.1e}{dec} ({'ok' if s['ok'] else 'FAIL'})"
                                 if "rel_err" in s else f"sanity: {_short(s.get('error'), 60)}")
                if eng == "ours":
                    w = res.get("weights", {})
                    if "error" in w:
                        notes.append("weights ERROR " + _short(w["error"], 60))
                if eng == "hf_compiled" and L:
                    notes.append("warm-up incl. compile, s (runs): " + ", ".join(
                        f"P={k}: {v['warmup_s']:.0f} ({v['warmup_runs']})" for k, v in L.items() if "warmup_s" in v))
                    if e.get("decode_compiled") is False:
                        notes.append("NOT COMPILED: generate did not compile its decode step")
                for k, v in L.items():
                    if "error" in v:
                        notes.append(f"P={k} ERROR {_short(v['error'], 60)}")

                def g(n: int, key: str, spec: str = ".0f", scale: float = 1.0) -> str:
                    v = L.get(str(n), {}).get(key)
                    return "-" if v is None else format(v * scale, spec)

                cells = ([preset, eng.replace("_", " "), _fmt(e.get("load_s"), ".1f")]
                         + [g(p, "prefill_tok_s") for p in P] + [g(c, "decode_tok_s", ".1f") for c in C]
                         + [g(c, "step_ms", ".2f") for c in C] + [g(c, "hbm_frac", ".0f", 100) for c in C]
                         + [g(c, "overhead_ms", ".2f") for c in C] + [g(c, "launch_ms", ".2f") for c in C]
                         + ["; ".join(notes)])
                lines.append("| " + " | ".join(cells) + " |")
        lines += target_lines(bench, C)
        lines += profile_lines(bench)
        lines += ["", f"prefill = time to the first token (prompt P + 1 sampled); decode = mean step over "
                  f"{a.decode_tokens} tokens after a P=C prompt (median of {a.reps}); HBM % = (weight bytes + KV bytes "
                  "at the mean context) / step time / peak; over floor = step - bytes/peak; launch = host time "
                  "inside our VM call (ids/positions upload + kernel launches)."]
    return "\n".join(lines)


# issue #6's decode targets per preset: (what, at least); and every such row ahead of
# transformers with a static cache and torch.compile in the same run
TARGETS = {"qwen3-4b": ("hbm_frac", 0.80), "qwen3-0.6b": ("decode_tok_s", 1000.0)}


def target_lines(bench: dict, contexts: list[int]) -> list[str]:
    """Each of our rows that passed its sanity check, against the issue's targets for its preset
    (`TARGETS`): the value at every context, and its ratio to transformers compiled."""
    lines = []
    for preset, res in bench.items():
        if preset not in TARGETS or not isinstance(res, dict):
            continue
        key, need = TARGETS[preset]
        peer = res.get("hf_compiled", {}).get("lengths", {})
        for eng in ["ours", *OURS_VARIANTS]:
            e = res.get(eng)
            if not isinstance(e, dict) or not e.get("sanity", {}).get("ok"):
                continue
            got = [e.get("lengths", {}).get(str(c), {}) for c in contexts]
            vals = [g.get(key) for g in got]
            if any(v is None for v in vals):
                continue
            ratios = [g["decode_tok_s"] / p["decode_tok_s"] if p.get("decode_tok_s") else None
                      for g, p in ((g, peer.get(str(c), {})) for g, c in zip(got, contexts))]
            shown = " / ".join(f"{100 * v:.0f}%" if key == "hbm_frac" else f"{v:,.0f} tok/s" for v in vals)
            goal = f"{100 * need:.0f}% of HBM" if key == "hbm_frac" else f"{need:,.0f} tok/s"
            ahead = ("-" if None in ratios else " / ".join(f"{r:.1f}x" for r in ratios)
                     + (" (ahead)" if min(ratios) > 1 else " (NOT ahead)"))
            lines.append(f"- {preset} {eng.replace('_', ' ')}: {shown} at C = "
                         f"{' / '.join(map(str, contexts))}; target {goal}: {'MET' if min(vals) >= need else 'not met'}; "
                         f"vs transformers compiled {ahead}")
    return ["", "issue #6's decode targets (rows that passed their sanity check):", *lines] if lines else []


def profile_lines(bench: dict, top: int = 14) -> list[str]:
    """The decode-step profiles (`w_profile`): per preset and engine, the step's wall time, the
    kernels' busy time and the launches, then its costliest kernels."""
    lines = []
    for preset, res in bench.items():
        for key in [k for k in res if k.startswith("profile_")]:
            e = res[key]
            pr = e.get("profile")
            if pr is None:
                lines += ["", f"{preset} {key[8:].replace('_', ' ')} profile: ERROR {_short(e.get('error'), 160)}"]
                continue
            lines += ["", f"{preset} {key[8:].replace('_', ' ')}, decode step at context {pr['context']} "
                      f"(profiled, {pr['steps']} steps): wall {pr['wall_ms']:.3f} ms, kernels busy {pr['busy_ms']:.3f} ms, "
                      f"first start to last end {pr['span_ms']:.3f} ms, {pr['launches']:.0f} device activities",
                      "```", f"{'us/step':>8} {'n/step':>6} {'us each':>8}  kernel"]
            lines += [f"{us:8.1f} {cnt:6.1f} {each:8.2f}  {name}" for name, cnt, us, each in pr["kernels"][:top]]
            lines.append("```")
    return lines


def orchestrate(a: argparse.Namespace) -> int:
    a.bundle = a.bundle.resolve()
    try:
        info = json.loads((a.bundle / "bundle.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"{a.bundle} is not a bundle ({e}); make one with bench/gpu/stage.py and carry it")
    if not info.get("complete"):
        sys.exit(f"{a.bundle} is incomplete (bench/gpu/stage.py did not finish); restage it")
    r = Runner(a)
    results: dict[str, Any] = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items() if k not in ("worker", "job")},
        "bundle": {k: info.get(k) for k in ("created", "arch", "tvm", "tvm_ffi", "python", "git", "source_hash")},
        "work": str(r.work)}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from stage import source_hash

    results["bundle"]["stale"] = info.get("source_hash") != source_hash()

    def save() -> None:
        (r.out / "gpu_results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")

    print(f"remote.py: device={a.device} bundle={a.bundle} work={r.work} out={r.out}", flush=True)
    if a.device == "cuda":
        r.cudart = find_cudart()
    probe = r.worker("probe", {}, "probe")
    if a.device == "cuda" and probe.get("cudart"):
        r.cudart = probe["cudart"][0]  # exactly the one torch runs with
    probe["cudart_used"] = r.cudart
    probe["peak_bw"] = peak_bw(probe.get("name", ""), a.peak_tbs) if a.device == "cuda" else None
    results["device"] = probe
    save()
    if a.device == "cuda" and not r.cudart:
        print("  WARNING: no libcudart.so.13 found; our CUDA runs will fail (set INFERENCE_PIO_CUDART)")
    presets = a.presets or [k for k, v in info["presets"].items() if a.device in v["artifacts"]]
    if "bench" in a.sections:  # weights while the correctness section runs: the host's CPUs are idle then
        r.weights = {p: start_weights(r, info, p) for p in presets if p in info["presets"]}
    for p in a.prefetch_weights:  # for a later call on this machine; runs on after this one returns
        if p not in r.weights and p in info["presets"]:
            start_weights(r, info, p)
    if "correctness" in a.sections:
        try:
            section_correctness(r, info, results)
        except Exception as e:  # noqa: BLE001
            results["correctness"] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        save()
    # every preset's main rows (ours, transformers eager), then transformers compiled (minutes of
    # compiling each), then the kernel table, then the dlight rows: what a deadline cuts comes last
    for phase in ("main", "compiled", "late"):
        if phase == "late" and "kernels" in a.sections:
            kern = info.get("kernels", {}).get(a.device)
            if kern is None:
                results["kernels"] = {"error": f"the bundle has no kernels for {a.device} (restage it)"}
            else:
                budget = min(a.kernels_budget_s, r.remaining() - 40)
                # (timed in the order of --presets: the first one's rows first)
                results["kernels"] = r.worker("kernels", {"path": kern["path"], "budget_s": budget,
                                                          "presets": presets}, "kernels")
            save()
        if "bench" not in a.sections:
            continue
        for preset in presets:
            try:
                section_bench(r, info, results, preset, phase=phase)
            except Exception as e:  # noqa: BLE001
                results.setdefault("bench", {}).setdefault(preset, {})["error"] = f"{type(e).__name__}: {e}"
            save()
    text = tables(results, a)
    if "kernels" in results:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import kernel_bench

        text += "\n\nkernels, one at a time:\n```\n" + kernel_bench.table(results["kernels"]) + "\n```"
        summary = kernel_bench.against_ours(results["kernels"])
        if summary:
            text += "\n```\n" + summary + "\n```"
    if results["bundle"]["stale"]:
        text = ("WARNING: engine/ir/passes/schedules/... changed since the bundle was staged "
                f"({info.get('created')}); the artifacts may not match this tree: rerun bench/gpu/stage.py\n" + text)
    results["table_md"] = text
    save()
    (r.out / "gpu_results.md").write_text(text + "\n")
    print("\n" + text)
    print(f"\nresults: {r.out / 'gpu_results.json'} (+ gpu_results.md, logs/)")
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=REPO / "gpu_bundle")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--sections", default="correctness,kernels,bench", type=lambda s: s.split(","))
    ap.add_argument("--presets", default=None, type=lambda s: s.split(","),
                    help="default: every preset the bundle has artifacts for on --device")
    ap.add_argument("--prefill", default="128,1024", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--contexts", default="128,2048", type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--profile-context", type=int, default=1024,
                    help="the prompt before the profiled decode steps (section profile)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--greedy-tokens", type=int, default=32)
    ap.add_argument("--sanity-tokens", type=int, default=16)
    ap.add_argument("--kernels-budget-s", type=float, default=KERNELS_BUDGET_S,
                    help="the kernels section starts no new kernel after this many seconds")
    ap.add_argument("--hf-modes", default="eager,compiled", type=lambda s: [m for m in s.split(",") if m])
    ap.add_argument("--deadline-s", type=float, default=570, help="stop starting work after this (run limit: 600)")
    ap.add_argument("--prefetch-weights", default="", type=lambda s: [p for p in s.split(",") if p],
                    help="presets whose weights to generate in the background for a later call on this machine")
    ap.add_argument("--peak-tbs", type=float, default=None, help="peak HBM TB/s (default: from the device name)")
    ap.add_argument("--allow-host-tvm-ffi", action="store_true",
                    help="if the bundle's tvm_ffi does not match this Python, use the installed one (dry runs)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--job", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker_main(a.worker, a.job)
        return
    bad = set(a.hf_modes) - {"eager", "compiled"}
    if bad:
        ap.error(f"unknown --hf-modes {sorted(bad)}")
    sys.exit(orchestrate(a))


if __name__ == "__main__":
    main()
