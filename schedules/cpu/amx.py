"""linear_packed over T > 1 rows on Intel AMX: bf16 tile products with fp32 accumulation.

On a CPU with AMX (Sapphire Rapids and later: `amx_tile` and `amx_bf16` in its flags), one
TDPBF16PS multiplies a 16 x 32 bf16 tile by a 32 x 16 one into 16 x 16 fp32 sums: 8,192
multiply-adds per instruction, against 16 for an AVX-512 FMA. This replaces the register-tile
GEMM of `linear.py` for bf16 weights when K is a multiple of 32 and the weights are packed in
32-column panels (AVX-512's packing):

    split x (T, K) into two bf16 parts, hi = bf16(x), lo = bf16(x - hi) (rows padded to 32),
        stored as 16 x 32 tiles of 1 KB, each in one piece
    for each group of up to 4 panels of 32 outputs (one task per group; the cores share them):
        interleave each panel's (K, 32) bf16 rows in pairs: (K/2, 32) words of two k each,
        the layout AMX wants for its second operand ("VNNI"); they stay in cache for the rows
        for each block of 32 rows, for each panel of the group: 2 x 2 accumulator tiles
            for each 32-wide step of K: 2 weight tiles; 2 tiles of hi rows, then of lo rows;
            8 tile products
        store the tiles, add bias / residual, cast, write the rows that exist

The group lets one block of x rows, read from L3 once, serve 4 panels from L2: 370 -> 486
GFLOP/s for Qwen3-4B's gate+up at 256 rows (K 2560; x alone outgrows L2), unchanged at 0.6B's
K 1024. Tiles of x in one piece, rather than 16 rows K * 2 bytes apart (a stride that piles
a tile's 16 cache lines into a few L1 sets), made the kernel 1.1x (K 1024) to 1.8x (K 9728)
faster (docs/performance.md, 2026-12-03).

x is split rather than rounded: hi + lo carries x to within 2^-16 of |x| (bf16 alone: 2^-8),
so the result stays within ~1e-5 of fp32 math where bf16 activations would be off by ~1e-3;
twice the tile products, still far fewer instructions than FMAs. A bf16 x has no lo part, and
at precision "medium" (`passes.matmul_precision`) x is rounded to its hi part: one product.

The weights keep the packed layout the decode GEMV streams (`passes/pack_weights.py`): the pair
interleave costs a few vector instructions per 64 weights, once per call and panel.

AMX needs the kernel's permission to use the tile registers, once per process
(`targets.enable_amx`; `targets.resolve` and `engine.load` ask for it). Each task loads its
tile configuration and releases the tiles when done.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

from tvm import s_tir, tirx
from tvm.tirx.buffer import is_buffer_var

from ...targets import TargetDesc, amx_usable
from ..kernels import bf16_bits, bf16_value
from ..registry import find_blocks, precision

F32, BF16, I8 = "float32", "bfloat16", "int8"
PANEL = 32  # outputs per weight panel: AVX-512's packing (2 x 16 fp32 lanes)
KSTEP = 32  # bf16 values of K per tile row (64 bytes)
ROWS = 32  # rows of x per accumulator block: 2 tiles of 16
GROUP = 4  # panels per task: each block of x rows is read from L2 once for all of them
# tile registers: 0-3 accumulators (rows 0-15 / 16-31 x columns 0-15 / 16-31), 4-5 x, 6-7 weights
C00, C01, C10, C11, X0, X1, W0, W1 = range(8)


def amx_linear(func: tirx.PrimFunc, target: TargetDesc) -> tirx.PrimFunc | None:
    """The AMX kernel for a linear_packed over T rows (T a variable), or None."""
    if not amx_usable(target.cpu_flags) or find_blocks(s_tir.Schedule(func), "xconv", "matmul", "epilogue") is None:
        return None  # not a CPU with AMX, or not linear_packed over T rows (T = 1 has no "xconv")
    buffers = [p for p in func.params if is_buffer_var(p)]
    if len(buffers) != len(func.params):  # scalar parameters: not the kernel this rule knows
        return None
    x, wp, out, extra = buffers[0], buffers[1], buffers[-1], buffers[2:-1]
    if len(x.shape) != 2 or isinstance(x.shape[0], tirx.IntImm) or len(wp.shape) != 3:
        return None
    nb, k, blk = (int(s) for s in wp.shape)
    n = int(out.shape[1])
    if wp.dtype not in (BF16, I8) or blk != PANEL or k % KSTEP or x.dtype not in (F32, BF16):
        return None
    scale = extra[0] if wp.dtype == I8 else None  # an int8 weight's per-row scale (`ir.ops`)
    if scale is not None:
        if len(scale.shape) != 1 or scale.dtype != F32:
            return None
        extra = extra[1:]
    bias = next((b for b in extra if len(b.shape) == 1), None)
    residual = next((b for b in extra if len(b.shape) == 2), None)
    if len(extra) != (bias is not None) + (residual is not None):
        return None
    group = max(1, min(GROUP, nb // (2 * target.num_cores)))  # but at least 2 tasks per core
    parts = 2 if x.dtype == F32 and precision(func) == "high" else 1  # bf16 x: exact in one part
    return _kernel(k, n, nb, x.dtype, out.dtype, bias.dtype if bias is not None else None,
                   residual.dtype if residual is not None else None, group, parts, wp.dtype)


def _tile(name: str, *args):
    """One AMX instruction (tile register numbers are immediates: pass constants)."""
    from tvm.script import tirx as T

    return T.evaluate(T.call_llvm_intrin("void", f"llvm.x86.{name}", *args))


@functools.cache
def tile_macros() -> SimpleNamespace:
    """The TVMScript macros every AMX kernel here uses, over the register plan above:
    ``configure()`` loads the tile configuration (palette 1, all 8 registers 16 rows of 64
    bytes: 16 x 32 bf16 operands, 16 x 16 fp32 sums); ``zero()`` clears the accumulators;
    ``product(a0, a1, b0, b1)`` adds (a0; a1) @ (b0 b1) into them (``product_top(a0, b0, b1)``:
    a0 @ (b0 b1) into the first 16 rows' only); ``accumulators(op, buf,
    ld, r0, c0)`` loads or stores them from/to the fp32 block buf[r0:r0 + 32, c0:c0 + 32] (ld
    per row)."""
    from tvm.script import tirx as T

    @T.macro
    def configure():
        cfg = T.alloc_buffer((64,), "uint8")
        for b in range(64):
            cfg[b] = T.uint8(0)
        cfg[0] = T.uint8(1)
        for tile in range(8):
            cfg[16 + 2 * tile] = T.uint8(64)  # bytes per row (uint16, little-endian)
            cfg[48 + tile] = T.uint8(16)  # rows
        _tile("ldtilecfg", T.address_of(cfg[0]))

    @T.macro
    def zero():
        _tile("tilezero", T.uint8(C00))
        _tile("tilezero", T.uint8(C01))
        _tile("tilezero", T.uint8(C10))
        _tile("tilezero", T.uint8(C11))

    @T.macro
    def product(a0, a1, b0, b1):
        _tile("tdpbf16ps", T.uint8(C00), T.uint8(a0), T.uint8(b0))
        _tile("tdpbf16ps", T.uint8(C01), T.uint8(a0), T.uint8(b1))
        _tile("tdpbf16ps", T.uint8(C10), T.uint8(a1), T.uint8(b0))
        _tile("tdpbf16ps", T.uint8(C11), T.uint8(a1), T.uint8(b1))

    @T.macro
    def product_top(a0, b0, b1):  # rows 0-15 only: a block whose other 16 rows are padding
        _tile("tdpbf16ps", T.uint8(C00), T.uint8(a0), T.uint8(b0))
        _tile("tdpbf16ps", T.uint8(C01), T.uint8(a0), T.uint8(b1))

    @T.macro
    def accumulators(op, buf, ld, r0, c0):
        _tile(op, T.uint8(C00), T.address_of(buf[r0, c0]), T.int64(ld * 4))
        _tile(op, T.uint8(C01), T.address_of(buf[r0, c0 + 16]), T.int64(ld * 4))
        _tile(op, T.uint8(C10), T.address_of(buf[r0 + 16, c0]), T.int64(ld * 4))
        _tile(op, T.uint8(C11), T.address_of(buf[r0 + 16, c0 + 16]), T.int64(ld * 4))

    return SimpleNamespace(configure=configure, zero=zero, product=product, product_top=product_top,
                           accumulators=accumulators)


def split_bits(v: tirx.PrimExpr, part: int) -> tirx.PrimExpr:
    """The bits (uint32) of fp32 v's bf16 hi part (``part`` 0) or lo part (1, bf16(v - hi))."""
    hi = bf16_bits(v)
    return hi if part == 0 else bf16_bits(v - bf16_value(hi))


def pair(lo: tirx.PrimExpr, hi: tirx.PrimExpr) -> tirx.PrimExpr:
    """Two bf16 bit patterns (uint32) in one word, ``lo`` first in memory: the pairs along the
    reduction that a tile product's second operand holds."""
    return lo | (hi << tirx.const(16, "uint32"))


def _bits(x, *idx) -> tirx.PrimExpr:
    """The bits of bf16 x[idx] as uint32; of an int8 x, those of its value in bf16 (exact: an
    integer of up to 8 bits fills only the top 7 of fp32's 23 mantissa bits)."""
    if x.dtype == I8:
        return tirx.reinterpret("uint32", tirx.Cast(F32, x[idx])) >> tirx.const(16, "uint32")
    return tirx.Cast("uint32", tirx.reinterpret("uint16", x[idx]))


def _value(x, i, c) -> tirx.PrimExpr:
    """x[i, c] as fp32; a bf16 x by its bits."""
    return x[i, c] if x.dtype == F32 else bf16_value(_bits(x, i, c))


def _row_value(x, i, c, t) -> tirx.PrimExpr:
    """Row i of x, or 0 for a padding row (i >= t)."""
    return tirx.if_then_else(i < t, _value(x, tirx.min(i, t - 1), c), tirx.const(0, F32))


def _padded(t: tirx.PrimExpr) -> tirx.PrimExpr:
    return (t + ROWS - 1) // ROWS * ROWS


def _kernel(k: int, n: int, nb: int, xdt: str, odt: str, bdt: str | None, rdt: str | None,
            group: int, parts: int, wdt: str = BF16) -> tirx.PrimFunc:
    """The kernel, with x as ``parts`` bf16 parts: 2 (hi and lo) or 1 (hi). Weights ``wdt``:
    bf16, or int8 (each converted to bf16 exactly as the pairs are made) with a per-row scale
    applied to the finished sums."""
    from tvm.script import tirx as T

    tiles = tile_macros()
    ksteps = k // KSTEP
    full = n // PANEL  # panels with all 32 columns inside N

    @T.macro
    def split_rows(x, xs, t, tp):
        for i in T.parallel(tp):
            for c0 in range(k // 16):
                for c in T.vectorized(16):
                    xs[0, i // 16, c0 // 2, i % 16, c0 % 2 * 16 + c] = T.Cast(
                        "uint16", split_bits(_row_value(x, i, c0 * 16 + c, t), 0))
                    if parts == 2:
                        xs[1, i // 16, c0 // 2, i % 16, c0 % 2 * 16 + c] = T.Cast(
                            "uint16", split_bits(_row_value(x, i, c0 * 16 + c, t), 1))

    def result(scale, bias, res, acc, i0, j0, r, c):  # an expression: a variable bound in a vectorized loop is not a vector
        v = acc[r, c]
        if wdt == I8:
            v = v * scale[j0 + c]
        if bdt is not None:
            v = v + T.Cast(F32, bias[j0 + c])
        if rdt is not None:
            v = v + T.Cast(F32, res[i0 + r, j0 + c])
        return T.Cast(odt, v)

    @T.macro
    def epilogue(out, scale, bias, res, acc, t, rb, jb):  # the block's rows that exist, the panel's columns inside N
        for r in range(T.min(ROWS, t - rb * ROWS)):
            if jb < full:
                for c in T.vectorized(PANEL):
                    out[rb * ROWS + r, jb * PANEL + c] = result(scale, bias, res, acc, rb * ROWS, jb * PANEL, r, c)
            else:
                for c in range(n - full * PANEL):
                    out[rb * ROWS + r, jb * PANEL + c] = result(scale, bias, res, acc, rb * ROWS, jb * PANEL, r, c)

    @T.macro
    def body(x, wp, scale, bias, res, out, t):
        xs = T.alloc_buffer((parts, _padded(t) // 16, ksteps, 16, KSTEP), "uint16")  # x's parts as 16 x 32 tiles, 1 KB each
        split_rows(x, xs, t, _padded(t))
        for task in T.parallel((nb + group - 1) // group):
            pairs = T.alloc_buffer((group, k // 2, PANEL), "uint32")
            acc = T.alloc_buffer((ROWS, PANEL), F32)
            tiles.configure()
            for pj in range(group):
                if task * group + pj < nb:
                    for kp in range(k // 2):
                        for j in T.vectorized(PANEL):
                            pairs[pj, kp, j] = pair(_bits(wp, task * group + pj, 2 * kp, j),
                                                    _bits(wp, task * group + pj, 2 * kp + 1, j))
            for rb in range(_padded(t) // ROWS):
                for pj in range(group):  # the block's rows of x stay in L2 across the group's panels
                    if task * group + pj < nb:
                        tiles.zero()
                        for ks in range(ksteps):
                            _tile("tileloadd64", T.uint8(W0), T.address_of(pairs[pj, ks * 16, 0]), T.int64(PANEL * 4))
                            _tile("tileloadd64", T.uint8(W1), T.address_of(pairs[pj, ks * 16, 16]), T.int64(PANEL * 4))
                            for p in T.unroll(parts):
                                _tile("tileloadd64", T.uint8(X0), T.address_of(xs[p, rb * 2, ks, 0, 0]), T.int64(KSTEP * 2))
                                _tile("tileloadd64", T.uint8(X1), T.address_of(xs[p, rb * 2 + 1, ks, 0, 0]),
                                      T.int64(KSTEP * 2))
                                tiles.product(X0, X1, W0, W1)
                        tiles.accumulators("tilestored64", acc, PANEL, 0, 0)
                        epilogue(out, scale, bias, res, acc, t, rb, task * group + pj)
            _tile("tilerelease")

    @T.prim_func(private=True)
    def linear_amx(var_x: T.handle, wp: T.Buffer((nb, k, PANEL), wdt), scale: T.Buffer((n,), F32),
                   bias: T.Buffer((n,), bdt or F32), var_res: T.handle, var_out: T.handle):
        t = T.int64()
        x = T.match_buffer(var_x, (t, k), xdt)
        res = T.match_buffer(var_res, (t, n), rdt or F32)
        out = T.match_buffer(var_out, (t, n), odt)
        body(x, wp, scale, bias, res, out, t)

    # the body reads scale, bias and res only where they exist: the other parameters go
    x_, wp_, scale_, bias_, res_, out_ = linear_amx.params
    params = ([x_, wp_] + ([scale_] if wdt == I8 else []) + ([bias_] if bdt is not None else [])
              + ([res_] if rdt is not None else []) + [out_])
    return tirx.PrimFunc(params, linear_amx.body, linear_amx.ret_type, linear_amx.attrs)
