"""ICR's models: a policy as base weights + adapter, and one iteration's policy and reward reference.

Models load on first use, so a stage that finds its output on disk loads nothing. A reference on
the policy's own base is reached through the policy (adapters disabled, or its own adapter loaded
beside the policy's), so the base weights are in memory once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xlpo.generation import HFGenerator, choose_backend, make_generator
from xlpo.icr import response_logps
from xlpo.icr.config import ICRConfig
from xlpo.train.checkpoint import training_problem
from xlpo.icr.sample import engine_settings
from xlpo.models import load_adapter, load_policy, load_tokenizer, reference_mode, release_memory
from xlpo.train.reference import REFERENCE_ADAPTER


@dataclass(frozen=True)
class PolicySpec:
    """A model as weights + optional LoRA adapter."""

    base: str
    adapter: str | None = None

    def __str__(self) -> str:
        return self.base + (f" + adapter {self.adapter}" if self.adapter else "")


def trained_policy(train_dir: Path, base: str) -> PolicySpec | None:
    """The policy a finished training run produced (adapter on `base`, or full weights), else None
    (also when what it saved is damaged: see `training_problem`)."""
    if training_problem(train_dir) is not None:
        return None
    if (train_dir / "adapter").is_dir():
        return PolicySpec(base, str(train_dir / "adapter"))
    return PolicySpec(str(train_dir / "model"))


class Models:
    """The policy and the reward reference of one iteration, loaded on first use.

    A reference on the policy's own base is reached through the policy: with its adapter disabled,
    or with the reference's adapter loaded beside the policy's. Any other is loaded separately.
    """

    def __init__(self, config: ICRConfig, policy: PolicySpec, reference: PolicySpec):
        self.config = config
        self.spec = policy
        self.reference_spec = reference
        self._policy = None
        self._reference = None
        self._reference_adapter = None
        self._tokenizer = None
        self._encoder = None
        self._generator = None

    def _load(self, spec: PolicySpec):
        p = self.config.policy
        return load_policy(spec.base, spec.adapter, p.dtype, trust_remote_code=p.trust_remote_code,
                           attn_implementation=p.attn_implementation)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.spec.base, self.config.policy.trust_remote_code)
        return self._tokenizer

    @property
    def encoder(self):
        if self._encoder is None:
            self._encoder = response_logps.ResponseEncoder(self.tokenizer, self.config.chat_format())
        return self._encoder

    @property
    def policy(self):
        if self._policy is None:
            self._policy = self._load(self.spec)
        return self._policy

    def reference(self):
        """Context manager yielding the reference model (through the policy when it shares its base)."""
        ref = self.reference_spec
        if self.spec.adapter is not None and ref.base == self.spec.base:
            if ref.adapter is not None and self._reference_adapter is None:
                load_adapter(self.policy, ref.adapter, name=REFERENCE_ADAPTER)
                self._reference_adapter = REFERENCE_ADAPTER
            return reference_mode(self.policy, adapter=self._reference_adapter)
        if self._reference is None:
            self._reference = self._load(ref)
        return reference_mode(self.policy, self._reference)

    def generator(self):
        if self._generator is None:
            s = self.config.sampling
            if choose_backend(s.backend) == "vllm":
                self.close()  # vLLM takes a share of the GPU's free memory: give it all of it
                self._generator = make_generator(self.spec.base, self.spec.adapter, self.config.policy.dtype, "vllm",
                                                 self.config.policy.trust_remote_code, engine_settings(s))
            else:
                self._generator = HFGenerator(self.policy, self.tokenizer)
        return self._generator

    def release_generator(self) -> None:
        """Free a vLLM engine before scoring loads the HF models (the HF generator is the policy itself)."""
        if self._generator is not None and getattr(self._generator, "backend", "hf") == "vllm":
            self._generator = None
            self.close()

    def close(self) -> None:
        self._policy = self._reference = self._generator = self._reference_adapter = None
        release_memory()
