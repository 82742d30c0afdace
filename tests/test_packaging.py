"""pyproject installs every package folder of the repo (an editable install would hide a miss)."""
from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_SHIPPED = {"tests", "bench", "docs"}


def test_every_package_folder_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    tracked = subprocess.run(["git", "ls-files", "*__init__.py"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    found = {"inference_pio"}
    for init in tracked:
        rel = Path(init).parent
        if rel.parts and rel.parts[0] not in NOT_SHIPPED and not any(p.startswith(".") for p in rel.parts):
            found.add(".".join(("inference_pio", *rel.parts)))
    assert found == listed


def test_demo_checkpoint_is_package_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert data["inference_pio.demo"] == ["pystdlib/*"]
    assert {p.name for p in (ROOT / "demo" / "pystdlib").iterdir()} >= {"config.json", "model.safetensors",
                                                                       "tokenizer.json"}
