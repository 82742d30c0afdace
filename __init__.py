"""inference-pio: a compiled, graph-based LLM inference engine built on Apache TVM.

    from inference_pio import engine, frontends
    md = frontends.huggingface.model_def("path/to/hf_checkpoint")
    art = engine.compile(md, target="llvm")
    rt = engine.load(art.save("out/"), weights="path/to/hf_checkpoint", device="cpu")

    import inference_pio
    model = inference_pio.load_model("path/to/hf_checkpoint")   # compiles once, then cached
    print(model.generate("def fib(n):", max_new_tokens=64))
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_model(path: Any, device: str = "cpu", dtype: str | None = None, **kwargs: Any) -> Any:
    """An HF checkpoint or artifact directory -> `engine.text.Model` (``.generate`` / ``.stream``)."""
    from .engine.text import load_model as _load_model

    return _load_model(path, device, dtype, **kwargs)
