"""insert_sampler: draw the next token inside a prefill/decode graph.

Adds inputs ``inv_temperature`` (1,) float32 and ``sample_key`` (1,) int32 and an output
``token`` = sample_token(logits, inv_temperature, sample_key): the argmax at inverse
temperature 0, else a Gumbel-max draw from softmax(logits * inv_temperature) (see
`ir.ops.sample_token`). The logits stay an output, for samplers the kernel does not do
(top-k, top-p); on a GPU only the 4-byte token then crosses to the host.
"""
from __future__ import annotations

from ..ir import Graph, TensorType, input_node, op_node


def insert_sampler(graph: Graph) -> Graph:
    logits = graph.output("logits")
    if logits.ndim != 2 or logits.shape[0] != 1:
        raise ValueError(f"insert_sampler: expects last-token logits (1, vocab), got {logits.type}")
    inv_t = input_node("inv_temperature", TensorType((1,), "float32"))
    key = input_node("sample_key", TensorType((1,), "int32"))
    token = op_node("sample_token", [logits, inv_t, key])
    return Graph(graph.name, graph.inputs + (inv_t, key), graph.outputs + (("token", token),), graph.meta)
