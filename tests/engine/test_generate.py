"""KV-cached generation: greedy equals transformers' greedy, sampling is seeded, stops and
context limits behave."""
from __future__ import annotations

import numpy as np
import pytest

from hf_fixtures import hf_greedy
from inference_pio.engine import InputError

PROMPT = [3, 17, 5, 42, 8, 1, 29]


@pytest.mark.parametrize("name,seed", [("gqa5x1", 0), ("gqa5x1", 7), ("tied_bias", 1), ("mha_theta", 2)])
def test_greedy_matches_transformers(models, name, seed):
    rt = models.runtime(name, seed=seed)
    ck = models.checkpoint(name, seed=seed)
    assert rt.generate(PROMPT, max_new_tokens=40) == hf_greedy(ck.model, PROMPT, 40)


def test_greedy_matches_transformers_with_chunked_prefill(models, monkeypatch):
    from inference_pio.engine import runtime

    monkeypatch.setitem(runtime.PREFILL_CHUNK, "cpu", 3)  # the 7-token prompt takes 3 prefill calls
    rt, ck = models.runtime("gqa5x1"), models.checkpoint("gqa5x1")
    assert rt.generate(PROMPT, max_new_tokens=33) == hf_greedy(ck.model, PROMPT, 33)


def test_decode_logits_match_full_forward(models):
    """The cached path's next-token choice at every step equals the cache-less forward's."""
    rt = models.runtime("tied_bias")
    toks = rt.generate(PROMPT, max_new_tokens=12)
    full = rt.logits(PROMPT + toks[:-1])
    assert toks == [int(i) for i in np.argmax(full[len(PROMPT) - 1:], axis=-1)]


def test_stream_yields_the_same_tokens(models):
    rt = models.runtime("gqa5x1")
    assert list(rt.stream(PROMPT, max_new_tokens=10)) == rt.generate(PROMPT, max_new_tokens=10)


def test_sampling_is_deterministic_with_a_seed(models):
    rt = models.runtime("gqa5x1")
    kw = dict(max_new_tokens=24, temperature=1.0, top_k=20, top_p=0.9)
    a, b = rt.generate(PROMPT, seed=123, **kw), rt.generate(PROMPT, seed=123, **kw)
    assert a == b
    others = {tuple(rt.generate(PROMPT, seed=s, **kw)) for s in range(4)}
    assert len(others) > 1


def test_top_k_1_is_greedy(models):
    rt = models.runtime("gqa5x1")
    assert rt.generate(PROMPT, max_new_tokens=16, temperature=0.7, top_k=1, seed=5) == \
        rt.generate(PROMPT, max_new_tokens=16)


def test_stop_ids_end_generation(models):
    rt = models.runtime("gqa5x1")
    greedy = rt.generate(PROMPT, max_new_tokens=20)
    stop = greedy[4]
    out = rt.generate(PROMPT, max_new_tokens=20, stop=[stop])
    assert out == greedy[: greedy.index(stop) + 1]
    assert rt.generate(PROMPT, max_new_tokens=0) == []


def test_context_limit_is_a_clear_error(models):
    rt = models.runtime("gqa5x1")  # compiled with max_seq_len=64
    with pytest.raises(InputError, match="exceed the compiled maximum context of 64"):
        rt.generate(PROMPT, max_new_tokens=60)
    with pytest.raises(InputError, match="longer than the compiled maximum 64"):
        rt.generate(list(range(65)), max_new_tokens=1)
    assert len(rt.generate(PROMPT, max_new_tokens=64 - len(PROMPT))) == 64 - len(PROMPT)


def test_bad_sampling_settings(models):
    rt = models.runtime("gqa5x1")
    with pytest.raises(ValueError, match="bad sampling settings"):
        rt.generate(PROMPT, max_new_tokens=2, temperature=1.0, top_p=0.0)


def test_compiled_sampler_is_seeded_and_used(models, monkeypatch):
    """Plain temperature sampling draws inside the decode function (only the token comes back);
    top-k / top-p fall back to the host sampler, which gets the logits."""
    from inference_pio.engine import runtime

    rt = models.runtime("gqa5x1")
    assert "token" in rt._outputs["decode"] and "token" in rt._outputs["prefill"]
    host_calls = []
    monkeypatch.setattr(runtime, "sample", lambda *a, **k: host_calls.append(1) or 0)
    kw = dict(max_new_tokens=24, temperature=1.0)
    a, b = rt.generate(PROMPT, seed=11, **kw), rt.generate(PROMPT, seed=11, **kw)
    assert a == b and not host_calls
    assert len({tuple(rt.generate(PROMPT, seed=s, **kw)) for s in range(4)}) > 1
    rt.generate(PROMPT, max_new_tokens=3, temperature=1.0, top_p=0.5, seed=0)
    assert len(host_calls) == 3


def test_compiled_sampler_follows_the_softmax(models):
    """At a high temperature the drawn first tokens spread like softmax(logits / T)."""
    rt = models.runtime("gqa5x1")
    z = rt.logits(PROMPT)[-1].astype(np.float64) / 0.5
    p = np.exp(z - z.max())
    p /= p.sum()
    draws = [rt.generate(PROMPT, max_new_tokens=1, temperature=0.5, seed=s)[0] for s in range(300)]
    top = int(np.argmax(p))
    assert abs(draws.count(top) / 300 - p[top]) < 0.1


def test_static_decode_generates_the_same_tokens(models, tmp_path):
    """decode compiled for whole-step CUDA graphs (persistent inputs, kv_len as data) runs on the
    CPU too: the same greedy tokens as transformers, the same seeded samples as the default."""
    from inference_pio import engine, frontends

    ck = models.checkpoint("tied_bias")
    md = frontends.huggingface.model_def(ck.path)
    art = engine.compile(md, target="llvm", max_seq_len=64, static_decode=True)
    assert art.manifest["functions"]["decode"].get("static_inputs") is True
    rt = engine.load(art.save(tmp_path / "static"), weights=ck.path)
    assert rt.generate(PROMPT, max_new_tokens=30) == hf_greedy(ck.model, PROMPT, 30)
    ref = models.runtime("tied_bias")
    assert rt.generate(PROMPT, 20, temperature=0.9, seed=4) == ref.generate(PROMPT, 20, temperature=0.9, seed=4)


def test_decode_inputs_keep_their_buffers_and_follow_new_settings(models):
    """Decode's inputs live in buffers kept across calls, refilled only where a value changed:
    switching temperatures between generations must still take effect."""
    from inference_pio.engine import load

    rt = models.runtime("gqa5x1")
    greedy = rt.generate(PROMPT, max_new_tokens=10)
    bufs = dict(rt._plans["decode"].kept.bufs)
    hot = rt.generate(PROMPT, max_new_tokens=10, temperature=2.0, seed=5)
    assert rt.generate(PROMPT, max_new_tokens=10) == greedy
    assert all(rt._plans["decode"].kept.bufs[k] is b for k, b in bufs.items())
    fresh = load(models.artifact("gqa5x1"), weights=models.checkpoint("gqa5x1").path)
    assert fresh.generate(PROMPT, max_new_tokens=10, temperature=2.0, seed=5) == hot != greedy
