"""A model named as a config names it: base weights plus an optional LoRA adapter (a policy, or a reference).

No torch and no loading here: the configs, the models layer and the pipelines all speak of models
this way, so it sits below all of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    """A model as base weights (Hub id, local folder or 'embedded') + an optional LoRA adapter folder."""

    base: str
    adapter: str | None = None

    def __str__(self) -> str:
        return self.base + (f" + adapter {self.adapter}" if self.adapter else "")
