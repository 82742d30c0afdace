"""drop_image_inputs: decode's graph loses the image features and the inputs that carry them."""
from __future__ import annotations

from inference_pio.ir import GraphBuilder
from inference_pio.passes import drop_image_inputs


def _graph():
    b = GraphBuilder("g")
    ids = b.input("ids", ("T",), "int32")
    rows = b.input("image_rows", ("T",), "int32")
    feats = b.input("image_embeds", ("N", 8), "float32")
    extra = b.input("deepstack.0", ("N", 8), "float32")
    h = b.embedding(b.param("embed", (11, 8), "float32"), ids)
    h = b.merge_rows(h, feats, rows)
    h = b.silu(h)
    h = b.add_rows(h, extra, rows)
    return b.build({"y": b.silu(h)})


def test_rows_ops_and_their_inputs_go():
    g = drop_image_inputs(_graph())
    assert [i.name for i in g.inputs] == ["ids"]
    assert g.count("merge_rows") == 0 and g.count("add_rows") == 0 and g.count("silu") == 2
    g.verify()


def test_a_graph_without_images_is_unchanged():
    b = GraphBuilder("g")
    g = b.build({"y": b.silu(b.input("x", ("T", 4), "float32"))})
    assert drop_image_inputs(g) is g
