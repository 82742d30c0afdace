"""The graph IR: typed tensor values, immutable nodes, graphs, a builder and a printer.

A `Graph` is a pure dataflow function: named inputs and parameters in, named outputs out.
Every `Node` produces exactly one tensor whose `TensorType` may hold symbolic dims
(strings such as ``"seq_len"``). Nodes are immutable and compared by identity; passes build
new graphs with `rewrite` instead of editing one in place.

Text form (``str(graph)``)::

    graph forward(%ids: i32[seq_len]) {
      param @model.embed_tokens.weight: f32[64, 32]
      %0 = embedding(@model.embed_tokens.weight, %ids) : f32[seq_len, 32]
      return logits=%0
    }
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

Dim = int | str  # a static extent, the name of a symbolic one, or "name/k": that one divided by k


def split_dim(d: str) -> tuple[str, int]:
    """A symbolic dim as (name, divisor): "patches/4" -> ("patches", 4), "seq_len" -> ("seq_len", 1)."""
    name, _, k = d.partition("/")
    return name, int(k) if k else 1


def _good_dim(d: Any) -> bool:
    if isinstance(d, int):
        return d >= 0
    if not isinstance(d, str):
        return False
    name, _, k = d.partition("/")
    return name.isidentifier() and (not _ or (k.isdigit() and int(k) > 0))

_SHORT_DTYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "int32": "i32", "int64": "i64", "int8": "i8"}
DTYPES = frozenset(_SHORT_DTYPES)


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unsupported dtype {self.dtype!r}; expected one of {sorted(DTYPES)}")
        for d in self.shape:
            if not _good_dim(d):
                raise ValueError(f"bad dim {d!r} in shape {self.shape}: dims are ints >= 0, identifiers "
                                 "or 'identifier/k'")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def with_shape(self, shape: Iterable[Dim]) -> TensorType:
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        return f"{_SHORT_DTYPES[self.dtype]}[{', '.join(str(d) for d in self.shape)}]"


def _freeze(v: Any) -> Any:
    return tuple(_freeze(x) for x in v) if isinstance(v, (list, tuple)) else v


@dataclass(frozen=True, eq=False)
class Node:
    """One tensor-producing operation. ``op`` is "input", "param" or a name in `ir.ops.OPS`.

    ``name`` is set for inputs and params (a param's name is its weight name). Attributes are
    stored sorted and frozen so equal attrs compare equal.
    """

    op: str
    inputs: tuple[Node, ...]
    type: TensorType
    attrs: tuple[tuple[str, Any], ...] = ()
    name: str = ""

    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    @property
    def attr_dict(self) -> dict[str, Any]:
        return dict(self.attrs)

    @property
    def shape(self) -> tuple[Dim, ...]:
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def ndim(self) -> int:
        return self.type.ndim


def make_attrs(attrs: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, _freeze(v)) for k, v in attrs.items() if v is not None))


def input_node(name: str, type: TensorType, *, shape_only: bool = False, zeroed: bool = False) -> Node:
    """A graph input. A ``shape_only`` input carries no data: it binds its (symbolic) dims,
    e.g. ``kv_len`` for the number of valid KV-cache rows. A ``zeroed`` one is state that the
    caller allocates once, holding zeros, and passes on every call (`passes.static_decode`'s
    counters): the manifest says so."""
    attrs = {"shape_only": True} if shape_only else {}
    return Node("input", (), type, make_attrs({**attrs, "zeroed": True} if zeroed else attrs), name=name)


def param_node(name: str, type: TensorType, **attrs: Any) -> Node:
    """A named weight. A derived param (e.g. a fused qkv weight) carries ``concat=(names...)``,
    their sizes ``splits`` and ``axis``: the loader builds it by concatenating those source
    weights. With ``experts=E`` the concatenation (E * N, K) is viewed as a stack (E, N, K):
    one matrix per expert of a mixture-of-experts block."""
    return Node("param", (), type, make_attrs(attrs), name=name)


def op_node(op: str, inputs: Iterable[Node], **attrs: Any) -> Node:
    """A node of a registered op, typed by the op's inference rule (errors name the op)."""
    from .ops import infer_type  # ops imports graph; keep the cycle at call time

    inputs = tuple(inputs)
    frozen = make_attrs(attrs)
    return Node(op, inputs, infer_type(op, [i.type for i in inputs], dict(frozen)), frozen)


@dataclass(frozen=True)
class Graph:
    """A dataflow function. ``meta`` holds model facts that passes and the engine read
    (e.g. ``num_hidden_layers``, ``vocab_size``); it is printed but not verified."""

    name: str
    inputs: tuple[Node, ...]
    outputs: tuple[tuple[str, Node], ...]
    meta: tuple[tuple[str, Any], ...] = field(default=())

    def meta_dict(self) -> dict[str, Any]:
        return dict(self.meta)

    def output(self, name: str) -> Node:
        for k, n in self.outputs:
            if k == name:
                return n
        raise KeyError(f"graph {self.name!r} has no output {name!r}")

    def nodes(self) -> list[Node]:
        """Every node reachable from the outputs, inputs before users (deterministic order)."""
        order: list[Node] = []
        seen: set[int] = set()
        stack: list[tuple[Node, bool]] = [(n, False) for _, n in reversed(self.outputs)]
        while stack:
            n, expanded = stack.pop()
            if id(n) in seen:
                continue
            if expanded:
                seen.add(id(n))
                order.append(n)
                continue
            stack.append((n, True))
            stack.extend((i, False) for i in reversed(n.inputs) if id(i) not in seen)
        return order

    def params(self) -> list[Node]:
        return [n for n in self.nodes() if n.op == "param"]

    def ops(self) -> Iterator[Node]:
        return (n for n in self.nodes() if n.op not in ("input", "param"))

    def count(self, op: str) -> int:
        return sum(1 for n in self.nodes() if n.op == op)

    def verify(self) -> Graph:
        from .verify import verify

        verify(self)
        return self

    def __str__(self) -> str:
        return format_graph(self)


# **** building ****


class GraphBuilder:
    """Collects inputs and params; ``b.<op>(*inputs, **attrs)`` emits a node of any registered op.

    Params are interned by name, so declaring the same weight twice (tied embeddings)
    yields one node.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._inputs: list[Node] = []
        self._params: dict[str, Node] = {}

    def input(self, name: str, shape: tuple[Dim, ...], dtype: str) -> Node:
        n = input_node(name, TensorType(tuple(shape), dtype))
        self._inputs.append(n)
        return n

    def param(self, name: str, shape: tuple[Dim, ...], dtype: str, **attrs: Any) -> Node:
        """A weight; ``attrs`` as for `param_node` (e.g. the sources of a stacked weight)."""
        t = TensorType(tuple(shape), dtype)
        if name in self._params:
            if self._params[name].type != t:
                raise ValueError(f"param {name!r} declared as {self._params[name].type} and {t}")
            return self._params[name]
        self._params[name] = param_node(name, t, **attrs)
        return self._params[name]

    def __getattr__(self, op: str) -> Callable[..., Node]:
        from .ops import OPS

        if op not in OPS:
            raise AttributeError(f"no op named {op!r}")
        return lambda *inputs, **attrs: op_node(op, inputs, **attrs)

    def build(self, outputs: Mapping[str, Node], **meta: Any) -> Graph:
        return Graph(self.name, tuple(self._inputs), tuple(outputs.items()), make_attrs(meta)).verify()


# **** rewriting ****

RewriteFn = Callable[[Node, Node], "Node | None"]


def rewrite(graph: Graph, fn: RewriteFn, *, name: str | None = None, inputs: Iterable[Node] | None = None,
            attrs: Callable[[Node], dict[str, Any]] | None = None, **meta: Any) -> Graph:
    """Rebuild ``graph`` bottom-up. Each node is first re-created over its already rewritten
    operands, then ``fn(node, old)`` returns a replacement for it, or None to keep it. So
    patterns match the rewritten graph, and a replacement may reuse any node below the matched
    one; ``old`` is the original node, for facts about the input graph such as its users.
    A node that no longer type-checks over its new operands reaches ``fn`` as is and must be
    replaced (its type error is raised otherwise).

    Passing ``inputs`` replaces the graph's input list; ``attrs(node)`` gives the attrs to
    re-create a node with (e.g. reshape targets after a shape change); ``meta`` entries are merged in.
    """
    new: dict[int, Node] = {}
    for n in graph.nodes():
        ins = tuple(new[id(i)] for i in n.inputs)
        error = None
        if all(a is b for a, b in zip(ins, n.inputs)) or n.op in ("input", "param"):
            cur = n
        else:
            try:
                cur = op_node(n.op, ins, **(attrs or _attr_dict)(n))
            except ValueError as e:  # ill-typed over the new operands: only fn may keep it alive
                cur, error = Node(n.op, ins, n.type, n.attrs, n.name), e
        out = fn(cur, n)
        if out is None and error is not None:
            raise error
        new[id(n)] = cur if out is None else out
    kept_inputs = tuple(new.get(id(i), i) for i in graph.inputs) if inputs is None else tuple(inputs)
    merged = {**graph.meta_dict(), **meta}
    return Graph(name or graph.name, kept_inputs, tuple((k, new[id(v)]) for k, v in graph.outputs),
                 make_attrs(merged))


def _attr_dict(n: Node) -> dict[str, Any]:
    return n.attr_dict


def users(graph: Graph) -> dict[int, list[Node]]:
    """Map id(node) -> the nodes that read it."""
    out: dict[int, list[Node]] = {}
    for n in graph.nodes():
        for i in n.inputs:
            out.setdefault(id(i), []).append(n)
    return out


# **** printing ****


def _fmt_attr(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(_fmt_attr(x) for x in v) + ")"
    return str(v)


def format_graph(graph: Graph) -> str:
    names: dict[int, str] = {}
    counter = itertools.count()
    lines = []
    args = []
    for n in graph.inputs:
        names[id(n)] = f"%{n.name}"
        args.append(f"%{n.name}: {'shape' if n.attr('shape_only') else ''}{n.type}")
    lines.append(f"graph {graph.name}({', '.join(args)}) {{")
    for k, v in graph.meta:
        lines.append(f"  meta {k} = {_fmt_attr(v)}")
    for n in graph.nodes():
        if n.op == "input":
            names.setdefault(id(n), f"%{n.name}")
        elif n.op == "param":
            names[id(n)] = f"@{n.name}"
            extra = "".join(f" {k}={_fmt_attr(v)}" for k, v in n.attrs)
            lines.append(f"  param @{n.name}: {n.type}{extra}")
        else:
            names[id(n)] = f"%{next(counter)}"
            operands = ", ".join(names[id(i)] for i in n.inputs)
            attrs = "".join(f", {k}={_fmt_attr(v)}" for k, v in n.attrs)
            lines.append(f"  {names[id(n)]} = {n.op}({operands}{attrs}) : {n.type}")
    lines.append("  return " + ", ".join(f"{k}={names[id(v)]}" for k, v in graph.outputs))
    lines.append("}")
    return "\n".join(lines)
