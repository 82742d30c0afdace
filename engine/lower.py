"""Lowering: IR graphs -> one Relax IRModule of calls to our TE kernels.

Each graph becomes a Relax function ``name(*inputs, *params)`` with attr ``num_input`` (the
first inputs are per-call, the rest are weights). Every op node becomes one PrimFunc built
from `schedules.kernels` and tagged with its op kind for the schedule rules; structurally
equal kernels (the same op at the same shapes in every layer) are shared. Reshapes are Relax
reshapes (views, no kernel). Symbolic dims become int64 TIR vars named after the dim.
"""
from __future__ import annotations

import re
from typing import Any

import tvm
from tvm import relax, tirx

from ..ir import Graph, Node
from ..ir.graph import split_dim
from ..ir.ops import inv_freq, mrope_axes
from ..schedules import KERNELS, kernels, linear_attention
from ..schedules.registry import OP_KIND_ATTR


def var_name(name: str) -> str:
    """A Relax-friendly variable name for a weight or input name."""
    return re.sub(r"\W", "_", name)


class _Lowerer:
    def __init__(self, bb: relax.BlockBuilder) -> None:
        self.bb = bb
        self.dims: dict[str, tirx.Var] = {}
        self.rebound: dict[int, relax.Expr] = {}  # graph node -> its value after an op wrote it in place

    def dim(self, d: int | str) -> Any:
        if isinstance(d, int):
            return d
        name, k = split_dim(d)
        var = self.dims.setdefault(name, tirx.Var(name, "int64"))
        return var if k == 1 else tirx.floordiv(var, k)

    def ty(self, n: Node) -> relax.TensorType:
        return relax.TensorType([self.dim(d) for d in n.shape], n.dtype)

    def emit(self, n: Node, args: list[relax.Expr]) -> relax.Expr:
        attrs = {k: v for k, v in n.attr_dict.items() if k not in SCHEDULE_ONLY}
        # a shape-only operand (kv_len) is passed as its TIR var, not as a tensor
        args = [self.dim(i.shape[0]) if i.attr("shape_only") else a for i, a in zip(n.inputs, args)]
        if n.op == "kv_append_pair":  # both caches in place; the keys' is the result
            kc, k, _, vc, v, w, table = n.inputs
            func = kernels.kv_append(kc.shape, kc.dtype, k.dtype, bool(attrs.get("kv_len_tensor")), attrs.get("start"),
                                     k.shape[-1], norm=(w.dtype, table.shape[1], attrs["eps"]),
                                     values=(v.dtype, attrs.get("v_start"), v.shape[-1]))
            gv = self.bb.add_func(func.with_attr(OP_KIND_ATTR, "kv_append"), "kv_append_pair")
            both = self.bb.emit(relax.call_tir_inplace(gv, args, inplace_indices=[0, 3],
                                                       out_ty=[self.ty(kc), self.ty(vc)]))
            self.rebound[id(vc)] = self.bb.emit(relax.TupleGetItem(both, 1))  # later readers of vc: its new value
            return self.bb.emit(relax.TupleGetItem(both, 0))
        if n.op == "append_attention":  # both caches in place, then the attention (and scratch) as new outputs
            return self.emit_append_attention(n, args)
        if n.op == "kv_append":
            cache, k, norm = n.inputs[0], n.inputs[1], n.inputs[3:]
            func = kernels.kv_append(cache.shape, cache.dtype, k.dtype, bool(attrs.get("kv_len_tensor")),
                                     attrs.get("start"), k.shape[-1],
                                     norm=(norm[0].dtype, norm[1].shape[1], attrs["eps"]) if norm else None)
            func = func.with_attr(OP_KIND_ATTR, n.op)
            gv = self.bb.add_func(func, "kv_append")
            return self.bb.emit(relax.call_tir_inplace(gv, args, inplace_indices=[0], out_ty=self.ty(cache)))
        if n.op in RECURRENT:
            return self.emit_recurrent(n, args)
        if n.op == "reshape":
            return self.bb.emit(relax.op.reshape(args[0], [self.dim(d) for d in attrs["shape"]]))
        if n.op == "rope_table":
            args = args + [relax.const(inv_freq(attrs["theta"], attrs["rotary_dim"]))]
            if attrs.get("sections") is not None:
                args.append(relax.const(mrope_axes(attrs["sections"], attrs["rotary_dim"])))
            attrs = {"rotary_dim": attrs["rotary_dim"]}
        if n.op == "linear" and n.inputs[0].ndim != 2:
            raise NotImplementedError("linear lowering expects 2-D activations (T, K)")
        out = self.bb.emit_te(KERNELS[n.op], *args, **attrs, primfunc_name_hint=n.op,
                              primfunc_attrs={OP_KIND_ATTR: n.op, **_schedule_hints(n)})
        if isinstance(out.ty, relax.TupleType):  # (value, scratch...): see kernels.cache_attention
            out = self.bb.emit(relax.TupleGetItem(out, 0))
        return out

    def emit_append_attention(self, n: Node, args: list[relax.Expr]) -> relax.Expr:
        x, kc, vc, _, w, table, kw = n.inputs[:7]
        sync = n.inputs[7] if len(n.inputs) == 8 else None  # `passes.static_decode`'s counters
        if x.shape[0] != 1:
            raise NotImplementedError(f"append_attention lowers for one decode row, not {x.shape[0]}")
        a, static = n.attr_dict, bool(n.attr("kv_len_tensor"))
        op = kernels.AppendAttention(int(x.shape[1]), x.dtype, int(n.shape[1]), a["start"], a["k_start"], a["v_start"],
                                     w.dtype, kw.dtype, int(table.shape[1]), float(a["eps"]), float(a["scale"]),
                                     n.dtype)
        func = kernels.append_attention(op, kc.shape, kc.dtype, static, sync=sync.shape[0] if sync is not None else 0)
        gv = self.bb.add_func(func.with_attrs({OP_KIND_ATTR: n.op, **_op_hints(n)}), n.op)
        new = [self.ty(n)] + ([relax.TensorType(kernels.decode_scratch_shape(op.hq, kc.shape[2], kc.shape[0]),
                                                "float32")] if static else [])
        outs = self.bb.emit(relax.call_tir_inplace(gv, args, inplace_indices=[1, 2] + [-1] * len(new),
                                                   out_ty=[self.ty(kc), self.ty(vc), *new]))
        self.rebound[id(kc)] = self.bb.emit(relax.TupleGetItem(outs, 0))
        self.rebound[id(vc)] = self.bb.emit(relax.TupleGetItem(outs, 1))
        return self.bb.emit(relax.TupleGetItem(outs, 2))

    def emit_recurrent(self, n: Node, args: list[relax.Expr]) -> relax.Expr:
        """A linear-attention op (`schedules.linear_attention`): its cached form, with operands
        (state, kv_len) last, writes the state in place and returns the output as a new tensor."""
        ops, cached = n.inputs, len(n.inputs) > RECURRENT[n.op]
        data_len = bool(n.attr("kv_len_tensor"))  # kv_len a (1,) int32 tensor: `passes.static_decode`
        if n.op == "causal_conv1d":
            x, w = ops[:2]
            func = linear_attention.causal_conv1d(x.shape[1], w.shape[2], x.dtype, w.dtype, cached,
                                                  kv_len_tensor=data_len)
        else:
            q, v = ops[0], ops[2]
            func = linear_attention.gated_delta_rule(q.shape[1], v.shape[1], q.shape[2], v.shape[2],
                                                     tuple(i.dtype for i in ops[:7]), cached, kv_len_tensor=data_len)
        gv = self.bb.add_func(func.with_attr(OP_KIND_ATTR, n.op), n.op)
        if not cached:
            return self.bb.emit(relax.call_tir(gv, args, self.ty(n)))
        state = len(ops) - 2
        both = self.bb.emit(relax.call_tir_inplace(gv, args, inplace_indices=[state, -1],
                                                   out_ty=[self.ty(ops[state]), self.ty(n)]))
        return self.bb.emit(relax.TupleGetItem(both, 1))


RECURRENT = {"causal_conv1d": 2, "gated_delta_rule": 7}  # op -> operands of its cache-less form
SCHEDULE_ONLY = ("precision",)  # node attrs that only the schedule rules read (as hints), not the TE kernels


def _schedule_hints(n: Node) -> dict[str, Any]:
    """Facts a schedule rule wants that the TE kernel does not spell out, as PrimFunc attrs."""
    hints = {k: n.attr(k) for k in SCHEDULE_ONLY if n.attr(k) is not None}
    return {**hints, **_op_hints(n)}


def _op_hints(n: Node) -> dict[str, Any]:
    if n.op in ("attention", "cache_attention", "append_attention"):
        hints = {"gqa_group": n.shape[1] // n.inputs[1].shape[1], "scale": float(n.attr("scale")),
                 "causal": bool(n.attr("causal", True)), "kv_len_tensor": bool(n.attr("kv_len_tensor"))}
        if n.attr("eps") is not None:  # q is norm_rotary(x, w, table) of x's head window at column start
            hints["q_norm_eps"] = float(n.attr("eps"))
            if n.attr("start") is not None:
                hints["q_start"] = int(n.attr("start"))
        if n.op == "append_attention":  # the step's key and value heads: x's windows at these columns
            hints.update(k_start=int(n.attr("k_start")), v_start=int(n.attr("v_start")))
        return hints
    if n.op == "moe_experts":
        return {"pairs": bool(n.attr("pairs"))}
    if n.op == "linear":  # which extra operands the kernel has, and how it reads x
        return {"bias": bool(n.attr("bias")), "residual": bool(n.attr("residual")), "act": n.attr("act") or "",
                "norm": n.attr("norm_eps") is not None, "out_act": n.attr("out_act") or ""}
    return {}


def lower_graph(bb: relax.BlockBuilder, graph: Graph) -> None:
    """Add ``graph`` to ``bb`` as a Relax function named after the graph."""
    lw = _Lowerer(bb)
    inputs = [relax.Var(var_name(n.name), relax.ShapeType([lw.dim(d) for d in n.shape]) if n.attr("shape_only")
                        else lw.ty(n)) for n in graph.inputs]
    params = graph.params()
    pvars = [relax.Var(var_name(p.name), lw.ty(p)) for p in params]
    env: dict[int, relax.Expr] = {id(n): v for n, v in zip(graph.inputs, inputs)}
    env.update({id(p): v for p, v in zip(params, pvars)})
    # a function whose inputs are persistent buffers (`passes.static_decode`) declares none
    # per-call: everything it reads then counts as static, so one CUDA graph can capture it
    num_input = 0 if graph.meta_dict().get("static_inputs") else len(inputs)
    with bb.function(graph.name, inputs + pvars, attrs={"num_input": num_input}):
        with bb.dataflow():
            for n in graph.ops():
                env[id(n)] = lw.emit(n, [env[id(i)] for i in n.inputs])
                env.update(lw.rebound)
                lw.rebound.clear()
            outs = [env[id(v)] for _, v in graph.outputs]
            result = bb.emit_output(outs[0] if len(outs) == 1 else relax.Tuple(outs))
        bb.emit_func_output(result)


def lower(graphs: dict[str, Graph]) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    for g in graphs.values():
        lower_graph(bb, g)
    return bb.get()


TensorSpec = tuple[str, tuple[int, ...], str]  # (name, shape, dtype)


def add_kernel_function(mod: tvm.IRModule, name: str, func: tirx.PrimFunc, inputs: list[TensorSpec],
                        output: TensorSpec) -> tvm.IRModule:
    """``mod`` plus a Relax function ``name(*inputs) -> output`` that calls ``func`` (already
    scheduled, e.g. a hand-written kernel) once; its manifest entry is `kernel_signature`."""
    bb = relax.BlockBuilder(mod)
    params = [relax.Var(n, relax.TensorType(list(shape), dt)) for n, shape, dt in inputs]
    with bb.function(name, params, attrs={"num_input": len(params)}):
        gv = bb.add_func(func.with_attr("tirx.is_scheduled", True), f"{name}_kernel")
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.call_tir(gv, params, relax.TensorType(list(output[1]), output[2]))))
        bb.emit_func_output(out)
    return bb.get()


def _entry(name: str, shape, dtype: str) -> dict[str, Any]:
    return {"name": name, "shape": list(shape), "dtype": dtype}


def kernel_signature(inputs: list[TensorSpec], output: TensorSpec) -> dict[str, Any]:
    """The manifest entry of an `add_kernel_function` function."""
    return {"inputs": [_entry(*i) for i in inputs], "params": [], "outputs": [_entry(*output)]}


def graph_signature(graph: Graph) -> dict[str, Any]:
    """The manifest entry for one compiled function: its inputs, params (by index) and outputs."""
    def t(n: Node) -> dict[str, Any]:
        return {**_entry(n.name, n.shape, n.dtype), **({"zeroed": True} if n.attr("zeroed") else {})}

    sig = {"inputs": [t(n) for n in graph.inputs], "params": [p.name for p in graph.params()],
           "outputs": [{**t(v), "name": k} for k, v in graph.outputs]}
    if graph.meta_dict().get("static_inputs"):
        sig["static_inputs"] = True  # the caller passes the same input buffers every call
    return sig
