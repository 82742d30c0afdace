"""The text API: ``inference_pio.load_model(path).generate("prompt")``.

``path`` is an HF checkpoint (compiled on first use, then served from the artifact cache) or
a saved artifact directory (pass ``weights=`` unless the artifact records its checkpoint).

Qwen3-VL takes images (file paths, PIL images or uint8 arrays): in chat messages as content
parts ``{"type": "image", "image": x}``, or as ``images=`` beside a text prompt. Each becomes
one run of image tokens, as many as its patches merge into.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from . import manifest as mf
from . import vision
from .runtime import InputError, Runtime, load
from .tokenizer import Tokenizer

Prompt = str | list[dict[str, Any]]


class Model:
    """A loaded model with its tokenizer: text (or chat messages) in, text out."""

    def __init__(self, runtime: Runtime, tokenizer: Tokenizer, checkpoint: str | Path | None = None) -> None:
        self.runtime = runtime
        self.tokenizer = tokenizer
        cfg = runtime.manifest.get("model_config") or {}
        self.vision: dict[str, Any] | None = cfg.get("vision") if "vision" in runtime.manifest["functions"] else None
        self._image_token = cfg.get("image_token_id")
        self.preprocess = vision.Preprocess.read(checkpoint) if checkpoint and self.vision else vision.Preprocess()
        # (artifacts from before 2026-12-04 do not record them: the tokenizer's names then)
        self._vision_tokens = tuple(tokenizer.tok.id_to_token(cfg[k]) if cfg.get(k) is not None else default
                                    for k, default in (("vision_start_token_id", "<|vision_start|>"),
                                                       ("vision_end_token_id", "<|vision_end|>")))

    def encode_prompt(self, prompt: Prompt, images: Sequence[Any] = ()) -> tuple[list[int], list[vision.Image]]:
        """The prompt's token ids and its images (`vision.Image`), each image's placeholder
        token repeated once per token the image becomes."""
        if isinstance(prompt, str):
            images, text = list(images), prompt
        else:
            if images:
                raise InputError("chat messages carry their images as content parts "
                                 "{'type': 'image', 'image': ...}, not as images=")
            images, messages = _image_parts(prompt)
            text = self.tokenizer.apply_chat_template(messages)
        if images:
            if self.vision is None:
                raise InputError(f"this {self.runtime.manifest['family']} model takes no images")
            pad = self.tokenizer.tok.id_to_token(self._image_token)
            if isinstance(prompt, str) and pad not in text:  # the images go first
                start, end = self._vision_tokens
                text = (start + pad + end) * len(images) + text
        ids = self.tokenizer.encode(text)
        if not ids:
            raise InputError("the prompt encodes to no tokens")
        if not images:
            return ids, []
        found = ids.count(self._image_token)
        if found != len(images):
            raise InputError(f"the prompt has {found} image placeholders ({pad!r}) but {len(images)} images")
        try:
            imgs = [vision.load(i, self.vision, self.preprocess) for i in images]
        except vision.ImageError as e:
            raise InputError(str(e)) from None
        tokens = iter([img.patches // self.vision["spatial_merge_size"] ** 2 for img in imgs])
        return [j for i in ids for j in ([i] * next(tokens) if i == self._image_token else [i])], imgs

    def stream(self, prompt: Prompt, max_new_tokens: int = 128, images: Sequence[Any] = (),
               **sampling: Any) -> Iterator[str]:
        """Yield pieces of generated text as they are decoded. ``images``: beside a text prompt
        (see the module doc). ``sampling``: temperature, top_k, top_p, seed, stop (extra stop
        ids; the checkpoint's EOS ids always stop)."""
        stop = set(sampling.pop("stop", ())) | set(self.tokenizer.stop_ids)
        ids, imgs = self.encode_prompt(prompt, images)
        out = self.runtime.stream(ids, max_new_tokens, stop=stop, images=imgs or None, **sampling)
        yield from self.tokenizer.stream_decode(i for i in out if i not in stop)

    def generate(self, prompt: Prompt, max_new_tokens: int = 128, images: Sequence[Any] = (),
                 **sampling: Any) -> str:
        return "".join(self.stream(prompt, max_new_tokens, images, **sampling))


def _image_parts(messages: list[dict[str, Any]]) -> tuple[list[Any], list[dict[str, Any]]]:
    """The images of chat messages' content parts in order, and the messages with each image
    part reduced to {"type": "image"} for the chat template."""
    images, out = [], []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and (part.get("type") == "image" or "image" in part):
                    if "image" not in part:
                        raise InputError(f"an image content part needs the image under 'image': {part}")
                    images.append(part["image"])
                    part = {"type": "image"}
                parts.append(part)
            m = {**m, "content": parts}
        out.append(m)
    return images, out


def load_model(path: str | Path, device: str = "cpu", dtype: str | None = None, *, weights: str | Path | None = None,
               target: Any = None, max_seq_len: int | None = None, matmul_precision: str = "auto",
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
    return Model(load(artifact, weights=weights, device=device), Tokenizer(weights), weights)
