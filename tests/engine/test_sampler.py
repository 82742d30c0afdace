import numpy as np
import pytest

from inference_pio.engine.sampler import sample
from sampling_reference import whole_row


def test_greedy_is_argmax():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(50).astype(np.float32)
    assert sample(logits, rng) == int(np.argmax(logits))


def test_top_k_restricts_support():
    rng = np.random.default_rng(0)
    logits = np.arange(10, dtype=np.float32)
    seen = {sample(logits, rng, temperature=5.0, top_k=3) for _ in range(300)}
    assert seen == {7, 8, 9}


def test_top_p_keeps_the_nucleus():
    rng = np.random.default_rng(0)
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    seen = {sample(logits, rng, temperature=1.0, top_p=0.7) for _ in range(300)}
    assert seen == {0, 1}


def test_rejects_bad_settings():
    with pytest.raises(ValueError):
        sample(np.zeros(3, np.float32), np.random.default_rng(0), temperature=-1.0)


@pytest.mark.parametrize("kw", [dict(temperature=0.7, top_k=50), dict(temperature=0.7, top_p=0.9),
                                dict(temperature=0.6, top_k=20, top_p=0.95), dict(temperature=1.3),
                                dict(temperature=1.0, top_p=0.999)])  # (a nucleus of most tokens: full sort)
@pytest.mark.parametrize("ties", [False, True])
def test_sampling_draws_the_same_tokens_as_the_definition(kw, ties):
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal(5003) * 2).astype(np.float32)
    if ties:  # equal logits at the top_k / nucleus boundary: lower token ids go first
        logits[:40] = 6.0
    for seed in range(40):
        assert sample(logits, np.random.default_rng(seed), **kw) == \
            whole_row(logits, np.random.default_rng(seed), **kw)


@pytest.mark.parametrize("kw", [dict(temperature=0.7, top_k=20), dict(temperature=0.6, top_k=20, top_p=0.95),
                                dict(temperature=1.2, top_k=1), dict(temperature=1.0, top_k=63, top_p=0.5)])
def test_sampling_from_the_best_candidates_draws_the_same_tokens(kw):
    """`sample_top` (the 64 best logits, as the CUDA `top_k` function returns them) against
    `sample` over the whole row; it declines (None) where a tie runs past the candidates."""
    from inference_pio.engine.sampler import sample_top

    rng = np.random.default_rng(5)
    v = 5003
    for ties in (False, True):
        z = (rng.standard_normal(v) * 2).astype(np.float32)
        if ties:
            z[100:200] = np.sort(z)[-10]  # 100 tokens tied around the 10th best
        best = np.lexsort((np.arange(v), -z))[:64]
        top = np.stack([z[best], best.astype(np.float32)])
        for seed in range(30):
            got = sample_top(top, v, np.random.default_rng(seed), **kw)
            if ties and kw["top_k"] > 1:
                assert got is None
            else:
                assert got == sample(z, np.random.default_rng(seed), **kw)


def test_logits_that_are_not_finite_are_an_error_not_a_token():
    logits = np.array([0.5, np.nan, 1.0], np.float32)
    with pytest.raises(RuntimeError, match="not finite"):
        sample(logits, np.random.default_rng(0), temperature=0.7, top_k=2)
    masked = np.array([0.5, -np.inf, 1.0], np.float32)  # a masked token is fine
    assert sample(masked, np.random.default_rng(0), temperature=0.7) in (0, 2)
