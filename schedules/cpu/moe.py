"""Mixture-of-experts MLPs on CPU: only the experts a token was routed to run.

`kernels.moe_experts` states the op densely; this kernel replaces it for packed expert
weights (`passes.pack_weights`: per expert, (2F/B, H, B) in and (H/B, F, B) out). Expert by
expert, it lists the tokens with a nonzero gate and, if there are any:

    in:  each core takes blocks of B of the expert's 2F gate/up rows; one (H, B) panel streams
         past ROWS routed tokens at a time, a ROWS x B tile of sums in registers
    act: silu(gate) * up per routed token
    out: likewise over the (F, B) panels of the down projection; each token's output gets
         gate[t, e] times its sums

so a decode step reads top_k of E experts' weights (one token: each panel's lines asked for
PREFETCH_BYTES ahead, as the dense GEMV does), and prefill reads each routed expert's panels
once per ROWS of its tokens while they sit in cache. On a CPU with AMX, prompts take
`_amx_kernel` instead: the same loop over experts, with each expert's tokens gathered into
tiles and its panels run through AMX tile products (`amx.py`). Sums are fp32 over the stored
weights, in expert order, as the op's reference adds them; int8 stacks
(`passes.quantize_weights`) widen as they load and scale each row's sum once.
"""
from __future__ import annotations

from tvm import tirx
from tvm.tirx.buffer import is_buffer_var

from ...ir.ops import expert_operands
from ...targets import TargetDesc, amx_usable
from ..kernels import same_params
from ..registry import precision
from . import amx
from .prefetch import prefetch, stream_plan

F32 = "float32"
ROWS = 4  # routed tokens per register tile (T > 1)
PREFETCH = True  # decode (T = 1) prefetches each panel's lines PREFETCH_BYTES ahead (`prefetch.py`)


def _routing_macros(e: int, h: int, f: int, gdt: str):
    """Macros both kernels share: ``clear(out, t)`` zeroes the output rows; ``route(g, ex, t,
    tok, cnt)`` lists in tok[:cnt[0]] the tokens with a nonzero gate for expert ex;
    ``activate(gu, act, tok, n)`` writes silu(gate) * up of those tokens' gate/up sums."""
    from tvm.script import tirx as T

    @T.macro
    def clear(out, t):
        for i in T.parallel(t):
            for c in range(h):
                out[i, c] = T.float32(0)

    @T.macro
    def route(g, ex, t, tok, cnt):
        cnt[0] = T.int64(0)
        for i in range(t):
            if g[i, ex] != T.Cast(gdt, 0):
                tok[cnt[0]] = i
                cnt[0] = cnt[0] + 1

    @T.macro
    def activate(gu, act, tok, n):
        for j in T.parallel(n):
            for c in range(f):
                act[tok[j], c] = gu[tok[j], c] * T.sigmoid(gu[tok[j], c]) * gu[tok[j], f + c]

    return clear, route, activate


def _experts_func(e: int, h: int, f: int, shapes: tuple, dtypes: tuple[str, ...], quantized: bool,
                  body) -> tirx.PrimFunc:
    """The PrimFunc (x, g, w_in, [s_in], w_out, [s_out], out) around a kernel's ``body`` macro
    (x, g, w_in, s_in, w_out, s_out, out, t); ``shapes``: the packed stacks' (w_in, w_out)."""
    from tvm.script import tirx as T

    xdt, gdt, wdt = dtypes
    # int64 extents: a stack can pass 2^31 elements (GLM-4.7's w_in: 160 x 3072 x 5120), and
    # int32 ones would make its flattened offsets overflow
    in_shape, out_shape = (tuple(T.int64(v) for v in s) for s in shapes)

    @T.prim_func(private=True)
    def moe_experts_routed(var_x: T.handle, var_g: T.handle, w_in: T.Buffer(in_shape, wdt),
                           s_in: T.Buffer((e, 2 * f), F32), w_out: T.Buffer(out_shape, wdt),
                           s_out: T.Buffer((e, h), F32), var_out: T.handle):
        t = T.int64()
        x = T.match_buffer(var_x, (t, h), xdt)
        g = T.match_buffer(var_g, (t, e), gdt)
        out = T.match_buffer(var_out, (t, h), F32)
        body(x, g, w_in, s_in, w_out, s_out, out, t)

    # the body reads the scales only for int8 stacks: otherwise those parameters go
    x_, g_, w_in_, s_in_, w_out_, s_out_, out_ = moe_experts_routed.params
    params = [x_, g_, w_in_, s_in_, w_out_, s_out_, out_] if quantized else [x_, g_, w_in_, w_out_, out_]
    return tirx.PrimFunc(params, moe_experts_routed.body, moe_experts_routed.ret_type, moe_experts_routed.attrs)


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
    f, nb_out = int(w_out.shape[2]), int(w_out.shape[1])
    one = isinstance(x.shape[0], tirx.IntImm) and int(x.shape[0]) == 1
    dtypes = (x.dtype, g.dtype, w_in.dtype)
    pairs = "pairs" in func.attrs and bool(func.attrs["pairs"])  # panels' rows paired (`ir.ops.pair_panels`)
    if (not one and amx_usable(target.cpu_flags) and blk == amx.PANEL and h % amx.KSTEP == 0
            and f % amx.KSTEP == 0 and w_in.dtype in ("bfloat16", "int8") and x.dtype == F32):
        parts = 2 if precision(func) == "high" else 1  # "medium": x rounded to bf16, one product
        return same_params(_amx_kernel(e, h, f, nb_in, nb_out, dtypes, quantized=s_in is not None, parts=parts,
                                       pairs=pairs), func)
    kernel = _kernel(e, h, f, blk, nb_in, nb_out, dtypes, rows=1 if one else ROWS, quantized=s_in is not None,
                     pairs=pairs)
    return same_params(kernel, func)


def _kernel(e: int, h: int, f: int, blk: int, nb_in: int, nb_out: int, dtypes: tuple[str, ...],
            rows: int, quantized: bool, pairs: bool = False) -> tirx.PrimFunc:
    from tvm.script import tirx as T

    _, gdt, wdt = dtypes
    clear, route, activate = _routing_macros(e, h, f, gdt)
    ahead, line = stream_plan(wdt, blk)  # k rows ahead (a panel runs on into the next), elements per line
    hi_mask = T.uint32(0xFFFF0000)

    @T.macro
    def sums(src, w, ex, jb, k_len, ri, tile):
        """tile[r, :] += the panel's (K, B) rows weighted by src[ri[r], k], one row at a time; or,
        for paired panels, two rows per 32-bit word: the bf16 of row 2kp in its low half, of row
        2kp + 1 in its high half, each widened to fp32 by placing its bits high."""
        if pairs:
            wu = T.decl_buffer((T.int64(e), w.shape[1], k_len // 2, blk), "uint32", data=w.data)
            for kp in range(k_len // 2):
                if rows == 1 and PREFETCH:
                    for ln in T.unroll((blk + line // 2 - 1) // (line // 2)):
                        T.evaluate(prefetch(T.address_of(wu[ex, jb, kp + ahead // 2, ln * (line // 2)])))
                for r in T.unroll(rows):
                    for b in T.vectorized(blk):
                        tile[r, b] = tile[r, b] + T.Cast(F32, src[ri[r], 2 * kp]) * T.reinterpret(
                            F32, wu[ex, jb, kp, b] << T.uint32(16)) + T.Cast(F32, src[ri[r], 2 * kp + 1]) * \
                            T.reinterpret(F32, wu[ex, jb, kp, b] & hi_mask)
        else:
            for k in range(k_len):
                if rows == 1 and PREFETCH:  # decode streams each panel once: ask ahead for its lines
                    for ln in T.unroll((blk + line - 1) // line):
                        T.evaluate(prefetch(T.address_of(w[ex, jb, k + ahead, ln * line])))
                for r in T.unroll(rows):
                    for b in T.vectorized(blk):
                        tile[r, b] = tile[r, b] + T.Cast(F32, src[ri[r], k]) * T.Cast(F32, w[ex, jb, k, b])

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
                sums(src, w, ex, jb, k_len, ri, tile)
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
        clear(out, t)
        for ex in range(e):
            route(g, ex, t, tok, cnt)
            n = cnt[0]
            if n > 0:
                routed(x, w_in, s_in, 2 * f, ex, nb_in, h, tok, n, g, gu, True)
                activate(gu, act, tok, n)
                routed(act, w_out, s_out, h, ex, nb_out, f, tok, n, g, out, False)

    return _experts_func(e, h, f, ((e, nb_in, h, blk), (e, nb_out, f, blk)), dtypes, quantized, body)


def _amx_kernel(e: int, h: int, f: int, nb_in: int, nb_out: int, dtypes: tuple[str, ...],
                quantized: bool, parts: int = 2, pairs: bool = False) -> tirx.PrimFunc:
    """The routed experts on AMX tiles (T > 1, on CPUs with AMX; `amx.py` has the tile plan):
    per expert, its tokens' rows of x are gathered into 16 x 32 tiles of bf16 hi and lo parts
    (within ~1e-5 of fp32 math, as the dense kernel; ``parts`` 1 at precision "medium": hi
    only, one product), then each core takes 32-output panels of
    the expert's gate/up weights, interleaves them into AMX's pairs (unless ``pairs``: stored
    so, `pack_weights`) and runs every 32-row block of those tokens through them (a block with
    at most 16 real rows: half the products); likewise silu(gate) * up through the down panels,
    each sum times the token's gate added to its output."""
    from tvm.script import tirx as T

    tiles = amx.tile_macros()
    gdt = dtypes[1]
    clear, route, activate = _routing_macros(e, h, f, gdt)
    panel, kstep, rows = amx.PANEL, amx.KSTEP, amx.ROWS
    X0, X1, W0, W1 = amx.X0, amx.X1, amx.W0, amx.W1

    def padded(n):
        return (n + rows - 1) // rows * rows

    def row_value(src, tok, n, i, c):  # row tok[i] of src, or 0 past the n routed tokens
        return T.if_then_else(i < n, T.Cast(F32, src[tok[T.min(i, n - 1)], c]), T.float32(0))

    @T.macro
    def gather(src, tok, n, xs, k_len):
        """Rows tok[:n] of src (padded with zero rows to a multiple of 32) as tiles of hi, lo."""
        for i in T.parallel(padded(n)):
            for c0 in range(k_len // 16):
                for c in T.vectorized(16):
                    xs[0, i // 16, c0 // 2, i % 16, c0 % 2 * 16 + c] = T.Cast(
                        "uint16", amx.split_bits(row_value(src, tok, n, i, c0 * 16 + c), 0))
                    if parts == 2:
                        xs[1, i // 16, c0 // 2, i % 16, c0 % 2 * 16 + c] = T.Cast(
                            "uint16", amx.split_bits(row_value(src, tok, n, i, c0 * 16 + c), 1))

    def result(acc, scale, n_rows, jb, r, c):
        v = acc[r, c]
        return v * scale[0, T.min(jb * panel + c, n_rows - 1)] if quantized else v

    def vnni_shape(k_len):
        return (1, panel) if pairs else (k_len // 2, panel)

    @T.macro
    def products(w, scale, n_rows, ex, nb, k_len, xs, tok, n, g, dst, into_act):
        """Each 32-output panel jb of expert ex's w against the gathered rows xs; into dst: the
        gate/up sums (into_act), or gate times the down sums, added."""
        for jb in T.parallel(nb):
            vnni = T.alloc_buffer(vnni_shape(k_len), "uint32")  # the panel in pairs (unless stored so)
            acc = T.alloc_buffer((rows, panel), F32)
            sc = T.decl_buffer((1, n_rows), F32, data=scale.data, elem_offset=ex * n_rows) if quantized else scale
            tiles.configure()
            if not pairs:  # interleave the panel's rows into pairs here (else they are stored so)
                for kp in range(k_len // 2):
                    for j in T.vectorized(panel):
                        vnni[kp, j] = amx.pair(amx._bits(w, ex, jb, 2 * kp, j), amx._bits(w, ex, jb, 2 * kp + 1, j))
            for rb in range(padded(n) // rows):
                tiles.zero()
                for ks in range(k_len // kstep):
                    if pairs:
                        # pair row kp holds bf16 rows 2kp (words 0-15) and 2kp + 1 (words 16-31)
                        amx._tile("tileloadd64", T.uint8(W0), T.address_of(w[ex, jb, ks * kstep, 0]), T.int64(panel * 4))
                        amx._tile("tileloadd64", T.uint8(W1), T.address_of(w[ex, jb, ks * kstep + 1, 0]),
                                  T.int64(panel * 4))
                    else:
                        amx._tile("tileloadd64", T.uint8(W0), T.address_of(vnni[ks * 16, 0]), T.int64(panel * 4))
                        amx._tile("tileloadd64", T.uint8(W1), T.address_of(vnni[ks * 16, 16]), T.int64(panel * 4))
                    for p in T.unroll(parts):
                        amx._tile("tileloadd64", T.uint8(X0), T.address_of(xs[p, rb * 2, ks, 0, 0]), T.int64(kstep * 2))
                        if n - rb * rows > 16:
                            amx._tile("tileloadd64", T.uint8(X1), T.address_of(xs[p, rb * 2 + 1, ks, 0, 0]),
                                      T.int64(kstep * 2))
                            tiles.product(X0, X1, W0, W1)
                        else:  # the block's last 16 rows are padding (an expert with few tokens)
                            tiles.product_top(X0, W0, W1)
                tiles.accumulators("tilestored64", acc, panel, 0, 0)
                for r in range(T.min(rows, n - rb * rows)):
                    if into_act:
                        for c in T.vectorized(panel):
                            dst[tok[rb * rows + r], jb * panel + c] = result(acc, sc, n_rows, jb, r, c)
                    else:
                        for c in range(panel):
                            if jb * panel + c < h:
                                dst[tok[rb * rows + r], jb * panel + c] = dst[tok[rb * rows + r], jb * panel + c] + \
                                    T.Cast(F32, g[tok[rb * rows + r], ex]) * result(acc, sc, n_rows, jb, r, c)
            amx._tile("tilerelease")

    @T.macro
    def body(x, g, w_in, s_in, w_out, s_out, out, t):
        xs_in = T.alloc_buffer((parts, padded(t) // 16, h // kstep, 16, kstep), "uint16")
        xs_out = T.alloc_buffer((parts, padded(t) // 16, f // kstep, 16, kstep), "uint16")
        gu = T.alloc_buffer((t, nb_in * panel), F32)
        act = T.alloc_buffer((t, f), F32)
        tok = T.alloc_buffer((t,), "int64")
        cnt = T.alloc_buffer((1,), "int64")
        clear(out, t)
        for ex in range(e):
            route(g, ex, t, tok, cnt)
            n = cnt[0]
            if n > 0:
                gather(x, tok, n, xs_in, h)
                products(w_in, s_in, 2 * f, ex, nb_in, h, xs_in, tok, n, g, gu, True)
                activate(gu, act, tok, n)
                gather(act, tok, n, xs_out, f)
                products(w_out, s_out, h, ex, nb_out, f, xs_out, tok, n, g, out, False)

    return _experts_func(e, h, f, ((e, nb_in, h, panel), (e, nb_out, f, panel)), dtypes, quantized, body)
