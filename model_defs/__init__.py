"""Model families declared in the graph IR, and the registry that maps HF architectures to them.

A family is one file (config dataclass + ``build(cfg) -> Graph``) and one `ModelSpec` here.
Third-party packages add families through the ``inference_pio.model_families`` entry-point
group: each entry point names a `ModelSpec`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..ir import Graph
from . import glm4_moe, qwen3, qwen3_moe, qwen3_next, qwen3_vl
from .config import ConfigError

ENTRY_POINT_GROUP = "inference_pio.model_families"


@dataclass(frozen=True)
class ModelSpec:
    """A family's manifest: what it accepts and how to build it."""

    name: str
    architectures: tuple[str, ...]  # HF `architectures` names it serves
    from_hf: Callable[[dict[str, Any], str], Any]  # (config.json dict, weight dtype) -> config
    build: Callable[[Any], Graph]
    targets: tuple[str, ...] = ("llvm", "cuda")
    dtypes: tuple[str, ...] = ("float32", "bfloat16", "float16")
    version: str = "1"
    # HF tensors a checkpoint may carry that the graph does not read, per config: names, or
    # prefixes ending in "." (a whole module, e.g. a multi-token-prediction layer)
    ignored: Callable[[Any], tuple[str, ...]] = field(default=lambda cfg: ())
    # graphs compiled beside the language model, by function name (Qwen3-VL: "vision")
    encoders: Callable[[Any], dict[str, Graph]] = field(default=lambda cfg: {})


@dataclass(frozen=True)
class ModelDef:
    """A family's config plus its graphs: what `engine.compile` consumes."""

    spec: ModelSpec
    config: Any
    graph: Graph  # the language model: ids -> logits
    encoders: dict[str, Graph] = field(default_factory=dict)  # e.g. "vision": an image -> its tokens' features

    @property
    def family(self) -> str:
        return self.spec.name

    def config_dict(self) -> dict[str, Any]:
        d = asdict(self.config)
        d.pop("extra", None)
        return d


def _qwen3_ignored(cfg: qwen3.Qwen3Config) -> tuple[str, ...]:
    return ("lm_head.weight",) if cfg.tie_word_embeddings else ()


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> None:
    for arch in spec.architectures:
        MODELS[arch] = spec


register(ModelSpec("qwen3", ("Qwen3ForCausalLM",), qwen3.Qwen3Config.from_hf, qwen3.build,
                   ignored=_qwen3_ignored))
register(ModelSpec("qwen3_moe", ("Qwen3MoeForCausalLM",), qwen3_moe.Qwen3MoeConfig.from_hf, qwen3_moe.build,
                   ignored=_qwen3_ignored))
register(ModelSpec("qwen3_next", ("Qwen3NextForCausalLM",), qwen3_next.Qwen3NextConfig.from_hf, qwen3_next.build,
                   ignored=_qwen3_ignored))
# vision: the CUDA kernels are Qwen3's, the vision tower's own ops (layer_norm, gelu, the
# position resampling, merging the features in) take dlight's rules
register(ModelSpec("qwen3_vl", ("Qwen3VLForConditionalGeneration",), qwen3_vl.Qwen3VLConfig.from_hf, qwen3_vl.build,
                   ignored=qwen3_vl.ignored, encoders=qwen3_vl.encoders))
register(ModelSpec("glm4_moe", ("Glm4MoeForCausalLM",), glm4_moe.Glm4MoeConfig.from_hf, glm4_moe.build,
                   ignored=glm4_moe.ignored))

_plugins_loaded = False


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        spec = ep.load()
        if not isinstance(spec, ModelSpec):
            raise TypeError(f"entry point {ep.name!r} in {ENTRY_POINT_GROUP} must name a ModelSpec, got {type(spec)}")
        register(spec)


def lookup(architecture: str) -> ModelSpec:
    """The spec for an HF architecture name; unknown names raise with the supported list."""
    _load_plugins()
    if architecture not in MODELS:
        raise ConfigError(f"unknown architecture {architecture!r}; supported: {', '.join(sorted(MODELS))}")
    return MODELS[architecture]


def from_hf_config(hf: dict[str, Any], dtype: str | None = None) -> ModelDef:
    """Build the model def for a parsed config.json (dtype defaults to the config's)."""
    archs = hf.get("architectures") or []
    if not archs:
        raise ConfigError("config.json has no 'architectures' list; cannot pick a model family")
    spec = lookup(archs[0])
    dtype = dtype or _hf_dtype(hf)
    if dtype not in spec.dtypes:
        raise ConfigError(f"dtype {dtype!r} is not supported by {spec.name}; supported: {spec.dtypes}")
    cfg = spec.from_hf(hf, dtype)
    return ModelDef(spec, cfg, spec.build(cfg), spec.encoders(cfg))


def _hf_dtype(hf: dict[str, Any]) -> str:
    d = hf.get("dtype") or hf.get("torch_dtype") or "float32"
    return str(d).removeprefix("torch.")


__all__ = ["ConfigError", "MODELS", "ModelDef", "ModelSpec", "from_hf_config", "lookup", "register"]
