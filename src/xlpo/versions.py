"""Versions of xlpo, Python and the libraries that change results: saved beside every result."""

from __future__ import annotations

import importlib.metadata
import platform

_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "datasets", "safetensors", "tokenizers",
              "numpy", "sacrebleu", "scipy", "pydantic")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("xlpo", *_LIBRARIES):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
