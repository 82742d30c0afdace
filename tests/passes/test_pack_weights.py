from __future__ import annotations

import numpy as np
import pytest

from graph_helpers import assert_same_numerics, op_counts, random_weights
from inference_pio.ir import GraphBuilder
from inference_pio.ir.ops import pack_rows, unpack_rows
from inference_pio.passes.pack_weights import pack_weights


@pytest.mark.parametrize("n,block", [(5, 4), (16, 16), (17, 16), (1, 8)])
def test_pack_rows_round_trip(n, block):
    w = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    p = pack_rows(w, block)
    assert p.shape == (-(-n // block), 3, block)
    assert (unpack_rows(p, n) == w).all()


def test_tied_embedding_and_projections_packed():
    b = GraphBuilder("g")
    ids = b.input("ids", ("T",), "int32")
    emb = b.param("embed", (11, 6), "bfloat16")
    h = b.embedding(emb, ids)
    w = b.param("w", (5, 6), "float32")
    h2 = b.add(h, b.linear(h, b.param("up", (6, 6), "float32")))
    g = b.build({"logits": b.linear(h2, emb), "other": b.linear(h, w)})
    g2 = pack_weights(g, block=4)
    assert op_counts(g2) == {"embedding": 1, "linear_packed": 3, "add": 1}
    p = {x.name: x for x in g2.params()}
    assert p["embed"].shape == (3, 6, 4) and p["embed"].attr("pack") == 4 and p["embed"].attr("rows") == 11
    assert p["w"].shape == (2, 6, 4)
    rng = np.random.default_rng(0)
    assert_same_numerics(g, g2, {"ids": np.array([0, 10, 3], np.int32)}, random_weights(g, rng))


def test_weight_read_by_other_ops_stays_unpacked():
    b = GraphBuilder("g")
    x = b.input("x", ("T", 4), "float32")
    w = b.param("w", (4, 4), "float32")
    g = b.build({"y": b.linear(x, w), "z": b.add(w, w)})
    g2 = pack_weights(g, block=4)
    assert op_counts(g2) == op_counts(g)


def test_expert_stacks_packed_per_expert():
    b = GraphBuilder("g")
    x = b.input("x", ("T", 6), "float32")
    gates = b.moe_gates(b.linear(x, b.param("router", (4, 6), "float32")), top_k=2)
    w_in, w_out = b.param("w_in", (4, 10, 6), "float32"), b.param("w_out", (4, 6, 5), "float32")
    g = b.build({"y": b.moe_experts(x, gates, w_in, w_out)})
    g2 = pack_weights(g, block=4)
    p = {x.name: x for x in g2.params()}
    assert p["w_in"].shape == (4, 3, 6, 4) and (p["w_in"].attr("pack"), p["w_in"].attr("rows")) == (4, 10)
    assert p["w_out"].shape == (4, 2, 5, 4) and p["w_out"].attr("rows") == 6
    moe = next(n for n in g2.nodes() if n.op == "moe_experts")
    assert (moe.attr("pack"), moe.attr("inter")) == (4, 5)
    w = np.arange(4 * 10 * 6, dtype=np.float32).reshape(4, 10, 6)
    assert (unpack_rows(pack_rows(w, 4), 10) == w).all()
    rng = np.random.default_rng(0)
    assert_same_numerics(g, g2, {"x": rng.standard_normal((5, 6)).astype(np.float32)}, random_weights(g, rng))


@pytest.mark.parametrize("dtype,inter,paired", [("bfloat16", 6, True), ("bfloat16", 5, False), ("float32", 6, False)])
def test_expert_panels_paired_for_amx(dtype, inter, paired):
    """pairs=True (a CPU with AMX): bf16 stacks whose K (hidden, expert width) are even get
    their panels' rows paired, both or neither; the numbers stay the same."""
    b = GraphBuilder("g")
    x = b.input("x", ("T", 8), "float32")
    gates = b.moe_gates(b.linear(x, b.param("router", (4, 8), "float32")), top_k=2)
    w_in, w_out = b.param("w_in", (4, 2 * inter, 8), dtype), b.param("w_out", (4, 8, inter), dtype)
    g = b.build({"y": b.moe_experts(x, gates, w_in, w_out)})
    g2 = pack_weights(g, block=4, pairs=True)
    moe = next(n for n in g2.nodes() if n.op == "moe_experts")
    assert bool(moe.attr("pairs")) == paired
    assert all(bool(p.attr("pairs")) == paired for p in g2.params() if p.name.startswith("w_"))
    rng = np.random.default_rng(1)
    assert_same_numerics(g, g2, {"x": rng.standard_normal((5, 8)).astype(np.float32)}, random_weights(g, rng))
