from __future__ import annotations

import numpy as np
import pytest

from graph_helpers import random_weights
from inference_pio.ir import GraphBuilder, interpret
from inference_pio.passes import insert_sampler


def _decode_like(rows: int = 1):
    b = GraphBuilder("decode")
    x = b.input("x", (rows, 6), "float32")
    return b.build({"logits": b.linear(x, b.param("lm_head", (13, 6), "float32"))})


def test_adds_the_draw_and_keeps_the_logits():
    g = _decode_like()
    g2 = insert_sampler(g)
    assert [n.name for n in g2.inputs] == ["x", "inv_temperature", "sample_key"]
    assert [k for k, _ in g2.outputs] == ["logits", "token"]
    g2.verify()
    rng = np.random.default_rng(0)
    w = random_weights(g, rng)
    feeds = {"x": rng.standard_normal((1, 6)).astype(np.float32), "inv_temperature": np.zeros(1, np.float32),
             "sample_key": np.zeros(1, np.int32)}
    out = interpret(g2, feeds, w)
    assert out["token"][0] == np.argmax(out["logits"][0])
    np.testing.assert_array_equal(out["logits"], interpret(g, feeds, w)["logits"])


def test_needs_last_token_logits():
    with pytest.raises(ValueError, match=r"expects last-token logits \(1, vocab\)"):
        insert_sampler(_decode_like(rows=3))
