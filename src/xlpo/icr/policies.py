"""ICR's models: one iteration's policy and reward reference, loaded on first use.

Models load on first use, so a stage that finds its output on disk loads nothing. The reward
reference is attached as training attaches its reference (`xlpo.models.attach_reference`).
"""

from __future__ import annotations

from xlpo.generation import HFGenerator, choose_backend, make_generator
from xlpo.icr import response_logps
from xlpo.icr.config import ICRConfig
from xlpo.icr.sample import engine_settings
from xlpo.models import attach_reference, load_policy, load_tokenizer, release_memory
from xlpo.model_spec import ModelSpec


class Models:
    """The policy and the reward reference of one iteration, loaded on first use."""

    def __init__(self, config: ICRConfig, policy: ModelSpec, reference: ModelSpec):
        self.config = config
        self.spec = policy
        self.reference_spec = reference
        self._policy = None
        self._reference = None
        self._tokenizer = None
        self._encoder = None
        self._generator = None

    def _load(self, spec: ModelSpec):
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
        """Context manager yielding the reward reference (through the policy when it shares its base)."""
        if self._reference is None:
            self._reference = attach_reference(self.policy, self.spec.base, self.reference_spec, self._load)
        return self._reference(self.policy)

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
        self._policy = self._reference = self._generator = None
        release_memory()
