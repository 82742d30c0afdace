"""Convert an HF-style checkpoint (e.g. from random_checkpoint.py) to GGUF for llama.cpp.

    python bench/gguf_convert.py /tmp/qwen3-0.6b /tmp/qwen3-0.6b-bf16.gguf --outtype bf16

Uses llama.cpp's own converter (vendor/llama.cpp/convert_hf_to_gguf.py in the
llama-cpp-python source package of the installed version, fetched with `pip download`).

Random checkpoints have no tokenizer, which the converter needs, so we convert a copy of
the checkpoint folder (config.json copied, weights symlinked) with a small byte-level BPE
stand-in tokenizer; the converter pads the vocabulary to vocab_size with [PAD] tokens.
The converter names pre-tokenizers by hashing their output, which a stand-in cannot
match, so we run it with the pre-tokenizer pinned to "qwen2". The benchmark feeds token
ids, so this tokenizer is never used for text.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

DEFAULT_WORKDIR = Path("/tmp/inference-pio-bench")

# Runs the converter with get_vocab_base_pre pinned (argv: converter path, converter args...).
_RUN_CONVERTER = """
import runpy, sys
from pathlib import Path
conv = Path(sys.argv[1])
sys.path[:0] = [str(conv.parent), str(conv.parent / "gguf-py")]
from conversion.base import TextModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
sys.argv = sys.argv[1:]
runpy.run_path(str(conv), run_name="__main__")
"""


def find_converter(workdir: Path = DEFAULT_WORKDIR) -> Path:
    """convert_hf_to_gguf.py from the sdist of the installed llama-cpp-python (downloaded once)."""
    version = importlib.metadata.version("llama-cpp-python")
    root = workdir / "sdist" / f"llama_cpp_python-{version}"
    script = root / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    dl = workdir / "sdist"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    f"llama-cpp-python=={version}", "-d", str(dl)], check=True)
    with tarfile.open(dl / f"llama_cpp_python-{version}.tar.gz") as tf:
        tf.extractall(dl, filter="data")
    if not script.is_file():
        raise FileNotFoundError(f"{script} is not in the llama-cpp-python {version} source package")
    return script


# special tokens a converter looks up by name, per architecture (GLM's sets bos, eot and eom from them)
SPECIAL_TOKENS = {"Glm4MoeForCausalLM": ["[gMASK]", "<|user|>", "<|observation|>"]}


def write_standin_tokenizer(folder: Path, vocab_size: int = 512, specials: tuple[str, ...] = ()) -> None:
    """A byte-level BPE (all 256 byte symbols, so llama.cpp finds a newline token), with
    <|endoftext|> and ``specials`` as special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", *specials], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(Path(__file__).read_text().splitlines(), trainer)
    tok.save(str(folder / "tokenizer.json"))
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
           "pad_token": "<|endoftext|>", "model_max_length": 1 << 20}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def tokenized_copy(ckpt: Path, dst: Path) -> Path:
    """``dst``: config + symlinked weights of ``ckpt`` plus the stand-in tokenizer."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in ckpt.iterdir():
        if f.name == "config.json" or f.name.endswith(".safetensors.index.json"):
            shutil.copy(f, dst / f.name)
        elif f.suffix == ".safetensors":
            (dst / f.name).symlink_to(f.resolve())
    archs = json.loads((ckpt / "config.json").read_text()).get("architectures") or []
    write_standin_tokenizer(dst, specials=tuple(t for a in archs for t in SPECIAL_TOKENS.get(a, [])))
    return dst


def convert(ckpt: str | Path, out: str | Path, outtype: str = "bf16", workdir: Path = DEFAULT_WORKDIR) -> Path:
    """Write ``out`` (skipped when it exists) from the HF checkpoint ``ckpt``."""
    out = Path(out)
    if out.is_file():
        return out
    script = find_converter(workdir)
    src = tokenized_copy(Path(ckpt), workdir / "gguf-src" / Path(ckpt).name)
    tmp = out.with_name(out.name + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    logfile = workdir / "logs" / f"convert-{out.stem}.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    # Qwen3-Next's converter expects multi-token-prediction tensors unless told there are none
    archs = json.loads((Path(ckpt) / "config.json").read_text()).get("architectures") or []
    extra = ["--no-mtp"] if "Qwen3NextForCausalLM" in archs else []
    with open(logfile, "w") as f:
        proc = subprocess.run([sys.executable, "-c", _RUN_CONVERTER, str(script), str(src), "--outtype", outtype,
                               "--outfile", str(tmp), *extra], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"GGUF conversion failed (exit {proc.returncode}); see {logfile}")
    tmp.replace(out)
    shutil.rmtree(src)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--outtype", default="bf16", choices=["f32", "f16", "bf16", "q8_0"])
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    a = ap.parse_args()
    print(convert(a.checkpoint, a.out, a.outtype, a.workdir))
