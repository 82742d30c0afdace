"""moe_experts on CUDA: only the experts each token was routed to run.

`kernels.moe_experts` states the op densely (every expert for every token); with attr
``slots`` = k (the gates' top_k, `passes.route_experts`) it also has scratch outputs
(`kernels.moe_scratch`), and this rule replaces it with five launches:

    route    a warp per token lists its experts with a nonzero gate in expert order (sel, at
             most k; -1 past the last) and each one's slot (rank); in the same launch, a block
             per expert lists its tokens in order (lst, cnt): LIST_THREADS threads count over
             their share of the tokens, then each writes its tokens after those of the threads
             before it
    tiles    one block cuts each expert's token list into tiles of TT and lays the tiles out
             in one work list (expert, first token; -1 past the last)
    in       a block per (tile, WARPS * IN_PAIRS gate/up row pairs): each warp streams its
             rows of the expert's w_in once for all of the tile's tokens, 32 lanes over the
             hidden size in 16-byte loads, AHEAD loads in flight per lane; the lanes' sums meet
             in shared memory; act[token, slot] = silu(gate) * up
    out      likewise over w_out, OUT_ROWS rows per warp, x = the tokens' act: part[token,
             slot] = gate * (w_out @ act)
    combine  out[token] = the sum of its slots' parts, in expert order

The grids are sized by the most tiles T tokens can need (`tile_bound`: with k of them each,
at most T*k/TT full tiles plus one partial tile per expert with tokens), so prefill reads each
routed expert's rows once per TT of its tokens. A decode step (T = 1, static) takes a shorter
form: its k slots are the work list, so the routing launch is one block, there is no tiles
launch, and the products launch k blocks per row group: four launches. Sums are fp32 over
the stored weights; phases share data only through shared memory, so the kernels mean the
same run serially (tests/cuda_emulation.py). Not yet timed
on a GPU (2026-12-04): bench/gpu/kernel_bench.py has them at Qwen3-Coder-30B-A3B's shapes, with
TT and the rows per warp halved and doubled. The products run on CUDA cores; prefill of many
tokens would want a tensor-core grouped GEMM.
"""
from __future__ import annotations

from tvm import tirx
from tvm.tirx.buffer import is_buffer_var

from ...targets import TargetDesc
from .attention import _vector

F32 = "float32"
I32 = "int32"
TT = 8           # tokens per tile: an expert's rows are read once for this many of its tokens
WARPS = 4        # warps per block in the products; the 32 lanes of a warp split its rows
LANES = 32
IN_PAIRS = 2     # gate/up row pairs per warp (in)
OUT_ROWS = 4     # rows per warp (out)
AHEAD = 8        # 16-byte weight loads per lane before any is used
TOKEN_WARPS = 4  # route: tokens (a warp each) per block
LIST_THREADS = TOKEN_WARPS * LANES  # route: threads listing one expert's tokens
COMBINE_THREADS = 256


def _ceil(a, b):
    return (a + b - 1) // b


def tile_bound(t, k: int, e: int, tokens_per_tile: int = TT):
    """The most tiles of TT tokens T tokens with at most k experts each can make: T*k/TT full
    ones plus, per expert with tokens (at most min(E, T*k)), one partial tile of <= TT-1."""
    least = min(e, t * k) if isinstance(t, int) else tirx.min(e, t * k)
    return (t * k + least * (tokens_per_tile - 1)) // tokens_per_tile


def cuda_moe(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc | None:
    """The routed kernels for a moe_experts with slots, unpacked float weights; else None."""
    bufs = list(func.params)
    if len(bufs) != 12 or not all(is_buffer_var(p) for p in bufs):
        return None
    x, g, w_in, w_out, out, sel = bufs[:6]
    if len(w_in.shape) != 3 or len(w_out.shape) != 3 or any(str(b.dtype) not in (F32, "bfloat16", "float16")
                                                           for b in (x, w_in, w_out)):
        return None
    e, f2, h = (int(d) for d in w_in.shape)
    k = int(sel.shape[1])
    one = isinstance(x.shape[0], tirx.IntImm) and int(x.shape[0]) == 1  # decode's step
    return routed_experts(e, h, f2 // 2, k, (str(x.dtype), str(g.dtype), str(w_in.dtype), str(w_out.dtype),
                                             str(out.dtype)), decode=one)


def routed_experts(e: int, h: int, f: int, k: int, dtypes: tuple[str, ...], decode: bool = False,
                   tokens_per_tile: int = TT, in_pairs: int = IN_PAIRS, out_rows: int = OUT_ROWS) -> tirx.PrimFunc:
    """moe_experts(x, g, w_in, w_out) -> (out, sel, rank, lst, cnt, tiles, act, part), the
    operands and scratch of `kernels.moe_scratch` in that order; T symbolic. ``decode``: for
    T = 1 only. Then the work list is the token's slots themselves: the routing launch lists no
    expert's tokens, there is no tiles launch, and the products take a block per slot (lst,
    cnt and tiles go unused). The knobs (TT, IN_PAIRS, OUT_ROWS by default) are what
    bench/gpu/kernel_bench.py varies."""
    from tvm.script import tirx as T

    xdt, gdt, wdt_in, wdt_out, odt = dtypes
    tt = 1 if decode else tokens_per_tile  # tokens per tile
    m = _ceil(e, LANES)  # experts per lane (route)
    list_block = min(1024, _ceil(e, 32) * 32)  # threads of the tiles block

    def product(rows: int, row_of, kdim: int, wdt: str, x_at):
        """The macro for one warp's ``rows`` rows of an expert's matrix w (kdim columns): adds
        x_at(src, lst, rank, ex, t0, nt, i, c) * w[ex, row_of(by, wi, r), c] over c into
        red[wi, i, r, lane] for the tile's nt tokens i."""
        vec = _vector(kdim, wdt)
        chunks = kdim // vec
        steps = _ceil(chunks, LANES)  # chunk steps per lane
        per = max(1, min(steps, AHEAD // rows))  # chunks per row loaded before any is used
        groups = _ceil(steps, per)
        xv = _vector(vec, F32)  # x is read as fp32 in 16-byte pieces where they fit

        @T.macro
        def body(w, src, lst, rank, ex, t0, nt, by, red, wi, lane):
            with T.sblock("product"):
                T.reads()
                T.writes()
                wr = T.sblock_alloc_buffer((rows, per * vec), wdt, scope="local")
                xr = T.sblock_alloc_buffer((vec,), F32, scope="local")
                acc = T.sblock_alloc_buffer((tt, rows), F32, scope="local")
                for i in T.unroll(tt):
                    for r in T.unroll(rows):
                        acc[i, r] = T.float32(0)
                for grp in range(groups):
                    for r in T.unroll(rows):
                        for a in T.unroll(per):
                            for u in T.vectorized(vec):
                                wr[r, a * vec + u] = w[ex, row_of(by, wi, r),
                                                       T.min((grp * per + a) * LANES + lane, chunks - 1) * vec + u]
                    for i in T.unroll(tt):
                        if i < nt:
                            for a in T.unroll(per):
                                if (grp * per + a) * LANES + lane < chunks:
                                    for b in T.unroll(vec // xv):
                                        for u in T.vectorized(xv):
                                            xr[b * xv + u] = x_at(src, lst, rank, ex, t0, nt, i,
                                                                  ((grp * per + a) * LANES + lane) * vec + b * xv + u)
                                    for r in T.unroll(rows):
                                        for u in T.unroll(vec):
                                            acc[i, r] = acc[i, r] + xr[u] * T.Cast(F32, wr[r, a * vec + u])
                for i in T.unroll(tt):
                    for r in T.unroll(rows):
                        red[wi, i, r, lane] = acc[i, r]

        return body

    def token(lst, ex, t0, nt, i):  # the tile's i-th token (the last one past nt)
        return T.int32(0) if decode else lst[ex, t0 + T.min(i, nt - 1)]

    # block bx of the products: its expert, whether it has one, its first token and token count
    def expert_of(tiles, sel, bx):
        return T.max(sel[0, bx], 0) if decode else T.max(tiles[0, bx], 0)

    def live_of(tiles, sel, bx):
        return sel[0, bx] >= 0 if decode else tiles[0, bx] >= 0

    def first_of(tiles, bx):
        return T.int32(0) if decode else tiles[1, bx]

    def count_of(tiles, cnt, ex, bx):
        return T.int32(1) if decode else T.min(tokens_per_tile, cnt[ex] - tiles[1, bx])

    def works(t):  # the products' grid: the token's slots, or the most tiles T tokens can make
        return k if decode else tile_bound(T.Cast(I32, t), k, e, tokens_per_tile)

    in_product = product(2 * in_pairs, lambda by, wi, r: T.min((by * WARPS + wi) * in_pairs + r % in_pairs, f - 1)
                         + r // in_pairs * f, h, wdt_in,
                         lambda x, lst, rank, ex, t0, nt, i, c: T.Cast(F32, x[token(lst, ex, t0, nt, i), c]))
    out_product = product(out_rows, lambda by, wi, r: T.min((by * WARPS + wi) * out_rows + r, h - 1), f, wdt_out,
                          lambda act, lst, rank, ex, t0, nt, i, c: act[token(lst, ex, t0, nt, i),
                                                                       rank[token(lst, ex, t0, nt, i), ex], c])

    # int64 extents: a stack can pass 2^31 elements (GLM-4.7's w_in: 160 x 3072 x 5120), and
    # int32 ones would make its flattened offsets overflow
    in_shape = (T.int64(e), T.int64(2 * f), T.int64(h))
    out_shape = (T.int64(e), T.int64(h), T.int64(f))
    in_rows, nb_in = 2 * in_pairs, _ceil(f, WARPS * in_pairs)
    nb_out = _ceil(h, WARPS * out_rows)

    @T.prim_func(private=True, s_tir=True)
    def moe_experts_routed(var_x: T.handle, var_g: T.handle, w_in: T.Buffer(in_shape, wdt_in),
                           w_out: T.Buffer(out_shape, wdt_out), var_out: T.handle, var_sel: T.handle,
                           var_rank: T.handle, var_lst: T.handle, cnt: T.Buffer((e,), I32), var_tiles: T.handle,
                           var_act: T.handle, var_part: T.handle):
        t = T.int64()
        x = T.match_buffer(var_x, (t, h), xdt)
        g = T.match_buffer(var_g, (t, e), gdt)
        out = T.match_buffer(var_out, (t, h), odt)
        sel = T.match_buffer(var_sel, (t, k), I32)
        rank = T.match_buffer(var_rank, (t, e), I32)
        lst = T.match_buffer(var_lst, (e, t), I32)
        tiles = T.match_buffer(var_tiles, (2, t * k + e), I32)
        act = T.match_buffer(var_act, (t, k, f), F32)
        part = T.match_buffer(var_part, (t, k, h), F32)
        with T.sblock("root"):
            T.reads()
            T.writes()
            # route: blocks [0, nb_tok) list each token's experts (a warp per token, each lane m
            # experts); the E blocks after them each expert's tokens, in order. One launch: each
            # block runs one kind's phases (a loop of 0 or 1 trips: TVM places barriers in loops,
            # not in conditions)
            for bx in T.thread_binding(_ceil(T.Cast(I32, t), TOKEN_WARPS) + (0 if decode else e),
                                       thread="blockIdx.x"):
                with T.sblock("route"):
                    T.reads()
                    T.writes()
                    counts = T.sblock_alloc_buffer((TOKEN_WARPS, LANES), I32, scope="shared")
                    for _once in range(T.Select(bx < _ceil(T.Cast(I32, t), TOKEN_WARPS), 1, 0)):
                        for tx in T.thread_binding(TOKEN_WARPS * LANES, thread="threadIdx.x"):
                            with T.sblock("token_count"):
                                T.reads()
                                T.writes()
                                c = T.sblock_alloc_buffer((1,), I32, scope="local")
                                ti = T.min(bx * TOKEN_WARPS + tx // LANES, T.Cast(I32, t) - 1)
                                c[0] = 0
                                for u in T.unroll(m):
                                    if tx % LANES * m + u < e:
                                        if g[ti, tx % LANES * m + u] != T.Cast(gdt, 0):
                                            c[0] = c[0] + 1
                                counts[tx // LANES, tx % LANES] = c[0]
                        for tx in T.thread_binding(TOKEN_WARPS * LANES, thread="threadIdx.x"):
                            with T.sblock("token_slots"):
                                T.reads()
                                T.writes()
                                off = T.sblock_alloc_buffer((1,), I32, scope="local")
                                tot = T.sblock_alloc_buffer((1,), I32, scope="local")
                                ti = bx * TOKEN_WARPS + tx // LANES
                                if ti < T.Cast(I32, t):
                                    off[0] = 0
                                    tot[0] = 0
                                    for ln in range(LANES):
                                        if ln < tx % LANES:
                                            off[0] = off[0] + counts[tx // LANES, ln]
                                        tot[0] = tot[0] + counts[tx // LANES, ln]
                                    for u in T.unroll(m):
                                        if tx % LANES * m + u < e:
                                            if g[ti, tx % LANES * m + u] != T.Cast(gdt, 0):
                                                # (never more than k: the gates' top_k, route_experts)
                                                sel[ti, T.min(off[0], k - 1)] = tx % LANES * m + u
                                                rank[ti, tx % LANES * m + u] = T.min(off[0], k - 1)
                                                off[0] = off[0] + 1
                                    for j in range(_ceil(k, LANES)):
                                        if j * LANES + tx % LANES < k:
                                            if j * LANES + tx % LANES >= tot[0]:
                                                sel[ti, j * LANES + tx % LANES] = -1
                    if not decode:  # (decode lists no expert's tokens)
                        for _once in range(T.Select(bx >= _ceil(T.Cast(I32, t), TOKEN_WARPS), 1, 0)):
                            for tx in T.thread_binding(LIST_THREADS, thread="threadIdx.x"):
                                with T.sblock("list_count"):
                                    T.reads()
                                    T.writes()
                                    c = T.sblock_alloc_buffer((1,), I32, scope="local")
                                    c[0] = 0
                                    for i in range(_ceil(T.Cast(I32, t), LIST_THREADS)):
                                        if tx * _ceil(T.Cast(I32, t), LIST_THREADS) + i < T.Cast(I32, t):
                                            if g[tx * _ceil(T.Cast(I32, t), LIST_THREADS) + i,
                                                 bx - _ceil(T.Cast(I32, t), TOKEN_WARPS)] != T.Cast(gdt, 0):
                                                c[0] = c[0] + 1
                                    counts[tx // LANES, tx % LANES] = c[0]
                            for tx in T.thread_binding(LIST_THREADS, thread="threadIdx.x"):
                                with T.sblock("list_write"):
                                    T.reads()
                                    T.writes()
                                    off = T.sblock_alloc_buffer((1,), I32, scope="local")
                                    off[0] = 0
                                    for ln in range(LIST_THREADS):
                                        if ln < tx:
                                            off[0] = off[0] + counts[ln // LANES, ln % LANES]
                                    for i in range(_ceil(T.Cast(I32, t), LIST_THREADS)):
                                        if tx * _ceil(T.Cast(I32, t), LIST_THREADS) + i < T.Cast(I32, t):
                                            if g[tx * _ceil(T.Cast(I32, t), LIST_THREADS) + i,
                                                 bx - _ceil(T.Cast(I32, t), TOKEN_WARPS)] != T.Cast(gdt, 0):
                                                lst[bx - _ceil(T.Cast(I32, t), TOKEN_WARPS), off[0]] = \
                                                    tx * _ceil(T.Cast(I32, t), LIST_THREADS) + i
                                                off[0] = off[0] + 1
                                    if tx == LIST_THREADS - 1:
                                        cnt[bx - _ceil(T.Cast(I32, t), TOKEN_WARPS)] = off[0]
            # tiles: the work list, each expert's tiles after those of the experts before it
            if not decode:  # (decode: the token's slots are the work list)
                for bx in T.thread_binding(1, thread="blockIdx.x"):
                    with T.sblock("tile_list"):
                        T.reads()
                        T.writes()
                        nts = T.sblock_alloc_buffer((e,), I32, scope="shared")
                        for it in range(_ceil(e, list_block)):
                            for tx in T.thread_binding(list_block, thread="threadIdx.x"):
                                if it * list_block + tx < e:
                                    nts[it * list_block + tx] = _ceil(cnt[it * list_block + tx], tokens_per_tile)
                        for it in range(_ceil(e, list_block)):
                            for tx in T.thread_binding(list_block, thread="threadIdx.x"):
                                with T.sblock("tile_write"):
                                    T.reads()
                                    T.writes()
                                    off = T.sblock_alloc_buffer((1,), I32, scope="local")
                                    tot = T.sblock_alloc_buffer((1,), I32, scope="local")
                                    mine = T.sblock_alloc_buffer((1,), I32, scope="local")  # (a loop
                                    # extent may not read shared memory)
                                    off[0] = 0
                                    tot[0] = 0
                                    mine[0] = 0
                                    for ex in range(e):
                                        if ex < it * list_block + tx:
                                            off[0] = off[0] + nts[ex]
                                        if ex == it * list_block + tx:
                                            mine[0] = nts[ex]
                                        tot[0] = tot[0] + nts[ex]
                                    if it * list_block + tx < e:
                                        for i in range(mine[0]):
                                            tiles[0, off[0] + i] = it * list_block + tx
                                            tiles[1, off[0] + i] = i * tokens_per_tile
                                    for j in range(_ceil(tile_bound(T.Cast(I32, t), k, e, tokens_per_tile), e)):
                                        if tot[0] <= j * e + it * list_block + tx:
                                            if j * e + it * list_block + tx < tile_bound(T.Cast(I32, t), k, e, tokens_per_tile):
                                                tiles[0, j * e + it * list_block + tx] = -1
            # in: act = silu(gate) * up for each tile's tokens
            for bx in T.thread_binding(works(t), thread="blockIdx.x"):
                for by in T.thread_binding(nb_in, thread="blockIdx.y"):
                    with T.sblock("expert_in"):
                        T.reads()
                        T.writes()
                        red = T.sblock_alloc_buffer((WARPS, tt, in_rows, LANES), F32, scope="shared")
                        ex = expert_of(tiles, sel, bx)
                        t0 = first_of(tiles, bx)
                        nt = count_of(tiles, cnt, ex, bx)  # this tile's tokens
                        for _once in range(T.Select(live_of(tiles, sel, bx), 1, 0)):  # (a tile past the last idles)
                            for tx in T.thread_binding(WARPS * LANES, thread="threadIdx.x"):
                                in_product(w_in, x, lst, rank, ex, t0, nt, by, red, tx // LANES, tx % LANES)
                            for tx in T.thread_binding(WARPS * LANES, thread="threadIdx.x"):
                                if tx < WARPS * tt * in_pairs:
                                    with T.sblock("in_act"):
                                        T.reads()
                                        T.writes()
                                        sg = T.sblock_alloc_buffer((2,), F32, scope="local")
                                        wi = tx // (tt * in_pairs)
                                        i = tx // in_pairs % tt
                                        p = tx % in_pairs
                                        if i < nt and (by * WARPS + wi) * in_pairs + p < f:
                                            sg[0] = T.float32(0)
                                            sg[1] = T.float32(0)
                                            for ln in range(LANES):
                                                sg[0] = sg[0] + red[wi, i, p, ln]
                                                sg[1] = sg[1] + red[wi, i, in_pairs + p, ln]
                                            act[token(lst, ex, t0, nt, i), rank[token(lst, ex, t0, nt, i), ex],
                                                (by * WARPS + wi) * in_pairs + p] = sg[0] * T.sigmoid(sg[0]) * sg[1]
            # out: part = gate * (w_out @ act) for each tile's tokens
            for bx in T.thread_binding(works(t), thread="blockIdx.x"):
                for by in T.thread_binding(nb_out, thread="blockIdx.y"):
                    with T.sblock("expert_out"):
                        T.reads()
                        T.writes()
                        red = T.sblock_alloc_buffer((WARPS, tt, out_rows, LANES), F32, scope="shared")
                        ex = expert_of(tiles, sel, bx)
                        t0 = first_of(tiles, bx)
                        nt = count_of(tiles, cnt, ex, bx)
                        for _once in range(T.Select(live_of(tiles, sel, bx), 1, 0)):
                            for tx in T.thread_binding(WARPS * LANES, thread="threadIdx.x"):
                                out_product(w_out, act, lst, rank, ex, t0, nt, by, red, tx // LANES, tx % LANES)
                            for tx in T.thread_binding(WARPS * LANES, thread="threadIdx.x"):
                                if tx < WARPS * tt * out_rows:
                                    with T.sblock("out_part"):
                                        T.reads()
                                        T.writes()
                                        s = T.sblock_alloc_buffer((1,), F32, scope="local")
                                        wi = tx // (tt * out_rows)
                                        i = tx // out_rows % tt
                                        r = tx % out_rows
                                        if i < nt and (by * WARPS + wi) * out_rows + r < h:
                                            s[0] = T.float32(0)
                                            for ln in range(LANES):
                                                s[0] = s[0] + red[wi, i, r, ln]
                                            part[token(lst, ex, t0, nt, i), rank[token(lst, ex, t0, nt, i), ex],
                                                 (by * WARPS + wi) * out_rows + r] = \
                                                T.Cast(F32, g[token(lst, ex, t0, nt, i), ex]) * s[0]
            # combine: each token's slots, in expert order
            for bx in T.thread_binding(_ceil(T.Cast(I32, t) * h, COMBINE_THREADS), thread="blockIdx.x"):
                for tx in T.thread_binding(COMBINE_THREADS, thread="threadIdx.x"):
                    with T.sblock("combine"):
                        T.reads()
                        T.writes()
                        s = T.sblock_alloc_buffer((1,), F32, scope="local")
                        if bx * COMBINE_THREADS + tx < T.Cast(I32, t) * h:
                            s[0] = T.float32(0)
                            for j in T.unroll(k):
                                if sel[(bx * COMBINE_THREADS + tx) // h, j] >= 0:
                                    s[0] = s[0] + part[(bx * COMBINE_THREADS + tx) // h, j,
                                                       (bx * COMBINE_THREADS + tx) % h]
                            out[(bx * COMBINE_THREADS + tx) // h, (bx * COMBINE_THREADS + tx) % h] = \
                                T.Cast(odt, s[0])

    return moe_experts_routed
