"""The losses' hyper-parameters: names, defaults, bounds and help, without torch.

Config validation and `xlpo train --help` read them here, so neither loads torch; losses.py runs them.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from xlpo.errors import UserError


class LossParams(BaseModel):
    """A loss's hyper-parameters, and which inputs beyond the policy's log-probs the loss needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    needs_reference: ClassVar[bool] = False  # the trainer fills ref_chosen/ref_rejected
    needs_mismatched: ClassVar[bool] = False  # the trainer fills kl_policy/kl_ref (KTO)


class DpoParams(LossParams):
    needs_reference: ClassVar[bool] = True
    beta: float = Field(0.1, gt=0, description="Inverse temperature on the policy/reference log-ratio.")
    label_smoothing: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="cDPO: assumed probability that a preference label is flipped (0 = plain DPO).",
    )


class IpoParams(LossParams):
    needs_reference: ClassVar[bool] = True
    beta: float = Field(0.1, gt=0, description="Regularisation strength; the target log-ratio margin is 1/(2*beta).")


class SimpoParams(LossParams):
    beta: float = Field(2.0, gt=0, description="Scale of the length-averaged log-prob margin.")
    gamma: float = Field(
        0.5,
        ge=0,
        description="Target reward margin (the SimPO authors' code: gamma = beta * gamma_beta_ratio, 2.0 * 0.25).",
    )


class DpoNllParams(LossParams):
    needs_reference: ClassVar[bool] = True
    beta: float = Field(0.1, gt=0, description="Inverse temperature of the DPO term.")
    nll_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of the length-normalised NLL of the chosen response (ICR/LLaMA-Factory pref_ftx).",
    )


class CapoParams(LossParams):
    beta: float = Field(0.1, gt=0, description="Scale of the summed log-prob margin log pi(y_w|x) - log pi(y_l|x).")
    alpha: float = Field(2.0, ge=0, description="Weight of the relative reward margin (RRM) term.")
    rrm: Literal["paper", "inverse"] = Field(
        "paper",
        description=(
            "RRM orientation: 'paper' = log pi(y_w|x) / log pi(y_l|x) (Eq. 4 as printed); "
            "'inverse' = log pi(y_l|x) / log pi(y_w|x) (grows as the chosen response becomes relatively more likely)."
        ),
    )
    rrm_eps: float = Field(
        1e-3,
        gt=0,
        description="Guard: the RRM denominator is clamped to at most -rrm_eps nats, bounding the ratio.",
    )


class KtoParams(LossParams):
    needs_reference: ClassVar[bool] = True
    needs_mismatched: ClassVar[bool] = True
    beta: float = Field(0.1, gt=0, description="Inverse temperature on the policy/reference log-ratio.")
    desirable_weight: float = Field(1.0, ge=0, description="lambda_D: weight of the desirable (chosen) items.")
    undesirable_weight: float = Field(1.0, ge=0, description="lambda_U: weight of the undesirable (rejected) items.")


# Every registered loss's parameter model by loss name. The built-in losses are listed here so that
# a config validates without importing torch; `xlpo.losses.register_loss` adds any other.
LOSS_PARAMS: dict[str, type[BaseModel]] = {
    "dpo": DpoParams,
    "ipo": IpoParams,
    "simpo": SimpoParams,
    "dpo_nll": DpoNllParams,
    "capo": CapoParams,
    "kto": KtoParams,
}


def params_of(name: str) -> type[BaseModel]:
    """The parameter model of loss `name`; an unknown name is a user error that lists the known ones."""
    try:
        return LOSS_PARAMS[name]
    except KeyError:
        raise UserError(f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSS_PARAMS))}") from None
