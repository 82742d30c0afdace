"""Token sampling from one row of logits on the host (numpy), for what the compiled sampler
(`ir.ops.sample_token`: greedy and plain temperature) does not do: top-k and top-p."""
from __future__ import annotations

import numpy as np


def check_settings(temperature: float, top_k: int, top_p: float) -> None:
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"bad sampling settings: temperature={temperature}, top_k={top_k}, top_p={top_p}")


def sample(logits: np.ndarray, rng: np.random.Generator, temperature: float = 0.0, top_k: int = 0,
           top_p: float = 1.0) -> int:
    """Greedy at temperature 0; otherwise softmax(logits / temperature) cut to the top_k
    tokens and to the smallest set whose probability reaches top_p, as transformers does.

    Only the candidates are sorted and drawn from: with top_k, the k best; with top_p, the
    best 256 if they hold top_p of the mass (a prefix of the full sort, ties included, so the
    cut is the same), else all of them. The draw is the one `Generator.choice(p=...)` makes
    (one uniform against the cumulative probabilities in token order), over the kept tokens
    only: the same seeded tokens as drawing from the whole masked row. Where the nucleus is
    most of the vocabulary, the full sort as before. Timings: bench/sampler_speed.py."""
    check_settings(temperature, top_k, top_p)
    z = np.asarray(logits).reshape(-1)
    if not np.isfinite(z.max()):  # (max propagates NaN)
        raise RuntimeError("no token could be drawn (the logits are not finite)")
    if temperature == 0:
        return int(np.argmax(z))
    cand = None  # the tokens still in play (None: all of them)
    if 0 < top_k < z.size:  # the top_k tokens, with any that tie the k-th
        cand = np.flatnonzero(z >= np.partition(z, -top_k)[-top_k])
        z = z[cand]
    return _draw(z, cand, rng, temperature, top_p)


def sample_top(top: np.ndarray, vocab_size: int, rng: np.random.Generator, temperature: float, top_k: int,
               top_p: float = 1.0) -> int | None:
    """`sample` from the best candidates of a row instead of the row: ``top`` (2, m) holds the
    m largest logits, best first (ties by lower id), and their token ids (the artifact's
    `top_k` function). The same token for the same ``rng`` as `sample(row, ...)`, or None
    where the candidates cannot decide: top_k not in (0, m), or the k-th logit tied past them."""
    check_settings(temperature, top_k, top_p)
    values, ids = top[0], top[1].astype(np.int64)
    if not np.isfinite(values[0]):
        raise RuntimeError("no token could be drawn (the logits are not finite)")
    m = values.size
    if temperature == 0 or not 0 < top_k <= m or top_k >= vocab_size:
        return None
    kth = values[top_k - 1]
    if m < vocab_size and values[-1] == kth:  # more ties may follow past the candidates
        return None
    keep = np.flatnonzero(values >= kth)
    cand = ids[keep]
    if cand.max() >= vocab_size:  # padding: fewer than top_k finite logits
        return None
    order = np.argsort(cand)  # token order, as `sample` sees them
    return _draw(values[keep][order], cand[order], rng, temperature, top_p)


def _draw(z: np.ndarray, cand: np.ndarray | None, rng: np.random.Generator, temperature: float, top_p: float) -> int:
    """Draw from softmax(z / temperature), cut to the top_p nucleus: z are the logits of tokens
    ``cand`` (ascending ids; None: every token, in order)."""
    z = z.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1.0:
        keep = _nucleus(p, top_p)
        cand, p = (keep if cand is None else cand[keep]), p[keep]
    cdf = np.cumsum(p)
    i = min(int(np.searchsorted(cdf / cdf[-1], rng.random(), side="right")), p.size - 1)
    return int(i if cand is None else cand[i])


def _nucleus(p: np.ndarray, top_p: float) -> np.ndarray:
    """Positions (ascending) of the smallest set of the largest ``p`` whose sum reaches
    ``top_p``, ties broken towards lower positions (a stable sort of -p). Tries the best 256
    before sorting everything (a flat distribution: then ~1 ms more than the sort alone)."""
    for m in (256, p.size):
        top = np.arange(p.size) if m >= p.size else np.flatnonzero(p >= np.partition(p, -m)[-m])
        order = top[np.argsort(-p[top], kind="stable")]
        cum = np.cumsum(p[order])
        if cum[-1] >= top_p or top.size == p.size:
            keep = np.zeros(p.size, bool)
            keep[order[: int(np.searchsorted(cum, top_p)) + 1]] = True
            return np.flatnonzero(keep)
    raise AssertionError("unreachable: the last try covers every token")
