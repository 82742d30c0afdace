"""Each linear of the real presets, and decode attention, timed alone on the GPU and compiled
several ways, so that one GPU run says which schedule choice wins where: tile size, split-K,
the GEMV's loads in flight and warps per row, keys per attention block, and ours against TVM
dlight's rules.

    build    here, by bench/gpu/stage.py (needs TVM's compiler): kernels/<device>/kernels.so + kernels.json
    measure  on the GPU machine, by `remote.py --sections kernels` (runtime-only TVM)

Rows are (preset, projection, T). T = 1 is decode's GEMV, with the rms_norm and swiglu that
decode fuses into it (since 2026-12-05 swiglu in the gate+up GEMV's epilogue; the down GEMV
computing it from 2F floats per block, the form before, is a variant of the down row); T > 1 is
the prefill GEMM (swiglu is its own kernel before the down projection there since 2026-12-04:
fused, the GEMM recomputed it for every column tile).
dlight's variants get the plain linear (with the residual, without a fused prologue): with one
it falls to slow generic rules, which is why the models do not fuse it there either. For decode
attention, T is the number of keys in a bf16 cache of 4096 rows; prefill attention takes T new
rows into an empty cache, ours (flash, on CUDA cores) and on tensor cores
(schedules/cuda/flash_tc.py, not yet the default: this table decides). Each cell is the time of one
call: the minimum over 3 repeats of the mean of back-to-back calls, with the weights (the
cache) rotating through copies that together exceed the L2 cache, so that they come from HBM.
Back-to-back launches from Python cost a few µs each, so a kernel shorter than that shows the
launch rate; inside decode's CUDA graph it would not. Every variant's output is also compared
with ours' on the same inputs, so a kernel that is fast but wrong shows.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

PREFILL_T = (16, 128, 512, 2048)
# sparse MLPs at real shapes (timed alone; the bench presets are dense): Qwen3-Coder-30B-A3B's experts
MOE_SHAPES = {"qwen3-30b-a3b": dict(hidden=2048, inter=768, experts=128, top_k=8, ts=(1, 16, 128, 512))}
MOE_DRY = {"dry-moe": dict(hidden=64, inter=32, experts=8, top_k=2, ts=(1, 16))}
GATE_COPIES = 16  # routings a sparse MLP's timing cycles through, so that its experts come from HBM
CONTEXTS = (128, 1024, 2048, 4000)  # decode attention: keys in the cache
CACHE_ROWS = 4096
ROTATE_BYTES = 256 << 20  # > 2x the L2 of an H100 or H200 (50 MB each)
MAX_COPIES = 16
BF16 = "bfloat16"
DIFF_TOL = 1e-3  # a variant's output against ours' (relative to its largest value) beyond this is flagged
# ... except where one of the two rounds x to bf16 and the other does not (matmul precision
# "medium", what the models run for bf16 weights, against "high" or dlight's fp32 products)
MEDIUM_TOL = 2e-2
VARIANT_TOL = {"medium, serial": MEDIUM_TOL}  # (the dry run's: ours there is the plain kernel)
PREFILL_TOL = {"dlight": MEDIUM_TOL}  # (T > 1: ours is the GEMM at "medium")


# the block tile of matmul.BIG (128 x 128; 16 warps of 32 x 32, 2 x 2 fragments) cut into fewer,
# bigger warp tiles: fewer fragment loads per product (ldmatrix : mma 3 : 8 and 1 : 4 against
# BIG's 1 : 2, from cuobjdump at Qwen3-4B's gate+up), fewer warps. ptxas (sm_90a): 160 and 255
# registers, no spills (BIG: 98); 32 of K per stage at 4 warps spills, so 64 there (matmul.Tiles'
# fields; the compiler library is imported only to build)
WARP_TILES = {"128x128, 8 warps of 64x32": dict(warps_m=2, warps_n=4, frags_m=4, frags_n=2, chunk_k=2),
              "128x128, 4 warps of 64x64": dict(warps_m=2, warps_n=2, frags_m=4, frags_n=4, chunk_k=4)}


def tolerance(row: dict) -> float:
    """How far a variant's output (a row of `measure`) may be from ours' before it is flagged."""
    if row["t"] > 1 and row["variant"] in PREFILL_TOL:
        return PREFILL_TOL[row["variant"]]
    return VARIANT_TOL.get(row["variant"], DIFF_TOL)


LINEARS = ("q+k+v", "o", "gate+up", "down", "lm_head")  # `projections`' names


def projections(cfg: dict) -> list[tuple[str, int, int, dict | None, dict]]:
    """(name, N, K, prefill fusions or None, decode fusions) of a layer's linears and the LM head."""
    h, d, f = cfg["hidden_size"], cfg["head_dim"], cfg["intermediate_size"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    return [("q+k+v", q + 2 * kv, h, {}, {"norm": True}),
            ("o", h, q, {"residual": True}, {"residual": True}),
            ("gate+up", 2 * f, h, {}, {"norm": True, "out_act": "swiglu"}),
            ("down", h, f, {"residual": True}, {"residual": True}),
            ("lm_head", cfg["vocab_size"], h, None, {"norm": True})]


def _variants_cuda(n: int, k: int, prefill: dict | None, decode: dict, target, name: str = "") -> list[tuple[str, Any, tuple]]:
    """(variant, PrimFunc, Ts) of projection ``name`` (`projections`)."""
    from tvm import tirx

    from inference_pio.schedules.cuda import dlight_baseline
    from inference_pio.schedules.cuda.matmul import BIG, SMALL, Tiles, tensor_core_linear, tiles_for
    from test_cuda_matmul import _linear_func

    from inference_pio.schedules.cuda import gemv as gemv_mod
    out = []
    if prefill is not None:
        # at matmul precision "medium", what the models compile bf16 weights with (since 2026-12-05,
        # session 19; before, ours was at "high" and "medium" a variant), over x in bf16: the
        # producer of x rounds it so (`passes.round_activations`, since session 22)
        f = _linear_func(n, k, BF16, x_dtype=BF16, **prefill).with_attr("precision", "medium")
        tiles = tiles_for(n)
        out.append(("ours", tensor_core_linear(f, target), PREFILL_T))
        out.append(("no split-K", tensor_core_linear(f, target, max_slices=1), PREFILL_T))
        other = BIG if tiles == SMALL else SMALL
        out.append((f"{other.rows}x{other.cols}, no split", tensor_core_linear(f, target, tiles=other, max_slices=1),
                    PREFILL_T))
        for label, tl in WARP_TILES.items():  # 128 x 128 in fewer, bigger warp tiles
            out.append((label, tensor_core_linear(f, target, tiles=Tiles(**tl), max_slices=1), PREFILL_T))
        # x in fp32, rounded as the GEMM stages it (before session 22): twice x's bytes from L2,
        # 8-byte copies (not compared: other operands)
        x32 = _linear_func(n, k, BF16, **prefill).with_attr("precision", "medium")
        out.append(("fp32 x", tensor_core_linear(x32, target), PREFILL_T))
        # x and the weights straight into shared memory by cp.async (no registers), 2 and 3 stages
        # (`matmul.schedule`'s async_stages, x's rows clamped to T - 1; compiled under
        # matmul.ASYNC_COPY, as `build` does)
        for stages in (2, 3):
            out.append((f"cp.async, {stages} stages", tensor_core_linear(f, target, async_stages=stages), PREFILL_T))
        plain = _linear_func(n, k, BF16, residual=prefill.get("residual", False))
        out.append(("dlight", dlight_baseline(plain, target).mod["main"], PREFILL_T))
    one = tirx.IntImm("int64", 1)
    f = _linear_func(n, k, BF16, t=one, **decode)
    out.append(("ours", gemv_mod.gemv(f, target).mod["main"], (1,)))
    for rows in (1, 2, 4):
        out.append((f"{rows} rows/thread", gemv_mod.gemv(f, target, rows=rows).mod["main"], (1,)))
    for ahead in (16, 8, 4):  # (the one ours takes drops out below)
        out.append((f"{ahead} loads ahead", gemv_mod.gemv(f, target, ahead=ahead).mod["main"], (1,)))
    few = n < gemv_mod.FEW_ROWS  # ours gives these two warps per row, the others one
    other = gemv_mod.gemv(f, target, warps_per_row=1 if few else 2)
    if other is not None:
        out.append(("1 warp/row" if few else "2 warps/row", other.mod["main"], (1,)))
    plain = _linear_func(n, k, BF16, t=one, residual=decode.get("residual", False))
    if decode.get("act") or decode.get("norm") or decode.get("out_act"):
        # the same GEMV without its fused norm or swiglu: what they cost per call (not compared:
        # other operands)
        out.append(("ours, no prologue", gemv_mod.gemv(plain, target).mod["main"], (1,)))
    if name == "down":  # its swiglu computed per block, as before 2026-12-05 (not compared: x twice as long)
        fused = _linear_func(n, k, BF16, t=one, residual=True, act="swiglu")
        out.append(("swiglu per block", gemv_mod.gemv(fused, target).mod["main"], (1,)))
    out.append(("dlight", dlight_baseline(plain, target).mod["main"], (1,)))
    # e.g. more loads ahead than a lane has chunks, or no split-K where ours has none: the same
    # kernel as ours
    seen, unique = set(), []
    for variant, func, ts in out:
        key = (ts, func.script())
        if key not in seen:
            seen.add(key)
            unique.append((variant, func, ts))
    return unique


def _decode_attention_variants(cfg: dict, kcs: tuple[int, ...], ts: tuple, wrap=lambda f: f,
                               threads: tuple[int, ...] = ()) -> list:
    """Decode attention over a bf16 cache of CACHE_ROWS rows (fp32 q and out) at ``ts`` keys,
    built with each of ``kcs`` keys per block (the first is ours) and then with each of
    ``threads`` threads per block, each passed through ``wrap``. Then the forms decode runs:
    the query's norm and rotary fused (q from a q+k+v row), and with the step's key and value
    appends fused as well (`ir.ops.append_attention`; the appender block's extra work)."""
    from inference_pio.schedules.cuda import attention as attn
    d, out = cfg["head_dim"], []
    for kc in kcs:
        f = attn._decode_kernel(cfg["num_attention_heads"], cfg["num_key_value_heads"], d, d, CACHE_ROWS,
                                ("float32", BF16, BF16, "float32"), d ** -0.5, chunk=kc)
        out.append(("ours" if kc == attn.KC else f"{kc} keys/block", wrap(f), ts))
    for nt in threads:
        f = attn._decode_kernel(cfg["num_attention_heads"], cfg["num_key_value_heads"], d, d, CACHE_ROWS,
                                ("float32", BF16, BF16, "float32"), d ** -0.5, threads=nt)
        out.append((f"{nt} threads", wrap(f), ts))
    hq, hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    q_norm = attn.QNorm(0, (hq + 2 * hkv) * d, d, 1e-6, BF16)
    append = attn.KVAppend(hq * d, (hq + hkv) * d, BF16)
    for variant, kv in (("q norm fused", None), ("q norm + appends fused", append)):
        f = attn._decode_kernel(hq, hkv, d, d, CACHE_ROWS, ("float32", BF16, BF16, "float32"), d ** -0.5,
                                q_norm=q_norm, append=kv)
        out.append((variant, wrap(f), ts))
    # the static form that graphed decode runs (a grid over the whole cache, kv_len a buffer):
    # its chunks merged by a second kernel, and by the last block of each kv head (the default)
    # (the second checked against the first: their parameters differ by the counters)
    for variant, sync in (("graphed, merge kernel", 0), ("graphed, merged in its last blocks", hkv)):
        f = attn._decode_kernel(hq, hkv, d, d, CACHE_ROWS, ("float32", BF16, BF16, "float32"), d ** -0.5,
                                kv_len_tensor=True, q_norm=q_norm, append=append, sync=sync)
        out.append((variant, wrap(f), ts) + (("graphed, merge kernel",) if sync else ()))
    return out


def _prefill_attention(cfg: dict) -> list[tuple[str, Any, tuple]]:
    """Prefill's flash attention over the cache, T new rows after an empty cache (kv_len = T)."""
    from inference_pio.schedules.cuda.flash_tc import flash_tc_kernel

    from inference_pio.schedules.cuda import attention as attn
    d = cfg["head_dim"]
    dims = (cfg["num_attention_heads"], cfg["num_key_value_heads"], d, d, CACHE_ROWS,
            ("float32", BF16, BF16, "float32"), d ** -0.5)
    # ours: what the rule picks for a bf16 cache (the tensor-core kernel, attention.FLASH_TC_WARPS warps)
    return [("ours", flash_tc_kernel(*dims, warps=attn.FLASH_TC_WARPS), PREFILL_T),
            ("CUDA cores", attn._flash_kernel(*dims, causal=True), PREFILL_T),
            ("tensor cores, 4 warps", flash_tc_kernel(*dims, warps=4), PREFILL_T)]


def _variants_cpu(n: int, k: int, prefill: dict | None, decode: dict) -> list[tuple[str, Any, tuple]]:
    """The dry run's stand-in: the plain kernel as "ours", and our CUDA schedule with its thread
    loops serial (tests/cuda_emulation.py) as a variant, so that the comparison of outputs runs."""
    from tvm import tirx

    import cuda_emulation
    from inference_pio.schedules.cuda.gemv import gemv
    from inference_pio.schedules.cuda.matmul import tensor_core_linear, untensorized
    from inference_pio.targets import resolve
    from test_cuda_matmul import _linear_func

    cuda, out = resolve({"kind": "cuda", "arch": "sm_90a"}), []
    if prefill is not None:
        f = _linear_func(n, k, BF16, **prefill)
        with untensorized():
            tc = tensor_core_linear(f, cuda)
            medium = tensor_core_linear(f.with_attr("precision", "medium"), cuda)
        out += [("ours", f, (16, 64)), ("cuda, serial", cuda_emulation.serialize(tc), (16, 64)),
                ("medium, serial", cuda_emulation.serialize(medium), (16, 64))]
    f = _linear_func(n, k, BF16, t=tirx.IntImm("int64", 1), **decode)
    out.append(("ours", f, (1,)))
    sch = gemv(f, cuda)
    if sch is not None:
        out.append(("cuda, serial", cuda_emulation.serialize(sch.mod["main"]), (1,)))
    return out


def _moe_variants(shape: dict, cuda: bool) -> list[tuple[str, Any, tuple]]:
    """The routed experts (schedules/cuda/moe.py) of one sparse MLP: ours (decode's form at T =
    1, the general one above, and the general one at T = 1 as "general form"), then with TT
    (tokens per tile) and the rows per warp halved and doubled. The dry run's stand-in: the
    dense TE op as "ours" and our kernels with their thread loops serial."""
    from tvm import te

    from inference_pio.schedules import kernels

    from inference_pio.schedules.cuda import moe
    h, f, e, k = shape["hidden"], shape["inter"], shape["experts"], shape["top_k"]
    dts = ("float32", "float32", BF16, BF16, "float32")
    if not cuda:
        import cuda_emulation

        t = te.var("T", "int64")
        args = [te.placeholder((t, h), "float32", "x"), te.placeholder((t, e), "float32", "g"),
                te.placeholder((e, 2 * f, h), BF16, "w_in"), te.placeholder((e, h, f), BF16, "w_out")]
        return [("ours", te.create_prim_func(args + kernels.moe_experts(*args, slots=k)), shape["ts"]),
                ("cuda, serial", cuda_emulation.serialize(moe.routed_experts(e, h, f, k, dts)), shape["ts"]),
                ("cuda decode, serial", cuda_emulation.serialize(moe.routed_experts(e, h, f, k, dts, decode=True)),
                 (1,))]
    one, many = (1,), tuple(t for t in shape["ts"] if t > 1)

    def both(label, **knobs):  # decode's form at T = 1 (what a decode step runs), the general one above
        return [(label, moe.routed_experts(e, h, f, k, dts, decode=True, **knobs), one),
                (label, moe.routed_experts(e, h, f, k, dts, **knobs), many)]

    out = both("ours") + [("general form", moe.routed_experts(e, h, f, k, dts), one)]
    for label, knobs in ((f"{moe.TT // 2} tokens/tile", {"tokens_per_tile": moe.TT // 2}),
                         (f"{moe.TT * 2} tokens/tile", {"tokens_per_tile": moe.TT * 2}),
                         ("half the rows/warp", {"in_pairs": max(1, moe.IN_PAIRS // 2), "out_rows": moe.OUT_ROWS // 2}),
                         ("twice the rows/warp", {"in_pairs": moe.IN_PAIRS * 2, "out_rows": moe.OUT_ROWS * 2})):
        out += both(label, **knobs)[1:] if "tokens_per_tile" in knobs else both(label, **knobs)  # (decode's form has no tiles)
    return out


def _moe_params(shape: dict) -> list[dict]:
    """`_params` of a sparse MLP's kernels: (x, gates, w_in, w_out, out, *`kernels.moe_scratch`),
    a dim that grows with T as "T" or {"T": a, "+": b} (a T + b)."""
    from inference_pio.schedules.kernels import moe_scratch

    h, f, e, k = shape["hidden"], shape["inter"], shape["experts"], shape["top_k"]

    def at(t):
        return [((t, h), "float32"), ((t, e), "float32"), ((e, 2 * f, h), BF16), ((e, h, f), BF16),
                ((t, h), "float32")] + [(s, dt) for _, s, dt in moe_scratch(t, e, k, h, f)]

    def dim(d0, d1):
        return d0 if d0 == d1 else "T" if (d0, d1) == (0, 1) else {"T": d1 - d0, "+": d0}

    return [{"shape": [dim(a, b) for a, b in zip(s0, s1)], "dtype": dt} for (s0, dt), (s1, _) in zip(at(0), at(1))]


def _params(func) -> list[dict]:
    """Each parameter of ``func``: a buffer's shape (a dim that is T as "T") and dtype, or
    {"scalar": "T"} (kv_len); the static decode attention's kv_len buffer as {"kv_len": 1}, its
    counters marked "zeros" (they must start at zero, `ir.ops.append_attention`)."""
    from tvm import tirx

    from tvm.tirx.buffer import is_buffer_var

    def one(p):
        if not is_buffer_var(p):
            return {"scalar": "T"}
        if p.name == "kv_len":
            return {"kv_len": 1}
        d = {"shape": [int(d) if isinstance(d, tirx.IntImm) else "T" for d in p.shape], "dtype": str(p.dtype)}
        return d | {"zeros": 1} if p.name == "counters" else d

    return [one(p) for p in func.params]


def build(presets: dict[str, dict], out: Path, target) -> dict:
    """Compile every variant of every preset's projections into one library; ``target`` is a
    cuda target dict or "llvm" (the dry run). Returns what it wrote (for bundle.json)."""
    import tvm

    from inference_pio.schedules.cuda.attention import KC
    from inference_pio.targets import resolve

    t0 = time.perf_counter()
    desc = resolve(target)
    cuda = desc.kind == "cuda"
    entries, funcs = [], {}
    for preset, cfg in presets.items():
        # (op, N, K, parameters rotated through copies (the weights; the cache), variants)
        made = [(op, n, k, [1], _variants_cuda(n, k, prefill, decode, desc, op) if cuda else
                 _variants_cpu(n, k, prefill, decode)) for op, n, k, prefill, decode in projections(cfg)]
        heads = (cfg["num_attention_heads"], cfg["head_dim"])
        if cuda:
            made += [("attention", *heads, [1, 2], _decode_attention_variants(cfg, (KC, KC // 2, KC * 2), CONTEXTS)),
                     ("prefill attention", *heads, [1, 2], _prefill_attention(cfg))]
        else:  # the dry run's stand-in: our CUDA decode kernel with its thread loops serial
            import cuda_emulation

            made.append(("attention", *heads, [1, 2],
                         _decode_attention_variants(cfg, (KC, KC // 2), (16, 100), cuda_emulation.serialize)))
        for op, n, k, rotate, variants in made:
            for variant, func, ts, *ref in variants:  # (ref: the variant whose output this one's must match)
                name = f"k{len(entries):03d}"
                funcs[name] = func.with_attr("global_symbol", name)
                names = [p.name for p in func.params]
                entries.append({"name": name, "preset": preset, "op": op, "n": n, "k": k, "variant": variant,
                                "ts": list(ts), "params": _params(func), "rotate": rotate}
                               # the static decode attention's output comes before its scratch
                               | ({"output": names.index("out")} if "scratch" in names else {})
                               | ({"ref": ref[0]} if ref else {}))
    for preset, shape in (MOE_SHAPES if cuda else MOE_DRY).items():
        # x, gates, w_in, w_out -> out, then scratch: the gates a top_k routing, rotated (`measure`)
        for variant, func, ts in _moe_variants(shape, cuda):
            name = f"k{len(entries):03d}"
            funcs[name] = func.with_attr("global_symbol", name)
            entries.append({"name": name, "preset": preset, "op": f"experts (top {shape['top_k']} of "
                            f"{shape['experts']})", "n": shape["hidden"], "k": shape["inter"], "variant": variant,
                            "ts": list(ts), "params": _moe_params(shape), "rotate": [1], "gates": [1, shape["top_k"]],
                            "output": 4})
    if cuda:
        from inference_pio.targets.cuda_host import enable_cuda_codegen

        enable_cuda_codegen()
    out.mkdir(parents=True, exist_ok=True)
    from inference_pio.schedules.cuda.matmul import ASYNC_COPY

    # (the cp.async variants' copies; no other kernel has an async pipeline stage)
    with tvm.transform.PassContext(config=ASYNC_COPY if cuda else {}), desc.to_tvm() as tgt:
        ex = tvm.compile(tvm.IRModule(funcs), target=tgt)
    ex.export_library(str(out / "kernels.so"))
    if cuda and b".nv.info" not in (out / "kernels.so").read_bytes():
        raise RuntimeError(f"{out}/kernels.so holds CUDA source, not sm_XX binaries: is libcuda stubbed?")
    (out / "kernels.json").write_text(json.dumps({"entries": entries}, indent=1) + "\n")
    return {"entries": len(entries), "compile_s": round(time.perf_counter() - t0, 1)}


def _random(shape: list[int], dtype: str, rng) -> Any:
    """Values of a normal scale (what they are does not change the time): a random block, repeated."""
    import numpy as np

    size = int(np.prod(shape))
    v = np.resize(rng.standard_normal(min(size, 1 << 20)).astype(np.float32), size).reshape(shape)
    if dtype == BF16:
        import ml_dtypes

        return v.astype(ml_dtypes.bfloat16)
    return v.astype(dtype)


def _routing(t: int, e: int, k: int, rng) -> Any:
    """Gates (t, e) fp32 as `ir.ops.moe_gates` leaves them: k nonzero weights per token, at
    random experts."""
    import numpy as np

    g = np.zeros((t, e), np.float32)
    for i in range(t):
        g[i, rng.choice(e, size=k, replace=False)] = rng.uniform(0.5, 1.5, k) / k
    return g


def measure(kdir: Path, device: str, budget_s: float, save=None, first: tuple[str, ...] = ()) -> dict:
    """Time every entry of ``kdir``/kernels.json at each of its Ts; stops starting entries after
    ``budget_s``. The entries of the presets in ``first`` come first, in that order (then the
    others, as built), so that a budget cuts what matters least. ``save(partial)`` is called
    after each entry. Runtime-only TVM."""
    import numpy as np

    from inference_pio.engine.runtime import _tvm_runtime

    rt = _tvm_runtime(device)
    dev = rt.device(device, 0)
    lib = rt.load_module(str(kdir / "kernels.so"))
    entries = json.loads((kdir / "kernels.json").read_text())["entries"]
    # (stable: within a preset, ours before the variants checked against it)
    entries.sort(key=lambda e: first.index(e["preset"]) if e["preset"] in first else len(first))
    rng = np.random.default_rng(0)
    t0 = time.monotonic()
    res: dict[str, Any] = {"rows": [], "skipped": 0}
    host: dict[tuple, Any] = {}  # numpy inputs by (shape, dtype), shared between entries
    routings: dict[tuple, list] = {}  # a sparse MLP's gates by (T, E, top_k), likewise
    refs: dict[tuple, tuple] = {}  # (preset, op, T, variant) -> its parameters and output
    for e in entries:
        if time.monotonic() - t0 > budget_s:
            res["skipped"] += 1
            continue
        f = lib[e["name"]]
        fixed: dict[int, list] = {}  # this entry's device copies of parameters whose shape has no T
        for t in e["ts"]:
            row = {k: e[k] for k in ("preset", "op", "n", "k", "variant")} | {"t": t}
            try:
                args = []
                for i, p in enumerate(e["params"]):
                    if "scalar" in p:  # decode attention's kv_len
                        args.append([t])
                        continue
                    if "kv_len" in p:  # the static form's: a (1,) int32 buffer
                        args.append([rt.tensor(np.array([t], np.int32), dev)])
                        continue
                    if "zeros" in p:  # counters, which the kernel leaves at zero
                        args.append([rt.tensor(np.zeros(p["shape"], p["dtype"]), dev)])
                        continue
                    if i in fixed:
                        args.append(fixed[i])
                        continue
                    shape = [t if d == "T" else d["T"] * t + d["+"] if isinstance(d, dict) else d for d in p["shape"]]
                    if e.get("gates") and i == e["gates"][0]:  # a sparse MLP's gates: a routing per copy
                        key = (t, shape[1], e["gates"][1])
                        if key not in routings:  # (the same routings for every variant)
                            routings[key] = [_routing(*key, np.random.default_rng(c)) for c in range(GATE_COPIES)]
                        gates = routings[key]
                        args.append([rt.tensor(g, dev) for g in gates])
                        # the expert weights a call reads: 3 H F bf16 per expert that a token chose
                        row["weight_bytes"] = float(np.mean([(g != 0).any(0).sum() for g in gates])) * 3 * \
                            e["n"] * e["k"] * 2
                        continue
                    key = (tuple(shape), p["dtype"])
                    if key not in host:
                        host[key] = _random(shape, p["dtype"], rng)
                    a = host[key]
                    copies = max(1, min(MAX_COPIES, ROTATE_BYTES // (a.nbytes * len(e["rotate"])))) \
                        if i in e["rotate"] else 1
                    args.append([rt.tensor(a, dev) for _ in range(copies)])
                    if all(isinstance(d, int) for d in p["shape"]):
                        fixed[i] = args[-1]
                calls = [[a[j % len(a)] for a in args] for j in range(max(len(a) for a in args))]

                def run(n: int) -> float:
                    s = time.perf_counter()
                    for j in range(n):
                        f(*calls[j % len(calls)])
                    dev.sync()
                    return (time.perf_counter() - s) / n

                run(3)
                reps = int(min(3000, max(10, 0.03 / max(run(5), 1e-7))))
                row["us"] = 1e6 * min(run(reps) for _ in range(3))
                row["calls"] = reps
                if e["op"] == "attention":  # K and V rows read: t keys x kv heads x head dim, 2 bytes each
                    kv = e["params"][1]["shape"]
                    row["kv_bytes"] = 2 * t * kv[1] * kv[2] * 2
                # the output (the last buffer) against ours' on the same inputs: every variant must agree
                f(*calls[0])  # (the inputs of the first call: the rotated ones differ between copies)
                got = args[e.get("output", max(i for i, p in enumerate(e["params"]) if "shape" in p))][0].numpy()
                got = got.astype(np.float32)
                # (an entry with "ref": against that variant's output, its parameters differing)
                key = (e["preset"], e["op"], t)
                refs[key + (e["variant"],)] = (e["params"], got)
                ref = refs.get(key + (e.get("ref", "ours"),))
                if e["variant"] != "ours" and ref is not None and ("ref" in e or ref[0] == e["params"]):
                    row["diff"] = float(np.abs(got - ref[1]).max() / max(float(np.abs(ref[1]).max()), 1e-30))
            except Exception as ex:  # noqa: BLE001  (one failing kernel is a cell, not the end)
                row["error"] = f"{type(ex).__name__}: {ex}"[:300]
            res["rows"].append(row)
            args = calls = None
        fixed.clear()
        if save is not None:
            save(res)
    res["wall_s"] = round(time.monotonic() - t0, 1)
    return res


def against_ours(res: dict) -> str:
    """Each variant's time over ours', the geometric mean per kind of kernel and T over the
    rows where both ran: below 1 the variant was faster. Which defaults to flip, without reading
    across the wide table (the GEMMs are the projections at T > 1, the GEMVs at T = 1; for
    attention T is the keys)."""
    import math

    cells: dict[tuple, dict[str, float]] = {}
    for r in res.get("rows", []):
        if "us" in r:
            cells.setdefault((r["preset"], r["op"], r["n"], r["k"], r["t"]), {})[r["variant"]] = r["us"]
    ratios: dict[tuple[str, str], dict[int, list[float]]] = {}
    for (_, op, _, _, t), times in cells.items():
        ours = times.get("ours")
        kind = ("GEMM" if t > 1 else "GEMV") if op in LINEARS else op
        for variant, us in times.items():
            if ours and variant != "ours":
                ratios.setdefault((kind, variant), {}).setdefault(t, []).append(us / ours)
    if not ratios:
        return ""
    lines = ["time over ours' (geometric mean over the projections or presets that ran; < 1: faster than ours):"]
    width = max(len(v) for _, v in ratios)
    for (kind, variant), by_t in ratios.items():
        means = "  ".join(f"T={t} {math.exp(sum(map(math.log, x)) / len(x)):.2f}" for t, x in sorted(by_t.items()))
        lines.append(f"  {kind:<18} {variant:<{width}}  {means}")
    return "\n".join(lines)


def table(res: dict) -> str:
    """One line per (preset, projection, T): µs per variant; the fastest marked *, and the
    throughput of ours (TFLOP/s of the useful 2 T N K flops for T > 1, weight GB/s for T = 1)."""
    rows = res.get("rows", [])
    if not rows:
        return "kernels: nothing measured" + (f" ({res['error']})" if res.get("error") else "")
    variants: list[str] = []
    cells: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        if r["variant"] not in variants:
            variants.append(r["variant"])
        cells.setdefault((r["preset"], r["op"], r["n"], r["k"], r["t"]), {})[r["variant"]] = r
    head = ["preset", "linear", "N x K", "T"] + [f"{v} µs" for v in variants] + ["ours", "diff"]
    lines = [head]
    for (preset, op, n, k, t), by in cells.items():
        times = {v: r["us"] for v, r in by.items() if "us" in r}
        best = min(times.values()) if times else None
        line = [preset, op, f"{n}x{k}", str(t)]
        for v in variants:
            r = by.get(v)
            if r is None:
                line.append("")
            elif "us" not in r:
                line.append("error")
            else:
                line.append(f"{r['us']:.1f}" + ("*" if r["us"] == best else ""))
        ours = times.get("ours")
        if ours is None:
            line.append("")
        elif op == "attention":  # n heads of k dims, over t keys: K and V read once per kv head
            line.append(f"{by['ours'].get('kv_bytes', 0) / (ours * 1e-6) / 1e9:.0f} GB/s")
        elif "weight_bytes" in by["ours"]:  # a sparse MLP: the routed experts' weights
            line.append(f"{by['ours']['weight_bytes'] / (ours * 1e-6) / 1e9:.0f} GB/s")
        elif op == "prefill attention":  # causal: q k^T and p v over half of the t x t pairs
            line.append(f"{2 * t * t * n * k / (ours * 1e-6) / 1e12:.1f} TFLOP/s")
        elif t == 1:
            line.append(f"{2 * n * k / (ours * 1e-6) / 1e9:.0f} GB/s")
        else:
            line.append(f"{2 * t * n * k / (ours * 1e-6) / 1e12:.1f} TFLOP/s")
        diffs = [r["diff"] for r in by.values() if "diff" in r]
        line.append(f"{max(diffs):.0e}" if diffs else "")
        lines.append(line)
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    text = ["  ".join(c.rjust(w) if j >= 3 else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths)))
            for row in lines]
    text.insert(1, "-" * len(text[0]))
    errors = [f"{r['preset']} {r['op']} {r['variant']} T={r['t']}: {r['error']}" for r in rows if "error" in r]
    errors += [f"DIFFERS from ours: {r['preset']} {r['op']} {r['variant']} T={r['t']}: {r['diff']:.1e}"
               for r in rows if r.get("diff", 0) > tolerance(r)]
    note = (f"{res['skipped']} entries skipped (time budget). " if res.get("skipped") else "") + \
        "* = fastest; ours = TFLOP/s of 2 T N K (T > 1), bf16 weight GB/s (T = 1) or K and V GB/s " \
        "(attention: N query heads of K dims over T cached keys; prefill attention: TFLOP/s of its " \
        "2 T^2 N K causal flops; experts: GB/s of the chosen experts' weights, N = hidden, K = expert width), " \
        "launch included; diff = the largest relative difference of a variant's " \
        "output from ours' on the same inputs (those with the same parameters)."
    return "\n".join(text + [note] + errors[:10])
