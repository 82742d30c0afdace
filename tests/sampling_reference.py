"""The whole-row definition of sampling, shared by tests/engine/test_sampler.py (which `sample`
must equal, draw for draw) and bench/sampler_speed.py (which times `sample` against it)."""
from __future__ import annotations

import numpy as np


def whole_row(logits: np.ndarray, rng: np.random.Generator, temperature: float, top_k: int = 0,
              top_p: float = 1.0) -> int:
    """softmax(logits / temperature) over the whole row, masked to the top_k and to the nucleus
    by a full stable sort, drawn with Generator.choice (what `sample` did before 2026-12-02)."""
    z = logits.astype(np.float64) / temperature
    if 0 < top_k < z.size:
        z = np.where(z < np.partition(z, -top_k)[-top_k], -np.inf, z)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1]
        mask = np.zeros_like(p)
        mask[keep] = p[keep]
        p = mask / mask.sum()
    return int(rng.choice(p.size, p=p))
