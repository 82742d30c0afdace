from __future__ import annotations

import numpy as np
import pytest

from graph_helpers import random_weights
from inference_pio import model_defs
from inference_pio.ir import interpret
from inference_pio.passes import default_passes, insert_kv_cache, run, specialize, static_decode

HF = {"architectures": ["Qwen3ForCausalLM"], "vocab_size": 23, "hidden_size": 12, "intermediate_size": 7,
      "num_hidden_layers": 2, "num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 4,
      "tie_word_embeddings": False, "dtype": "float32"}
CAP = 16


def _forward():
    return model_defs.from_hf_config(HF, "float32").graph


def _prefill():
    return insert_kv_cache(run(_forward(), default_passes()), CAP)


def test_kv_len_becomes_data_and_every_shape_static():
    g = static_decode(specialize(_prefill(), "decode", seq_len=1))
    kv_len = next(n for n in g.inputs if n.name == "kv_len")
    assert kv_len.shape == (1,) and kv_len.dtype == "int32" and not kv_len.attr("shape_only")
    assert all(isinstance(d, int) for n in g.nodes() for d in n.shape)
    assert g.meta_dict()["static_inputs"] is True
    assert all(n.attr("kv_len_tensor") for n in g.nodes() if n.op in ("kv_append", "cache_attention"))


def test_same_step_as_the_shape_form():
    """A decode step at kv_len 5 over a cache holding 4 rows: same logits, same cache writes."""
    decode = specialize(_prefill(), "decode", seq_len=1)
    static = static_decode(decode)
    rng = np.random.default_rng(0)
    w = random_weights(_forward(), rng)  # the checkpoint's tensors (fused params are built from them)
    caches = {n.name: rng.standard_normal(n.shape).astype(np.float32) for n in decode.inputs
              if n.name.startswith("cache.")}
    feeds = {"ids": np.array([7], np.int32), "positions": np.array([4], np.int32),
             "inv_temperature": np.zeros(1, np.float32), "sample_key": np.zeros(1, np.int32)}
    a_caches = {k: v.copy() for k, v in caches.items()}
    b_caches = {k: v.copy() for k, v in caches.items()}
    a = interpret(decode, {**feeds, **a_caches, "kv_len": np.zeros(5)}, w)
    b = interpret(static, {**feeds, **b_caches, "kv_len": np.array([5], np.int32)}, w)
    np.testing.assert_array_equal(a["logits"], b["logits"])
    for k in caches:
        np.testing.assert_array_equal(a_caches[k], b_caches[k])


def test_needs_static_dims_apart_from_kv_len():
    with pytest.raises(ValueError, match=r"symbolic dims \['seq_len'\] remain"):
        static_decode(_prefill())


def test_append_attention_gets_the_sync_counters():
    """CUDA's decode fusions (`passes.decode_passes`) make each layer's attention an
    append_attention; static_decode hands each one the same (Hkv,) int32 counters, a new input."""
    from inference_pio.passes import cache_passes, decode_passes, fold_slices
    from inference_pio.passes.static_decode import SYNC

    # (fold_slices: q, k and v as column windows of one q+k+v row, which the fusions read)
    decode = specialize(run(fold_slices(_prefill()), cache_passes("cuda")), "decode", seq_len=1)
    g = static_decode(run(decode, decode_passes("cuda")))
    (sync,) = [n for n in g.inputs if n.name == SYNC]
    assert sync.shape == (1,) and sync.dtype == "int32" and sync.attr("zeroed")  # (the runtime's zeros)
    attn = [n for n in g.nodes() if n.op == "append_attention"]
    assert len(attn) == 2 and all(n.inputs[7] is sync for n in attn)
    assert SYNC not in {n.name for n in static_decode(specialize(_prefill(), "decode", seq_len=1)).inputs}
