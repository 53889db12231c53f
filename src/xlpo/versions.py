"""Versions of xlpo, Python and the libraries that change results: saved beside every result."""

from __future__ import annotations

import importlib.metadata
import platform

_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "datasets", "safetensors", "tokenizers",
              "numpy", "sacrebleu", "scipy", "pydantic")


def package_version(name: str) -> str:
    """The installed version of a distribution, or "not installed"."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    versions.update({name: package_version(name) for name in ("xlpo", *_LIBRARIES)})
    return versions
