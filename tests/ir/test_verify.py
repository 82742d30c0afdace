"""The verifier catches malformed graphs with messages that name the graph, node and problem."""
from __future__ import annotations

import pytest

from inference_pio.ir import Graph, GraphError, Node, TensorType, input_node, op_node, param_node, verify

F = TensorType((2, 3), "float32")


def graph(*outs: Node, inputs=()) -> Graph:
    return Graph("g", tuple(inputs), tuple((f"y{i}", o) for i, o in enumerate(outs)))


def test_valid_graph_passes():
    x = input_node("x", F)
    g = graph(op_node("silu", [x]), inputs=[x])
    verify(g)
    assert g.verify() is g


def test_stored_type_mismatch_shape():
    x = input_node("x", F)
    bad = Node("silu", (x,), TensorType((3, 2), "float32"))
    with pytest.raises(GraphError, match=r"graph 'g', node silu: stored type f32\[3, 2\] but operands give f32\[2, 3\]"):
        verify(graph(bad, inputs=[x]))


def test_stored_type_mismatch_dtype():
    x = input_node("x", F)
    bad = Node("silu", (x,), F.with_dtype("bfloat16"))
    with pytest.raises(GraphError, match=r"stored type bf16\[2, 3\] but operands give f32\[2, 3\]"):
        verify(graph(bad, inputs=[x]))


def test_operand_dtype_mismatch():
    x = input_node("x", F)
    y = input_node("y", F.with_dtype("bfloat16"))
    bad = Node("add", (x, y), F)  # built by hand, bypassing op_node's type rule
    with pytest.raises(GraphError, match=r"node add: add\(f32\[2, 3\], bf16\[2, 3\]\): operands must have equal types"):
        verify(graph(bad, inputs=[x, y]))


def test_operand_shape_mismatch_names_shapes():
    x = input_node("x", F)
    w = param_node("w", TensorType((4, 5), "float32"))
    bad = Node("linear", (x, w), TensorType((2, 4), "float32"))
    with pytest.raises(GraphError, match=r"node linear: .*x last dim \(3,\) must equal weight dim 1 of \(4, 5\)"):
        verify(graph(bad, inputs=[x]))


def test_wrong_arity():
    x = input_node("x", F)
    with pytest.raises(GraphError, match="node silu: silu: expects 1 operands, got 2"):
        verify(graph(Node("silu", (x, x), F), inputs=[x]))


def test_missing_attr():
    x = input_node("x", F)
    with pytest.raises(GraphError, match="node transpose: .*'perm'"):
        verify(graph(Node("transpose", (x,), F), inputs=[x]))


def test_unknown_op():
    x = input_node("x", F)
    with pytest.raises(GraphError, match="node frobnicate: unknown op"):
        verify(graph(Node("frobnicate", (x,), F), inputs=[x]))


def test_undeclared_input():
    x = input_node("x", F)
    with pytest.raises(GraphError, match="input 'x' is used but not a graph input"):
        verify(graph(op_node("silu", [x])))


def test_two_params_with_one_name():
    a, b = param_node("w", F), param_node("w", F.with_dtype("bfloat16"))
    with pytest.raises(GraphError, match=r"name 'w' used by two different nodes \(param f32\[2, 3\] and param bf16\[2, 3\]\)"):
        verify(graph(op_node("silu", [a]), op_node("silu", [b])))


def test_input_and_param_share_a_name():
    x, p = input_node("w", F), param_node("w", F)
    with pytest.raises(GraphError, match="name 'w' used by two different nodes"):
        verify(graph(op_node("add", [x, p]), inputs=[x]))


def test_unnamed_param_and_param_with_operands():
    with pytest.raises(GraphError, match="param without a name"):
        verify(graph(op_node("silu", [param_node("", F)])))
    x = input_node("x", F)
    with pytest.raises(GraphError, match="param cannot have operands"):
        verify(graph(op_node("silu", [Node("param", (x,), F, name="p")]), inputs=[x]))


def test_duplicate_output_names():
    x = input_node("x", F)
    s = op_node("silu", [x])
    g = Graph("g", (x,), (("y", s), ("y", s)))
    with pytest.raises(GraphError, match="graph 'g': duplicate output names"):
        verify(g)


def test_error_is_a_value_error():
    assert issubclass(GraphError, ValueError)
