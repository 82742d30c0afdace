"""The `inference-pio` command, run as a user would: in subprocesses."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from inference_pio.demo import CHECKPOINT


def cli(*args: str, env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inference_pio.engine", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, input=input, timeout=600)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifact")
    r = cli("compile", str(CHECKPOINT), "-o", str(out), "--max-seq-len", "256")
    assert r.returncode == 0, r.stderr
    assert "compiled qwen3" in r.stdout and "[####################] done" in r.stderr
    return out


def test_help_lists_the_subcommands():
    r = cli("--help")
    assert r.returncode == 0
    for sub in ("compile", "run", "chat", "bench"):
        assert sub in r.stdout


def test_compile_writes_an_artifact(artifact):
    m = json.loads((artifact / "manifest.json").read_text())
    assert (artifact / "model.so").is_file()
    assert m["family"] == "qwen3" and m["max_seq_len"] == 256 and m["checkpoint"] == str(CHECKPOINT.resolve())
    assert set(m["functions"]) == {"forward", "prefill", "decode"}


def test_run_streams_text_runtime_only(artifact):
    """A saved artifact runs in a fresh process without TVM's compiler (TVM_USE_RUNTIME_LIB=1)."""
    r = cli("run", "def main():", "--model", str(artifact), "--max-new-tokens", "16",
            env={"TVM_USE_RUNTIME_LIB": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("def main():") and len(r.stdout) > len("def main():\n")


def test_run_is_deterministic_with_a_seed(artifact):
    args = ("run", "import ", "--model", str(artifact), "--max-new-tokens", "12", "--temperature", "0.8",
            "--seed", "7")
    assert cli(*args).stdout == cli(*args).stdout


def test_chat_reads_turns_from_stdin(artifact):
    r = cli("chat", "--model", str(artifact), "--max-new-tokens", "8", input="def f():\n\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("> ")


def test_errors_are_one_line_messages(tmp_path):
    r = cli("compile", str(tmp_path), "-o", str(tmp_path / "out"))
    assert r.returncode == 2
    assert "error: no config.json in" in r.stderr and "Traceback" not in r.stderr
    r = cli("run", "x", "--model", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = cli("run", "x", "--threads", "0")
    assert r.returncode == 2 and "--threads must be >= 1" in r.stderr
    r = cli("compile", str(CHECKPOINT), "-o", str(tmp_path / "out"), "--cuda-pdl", "on")  # llvm target
    assert r.returncode == 2 and "cuda_pdl needs a cuda target" in r.stderr and "Traceback" not in r.stderr


def test_bench_prints_a_table(tmp_path):
    r = cli("bench", "--prompt-len", "16", "--new-tokens", "4", "--matmul-precision", "medium", "--threads", "1",
            env={"INFERENCE_PIO_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "prefill tok/s" in r.stdout and "decode tok/s" in r.stdout and "matmul precision medium" in r.stdout
    assert ", 1 threads," in r.stdout
    (art,) = tmp_path.glob("qwen3-*")
    assert json.loads((art / "manifest.json").read_text())["matmul_precision"] == "medium"


def test_second_compile_is_served_from_the_cache(tmp_path):
    env = {"INFERENCE_PIO_CACHE": str(tmp_path / "cache")}
    outs = []
    for i in range(2):
        r = cli("compile", str(CHECKPOINT), "-o", str(tmp_path / f"out{i}"), "--max-seq-len", "128", env=env)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout.split("(cache: ")[1])
    assert outs[0] == outs[1]
    assert len(list((tmp_path / "cache").glob("qwen3-*"))) == 1
    assert (tmp_path / "out0" / "model.so").read_bytes() == (tmp_path / "out1" / "model.so").read_bytes()
