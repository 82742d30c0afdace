"""Kernels of the linear-attention ops (Qwen3-Next's gated DeltaNet): `causal_conv1d` and
`gated_delta_rule`, with the meaning of their references in `ir.ops`.

Both are recurrences over the sequence, which TE cannot state, so they are written in TIR:
one loop over independent lanes (channels of the convolution, value heads of the delta
rule) around a serial walk over the T new positions. ``parallel`` makes that outer loop a
parallel one (the CPU rule in `schedules.cpu.linear_attention`); the lowering emits the
serial form. The cached forms (``cached``) take (state, kv_len) after the op's operands and
update the state in place (`engine.lower` emits a `call_tir_inplace`); the step's first
position is kv_len - T, and at position 0 the state is taken as zero, not read. kv_len is a
scalar, or in a static decode step (`passes.static_decode`) a (1,) int32 buffer.

Each delta-rule head keeps its (Dk, Dv) state in fp32 and per new position reads it twice:
once for S^T k (what the state predicts for v), once to update it and read S^T q.
"""
from __future__ import annotations

from typing import Callable

from tvm import tirx

from .kernels import kv_len_operand

F32 = "float32"
L2_EPS = 1e-6  # q and k are l2-normalized as x / sqrt(sum(x^2) + 1e-6)
SOFTPLUS_THRESHOLD = 20.0  # softplus(x) = x above it (torch's)
CHANNELS = 64  # conv channels per block (or the largest power of 2 dividing C): contiguous in x, y, state


def causal_conv1d(c: int, k: int, x_dtype: str, w_dtype: str, cached: bool, parallel: bool = False,
                  exp: Callable[[tirx.PrimExpr], tirx.PrimExpr] = tirx.exp,
                  kv_len_tensor: bool = False) -> tirx.PrimFunc:
    """PrimFunc (x (T, c), w (c, 1, k), [state (k-1, c), kv_len], y (T, c)): y = silu of the
    depthwise causal convolution; the cached form reads the k-1 inputs before the step from
    state (unless the step starts at 0) and leaves there the last k-1 inputs up to kv_len.
    ``exp`` computes the silu's exponential (a target may have a faster one than libm's).
    ``kv_len_tensor``: kv_len is a (1,) int32 buffer (`passes.static_decode`), not a scalar."""
    from tvm.script import tirx as T

    def silu(v):
        return v / (tirx.const(1, F32) + exp(-v))

    lanes = T.parallel if parallel else T.serial

    width = next(b for b in (CHANNELS, 32, 16, 8, 4, 2, 1) if c % b == 0)  # a static block, for SIMD
    nb = c // width

    @T.macro
    def body(x, w, state, t, start, y):
        for cb in lanes(nb):
            lo = cb * width
            acc = T.decl_buffer((width,), F32)
            taps = T.decl_buffer((k, width), F32)  # the block's kernel, tap-major: rows contiguous
            for j, cc in T.grid(k, width):
                taps[j, cc] = w[lo + cc, 0, j].astype(F32)
            for i in range(t):
                for cc in T.vectorized(width):
                    acc[cc] = T.float32(0)
                for j in range(k):
                    p = i + j - (k - 1)  # the input position tap j reads
                    if p >= 0:
                        for cc in T.vectorized(width):
                            acc[cc] = acc[cc] + taps[j, cc] * x[p, lo + cc].astype(F32)
                    elif cached:
                        if start > 0:
                            for cc in T.vectorized(width):
                                acc[cc] = acc[cc] + taps[j, cc] * state[k - 1 + p, lo + cc].astype(F32)
                for cc in T.vectorized(width):
                    y[i, lo + cc] = T.Cast(x_dtype, silu(acc[cc]))
            if cached:  # then shift the window: ascending rows read only rows not yet written
                for r in range(k - 1):
                    if r + t >= k - 1:
                        for cc in T.vectorized(width):
                            state[r, lo + cc] = x[r + t - (k - 1), lo + cc]
                    elif start > 0:
                        for cc in T.vectorized(width):
                            state[r, lo + cc] = state[r + t, lo + cc]
                    else:
                        for cc in T.vectorized(width):
                            state[r, lo + cc] = T.Cast(x_dtype, 0)

    return conv1d_func(body, c, k, x_dtype, w_dtype, cached, kv_len_tensor)


def gated_delta_rule(hk: int, hv: int, dk: int, dv: int, dtypes: tuple[str, ...], cached: bool,
                     parallel: bool = False, kv_len_tensor: bool = False) -> tirx.PrimFunc:
    """PrimFunc (q, k (T, hk, dk), v (T, hv, dv), a, b (T, hv), a_log, dt_bias (hv), [state (hv,
    dk, dv) f32, kv_len], out (T, hv, dv)). ``dtypes``: of q, k, v, a, b, a_log, dt_bias.
    ``kv_len_tensor`` as for `causal_conv1d`."""
    from tvm.script import tirx as T

    q_dt, k_dt, v_dt, a_dt, b_dt, alog_dt, dtb_dt = dtypes
    group = hv // hk
    lanes = T.parallel if parallel else T.serial
    q_scale = float(dk) ** -0.5

    @T.macro
    def body(q, k, v, ga, gb, a_log, dt_bias, s, t, start, out):
        for h in lanes(hv):
            kh = h // group
            qv = T.decl_buffer((dk,), F32)
            kv = T.decl_buffer((dk,), F32)
            u = T.decl_buffer((dv,), F32)
            o = T.decl_buffer((dv,), F32)
            sc = T.decl_buffer((4,), F32)  # sum q^2, sum k^2, decay, beta
            if start == 0:
                for i, j in T.grid(dk, dv):
                    s[h, i, j] = T.float32(0)
            for pos in range(t):
                sc[0] = T.float32(0)
                sc[1] = T.float32(0)
                for i in range(dk):
                    sc[0] = sc[0] + q[pos, kh, i].astype(F32) * q[pos, kh, i].astype(F32)
                    sc[1] = sc[1] + k[pos, kh, i].astype(F32) * k[pos, kh, i].astype(F32)
                for i in range(dk):
                    qv[i] = q[pos, kh, i].astype(F32) * T.rsqrt(sc[0] + T.float32(L2_EPS)) * T.float32(q_scale)
                    kv[i] = k[pos, kh, i].astype(F32) * T.rsqrt(sc[1] + T.float32(L2_EPS))
                sc[2] = decay(ga, dt_bias, a_log, pos, h)
                sc[3] = T.sigmoid(gb[pos, h].astype(F32))
                for j in range(dv):
                    u[j] = T.float32(0)
                    o[j] = T.float32(0)
                for i, j in T.grid(dk, dv):  # what the decayed state predicts for v
                    u[j] = u[j] + s[h, i, j] * kv[i]
                for j in range(dv):
                    u[j] = (v[pos, h, j].astype(F32) - sc[2] * u[j]) * sc[3]
                for i, j in T.grid(dk, dv):
                    s[h, i, j] = s[h, i, j] * sc[2] + kv[i] * u[j]
                    o[j] = o[j] + s[h, i, j] * qv[i]
                for j in range(dv):
                    out[pos, h, j] = T.Cast(v_dt, o[j])

    return delta_rule_func(body, hk, hv, dk, dv, dtypes, cached, kv_len_tensor)


def decay(ga, dt_bias, a_log, pos, h) -> tirx.PrimExpr:
    """The delta rule's decay of value head h at position pos: exp(-exp(a_log) * softplus(a +
    dt_bias)), in fp32 (`ir.ops.gated_delta_rule`)."""
    x = ga[pos, h].astype(F32) + dt_bias[h].astype(F32)
    top = tirx.const(SOFTPLUS_THRESHOLD, F32)
    soft = tirx.if_then_else(x > top, x, tirx.log1p(tirx.exp(tirx.min(x, top))))
    return tirx.exp(-tirx.exp(a_log[h].astype(F32)) * soft)


def conv1d_operands(func: tirx.PrimFunc) -> dict:
    """`causal_conv1d`'s arguments (c, k, dtypes, cached, kv_len_tensor) read back from a
    lowered PrimFunc of it: what a target's rule needs to rebuild the kernel its own way."""
    from tvm.tirx.buffer import is_buffer_var

    x, w = [p for p in func.params if is_buffer_var(p)][:2]
    cached = len(func.params) == 5
    return dict(c=int(x.shape[1]), k=int(w.shape[2]), x_dtype=str(x.dtype), w_dtype=str(w.dtype), cached=cached,
                kv_len_tensor=cached and is_buffer_var(func.params[3]))


def delta_rule_operands(func: tirx.PrimFunc) -> dict:
    """`gated_delta_rule`'s arguments read back from a lowered PrimFunc of it (as `conv1d_operands`)."""
    from tvm.tirx.buffer import is_buffer_var

    bufs = [p for p in func.params if is_buffer_var(p)]
    q, v = bufs[0], bufs[2]
    cached = len(func.params) == 10
    return dict(hk=int(q.shape[1]), hv=int(v.shape[1]), dk=int(q.shape[2]), dv=int(v.shape[2]),
                dtypes=tuple(str(b.dtype) for b in bufs[:7]), cached=cached,
                kv_len_tensor=cached and is_buffer_var(func.params[8]))


# The PrimFunc forms around a kernel body (these kernels' and `schedules.cuda.linear_attention`'s):
# cache-less (the state starts at zero), and cached, with kv_len a scalar or a (1,) int32 buffer
# (`kernels.kv_len_operand`). The step's first position is kv_len - T. (S-TIR
# functions: a body may hold blocks, as the CUDA kernels' do.)


def conv1d_func(body, c: int, k: int, x_dtype: str, w_dtype: str, cached: bool,
                kv_len_tensor: bool) -> tirx.PrimFunc:
    """(x (T, c), w (c, 1, k), [state (k-1, c), kv_len], y (T, c)) around ``body(x, w, state,
    t, start, y)``; the cache-less form passes x as the (unread) state."""
    from tvm.script import tirx as T

    kv_ann, kv_value = kv_len_operand(kv_len_tensor)
    if cached:
        @T.prim_func(private=True, s_tir=True)
        def causal_conv1d_cached(var_x: T.handle, w: T.Buffer((c, 1, k), w_dtype),
                                 state: T.Buffer((k - 1, c), x_dtype), kv_len: kv_ann, var_y: T.handle):
            t = T.int64()
            x = T.match_buffer(var_x, (t, c), x_dtype)
            y = T.match_buffer(var_y, (t, c), x_dtype)
            body(x, w, state, t, kv_value(kv_len) - t, y)

        return causal_conv1d_cached

    @T.prim_func(private=True, s_tir=True)
    def causal_conv1d(var_x: T.handle, w: T.Buffer((c, 1, k), w_dtype), var_y: T.handle):
        t = T.int64()
        x = T.match_buffer(var_x, (t, c), x_dtype)
        y = T.match_buffer(var_y, (t, c), x_dtype)
        body(x, w, x, t, T.int64(0), y)

    return causal_conv1d


def delta_rule_func(body, hk: int, hv: int, dk: int, dv: int, dtypes: tuple[str, ...], cached: bool,
                    kv_len_tensor: bool, scratch_state: bool = True) -> tirx.PrimFunc:
    """(q, k, v, a, b, a_log, dt_bias, [state, kv_len], out) around ``body(q, k, v, a, b, a_log,
    dt_bias, state, t, start, out)``. The cache-less form gives the body a state buffer of its
    own (``scratch_state``), or passes out where the body keeps its state elsewhere."""
    from tvm.script import tirx as T

    q_dt, k_dt, v_dt, a_dt, b_dt, alog_dt, dtb_dt = dtypes

    kv_ann, kv_value = kv_len_operand(kv_len_tensor)
    if cached:
        @T.prim_func(private=True, s_tir=True)
        def gated_delta_rule_cached(var_q: T.handle, var_k: T.handle, var_v: T.handle, var_a: T.handle,
                                    var_b: T.handle, a_log: T.Buffer((hv,), alog_dt), dt_bias: T.Buffer((hv,), dtb_dt),
                                    s: T.Buffer((hv, dk, dv), F32), kv_len: kv_ann, var_out: T.handle):
            t = T.int64()
            q = T.match_buffer(var_q, (t, hk, dk), q_dt)
            k = T.match_buffer(var_k, (t, hk, dk), k_dt)
            v = T.match_buffer(var_v, (t, hv, dv), v_dt)
            ga = T.match_buffer(var_a, (t, hv), a_dt)
            gb = T.match_buffer(var_b, (t, hv), b_dt)
            out = T.match_buffer(var_out, (t, hv, dv), v_dt)
            body(q, k, v, ga, gb, a_log, dt_bias, s, t, kv_value(kv_len) - t, out)

        return gated_delta_rule_cached

    @T.prim_func(private=True, s_tir=True)
    def gated_delta_rule(var_q: T.handle, var_k: T.handle, var_v: T.handle, var_a: T.handle, var_b: T.handle,
                         a_log: T.Buffer((hv,), alog_dt), dt_bias: T.Buffer((hv,), dtb_dt), var_out: T.handle):
        t = T.int64()
        q = T.match_buffer(var_q, (t, hk, dk), q_dt)
        k = T.match_buffer(var_k, (t, hk, dk), k_dt)
        v = T.match_buffer(var_v, (t, hv, dv), v_dt)
        ga = T.match_buffer(var_a, (t, hv), a_dt)
        gb = T.match_buffer(var_b, (t, hv), b_dt)
        out = T.match_buffer(var_out, (t, hv, dv), v_dt)
        if scratch_state:
            s = T.alloc_buffer((hv, dk, dv), F32)
            body(q, k, v, ga, gb, a_log, dt_bias, s, t, T.int64(0), out)
        else:
            body(q, k, v, ga, gb, a_log, dt_bias, out, t, T.int64(0), out)

    return gated_delta_rule
