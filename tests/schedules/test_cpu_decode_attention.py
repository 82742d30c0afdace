"""The split-key decode attention on CPU (`schedules/cpu/decode_attention.py`)."""
from __future__ import annotations

import numpy as np
import pytest

from kernel_harness import check, lowered_kernel, rand


def decode_graph(hq: int, hkv: int, d: int, cap: int, dt: str):
    from inference_pio.ir import Graph, TensorType, input_node, op_node

    q = input_node("q", TensorType((1, hq, d), dt))
    kc, vc = (input_node(n, TensorType((cap, hkv, d), dt)) for n in ("kc", "vc"))
    n = input_node("kv_len", TensorType(("kv_len",), "int64"), shape_only=True)
    o = op_node("cache_attention", [q, kc, vc, n], scale=d ** -0.5)
    return Graph("decode_attention", (q, kc, vc, n), (("o", o),))


def test_rule_takes_one_row_over_a_cache():
    from inference_pio.schedules.cpu.decode_attention import split_key_attention
    from inference_pio.targets import resolve

    assert split_key_attention(lowered_kernel(decode_graph(4, 2, 32, 100, "float32"), "scale"),
                               resolve("llvm")) is not None
    # head dim not a multiple of the SIMD width
    assert split_key_attention(lowered_kernel(decode_graph(4, 2, 6, 100, "float32"), "scale"), resolve("llvm")) is None


@pytest.mark.parametrize("kv_len", [1, 63, 64, 65, 200])
@pytest.mark.parametrize("hq,hkv,d,dt", [(4, 2, 32, "float32"), (8, 8, 16, "bfloat16"), (16, 8, 128, "bfloat16")])
def test_split_key_decode_attention(kv_len, hq, hkv, d, dt):
    """Chunks of 64 keys merged; rows past kv_len are NaN garbage that must not leak in."""
    rng = np.random.default_rng(kv_len * 7 + d)
    cap = 208
    garbage = np.where(np.arange(cap) < kv_len, 1, np.nan)[:, None, None]
    cache = lambda: (rand(rng, (cap, hkv, d)) * garbage).astype(rand(rng, (1,), dt).dtype)  # noqa: E731
    check(decode_graph(hq, hkv, d, cap, dt), {"q": rand(rng, (1, hq, d), dt, 3.0), "kc": cache(), "vc": cache(),
                                              "kv_len": np.zeros(kv_len)}, dtype=dt, rtol=2e-5)
