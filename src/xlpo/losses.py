"""Preference losses (DPO, IPO, SimPO, DPO+NLL, CAPO, KTO) as pure functions of per-pair sequence log-probs.

A registry maps each name to its function, validated hyper-parameters and needed inputs (no trainer branching).
Defaults live only in each loss's `Params` model: call a loss through `compute_loss` (or `spec.fn` with
`spec.params().model_dump()`) to get them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import Tensor

from xlpo.errors import UserError
from xlpo.loss_params import (
    LOSS_PARAMS,
    CapoParams,
    LossParams,
    DpoNllParams,
    DpoParams,
    IpoParams,
    KtoParams,
    SimpoParams,
)

__all__ = [
    "LOSSES",
    "CapoParams",
    "DpoNllParams",
    "DpoParams",
    "IpoParams",
    "KtoParams",
    "LossOutput",
    "LossSpec",
    "SequenceLogps",
    "SimpoParams",
    "capo_loss",
    "compute_loss",
    "dpo_loss",
    "dpo_nll_loss",
    "get_loss",
    "ipo_loss",
    "kto_loss",
    "preference_metrics",
    "register_loss",
    "simpo_loss",
]


# --------------------------------------------------------------------------- types


@dataclass(frozen=True)
class SequenceLogps:
    """Per-pair inputs, float, shape (B,) (the KL fields: (M,)). Summed log-probs over completion tokens."""

    chosen: Tensor  # policy log pi(y_w|x), summed
    rejected: Tensor  # policy log pi(y_l|x), summed
    chosen_tokens: Tensor  # number of completion tokens of y_w (float tensor, >= 1)
    rejected_tokens: Tensor
    ref_chosen: Tensor | None = None  # reference summed log-probs (no grad)
    ref_rejected: Tensor | None = None
    # KTO only, shape (M,): policy and reference summed log-probs (no grad) of the MISMATCHED (x_i, y_j)
    # pairs of the whole step's batch (all processes and accumulation steps), whose mean is the KL estimate.
    kl_policy: Tensor | None = None
    kl_ref: Tensor | None = None


@dataclass
class LossOutput:
    losses: Tensor  # (B,) per-pair loss, differentiable; the trainer takes a weighted mean
    chosen_rewards: Tensor  # (B,) detached; the loss's own notion of reward
    rejected_rewards: Tensor  # (B,) detached
    extras: dict[str, Tensor] = field(default_factory=dict)  # (B,) detached per-pair diagnostics


@dataclass(frozen=True)
class LossSpec:
    name: str
    fn: Callable[..., LossOutput]  # fn(logps: SequenceLogps, **params) -> LossOutput
    params: type[LossParams]  # hyper-parameters with defaults, validated (extra="forbid"), and needed inputs
    description: str = ""

    @property
    def needs_reference(self) -> bool:
        return self.params.needs_reference

    @property
    def needs_mismatched(self) -> bool:
        return self.params.needs_mismatched


# --------------------------------------------------------------------------- helpers

# All arithmetic is float32: bf16 log-probs of long responses (hundreds of nats) keep only ~3
# significant digits, which is not enough for differences like a - a_ref.


def _f32(t: Tensor) -> Tensor:
    return t.to(torch.float32)


def _policy(logps: SequenceLogps) -> tuple[Tensor, Tensor]:
    return _f32(logps.chosen), _f32(logps.rejected)


def _lengths(logps: SequenceLogps) -> tuple[Tensor, Tensor]:
    return _f32(logps.chosen_tokens), _f32(logps.rejected_tokens)


def _reference(logps: SequenceLogps, loss: str) -> tuple[Tensor, Tensor]:
    if logps.ref_chosen is None or logps.ref_rejected is None:
        raise ValueError(f"loss {loss!r} needs reference log-probs: ref_chosen and ref_rejected must be set")
    # The reference is frozen; detaching here means a caller that forgot no_grad still trains only the policy.
    return _f32(logps.ref_chosen).detach(), _f32(logps.ref_rejected).detach()


def _output(losses: Tensor, chosen_rewards: Tensor, rejected_rewards: Tensor, **extras: Tensor) -> LossOutput:
    return LossOutput(
        losses=losses,
        chosen_rewards=chosen_rewards.detach(),
        rejected_rewards=rejected_rewards.detach(),
        extras={k: v.detach() for k, v in extras.items()},
    )


# --------------------------------------------------------------------------- losses


def dpo_loss(logps: SequenceLogps, *, beta: float, label_smoothing: float) -> LossOutput:
    """DPO: -log sigmoid(beta*h), h = (a - a_ref) - (b - b_ref), on summed log-probs.

    With label_smoothing eps > 0 (cDPO): -(1-eps)*log sigmoid(beta*h) - eps*log sigmoid(-beta*h).
    Rewards are the implicit rewards beta*(log pi - log pi_ref).
    """
    a, b = _policy(logps)
    a_ref, b_ref = _reference(logps, "dpo")
    chosen_ratio, rejected_ratio = a - a_ref, b - b_ref
    logits = beta * (chosen_ratio - rejected_ratio)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return _output(losses, beta * chosen_ratio, beta * rejected_ratio)


def ipo_loss(logps: SequenceLogps, *, beta: float) -> LossOutput:
    """IPO: (h - 1/(2*beta))**2 with h built from per-token MEAN log-probs.

    h = (a - a_ref)/|y_w| - (b - b_ref)/|y_l|. Length averaging follows TRL and the IPO authors'
    note; with summed log-probs the fixed target 1/(2*beta) would mean different things for
    short and long responses. Rewards are beta*(mean policy - mean reference) log-probs.
    """
    a, b = _policy(logps)
    a_ref, b_ref = _reference(logps, "ipo")
    n_w, n_l = _lengths(logps)
    chosen_ratio, rejected_ratio = (a - a_ref) / n_w, (b - b_ref) / n_l
    losses = (chosen_ratio - rejected_ratio - 1.0 / (2.0 * beta)) ** 2
    return _output(losses, beta * chosen_ratio, beta * rejected_ratio)


def simpo_loss(logps: SequenceLogps, *, beta: float, gamma: float) -> LossOutput:
    """SimPO: -log sigmoid(beta*(a/|y_w| - b/|y_l|) - gamma), reference-free, length-averaged.

    Rewards are beta * the mean per-token log-prob of each response.
    """
    a, b = _policy(logps)
    n_w, n_l = _lengths(logps)
    chosen_rewards, rejected_rewards = beta * a / n_w, beta * b / n_l
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    return _output(losses, chosen_rewards, rejected_rewards)


def dpo_nll_loss(logps: SequenceLogps, *, beta: float, nll_weight: float) -> LossOutput:
    """DPO+NLL (ICR's DPONLL, a.k.a. RPO): nll_weight * (-a/|y_w|) + DPO loss.

    The NLL of the chosen response is length-normalised; it counters DPO lowering both
    log-probs. Rewards are DPO's; extras["nll"] is the unweighted per-token NLL.
    """
    dpo = dpo_loss(logps, beta=beta, label_smoothing=0.0)
    a, _ = _policy(logps)
    n_w, _ = _lengths(logps)
    nll = -a / n_w
    return _output(nll_weight * nll + dpo.losses, dpo.chosen_rewards, dpo.rejected_rewards, nll=nll)


def _guarded_ratio(numerator: Tensor, denominator: Tensor, eps: float) -> Tensor:
    """numerator / min(denominator, -eps).

    Log-probs are <= 0, so a denominator near 0 (a near-certain response) would make the ratio
    unbounded, and a slightly positive one (rounding) would flip its sign. Clamping bounds
    |ratio| by |numerator|/eps; while clamped the gradient w.r.t. the denominator is zero.
    """
    return numerator / torch.clamp(denominator, max=-eps)


def capo_loss(
    logps: SequenceLogps, *, beta: float, alpha: float, rrm: Literal["paper", "inverse"], rrm_eps: float
) -> LossOutput:
    """CAPO (arXiv 2511.07691, Eq. 4): -log sigmoid(beta*(a - b) + alpha*RRM), reference-free, summed log-probs.

    rrm="paper": RRM = a/b, Eq. 4 as printed. Because log-probs are negative, a/b < 1 exactly when
    the chosen response is MORE likely, so this term rewards making y_w LESS likely:
    dz/da = beta + alpha/b reverses sign when |b| < alpha/beta (20 nats by default), and
    dz/db = -beta - alpha*a/b**2 reverses when alpha*|a|/b**2 > beta.
    rrm="inverse": RRM = b/a, the orientation the paper's prose describes (grows with the chosen
    response's relative likelihood); for negative a, b its gradients never reverse.
    Either way z is about beta*(a-b) + alpha when a ~ b, so the loss starts below DPO's ln 2.
    Guard: the denominator is clamped to at most -rrm_eps (see `_guarded_ratio`).
    Rewards are beta*a and beta*b (so reward accuracy is a > b); extras["rrm"] is the ratio used.
    """
    a, b = _policy(logps)
    # Choosing the orientation is a Python-level switch on a config value, not on tensor data.
    ratio = _guarded_ratio(a, b, rrm_eps) if rrm == "paper" else _guarded_ratio(b, a, rrm_eps)
    chosen_rewards, rejected_rewards = beta * a, beta * b
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards + alpha * ratio)
    return _output(losses, chosen_rewards, rejected_rewards, rrm=ratio)


def kto_loss(logps: SequenceLogps, *, beta: float, desirable_weight: float, undesirable_weight: float) -> LossOutput:
    """KTO on paired data: each pair is one desirable (chosen) and one undesirable (rejected) item.

    r = log pi - log pi_ref; z_ref = max(0, mean(kl_policy - kl_ref)) is a detached batch estimate
    of KL(pi || pi_ref) from mismatched (x_i, y_j) pairs (the trainer gives those of the whole
    optimizer step's batch, so z_ref does not depend on how the batch is split). Desirable loss
    lambda_D*(1 - sigmoid(beta*(r_w - z_ref))), undesirable lambda_U*(1 - sigmoid(beta*(z_ref - r_l))).
    The per-pair loss is their average, so the batch mean is the mean over the 2B items.
    """
    if logps.kl_policy is None or logps.kl_ref is None:
        raise ValueError("loss 'kto' needs mismatched-pair log-probs: kl_policy and kl_ref must be set")
    a, b = _policy(logps)
    a_ref, b_ref = _reference(logps, "kto")
    r_w, r_l = a - a_ref, b - b_ref
    # KTO treats z_ref as a constant baseline: no gradient, and a negative estimate (noise) means 0.
    z_ref = (_f32(logps.kl_policy) - _f32(logps.kl_ref)).mean().clamp(min=0).detach()
    desirable = desirable_weight * (1.0 - torch.sigmoid(beta * (r_w - z_ref)))
    undesirable = undesirable_weight * (1.0 - torch.sigmoid(beta * (z_ref - r_l)))
    losses = (desirable + undesirable) / 2.0
    return _output(losses, beta * r_w, beta * r_l, kl=z_ref.expand_as(r_w))


# --------------------------------------------------------------------------- registry

LOSSES: dict[str, LossSpec] = {}


def register_loss(spec: LossSpec) -> LossSpec:
    """Add a loss to `LOSSES`; a second loss with the same name is a bug, so it raises."""
    if spec.name in LOSSES and LOSSES[spec.name] is not spec:
        raise ValueError(f"a loss named {spec.name!r} is already registered")
    LOSSES[spec.name] = spec
    LOSS_PARAMS[spec.name] = spec.params  # configs validate its hyper-parameters without torch
    return spec


def get_loss(name: str) -> LossSpec:
    """The spec registered under `name`; an unknown name is a user error that lists the known ones."""
    try:
        return LOSSES[name]
    except KeyError:
        known = ", ".join(sorted(LOSSES))
        raise UserError(f"unknown loss {name!r}; known losses: {known}") from None


def compute_loss(name: str, logps: SequenceLogps, **params: object) -> LossOutput:
    """Validate `params` against the loss's parameter model (filling defaults), then run it."""
    spec = get_loss(name)
    try:
        validated = spec.params(**params)
    except pydantic.ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<params>'}: {e['msg']}" for e in err.errors()
        )
        raise UserError(f"invalid parameters for loss {name!r}: {problems}") from None
    return spec.fn(logps, **validated.model_dump())


def preference_metrics(logps: SequenceLogps, out: LossOutput) -> dict[str, Tensor]:
    """Per-pair (B,) detached float32 metrics under the names TRL users know, plus every extra.

    Kept per pair so the trainer can average them overall and per language.
    """
    chosen, rejected = out.chosen_rewards.detach().float(), out.rejected_rewards.detach().float()
    metrics = {
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margins": chosen - rejected,
        "rewards/accuracies": (chosen > rejected).float(),
        "logps/chosen": _f32(logps.chosen).detach(),
        "logps/rejected": _f32(logps.rejected).detach(),
        "loss": out.losses.detach().float(),
    }
    for key, value in out.extras.items():
        if key in metrics:
            raise ValueError(f"loss extra {key!r} collides with a standard metric name")
        metrics[key] = value.detach().float()
    return metrics


register_loss(LossSpec("dpo", dpo_loss, DpoParams, description="Direct Preference Optimization (optional cDPO label smoothing)."))
register_loss(LossSpec("ipo", ipo_loss, IpoParams, description="Identity Preference Optimization, squared loss on length-averaged log-ratios."))
register_loss(LossSpec("simpo", simpo_loss, SimpoParams, description="SimPO: reference-free, length-averaged log-prob margin with target margin gamma."))
register_loss(LossSpec("dpo_nll", dpo_nll_loss, DpoNllParams, description="DPO plus length-normalised NLL of the chosen response (ICR's DPONLL)."))
register_loss(LossSpec("capo", capo_loss, CapoParams, description="CAPO: reference-free summed log-prob margin plus a relative reward margin (RRM) term."))
register_loss(LossSpec("kto", kto_loss, KtoParams, description="KTO on paired data split into desirable and undesirable items."))
