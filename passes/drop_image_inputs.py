"""drop_image_inputs: take the image features out of a graph that never sees an image token.

Matches: ``merge_rows(h, feats, rows)`` and ``add_rows(h, feats, rows)`` (Qwen3-VL puts image
features into the hidden states with them, `model_defs.qwen3_vl`).
Produces: ``h``; inputs that only these ops read (image_rows, image_embeds, deepstack.*) are
removed from the graph's inputs.
Ensures: no merge_rows or add_rows remain. Decode runs it: a generated token is never an
image's placeholder, so decode reads no features and its inputs keep static shapes.
"""
from __future__ import annotations

from ..ir import Graph, Node, rewrite

IMAGE_OPS = ("merge_rows", "add_rows")


def drop_image_inputs(graph: Graph) -> Graph:
    if not any(n.op in IMAGE_OPS for n in graph.ops()):
        return graph

    def fn(n: Node, _old: Node) -> Node | None:
        return n.inputs[0] if n.op in IMAGE_OPS else None

    out = rewrite(graph, fn)
    before, after = {id(n) for n in graph.nodes()}, {id(n) for n in out.nodes()}
    dropped = {id(i) for i in graph.inputs if id(i) in before and id(i) not in after}
    return rewrite(out, lambda n, _old: None, inputs=[i for i in out.inputs if id(i) not in dropped])
