"""Graph -> graph rewrites. Each pass is a pure function in its own file; `pipeline` orders them."""
from .drop_image_inputs import drop_image_inputs
from .fold_slices import fold_slices
from .fuse_epilogues import fuse_append_attention, fuse_append_pair, fuse_linear_swiglu, fuse_norm_append, fuse_norm_attention, fuse_norm_linear, fuse_norm_rotary, fuse_residual, fuse_swiglu, fuse_swiglu_linear
from .fuse_projections import fuse_projections
from .insert_kv_cache import insert_kv_cache, last_token_logits, specialize
from .insert_rotary import insert_rotary
from .insert_sampler import insert_sampler
from .matmul_precision import matmul_precision
from .pack_weights import pack_weights
from .pipeline import NamedPass, PassError, cache_passes, cpu_passes, cuda_passes, decode_passes, default_passes, gemm_passes, run
from .quantize_weights import quantize_weights
from .rewrite_attention import rewrite_attention
from .round_activations import round_activations
from .route_experts import route_experts
from .static_decode import static_decode

__all__ = ["NamedPass", "PassError", "cache_passes", "cpu_passes", "cuda_passes", "decode_passes", "default_passes",
           "drop_image_inputs", "fold_slices",
           "fuse_append_attention", "fuse_append_pair", "fuse_linear_swiglu", "fuse_norm_append", "fuse_norm_attention", "fuse_norm_linear", "fuse_norm_rotary", "fuse_projections", "fuse_residual", "fuse_swiglu", "fuse_swiglu_linear",
           "gemm_passes", "insert_kv_cache", "insert_rotary", "insert_sampler", "last_token_logits", "matmul_precision", "pack_weights", "quantize_weights", "rewrite_attention",
           "round_activations", "route_experts", "run", "specialize", "static_decode"]
