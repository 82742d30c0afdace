"""bench/gpu/kernel_bench.py, the GPU run's kernel table, rehearsed on the CPU at a tiny shape:
build (our CUDA schedules serialized, beside the plain kernels), measure with the runtime,
compare outputs, print the table. The GPU session relies on this path working the first time."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = dict(vocab_size=100, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16)


def test_build_measure_table(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tests" / "schedules"))
    monkeypatch.syspath_prepend(str(REPO / "bench" / "gpu"))
    sys.modules.pop("kernel_bench", None)
    import kernel_bench

    info = kernel_bench.build({"tiny": TINY}, tmp_path / "k", "llvm")
    # 4 projections x (prefill, decode) x (plain, CUDA schedule serialized), prefill's CUDA
    # schedule at matmul precision "medium" too, the LM head's decode twice, decode attention with
    # 64 and 32 keys per block, with the query norm fused and with the appends too, and graphed
    # decode's form of the latter with a merge kernel and merged in its last blocks; a sparse MLP
    # (the dense op, our routed kernels serialized: the general form and decode's)
    assert info["entries"] == 4 * 2 * 2 + 4 + 2 + 4 + 2 + 3
    # (the sparse MLP's preset first, as `remote.py --presets` would ask)
    res = kernel_bench.measure(tmp_path / "k", "cpu", budget_s=60, first=("dry-moe",))
    assert res["skipped"] == 0 and not [r for r in res["rows"] if "error" in r]
    assert [r["preset"] for r in res["rows"]][:4] == ["dry-moe"] * 4 and res["rows"][-1]["preset"] == "tiny"
    ops = {(r["op"], r["variant"]) for r in res["rows"]}
    assert ("down", "cuda, serial") in ops and ("attention", "32 keys/block") in ops
    assert ("attention", "q norm + appends fused") in ops
    # (their kv_len a buffer, their counters zeros, their output before the scratch)
    graphed = {r["variant"]: r for r in res["rows"] if r["variant"].startswith("graphed") and r["t"] == 100}
    assert set(graphed) == {"graphed, merge kernel", "graphed, merged in its last blocks"}
    assert graphed["graphed, merged in its last blocks"]["diff"] < kernel_bench.DIFF_TOL  # (against the first)
    moe = [r for r in res["rows"] if r["op"].startswith("experts") and r["variant"] == "cuda, serial"]
    assert [r["t"] for r in moe] == [1, 16] and all("diff" in r for r in moe)  # routed = dense, on a top-k routing
    assert [r["t"] for r in res["rows"] if r["variant"] == "cuda decode, serial" and "diff" in r] == [1]
    # our CUDA schedules agree with the plain kernels (the split GEMM to its bf16 rounding)
    diffs = [r["diff"] for r in res["rows"] if "diff" in r and r["variant"] != "medium, serial"]
    assert diffs and max(diffs) < kernel_bench.DIFF_TOL
    medium = [r["diff"] for r in res["rows"] if r["variant"] == "medium, serial"]  # bf16(x): ~1e-3
    assert len(medium) == 8 and max(medium) < kernel_bench.MEDIUM_TOL
    text = kernel_bench.table(res)
    assert "q+k+v" in text and "attention" in text and "DIFFERS" not in text
    summary = kernel_bench.against_ours(res).splitlines()  # one line per (kind, variant): its T and ratio
    assert any(ln.split()[:2] == ["GEMM", "cuda,"] and "T=16" in ln for ln in summary), summary
    assert any(ln.split()[0] == "attention" and "32 keys/block" in ln for ln in summary), summary
