"""Text in, text out: tokenizer.json (via `tokenizers`), the chat template from
tokenizer_config.json (rendered with jinja2 as transformers does), and stop ids from
generation_config.json."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import jinja2
import jinja2.ext
import jinja2.sandbox


class TokenizerError(ValueError):
    """A checkpoint whose tokenizer files are missing or unusable."""


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _token_text(v: Any) -> str | None:
    return v.get("content") if isinstance(v, dict) else v


class Tokenizer:
    def __init__(self, ckpt: str | Path) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        ckpt = Path(ckpt)
        if not (ckpt / "tokenizer.json").is_file():
            raise TokenizerError(f"no tokenizer.json in {ckpt}")
        self.tok = HFTokenizer.from_file(str(ckpt / "tokenizer.json"))
        self.config = _read(ckpt / "tokenizer_config.json")
        self.chat_template: str | None = self.config.get("chat_template")
        if self.chat_template is None and (ckpt / "chat_template.jinja").is_file():
            self.chat_template = (ckpt / "chat_template.jinja").read_text()
        self.stop_ids = self._stop_ids(ckpt)

    def _stop_ids(self, ckpt: Path) -> tuple[int, ...]:
        eos = _read(ckpt / "generation_config.json").get("eos_token_id")
        if eos is None:
            eos = _read(ckpt / "config.json").get("eos_token_id")
        if eos is None and _token_text(self.config.get("eos_token")):
            eos = self.tok.token_to_id(_token_text(self.config["eos_token"]))
        ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        return tuple(int(i) for i in ids)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise TokenizerError("this checkpoint has no chat template (tokenizer_config.json 'chat_template')")

        def raise_exception(msg: str) -> None:
            raise TokenizerError(f"chat template: {msg}")

        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                           extensions=[jinja2.ext.loopcontrols])
        env.filters["tojson"] = lambda x, indent=None, **kw: json.dumps(x, indent=indent, ensure_ascii=False)
        env.globals["raise_exception"] = raise_exception
        specials = {k: _token_text(v) for k, v in self.config.items() if k.endswith("_token")}
        return env.from_string(self.chat_template).render(messages=messages,
                                                          add_generation_prompt=add_generation_prompt, **specials)

    def stream_decode(self, ids: Iterator[int]) -> Iterator[str]:
        """Text pieces as tokens arrive; holds back bytes of an incomplete UTF-8 character."""
        out: list[int] = []
        shown = ""
        for i in ids:
            out.append(i)
            text = self.decode(out)
            if text.endswith("\ufffd"):
                continue
            if len(text) > len(shown):
                yield text[len(shown):]
            shown = text
