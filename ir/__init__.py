"""inference_pio's graph IR: typed values, nodes, graphs, the op set, a verifier and an interpreter."""
from .graph import (Dim, Graph, GraphBuilder, Node, TensorType, format_graph, input_node, op_node,
                    param_node, rewrite, users)
from .interpret import interpret, param_values
from .ops import OPS, OpDef, np_dtype
from .verify import GraphError, verify

__all__ = ["Dim", "Graph", "GraphBuilder", "GraphError", "Node", "OPS", "OpDef", "TensorType",
           "format_graph", "input_node", "interpret", "np_dtype", "op_node", "param_node",
           "param_values", "rewrite", "users", "verify"]
