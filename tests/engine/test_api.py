"""The public engine API: compile / save / load, targets, and runtime-only deployment."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hf_fixtures
from inference_pio import engine, frontends
from inference_pio.targets import TargetError, resolve


def test_engine_compile_stays_callable_after_first_use():
    import inference_pio.engine.compiler  # noqa: F401  (what the first engine.compile() call does)

    assert callable(engine.compile)


def test_compile_artifact_layout(models):
    art_dir = models.artifact("mha_theta")
    assert {"manifest.json", "model.so"} <= {p.name for p in art_dir.iterdir()}
    m = json.loads((art_dir / "manifest.json").read_text())
    assert m["model_config"]["rope_theta"] == 10000.0 and m["model_config"]["rms_norm_eps"] == 1e-5
    # every param the runtime will load names its checkpoint sources
    for p in m["params"]:
        assert p["name"].startswith(("model.", "lm_head.")), p["name"]


def test_unsupported_targets_are_refused_before_compiling(models):
    md = frontends.huggingface.model_def(models.checkpoint("mha_theta").path)
    with pytest.raises(TargetError, match="unsupported target 'metal'"):
        engine.compile(md, target="metal")


def test_unknown_matmul_precision_is_refused_before_compiling(models):
    md = frontends.huggingface.model_def(models.checkpoint("gqa5x1").path)
    with pytest.raises(ValueError, match=r"matmul_precision must be one of \('auto', 'high', 'medium'\), got 'low'"):
        engine.compile(md, target="llvm", matmul_precision="low")


def test_resolve_targets():
    t = resolve("llvm")
    assert t.kind == "llvm" and t.device == "cpu" and t.num_cores >= 1 and t.vector_lanes in (4, 8, 16)
    assert resolve(t) is t
    assert resolve({"kind": "llvm", "mcpu": "znver4", "num-cores": 3}).num_cores == 3
    c = resolve({"kind": "cuda", "arch": "sm_90a"})
    assert c.device == "cuda" and c.max_shared_memory_per_block == 232448
    with pytest.raises(TargetError, match="cuda arch 'ampere' must look like 'sm_90a'"):
        resolve({"kind": "cuda", "arch": "ampere"})


def test_artifact_loads_from_a_fresh_process_equal_results(models, tmp_path):
    """Runtime-only deployment: with TVM_USE_RUNTIME_LIB=1, load + logits work without the
    compiler, and neither tvm.relax nor our compiler modules get imported. (tvm_ffi imports
    torch when it is installed, and tvm imports tvm.te even in runtime mode: not checked.)"""
    art = models.artifact("tied_bias")
    ck = models.checkpoint("tied_bias")
    ids = hf_fixtures.token_ids(131, 10, seed=9)
    out = tmp_path / "logits.npy"
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from inference_pio import engine
        rt = engine.load({str(art)!r}, weights={str(ck.path)!r}, device="cpu")
        np.save({str(out)!r}, rt.logits({ids!r}))
        mods = ["tvm.relax", "tvm.s_tir", "inference_pio.engine.compile", "inference_pio.passes",
                "inference_pio.schedules"]
        print(json.dumps({{m: m in sys.modules for m in mods}}))
    """)
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = json.loads(r.stdout.strip().splitlines()[-1])
    assert loaded == {m: False for m in loaded}, loaded
    ours = np.load(out)
    assert hf_fixtures.rel_err(ours, hf_fixtures.hf_logits(ck.model, ids)) <= 1e-4
    assert (ours == models.runtime("tied_bias").logits(ids)).all()
