"""The text API on the embedded demo model: tokenizer round-trip, chat template as
transformers renders it, EOS handling, streaming pieces that join to the full text."""
from __future__ import annotations

import pytest

import inference_pio
from inference_pio.demo import CHECKPOINT
from inference_pio.engine.tokenizer import Tokenizer, TokenizerError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import os

    os.environ["INFERENCE_PIO_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return inference_pio.load_model(CHECKPOINT)


def test_tokenizer_round_trip():
    tok = Tokenizer(CHECKPOINT)
    text = "import os\n\ndef main(argv):\n    return os.path.join(*argv)  # ünïcode ✓\n"
    assert tok.decode(tok.encode(text)) == text


def test_tokenizer_matches_transformers():
    from transformers import AutoTokenizer

    ours, theirs = Tokenizer(CHECKPOINT), AutoTokenizer.from_pretrained(str(CHECKPOINT))
    text = "class Foo(object):\n    pass\n"
    assert ours.encode(text) == theirs.encode(text, add_special_tokens=False)
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "def f():"}]
    assert ours.apply_chat_template(msgs) == theirs.apply_chat_template(msgs, tokenize=False,
                                                                        add_generation_prompt=True)


def test_stop_ids_come_from_generation_config():
    assert Tokenizer(CHECKPOINT).stop_ids == (0, 2)


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        Tokenizer(tmp_path)


def test_generate_text_is_greedy_and_streams(model):
    text = model.generate("def fibonacci(n):", max_new_tokens=24)
    assert text and isinstance(text, str)
    assert "".join(model.stream("def fibonacci(n):", max_new_tokens=24)) == text
    ids = model.runtime.generate(model.tokenizer.encode("def fibonacci(n):"), max_new_tokens=24,
                                 stop=model.tokenizer.stop_ids)
    assert text == model.tokenizer.decode([i for i in ids if i not in model.tokenizer.stop_ids])


def test_generate_matches_transformers_text(model):
    import torch
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    hf = Qwen3ForCausalLM.from_pretrained(str(CHECKPOINT), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(CHECKPOINT))
    prompt = "import os\n"
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = hf.generate(ids, max_new_tokens=32, do_sample=False)
    # our weights stay bf16 (kernels widen to fp32); HF upcast them to fp32: same numbers at matmul
    # precision "high" (the default for bf16 weights, "medium", rounds activations to bf16 as well)
    exact = inference_pio.load_model(CHECKPOINT, matmul_precision="high")
    assert exact.runtime.manifest["matmul_precision"] == "high" and model.runtime.manifest["matmul_precision"] == "medium"
    assert exact.generate(prompt, max_new_tokens=32) == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_chat_messages(model):
    reply = model.generate([{"role": "user", "content": "def add(a, b):"}], max_new_tokens=8)
    assert isinstance(reply, str)


def test_sampling_with_seed_is_reproducible(model):
    kw = dict(max_new_tokens=20, temperature=0.9, top_p=0.95, seed=3)
    assert model.generate("import ", **kw) == model.generate("import ", **kw)
