"""The CUDA target: artifacts compile on a machine without a GPU and hold device binaries;
on a machine with one, they match transformers."""
from __future__ import annotations

import re
import shutil

import pytest

import hf_fixtures
from inference_pio import engine, frontends

CUDA = {"kind": "cuda", "arch": "sm_90a"}
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (the CUDA toolkit)")


def _has_gpu() -> bool:
    try:
        import tvm

        return tvm.cuda(0).exist
    except Exception:  # noqa: BLE001
        return False


@pytest.fixture(scope="module")
def cuda_artifact(models, tmp_path_factory):
    md = frontends.huggingface.model_def(models.checkpoint("gqa5x1").path)
    return engine.compile(md, target=CUDA, max_seq_len=64).save(tmp_path_factory.mktemp("cuda_art"))


@needs_nvcc
def test_cuda_artifact_holds_device_binaries_not_source(cuda_artifact):
    import json

    lib = (cuda_artifact / "model.so").read_bytes()
    assert b"__global__" not in lib, "CUDA source was embedded instead of a binary"
    assert b".nv.info" in lib and b"sm_90a" in lib  # an sm_90a ELF cubin
    m = json.loads((cuda_artifact / "manifest.json").read_text())
    assert m["device"] == "cuda" and m["target"]["arch"] == "sm_90a"
    assert set(m["functions"]) == {"forward", "prefill", "decode", "top_k"}  # (top_k: sampling candidates)


@needs_nvcc
def test_cuda_artifact_refuses_cpu(cuda_artifact, models):
    with pytest.raises(engine.ArtifactError, match="compiled for 'cuda'"):
        engine.load(cuda_artifact, weights=models.checkpoint("gqa5x1").path, device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="needs a CUDA GPU")
def test_cuda_logits_and_greedy_match_transformers(cuda_artifact, models):
    ck = models.checkpoint("gqa5x1")
    rt = engine.load(cuda_artifact, weights=ck.path, device="cuda")
    ids = [3, 17, 5, 42, 8, 1, 29]
    assert hf_fixtures.rel_err(rt.logits(ids), hf_fixtures.hf_logits(ck.model, ids)) <= 1e-4
    assert rt.generate(ids, max_new_tokens=16) == models.runtime("gqa5x1").generate(ids, max_new_tokens=16)


def _kernel_calls(vm_text: str, fn: str) -> list[str]:
    """The kernels a VM function launches itself (not through a captured CUDA graph)."""
    body = vm_text.split(f"@{fn}:\n", 1)[1].split("\n\n", 1)[0]
    return [m for m in re.findall(r"^\s*call\s+(\S+)", body, re.M) if not m.startswith("vm.builtin.")]


@needs_nvcc
def test_cuda_graph_captures_the_whole_decode_step(models, cuda_artifact, tmp_path):
    import json

    # wide32: every K a multiple of 32, so that decode's linears take our GEMV, whose fused norm
    # needs no workspace (dlight's, at odd shapes, keeps the sum of squares in a global buffer)
    md = frontends.huggingface.model_def(models.checkpoint("wide32", dtype="bfloat16").path)
    art = engine.compile(md, target=CUDA, max_seq_len=64)  # the default: a graph where the kernels allow one
    assert art.manifest["cuda_graph"] is True
    # one graph replay, then only the two kernels whose outputs are returned (a graph's memory is its own)
    text = art.executable.as_text()
    assert len(_kernel_calls(text, "decode")) == 2, _kernel_calls(text, "decode")
    assert len(_kernel_calls(text, "decode_cuda_graph_capture")) > 10
    assert "vm.builtin.cuda_graph.run_or_capture" in text.split("@decode:", 1)[1].split("\n\n")[0]
    assert art.manifest["functions"]["decode"]["static_inputs"] is True
    # decode's rms_norms ride in the next linear (passes.decode_passes); prefill keeps its own
    ops = {name: {n.op for n in g.ops()} for name, g in art.graphs.items()}
    assert "rms_norm" not in ops["decode"] and "rms_norm" in ops["prefill"]
    # a layer's key and value appends are one kernel (passes.fuse_append_pair) in prefill, and
    # ride in the attention kernel in decode (passes.fuse_append_attention)
    layers = md.config.num_hidden_layers
    ops = {name: [n.op for n in art.graphs[name].ops() if "append" in n.op] for name in ("prefill", "decode")}
    assert ops == {"prefill": ["kv_append_pair"] * layers, "decode": ["append_attention"] * layers}, ops
    # decode's attention merges its key chunks in the last block of each kv head, found through
    # counters in a persistent input (`passes.static_decode`): no merge kernel
    sync = [i for i in art.manifest["functions"]["decode"]["inputs"] if i["name"] == "cache.sync"]
    assert sync == [{"name": "cache.sync", "shape": [2], "dtype": "int32", "zeroed": True}], sync  # (runtime: zeros)
    def find_cuda(m):
        return m if m.kind == "cuda" else next(filter(None, map(find_cuda, m.imports)), None)

    cuda = find_cuda(art.executable.mod)
    bounds = {name: b for b, name in re.findall(r'extern "C" __global__ void __launch_bounds__\(([\d, ]+)\) (\w+)\(',
                                                 cuda.inspect_source(""))}
    assert bounds.get("append_attention_kernel") == "512, 2", bounds  # (two blocks per SM: ptxas is told)
    assert not any(n.startswith("append_attention_kernel_") for n in bounds)
    assert "tvm_builtin_cuda_atomic_add(" in cuda.inspect_source("")
    lib = (art.save(tmp_path / "graph") / "model.so").read_bytes()
    assert b"vm.builtin.cuda_graph.run_or_capture" in lib and b".nv.info" in lib
    # at gqa5x1's odd shapes dlight schedules decode's linears (K is not a multiple of 32); since
    # the fused norm scales the finished sums (2026-12-05) none of them takes TVM workspace,
    # so that artifact is a graph too
    assert b"vm.builtin.cuda_graph.run_or_capture" in (cuda_artifact / "model.so").read_bytes()
    m = json.loads((cuda_artifact / "manifest.json").read_text())
    assert m["cuda_graph"] is True and "cuda_graph_blocked_by" not in m and "cuda_graph_blocked_by" not in art.manifest


@needs_nvcc
def test_a_decode_kernel_that_takes_workspace_turns_the_default_graph_off(models, monkeypatch):
    """A captured decode step must not call a kernel that allocates TVM workspace at each call
    (`limits.check`, tests/schedules/test_cuda_limits.py). If one does, the default compiles
    decode without a graph and names the kernel; asked for a graph, compile raises."""
    from inference_pio.schedules.cuda import limits

    real = limits.check

    def check(mod, tdesc, graphed=(), optional=False):  # as if decode's first linear took workspace
        first = sorted(limits.called(mod, "decode") & {gv.name_hint for gv, _ in mod.functions_items()
                                                       if gv.name_hint.startswith("linear")})[0]
        if graphed and optional:
            return {first: ["T.alloc_buffer((1,))"]}
        if graphed:
            raise ValueError(f"{first} (called by decode, which a CUDA graph captures): allocates TVM workspace")
        return real(mod, tdesc, graphed, optional)

    monkeypatch.setattr(limits, "check", check)
    md = frontends.huggingface.model_def(models.checkpoint("gqa5x1").path)
    art = engine.compile(md, target=CUDA, max_seq_len=64)
    assert art.manifest["cuda_graph"] is False and len(art.manifest["cuda_graph_blocked_by"]) == 1
    assert "vm.builtin.cuda_graph.run_or_capture" not in art.executable.as_text()
    with pytest.raises(ValueError, match=r"linear\d* \(called by decode, which a CUDA graph captures\): allocates TVM "
                                         r"workspace"):
        engine.compile(md, target=CUDA, max_seq_len=64, cuda_graph=True)


def test_cuda_graph_needs_a_cuda_target(models):
    md = frontends.huggingface.model_def(models.checkpoint("gqa5x1").path)
    with pytest.raises(ValueError, match="cuda_graph=True needs a cuda target"):
        engine.compile(md, target="llvm", cuda_graph=True)
