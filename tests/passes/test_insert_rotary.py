from __future__ import annotations

import numpy as np

from graph_helpers import assert_same_numerics, op_counts
from inference_pio.ir import GraphBuilder
from inference_pio.passes import insert_rotary


def two_heads_graph(theta_k: float = 1e4):
    b = GraphBuilder("rope")
    q = b.input("q", ("T", 3, 8), "float32")
    k = b.input("k", ("T", 1, 8), "float32")
    rq = b.positional(q, theta=1e4, rotary_dim=8)
    rk = b.positional(k, theta=theta_k, rotary_dim=8)
    rq2 = b.positional(b.silu(q), theta=1e4, rotary_dim=4)  # partial rotary, another table
    return b.build({"q": rq, "k": rk, "q2": rq2})


def test_positional_becomes_rotary_with_shared_tables():
    g = two_heads_graph()
    g2 = insert_rotary(g)
    assert op_counts(g2) == {"rope_table": 2, "rotary": 3, "silu": 1}  # (1e4, 8) shared by q and k
    assert [i.name for i in g2.inputs] == ["q", "k", "positions"]
    pos = g2.inputs[-1]
    assert pos.type.shape == ("T",) and pos.dtype == "int32"
    text = str(g2)
    assert "= rope_table(%positions, rotary_dim=8, theta=10000.0) : f32[T, 8]" in text
    assert "= rope_table(%positions, rotary_dim=4, theta=10000.0) : f32[T, 4]" in text
    g2.verify()


def test_distinct_theta_gets_its_own_table():
    assert op_counts(insert_rotary(two_heads_graph(theta_k=1e6)))["rope_table"] == 3


def test_numerics_unchanged_at_positions_0_to_T():
    g = two_heads_graph()
    g2 = insert_rotary(g)
    rng = np.random.default_rng(0)
    t = 6
    feeds = {"q": rng.standard_normal((t, 3, 8)).astype(np.float32),
             "k": rng.standard_normal((t, 1, 8)).astype(np.float32),
             "positions": np.arange(t, dtype=np.int32)}
    assert_same_numerics(g, g2, feeds, {})


def test_existing_positions_input_is_reused():
    b = GraphBuilder("g")
    x = b.input("x", ("T", 2, 4), "float32")
    b.input("positions", ("T",), "int32")
    g = b.build({"y": b.positional(x, theta=1e4, rotary_dim=4)})
    g2 = insert_rotary(g)
    assert [i.name for i in g2.inputs] == ["x", "positions"]
    assert g2.inputs[1] is g.inputs[1]


def test_no_positional_is_a_no_op():
    b = GraphBuilder("g")
    g = b.build({"y": b.silu(b.input("x", (2,), "float32"))})
    assert insert_rotary(g) is g


def test_multimodal_positions_are_three_rows():
    """sections: positions become (3, T) (t, h, w) and the table reads a row per frequency;
    at equal rows it is plain RoPE."""
    b = GraphBuilder("mrope")
    x = b.input("x", ("T", 2, 12), "float32")
    g = b.build({"y": b.positional(x, theta=5e6, rotary_dim=12, sections=(2, 2, 2))})
    g2 = insert_rotary(g)
    assert g2.inputs[-1].type.shape == (3, "T")
    t = 5
    feeds = {"x": np.random.default_rng(1).standard_normal((t, 2, 12)).astype(np.float32),
             "positions": np.stack([np.arange(t, dtype=np.int32)] * 3)}
    assert_same_numerics(g, g2, feeds, {})


def test_mixed_multimodal_and_plain_positions_are_refused():
    import pytest

    b = GraphBuilder("g")
    x = b.input("x", ("T", 2, 12), "float32")
    g = b.build({"a": b.positional(x, theta=1e4, rotary_dim=12, sections=(2, 2, 2)),
                 "b": b.positional(x, theta=1e4, rotary_dim=12)})
    with pytest.raises(ValueError, match="some positional ops are multimodal"):
        insert_rotary(g)
