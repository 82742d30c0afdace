"""Stage everything a GPU session needs into one git-ignored bundle (runs here, no GPU needed).

    python bench/gpu/stage.py                  # -> gpu_bundle/ (CUDA artifacts, sm_90a)
    python bench/gpu/stage.py --cpu-dry-run    # + CPU artifacts, to rehearse remote.py here

The GPU machine gets a copy of the working tree (so `bench/gpu/remote.py` travels) plus at
most 64 MiB of git-ignored "carry" paths, has Python 3.12, torch + transformers, and no TVM
and no network. The bundle therefore holds:

  site_tvm/       the `tvm` package, runtime only (no libtvm_compiler.so, libtvm_runtime_extra.so,
                  3rdparty/, src/, include/, __pycache__/), plus typing_extensions (tvm_ffi needs >= 4.13)
  site_ffi/       `tvm_ffi` unpacked from the cp312 manylinux wheel of the pinned version
                  (its native core module is per-Python-version; tvm itself has none, checked below)
  site_fallback/  ml_dtypes (cp312), appended *after* site-packages: used only if the machine lacks it
  pkgs/inference_pio/__init__.py
                  a 6-line shim that points the package at the repo root (the repo root *is*
                  the package, via pyproject's package-dir; on the GPU box it is not installed)
  ckpt/<name>/    tiny random HF Qwen3 checkpoints (tests/hf_fixtures.py), fp32 and bf16; two Qwen3-VL
                  ones, each with its test prompt's image patches (image<i>.npy); Qwen3-MoE, GLM-4.5
                  MoE and Qwen3-Next ones
  configs/<preset>/config.json       real Qwen3-0.6B / Qwen3-4B shapes (bench/random_checkpoint.py PRESETS)
  artifacts/cuda/<name>/             model.so (sm_90a cubins) + manifest.json for all of the above, at
                                     engine.compile's defaults (a CUDA graph per decode step where the
                                     kernels allow it: the real shapes, not every tiny one)
                                     (and qwen3-coder-30b-a3b-4l: CUT_PRESETS, this one only)
  artifacts/cuda_nograph/<preset>/   the real-shape presets again, compiled with cuda_graph=False
  artifacts/cuda_pdl/<preset>/       and with cuda_pdl=True (programmatic dependent launch for every
                                     kernel, decode's GEMVs prefetching their weights into L2 meanwhile;
                                     schedules/cuda/pdl.py), and cuda_pdl_launch/ with cuda_pdl="launch"
                                     (the launch alone, no prefetch)
  artifacts/cuda_high/<preset>/      (--high) and with matmul_precision="high" (x as a bf16 hi + lo pair
                                     in the tensor-core products; the others at the default, "medium" for
                                     bf16 weights; cpu_high with --cpu-dry-run). Off by default since
                                     2026-12-05: measured twice, and the bundle is near its limit
  artifacts/cuda_dlight/<preset>/    and again with TVM dlight's rules for every linear (its GEMV and
                                     CUDA-core Matmul instead of ours): the baseline our GEMMs must beat
  artifacts/cpu/<name>/              (--cpu-dry-run) the same for this CPU, tiny models + a small bench preset
  artifacts/cpu_nograph/<preset>/    (--cpu-dry-run) the small preset with static_decode=False (the cpu
                                     "ours" row is static, as the default's graph on cuda)
  kernels/cuda/   every linear of the real presets alone, compiled several ways (tiles, split-K, GEMV
                  loads ahead and warps per row, dlight), and decode and prefill attention (keys per
                  block; tensor-core candidates): kernels.so + kernels.json (kernel_bench.py)
  kernels/cpu/    (--cpu-dry-run) the same machinery at the small preset's shapes: plain kernels, and
                  our CUDA schedules with their thread loops serial as the variants
  bundle.json     what is in it; remote.py reads it

Weights for the real shapes are not carried: remote.py generates them on the GPU machine.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "gpu_bundle"
MARKER = "bundle.json"
TARGET_PY = (3, 12)  # the GPU machine's Python
TVM_FFI_VERSION = "0.1.14.post0"  # pinned in pyproject (0.1.15.post2 segfaults in save_json)

# tiny checkpoints, (key, tests/hf_fixtures config, dtype): odd shapes (dlight's GEMV takes their decode linears),
# then wide32, whose every K is a multiple of 32, so that decode runs our GEMV with its fused
# norm and swiglu as at real shapes; fp16 weights (the three-part tensor-core split); and wide256,
# whose o and down projections take the split-K form of the tensor-core GEMM in prefill
TINY = [("gqa5x1", "gqa5x1", "float32"), ("tied_bias", "tied_bias", "float32"), ("mha_theta", "mha_theta", "float32"),
        ("bf16", "bf16", "bfloat16"), ("wide32", "wide32", "bfloat16"), ("wide32_fp16", "wide32", "float16"),
        ("wide256", "wide256", "bfloat16"),
        # Qwen3-VL: both towers, a prompt holding two images (`vl_prompt`'s)
        ("vl_odd", "vl_odd", "float32"), ("vl_tied", "vl_tied", "bfloat16"),
        # the sparse families: routed experts (Qwen3-MoE in bf16, GLM's sigmoid groups and shared
        # experts in fp32) and Qwen3-Next's DeltaNet recurrences (fp32 odd heads, bf16)
        ("moe_bf16", "moe_bf16", "bfloat16"), ("glm_groups", "glm_groups", "float32"),
        ("next_odd", "next_odd", "float32"), ("next_bf16", "next_bf16", "bfloat16")]
VL_GRIDS = [(1, 4, 6), (1, 2, 2)]  # in patches, as tests/engine/test_qwen3_vl.py
TINY_MAX_SEQ_LEN = 128
REAL_PRESETS = ["qwen3-0.6b", "qwen3-4b"]
# sparse presets cut to a few layers (random weights for all 48 would not fit the GPU machine's
# disk), the default artifact only: name -> (bench/random_checkpoint.py preset, layers)
CUT_PRESETS = {"qwen3-coder-30b-a3b-4l": ("qwen3-coder-30b-a3b", 4)}
BENCH_MAX_SEQ_LEN = 4096  # >= the longest benchmark context (2048) + decoded tokens
# a small preset with the real presets' structure, for rehearsing the benchmark path on this CPU
DRY_PRESETS = {"dry-small": dict(vocab_size=1000, hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
                                 max_position_embeddings=40960, rope_theta=1000000.0, rms_norm_eps=1e-6)}

TVM_DROP = {"3rdparty", "src", "include", "__pycache__"}
TVM_DROP_LIBS = {"libtvm_compiler.so", "libtvm_runtime_extra.so"}
FFI_DROP = {"3rdparty", "src", "include", "cython", "__pycache__"}

SHIM = '''\
"""Generated by bench/gpu/stage.py: makes the repo root importable as `inference_pio` without
installing it (pyproject maps the package to the repo root). Set INFERENCE_PIO_SRC to override."""
import os as _os

_root = _os.environ.get("INFERENCE_PIO_SRC") or _os.path.normpath(_os.path.join(_os.path.dirname(__file__), {rel!r}))
__path__ = [_root]
__file__ = _os.path.join(_root, "__init__.py")
with open(__file__) as _f:
    exec(compile(_f.read(), __file__, "exec"))
'''


# the sources an artifact depends on (compiler and runtime); remote.py warns when they changed since staging
SOURCE_DIRS = ("engine", "frontends", "ir", "model_defs", "passes", "schedules", "targets")
SOURCE_SKIP = {"engine/__main__.py", "engine/bench.py", "engine/cache.py", "engine/text.py", "engine/tokenizer.py"}


def source_hash(repo: Path = REPO) -> str:
    import hashlib

    h = hashlib.sha256()
    files = [repo / "__init__.py"] + sorted(f for d in SOURCE_DIRS for f in (repo / d).rglob("*.py")
                                            if f.relative_to(repo).as_posix() not in SOURCE_SKIP)
    for f in files:
        h.update(f.relative_to(repo).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def git_state() -> dict:
    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    return {"head": git("rev-parse", "--short", "HEAD"), "dirty_files": len(git("status", "--porcelain").splitlines())}


def say(msg: str) -> None:
    print(f"[stage {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def dir_size(path: Path) -> int:
    return sum((Path(r) / f).lstat().st_size for r, _, fs in os.walk(path) for f in fs)


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def prepare_out(out: Path) -> None:
    if out.exists():
        if not (out / MARKER).is_file() and any(out.iterdir()):
            sys.exit(f"{out} exists, is not empty and is not a bundle (no {MARKER}); refusing to delete it")
        shutil.rmtree(out)
    out.mkdir(parents=True)


def site_packages_of(mod: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(mod)
    if spec is None or spec.origin is None:
        sys.exit(f"python package {mod!r} is not installed here")
    return Path(spec.origin).parent


def copy_tvm(dst_site: Path) -> dict:
    """site-packages/tvm minus the compiler and sources; fail on Python-version-specific modules."""
    src = site_packages_of("tvm")
    ext = sorted(str(p.relative_to(src)) for p in src.rglob("*.so")
                 if ".cpython-" in p.name or ".abi3." in p.name)
    wrong = [e for e in ext if f"cpython-{TARGET_PY[0]}{TARGET_PY[1]}" not in e and ".abi3." not in e]
    if wrong:  # none in apache-tvm 0.27 (its wheel is py3-none); a future one would need its cp312 wheel
        sys.exit(f"the tvm package has Python-version-specific extension modules {wrong}; "
                 f"they cannot run on Python {TARGET_PY[0]}.{TARGET_PY[1]}: fetch the matching wheel")

    def ignore(d: str, names: list[str]) -> set[str]:
        drop = {n for n in names if n in TVM_DROP}
        if Path(d) == src / "lib":
            drop |= {n for n in names if n in TVM_DROP_LIBS}
        return drop

    dst = dst_site / "tvm"
    shutil.copytree(src, dst, ignore=ignore)
    libs = sorted(p.name for p in (dst / "lib").iterdir())
    for need in ("libtvm_runtime.so", "libtvm_runtime_cuda.so"):
        if need not in libs:
            sys.exit(f"{src / 'lib' / need} is missing from the installed tvm")
    import tvm

    return {"version": tvm.__version__, "from": str(src), "libs": libs, "python_ext_modules": ext}


def pip_download(spec: str, cache: Path) -> Path:
    """One wheel for CPython 3.12 manylinux x86_64 (cached)."""
    name = spec.split("==")[0].replace("-", "_").lower()
    version = spec.split("==")[1]
    pyv = f"{TARGET_PY[0]}.{TARGET_PY[1]}"

    def find() -> list[Path]:
        return [w for w in cache.glob("*.whl") if w.name.lower().startswith(f"{name}-{version}-")
                and ("-py3-none-" in w.name or f"-cp{pyv.replace('.', '')}-" in w.name)]

    if not find():
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", spec, "--python-version", pyv, "--only-binary=:all:",
               "--no-deps", "--platform", "manylinux_2_28_x86_64", "-d", str(cache)]
        say(" ".join(cmd[2:]))
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"pip download {spec} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    wheels = find()
    if len(wheels) != 1:
        sys.exit(f"expected one wheel for {spec} in {cache}, found {[w.name for w in wheels]}")
    return wheels[0]


def unpack_wheel(whl: Path, dest: Path, top: str, drop: set[str] = frozenset()) -> list[str]:
    """Extract package ``top`` and its .dist-info from a wheel (a zip), minus ``drop`` subfolders."""
    kept = []
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            parts = info.filename.split("/")
            if parts[0] != top and not (parts[0].endswith(".dist-info") and len(parts) > 1):
                continue
            if parts[0] == top and len(parts) > 2 and parts[1] in drop:
                continue
            if info.is_dir():
                continue
            z.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            os.chmod(dest / info.filename, mode or (0o755 if info.filename.endswith(".so") else 0o644))
            kept.append(info.filename)
    return kept


def stage_ffi(dst_site: Path, cache: Path) -> dict:
    whl = pip_download(f"apache-tvm-ffi=={TVM_FFI_VERSION}", cache)
    files = unpack_wheel(whl, dst_site, "tvm_ffi", FFI_DROP)
    core = [f for f in files if f.startswith("tvm_ffi/core.") and f.endswith(".so")]
    for need in ("tvm_ffi/lib/libtvm_ffi.so", "tvm_ffi/lib/libtvm_ffi_testing.so", "tvm_ffi/cpp/__init__.py"):
        if need not in files:
            sys.exit(f"{whl.name} has no {need}")
    if not core or f"cpython-{TARGET_PY[0]}{TARGET_PY[1]}" not in core[0]:
        sys.exit(f"{whl.name} has no CPython {TARGET_PY} core module: {core}")
    return {"version": TVM_FFI_VERSION, "wheel": whl.name, "core": core}


def stage_python_deps(site_tvm: Path, fallback: Path, cache: Path) -> dict:
    """typing_extensions (pure Python, tvm_ffi needs >= 4.13) ahead of site-packages; ml_dtypes
    (compiled, cp312) after it, so the GPU machine's own copy wins when it has one."""
    import ml_dtypes
    import typing_extensions  # noqa: F401
    from importlib.metadata import version

    te = pip_download(f"typing_extensions=={version('typing_extensions')}", cache)
    with zipfile.ZipFile(te) as z:
        z.extract("typing_extensions.py", site_tvm)
    md = pip_download(f"ml_dtypes=={ml_dtypes.__version__}", cache)
    unpack_wheel(md, fallback, "ml_dtypes", {"__pycache__"})
    return {"typing_extensions": te.name, "ml_dtypes": md.name}


def write_shim(out: Path) -> None:
    pkg = out / "pkgs" / "inference_pio"
    pkg.mkdir(parents=True)
    rel = os.path.relpath(REPO, pkg)
    (pkg / "__init__.py").write_text(SHIM.format(rel=rel))


def compile_one(cfg_dir: Path, out: Path, target, max_seq_len: int, **options) -> dict:
    from inference_pio import engine, frontends

    t = time.perf_counter()
    md = frontends.huggingface.model_def(cfg_dir)
    # "high" unless asked: the tiny checkpoints (held to 1e-4 of transformers in fp32) and the
    # dlight row; the presets' "ours" rows ask for the default ("auto": "medium" for bf16 weights)
    options.setdefault("matmul_precision", "high")
    art = engine.compile(md, target=target, max_seq_len=max_seq_len, **options)
    art.save(out)
    lib = (out / "model.so").read_bytes()
    if art.manifest["device"] == "cuda" and (b"__global__" in lib or b".nv.info" not in lib):
        sys.exit(f"{out}/model.so holds CUDA source, not sm_XX binaries: is libcuda stubbed and nvcc on PATH?")
    return {"dtype": art.manifest["params"][0]["dtype"], "max_seq_len": max_seq_len,
            "matmul_precision": art.manifest["matmul_precision"], "cuda_graph": art.manifest["cuda_graph"],
            "cuda_pdl": art.manifest.get("cuda_pdl"),
            "compile_s": round(time.perf_counter() - t, 1), "bytes": dir_size(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"bundle directory (default {DEFAULT_OUT})")
    ap.add_argument("--arch", default="sm_90a", help="CUDA arch (H100 and H200 are both sm_90a)")
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="also compile CPU artifacts (tiny models + a small bench preset) to rehearse remote.py here")
    ap.add_argument("--no-real", action="store_true", help="skip the real-shape CUDA artifacts (faster, for testing)")
    ap.add_argument("--high", action="store_true", help='also the presets at matmul_precision="high" ("ours high" rows)')
    ap.add_argument("--max-mib", type=float, default=60.0, help="fail if the bundle is larger (carry limit is 64 MiB)")
    ap.add_argument("--wheel-cache", type=Path, default=Path(os.environ.get("INFERENCE_PIO_CACHE")
                    or Path.home() / ".cache" / "inference_pio") / "wheels")
    a = ap.parse_args()
    out = a.out.resolve()
    t0 = time.perf_counter()
    prepare_out(out)
    info: dict = {"created": _dt.datetime.now().isoformat(timespec="seconds"),
                  "python": f"{TARGET_PY[0]}.{TARGET_PY[1]}", "arch": a.arch,
                  "source_hash": source_hash(), "git": git_state(), "complete": False}
    (out / MARKER).write_text(json.dumps(info) + "\n")  # marks the folder as ours even if staging fails

    say("tvm runtime (no compiler)")
    site_tvm, site_ffi, fallback = out / "site_tvm", out / "site_ffi", out / "site_fallback"
    for d in (site_tvm, site_ffi, fallback):
        d.mkdir()
    info["tvm"] = copy_tvm(site_tvm)
    say("tvm_ffi cp312 wheel")
    info["tvm_ffi"] = stage_ffi(site_ffi, a.wheel_cache)
    info["python_deps"] = stage_python_deps(site_tvm, fallback, a.wheel_cache)
    write_shim(out)

    sys.path.insert(0, str(REPO / "tests"))
    import hf_fixtures
    import numpy as np

    cuda = {"kind": "cuda", "arch": a.arch}
    info["tiny"] = {}
    for name, fixture, dtype in TINY:
        say(f"tiny checkpoint {name} ({fixture}, {dtype}) + artifacts")
        ck = out / "ckpt" / name
        made = hf_fixtures.make_checkpoint(ck, fixture, dtype=dtype)
        cfg = getattr(made.config, "text_config", made.config)
        ent = {"dtype": dtype, "ckpt": str(ck.relative_to(out)), "vocab_size": cfg.vocab_size,
               "family": made.config.model_type, "artifacts": {}}
        if fixture in hf_fixtures.QWEN3_VL_CONFIGS:  # the prompt and its images' patches, saved beside the weights
            ids, images = hf_fixtures.vl_prompt(made.config, VL_GRIDS, seed=3)
            ent["vl"] = {"ids": ids, "image_token_id": made.config.image_token_id, "images": []}
            for i, (pixels, grid) in enumerate(images):
                np.save(ck / f"image{i}.npy", np.asarray(pixels))
                ent["vl"]["images"].append({"pixels": str((ck / f"image{i}.npy").relative_to(out)), "grid": list(grid)})
        ent["artifacts"]["cuda"] = {"path": f"artifacts/cuda/{name}",
                                    **compile_one(ck, out / "artifacts" / "cuda" / name, cuda, TINY_MAX_SEQ_LEN)}
        if a.cpu_dry_run:
            ent["artifacts"]["cpu"] = {"path": f"artifacts/cpu/{name}",
                                       **compile_one(ck, out / "artifacts" / "cpu" / name, "llvm", TINY_MAX_SEQ_LEN)}
        info["tiny"][name] = ent

    sys.path.insert(0, str(REPO / "bench"))
    import random_checkpoint as rc

    info["presets"] = {}
    jobs = [] if a.no_real else [(p, rc.PRESETS[p], "cuda", True) for p in REAL_PRESETS]
    if not a.no_real:
        jobs += [(p, rc.preset_config(base, layers), "cuda", False) for p, (base, layers) in CUT_PRESETS.items()]
    if a.cpu_dry_run:
        jobs += [(p, c, "cpu", True) for p, c in DRY_PRESETS.items()]
    for preset, pc, dev, variants in jobs:
        say(f"{preset} ({dev}) artifact from config.json")
        cfg_dir = out / "configs" / preset
        cfg_dir.mkdir(parents=True, exist_ok=True)
        (cfg_dir / "config.json").write_text(json.dumps(rc.hf_config(pc), indent=2))
        ent = info["presets"].setdefault(preset, {"preset": pc, "config": str(cfg_dir.relative_to(out)),
                                                  "artifacts": {}})
        target = cuda if dev == "cuda" else "llvm"

        def stage_artifact(key: str, **options) -> None:  # artifacts/<key>/<preset>, compiled for dev
            ent["artifacts"][key] = {"path": f"artifacts/{key}/{preset}",
                                     **compile_one(cfg_dir, out / "artifacts" / key / preset, target,
                                                   BENCH_MAX_SEQ_LEN, **options)}

        # the default ("ours"); on the CPU stand-in, the static decode of the default's graph on cuda
        stage_artifact(dev, matmul_precision="auto", **({"static_decode": True} if dev == "cpu" else {}))
        if not variants:
            continue
        if a.high:  # the same at matmul precision "high" (fp32 x as a bf16 hi + lo pair): "ours high"
            stage_artifact(f"{dev}_high", matmul_precision="high")
        if dev == "cuda":  # the same without CUDA graphs (the default captures decode), a second "ours" row
            stage_artifact("cuda_nograph", cuda_graph=False, matmul_precision="auto")
            # with programmatic dependent launch, with and without the GEMVs' L2 prefetch: "ours pdl" rows
            stage_artifact("cuda_pdl", cuda_pdl=True, matmul_precision="auto")
            stage_artifact("cuda_pdl_launch", cuda_pdl="launch", matmul_precision="auto")
            from inference_pio import passes
            from inference_pio.schedules import registry

            # a third row: dlight's GEMV and Matmul, and no prologue (swiglu, rms_norm) fused into
            # a linear: only our GEMV and GEMM schedule those; dlight takes slow generic rules
            saved = passes.cuda_passes, passes.decode_passes
            passes.cuda_passes, passes.decode_passes = (lambda: []), (lambda kind: [])
            try:
                with registry.override("cuda", "linear", []):
                    stage_artifact("cuda_dlight")
            finally:
                passes.cuda_passes, passes.decode_passes = saved
        else:  # its CPU stand-in: decode without the static shapes the default's CUDA graph needs
            stage_artifact("cpu_nograph", static_decode=False, matmul_precision="auto")

    # every linear of the real presets alone, compiled several ways (remote.py --sections kernels)
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO / "tests" / "schedules")]
    import kernel_bench

    info["kernels"] = {}
    kjobs = [] if a.no_real else [("cuda", {p: rc.PRESETS[p] for p in REAL_PRESETS}, cuda)]
    if a.cpu_dry_run:
        kjobs.append(("cpu", DRY_PRESETS, "llvm"))
    for dev, presets, target in kjobs:
        say(f"kernel variants ({dev}): {', '.join(presets)}")
        info["kernels"][dev] = {"path": f"kernels/{dev}",
                                **kernel_bench.build(presets, out / "kernels" / dev, target)}

    sizes = {p.name: dir_size(p) for p in sorted(out.iterdir()) if p.is_dir()}
    total = dir_size(out)
    info["bytes"] = {"total": total, **sizes}
    info["complete"] = True
    (out / MARKER).write_text(json.dumps(info, indent=1) + "\n")
    total = dir_size(out)
    say(f"done in {time.perf_counter() - t0:.0f}s")
    print(f"\nbundle {out}")
    for k, v in sizes.items():
        print(f"  {k:<14} {mib(v):>10}")
    print(f"  {'total':<14} {mib(total):>10}  (limit {a.max_mib:g} MiB)")
    if total > a.max_mib * 2**20:
        sys.exit(f"bundle is {mib(total)}, over the {a.max_mib:g} MiB limit")
    print_invocation(out, a.cpu_dry_run)


def print_invocation(out: Path, dry: bool) -> None:
    try:
        rel = out.relative_to(REPO).as_posix()
    except ValueError:
        print(f"\nWARNING: {out} is outside the repo ({REPO}); only paths inside it can be carried")
        return
    r = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", rel], capture_output=True)
    if r.returncode != 0:
        print(f"\nWARNING: {rel} is not git-ignored; carry takes ignored paths only (add /{rel}/ to .gitignore)")
    print("\nOn a session with a GPU (15 minutes of device time, machine start included; docs/gpu.md): the main")
    print("call, then at once (the machine stays warm for seconds) the kernel table; what a deadline cuts is")
    print("recorded as skipped (4B weights are generated there, about 8 GB in /tmp, while correctness runs):")
    tail = "; cd $OUT && tar czf logs.tgz logs && rm -rf logs"  # (at most 8 files come back)
    first = (f"export PYTHONUNBUFFERED=1; python3 bench/gpu/remote.py --bundle {rel} --sections "
             f"correctness,bench,profile --presets qwen3-0.6b,qwen3-4b --decode-tokens 32 --reps 2 "
             f"--deadline-s 430{tail}")
    second = (f"export PYTHONUNBUFFERED=1; python3 bench/gpu/remote.py --bundle {rel} --sections kernels "
              f"--presets qwen3-4b,qwen3-0.6b --kernels-budget-s 100 --deadline-s 150{tail}")
    print(f"  run(command={first!r}, carry={[rel]!r}, timeout_s=470)")
    print(f"  run(command={second!r}, carry={[rel]!r}, timeout_s=190)")
    print("  give_back()")
    print("Results: $OUT/gpu_results.json, gpu_results.md and logs.tgz come back; see docs/gpu.md.")
    if dry:
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        flag = "" if here == f"{TARGET_PY[0]}.{TARGET_PY[1]}" else " --allow-host-tvm-ffi"
        print(f"\nDry run here against the CPU artifacts (Python {here}"
              + (": the bundle's cp312 tvm_ffi is replaced by the installed one):" if flag else "):"))
        print(f"  python bench/gpu/remote.py --bundle {rel} --device cpu{flag} --deadline-s 1500")


if __name__ == "__main__":
    main()
