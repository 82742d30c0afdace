"""Mixture-of-experts MLPs on CPU: only the experts a token was routed to run.

`kernels.moe_experts` states the op densely; this kernel replaces it for packed expert
weights (`passes.pack_weights`: per expert, (2F/B, H, B) in and (H/B, F, B) out). Expert by
expert, it lists the tokens with a nonzero gate and, if there are any:

    in:  each core takes blocks of B of the expert's 2F gate/up rows; one (H, B) panel streams
         past ROWS routed tokens at a time, a ROWS x B tile of sums in registers
    act: silu(gate) * up per routed token
    out: likewise over the (F, B) panels of the down projection; each token's output gets
         gate[t, e] times its sums

so a decode step reads top_k of E experts' weights, and prefill reads each routed expert's
panels once per ROWS of its tokens while they sit in cache. Sums are fp32 over the stored
weights, in expert order, as the op's reference adds them; int8 stacks
(`passes.quantize_weights`) widen as they load and scale each row's sum once.
"""
from __future__ import annotations

from tvm import tirx
from tvm.tirx.buffer import is_buffer_var

from ...targets import TargetDesc
from ...ir.ops import expert_operands
from ..kernels import same_params

F32 = "float32"
ROWS = 4  # routed tokens per register tile (T > 1)


def sparse_experts(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc | None:
    """The routed kernel for a moe_experts over packed weights (both stacks float, or both
    int8 with their scales), else None."""
    if not all(is_buffer_var(p) for p in func.params) or len(func.params) not in (5, 7):
        return None
    x, g, w_in, s_in, w_out, s_out = expert_operands(func.params[:-1])
    out = func.params[-1]
    if len(w_in.shape) != 4 or len(w_out.shape) != 4 or w_in.dtype != w_out.dtype or out.dtype != F32:
        return None
    e, nb_in, h, blk = (int(v) for v in w_in.shape)
    f = int(w_out.shape[2])
    one = isinstance(x.shape[0], tirx.IntImm) and int(x.shape[0]) == 1
    kernel = _kernel(e, h, f, blk, nb_in, int(w_out.shape[1]), (x.dtype, g.dtype, w_in.dtype),
                     rows=1 if one else ROWS, quantized=s_in is not None)
    return same_params(kernel, func)


def _kernel(e: int, h: int, f: int, blk: int, nb_in: int, nb_out: int, dtypes: tuple[str, ...],
            rows: int, quantized: bool) -> tirx.PrimFunc:
    from tvm.script import tirx as T

    xdt, gdt, wdt = dtypes

    @T.macro
    def routed(src, w, scale, n_rows, ex, nb, k_len, tok, n, g, dst, into_act):
        """Each block jb of B rows of expert ex's matrix w: sums over k of src[token, k] * w[ex,
        jb, k, :] for the n routed tokens tok[:n], ROWS tokens at a time, times the rows' int8
        scales if any; then into dst: the gate/up sums as they are (into_act), or gate times the
        down sums, added. (A padding row's weights are 0; its scale index is clamped.)"""
        for jb in T.parallel(nb):
            tile = T.alloc_buffer((rows, blk), F32, scope="local")
            ri = T.alloc_buffer((rows,), "int64", scope="local")
            for rt in range((n + rows - 1) // rows):
                for r in T.unroll(rows):
                    ri[r] = tok[T.min(rt * rows + r, n - 1)]  # a short last tile repeats a token
                    for b in T.vectorized(blk):
                        tile[r, b] = T.float32(0)
                for k in range(k_len):
                    for r in T.unroll(rows):
                        for b in T.vectorized(blk):
                            tile[r, b] = tile[r, b] + T.Cast(F32, src[ri[r], k]) * T.Cast(F32, w[ex, jb, k, b])
                if quantized:
                    for r in T.unroll(rows):
                        for b in T.vectorized(blk):
                            tile[r, b] = tile[r, b] * scale[ex, T.min(jb * blk + b, n_rows - 1)]
                for r in range(rows):
                    if rt * rows + r < n:
                        if into_act:
                            for b in T.vectorized(blk):
                                dst[ri[r], jb * blk + b] = tile[r, b]
                        else:
                            for b in range(blk):
                                if jb * blk + b < h:
                                    dst[ri[r], jb * blk + b] = dst[ri[r], jb * blk + b] + T.Cast(
                                        F32, g[ri[r], ex]) * tile[r, b]

    @T.macro
    def body(x, g, w_in, s_in, w_out, s_out, out, t):
        gu = T.alloc_buffer((t, nb_in * blk), F32)
        act = T.alloc_buffer((t, f), F32)
        tok = T.alloc_buffer((t,), "int64")
        cnt = T.alloc_buffer((1,), "int64")
        for i in T.parallel(t):
            for c in range(h):
                out[i, c] = T.float32(0)
        for ex in range(e):
            cnt[0] = T.int64(0)
            for i in range(t):
                if g[i, ex] != T.Cast(gdt, 0):
                    tok[cnt[0]] = i
                    cnt[0] = cnt[0] + 1
            n = cnt[0]
            if n > 0:
                routed(x, w_in, s_in, 2 * f, ex, nb_in, h, tok, n, g, gu, True)
                for j in T.parallel(n):
                    for c in range(f):
                        act[tok[j], c] = gu[tok[j], c] * T.sigmoid(gu[tok[j], c]) * gu[tok[j], f + c]
                routed(act, w_out, s_out, h, ex, nb_out, f, tok, n, g, out, False)

    in_shape, out_shape = (e, nb_in, h, blk), (e, nb_out, f, blk)
    if quantized:
        @T.prim_func(private=True, s_tir=True)
        def moe_experts_routed_int8(var_x: T.handle, var_g: T.handle, w_in: T.Buffer(in_shape, wdt),
                                    s_in: T.Buffer((e, 2 * f), F32), w_out: T.Buffer(out_shape, wdt),
                                    s_out: T.Buffer((e, h), F32), var_out: T.handle):
            t = T.int64()
            x = T.match_buffer(var_x, (t, h), xdt)
            g = T.match_buffer(var_g, (t, e), gdt)
            out = T.match_buffer(var_out, (t, h), F32)
            with T.sblock("root"):
                body(x, g, w_in, s_in, w_out, s_out, out, t)

        return moe_experts_routed_int8

    @T.prim_func(private=True, s_tir=True)
    def moe_experts_routed(var_x: T.handle, var_g: T.handle, w_in: T.Buffer(in_shape, wdt),
                           w_out: T.Buffer(out_shape, wdt), var_out: T.handle):
        t = T.int64()
        x = T.match_buffer(var_x, (t, h), xdt)
        g = T.match_buffer(var_g, (t, e), gdt)
        out = T.match_buffer(var_out, (t, h), F32)
        with T.sblock("root"):
            body(x, g, w_in, None, w_out, None, out, t)

    return moe_experts_routed
