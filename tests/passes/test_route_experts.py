from __future__ import annotations

"""route_experts only annotates: the op's meaning (and its numpy reference) ignores slots."""
from inference_pio.ir import GraphBuilder
from inference_pio.model_defs import blocks
from inference_pio.passes import route_experts


def moe_graph(top_k: int = 3):
    b = GraphBuilder("moe")
    x = b.input("x", ("T", 12), "float32")
    y = blocks.sparse_moe(b, x, "l.mlp", hidden=12, inter=7, experts=5, top_k=top_k, normalize=True, dtype="float32")
    return b.build({"y": y})


def test_slots_are_the_gates_top_k():
    g = moe_graph(top_k=3)
    out = route_experts(g)
    (n,) = [n for n in out.ops() if n.op == "moe_experts"]
    assert n.attr("slots") == 3
    assert [m.attr("slots") for m in route_experts(out).ops() if m.op == "moe_experts"] == [3]  # idempotent


def test_gates_from_elsewhere_are_left_alone():
    b = GraphBuilder("dense_gates")
    x = b.input("x", ("T", 12), "float32")
    gates = b.input("gates", ("T", 5), "float32")
    y = b.moe_experts(x, gates, *blocks.expert_stacks(b, "l.mlp.experts", 12, 7, 5, "float32"))
    g = b.build({"y": y})
    (n,) = [n for n in route_experts(g).ops() if n.op == "moe_experts"]
    assert n.attr("slots") is None
