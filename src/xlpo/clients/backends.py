"""The candidate, baseline and judge backends a benchmark talks to, built from the user's options.

Each is either an OpenAI-compatible endpoint or a model loaded in this process (`embedded`, a
folder or a Hub id, optionally with a LoRA adapter): a local judge needs no server in between.
"""

from __future__ import annotations

from pathlib import Path

from xlpo.clients.endpoint import EndpointBackend, EndpointSettings
from xlpo.clients.local import LocalBackend
from xlpo.errors import UserError
from xlpo.generation import VLLMSettings
from xlpo.models import cache_root

_LOADED: dict[tuple, LocalBackend] = {}


class _SharedModel(LocalBackend):
    """A LocalBackend with its own batch size over another one's model (loaded once, on first use)."""

    def __init__(self, owner: LocalBackend, batch_size: int):
        super().__init__(owner.model, owner.adapter, owner.dtype, owner.backend, batch_size, owner.trust_remote_code,
                         engine=owner.engine)
        self.owner = owner

    @property
    def generator(self):
        return self.owner.generator


def local_backend(model: str, adapter: str | Path | None = None, batch_size: int = 8, backend: str = "auto",
                  engine: VLLMSettings = VLLMSettings()) -> LocalBackend:
    """A LocalBackend for (model, adapter); every backend of the same model, adapter and generation
    backend in this process shares one loaded copy (a model that is both candidate and judge loads
    once), each with its own batch size. The model itself loads on first use."""
    if backend not in ("auto", "hf", "vllm"):
        raise UserError(f"--backend: expected auto, hf or vllm; got '{backend}'")
    key = (model, str(adapter) if adapter else None, backend, engine)
    owner = _LOADED.setdefault(key, LocalBackend(model, key[1], backend=backend, batch_size=batch_size,
                                                 engine=engine))
    return owner if owner.batch_size == batch_size else _SharedModel(owner, batch_size)


def candidate_backend(model: str, adapter: Path | None, endpoint: str | None, endpoint_model: str | None,
                      endpoint_key_env: str | None, batch_size: int, role: str = "candidate", backend: str = "auto",
                      engine: VLLMSettings = VLLMSettings()):
    """An endpoint (`endpoint` + `endpoint_model`) or a local `model` (+ `adapter`, generated with
    `backend` and vLLM's `engine` settings) that answers prompts."""
    flag = "" if role == "candidate" else f"{role}-"
    if endpoint:
        if adapter is not None:
            raise UserError(f"--{flag}adapter applies to --{flag}model; an endpoint serves its own adapter "
                            "(xlpo serve --adapter)")
        if not endpoint_model:
            raise UserError(f"--{flag}endpoint needs --{flag}endpoint-model (the model name the endpoint serves)")
        return EndpointBackend(EndpointSettings(endpoint, endpoint_model, endpoint_key_env))
    return local_backend(model, adapter, batch_size, backend, engine)


def judge_backend(url: str | None, model: str | None, key_env: str | None = None, concurrency: int = 4,
                  rpm: float | None = None, cache: Path | None = None, no_cache: bool = False,
                  adapter: Path | None = None, batch_size: int = 8):
    """The judge: `model` at the endpoint `url`, or without `url` the model `model` (+ `adapter`) loaded here.

    Endpoint replies are cached under `cache` (default $XLPO_CACHE/judge-cache) unless `no_cache`; a
    local judge's replies are kept, like every answer, in the benchmark's own resumable files.
    """
    if not model:
        raise UserError("this benchmark needs a judge: --judge-url URL --judge-model NAME (any OpenAI-compatible "
                        "endpoint), or --judge-model embedded|FOLDER|HUB_ID alone (a model loaded here)")
    if not url:
        if key_env:
            raise UserError("--judge-key-env applies to --judge-url; a local judge needs no key")
        return local_backend(model, adapter, batch_size)
    if adapter is not None:
        raise UserError("--judge-adapter applies to a local judge (no --judge-url); an endpoint serves its own "
                        "adapter (xlpo serve --adapter)")
    cache_dir = None if no_cache else (cache or cache_root() / "judge-cache")
    return EndpointBackend(EndpointSettings(url, model, key_env, max_concurrency=concurrency,
                                            requests_per_minute=rpm, cache_dir=cache_dir))
