"""The op set: type rules, and reference semantics checked against torch / transformers."""
from __future__ import annotations

import numpy as np
import pytest

from inference_pio.ir import OPS, TensorType, input_node, op_node

T = TensorType


def inp(shape, dtype="float32", name="x"):
    return input_node(name, T(tuple(shape), dtype))


@pytest.mark.parametrize("op,shapes,attrs,match", [
    ("swiglu", [(3, 5)], {}, "last dim must be even"),
    ("slice", [("T", 4)], {"axis": 0, "start": 0, "stop": 2}, "symbolic dim 'T' must be a tail"),
    ("slice", [(3, 4)], {"axis": 2, "start": 0}, "axis 2 out of range"),
    ("reshape", [("T", 4)], {"shape": ("T", 3)}, r"cannot reshape \('T', 4\) to \('T', 3\)"),
    ("transpose", [(2, 3)], {"perm": (0, 0)}, "not a permutation"),
    ("positional", [(4, 2, 6)], {"theta": 1e4, "rotary_dim": 8}, "must be even and <= head dim 6"),
    ("positional", [(4, 6)], {"theta": 1e4, "rotary_dim": 2}, r"expects \(T, H, D\)"),
    ("attention", [(4, 3, 8), (4, 2, 8), (4, 2, 8)], {"scale": 1.0}, "query heads 3 must be a multiple of kv heads 2"),
    ("attention", [(4, 2, 8), (4, 2, 8), (4, 2, 8)], {}, "needs a float scale"),
    ("rms_norm", [(4, 8), (7,)], {"eps": 1e-6}, r"weight shape \(7,\) must equal x's last dim \(8,\)"),
    ("rms_norm", [(4, 8), (8,)], {"eps": 1}, "needs a float eps"),
    ("concat", [(2, 3), (3, 3)], {"axis": 1}, "differ outside the concat axis"),
    ("concat", [("T", 3), ("T", 3)], {"axis": 0}, "concat axis must be static"),
    ("linear", [(2, 4), (3, 4), (4,)], {"bias": True}, r"bias shape \(4,\) != \(3,\)"),
    ("linear", [(2, 4), (3, 4)], {"bias": True}, "extra operands must match"),
    ("linear", [(2, 4), (3, 4), (2, 4)], {"residual": True}, r"residual f32\[2, 4\] must equal the output type f32\[2, 3\]"),
    ("linear", [(2, 4), (3, 4)], {"out_act": "swiglu"}, "out_act='swiglu' needs an even number of weight rows"),
    ("linear", [(2, 4), (6, 4), (2, 3)], {"out_act": "swiglu", "residual": True}, "takes no residual"),
    ("linear", [(2, 4), (6, 4)], {"out_act": "gelu"}, "unknown linear out_act 'gelu'"),
    ("matmul", [(2, 3, 4), (3, 4, 5)], {}, "batch dims must match"),
])
def test_type_rules_reject_with_reasons(op, shapes, attrs, match):
    ins = [inp(s, name=f"x{i}") for i, s in enumerate(shapes)]
    with pytest.raises(ValueError, match=match):
        op_node(op, ins, **attrs)


def test_type_rules_accept():
    assert op_node("swiglu", [inp(("T", 6))]).shape == ("T", 3)
    assert op_node("slice", [inp(("T", 4))], axis=0, start=-1).shape == (1, 4)
    assert op_node("slice", [inp((5, 4))], axis=0, start=1, stop=-1).shape == (3, 4)
    assert op_node("repeat", [inp(("T", 2, 3))], axis=1, times=3).shape == ("T", 6, 3)
    assert op_node("embedding", [inp((7, 3)), inp(("T",), "int32", "ids")], out_dtype="bfloat16").type == \
        T(("T", 3), "bfloat16")
    assert op_node("linear", [inp(("T", 4)), inp((3, 4), "bfloat16", "w")]).type == T(("T", 3), "float32")
    assert op_node("rope_table", [inp(("T",), "int32")], theta=1e4, rotary_dim=6).type == T(("T", 6), "float32")
    assert op_node("attention", [inp((2, 6, 8)), inp((5, 2, 8), name="k"), inp((5, 2, 3), name="v")],
                   scale=0.5).shape == (2, 6, 3)


def test_every_op_documents_itself():
    for name, d in OPS.items():
        assert d.name == name and d.doc, name


# **** references against torch / transformers ****


def test_rms_norm_matches_transformers():
    import torch
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm

    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 14)).astype(np.float32)
    w = rng.standard_normal(14).astype(np.float32)
    m = Qwen3RMSNorm(14, eps=1e-5)
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(w))
        ref = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(OPS["rms_norm"].ref(x, w, eps=1e-5), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("theta,d", [(1e6, 6), (1e4, 14)])
def test_rope_matches_transformers(theta, d):
    import torch
    from transformers import Qwen3Config
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding, apply_rotary_pos_emb

    cfg = Qwen3Config(hidden_size=4 * d, num_attention_heads=4, head_dim=d,
                      rope_parameters={"rope_type": "default", "rope_theta": theta})
    t, h = 9, 3
    rng = np.random.default_rng(1)
    q = rng.standard_normal((t, h, d)).astype(np.float32)
    pos = np.arange(t)
    emb = Qwen3RotaryEmbedding(cfg)
    with torch.no_grad():
        qt = torch.from_numpy(q).transpose(0, 1)[None]  # (1, H, T, D)
        cos, sin = emb(qt, torch.from_numpy(pos)[None])
        ref, _ = apply_rotary_pos_emb(qt, qt, cos, sin)
    ref = ref[0].transpose(0, 1).numpy()
    table = OPS["rope_table"].ref(pos, theta=theta, rotary_dim=d)
    np.testing.assert_allclose(OPS["rotary"].ref(q, table), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(OPS["positional"].ref(q, theta=theta, rotary_dim=d), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_matches_torch_sdpa_with_gqa(causal):
    import torch

    rng = np.random.default_rng(2)
    t, hq, hkv, d = 7, 6, 2, 5
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((t, hq, d), (t, hkv, d), (t, hkv, d)))
    ours = OPS["attention"].ref(q, k, v, scale=0.4, causal=causal)
    tq, tk, tv = (torch.from_numpy(a).transpose(0, 1) for a in (q, k, v))
    tk, tv = tk.repeat_interleave(hq // hkv, 0), tv.repeat_interleave(hq // hkv, 0)
    ref = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal, scale=0.4)
    np.testing.assert_allclose(ours, ref.transpose(0, 1).numpy(), rtol=1e-5, atol=1e-6)


def test_causal_mask_with_more_keys_than_queries():
    x = np.zeros((2, 4), np.float32)
    m = OPS["causal_mask"].ref(x)
    assert np.isneginf(m).tolist() == [[False, False, False, True], [False, False, False, False]]


def test_references_compute_in_fp32_and_keep_storage_dtype():
    import ml_dtypes

    bf = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=ml_dtypes.bfloat16)
    assert OPS["silu"].ref(bf).dtype == bf.dtype
    assert OPS["softmax"].ref(bf).dtype == bf.dtype
    assert OPS["linear"].ref(bf, bf).dtype == np.float32
    assert OPS["linear"].ref(bf, bf, out_dtype="bfloat16").dtype == bf.dtype
    assert OPS["embedding"].ref(bf, np.array([0]), out_dtype="float32").dtype == np.float32
