"""Train the tiny embedded demo model: a Qwen3 checkpoint that writes Python.

The corpus is the Python standard library of the interpreter running this
script (``*.py`` only; tests, ``site-packages``, code-page tables and
``pydoc_data`` are skipped), so training needs no network access.  The script

1. trains a byte-level BPE tokenizer (``tokenizers``) on that text,
2. trains a small ``transformers.Qwen3ForCausalLM`` on it with AdamW on the
   CPU (one thread) for a wall-clock budget,
3. writes a Hugging Face style checkpoint (``config.json``,
   ``model.safetensors`` in bfloat16, ``tokenizer.json``,
   ``tokenizer_config.json``, ``generation_config.json``), and
4. reloads it with ``transformers`` and prints a few samples.

Usage::

    python demo/train.py --minutes 25 --out demo/pystdlib

Everything is seeded.  With ``--max-steps`` the run is reproducible step for
step; with only a time budget the number of steps (and so the learning-rate
schedule) depends on how fast the machine is.
"""

from __future__ import annotations

import os

# Keep every library on one core: the machine is shared.  These must be set
# before torch / tokenizers start their thread pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS", "RAYON_RS_NUM_CPUS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config, Qwen3ForCausalLM  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]

# The pre-tokenizer split used by Qwen2/Qwen3 tokenizers (single digits,
# whitespace runs kept together so indentation becomes a few tokens).
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# "def " ends in a lone space token, which in training mostly precedes
# punctuation (e.g. "  # comment"); "def" without the space is the natural prompt.
SAMPLE_PROMPTS = ["def ", "def", "import os\n", "class Foo:\n    def __init__(self"]

SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "pydoc_data", "encodings", "__pycache__"}
MAX_FILE_BYTES = 300_000
CHECKPOINT_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)


@dataclass(frozen=True)
class ModelShape:
    """Size of the Qwen3 model (kept small so the bf16 checkpoint is < 6 MB)."""

    hidden_size: int = 192
    intermediate_size: int = 576
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 48
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0


def stdlib_root() -> pathlib.Path:
    """Directory holding the standard library of this interpreter."""
    return pathlib.Path(os.path.dirname(os.__file__))


def collect_sources(root: pathlib.Path) -> list[tuple[str, str]]:
    """Return ``(relative path, text)`` for the library's ``*.py`` files, sorted."""
    sources: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS or part.startswith("test") for part in rel.parts[:-1]):
            continue
        if rel.name.startswith("test_") or not path.is_file():
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        text = text.replace("\r\n", "\n").replace("\t", "    ")
        if text.strip():
            sources.append((rel.as_posix(), text))
    return sources


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """Train a Qwen-style byte-level BPE tokenizer on ``texts``."""
    tokenizer = Tokenizer(models.BPE(ignore_merges=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tokenizer


def encode_corpus(tokenizer: Tokenizer, texts: list[str]) -> torch.Tensor:
    """Encode ``texts`` into one stream, each document followed by ``<|endoftext|>``."""
    eot = tokenizer.token_to_id(ENDOFTEXT)
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(texts, add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(eot)
    return torch.tensor(ids, dtype=torch.long)


def build_model(vocab_size: int, shape: ModelShape, special_ids: dict[str, int]) -> Qwen3ForCausalLM:
    """Create a freshly initialised ``Qwen3ForCausalLM``."""
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=shape.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": shape.rope_theta},
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        bos_token_id=special_ids[ENDOFTEXT],
        eos_token_id=special_ids[ENDOFTEXT],
        pad_token_id=special_ids[ENDOFTEXT],
        architectures=["Qwen3ForCausalLM"],
    )
    return Qwen3ForCausalLM(config)


def random_batch(data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """Sample ``batch_size`` windows of ``seq_len + 1`` tokens from ``data``."""
    starts = torch.randint(0, data.numel() - seq_len - 1, (batch_size,), generator=generator)
    return torch.stack([data[s : s + seq_len + 1] for s in starts.tolist()])


def lm_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over ``batch`` (shape ``[B, T + 1]``)."""
    logits = model(input_ids=batch[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), batch[:, 1:].reshape(-1))


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list[torch.Tensor]) -> float:
    """Mean loss of ``model`` over fixed held-out ``batches``."""
    model.eval()
    loss = sum(lm_loss(model, b).item() for b in batches) / len(batches)
    model.train()
    return loss


def learning_rate(step: int, progress: float, peak: float, warmup: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio * peak`` as progress goes 0 -> 1."""
    if step < warmup:
        return peak * (step + 1) / warmup
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return peak * (min_ratio + (1.0 - min_ratio) * cosine)


def tokenizer_config(tokenizer: Tokenizer) -> dict[str, object]:
    """The ``tokenizer_config.json`` that lets ``AutoTokenizer`` load ``tokenizer.json``."""
    added = {
        str(tokenizer.token_to_id(tok)): {
            "content": tok,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for tok in SPECIAL_TOKENS
    }
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": ENDOFTEXT,
        "eos_token": ENDOFTEXT,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": ModelShape.max_position_embeddings,
        "chat_template": CHAT_TEMPLATE,
    }


def save_checkpoint(model: Qwen3ForCausalLM, tokenizer: Tokenizer, out: pathlib.Path) -> None:
    """Write the checkpoint (bf16 weights) to ``out``, replacing what was there."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    export = copy.deepcopy(model).to(torch.bfloat16)
    export.save_pretrained(tmp)

    config = json.loads((tmp / "config.json").read_text())
    config["dtype"] = "bfloat16"
    config["torch_dtype"] = "bfloat16"  # key read by pre-5.x consumers
    config["rope_theta"] = config["rope_parameters"]["rope_theta"]  # likewise
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    eot = tokenizer.token_to_id(ENDOFTEXT)
    generation = {
        "bos_token_id": eot,
        "eos_token_id": [eot, tokenizer.token_to_id(IM_END)],
        "pad_token_id": eot,
        "do_sample": False,
        "max_new_tokens": 256,
        "transformers_version": config.get("transformers_version", ""),
    }
    (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    tokenizer.save(str(tmp / "tokenizer.json"))
    (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(tokenizer), indent=2) + "\n")

    for extra in sorted(set(p.name for p in tmp.iterdir()) - set(CHECKPOINT_FILES)):
        (tmp / extra).unlink()
    for name in CHECKPOINT_FILES:
        (tmp / name).chmod(0o644)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def sample(out: pathlib.Path, prompts: list[str], max_new_tokens: int, seed: int) -> None:
    """Reload the checkpoint with ``transformers`` and print greedy / T=0.8 samples."""
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    model.eval()
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    print(f"[sample] tokenizer={type(tok).__name__} vocab={len(tok)} chat_template -> {chat!r}")
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt").input_ids
        for temperature in (None, 0.8):
            torch.manual_seed(seed)
            kwargs: dict[str, object] = {"do_sample": False}
            if temperature is not None:
                kwargs = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
            with torch.no_grad():
                gen = model.generate(ids, max_new_tokens=max_new_tokens, **kwargs)
            mode = "greedy" if temperature is None else f"temperature={temperature}"
            text = tok.decode(gen[0], skip_special_tokens=False)
            print(f"\n===== prompt={prompt!r} {mode} =====\n{text}\n", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=25.0, help="wall-clock training budget")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=0,
        help="train this many steps with the lr schedule by step (0: by time); --minutes still caps the run",
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "pystdlib")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--save-every-minutes", type=float, default=5.0)
    parser.add_argument("--sample-tokens", type=int, default=120)
    parser.add_argument("--no-sample", action="store_true", help="skip the samples at the end")
    parser.add_argument("--sample-only", action="store_true", help="only sample from the checkpoint in --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    if args.sample_only:
        sample(args.out, SAMPLE_PROMPTS, args.sample_tokens, args.seed)
        return 0
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    t_start = time.monotonic()

    root = stdlib_root()
    sources = collect_sources(root)
    print(f"[data] {len(sources)} files, {sum(len(t) for _, t in sources) / 1e6:.2f} M chars from {root}", flush=True)

    tokenizer = train_tokenizer([t for _, t in sources], args.vocab_size)
    special_ids = {tok: tokenizer.token_to_id(tok) for tok in SPECIAL_TOKENS}
    print(f"[tokenizer] vocab={tokenizer.get_vocab_size()} special={special_ids}", flush=True)

    order = list(range(len(sources)))
    random.Random(args.seed).shuffle(order)
    n_val = max(1, len(order) // 50)
    val_texts = [sources[i][1] for i in order[:n_val]]
    train_texts = [sources[i][1] for i in order[n_val:]]
    train_data = encode_corpus(tokenizer, train_texts)
    val_data = encode_corpus(tokenizer, val_texts)
    chars = sum(len(t) for t in train_texts)
    print(
        f"[data] train {train_data.numel() / 1e6:.2f} M tokens ({chars / train_data.numel():.2f} chars/token), "
        f"val {val_data.numel() / 1e3:.1f} k tokens; prep took {time.monotonic() - t_start:.0f}s",
        flush=True,
    )

    model = build_model(tokenizer.get_vocab_size(), ModelShape(), special_ids)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[model] {n_params / 1e6:.2f} M parameters (tied embeddings)", flush=True)

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )

    generator = torch.Generator().manual_seed(args.seed)
    val_generator = torch.Generator().manual_seed(args.seed + 1)
    val_batches = [random_batch(val_data, args.batch_size, args.seq_len, val_generator) for _ in range(4)]

    budget_s = args.minutes * 60.0
    t_train = time.monotonic()
    t_saved = t_train
    step = 0
    ema: float | None = None
    print(f"[train] budget {args.minutes:g} min, batch {args.batch_size}x{args.seq_len}, lr {args.lr:g}", flush=True)
    while True:
        elapsed = time.monotonic() - t_train
        if elapsed >= budget_s or (args.max_steps and step >= args.max_steps):
            break
        # With --max-steps the schedule follows steps only, so runs are reproducible.
        progress = step / args.max_steps if args.max_steps else elapsed / budget_s
        lr = learning_rate(step, progress, args.lr, args.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = lm_loss(model, random_batch(train_data, args.batch_size, args.seq_len, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % args.log_every == 0:
            tok_s = step * args.batch_size * args.seq_len / max(elapsed, 1e-9)
            print(
                f"[train] step {step:5d} loss {loss.item():.3f} (ema {ema:.3f}) lr {lr:.2e} "
                f"{tok_s:,.0f} tok/s {elapsed / 60:.1f} min",
                flush=True,
            )
        if step % args.eval_every == 0:
            print(f"[eval] step {step} val loss {evaluate(model, val_batches):.3f}", flush=True)
        if time.monotonic() - t_saved > args.save_every_minutes * 60.0:
            save_checkpoint(model, tokenizer, args.out)
            t_saved = time.monotonic()

    train_s = time.monotonic() - t_train
    val_loss = evaluate(model, val_batches)
    print(
        f"[done] {step} steps, {step * args.batch_size * args.seq_len / 1e6:.2f} M tokens in {train_s / 60:.1f} min; "
        f"final train loss (ema) {ema:.3f}, val loss {val_loss:.3f}",
        flush=True,
    )
    save_checkpoint(model, tokenizer, args.out)
    for name in CHECKPOINT_FILES:
        print(f"[save] {args.out / name}: {(args.out / name).stat().st_size:,} bytes")
    total = sum((args.out / name).stat().st_size for name in CHECKPOINT_FILES)
    print(f"[save] total {total:,} bytes; wall time {(time.monotonic() - t_start) / 60:.1f} min", flush=True)

    if not args.no_sample:
        sample(args.out, SAMPLE_PROMPTS, args.sample_tokens, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
