"""The artifact manifest: what was compiled, for which target, and which weights it expects.

Pure Python (no TVM): the runtime reads it before loading the library.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FORMAT = "inference-pio-artifact"
FORMAT_VERSION = 1
LIBRARY = "model.so"
MANIFEST = "manifest.json"


class ArtifactError(ValueError):
    """An artifact that cannot be used here: wrong format version, device, CPU, or weights."""


def write(path: Path, manifest: dict[str, Any]) -> None:
    (path / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def read(path: str | Path) -> dict[str, Any]:
    f = Path(path) / MANIFEST
    if not f.is_file():
        raise ArtifactError(f"{path} is not an inference-pio artifact (no {MANIFEST})")
    try:
        m = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{f} is not valid JSON: {e}") from None
    if m.get("format") != FORMAT:
        raise ArtifactError(f"{f} is not an inference-pio manifest (format={m.get('format')!r})")
    if m.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"artifact format version {m.get('format_version')} is not supported by this "
                            f"inference-pio (expects {FORMAT_VERSION}); recompile the model")
    return m
