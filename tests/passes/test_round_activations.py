"""passes.round_activations: producers of x for "medium" bf16 linears store bf16, nothing else."""
from __future__ import annotations

import numpy as np
import pytest

from inference_pio import frontends
from inference_pio.ir import GraphBuilder
from inference_pio.passes import gemm_passes, matmul_precision, round_activations


def _block(w_dtype="bfloat16", extra_reader=False, output=False):
    """A Qwen3-like block: rms_norm -> linear; attention -> reshape -> linear; swiglu -> linear."""
    b = GraphBuilder("g")
    x = b.input("x", ("T", 8), "float32")
    n = b.rms_norm(x, b.param("norm.weight", (8,), "float32"), eps=1e-6)
    qkv = b.linear(n, b.param("qkv", (24, 8), w_dtype))
    q = b.reshape(b.slice(qkv, axis=1, start=0, stop=8), shape=("T", 2, 4))
    k = b.reshape(b.slice(qkv, axis=1, start=8, stop=16), shape=("T", 2, 4))
    v = b.reshape(b.slice(qkv, axis=1, start=16, stop=24), shape=("T", 2, 4))
    a = b.reshape(b.attention(q, k, v, scale=0.5), shape=("T", 8))
    h = b.linear(a, b.param("o", (8, 8), w_dtype), x, residual=True)
    g = b.swiglu(b.linear(h, b.param("gate_up", (12, 8), w_dtype)))
    y = b.linear(g, b.param("down", (8, 6), w_dtype), h, residual=True)
    outs = {"y": y}
    if extra_reader:
        outs["n2"] = b.add(n, x)
    if output:
        outs["g"] = g
    return b.build(outs)


def _dtypes(g):
    return {n.op: n.dtype for n in g.ops() if n.op in ("rms_norm", "attention", "swiglu")}


def test_producers_of_medium_bf16_linears_store_bf16():
    g = round_activations(matmul_precision(_block(), "medium"))
    assert _dtypes(g) == {"rms_norm": "bfloat16", "attention": "bfloat16", "swiglu": "bfloat16"}
    assert all(n.dtype == "float32" for n in g.ops() if n.op == "linear")  # outputs (and the residual) stay fp32


@pytest.mark.parametrize("case", ["high", "fp32 weights", "another reader", "a graph output"])
def test_leaves_x_in_fp32_where_not_rounded_anyway(case):
    g = {"high": lambda: matmul_precision(_block(), "high"),
         "fp32 weights": lambda: matmul_precision(_block(w_dtype="float32"), "medium"),
         "another reader": lambda: matmul_precision(_block(extra_reader=True), "medium"),
         "a graph output": lambda: matmul_precision(_block(output=True), "medium")}[case]()
    out = _dtypes(round_activations(g))
    if case == "another reader":
        assert out == {"rms_norm": "float32", "attention": "bfloat16", "swiglu": "bfloat16"}
    elif case == "a graph output":
        assert out == {"rms_norm": "bfloat16", "attention": "bfloat16", "swiglu": "float32"}
    else:
        assert set(out.values()) == {"float32"}


def test_leaves_x_of_a_linear_that_computes_on_it_first():
    """A linear with a fused swiglu of x (act) multiplies silu(gate) * up, computed in fp32 from
    its x: a rounded x would change that, so the producer keeps fp32."""
    b = GraphBuilder("g")
    x = b.input("x", ("T", 8), "float32")
    n = b.rms_norm(x, b.param("norm.weight", (8,), "float32"), eps=1e-6)
    y = b.linear(n, b.param("down", (5, 4), "bfloat16"), act="swiglu")
    g = round_activations(matmul_precision(b.build({"y": y}), "medium"))
    assert _dtypes(g) == {"rms_norm": "float32"}


def test_only_cuda_gets_it():
    assert [p.name for p in gemm_passes("cuda")] == ["round_activations"] and gemm_passes("llvm") == []


class _Stop(Exception):
    """Raised in place of lowering, once the compiler has built its graphs."""


def test_qwen3_prefill_and_forward_on_cuda(models, monkeypatch):
    """A tiny bf16 Qwen3 compiled for cuda at "medium": in prefill and forward both norms, the
    attention and the swiglu of every layer store bf16, and in forward the final norm too (in
    prefill it reaches the LM head through the last row's slice, and stays fp32); decode is
    untouched."""
    from inference_pio.engine import compiler

    md = frontends.huggingface.model_def(models.checkpoint("bf16", dtype="bfloat16").path)
    graphs = {}

    def capture(gs):
        graphs.update(gs)
        raise _Stop

    monkeypatch.setattr(compiler, "lower", capture)  # the graphs as lowering gets them; no CUDA build
    monkeypatch.setattr("inference_pio.targets.cuda_host.enable_cuda_codegen", lambda: None)
    with pytest.raises(_Stop):
        compiler.compile(md, target={"kind": "cuda", "arch": "sm_90a"}, max_seq_len=64)
    layers = md.config.num_hidden_layers
    for name in ("forward", "prefill"):
        bf16 = [n.op for n in graphs[name].ops() if n.dtype == "bfloat16" and n.op in ("rms_norm", "swiglu",
                                                                                      "attention", "cache_attention")]
        assert sorted(bf16) == sorted(["rms_norm"] * (2 * layers + (name == "forward")) + ["swiglu"] * layers
                                      + ["attention" if name == "forward" else "cache_attention"] * layers), name
    assert not any(n.dtype == "bfloat16" and n.op in ("rms_norm", "swiglu") for n in graphs["decode"].ops())


def test_emulated_cuda_model_gives_the_same_logits(models, tmp_path):
    """The CUDA schedules run serially here (tests/cuda_emulation.py), a tiny bf16 Qwen3 at
    "medium": with the pass and without it the logits agree to fp32 summation order (the GEMM
    rounded x to bf16 as the producers now do), and the greedy tokens are the same."""
    import cuda_emulation

    from inference_pio import engine, passes

    ck = models.checkpoint("wide32", dtype="bfloat16")
    md = frontends.huggingface.model_def(ck.path)
    cuda = {"kind": "cuda", "arch": "sm_90a"}
    rounded = cuda_emulation.compile_emulated(md, cuda, max_seq_len=64, matmul_precision="medium")
    assert any(n.dtype == "bfloat16" and n.op == "rms_norm" for n in rounded.graphs["prefill"].ops())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(passes, "gemm_passes", lambda kind: [])
        plain = cuda_emulation.compile_emulated(md, cuda, max_seq_len=64, matmul_precision="medium")
    assert not any(n.dtype == "bfloat16" and n.op == "rms_norm" for n in plain.graphs["prefill"].ops())
    a = engine.load(rounded.save(tmp_path / "a"), weights=ck.path, device="cpu")
    b = engine.load(plain.save(tmp_path / "b"), weights=ck.path, device="cpu")
    ids = [int(i) for i in np.arange(5, 25) % md.config.vocab_size]
    la, lb = a.logits(ids), b.logits(ids)
    assert np.abs(la - lb).max() <= 1e-5 * np.abs(lb).max()
    assert a.generate(ids[:7], max_new_tokens=8) == b.generate(ids[:7], max_new_tokens=8)
