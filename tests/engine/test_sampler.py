import numpy as np
import pytest

from inference_pio.engine.sampler import sample


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
