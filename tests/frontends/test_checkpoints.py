"""Reading Hugging Face checkpoints: config.json, safetensors files, and mapping tensors onto
a graph's params. Malformed inputs raise ConfigError / WeightError naming what is wrong."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from inference_pio import passes
from inference_pio.frontends import WeightError, huggingface
from inference_pio.frontends.safetensors import SafetensorsFiles, read_header
from inference_pio.model_defs import ConfigError


@pytest.fixture(scope="module")
def base(models):
    return models.checkpoint("gqa5x1")


@pytest.fixture
def ckpt(base, tmp_path) -> Path:
    """A private copy of the fp32 gqa5x1 checkpoint to tamper with."""
    d = tmp_path / "ckpt"
    shutil.copytree(base.path, d)
    return d


def tensors(d: Path) -> dict[str, np.ndarray]:
    return load_file(str(d / "model.safetensors"))


def rewrite_tensors(d: Path, fn) -> None:
    t = tensors(d)
    fn(t)
    save_file(t, str(d / "model.safetensors"))


def load(d: Path, fused: bool = False):
    md = huggingface.model_def(d)
    g = passes.run(md.graph, passes.default_passes()) if fused else md.graph
    return huggingface.load_for_graph(md, g, d)


def raw_safetensors(path: Path, header: dict, data: bytes = b"") -> Path:
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)
    return path


# **** config.json ****


def test_no_config_json(tmp_path):
    with pytest.raises(ConfigError, match="no config.json in"):
        huggingface.model_def(tmp_path)


def test_config_not_json(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["Qwen3ForCausalLM"],')
    with pytest.raises(ConfigError, match=r"config.json is not valid JSON"):
        huggingface.model_def(tmp_path)


def test_config_not_an_object(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        huggingface.model_def(tmp_path)


def test_config_missing_field(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["num_attention_heads"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="lacks required field 'num_attention_heads'"):
        huggingface.model_def(ckpt)


def test_config_unknown_architecture(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["MambaForCausalLM"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="unknown architecture 'MambaForCausalLM'"):
        huggingface.model_def(ckpt)


def test_model_def_reads_only_config_json(ckpt):
    (ckpt / "model.safetensors").unlink()
    md = huggingface.model_def(ckpt)
    assert md.config.hidden_size == 40 and md.config.num_key_value_heads == 1


# **** loading weights ****


def test_weights_match_the_file_and_are_converted(base):
    w = load(base.path)
    ref = tensors(base.path)
    assert set(w) == set(ref)  # untied: every tensor is a param
    for k, v in ref.items():
        assert w[k].dtype == np.float32 and (w[k] == v).all()


def test_fused_params_are_concatenations(base):
    w = load(base.path, fused=True)
    ref = tensors(base.path)
    qkv = w["model.layers.0.self_attn.q+k+v_proj.weight"]
    p = "model.layers.0.self_attn."
    assert (qkv == np.concatenate([ref[p + "q_proj.weight"], ref[p + "k_proj.weight"], ref[p + "v_proj.weight"]])).all()


def test_bf16_checkpoint_converts_exactly(models):
    import ml_dtypes

    ck = models.checkpoint("bf16", dtype="bfloat16")
    md = huggingface.model_def(ck.path, dtype="float32")
    w = huggingface.load_for_graph(md, md.graph, ck.path)
    st = SafetensorsFiles([ck.path / "model.safetensors"])
    name = "model.layers.0.mlp.down_proj.weight"
    assert st.get(name).dtype == ml_dtypes.bfloat16
    assert w[name].dtype == np.float32 and (w[name] == st.get(name).astype(np.float32)).all()
    assert "lm_head.weight" not in w  # tied


def test_missing_tensor(ckpt):
    rewrite_tensors(ckpt, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(WeightError, match="is missing tensor 'model.layers.1.mlp.up_proj.weight'"):
        load(ckpt)
    with pytest.raises(WeightError, match=r"missing tensor 'model.layers.1.mlp.up_proj.weight' "
                                          r"\(needed for 'model.layers.1.mlp.gate\+up_proj.weight'\)"):
        load(ckpt, fused=True)


def test_unexpected_tensor(ckpt):
    rewrite_tensors(ckpt, lambda t: t.update({"model.layers.0.mlp.extra.weight": np.zeros(3, np.float32)}))
    with pytest.raises(WeightError, match=r"tensors the model does not use: \['model.layers.0.mlp.extra.weight'\]"):
        load(ckpt)


def test_many_unexpected_tensors_are_summarized(ckpt):
    rewrite_tensors(ckpt, lambda t: t.update({f"junk.{i}": np.zeros(1, np.float32) for i in range(8)}))
    with pytest.raises(WeightError, match=r"\(and 3 more\)"):
        load(ckpt)


def test_tied_checkpoint_may_carry_lm_head(models, tmp_path):
    ck = models.checkpoint("bf16", dtype="bfloat16")
    d = tmp_path / "tied"
    shutil.copytree(ck.path, d)
    t = load_file(str(d / "model.safetensors"))
    t["lm_head.weight"] = t["model.embed_tokens.weight"]
    save_file(t, str(d / "model.safetensors"))
    assert "lm_head.weight" not in load(d)


def test_shape_mismatch_names_tensor_and_both_shapes(ckpt):
    rewrite_tensors(ckpt, lambda t: t.update({"model.norm.weight": np.ones(41, np.float32)}))
    with pytest.raises(WeightError, match=r"tensor 'model.norm.weight' has shape \(41,\) but the model expects \(40,\)"):
        load(ckpt)


def test_shape_mismatch_in_a_fused_source(ckpt):
    name = "model.layers.0.self_attn.k_proj.weight"
    rewrite_tensors(ckpt, lambda t: t.update({name: np.ones((7, 40), np.float32)}))
    with pytest.raises(WeightError) as e:
        load(ckpt, fused=True)
    msg = str(e.value)
    assert name in msg and "(7, 40)" in msg and "(6, 40)" in msg and "q+k+v_proj" in msg


def test_misshapen_sources_of_a_fused_param_are_rejected(ckpt):
    p = "model.layers.0.self_attn."

    def tamper(t):
        q, k = t[p + "q_proj.weight"], t[p + "k_proj.weight"]
        both = np.concatenate([q, k])
        t[p + "q_proj.weight"], t[p + "k_proj.weight"] = both[:32].copy(), both[32:].copy()

    rewrite_tensors(ckpt, tamper)
    with pytest.raises(WeightError, match="q_proj.weight"):
        load(ckpt, fused=True)


def test_integer_tensor_for_a_float_param(ckpt):
    rewrite_tensors(ckpt, lambda t: t.update({"model.norm.weight": np.ones(40, np.int32)}))
    with pytest.raises(WeightError, match="cannot convert a int32 tensor to float32"):
        load(ckpt)


# **** safetensors files ****


def test_no_weights_at_all(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(WeightError, match="no safetensors weights in"):
        load(ckpt)


@pytest.mark.parametrize("keep,match", [
    (4, r"truncated safetensors file \(4 bytes, no header\)"),
    (0, r"truncated safetensors file \(0 bytes, no header\)"),
    (20, r"header length \d+ exceeds the file size 20; truncated\?"),
    (-100, r"tensor '.*' ends at byte \d+ past the file end \d+; the file is truncated"),
])
def test_truncated_file(ckpt, keep, match):
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(WeightError, match=match) as e:
        load(ckpt)
    assert "model.safetensors" in str(e.value)


def test_malformed_header(tmp_path):
    f = tmp_path / "x.safetensors"
    f.write_bytes(struct.pack("<Q", 5) + b"{oops")
    with pytest.raises(WeightError, match=r"x.safetensors: malformed safetensors header"):
        read_header(f)


def test_unsupported_dtype_and_bad_span(tmp_path):
    f = raw_safetensors(tmp_path / "a.safetensors", {"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}},
                        b"\0\0")
    with pytest.raises(WeightError, match="tensor 'w' has unsupported dtype F8_E4M3"):
        read_header(f)
    f = raw_safetensors(tmp_path / "b.safetensors", {"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}},
                        bytes(20))
    with pytest.raises(WeightError, match=r"tensor 'w' spans 20 bytes but \(2, 3\) float32 needs 24"):
        read_header(f)


def test_reader_matches_safetensors_library(base):
    st = SafetensorsFiles([base.path / "model.safetensors"])
    ref = tensors(base.path)
    assert set(st.tensors) == set(ref)
    for k, v in ref.items():
        a = st.get(k)
        assert a.shape == v.shape and (a == v).all()
        assert not a.flags.writeable  # a view of the memory map, not a copy


def test_duplicate_tensor_across_files(tmp_path):
    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "a.safetensors"))
    save_file({"w": np.ones(2, np.float32)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(WeightError, match="tensor 'w' appears in both .*a.safetensors and .*b.safetensors"):
        SafetensorsFiles([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])


# **** sharded checkpoints ****


@pytest.fixture(scope="module")
def sharded(models):
    return models.checkpoint("gqa5x1", seed=20, max_shard_size="20KB")


def test_sharded_checkpoint_loads_every_tensor(sharded):
    index = json.loads((sharded.path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2
    w = load(sharded.path)
    assert set(w) == set(index["weight_map"])


def test_index_lists_a_missing_shard(sharded, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(sharded.path, d)
    shard = sorted(d.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(WeightError, match=rf"lists shards that do not exist: \[.*{shard.name}"):
        load(d)


def test_index_names_a_tensor_its_shard_lacks(sharded, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(sharded.path, d)
    f = d / "model.safetensors.index.json"
    index = json.loads(f.read_text())
    first = sorted(index["weight_map"].values())[0]
    index["weight_map"]["model.ghost.weight"] = first
    f.write_text(json.dumps(index))
    with pytest.raises(WeightError, match=rf"says 'model.ghost.weight' is in {first}, but it is not there"):
        load(d)
