"""CPU benchmark: our engine, llama.cpp and HF transformers side by side, in one run.

    python bench/compare_cpu.py --preset qwen3-0.6b --dtype bfloat16
    python bench/compare_cpu.py --preset qwen3-0.6b --dtype float32 --q8
    python bench/compare_cpu.py --preset qwen3-coder-30b-a3b --layers 4 --engines llama.cpp --q8

All engines run the same random-weight checkpoint (random_checkpoint.py, real shapes), on
--threads threads, each in its own subprocess (bench/peers.py) so peak RSS is per engine:

  ours          inference_pio compiled for "llvm" (this CPU), weights in --dtype, at the default
                matmul precision ("auto": "medium" for bf16 weights, "high" for fp32); compiled by
                a child process and run by TVM's runtime alone (TVM_USE_RUNTIME_LIB=1), as deployed
  ours-medium   the same at matmul precision "medium" (passes/matmul_precision.py): bf16-rounded
                activations in the AMX products, as oneDNN's bf16 path (and so transformers) does
  ours-high     the same at matmul precision "high": each product within ~1e-5 of fp32 math (on
                AMX, activations split into a bf16 hi + lo pair: two tile products)
  ours-int8     the same with int8 weights, one scale per row (passes/quantize_weights.py): compare
                with llama.cpp's q8_0 row (--q8)
  llama.cpp     llama-cpp-python, GGUF converted from the same weights (gguf_convert.py),
                in the matching type (bf16/f32); --q8 adds a q8_0 row
  transformers  Qwen3ForCausalLM, eager PyTorch, DynamicCache

Prefill tok/s = prompt length / time to first token; decode tok/s = 1 / median step time
over --steps greedy steps after a warm-up step, with --decode tokens already in the KV
cache. Memory read bandwidth is measured in the same run (numpy reductions, --threads
threads, 1 GiB). Prints one table (+ ratios ours / peer); writes the raw results as JSON
to --workdir and a plot of decode tok/s vs context to --plot.

Checkpoints, GGUFs and our compiled artifact are cached in --workdir; "compile" is our
first compile into that cache (--fresh forces one; a cache hit is reported as such).
Needs: pip install llama-cpp-python matplotlib sentencepiece (see docs/performance.md).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gguf_convert  # noqa: E402
import random_checkpoint  # noqa: E402
from inference_pio.targets import cpu_info_flags  # noqa: E402

GGUF_TYPE = {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}
SHORT = {"bfloat16": "bf16", "float32": "f32", "float16": "f16", "q8_0": "q8_0"}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="qwen3-0.6b", choices=sorted(random_checkpoint.PRESETS))
    ap.add_argument("--layers", type=int, help="decoder layers of the checkpoint (default: the preset's)")
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(GGUF_TYPE))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prefill", type=int, nargs="+", default=[128, 1024], help="prompt lengths")
    ap.add_argument("--decode", type=int, nargs="+", default=[128, 512, 1024, 2048], help="decode contexts")
    ap.add_argument("--steps", type=int, default=16, help="timed decode steps per context")
    ap.add_argument("--engines", nargs="+", default=["ours", "llama.cpp", "transformers"],
                    choices=["ours", "ours-medium", "ours-high", "ours-int8", "llama.cpp", "transformers"])
    ap.add_argument("--hf-prefill", type=int, nargs="*", help="transformers prompt lengths (default --prefill)")
    ap.add_argument("--hf-decode", type=int, nargs="*", help="transformers decode contexts (default --decode)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="rounds over all engines (interleaved); each cell reports its best round")
    ap.add_argument("--q8", action="store_true", help="also run llama.cpp on a q8_0 GGUF")
    ap.add_argument("--fresh", action="store_true", help="recompile our artifact even if cached")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per engine subprocess")
    ap.add_argument("--workdir", type=Path, default=gguf_convert.DEFAULT_WORKDIR)
    ap.add_argument("--plot", type=Path, default=HERE.parent / "docs" / "decode_vs_context.png")
    return ap.parse_args()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def model_name(a: argparse.Namespace) -> str:
    """The preset, with the layer count when --layers cuts it ("qwen3-coder-30b-a3b-4l"): names the
    cached checkpoint and GGUFs, logs and results, so different layer counts don't collide."""
    full = random_checkpoint.PRESETS[a.preset]["num_hidden_layers"]
    return a.preset if a.layers in (None, full) else f"{a.preset}-{a.layers}l"


def prepare_weights(a: argparse.Namespace) -> tuple[Path, dict[str, Path]]:
    """The HF checkpoint, and the GGUFs llama.cpp runs (by weight type), all cached in workdir."""
    ckpt = a.workdir / "ckpt" / f"{model_name(a)}-{a.dtype}"
    if not (ckpt / "model.safetensors").is_file():
        log(f"writing random checkpoint {ckpt}")
        random_checkpoint.make(a.preset, ckpt, a.dtype, layers=a.layers)
    ggufs: dict[str, Path] = {}
    if "llama.cpp" in a.engines:
        for qtype in [GGUF_TYPE[a.dtype]] + (["q8_0"] if a.q8 else []):
            out = a.workdir / "gguf" / f"{model_name(a)}-{a.dtype}-{qtype}.gguf"
            if not out.is_file():
                log(f"converting to {out}")
            ggufs[qtype] = gguf_convert.convert(ckpt, out, qtype, a.workdir)
    return ckpt, ggufs


def run_worker(engine: str, spec: dict[str, Any], logfile: Path, timeout: float) -> dict[str, Any]:
    """Run peers.py ENGINE in a subprocess; its result dict, or {"error": ...}."""
    env = {**os.environ, "TVM_NUM_THREADS": str(spec["threads"]), "OMP_NUM_THREADS": str(spec["threads"])}
    logfile.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    try:
        with open(logfile, "w") as err:
            proc = subprocess.run([sys.executable, str(HERE / "peers.py"), engine, json.dumps(spec)],
                                  stdout=subprocess.PIPE, stderr=err, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s (log: {logfile})"}
    log(f"{engine}: {time.perf_counter() - t:.0f}s, exit {proc.returncode}")
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = logfile.read_text().strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: {' | '.join(tail)} (log: {logfile})"}


def machine_info() -> dict[str, str]:
    info = dict(ln.split(":", 1) for ln in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines())
    info = {k.strip(): v.strip() for k, v in info.items()}
    cpu = f"{info.get('model name', 'unknown CPU')} (family {info.get('cpu family')}, model {info.get('model')})"
    git = ["git", "-C", str(HERE.parent)]
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(git + ["status", "--porcelain", "--", "engine", "passes", "schedules", "ir",
                                  "model_defs", "targets", "frontends"], capture_output=True, text=True).stdout
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu,
            "cores": str(os.cpu_count()), "loadavg_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "commit": head + (" (+ uncommitted changes)" if dirty.strip() else "")}


def engine_runs(a: argparse.Namespace, ckpt: Path, ggufs: dict[str, Path]) -> list[tuple[str, str, dict]]:
    """(row label, engine, spec) for each engine subprocess to run."""
    vocab = random_checkpoint.PRESETS[a.preset]["vocab_size"]
    base = {"ckpt": str(ckpt), "dtype": a.dtype, "threads": a.threads, "steps": a.steps, "vocab": vocab,
            "prefill": a.prefill, "decode": a.decode, "cache": str(a.workdir / "cache"), "fresh": a.fresh}
    runs = []
    for engine in a.engines:
        if engine == "llama.cpp":
            for q, p in ggufs.items():
                if q == "q8_0" and "amx_int8" in cpu_info_flags():
                    # llama.cpp's AMX int8 matmul (its extra buffer type for q8_0 on such CPUs) segfaults
                    # on prompts of more than one token here (llama.cpp issue 20824): run without the
                    # extra buffer types, i.e. without AMX and without the repacked q8_0 layout
                    runs.append(("llama.cpp q8_0 no-repack", engine, {**base, "gguf": str(p), "no_extra_bufts": True}))
                else:
                    runs.append((f"llama.cpp {SHORT.get(q, q)}", engine, {**base, "gguf": str(p)}))
            continue
        spec = dict(base)
        if engine in ("ours-medium", "ours-high"):
            precision = engine.split("-")[1]
            runs.append((f"ours {SHORT[a.dtype]} {precision}", "ours", {**spec, "matmul_precision": precision}))
            continue
        if engine == "ours-int8":
            runs.append(("ours int8", "ours", {**spec, "quantize": "int8"}))
            continue
        if engine == "transformers":
            spec["prefill"] = a.prefill if a.hf_prefill is None else a.hf_prefill
            spec["decode"] = a.decode if a.hf_decode is None else a.hf_decode
        runs.append((f"{engine} {SHORT[a.dtype]}", engine, spec))
    for _, _, spec in runs:
        spec["max_context"] = max(spec["prefill"] + spec["decode"])
    return runs


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from several rounds of one engine: the best tok/s per cell, the highest peak
    RSS, compile/load info from the first round; every round kept under "rounds"."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return {**rounds[0], "rounds": rounds}
    row = {**ok[0], "rounds": rounds, "peak_rss_mib": max(r["peak_rss_mib"] for r in ok)}
    for kind in ("prefill", "decode"):
        cells = sorted({c for r in ok for c in r[kind]}, key=int)
        row[kind] = {c: max(r[kind][c] for r in ok if c in r[kind]) for c in cells}
    row["errors"] = {c: e for r in ok for c, e in r["errors"].items()}
    failed = [r["error"] for r in rounds if "error" in r]
    if failed:
        row["error"] = f"{len(failed)} of {len(rounds)} rounds failed: {failed[0]}"
    return row


def run_all(a: argparse.Namespace) -> dict[str, Any]:
    ckpt, ggufs = prepare_weights(a)
    res: dict[str, Any] = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
                           "machine": machine_info(), "rows": {}}
    res["weights_bytes"] = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
    res["decode_bytes"] = decode_bytes(random_checkpoint.preset_config(a.preset, a.layers), res["weights_bytes"])
    log("measuring memory read bandwidth")
    bw = run_worker("bandwidth", {"threads": a.threads}, a.workdir / "logs" / "bandwidth.log", a.timeout)
    res["read_gbs"] = bw.get("read_gbs")
    runs = engine_runs(a, ckpt, ggufs)
    rounds: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in runs}
    for r in range(a.repeats):
        for label, engine, spec in runs:
            log(f"round {r + 1}/{a.repeats}: running {label}")
            logfile = a.workdir / "logs" / f"{model_name(a)}-{label.replace(' ', '-')}-{r + 1}.log"
            rounds[label].append({"engine": engine, **run_worker(engine, spec, logfile, a.timeout)})
    res["rows"] = {label: merge_rounds(rs) for label, rs in rounds.items()}
    res["machine"]["loadavg_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return res


def _cell(row: dict[str, Any], kind: str, ctx: int) -> float | None:
    return row.get(kind, {}).get(str(ctx))


def _ratio(ours: float | None, peer: float | None) -> float | None:
    return ours / peer if ours and peer else None


def _fmt(v: float | None, digits: int = 2, suffix: str = "", width: int = 14) -> str:
    text = "-" if v is None else f"{v:.{digits}f}{suffix}"
    return f"{text:>{width}}"


def _title(args: dict[str, Any]) -> str:
    """The preset, and the layer count when --layers was given."""
    return args["preset"] + (f" ({args['layers']} layers)" if args.get("layers") is not None else "")


def format_table(res: dict[str, Any]) -> str:
    """One table: tok/s per engine row and peak RSS, then ours / peer ratios, then notes."""
    a, m, rows = res["args"], res["machine"], res["rows"]
    decode = sorted({min(a["decode"]), max(a["decode"])})
    cols = [("prefill", c) for c in a["prefill"]] + [("decode", c) for c in decode]
    ours = {label: r for label, r in rows.items() if r["engine"] == "ours"}
    short = {name: "ours" if len(ours) == 1 else name.replace(f" {SHORT[a['dtype']]}", "") for name in ours}
    width = max([26] + [len(f"{short[o]} / {label}") + 2 for o in ours for label in rows if label not in ours])
    head = f"{'engine':<{width}}" + "".join(f"{f'{k}@{c}':>14}" for k, c in cols) + f"{'peak RSS MiB':>14}"
    lines = [f"{_title(a)} (random weights), {a['threads']} threads, {m['cpu']}, {m['date']}",
             f"inference_pio {m['commit']}; load average {m['loadavg_start']} at start, {m['loadavg_end']} at end; "
             f"best of {a['repeats']} round(s); tok/s", "", head, "-" * len(head)]
    for label, row in rows.items():
        cells = "".join(_fmt(_cell(row, k, c)) for k, c in cols)
        lines.append(f"{label:<{width}}{cells}{_fmt(row.get('peak_rss_mib'), digits=0)}")
    lines.append("-" * len(head))
    for name, mine in ours.items():
        for label, row in rows.items():
            if label in ours:
                continue
            ratios = [_ratio(_cell(mine, k, c), _cell(row, k, c)) for k, c in cols]
            ratios.append(_ratio(mine.get("peak_rss_mib"), row.get("peak_rss_mib")))
            lines.append(f"{short[name] + ' / ' + label:<{width}}" + "".join(_fmt(r, suffix="x") for r in ratios))
    return "\n".join(lines + [""] + footer(res))


def decode_bytes(c: dict[str, Any], weights_bytes: int) -> int:
    """The weight bytes one decode step reads: all of them, less an untied embedding table (one
    row is read) and the experts a token does not use (a MoE layer reads num_experts_per_tok
    of num_experts, or of GLM's n_routed_experts)."""
    total = sum(int(np.prod(s)) for s in random_checkpoint.checkpoint_shapes(c).values())
    return int(weights_bytes * random_checkpoint.decode_elems(c) / total)


def footer(res: dict[str, Any]) -> list[str]:
    """Bandwidth and decode roofline, our compile time, failures."""
    out = []
    bw, wb = res.get("read_gbs"), res.get("decode_bytes", res["weights_bytes"])
    if bw:
        out.append(f"memory read bandwidth {bw:.1f} GB/s (numpy max-reduce over 1 GiB, {res['args']['threads']} "
                   f"threads): decode bound ~{bw * 1e9 / wb:.1f} tok/s for the {wb / 1e9:.2f} GB of weights "
                   "a step reads")
    for label, row in res["rows"].items():
        compiles = [f"{r['compile_s']:.1f}s ({'cache hit' if r['cache_hit'] else 'first compile'})"
                    for r in row.get("rounds", []) if "compile_s" in r]
        if compiles:
            out.append(f"{label} compile: {', '.join(compiles)}")
        if row.get("error"):
            out.append(f"{label} FAILED: {row['error']}")
        for ctx, err in row.get("errors", {}).items():
            out.append(f"{label} failed at context {ctx}: {err}")
    return out


def plot(res: dict[str, Any], path: Path) -> None:
    """Decode tok/s vs context length, one line per engine row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, row in res["rows"].items():
        pts = sorted((int(c), v) for c, v in row.get("decode", {}).items())
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens in KV cache)")
    ax.set_ylabel("decode tok/s")
    m, a = res["machine"], res["args"]
    ax.set_title(f"{_title(a)} decode, {a['threads']} threads, {m['cpu']}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    a = parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    res = run_all(a)
    out = a.workdir / f"results-{model_name(a)}-{a.dtype}.json"
    out.write_text(json.dumps(res, indent=2))
    print(format_table(res))
    plot(res, a.plot)
    log(f"raw results: {out}; plot: {a.plot}")


if __name__ == "__main__":
    main()
