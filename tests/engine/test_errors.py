"""Malformed inputs to a loaded model and to `engine.load` raise typed errors that say what is
wrong: InputError (token ids), ArtifactError (artifact / device / mismatched weights),
WeightError (checkpoint tensors)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import hf_fixtures
from inference_pio import engine
from inference_pio.engine import ArtifactError, InputError
from inference_pio.frontends import WeightError
from inference_pio.model_defs import ConfigError

NAME = "gqa5x1"  # vocab 97, compiled with max_seq_len 64


@pytest.fixture(scope="module")
def rt(models):
    return models.runtime(NAME)


@pytest.fixture(scope="module")
def art(models) -> Path:
    return models.artifact(NAME)


@pytest.fixture(scope="module")
def weights(models) -> Path:
    return models.checkpoint(NAME).path


@pytest.fixture
def art_copy(art, tmp_path) -> Path:
    d = tmp_path / "art"
    shutil.copytree(art, d)
    return d


def edit_manifest(d: Path, **changes) -> None:
    f = d / "manifest.json"
    m = json.loads(f.read_text())
    m.update(changes)
    f.write_text(json.dumps(m))


# **** token ids ****


@pytest.mark.parametrize("ids,match", [
    ([5, 97, 3], r"token id 97 is out of range \[0, 97\)"),
    ([-1], r"token id -1 is out of range \[0, 97\)"),
    ([2**40], r"token id 1099511627776 is out of range"),
    ([], r"ids must be a non-empty list of token ids, got shape \(0,\)"),
    ([[1, 2]], r"got shape \(1, 2\)"),
    ([1.0, 2.0], "ids must be integers, got float64"),
    (list(range(65)), "context of 65 tokens is longer than the compiled maximum 64"),
])
def test_bad_ids(rt, ids, match):
    with pytest.raises(InputError, match=match):
        rt.logits(ids)


def test_ids_may_be_any_integer_array(rt):
    a = rt.logits(np.array([1, 96, 0], dtype=np.int64))
    b = rt.logits([1, 96, 0])
    assert (a == b).all()


def test_input_error_is_a_value_error():
    assert issubclass(InputError, ValueError) and issubclass(ArtifactError, ValueError)


# **** artifacts ****


def test_not_an_artifact(tmp_path, weights):
    with pytest.raises(ArtifactError, match=r"is not an inference-pio artifact \(no manifest.json\)"):
        engine.load(tmp_path, weights=weights)


def test_manifest_not_json(art_copy, weights):
    (art_copy / "manifest.json").write_text("{")
    with pytest.raises(ArtifactError, match="manifest.json is not valid JSON"):
        engine.load(art_copy, weights=weights)


def test_manifest_of_another_format(art_copy, weights):
    edit_manifest(art_copy, format="something-else")
    with pytest.raises(ArtifactError, match="is not an inference-pio manifest \\(format='something-else'\\)"):
        engine.load(art_copy, weights=weights)


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_other_format_version(art_copy, weights, version):
    edit_manifest(art_copy, format_version=version)
    with pytest.raises(ArtifactError, match=f"artifact format version {version} is not supported .* recompile"):
        engine.load(art_copy, weights=weights)


def test_wrong_device_requested(art, weights):
    with pytest.raises(ArtifactError, match=r"compiled for 'cpu' \(llvm\) but device='cuda' was requested"):
        engine.load(art, weights=weights, device="cuda")


def test_artifact_for_another_device(art_copy, weights):
    edit_manifest(art_copy, device="cuda", target={"kind": "cuda", "arch": "sm_90a"})
    with pytest.raises(ArtifactError, match=r"compiled for 'cuda' \(cuda\) but device='cpu' was requested"):
        engine.load(art_copy, weights=weights, device="cpu")


def test_artifact_needs_cpu_features_this_cpu_lacks(art_copy, weights):
    from inference_pio.targets import SIMD_FLAGS, host_cpu_flags

    have = host_cpu_flags()
    lacking = [f for f in SIMD_FLAGS if f not in have]
    if not have or not lacking:
        pytest.skip("cannot read this CPU's flags, or it has every flag we know")
    edit_manifest(art_copy, cpu_flags=list(have) + lacking[-1:])
    with pytest.raises(ArtifactError, match=rf"compiled for a CPU with \['{lacking[-1]}'\], which this CPU lacks"):
        engine.load(art_copy, weights=weights)


def test_manifest_records_the_compile(art):
    from inference_pio.engine import manifest as mf

    m = mf.read(art)
    assert m["format"] == mf.FORMAT and m["format_version"] == mf.FORMAT_VERSION
    assert m["device"] == "cpu" and m["target"]["kind"] == "llvm" and m["matmul_precision"] == "high"
    assert m["family"] == "qwen3" and m["vocab_size"] == 97 and m["max_seq_len"] == 64
    assert m["model_config"]["num_key_value_heads"] == 1 and m["model_config"]["head_dim"] == 6
    fwd = m["functions"]["forward"]
    assert [i["name"] for i in fwd["inputs"]][:2] == ["ids", "positions"]
    assert fwd["outputs"][0]["name"] == "logits"
    assert {p["dtype"] for p in m["params"]} == {"float32"}
    assert (art / mf.LIBRARY).is_file()


# **** weights that do not fit the artifact ****


def test_weights_of_another_config(models, art):
    other = models.checkpoint("tied_bias")
    with pytest.raises(ArtifactError, match="have vocab_size=131 but the artifact was compiled for vocab_size=97"):
        engine.load(art, weights=other.path)


@pytest.fixture(scope="module")
def head_dim_8(tmp_path_factory):
    """Same vocab/hidden/layers/heads/intermediate as gqa5x1, but head_dim 8 instead of 6."""
    return hf_fixtures.make_checkpoint(tmp_path_factory.mktemp("hd8"), NAME, head_dim=8)


def test_weights_whose_shapes_differ(art, head_dim_8):
    with pytest.raises((WeightError, ArtifactError), match=r"head_dim|q_proj\.weight.*\(56, 40\).*\(42, 40\)"):
        engine.load(art, weights=head_dim_8.path)


def test_weights_config_json_not_json(art, weights, tmp_path):
    d = tmp_path / "w"
    shutil.copytree(weights, d)
    (d / "config.json").write_text("not json")
    with pytest.raises((ArtifactError, ConfigError), match="config.json"):
        engine.load(art, weights=d)


def edited_weights(weights, tmp_path, edit):
    """A copy of the checkpoint with ``edit(tensors)`` applied to its safetensors."""
    d = tmp_path / "w"
    shutil.copytree(weights, d)
    t = load_file(str(d / "model.safetensors"))
    edit(t)
    save_file(t, str(d / "model.safetensors"))
    return d


def test_weights_missing_a_tensor(art, weights, tmp_path):
    d = edited_weights(weights, tmp_path, lambda t: t.pop("model.layers.1.self_attn.v_proj.weight"))
    with pytest.raises(WeightError, match=r"missing tensor 'model.layers.1.self_attn.v_proj.weight' "
                                          r"\(needed for 'model.layers.1.self_attn.q\+k\+v_proj.weight'\)"):
        engine.load(art, weights=d)


def test_weights_with_a_misshapen_tensor(art, weights, tmp_path):
    d = edited_weights(weights, tmp_path,
                       lambda t: t.update({"model.layers.0.post_attention_layernorm.weight": np.ones(39, np.float32)}))
    with pytest.raises(WeightError, match=r"tensor 'model.layers.0.post_attention_layernorm.weight' has shape "
                                          r"\(39,\) but the model expects \(40,\)"):
        engine.load(art, weights=d)


def test_weights_truncated(art, weights, tmp_path):
    d = tmp_path / "w"
    shutil.copytree(weights, d)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    with pytest.raises(WeightError, match="the file is truncated"):
        engine.load(art, weights=d)


def test_weights_directory_missing(art, tmp_path):
    with pytest.raises(WeightError, match="no safetensors weights in"):
        engine.load(art, weights=tmp_path / "nowhere")
