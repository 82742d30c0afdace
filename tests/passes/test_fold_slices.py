from __future__ import annotations

import numpy as np

from graph_helpers import assert_same_numerics, op_counts, random_weights
from inference_pio import model_defs
from inference_pio.passes import default_passes, fold_slices, insert_kv_cache, run, specialize

HF = {"architectures": ["Qwen3ForCausalLM"], "vocab_size": 23, "hidden_size": 12, "intermediate_size": 7,
      "num_hidden_layers": 2, "num_attention_heads": 3, "num_key_value_heads": 1, "head_dim": 4,
      "tie_word_embeddings": True, "dtype": "float32"}
CAP = 16


def _graphs():
    source = model_defs.from_hf_config(HF, "float32").graph
    forward = run(source, default_passes())  # ends with fold_slices
    return source, forward, insert_kv_cache(forward, CAP)


def test_q_and_k_read_windows_of_the_projection_in_the_forward():
    _, forward, _ = _graphs()
    rot = [n for n in forward.ops() if n.op == "norm_rotary"]
    assert [(n.attr("start"), n.attr("heads")) for n in rot] == [(0, 3), (12, 1)] * 2
    assert op_counts(forward).get("slice", 0) == 2  # v, read by attention: still a copy


def test_prefill_and_decode_keep_their_numerics():
    source, _, prefill = _graphs()
    folded = fold_slices(prefill)
    assert op_counts(folded)["slice"] == 1  # only the last-row slice of the logits
    assert all(n.attr("start") == 16 for n in folded.ops() if n.op == "kv_append" and n.inputs[1].ndim == 2)
    rng = np.random.default_rng(0)
    w = random_weights(source, rng)
    caches = {n.name: rng.standard_normal(n.shape).astype(np.float32) for n in prefill.inputs
              if n.name.startswith("cache.")}
    feeds = {"ids": np.array([7, 3, 9], np.int32), "positions": np.arange(2, 5, dtype=np.int32),
             "kv_len": np.zeros(5), **caches}
    assert_same_numerics(prefill, folded, feeds, w)
    decode = specialize(prefill, "decode", seq_len=1)
    assert op_counts(fold_slices(decode)).get("slice", 0) == 0  # the last row of one row is the row
    feeds = {**feeds, "ids": np.array([7], np.int32), "positions": np.array([4], np.int32)}
    assert_same_numerics(decode, fold_slices(decode), feeds, w)


def test_is_idempotent():
    _, forward, prefill = _graphs()
    assert str(fold_slices(forward)) == str(forward)
    assert str(fold_slices(fold_slices(prefill))) == str(fold_slices(prefill))
