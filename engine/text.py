"""The text API: ``inference_pio.load_model(path).generate("prompt")``.

``path`` is an HF checkpoint (compiled on first use, then served from the artifact cache) or
a saved artifact directory (pass ``weights=`` unless the artifact records its checkpoint).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from . import manifest as mf
from .runtime import Runtime, load
from .tokenizer import Tokenizer

Prompt = str | list[dict[str, str]]


class Model:
    """A loaded model with its tokenizer: text (or chat messages) in, text out."""

    def __init__(self, runtime: Runtime, tokenizer: Tokenizer) -> None:
        self.runtime = runtime
        self.tokenizer = tokenizer

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        text = prompt if isinstance(prompt, str) else self.tokenizer.apply_chat_template(prompt)
        ids = self.tokenizer.encode(text)
        if not ids:
            raise ValueError("the prompt encodes to no tokens")
        return ids

    def stream(self, prompt: Prompt, max_new_tokens: int = 128, **sampling: Any) -> Iterator[str]:
        """Yield pieces of generated text as they are decoded. ``sampling``: temperature,
        top_k, top_p, seed, stop (extra stop ids; the checkpoint's EOS ids always stop)."""
        stop = set(sampling.pop("stop", ())) | set(self.tokenizer.stop_ids)
        ids = self.runtime.stream(self.encode_prompt(prompt), max_new_tokens, stop=stop, **sampling)
        yield from self.tokenizer.stream_decode(i for i in ids if i not in stop)

    def generate(self, prompt: Prompt, max_new_tokens: int = 128, **sampling: Any) -> str:
        return "".join(self.stream(prompt, max_new_tokens, **sampling))


def load_model(path: str | Path, device: str = "cpu", dtype: str | None = None, *, weights: str | Path | None = None,
               target: Any = None, max_seq_len: int | None = None, matmul_precision: str = "high",
               quantize: str | None = None) -> Model:
    path = Path(path)
    if (path / mf.MANIFEST).is_file():
        artifact = path
        weights = Path(weights or mf.read(path).get("checkpoint") or path)
    else:
        from .. import frontends
        from .cache import compile_cached, quantize_option

        md = frontends.huggingface.model_def(path, dtype=dtype)
        artifact = compile_cached(md, target or ("llvm" if device == "cpu" else "cuda"), max_seq_len=max_seq_len,
                                  matmul_precision=matmul_precision, **quantize_option(quantize))
        weights = Path(weights or path)
    return Model(load(artifact, weights=weights, device=device), Tokenizer(weights))
