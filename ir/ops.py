"""The op set: for each op, a type rule and a numpy reference that defines its meaning.

The reference implementations are the semantics of the IR: the interpreter (`ir.interpret`)
runs them, pass tests compare graphs before and after a rewrite with them, and kernel tests
compare compiled kernels against them. They compute in float32 (or wider) whatever the
storage dtype, as the kernels must.

Conventions: ``x`` (..., K) are activations; weights keep the Hugging Face layout, so a
linear weight is (N, K). Attention tensors are token-major: q (T, Hq, D), k/v (S, Hkv, D).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np

from .graph import Dim, TensorType, split_dim

FLOAT_DTYPES = ("float32", "float16", "bfloat16")
# attr ``precision`` of linear and attention ops (`passes.matmul_precision`): "high" (the
# default) keeps each product within ~1e-5 of fp32 math; "medium" allows products over
# bf16-rounded operands (fp32 sums), ~1e-3 relative. The references compute in fp32, which
# every precision allows.
PRECISIONS = ("high", "medium")


def check_precision(value: Any, name: str = "precision") -> None:
    """A ValueError naming ``name`` unless ``value`` is one of PRECISIONS."""
    if value not in PRECISIONS:
        raise ValueError(f"{name} must be one of {PRECISIONS}, got {value!r}")


class TypeError_(ValueError):
    """An op applied to operands of the wrong shape or dtype."""


@dataclass(frozen=True)
class OpDef:
    name: str
    arity: int | tuple[int, int]  # exact, or (min, max)
    infer: Callable[[Sequence[TensorType], dict[str, Any]], TensorType]
    ref: Callable[..., np.ndarray]
    doc: str = ""


OPS: dict[str, OpDef] = {}


def _op(name: str, arity: int | tuple[int, int], doc: str = "") -> Callable:
    def register(infer: Callable) -> Callable:
        def wrap(ref: Callable) -> Callable:
            OPS[name] = OpDef(name, arity, infer, ref, doc)
            return ref
        return wrap
    return register


def infer_type(op: str, types: Sequence[TensorType], attrs: dict[str, Any]) -> TensorType:
    if op not in OPS:
        raise TypeError_(f"unknown op {op!r}")
    d = OPS[op]
    lo, hi = (d.arity, d.arity) if isinstance(d.arity, int) else d.arity
    if not lo <= len(types) <= hi:
        raise TypeError_(f"{op}: expects {d.arity} operands, got {len(types)}")
    try:
        return d.infer(types, attrs)
    except TypeError_ as e:
        raise TypeError_(f"{op}({', '.join(map(str, types))}): {e}") from None


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise TypeError_(msg)


def _check_precision(a: dict[str, Any]) -> None:
    _check(a.get("precision", "high") in PRECISIONS, f"precision must be one of {PRECISIONS}, got {a.get('precision')!r}")


def _float(t: TensorType) -> None:
    _check(t.dtype in FLOAT_DTYPES, f"expected a float tensor, got {t.dtype}")


def _out(t: TensorType, a: dict[str, Any]) -> TensorType:
    """``t`` in attr ``out_dtype`` where a node has one (a float dtype), else as is."""
    dtype = a.get("out_dtype")
    if dtype is None:
        return t
    _check(dtype in FLOAT_DTYPES, f"out_dtype must be a float dtype, got {dtype!r}")
    return t.with_dtype(dtype)


def f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.float32)


def _numel(shape: Sequence[Dim]) -> tuple[Fraction, tuple[str, ...]]:
    """A product of dims as (static factor, sorted symbolic factors); "n/k" is n times 1/k."""
    static, syms = Fraction(1), []
    for d in shape:
        if isinstance(d, str):
            name, k = split_dim(d)
            syms.append(name)
            static /= k
        else:
            static *= d
    return static, tuple(sorted(syms))


def _same(types: Sequence[TensorType]) -> TensorType:
    _check(all(t == types[0] for t in types), "operands must have equal types")
    return types[0]


def np_dtype(dtype: str) -> np.dtype:
    """The numpy dtype for an IR dtype name (bfloat16 through ml_dtypes)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def _cast_like(x: np.ndarray, dtype: str) -> np.ndarray:
    return np.asarray(x).astype(np_dtype(dtype))


# **** embedding, projections ****


def pack_rows(w: np.ndarray, block: int, out: np.ndarray | None = None, pairs: bool = False) -> np.ndarray:
    """(N, K) -> (ceil(N / block), K, block): each block of ``block`` rows interleaved along K,
    zero-padded, so a kernel streams one contiguous panel per block of outputs. Writes into
    ``out`` when given. A stack of matrices (E, N, K) (MoE experts) packs each one: (E, NB, K, B).
    With ``pairs`` (K even) each panel's rows go in pairs (`pair_panels`)."""
    if w.ndim == 3:
        if out is None:
            out = np.empty((w.shape[0], -(-w.shape[1] // block), w.shape[2], block), dtype=w.dtype)
        for e in range(w.shape[0]):
            pack_rows(w[e], block, out[e], pairs)
        return out
    n, k = w.shape
    nb = -(-n // block)
    if out is None:
        out = np.empty((nb, k, block), dtype=w.dtype)
    full = n // block
    out[:full] = w[: full * block].reshape(full, block, k).transpose(0, 2, 1)
    if full < nb:  # the last, partial block: zero rows after the real ones
        out[full:] = 0
        out[full, :, : n - full * block] = w[full * block:].T
    if pairs:
        out[...] = pair_panels(out)
    return out


def pair_panels(p: np.ndarray) -> np.ndarray:
    """Packed panels (..., K, B) with rows 2i and 2i+1 interleaved element by element: the
    panel's element (k, b) at flat position (k // 2) * 2B + 2b + k % 2. Read as 32-bit words,
    a panel is then (K/2, B) pairs along K: the second operand of an AMX tile product as it
    is, and for a GEMV two rows at once (``pairs=True`` in `pack_rows`, expert stacks on AMX)."""
    *lead, k, b = p.shape
    return p.reshape(*lead, k // 2, 2, b).swapaxes(-1, -2).reshape(p.shape)


def unpair_panels(p: np.ndarray) -> np.ndarray:
    *lead, k, b = p.shape
    return p.reshape(*lead, k // 2, b, 2).swapaxes(-1, -2).reshape(p.shape)


def join_sources(parts: Sequence[np.ndarray], axis: int = 0, experts: int | None = None) -> np.ndarray:
    """A derived param's array from its source tensors (`ir.graph.param_node`): concatenated
    along ``axis``, and with ``experts=E`` the (E * N, K) result viewed as a stack (E, N, K)."""
    arr = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=axis)
    return arr.reshape(experts, -1, arr.shape[-1]) if experts else arr


def unpack_rows(wp: np.ndarray, n: int, pairs: bool = False) -> np.ndarray:
    if pairs:
        wp = unpair_panels(wp)
    if wp.ndim == 4:
        return np.stack([unpack_rows(w, n) for w in wp])
    nb, k, block = wp.shape
    return wp.transpose(0, 2, 1).reshape(nb * block, k)[:n]


QUANT_DTYPES = ("int8",)  # weight dtypes stored with a per-row scale (`passes.quantize_weights`)
QMAX = 127  # int8 rows are symmetric: q in [-127, 127]


def quantize_rows(w: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) float -> (q int8 (N, K), scale float32 (N,)) with w ~= scale[:, None] * q: each row
    scaled so that its largest magnitude is QMAX, rounded to nearest (a zero row: scale 0). A
    stack of experts (E, N, K) gets scales (E, N).
    Works ``chunk`` rows at a time, on every core (numpy releases the GIL), so a large table
    needs no fp32 copy of itself and a model's weights quantize in seconds."""
    if w.ndim == 3:  # a stack of experts: each row of each matrix
        q, scale = quantize_rows(w.reshape(-1, w.shape[-1]), chunk)
        return q.reshape(w.shape), scale.reshape(w.shape[:2])
    n, k = w.shape
    q, scale = np.empty((n, k), np.int8), np.empty(n, np.float32)

    def rows(r: int) -> None:
        part = _f32_copy(w[r:r + chunk])
        s = np.maximum(part.max(axis=1, initial=0), -part.min(axis=1, initial=0)) / np.float32(QMAX)
        part /= np.where(s > 0, s, np.float32(1))[:, None]  # now within [-QMAX, QMAX]
        q[r:r + chunk] = np.rint(part, out=part)
        scale[r:r + chunk] = s

    from concurrent.futures import ThreadPoolExecutor

    starts = range(0, n, chunk)
    with ThreadPoolExecutor(max(1, min(len(starts), os.cpu_count() or 1))) as pool:
        list(pool.map(rows, starts))
    return q, scale


def _f32_copy(a: np.ndarray) -> np.ndarray:
    """A new fp32 array of ``a``'s values; bf16 by its bits, written as the high half of each
    fp32 (ml_dtypes' cast is several times slower)."""
    if a.dtype.name != "bfloat16":
        return np.array(a, dtype=np.float32)
    out = np.zeros((*a.shape, 2), np.uint16)  # little-endian: the high half is the second
    out[..., 1] = a.view(np.uint16)
    return out.view(np.float32).reshape(a.shape)


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The fp32 weights an int8 (N, K) ``q`` with per-row ``scale`` (N,) stands for (or a stack)."""
    return f32(q) * f32(scale)[..., None]


def _check_scale(w: TensorType, scale: TensorType, rows: Dim) -> None:
    _check(scale.dtype == "float32" and scale.shape == (rows,),
           f"an {w.dtype} weight is read with its per-row scale f32[{rows}], got {scale}")


def _quantized(w: TensorType) -> bool:
    """Whether weight ``w`` is quantized (then its per-row scale is the next operand); else it
    must be a float tensor."""
    if w.dtype in QUANT_DTYPES:
        return True
    _float(w)
    return False


@_op("embedding", (2, 3), "table (V, H) [or packed (V/B, H, B) with pack=B], ids (...) -> (..., H) in out_dtype; "
                          "an int8 table is followed by its per-row scale (V,): row v is scale[v] * table[v]")
def _embedding_t(ts, a):
    table, ids = ts[0], ts[1]
    _check(table.ndim == (3 if a.get("pack") else 2), "table must be (V, H), or (V/B, H, B) when packed")
    _check(ids.dtype in ("int32", "int64"), "ids must be integers")
    quant = _quantized(table)
    _check(len(ts) == 2 + quant, "an embedding has a scale operand exactly when its table is quantized")
    if quant:
        scale, pack = ts[2], a.get("pack") or 1
        v = scale.shape[0] if scale.ndim == 1 and isinstance(scale.shape[0], int) else -1
        _check(table.shape[0] * pack >= v > (table.shape[0] - 1) * pack, f"scale {scale} does not fit table {table}")
        _check_scale(table, scale, v)
    return TensorType(ids.shape + (table.shape[1],), a.get("out_dtype", "float32"))


@_embedding_t
def embedding(table, ids, *scale, out_dtype="float32", pack=None):
    if pack:
        table = unpack_rows(table, table.shape[0] * pack)
    table = dequantize_rows(table, np.pad(scale[0], (0, table.shape[0] - scale[0].size))) if scale else f32(table)
    return _cast_like(table[ids], out_dtype)


@_op("linear", (2, 6), "x (..., K) @ w (N, K)^T [+ bias (N)] [+ residual (..., N)], fp32 accumulate; "
                       "an int8 w is followed by its per-row scale (N,) (w stands for scale[:, None] * w); "
                       "act='swiglu': x is (..., 2K) and swiglu(x) is multiplied; "
                       "norm_eps=e: rms_norm(x, g (K), e) is multiplied, g the first extra operand; "
                       "out_act='swiglu': the result y (..., N) [+ bias] becomes swiglu(y) (..., N/2), "
                       "no residual")
def _linear_t(ts, a):
    x, w = ts[0], ts[1]
    _float(x)
    if _quantized(w):  # an int8 w: its per-row scale comes first among the extra operands
        _check(len(ts) > 2, f"an {w.dtype} weight needs its per-row scale operand")
        _check_scale(w, ts[2], w.shape[0])
        ts = [x, w.with_dtype("float32"), *ts[3:]]
    act, norm = a.get("act"), a.get("norm_eps") is not None
    _check(act in (None, "swiglu"), f"unknown linear act {act!r}")
    _check_precision(a)
    _check(not (act and norm), "a linear normalizes x or applies act to it, not both")
    k = w.shape[1] * (2 if act else 1)
    _check(w.ndim == 2 and x.ndim >= 1 and x.shape[-1] == k,
           f"x last dim {x.shape[-1:]} must equal {'twice ' if act else ''}weight dim 1 of {w.shape}")
    out_act = a.get("out_act")
    _check(out_act in (None, "swiglu"), f"unknown linear out_act {out_act!r}")
    if out_act:
        _check(isinstance(w.shape[0], int) and w.shape[0] % 2 == 0,
               f"out_act='swiglu' needs an even number of weight rows (gate half, then up), not {w.shape[0]}")
        _check(not a.get("residual"), "a linear with out_act='swiglu' takes no residual")
    out = TensorType(x.shape[:-1] + (w.shape[0] // (2 if out_act else 1),), a.get("out_dtype", "float32"))
    extra = list(ts[2:])
    _check(len(extra) == int(norm) + int(bool(a.get("bias"))) + int(bool(a.get("residual"))),
           "extra operands must match the norm_eps/bias/residual attrs")
    if norm:
        g = extra.pop(0)
        _float(g)
        _check(g.shape == (w.shape[1],), f"norm weight shape {g.shape} != ({w.shape[1]},)")
    if a.get("bias"):
        b = extra.pop(0)
        _check(b.shape == (w.shape[0],), f"bias shape {b.shape} != ({w.shape[0]},)")
    if a.get("residual"):
        r = extra.pop(0)
        _check(r == out, f"residual {r} must equal the output type {out}")
    return out


@_linear_t
def linear(x, w, *extra, bias=False, residual=False, out_dtype="float32", act=None, norm_eps=None, precision="high",
           out_act=None):
    extra = list(extra)
    if np.asarray(w).dtype == np.int8:
        w = dequantize_rows(w, extra.pop(0))
    if act == "swiglu":
        x = swiglu(x)
    if norm_eps is not None:
        x = rms_norm(f32(x), extra.pop(0), norm_eps)
    y = f32(x) @ f32(w).T
    if bias:
        y = y + f32(extra.pop(0))
    if residual:
        y = y + f32(extra.pop(0))
    y = _cast_like(y, out_dtype)
    return swiglu(y) if out_act == "swiglu" else y


@_op("linear_packed", (2, 5), "linear with a packed weight (N/B, K, B) (see pack_rows); n = true N")
def _linear_packed_t(ts, a):
    x, wp = ts[0], ts[1]
    _check(wp.ndim == 3 and x.shape[-1] == wp.shape[1], f"x {x} does not match packed weight {wp}")
    n = a["n"]
    _check(wp.shape[0] * wp.shape[2] >= n > (wp.shape[0] - 1) * wp.shape[2], f"n={n} does not fit {wp.shape}")
    unpacked = [x, wp.with_shape((n, wp.shape[1])), *ts[2:]]
    return OPS["linear"].infer(unpacked, {k: v for k, v in a.items() if k != "n"})


@_linear_packed_t
def linear_packed(x, wp, *extra, n, **kw):
    return linear(x, unpack_rows(wp, n), *extra, **kw)


@_op("matmul", 2, "batched a (..., M, K) @ b (..., K, N), fp32 accumulate")
def _matmul_t(ts, a):
    x, y = ts
    _float(x), _float(y)
    _check(x.ndim == y.ndim >= 2 and x.shape[:-2] == y.shape[:-2] and x.shape[-1] == y.shape[-2],
           "batch dims must match and a's last dim must equal b's second to last")
    return TensorType(x.shape[:-1] + (y.shape[-1],), a.get("out_dtype", "float32"))


@_matmul_t
def matmul(x, y, out_dtype="float32"):
    return _cast_like(f32(x) @ f32(y), out_dtype)


# **** mixture of experts ****
# A sparse MLP block: a router linear scores E experts per token, `moe_gates` keeps the top_k
# (their softmax weights, zero elsewhere), and `moe_experts` runs each token through just the
# experts with a nonzero gate. Gates stay a dense (T, E) tensor: one value per node, readable
# by any kernel, and E is small (128) next to the weights it selects.


GATE_SCORINGS = ("softmax", "sigmoid")


@_op("moe_gates", (1, 2), "router logits (T, E) [, bias (E)] -> gates (T, E) f32, zero but at each token's top_k "
     "experts. scoring='softmax' (Qwen3-MoE): the softmax over E, kept at the top_k logits. scoring='sigmoid' "
     "(GLM-4.5): sigmoid(logits), chosen by sigmoid + bias, among the topk_group of n_group expert groups whose "
     "two best choice scores sum highest. Ties go to the lower index. normalize=True rescales the kept weights "
     "to sum 1; then all are multiplied by attr scale")
def _moe_gates_t(ts, a):
    x = ts[0]
    _float(x)
    _check(x.ndim == 2 and isinstance(x.shape[1], int), f"expects logits (T, E) with E static, got {x}")
    e, k = x.shape[1], a.get("top_k")
    _check(isinstance(k, int) and 0 < k <= e, f"top_k must be an int in [1, {e}], got {k!r}")
    scoring = a.get("scoring", "softmax")
    _check(scoring in GATE_SCORINGS, f"scoring must be one of {GATE_SCORINGS}, got {scoring!r}")
    if len(ts) == 2:
        _check(scoring == "sigmoid" and ts[1].shape == (e,) and ts[1].dtype == "float32",
               f"a choice bias is f32[{e}] and needs scoring='sigmoid', got {ts[1]}")
    groups, kept = a.get("n_group", 1), a.get("topk_group", 1)
    _check(groups == 1 or (isinstance(groups, int) and groups > 0 and e % groups == 0 and e // groups >= 2),
           f"n_group={groups!r} must divide {e} experts into groups of at least 2")
    _check(isinstance(kept, int) and 0 < kept <= groups and k <= kept * (e // groups),
           f"topk_group={kept!r} groups of {e // groups} cannot hold top_k={k}")
    _check(groups == 1 or scoring == "sigmoid", "expert groups need scoring='sigmoid'")
    return x.with_dtype("float32")


def _top(score: np.ndarray, k: int) -> np.ndarray:
    """A mask of the k largest entries of each row (ties: the lower index)."""
    order = np.argsort(-score, axis=-1, kind="stable")[..., :k]
    mask = np.zeros(score.shape, bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask


@_moe_gates_t
def moe_gates(x, *bias, top_k, normalize=False, scoring="softmax", n_group=1, topk_group=1, scale=1.0):
    z = f32(x)
    if scoring == "softmax":
        weight, choice = softmax(z), z
    else:
        weight = 1 / (1 + np.exp(-z))
        choice = weight + (f32(bias[0]) if bias else 0)
    if n_group > 1:  # keep the experts of the topk_group groups whose two best choices sum highest
        grouped = choice.reshape(len(z), n_group, -1)
        best2 = np.where(_top(grouped, 2), grouped, 0).sum(-1)
        choice = np.where(np.repeat(_top(best2, topk_group), grouped.shape[-1], axis=-1), choice, -np.inf)
    gates = np.where(_top(choice, top_k), weight, 0).astype(np.float32)
    if normalize:
        gates /= gates.sum(axis=-1, keepdims=True) + (np.float32(1e-20) if scoring == "sigmoid" else 0)
    return gates * np.float32(scale)


def expert_operands(ops: Sequence[Any]) -> tuple[Any, Any, Any, Any, Any, Any]:
    """moe_experts' operands (x, gates, w_in, s_in, w_out, s_out), a scale None where its
    weight is not quantized (an int8 stack is followed by its per-row scales (E, N))."""
    x, g, w_in, *rest = ops
    quantized = lambda w: str(getattr(w, "dtype", "")) in QUANT_DTYPES  # noqa: E731
    s_in = rest.pop(0) if quantized(w_in) and rest else None
    w_out = rest.pop(0) if rest else None
    s_out = rest.pop(0) if w_out is not None and quantized(w_out) and rest else None
    return x, g, w_in, s_in, w_out, s_out


@_op("moe_experts", (4, 6), "x (T, H), gates (T, E), w_in (E, 2F, H), w_out (E, H, F) -> (T, H) f32: the sum "
                            "over the experts e with gates[t, e] != 0 of gates[t, e] * w_out[e] @ (silu(g) * u), "
                            "where [g; u] = w_in[e] @ x[t] (gate rows first). With pack=B the weights are packed "
                            "per expert (see pack_rows): w_in (E, 2F/B, H, B), w_out (E, H/B, F, B), F in attr "
                            "inter; pairs=True: their panels' rows paired (pair_panels). An int8 w_in / w_out is followed by its per-row scales (E, 2F) / (E, H). "
                            "slots=k: no token has more than k nonzero gates (the gates' top_k: passes.route_experts)")
def _moe_experts_t(ts, a):
    _check(len(ts) > 3, "moe_experts needs x, gates, w_in and w_out")
    _check_precision(a)
    x, g, w_in, s_in, w_out, s_out = expert_operands(ts)
    _check(w_out is not None and len(ts) == 4 + (s_in is not None) + (s_out is not None) and all(
        (w.dtype in QUANT_DTYPES) == (s is not None) for w, s in ((w_in, s_in), (w_out, s_out))),
        "each int8 expert stack needs its scale operand, right after it")
    for w, s in ((w_in, s_in), (w_out, s_out)):
        if s is not None:
            _check(s.dtype == "float32" and s.ndim == 2 and s.shape[0] == w.shape[0],
                   f"an {w.dtype} expert stack is read with per-row scales f32[E, N], got {s}")
        else:
            _float(w)
    _float(x), _float(g)
    _check(x.ndim == 2 and g.ndim == 2 and g.shape[0] == x.shape[0], f"expects x (T, H), gates (T, E); got {x}, {g}")
    e, h = g.shape[1], x.shape[1]
    blk = a.get("pack")
    if blk:
        f = a.get("inter")
        _check(isinstance(f, int) and f > 0, "packed experts need attr inter (F)")
        _check(not a.get("pairs") or (w_in.dtype == w_out.dtype == "bfloat16" and h % 2 == 0 and f % 2 == 0),
               "paired panels need bf16 experts with an even hidden size and width")
        want_in, want_out = (e, -(-2 * f // blk), h, blk), (e, -(-h // blk), f, blk)
    else:
        _check(w_in.ndim == 3 and w_in.shape[1] % 2 == 0, f"w_in must be (E, 2F, H), got {w_in}")
        f = w_in.shape[1] // 2
        want_in, want_out = (e, 2 * f, h), (e, h, f)
    _check(w_in.shape == want_in, f"w_in {w_in} must be {want_in}")
    _check(w_out.shape == want_out, f"w_out {w_out} must be {want_out}")
    for s, rows in ((s_in, 2 * f), (s_out, h)):
        _check(s is None or s.shape == (e, rows), f"scales {s} must be f32[{e}, {rows}]")
    slots = a.get("slots")
    _check(slots is None or (isinstance(slots, int) and 0 < slots <= e), f"slots must be an int in [1, {e}], got {slots!r}")
    return x.with_dtype("float32")


@_moe_experts_t
def moe_experts(*ops, pack=None, inter=None, pairs=False, precision="high", slots=None):
    x, gates, w_in, s_in, w_out, s_out = expert_operands(ops)
    if pack:
        w_in, w_out = unpack_rows(w_in, 2 * inter, pairs), unpack_rows(w_out, x.shape[1], pairs)
    if s_in is not None:
        w_in = f32(w_in) * f32(s_in)[..., None]
    if s_out is not None:
        w_out = f32(w_out) * f32(s_out)[..., None]
    x, gates, f = f32(x), f32(gates), w_in.shape[1] // 2
    out = np.zeros(x.shape, np.float32)
    for e in range(gates.shape[1]):
        rows = np.nonzero(gates[:, e])[0]
        if rows.size:
            gu = x[rows] @ f32(w_in[e]).T
            act = gu[:, :f] / (1 + np.exp(-gu[:, :f])) * gu[:, f:]
            out[rows] += gates[rows, e, None] * (act @ f32(w_out[e]).T)
    return out


# **** normalization, elementwise ****


@_op("rms_norm", 2, "x (..., D) * rsqrt(mean(x^2) + eps) * (offset + w (D)), in out_dtype (default x's)")
def _rms_norm_t(ts, a):
    x, w = ts
    _float(x), _float(w)
    _check(w.shape == x.shape[-1:], f"weight shape {w.shape} must equal x's last dim {x.shape[-1:]}")
    _check(isinstance(a.get("eps"), float), "needs a float eps")
    return _out(x, a)


@_rms_norm_t
def rms_norm(x, w, eps, offset=0.0, out_dtype=None):
    x32 = f32(x)
    y = x32 / np.sqrt(np.mean(x32 * x32, axis=-1, keepdims=True) + np.float32(eps))
    return _cast_like(y * (np.float32(offset) + f32(w)), out_dtype or x.dtype)


@_op("layer_norm", 3, "(x (..., D) - mean) * rsqrt(var + eps) * w (D) + b (D), statistics in fp32")
def _layer_norm_t(ts, a):
    x, w, b = ts
    _check(b.shape == w.shape, f"bias shape {b.shape} must equal the weight's {w.shape}")
    _float(b)
    return OPS["rms_norm"].infer([x, w], a)


@_layer_norm_t
def layer_norm(x, w, b, eps):
    x32 = f32(x)
    c = x32 - x32.mean(axis=-1, keepdims=True)
    y = c / np.sqrt(np.mean(c * c, axis=-1, keepdims=True) + np.float32(eps))
    return (y * f32(w) + f32(b)).astype(x.dtype)


def _erf(x: np.ndarray) -> np.ndarray:
    from math import erf

    return np.vectorize(erf, otypes=[np.float64])(x).astype(np.float32)


def _elementwise(name: str, fn: Callable[..., np.ndarray], arity: int, doc: str) -> None:
    def infer(ts, a):
        for t in ts:
            _float(t)
        return _same(ts)

    OPS[name] = OpDef(name, arity, infer, lambda *xs: fn(*(f32(x) for x in xs)).astype(xs[0].dtype), doc)


_elementwise("add", np.add, 2, "a + b (equal types)")
_elementwise("mul", np.multiply, 2, "a * b (equal types)")
_elementwise("silu", lambda x: x / (1 + np.exp(-x)), 1, "x * sigmoid(x)")
_elementwise("sigmoid", lambda x: 1 / (1 + np.exp(-x)), 1, "1 / (1 + exp(-x))")
_elementwise("gelu", lambda x: 0.5 * x * (1 + _erf(x / np.float32(np.sqrt(2)))), 1, "x * Phi(x) (erf form)")
_elementwise("gelu_tanh", lambda x: 0.5 * x * (1 + np.tanh(np.float32(np.sqrt(2 / np.pi)) * (x + 0.044715 * x ** 3))),
             1, "GELU's tanh approximation (gelu_pytorch_tanh)")


@_op("scale", 1, "x * factor")
def _scale_t(ts, a):
    _float(ts[0])
    _check(isinstance(a.get("factor"), float), "needs a float factor")
    return ts[0]


@_scale_t
def scale(x, factor):
    return (f32(x) * np.float32(factor)).astype(x.dtype)


@_op("swiglu", 1, "x (..., 2F) -> silu(x[..., :F]) * x[..., F:], in out_dtype (default x's)")
def _swiglu_t(ts, a):
    (x,) = ts
    _float(x)
    _check(isinstance(x.shape[-1], int) and x.shape[-1] % 2 == 0, "last dim must be even")
    return _out(x.with_shape(x.shape[:-1] + (x.shape[-1] // 2,)), a)


@_swiglu_t
def swiglu(x, out_dtype=None):
    g, u = np.split(f32(x), 2, axis=-1)
    return _cast_like(g / (1 + np.exp(-g)) * u, out_dtype or x.dtype)


@_op("cast", 1, "convert to dtype")
def _cast_t(ts, a):
    return ts[0].with_dtype(a["dtype"])


@_cast_t
def cast(x, dtype):
    return _cast_like(x, dtype)


@_op("softmax", 1, "softmax over the last axis")
def _softmax_t(ts, a):
    _float(ts[0])
    return ts[0]


@_softmax_t
def softmax(x):
    x32 = f32(x)
    e = np.exp(x32 - x32.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(x.dtype)


@_op("causal_mask", 1, "x (..., T, S): -inf where key s > query t + (S - T)")
def _causal_mask_t(ts, a):
    _float(ts[0])
    _check(ts[0].ndim >= 2, "needs (..., T, S)")
    return ts[0]


@_causal_mask_t
def causal_mask(x):
    t, s = x.shape[-2:]
    allowed = np.arange(s)[None, :] <= np.arange(t)[:, None] + (s - t)
    return np.where(allowed, x, -np.inf).astype(x.dtype)


# **** layout ****


@_op("reshape", 1, "same elements, new shape")
def _reshape_t(ts, a):
    shape = tuple(a["shape"])
    _check(_numel(shape) == _numel(ts[0].shape), f"cannot reshape {ts[0].shape} to {shape}")
    return ts[0].with_shape(shape)


@_reshape_t
def reshape(x, shape):
    return x.reshape([-1 if isinstance(d, str) else d for d in shape])


@_op("transpose", 1, "permute axes")
def _transpose_t(ts, a):
    perm = tuple(a["perm"])
    _check(sorted(perm) == list(range(ts[0].ndim)), f"perm {perm} is not a permutation of {ts[0].ndim} axes")
    return ts[0].with_shape(ts[0].shape[p] for p in perm)


@_transpose_t
def transpose(x, perm):
    return np.transpose(x, perm)


def slice_extent(dim: Dim, start: int, stop: int | None) -> Dim:
    """Extent of ``[start:stop]`` along ``dim``; symbolic dims allow only a tail (start < 0, no stop)."""
    if isinstance(dim, int):
        return len(range(dim)[start:stop])
    _check(start < 0 and stop is None, f"slice [{start}:{stop}] of symbolic dim {dim!r} must be a tail [-k:]")
    return -start


@_op("slice", 1, "x[..., start:stop, ...] along axis")
def _slice_t(ts, a):
    x, ax = ts[0], a["axis"]
    _check(0 <= ax < x.ndim, f"axis {ax} out of range")
    ext = slice_extent(x.shape[ax], a["start"], a.get("stop"))
    return x.with_shape(x.shape[:ax] + (ext,) + x.shape[ax + 1:])


@_slice_t
def slice_(x, axis, start, stop=None):
    idx = [slice(None)] * x.ndim
    idx[axis] = slice(start, stop)
    return x[tuple(idx)]


@_op("concat", (1, 16), "concatenate along a static axis")
def _concat_t(ts, a):
    ax = a["axis"]
    first = ts[0]
    _check(all(t.dtype == first.dtype and t.ndim == first.ndim for t in ts), "operands differ in dtype or rank")
    _check(all(t.shape[:ax] + t.shape[ax + 1:] == first.shape[:ax] + first.shape[ax + 1:] for t in ts),
           "operands differ outside the concat axis")
    _check(all(isinstance(t.shape[ax], int) for t in ts), "concat axis must be static")
    return first.with_shape(first.shape[:ax] + (sum(t.shape[ax] for t in ts),) + first.shape[ax + 1:])


@_concat_t
def concat(*xs, axis):
    return np.concatenate(xs, axis=axis)


@_op("repeat", 1, "repeat each slice along axis `times` times (repeat_interleave; GQA head sharing)")
def _repeat_t(ts, a):
    x, ax = ts[0], a["axis"]
    _check(isinstance(x.shape[ax], int), "repeat axis must be static")
    return x.with_shape(x.shape[:ax] + (x.shape[ax] * a["times"],) + x.shape[ax + 1:])


@_repeat_t
def repeat(x, axis, times):
    return np.repeat(x, times, axis=axis)


# **** positions and attention ****


@_op("positional", 1, "abstract: rotary position embedding at positions 0..T-1 (insert_rotary lowers it); "
     "attr sections (t, h, w): multimodal RoPE (`mrope_axes`) at positions (3, T)")
def _positional_t(ts, a):
    x = ts[0]
    _float(x)
    _check(x.ndim == 3, "expects (T, H, D)")
    rd = a["rotary_dim"]
    _check(rd % 2 == 0 and rd <= x.shape[2], f"rotary_dim {rd} must be even and <= head dim {x.shape[2]}")
    if a.get("sections") is not None:
        mrope_axes(a["sections"], rd)
    return x


@_positional_t
def positional(x, theta, rotary_dim, sections=None):
    p = np.arange(x.shape[0])
    table = rope_table(p if sections is None else np.stack([p] * 3), theta, rotary_dim, sections)
    return rotary(x, table)


def mrope_axes(sections: Sequence[int], rotary_dim: int) -> np.ndarray:
    """Which row of (t, h, w) positions each of the R/2 frequencies reads, in multimodal RoPE
    interleaved as Qwen3-VL does it: frequency j takes h where j % 3 == 1 and j < 3 * sections[1],
    w where j % 3 == 2 and j < 3 * sections[2], else t (int32, R/2)."""
    _check(len(sections) == 3 and all(isinstance(s, int) and s >= 0 for s in sections),
           f"mrope sections must be 3 non-negative ints, got {sections!r}")
    j = np.arange(rotary_dim // 2)
    axes = np.zeros(rotary_dim // 2, np.int32)
    axes[(j % 3 == 1) & (j < 3 * sections[1])] = 1
    axes[(j % 3 == 2) & (j < 3 * sections[2])] = 2
    return axes


@_op("rope_table", 1, "positions (T) -> (T, R): cos(p * f) for R/2 freqs, then sin(p * f); with attr "
     "sections, positions (3, T) whose rows each frequency reads by `mrope_axes`")
def _rope_table_t(ts, a):
    (p,) = ts
    _check(a["rotary_dim"] % 2 == 0, "rotary_dim must be even")
    if a.get("sections") is None:
        _check(p.dtype in ("int32", "int64") and p.ndim == 1, "positions must be 1-D integers")
    else:
        _check(p.dtype in ("int32", "int64") and p.ndim == 2 and p.shape[0] == 3,
               "multimodal positions must be (3, T) integers")
        mrope_axes(a["sections"], a["rotary_dim"])
    return TensorType((p.shape[-1], a["rotary_dim"]), "float32")


def inv_freq(theta: float, rotary_dim: int) -> np.ndarray:
    """HF's ``1 / theta ** (arange(0, R, 2) / R)``, computed in float32 as transformers does."""
    exps = np.arange(0, rotary_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(rotary_dim)
    return (1.0 / (np.float32(theta) ** exps)).astype(np.float32)


@_rope_table_t
def rope_table(positions, theta, rotary_dim, sections=None):
    p = np.asarray(positions).astype(np.float32)
    if sections is not None:  # each frequency's own row of positions
        p = p[mrope_axes(sections, rotary_dim)].T  # (T, R/2)
    else:
        p = p[:, None]
    ang = p * inv_freq(theta, rotary_dim)[None, :]
    return np.concatenate([np.cos(ang), np.sin(ang)], axis=-1).astype(np.float32)


@_op("rotary", 2, "x (T, H, D) rotated neox-style (rotate_half) on its first R dims by table (T, R)")
def _rotary_t(ts, a):
    x, tab = ts
    _float(x)
    _check(x.ndim == 3 and tab.ndim == 2 and tab.shape[0] == x.shape[0], "expects x (T, H, D), table (T, R)")
    _check(tab.shape[1] <= x.shape[2], f"rotary dim {tab.shape[1]} exceeds head dim {x.shape[2]}")
    return x


@_rotary_t
def rotary(x, table):
    r = table.shape[1]
    cos, sin = table[:, None, : r // 2], table[:, None, r // 2:]
    x32 = f32(x)
    a, b, rest = x32[..., : r // 2], x32[..., r // 2: r], x32[..., r:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin, rest], axis=-1).astype(x.dtype)


# A head window: with attr ``start`` (and ``heads`` where the op cannot tell), an op given a
# (T, N) operand reads its columns [start, start + heads * D) as (T, heads, D). So a slice of a
# fused projection's output needs no copy (`passes.fold_slices`).


def _window_t(x: TensorType, start: Any, heads: Any, d: int) -> TensorType:
    _check(x.ndim == 2, f"a head window needs a (T, N) operand, got {x}")
    _check(isinstance(start, int) and isinstance(heads, int) and start >= 0 and heads > 0,
           f"bad head window start={start} heads={heads}")
    _check(isinstance(x.shape[1], int) and start + heads * d <= x.shape[1],
           f"head window [{start}, {start + heads * d}) exceeds {x.shape[1]} columns")
    return x.with_shape((x.shape[0], heads, d))


def _window(x: np.ndarray, start: int | None, heads: int, d: int) -> np.ndarray:
    return x if start is None else x[:, start: start + heads * d].reshape(x.shape[0], heads, d)


@_op("norm_rotary", 3, "rotary(rms_norm(x, w, eps), table): per-head qk-norm and RoPE in one pass; "
     "x (T, H, D), or a head window (attrs start, heads) of x (T, N)")
def _norm_rotary_t(ts, a):
    x, w, tab = ts
    if a.get("start") is not None:
        x = _window_t(x, a["start"], a.get("heads"), w.shape[0])
    OPS["rms_norm"].infer([x, w], a)
    return OPS["rotary"].infer([x, tab], {})


@_norm_rotary_t
def norm_rotary(x, w, table, eps, start=None, heads=None):
    x = _window(x, start, heads, w.shape[0])
    # the normalized value stays float32 between the two steps (it is never stored)
    return rotary(rms_norm(f32(x), f32(w), eps), table).astype(x.dtype)


@_op("attention", 3, "softmax(q k^T * scale [+ causal mask]) v; q (T, Hq, D), k (S, Hkv, D), v (S, Hkv, Dv)")
def _attention_t(ts, a):
    q, k, v = ts
    for t in ts:
        _float(t)
    _check(q.ndim == k.ndim == v.ndim == 3, "expects (T, H, D) operands")
    _check(k.shape[:2] == v.shape[:2] and q.shape[2] == k.shape[2], "q/k/v shapes disagree")
    _check(isinstance(q.shape[1], int) and isinstance(k.shape[1], int) and q.shape[1] % k.shape[1] == 0,
           f"query heads {q.shape[1]} must be a multiple of kv heads {k.shape[1]}")
    _check(isinstance(a.get("scale"), float), "needs a float scale")
    _check_precision(a)
    return _out(TensorType((q.shape[0], q.shape[1], v.shape[2]), q.dtype), a)


@_attention_t
def attention(q, k, v, scale, causal=True, precision="high", out_dtype=None):
    g = q.shape[1] // k.shape[1]
    kk, vv = np.repeat(f32(k), g, axis=1), np.repeat(f32(v), g, axis=1)
    s = np.einsum("thd,shd->hts", f32(q), kk) * np.float32(scale)
    if causal:
        s = causal_mask(s)
    return _cast_like(np.einsum("hts,shd->thd", softmax(s), vv), out_dtype or q.dtype)


# **** KV cache ****
# Caches are graph inputs (C, H, D) that `kv_append` updates in place: its result aliases the
# cache operand (the numpy reference writes into the array it is given). ``kv_len`` (the
# number of valid cache rows after the append) is either a shape-only input (kv_len,), a
# symbolic dim, or, with attr ``kv_len_tensor``, a (1,) int32 tensor holding it: then every
# shape is static and the length is data (see `passes.static_decode`).


def _check_kv_len(n: TensorType, a: dict[str, Any]) -> None:
    if a.get("kv_len_tensor"):
        _check(n.shape == (1,) and n.dtype == "int32", f"kv_len must be a (1,) int32 tensor, got {n}")
    else:
        _check(n.ndim == 1, "kv_len must be a shape-only (kv_len,) input")


def _kv_len_value(kv_len: np.ndarray, kv_len_tensor: bool) -> int:
    return int(kv_len[0]) if kv_len_tensor else kv_len.shape[0]


@_op("kv_append", (3, 5), "write k (T, H, D), or a head window (attr start) of k (T, N), into cache (C, H, D) "
     "rows [kv_len - T, kv_len); in place. With operands w (D), table and attr eps, the rows written are "
     "norm_rotary(k, w, table, eps): Qwen3's key path in one kernel")
def _kv_append_t(ts, a):
    cache, k, n = ts[:3]
    _check(len(ts) == 3 or (len(ts) == 5 and a.get("eps") is not None),
           "kv_append takes (cache, k, kv_len), or (cache, k, kv_len, w, table) with attr eps")
    if len(ts) == 5:
        rows = OPS["norm_rotary"].infer([k, *ts[3:]], {"eps": a["eps"], "start": a.get("start"),
                                                      "heads": cache.shape[1] if cache.ndim == 3 else None})
        k = rows.with_dtype(k.dtype)
    elif a.get("start") is not None and cache.ndim == 3:
        k = _window_t(k, a["start"], cache.shape[1], cache.shape[2])
    _check(cache.ndim == 3 and k.ndim == 3 and cache.shape[1:] == k.shape[1:], f"cache {cache} vs new rows {k}")
    _check_kv_len(n, a)
    return cache


@_kv_append_t
def kv_append(cache, k, kv_len, *norm, kv_len_tensor=False, start=None, eps=None):
    if norm:
        k = norm_rotary(k, *norm, eps=eps, start=start, heads=cache.shape[1])
    else:
        k = _window(k, start, cache.shape[1], cache.shape[2])
    n, t = _kv_len_value(kv_len, kv_len_tensor), k.shape[0]
    if not t <= n <= cache.shape[0]:
        raise IndexError(f"kv_len {n} is outside [{t}, {cache.shape[0]}] (the new rows .. the cache capacity)")
    cache[n - t: n] = k.astype(cache.dtype)
    return cache


@_op("kv_append_pair", 7, "kv_append of the keys (kc, k, kv_len, w, table: normed and rotated, attr start) "
     "and of the values (operands vc, v; attr v_start: v's head window) in one kernel; both in place, the "
     "keys' cache is the result (the values' cache is written as kv_append would; the attention after it "
     "reads vc). Operands (kc, k, kv_len, vc, v, w, table); the two caches have one shape")
def _kv_append_pair_t(ts, a):
    kc, k, n, vc, v, w, table = ts
    _check(vc.shape == kc.shape and vc.dtype == kc.dtype, f"kv_append_pair: caches {kc} and {vc} differ")
    OPS["kv_append"].infer([vc, v, n], {"start": a.get("v_start"), "kv_len_tensor": a.get("kv_len_tensor")})
    return OPS["kv_append"].infer([kc, k, n, w, table], a)


@_kv_append_pair_t
def kv_append_pair(kc, k, kv_len, vc, v, w, table, kv_len_tensor=False, start=None, v_start=None, eps=None):
    kv_append(vc, v, kv_len, kv_len_tensor=kv_len_tensor, start=v_start)
    return kv_append(kc, k, kv_len, w, table, kv_len_tensor=kv_len_tensor, start=start, eps=eps)


@_op("cache_attention", (4, 6), "attention of q (T, Hq, D) over cache rows [0, kv_len), causal by position. "
     "With operands w (D), table and attr eps (and start, heads): q is norm_rotary(x, w, table, eps) (of x's "
     "head window): Qwen3's query path fused into the attention")
def _cache_attention_t(ts, a):
    q, kc, vc, n = ts[:4]
    _check(len(ts) == 4 or (len(ts) == 6 and a.get("eps") is not None),
           "cache_attention takes (q, kc, vc, kv_len), or (x, kc, vc, kv_len, w, table) with attr eps")
    if len(ts) == 6:
        q = OPS["norm_rotary"].infer([q, *ts[4:]], {k: a.get(k) for k in ("eps", "start", "heads")})
    _check_kv_len(n, a)
    return OPS["attention"].infer([q, kc, vc], a)


@_cache_attention_t
def cache_attention(q, kc, vc, kv_len, *norm, scale, kv_len_tensor=False, eps=None, start=None, heads=None,
                    precision="high", out_dtype=None):
    if norm:
        q = norm_rotary(q, *norm, eps=eps, start=start, heads=heads)
    n = _kv_len_value(kv_len, kv_len_tensor)
    return attention(q, kc[:n], vc[:n], scale=scale, causal=True, out_dtype=out_dtype)


@_op("append_attention", (7, 8), "kv_append_pair then cache_attention of one step, in one kernel: operands (x, kc, "
     "vc, kv_len, w, table, kw[, sync]). x (T, N) holds the step's q, k and v heads (attrs start, k_start, v_start); "
     "the keys (normed by kw, rotated) and values are written into kc / vc in place, then q (normed by w, rotated) "
     "attends over cache rows [0, kv_len). One eps for both norms. Qwen3's whole decode attention. sync (S,) int32, "
     "S >= Hkv, all zeros (`passes.static_decode`): counters a split-key kernel may use to find the last of its "
     "blocks, zeros again when it ends")
def _append_attention_t(ts, a):
    x, kc, vc, n, w, table, kw = ts[:7]
    _check(a.get("k_start") is not None and a.get("v_start") is not None, "append_attention needs attrs k_start, "
           "v_start")
    if len(ts) == 8:
        _check(ts[7].dtype == "int32" and len(ts[7].shape) == 1 and ts[7].shape[0] >= kc.shape[1],
               f"append_attention's sync must be int32 (S,) with S >= {kc.shape[1]}, got {ts[7]}")
    OPS["kv_append_pair"].infer([kc, x, n, vc, x, kw, table], {**a, "start": a["k_start"]})
    return OPS["cache_attention"].infer([x, kc, vc, n, w, table], a)


@_append_attention_t
def append_attention(x, kc, vc, kv_len, w, table, kw, sync=None, *, scale, eps, start, heads, k_start, v_start,
                     kv_len_tensor=False):  # (sync: zeros, left so)
    kv_append_pair(kc, x, kv_len, vc, x, kw, table, kv_len_tensor=kv_len_tensor, start=k_start, v_start=v_start,
                   eps=eps)
    return cache_attention(x, kc, vc, kv_len, w, table, scale=scale, kv_len_tensor=kv_len_tensor, eps=eps,
                           start=start, heads=heads)


# **** linear attention (Qwen3-Next's gated DeltaNet) ****
# A linear-attention layer keeps, instead of a KV cache, a fixed-size state: the last K-1
# inputs of its causal convolution and a (Hv, Dk, Dv) fp32 matrix per layer. The ops below take
# the cache-less form (the state starts at zero) or, with operands (state, kv_len) added by
# `passes.insert_kv_cache`, the cached form: the step covers positions [kv_len - T, kv_len),
# reads the state that the earlier positions left (none at position 0: a new sequence, whatever
# the buffer holds) and writes it back in place, as `kv_append` writes a KV cache.


def _state_t(state: TensorType, shape: tuple, dtype: str, kv_len: TensorType, a: dict[str, Any]) -> None:
    _check(state.shape == shape and state.dtype == dtype, f"state must be {dtype}{list(shape)}, got {state}")
    _check_kv_len(kv_len, a)


def _state_start(t: int, kv_len: np.ndarray, kv_len_tensor: bool) -> int:
    """The first new position of a cached step (kv_len - T), checked."""
    n = _kv_len_value(kv_len, kv_len_tensor)
    if n < t:
        raise IndexError(f"kv_len {n} is less than the {t} new positions")
    return n - t


@_op("causal_conv1d", (2, 4), "silu of the depthwise causal convolution of x (T, C) with w (C, 1, K) over the "
     "sequence (zero before position 0): y[t, c] = silu(sum_j w[c, 0, j] * x[t - K + 1 + j, c]). Cached form: "
     "operands state (K-1, C) (the inputs at the K-1 positions before the step) and kv_len (as kv_append takes it)")
def _causal_conv1d_t(ts, a):
    x, w = ts[:2]
    _float(x), _float(w)
    _check(x.ndim == 2 and w.ndim == 3 and w.shape[:2] == (x.shape[1], 1) and isinstance(w.shape[2], int)
           and w.shape[2] >= 2, f"expects x (T, C) and a depthwise kernel w (C, 1, K >= 2), got {x}, {w}")
    _check(len(ts) in (2, 4), "the cached form takes (x, w, state, kv_len)")
    if len(ts) == 4:
        _state_t(ts[2], (w.shape[2] - 1, x.shape[1]), x.dtype, ts[3], a)
    return x


@_causal_conv1d_t
def causal_conv1d(x, w, *cache, kv_len_tensor=False):
    t, k = x.shape[0], w.shape[2]
    past = np.zeros((k - 1, x.shape[1]), np.float32)
    if cache:
        state, kv_len = cache
        if _state_start(t, kv_len, kv_len_tensor) > 0:
            past = f32(state)
    full = np.concatenate([past, f32(x)])
    if cache:
        state[...] = full[len(full) - (k - 1):].astype(state.dtype)
    w32 = f32(w)[:, 0, :]  # (C, K)
    y = sum(w32[:, j] * full[j: j + t] for j in range(k))
    return (y / (1 + np.exp(-y))).astype(x.dtype)


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)), and x itself above 20 (torch's threshold)."""
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


def l2_normalize(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """x / sqrt(sum(x^2) + eps) over the last axis (the FLA / transformers l2norm)."""
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + np.float32(eps))


@_op("gated_delta_rule", (7, 9), "the gated delta rule over q, k (T, Hk, Dk), v (T, Hv, Dv) (Hv a multiple of Hk; "
     "value head h reads key head h // (Hv / Hk)), a, b (T, Hv), a_log, dt_bias (Hv) -> (T, Hv, Dv) in v's dtype. "
     "With q, k l2-normalized (q also scaled by Dk^-0.5), decay = exp(-exp(a_log) * softplus(a + dt_bias)) and "
     "beta = sigmoid(b), each head's state S (Dk, Dv), zero at position 0, steps S = decay * S; "
     "S += k (beta * (v - S^T k))^T; and outputs S^T q. Cached form: operands state (Hv, Dk, Dv) f32 and kv_len "
     "(as kv_append takes it)")
def _gated_delta_rule_t(ts, a):
    q, k, v, ga, gb, a_log, dt_bias = ts[:7]
    for t in ts[:7]:
        _float(t)
    _check(q.ndim == k.ndim == v.ndim == 3 and q.shape == k.shape and v.shape[0] == q.shape[0],
           f"expects q, k (T, Hk, Dk) and v (T, Hv, Dv), got {q}, {k}, {v}")
    hk, hv = q.shape[1], v.shape[1]
    _check(isinstance(hk, int) and isinstance(hv, int) and hv % hk == 0,
           f"value heads {hv} must be a multiple of key heads {hk}")
    _check(ga.shape == gb.shape == (q.shape[0], hv), f"a and b must be (T, {hv}), got {ga}, {gb}")
    _check(a_log.shape == dt_bias.shape == (hv,), f"a_log and dt_bias must be ({hv},), got {a_log}, {dt_bias}")
    _check(len(ts) in (7, 9), "the cached form takes (q, k, v, a, b, a_log, dt_bias, state, kv_len)")
    if len(ts) == 9:
        _state_t(ts[7], (hv, q.shape[2], v.shape[2]), "float32", ts[8], a)
    return v


@_gated_delta_rule_t
def gated_delta_rule(q, k, v, ga, gb, a_log, dt_bias, *cache, kv_len_tensor=False):
    t, hk, dk = q.shape
    r = v.shape[1] // hk
    qn = np.repeat(l2_normalize(f32(q)), r, axis=1) * np.float32(dk ** -0.5)
    kn = np.repeat(l2_normalize(f32(k)), r, axis=1)
    decay = np.exp(-np.exp(f32(a_log)) * softplus(f32(ga) + f32(dt_bias)))  # (T, Hv)
    beta = 1 / (1 + np.exp(-f32(gb)))
    v32 = f32(v)
    s = np.zeros((v.shape[1], dk, v.shape[2]), np.float32)
    if cache and _state_start(t, cache[1], kv_len_tensor) > 0:
        s = f32(cache[0]).copy()
    out = np.empty(v.shape, np.float32)
    for i in range(t):
        s *= decay[i][:, None, None]
        delta = (v32[i] - np.einsum("hij,hi->hj", s, kn[i])) * beta[i][:, None]
        s += kn[i][:, :, None] * delta[:, None, :]
        out[i] = np.einsum("hij,hi->hj", s, qn[i])
    if cache:
        cache[0][...] = s
    return out.astype(v.dtype)


@_op("rms_norm_gated", 3, "rms_norm(x, w, eps) * silu(z): x, z (..., D), w (D)")
def _rms_norm_gated_t(ts, a):
    x, z, w = ts
    _check(z.shape == x.shape, f"gate {z} must have x's shape {x.shape}")
    _float(z)
    return OPS["rms_norm"].infer([x, w], a)


@_rms_norm_gated_t
def rms_norm_gated(x, z, w, eps):
    z32 = f32(z)
    return (f32(rms_norm(f32(x), w, eps)) * (z32 / (1 + np.exp(-z32)))).astype(x.dtype)


@_op("sigmoid_gate", 2, "x * sigmoid(g), g of x's shape or (..., 1) (one gate per row)")
def _sigmoid_gate_t(ts, a):
    x, g = ts
    _float(x), _float(g)
    _check(g.shape in (x.shape, x.shape[:-1] + (1,)), f"gate {g} must be {x.shape} or {x.shape[:-1] + (1,)}")
    return x


@_sigmoid_gate_t
def sigmoid_gate(x, g):
    return (f32(x) / (1 + np.exp(-f32(g)))).astype(x.dtype)


# **** vision (Qwen3-VL) ****


@_op("weighted_rows", 3, "table (V, H), idx (N, K) ints, w (N, K) -> (N, H) fp32: sum_k w[n, k] * table[idx[n, k]] "
     "(a resampled position embedding)")
def _weighted_rows_t(ts, a):
    table, idx, w = ts
    _float(table), _float(w)
    _check(table.ndim == 2 and idx.ndim == 2 and idx.dtype in ("int32", "int64"), "expects table (V, H), idx (N, K)")
    _check(w.shape == idx.shape, f"weights {w.shape} must have the indices' shape {idx.shape}")
    return TensorType((idx.shape[0], table.shape[1]), "float32")


@_weighted_rows_t
def weighted_rows(table, idx, w):
    return np.einsum("nkh,nk->nh", f32(table)[idx], f32(w)).astype(np.float32)


def _rows_t(ts, a):
    h, feats, rows = ts
    _float(h), _float(feats)
    _check(h.ndim == 2 and feats.ndim == 2 and feats.shape[1] == h.shape[1], f"expects h (T, H), feats (N, H); "
           f"got {h} and {feats}")
    _check(rows.ndim == 1 and rows.shape[0] == h.shape[0] and rows.dtype == "int32", "rows must be (T,) int32")
    return h


@_op("merge_rows", 3, "h (T, H), feats (N, H), rows (T,) int32 -> h with row t replaced by feats[rows[t]] "
     "where rows[t] >= 0 (image features in place of their placeholder tokens)")
def _merge_rows_t(ts, a):
    return _rows_t(ts, a)


@_merge_rows_t
def merge_rows(h, feats, rows):
    out = h.copy()
    at = rows >= 0
    out[at] = _cast_like(f32(feats)[rows[at]], h.dtype)
    return out


@_op("add_rows", 3, "h (T, H), feats (N, H), rows (T,) int32 -> h + feats[rows[t]] on the rows where rows[t] >= 0")
def _add_rows_t(ts, a):
    return _rows_t(ts, a)


@_add_rows_t
def add_rows(h, feats, rows):
    out = f32(h)
    at = rows >= 0
    out[at] += f32(feats)[rows[at]]
    return out.astype(h.dtype)


# **** sampling ****
# The next token is drawn where the logits are (on the GPU, only 4 bytes come back): greedy
# argmax, or the Gumbel-max trick, argmax(z / temperature + g) with g ~ Gumbel(0, 1), which
# samples softmax(z / temperature) exactly. The uniforms behind g come from a 32-bit integer
# hash of (key, token index), so a step needs only a fresh key from the host.

GOLDEN32 = 0x9E3779B9


def hash32(x: np.ndarray) -> np.ndarray:
    """lowbias32 (C. Wellons): a uint32 -> uint32 mix with good avalanche; the kernels use the same."""
    x = np.asarray(x, dtype=np.uint32)
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def gumbel_uniform(key: int, n: int) -> np.ndarray:
    """The uniforms in (0, 1) for token indices 0..n-1 under ``key``: 24 hash bits, centered."""
    with np.errstate(over="ignore"):
        h = hash32(np.arange(n, dtype=np.uint32) + np.uint32(key & 0xFFFFFFFF) * np.uint32(GOLDEN32))
    return ((h >> np.uint32(8)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-24)


@_op("sample_token", 3, "logits (1, V), inv_temperature (1,), key (1,) int32 -> token (1,) int32: "
     "argmax(logits) at inv_temperature 0, else Gumbel-max sampling of softmax(logits * inv_temperature)")
def _sample_token_t(ts, a):
    z, inv_t, key = ts
    _float(z)
    _check(z.ndim == 2 and z.shape[0] == 1, f"expects logits (1, V), got {z}")
    _check(inv_t.shape == (1,) and inv_t.dtype == "float32", f"inv_temperature must be (1,) float32, got {inv_t}")
    _check(key.shape == (1,) and key.dtype == "int32", f"key must be (1,) int32, got {key}")
    return TensorType((1,), "int32")


@_sample_token_t
def sample_token(z, inv_temperature, key):
    v = f32(z)[0]
    it = np.float32(inv_temperature[0])
    if it > 0:
        v = v * it - np.log(-np.log(gumbel_uniform(int(key[0]), v.size)))
    return np.array([np.argmax(v)], dtype=np.int32)
