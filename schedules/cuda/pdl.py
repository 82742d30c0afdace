"""Programmatic dependent launch (PDL, sm_90 and later) for every CUDA kernel of an artifact.

Without it a kernel starts only once the one before it in the stream has finished, so each
GEMV of a decode step ramps up from an idle memory system and drains into one, and HBM idles
while the latency-bound kernels (attention, the appends) run: on the H200 (run 3 of
2026-12-04) that was about 1 ms of a 2.86 ms Qwen3-4B step, against a floor of 1.7 ms. With
it (`engine.compile(..., cuda_pdl=True)`):

- each kernel is launched with CUDA's programmatic stream serialization (TVM's launch tag
  `PDL_TAG`, honoured by its runtime's cuLaunchKernelEx), so it may start while the kernel
  before it still runs;
- its threads first wait (`griddepcontrol.wait`) until that kernel has completed and its
  writes are visible, then let the next kernel launch (`griddepcontrol.launch_dependents`).
  The next kernel's blocks thus become resident while this one runs, and start when it ends.
  Every kernel waits before touching memory that a kernel before it may write, so the order
  of reads and writes is that of plain launches (and transitively so: a kernel completes only
  after its wait returned);
- before the wait a kernel may only touch memory that no kernel writes: a GEMV (attr
  `L2_PREFETCH_ATTR`, set by `gemv.cuda_gemv`) asks the L2 to fetch what its block loads
  first, the first group of chunks of each of its weight rows (`cp.async.bulk.prefetch.L2`,
  a lane per row), so the weights stream in while the kernel before it ends; the rows whole
  would overflow the L2 (until session 19 of 2026-12-05 they were asked for whole, never
  timed). Mode "launch" leaves that out (for timing each part alone).

It is a device pass after TVM's host/device split (`pipeline`: TVM's default TIR pipeline with
`add_pdl` first among its device finalization passes). Untimed as of 2026-12-05: no GPU was
lent since it was written, so it is off by default.
"""
from __future__ import annotations

import tvm
from tvm import tirx
from tvm.script import tirx as T

PDL_TAG = "tirx.use_programtic_dependent_launch"  # (sic) TVM's launch tag for PDL
DYN_SMEM_TAG = "tirx.use_dyn_shared_memory"  # must stay the last launch tag
LAUNCH_PARAMS = "tirx.kernel_launch_params"
L2_PREFETCH_ATTR = "l2_prefetch"  # (weight parameter name, rows per block, row bytes, first bytes, rows, paired)
MODES = ("launch", "prefetch")  # engine.compile's cuda_pdl: "launch", or True = "prefetch"
MIN_ARCH = 90


def l2_prefetch(buffer: tirx.Var, rows_per_block: int, row_bytes: int, first_bytes: int, rows: int,
                paired: bool = False) -> dict:
    """The attr by which a kernel whose block b reads rows [b * rows_per_block, ...) of
    ``buffer`` (``rows`` rows of ``row_bytes``; nothing a kernel writes), the first
    ``first_bytes`` of each row first, asks for those to be prefetched (none where the sizes are
    not multiples of 16 bytes, as the bulk prefetch needs). Only what each row's lanes load
    first: the rows whole would overflow the L2 cache (Qwen3-4B's gate+up is 100 MB, its LM
    head 778 MB; the L2 of an H100 or H200 is 50 MB, of the GH100 die's 60) and evict each
    other before they are read. ``paired``: the kernel's row j is the buffer's row
    (j % 2) * rows / 2 + j // 2 (a gate row, then its up row: the GEMV of a linear with
    out_act="swiglu")."""
    first_bytes = min(first_bytes, row_bytes)
    if row_bytes % 16 or first_bytes % 16:
        return {}
    return {L2_PREFETCH_ATTR: [buffer.name, int(rows_per_block), int(row_bytes), int(first_bytes), int(rows),
                               int(paired)]}


def _insert_head(stmt: tirx.Stmt, head, threads: dict[str, tirx.Var] | None = None,
                 buffers: list[tirx.Buffer] | None = None) -> tirx.Stmt:
    """``stmt`` (a kernel body after the host/device split: buffer declarations, then the
    thread-extent attrs) with ``head(threads, buffers)``'s statements in front of its first
    statement that is neither, where every thread var is bound; ``threads`` maps the bound
    thread tags ("blockIdx.x", ...) to their vars, ``buffers`` are those declared above."""
    threads, buffers = dict(threads or {}), list(buffers or [])
    if isinstance(stmt, tirx.AttrStmt) and stmt.attr_key == "thread_extent":
        threads[stmt.node.thread_tag] = stmt.node.var
        return tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, _insert_head(stmt.body, head, threads, buffers))
    if isinstance(stmt, tirx.SeqStmt):
        seq = list(stmt.seq)
        i = next((i for i, s in enumerate(seq) if not isinstance(s, (tirx.DeclBuffer, tirx.AllocBuffer))), len(seq))
        buffers += [s.buffer for s in seq[:i] if isinstance(s, tirx.DeclBuffer)]
        if i < len(seq) and isinstance(seq[i], tirx.AttrStmt) and seq[i].attr_key == "thread_extent":
            return tirx.SeqStmt(seq[:i] + [_insert_head(seq[i], head, threads, buffers)] + seq[i + 1:])
        return tirx.SeqStmt(seq[:i] + head(threads, buffers) + seq[i:])
    return tirx.SeqStmt([*head(threads, buffers), stmt])


def _prefetch(spec, threads: dict[str, tirx.Var], buffers: list[tirx.Buffer]) -> tirx.Stmt | None:
    """Lane r of the block's first warp: a bulk L2 prefetch of the start of the block's r-th weight
    row (``spec``: a kernel's `L2_PREFETCH_ATTR`, naming one of the declared ``buffers``)."""
    if spec is None or "blockIdx.x" not in threads or "threadIdx.x" not in threads:
        return None
    name, per_block, row_bytes, first, rows, paired = str(spec[0]), *(int(v) for v in spec[1:])
    bufs = [b for b in buffers if b.name == name]
    if len(bufs) != 1:  # not found, or ambiguous: no prefetch (the wait alone is still right)
        return None
    buf = bufs[0]
    size = tvm.DataType(str(buf.dtype)).bits // 8  # (divides the sizes: `l2_prefetch` made them multiples of 16)
    lane = threads["threadIdx.x"]
    row = tirx.Cast("int64", threads["blockIdx.x"]) * per_block + tirx.Cast("int64", lane)
    at = row if not paired else tirx.floormod(row, 2) * (rows // 2) + tirx.floordiv(row, 2)
    call = T.ptx.cp.async_.bulk.prefetch.L2.global_(
        tirx.address_of(tirx.BufferLoad(buf, [at * (row_bytes // size)])), tirx.IntImm("uint32", first))
    cond = tirx.And(tirx.LT(lane, per_block), tirx.LT(row, tirx.IntImm("int64", rows)))
    for t in ("threadIdx.y", "threadIdx.z"):
        if t in threads:
            cond = tirx.And(cond, tirx.EQ(threads[t], 0))
    return tirx.IfThenElse(cond, tirx.Evaluate(call), None)


def pdl_kernel(func: tirx.PrimFunc, prefetch=None) -> tirx.PrimFunc:
    """``func`` (a device kernel after the host/device split) launched with PDL: the launch
    tag, and at the top of its body (inside the thread bindings) the wait and the trigger,
    after the prefetch of ``prefetch`` (its kernel's `L2_PREFETCH_ATTR`, or None)."""
    tags = [str(t) for t in func.attrs[LAUNCH_PARAMS]]
    if PDL_TAG in tags:
        return func
    tags = [t for t in tags if t != DYN_SMEM_TAG] + [PDL_TAG] + [t for t in tags if t == DYN_SMEM_TAG]

    def head(threads: dict[str, tirx.Var], buffers: list[tirx.Buffer]) -> list[tirx.Stmt]:
        pre = _prefetch(prefetch, threads, buffers)
        return [*([pre] if pre is not None else []), tirx.Evaluate(T.ptx.griddepcontrol.wait()),
                tirx.Evaluate(T.ptx.griddepcontrol.launch_dependents())]

    return func.with_body(_insert_head(func.body, head)).with_attr(LAUNCH_PARAMS, tags)


def _collect(specs: dict[str, list]) -> tvm.transform.Pass:
    """A pass that records each kernel's `L2_PREFETCH_ATTR` in ``specs`` under the name of its
    device kernel: TVM's host/device split does not carry the attr over."""

    @tvm.transform.module_pass(opt_level=0, name="CollectL2Prefetch")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        for gv, f in mod.functions.items():
            if isinstance(f, tirx.PrimFunc) and f.attrs is not None and L2_PREFETCH_ATTR in f.attrs:
                specs[f"{f.attrs.get('global_symbol', gv.name_hint)}_kernel"] = list(f.attrs[L2_PREFETCH_ATTR])
        return mod

    return _pass


def add_pdl(specs: dict[str, list] | None = None) -> tvm.transform.Pass:
    """The device pass: `pdl_kernel` on every kernel of a device module, with the prefetch
    that ``specs`` (by kernel name, from `_collect`) holds for it."""

    @tvm.transform.module_pass(opt_level=0, name="AddProgrammaticDependentLaunch")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        out = tvm.IRModule({}, attrs=mod.attrs)
        for gv, f in mod.functions.items():
            if isinstance(f, tirx.PrimFunc) and f.attrs is not None and LAUNCH_PARAMS in f.attrs:
                f = pdl_kernel(f, (specs or {}).get(str(f.attrs.get("global_symbol", gv.name_hint))))
            out[gv] = f
        return out

    return _pass


def pipeline(mode: str) -> str:
    """The name of the TIR pipeline (registered on first use) that `tvm.compile` takes as
    ``tir_pipeline`` for PDL mode ``mode`` (`MODES`): TVM's default one, with `add_pdl` first
    among the device passes (and, for "prefetch", `_collect` in front)."""
    if mode not in MODES:
        raise ValueError(f"PDL mode must be one of {MODES}, got {mode!r}")
    from tvm.s_tir import pipeline as s_tir_pipeline
    from tvm.tirx import compilation_pipeline

    name = f"inference_pio_pdl_{mode}"
    if name not in compilation_pipeline.PIPELINE_MAP:
        def factory():
            lower, host, device = s_tir_pipeline.default_s_tir_pipeline()
            specs: dict[str, list] = {}
            if mode == "prefetch":
                lower = tvm.transform.Sequential([_collect(specs), lower])
            return lower, host, lambda: tvm.transform.Sequential([add_pdl(specs), device()])

        compilation_pipeline.register_tir_pipeline(name, factory)
    return name
