"""The linear-attention recurrences (Qwen3-Next's gated DeltaNet) on CUDA: the kernels of
`schedules.linear_attention`, with the same operands and meaning, laid out for a GPU.

    causal_conv1d     a thread per channel, CONV_THREADS per block: the channel's K taps in
                      registers, a walk over the T new positions (the state's K-1 inputs
                      before them), then the window shifted
    gated_delta_rule  a block per (value head, slice of COLS state columns), a thread per
                      column: the slice of the head's (Dk, Dv) fp32 state sits in shared memory
                      for the whole step. Per position the block loads q and k once and sums
                      their squares in COLS parts (l2 norms), then each thread updates its own
                      column: u = beta * (v - decay * S^T k), S = decay * S + k u, out = S^T q

Decode reads each head's state once from global memory and writes it back once. Prefill walks
the positions one after another (a chunked form of the delta rule would run them in parallel:
not done). Phases share data only through shared memory, so the kernels mean the same run
serially (tests/cuda_emulation.py).
"""
from __future__ import annotations

from tvm import tirx

from ...targets import TargetDesc
from .. import linear_attention as la
from ..linear_attention import L2_EPS

F32 = "float32"
CONV_THREADS = 128
COLS = 32  # delta rule: state columns (threads) per block


def _ceil(a, b):
    return (a + b - 1) // b


def cuda_conv1d(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc:
    return conv1d_kernel(**la.conv1d_operands(func))


def cuda_delta_rule(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc:
    return delta_rule_kernel(**la.delta_rule_operands(func))


def conv1d_kernel(c: int, k: int, x_dtype: str, w_dtype: str, cached: bool, kv_len_tensor: bool) -> tirx.PrimFunc:
    """`linear_attention.causal_conv1d`'s PrimFunc, a thread per channel."""
    from tvm.script import tirx as T

    @T.macro
    def body(x, w, state, t, start, y):
        for bx in T.thread_binding(_ceil(c, CONV_THREADS), thread="blockIdx.x"):
            for tx in T.thread_binding(CONV_THREADS, thread="threadIdx.x"):
                with T.sblock("conv"):
                    T.reads()
                    T.writes()
                    taps = T.sblock_alloc_buffer((k,), F32, scope="local")
                    acc = T.sblock_alloc_buffer((1,), F32, scope="local")
                    # the step's first position, read through a register: with kv_len - T itself in
                    # the conditions, TVM 0.27 built the cached form's llvm code so that no term of
                    # x was added where the step starts at 0 (tests/schedules/test_cuda_linear_attention.py)
                    first = T.sblock_alloc_buffer((1,), "int64", scope="local")
                    ch = bx * CONV_THREADS + tx
                    first[0] = start
                    if ch < c:
                        for j in T.unroll(k):
                            taps[j] = T.Cast(F32, w[ch, 0, j])
                        for i in range(t):
                            acc[0] = T.float32(0)
                            for j in T.unroll(k):
                                if i + j >= k - 1:
                                    acc[0] = acc[0] + taps[j] * T.Cast(F32, x[i + j - (k - 1), ch])
                                elif cached:
                                    if first[0] > 0:
                                        acc[0] = acc[0] + taps[j] * T.Cast(F32, state[i + j, ch])
                            y[i, ch] = T.Cast(x_dtype, acc[0] / (T.float32(1) + T.exp(-acc[0])))
                        if cached:  # shift the window: ascending rows read only rows not yet written
                            for r in range(k - 1):
                                if r + t >= k - 1:
                                    state[r, ch] = x[r + t - (k - 1), ch]
                                elif first[0] > 0:
                                    state[r, ch] = state[r + t, ch]
                                else:
                                    state[r, ch] = T.Cast(x_dtype, 0)

    return la.conv1d_func(body, c, k, x_dtype, w_dtype, cached, kv_len_tensor)


def delta_rule_kernel(hk: int, hv: int, dk: int, dv: int, dtypes: tuple[str, ...], cached: bool,
                      kv_len_tensor: bool) -> tirx.PrimFunc:
    """`linear_attention.gated_delta_rule`'s PrimFunc, a block per (value head, COLS columns)."""
    from tvm.script import tirx as T

    q_dt, k_dt, v_dt, a_dt, b_dt, alog_dt, dtb_dt = dtypes
    group = hv // hk
    q_scale = float(dk) ** -0.5
    slices = _ceil(dv, COLS)
    parts = _ceil(dk, COLS)  # elements of q and k per thread in the loads

    @T.macro
    def body(q, k, v, ga, gb, a_log, dt_bias, s, t, start, out):
        for bx in T.thread_binding(hv * slices, thread="blockIdx.x"):
            with T.sblock("head"):
                T.reads()
                T.writes()
                st = T.sblock_alloc_buffer((dk, COLS), F32, scope="shared")  # this slice of the state
                qs = T.sblock_alloc_buffer((dk,), F32, scope="shared")
                ks = T.sblock_alloc_buffer((dk,), F32, scope="shared")
                qp = T.sblock_alloc_buffer((COLS,), F32, scope="shared")  # partial sums of squares
                kp = T.sblock_alloc_buffer((COLS,), F32, scope="shared")
                h = bx // slices
                j0 = bx % slices * COLS
                for tx in T.thread_binding(COLS, thread="threadIdx.x"):
                    for i in range(dk):
                        if cached:
                            st[i, tx] = T.if_then_else(start > 0, s[h, i, T.min(j0 + tx, dv - 1)], T.float32(0))
                        else:
                            st[i, tx] = T.float32(0)
                for pos in range(t):
                    for tx in T.thread_binding(COLS, thread="threadIdx.x"):
                        with T.sblock("load_qk"):
                            T.reads()
                            T.writes()
                            sq = T.sblock_alloc_buffer((2,), F32, scope="local")
                            sq[0] = T.float32(0)
                            sq[1] = T.float32(0)
                            for p in T.unroll(parts):
                                if p * COLS + tx < dk:
                                    qs[p * COLS + tx] = T.Cast(F32, q[pos, h // group, p * COLS + tx])
                                    ks[p * COLS + tx] = T.Cast(F32, k[pos, h // group, p * COLS + tx])
                                    sq[0] = sq[0] + qs[p * COLS + tx] * qs[p * COLS + tx]
                                    sq[1] = sq[1] + ks[p * COLS + tx] * ks[p * COLS + tx]
                            qp[tx] = sq[0]
                            kp[tx] = sq[1]
                    for tx in T.thread_binding(COLS, thread="threadIdx.x"):
                        with T.sblock("update"):
                            T.reads()
                            T.writes()
                            sc = T.sblock_alloc_buffer((6,), F32, scope="local")  # |q|^-1, |k|^-1, decay, beta, u, o
                            sc[0] = T.float32(0)
                            sc[1] = T.float32(0)
                            for p in range(COLS):
                                sc[0] = sc[0] + qp[p]
                                sc[1] = sc[1] + kp[p]
                            sc[0] = T.rsqrt(sc[0] + T.float32(L2_EPS)) * T.float32(q_scale)
                            sc[1] = T.rsqrt(sc[1] + T.float32(L2_EPS))
                            sc[2] = la.decay(ga, dt_bias, a_log, pos, h)
                            sc[3] = T.sigmoid(T.Cast(F32, gb[pos, h]))
                            sc[4] = T.float32(0)
                            for i in range(dk):  # what the (undecayed) state predicts for v
                                sc[4] = sc[4] + st[i, tx] * ks[i] * sc[1]
                            sc[4] = (T.Cast(F32, v[pos, h, T.min(j0 + tx, dv - 1)]) - sc[2] * sc[4]) * sc[3]
                            sc[5] = T.float32(0)
                            for i in range(dk):
                                st[i, tx] = st[i, tx] * sc[2] + ks[i] * sc[1] * sc[4]
                                sc[5] = sc[5] + st[i, tx] * qs[i] * sc[0]
                            if j0 + tx < dv:
                                out[pos, h, j0 + tx] = T.Cast(v_dt, sc[5])
                if cached:
                    for tx in T.thread_binding(COLS, thread="threadIdx.x"):
                        if j0 + tx < dv:
                            for i in range(dk):
                                s[h, i, j0 + tx] = st[i, tx]

    return la.delta_rule_func(body, hk, hv, dk, dv, dtypes, cached, kv_len_tensor, scratch_state=False)
