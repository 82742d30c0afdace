"""The ``inference-pio`` command: compile, run, chat, bench. Subcommands import lazily."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _demo() -> Path:
    from ..demo import CHECKPOINT

    return CHECKPOINT


def _progress(stages: list[str]):
    """A one-line progress bar over named compile stages (stderr)."""
    start = time.perf_counter()

    def say(stage: str) -> None:
        filled = 20 * stages.index(stage) // (len(stages) - 1)
        bar = "#" * filled + "." * (20 - filled)
        print(f"\r[{bar}] {stage:<18} {time.perf_counter() - start:6.1f}s", end="", file=sys.stderr, flush=True)
        if stage == "done":
            print(file=sys.stderr)

    return say


STAGES = ["passes", "lower + schedule", "tvm.compile", "save", "done"]


def cmd_compile(a: argparse.Namespace) -> None:
    """Compile through the content-addressed cache, so compiling the same model and target again
    is a copy; the artifact is written to --output with the checkpoint's path recorded."""
    import json
    import shutil

    from .. import frontends
    from . import manifest as mf
    from .cache import compile_cached, quantize_option

    say = _progress(STAGES)
    t = time.perf_counter()
    md = frontends.huggingface.model_def(a.checkpoint, dtype=a.dtype)
    opts = {} if a.cuda_graph is None else {"cuda_graph": a.cuda_graph}
    if a.cuda_pdl != "off":
        opts["cuda_pdl"] = True if a.cuda_pdl == "on" else a.cuda_pdl
    cached = compile_cached(md, a.target, progress=say, max_seq_len=a.max_seq_len,
                            matmul_precision=a.matmul_precision, **quantize_option(a.quantize), **opts)
    say("save")
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(cached / mf.LIBRARY, out / mf.LIBRARY)
    m = json.loads((cached / mf.MANIFEST).read_text())
    m["checkpoint"] = str(Path(a.checkpoint).resolve())
    mf.write(out, m)
    say("done")
    print(f"compiled {md.family} for {m['target']} -> {out} in {time.perf_counter() - t:.1f}s "
          f"(cache: {cached})")


def _model(a: argparse.Namespace):
    from .text import load_model

    return load_model(a.model or _demo(), device=a.device, dtype=a.dtype, weights=a.weights,
                      matmul_precision=a.matmul_precision, quantize=a.quantize)


def _sampling(a: argparse.Namespace) -> dict:
    return {"temperature": a.temperature, "top_k": a.top_k, "top_p": a.top_p, "seed": a.seed}


def cmd_run(a: argparse.Namespace) -> None:
    model = _model(a)
    print(a.prompt, end="", flush=True)
    for piece in model.stream(a.prompt, a.max_new_tokens, images=a.image, **_sampling(a)):
        print(piece, end="", flush=True)
    print()


def cmd_chat(a: argparse.Namespace) -> None:
    model = _model(a)
    messages: list[dict[str, str]] = []
    if a.system:
        messages.append({"role": "system", "content": a.system})
    print("chat: empty line or Ctrl-D to quit", file=sys.stderr)
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            break
        if not line:
            break
        if a.image and not any(m["role"] == "user" for m in messages):  # the images go with the first message
            messages.append({"role": "user", "content": [{"type": "image", "image": i} for i in a.image] +
                             [{"type": "text", "text": line}]})
        else:
            messages.append({"role": "user", "content": line})
        reply = []
        for piece in model.stream(messages, a.max_new_tokens, **_sampling(a)):
            reply.append(piece)
            print(piece, end="", flush=True)
        print()
        messages.append({"role": "assistant", "content": "".join(reply)})


def cmd_bench(a: argparse.Namespace) -> None:
    from .bench import run_bench

    run_bench(a)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="HF checkpoint or compiled artifact directory (default: the embedded demo model)")
    p.add_argument("--weights", help="checkpoint with the weights, when --model is an artifact that does not record it")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="weight dtype (default: the checkpoint's)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="an image for a vision model (Qwen3-VL), repeatable; run: placed before the prompt, "
                        "chat: with the first message")
    _numerics(p)
    _threads(p)


def _numerics(p: argparse.ArgumentParser) -> None:
    p.add_argument("--matmul-precision", default="auto", choices=["auto", "high", "medium"],
                   help="medium: linears and attention may multiply bf16-rounded activations (faster prefill "
                        "on AMX / tensor cores, ~1e-3 relative per op), as torch and llama.cpp do with bf16 "
                        "weights; high: within ~1e-5 of fp32; auto (default): medium for bf16 weights, else high")
    p.add_argument("--quantize", choices=["int8"], default=None,
                   help="int8: store the linear, embedding and LM head weights as int8 rows with a per-row "
                        "scale, quantized as they load (CPU only; about half the bytes of bf16 for decode)")


def _threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads running the kernels (default: TVM_NUM_THREADS if set, else this process's "
                        "physical cores)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="inference-pio", description="Compile and run LLMs with TVM-generated kernels.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("compile", help="compile an HF checkpoint into an artifact directory")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", required=True, help="artifact directory to write")
    p.add_argument("--target", default="llvm", help="llvm (this CPU) or cuda")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--max-seq-len", type=int, default=None)
    p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                   help="cuda: replay each decode step as one CUDA graph (default: where every decode kernel "
                        "allows it)")
    p.add_argument("--cuda-pdl", choices=["off", "on", "launch"], default="off",
                   help="cuda (sm_90+): programmatic dependent launch for every kernel; 'on' also has decode's "
                        "GEMVs prefetch their weights into L2 meanwhile, 'launch' does not (default: off, untimed)")
    _numerics(p)
    p.set_defaults(fn=cmd_compile)
    p = sub.add_parser("run", help="generate a continuation of a prompt, streamed")
    p.add_argument("prompt")
    _common(p)
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("chat", help="interactive chat using the checkpoint's chat template")
    p.add_argument("--system", default=None, help="system message")
    _common(p)
    p.set_defaults(fn=cmd_chat)
    p = sub.add_parser("bench", help="prefill and decode speed of a compiled model")
    p.add_argument("--model", help="HF checkpoint (default: the embedded demo model)")
    p.add_argument("--prompt-len", type=int, nargs="+", default=[128])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    _numerics(p)
    _threads(p)
    p.set_defaults(fn=cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if getattr(a, "threads", None) is not None:  # read by TVM when it makes its thread pool
        if a.threads < 1:
            print(f"inference-pio {a.cmd}: error: --threads must be >= 1, got {a.threads}", file=sys.stderr)
            return 2
        os.environ["TVM_NUM_THREADS"] = str(a.threads)
    try:
        a.fn(a)
    except (ValueError, FileNotFoundError) as e:  # our errors are ValueErrors that name the problem
        print(f"inference-pio {a.cmd}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
