"""engine.load + generate in a fresh process with TVM_USE_RUNTIME_LIB=1: no compiler, no tvm.relax."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import json, sys
from inference_pio import engine
rt = engine.load(sys.argv[1], weights=sys.argv[2], device="cpu")
out = {"logits": rt.logits([1, 2, 3]).tolist(), "gen": rt.generate([1, 2, 3], max_new_tokens=8),
       "relax": any(m.startswith("tvm.relax") for m in sys.modules)}
print(json.dumps(out))
"""


@pytest.mark.parametrize("name,quantize", [("gqa5x1", None), ("gqa5x1", "int8"), ("glm_groups", "int8"),
                                           ("next_odd", None)])
def test_load_and_generate_without_the_compiler(models, name, quantize):
    """int8: the loader quantizes the checkpoint with numpy alone (GLM: and stacks its experts).
    Qwen3-Next: the linear-attention states are plain runtime buffers, updated in place."""
    art, ck = models.artifact(name, quantize=quantize), models.checkpoint(name)
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(art), str(ck.path)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["relax"] is False
    rt = models.runtime(name, quantize=quantize)
    assert out["gen"] == rt.generate([1, 2, 3], max_new_tokens=8)
    import numpy as np

    np.testing.assert_allclose(np.array(out["logits"]), rt.logits([1, 2, 3]), rtol=0, atol=1e-5)


def test_compiling_without_the_compiler_is_a_clear_error(models, tmp_path):
    """A cache miss in runtime-only mode names the problem instead of failing inside TVM."""
    script = ("import sys\nfrom inference_pio import engine, frontends\n"
              "md = frontends.huggingface.model_def(sys.argv[1])\n"
              "try:\n    engine.compile(md, 'llvm')\n"
              "except engine.ArtifactError as e:\n    print('ERR', e)\n")
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1", "INFERENCE_PIO_CACHE": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", script, str(models.checkpoint("gqa5x1").path)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "ERR compiling needs TVM's compiler" in r.stdout and "TVM_USE_RUNTIME_LIB=1" in r.stdout
