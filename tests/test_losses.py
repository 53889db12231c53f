"""Tests for xlpo.losses: values and gradients against hand-derived formulas, CAPO orientation and guard, registry."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from xlpo.errors import UserError
from xlpo.losses import (
    LOSSES,
    LossOutput,
    SequenceLogps,
    compute_loss,
    get_loss,
    preference_metrics,
)

LN2 = math.log(2.0)


def sig(x: float) -> float:
    # Written both ways so that large |x| never overflows math.exp.
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def neg_logsig(x: float) -> float:
    """-log sigmoid(x) = log(1 + exp(-x)), stable for large |x|."""
    return max(-x, 0.0) + math.log1p(math.exp(-abs(x)))


def t(*values: float, grad: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, requires_grad=grad)


def pair(
    a: float,
    b: float,
    *,
    n_w: float = 1.0,
    n_l: float = 1.0,
    a_ref: float | None = None,
    b_ref: float | None = None,
    kl_policy: tuple[float, ...] | None = None,
    kl_ref: tuple[float, ...] | None = None,
) -> tuple[SequenceLogps, torch.Tensor, torch.Tensor]:
    """One pair (B=1) with leaf tensors for a and b, so tests can read their gradients."""
    ta, tb = t(a, grad=True), t(b, grad=True)
    logps = SequenceLogps(
        chosen=ta,
        rejected=tb,
        chosen_tokens=t(n_w),
        rejected_tokens=t(n_l),
        ref_chosen=None if a_ref is None else t(a_ref),
        ref_rejected=None if b_ref is None else t(b_ref),
        kl_policy=None if kl_policy is None else t(*kl_policy),
        kl_ref=None if kl_ref is None else t(*kl_ref),
    )
    return logps, ta, tb


def run(
    name: str, logps: SequenceLogps, ta: torch.Tensor, tb: torch.Tensor, **params
) -> tuple[float, float, float, LossOutput]:
    """Loss value and d loss / d a, d loss / d b for a one-pair batch."""
    out = compute_loss(name, logps, **params)
    out.losses.sum().backward()
    return out.losses.item(), ta.grad.item(), tb.grad.item(), out


def approx(x: float, rel: float = 1e-5, abs: float = 1e-6):
    return pytest.approx(x, rel=rel, abs=abs)


# --------------------------------------------------------------------------- DPO


def test_dpo_value_and_gradients():
    beta = 0.1
    a, b, a_ref, b_ref = -10.0, -14.0, -12.0, -13.0
    h = (a - a_ref) - (b - b_ref)  # 2 - (-1) = 3
    loss, da, db, out = run("dpo", *pair(a, b, a_ref=a_ref, b_ref=b_ref), beta=beta)
    assert loss == approx(neg_logsig(beta * h))
    assert da == approx(-beta * sig(-beta * h))
    assert db == approx(beta * sig(-beta * h))
    assert out.chosen_rewards.item() == approx(beta * (a - a_ref))
    assert out.rejected_rewards.item() == approx(beta * (b - b_ref))


def test_dpo_is_ln2_when_policy_equals_reference():
    logps = SequenceLogps(
        chosen=t(-5.0, -40.0, -300.0),
        rejected=t(-7.0, -2.0, -250.0),
        chosen_tokens=t(3.0, 20.0, 100.0),
        rejected_tokens=t(4.0, 1.0, 90.0),
        ref_chosen=t(-5.0, -40.0, -300.0),
        ref_rejected=t(-7.0, -2.0, -250.0),
    )
    out = compute_loss("dpo", logps)
    assert torch.allclose(out.losses, torch.full((3,), LN2))
    assert LN2 == approx(0.693147, rel=1e-6)
    nll = torch.tensor([5.0 / 3.0, 2.0, 3.0])  # -a/|y_w|
    out_nll = compute_loss("dpo_nll", logps)
    assert torch.allclose(out_nll.losses, LN2 + nll)
    assert torch.allclose(out_nll.extras["nll"], nll)


def test_dpo_label_smoothing_value_and_gradient():
    beta, eps = 0.1, 0.2
    a, b, a_ref, b_ref = -10.0, -14.0, -12.0, -13.0
    x = beta * ((a - a_ref) - (b - b_ref))
    loss, da, db, _ = run("dpo", *pair(a, b, a_ref=a_ref, b_ref=b_ref), beta=beta, label_smoothing=eps)
    assert loss == approx((1 - eps) * neg_logsig(x) + eps * neg_logsig(-x))
    dloss_dx = -(1 - eps) * sig(-x) + eps * sig(x)
    assert da == approx(beta * dloss_dx)
    assert db == approx(-beta * dloss_dx)


@pytest.mark.parametrize("name", ["dpo", "ipo", "dpo_nll", "kto"])
def test_no_gradient_reaches_the_reference(name):
    ref_c, ref_r = t(-12.0, grad=True), t(-13.0, grad=True)
    logps = SequenceLogps(
        chosen=t(-10.0, grad=True),
        rejected=t(-14.0, grad=True),
        chosen_tokens=t(2.0),
        rejected_tokens=t(3.0),
        ref_chosen=ref_c,
        ref_rejected=ref_r,
        kl_policy=t(-20.0),
        kl_ref=t(-21.0),
    )
    compute_loss(name, logps).losses.sum().backward()
    assert ref_c.grad is None and ref_r.grad is None
    assert logps.chosen.grad is not None


def test_reference_losses_require_reference():
    logps, _, _ = pair(-1.0, -2.0)
    for name in ("dpo", "ipo", "dpo_nll"):
        with pytest.raises(ValueError, match="ref_chosen"):
            compute_loss(name, logps)


# --------------------------------------------------------------------------- IPO


def test_ipo_uses_mean_logps():
    beta = 0.1
    a, b, a_ref, b_ref, n_w, n_l = -20.0, -30.0, -24.0, -27.0, 4.0, 6.0
    h = (a - a_ref) / n_w - (b - b_ref) / n_l  # 1 - (-0.5) = 1.5
    target = 1 / (2 * beta)  # 5
    loss, da, db, out = run("ipo", *pair(a, b, n_w=n_w, n_l=n_l, a_ref=a_ref, b_ref=b_ref), beta=beta)
    assert loss == approx((1.5 - 5.0) ** 2)  # 12.25
    assert loss == approx((h - target) ** 2)
    assert da == approx(2 * (h - target) / n_w)
    assert db == approx(-2 * (h - target) / n_l)
    assert out.chosen_rewards.item() == approx(beta * 1.0)
    assert out.rejected_rewards.item() == approx(beta * -0.5)


# --------------------------------------------------------------------------- SimPO


def test_simpo_value_gamma_and_gradients():
    beta, gamma = 2.0, 0.5
    a, b, n_w, n_l = -6.0, -12.0, 4.0, 6.0  # means -1.5 and -2.0
    z = beta * (a / n_w - b / n_l) - gamma  # 2*0.5 - 0.5 = 0.5
    loss, da, db, out = run("simpo", *pair(a, b, n_w=n_w, n_l=n_l), beta=beta, gamma=gamma)
    assert loss == approx(neg_logsig(0.5))
    assert loss == approx(neg_logsig(z))
    assert da == approx(-sig(-z) * beta / n_w)
    assert db == approx(sig(-z) * beta / n_l)
    assert out.chosen_rewards.item() == approx(-3.0)
    assert out.rejected_rewards.item() == approx(-4.0)
    # gamma shifts the logit: without it the loss is lower.
    loss0, _, _, _ = run("simpo", *pair(a, b, n_w=n_w, n_l=n_l), beta=beta, gamma=0.0)
    assert loss0 == approx(neg_logsig(1.0))
    assert loss0 < loss


def test_simpo_defaults_are_authors_defaults():
    params = get_loss("simpo").params()
    assert params.beta == 2.0
    assert params.gamma == pytest.approx(2.0 * 0.25)


# --------------------------------------------------------------------------- DPO+NLL


def test_dpo_nll_value_and_gradients():
    beta, w = 0.1, 0.5
    a, b, a_ref, b_ref, n_w = -10.0, -14.0, -12.0, -13.0, 5.0
    h = 3.0
    loss, da, db, out = run("dpo_nll", *pair(a, b, n_w=n_w, a_ref=a_ref, b_ref=b_ref), beta=beta, nll_weight=w)
    assert loss == approx(w * 2.0 + neg_logsig(beta * h))
    assert da == approx(-w / n_w - beta * sig(-beta * h))
    assert db == approx(beta * sig(-beta * h))
    assert out.extras["nll"].item() == approx(2.0)
    assert out.chosen_rewards.item() == approx(beta * 2.0)


# --------------------------------------------------------------------------- CAPO


def capo_grads(a: float, b: float, **params) -> tuple[float, float, float, LossOutput]:
    return run("capo", *pair(a, b), **params)


def test_capo_paper_value_and_gradients():
    beta, alpha = 0.1, 2.0
    a, b = -30.0, -40.0
    z = beta * (a - b) + alpha * a / b  # 1.0 + 1.5
    assert z == approx(2.5)
    loss, da, db, out = capo_grads(a, b)
    assert loss == approx(neg_logsig(2.5))
    w = sig(-z)  # d loss / d z = -sigmoid(-z)
    assert da == approx(-w * (beta + alpha / b))
    assert db == approx(-w * (-beta - alpha * a / b**2))
    assert out.extras["rrm"].item() == approx(0.75)
    assert out.chosen_rewards.item() == approx(-3.0)
    assert out.rejected_rewards.item() == approx(-4.0)


def test_capo_paper_chosen_gradient_reverses_below_alpha_over_beta():
    # dz/da = beta + alpha/b: with beta=0.1, alpha=2 the sign flips at |b| = 20 nats.
    _, da_long, _, _ = capo_grads(-30.0, -40.0)  # |b| = 40 > 20: normal, descent raises a
    assert da_long < 0
    _, da_short, _, _ = capo_grads(-30.0, -10.0)  # |b| = 10 < 20: reversed, descent LOWERS a
    assert da_short > 0
    assert da_short == approx(-sig(-(0.1 * -20.0 + 2.0 * 3.0)) * (0.1 + 2.0 / -10.0))
    _, da_edge, _, _ = capo_grads(-30.0, -20.0)  # exactly alpha/beta: no push on a at all
    assert da_edge == approx(0.0, abs=1e-7)
    # The threshold moves with alpha/beta: alpha=1 puts it at 10 nats, so |b| = 15 is normal again.
    _, da_alpha1, _, _ = capo_grads(-30.0, -15.0, alpha=1.0)
    assert da_alpha1 < 0


def test_capo_paper_rejected_gradient_reverses_when_alpha_a_over_b2_exceeds_beta():
    # dz/db = -beta - alpha*a/b**2; normal sign means d loss/d b > 0 (descent lowers b).
    a, b = -30.0, -40.0  # alpha*|a|/b**2 = 0.0375 < 0.1: normal
    _, _, db, _ = capo_grads(a, b)
    assert db > 0
    a, b = -30.0, -10.0  # 2*30/100 = 0.6 > 0.1: reversed, descent RAISES b
    _, _, db, _ = capo_grads(a, b)
    assert db < 0
    z = 0.1 * (a - b) + 2.0 * a / b
    assert db == approx(-sig(-z) * (-0.1 - 2.0 * a / b**2))


def test_capo_starts_below_ln2_when_chosen_equals_rejected():
    for rrm in ("paper", "inverse"):
        loss, _, _, out = capo_grads(-25.0, -25.0, rrm=rrm)
        assert loss == approx(neg_logsig(2.0))  # z = alpha * 1
        assert loss < LN2
        assert out.extras["rrm"].item() == approx(1.0)


def test_capo_inverse_value_and_gradients():
    beta, alpha = 0.1, 2.0
    a, b = -30.0, -40.0
    z = beta * (a - b) + alpha * b / a  # 1 + 8/3
    loss, da, db, out = capo_grads(a, b, rrm="inverse")
    assert loss == approx(neg_logsig(1.0 + 8.0 / 3.0))
    w = sig(-z)
    assert da == approx(-w * (beta - alpha * b / a**2))
    assert db == approx(-w * (-beta + alpha / a))
    assert out.extras["rrm"].item() == approx(4.0 / 3.0)


@pytest.mark.parametrize("a, b", [(-30.0, -40.0), (-30.0, -10.0), (-2.0, -1.0), (-300.0, -5.0), (-10.0, -30.0)])
def test_capo_inverse_never_reverses(a, b):
    _, da, db, _ = capo_grads(a, b, rrm="inverse")
    assert da < 0 < db


@pytest.mark.parametrize("rrm", ["paper", "inverse"])
@pytest.mark.parametrize("near_zero", [0.0, -1e-9, 1e-6])
def test_capo_guard_near_zero_denominator(rrm, near_zero):
    eps, beta = 1e-3, 0.1
    other = -30.0
    a, b = (other, near_zero) if rrm == "paper" else (near_zero, other)
    # Default alpha: the logit is huge but everything stays finite.
    loss, da, db, out = capo_grads(a, b, rrm=rrm, rrm_eps=eps)
    assert math.isfinite(loss) and math.isfinite(da) and math.isfinite(db)
    ratio = out.extras["rrm"].item()
    assert abs(ratio) <= abs(other) / eps * (1 + 1e-6)
    assert ratio == approx(other / -eps)  # denominator clamped to -eps: the ratio keeps its positive sign
    # A tiny alpha keeps sigmoid(-z) away from 0 so the gradients can be checked exactly.
    alpha = 2e-4
    loss, da, db, _ = capo_grads(a, b, rrm=rrm, rrm_eps=eps, alpha=alpha)
    z = beta * (a - b) + alpha * other / -eps
    w = sig(-z)
    assert loss == approx(neg_logsig(z))
    if rrm == "paper":
        assert da == approx(-w * (beta + alpha / -eps))  # numerator over the clamped denominator
        assert db == approx(-w * -beta)  # the clamped denominator only feels beta*(a - b)
    else:
        assert da == approx(-w * beta)
        assert db == approx(-w * (-beta + alpha / -eps))


def test_capo_guard_in_a_batch_keeps_other_pairs_exact():
    logps = SequenceLogps(
        chosen=t(-30.0, -30.0, grad=True),
        rejected=t(0.0, -40.0, grad=True),
        chosen_tokens=t(1.0, 1.0),
        rejected_tokens=t(1.0, 1.0),
    )
    out = compute_loss("capo", logps)
    assert torch.isfinite(out.losses).all()
    assert out.losses[1].item() == approx(neg_logsig(2.5))
    out.losses.sum().backward()
    assert torch.isfinite(logps.chosen.grad).all() and torch.isfinite(logps.rejected.grad).all()


# --------------------------------------------------------------------------- KTO


def kto_batch(kl_policy, kl_ref, *, grad_kl: bool = False):
    a = t(-10.0, -20.0, grad=True)
    b = t(-15.0, -30.0, grad=True)
    kp = t(*kl_policy, grad=grad_kl)
    kr = t(*kl_ref, grad=grad_kl)
    logps = SequenceLogps(
        chosen=a,
        rejected=b,
        chosen_tokens=t(1.0, 1.0),
        rejected_tokens=t(1.0, 1.0),
        ref_chosen=t(-12.0, -18.0),
        ref_rejected=t(-14.0, -25.0),
        kl_policy=kp,
        kl_ref=kr,
    )
    return logps, a, b, kp, kr


def test_kto_value_and_gradients():
    beta, lam_d, lam_u = 0.1, 1.0, 1.5
    logps, a, b, _, _ = kto_batch((-50.0, -60.0), (-52.0, -61.0))
    z_ref = ((-50.0 + 52.0) + (-60.0 + 61.0)) / 2  # 1.5
    r_w = [2.0, -2.0]  # a - a_ref
    r_l = [-1.0, -5.0]  # b - b_ref
    out = compute_loss("kto", logps, beta=beta, desirable_weight=lam_d, undesirable_weight=lam_u)
    out.losses.sum().backward()
    for i in range(2):
        x = beta * (r_w[i] - z_ref)
        y = beta * (z_ref - r_l[i])
        expected = (lam_d * (1 - sig(x)) + lam_u * (1 - sig(y))) / 2
        assert out.losses[i].item() == approx(expected)
        assert a.grad[i].item() == approx(-lam_d * beta * sig(x) * sig(-x) / 2)
        assert b.grad[i].item() == approx(lam_u * beta * sig(y) * sig(-y) / 2)
        assert out.chosen_rewards[i].item() == approx(beta * r_w[i])
        assert out.rejected_rewards[i].item() == approx(beta * r_l[i])
    assert torch.allclose(out.extras["kl"], torch.tensor([1.5, 1.5]))


def test_kto_z_ref_clamped_at_zero_and_detached():
    logps, _, _, kp, kr = kto_batch((-55.0, -60.0), (-52.0, -61.0), grad_kl=True)  # mean diff -1
    out = compute_loss("kto", logps)
    assert torch.equal(out.extras["kl"], torch.zeros(2))
    x = 0.1 * (2.0 - 0.0)
    y = 0.1 * (0.0 - -1.0)
    assert out.losses[0].item() == approx(((1 - sig(x)) + (1 - sig(y))) / 2)
    out.losses.sum().backward()
    assert kp.grad is None and kr.grad is None
    # Same with a positive KL estimate: still no gradient reaches the mismatched log-probs.
    logps, _, _, kp, kr = kto_batch((-50.0, -60.0), (-52.0, -61.0), grad_kl=True)
    compute_loss("kto", logps).losses.sum().backward()
    assert kp.grad is None and kr.grad is None


def test_kto_requires_mismatched_logps():
    logps, *_ = pair(-1.0, -2.0, a_ref=-1.0, b_ref=-2.0)
    with pytest.raises(ValueError, match="kl_policy"):
        compute_loss("kto", logps)
    logps, *_ = pair(-1.0, -2.0, a_ref=-1.0, b_ref=-2.0, kl_policy=(-3.0,))
    with pytest.raises(ValueError, match="kl_ref"):
        compute_loss("kto", logps)


# --------------------------------------------------------------------------- registry


def test_all_losses_registered_with_their_needs():
    assert set(LOSSES) == {"dpo", "ipo", "simpo", "dpo_nll", "capo", "kto"}
    assert {n for n, s in LOSSES.items() if s.needs_reference} == {"dpo", "ipo", "dpo_nll", "kto"}
    assert {n for n, s in LOSSES.items() if s.needs_mismatched} == {"kto"}
    for name, spec in LOSSES.items():
        assert spec.name == name and spec.description


def test_function_parameters_are_the_params_fields_and_defaults_live_only_in_params():
    for name, spec in LOSSES.items():
        keyword_only = [p for p in inspect.signature(spec.fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
        assert {p.name for p in keyword_only} == set(spec.params().model_dump()), name
        assert all(p.default is inspect.Parameter.empty for p in keyword_only), f"{name}: a default outside Params"
        for field_name, info in spec.params.model_fields.items():
            assert info.description, f"{name}.{field_name} has no description"


def test_get_loss_unknown_name_lists_known():
    with pytest.raises(UserError) as err:
        get_loss("nope")
    message = str(err.value)
    assert "nope" in message
    for name in ("capo", "dpo", "dpo_nll", "ipo", "kto", "simpo"):
        assert name in message


@pytest.mark.parametrize(
    "params, field",
    [({"alpah": 2}, "alpah"), ({"beta": -1}, "beta"), ({"rrm": "backwards"}, "rrm"), ({"rrm_eps": 0}, "rrm_eps")],
)
def test_compute_loss_rejects_bad_params(params, field):
    logps, *_ = pair(-1.0, -2.0)
    with pytest.raises(UserError, match=field) as err:
        compute_loss("capo", logps, **params)
    assert "capo" in str(err.value)


def test_compute_loss_rejects_negative_weights():
    logps, *_ = pair(-1.0, -2.0, a_ref=-1.0, b_ref=-2.0, kl_policy=(-1.0,), kl_ref=(-1.0,))
    with pytest.raises(UserError, match="undesirable_weight"):
        compute_loss("kto", logps, undesirable_weight=-0.5)
    with pytest.raises(UserError, match="nll_weight"):
        compute_loss("dpo_nll", logps, nll_weight=-1.0)


def test_preference_metrics_on_concrete_numbers():
    logps = SequenceLogps(
        chosen=t(-10.0, -20.0, -5.0, grad=True),
        rejected=t(-15.0, -12.0, -5.0, grad=True),
        chosen_tokens=t(1.0, 1.0, 1.0),
        rejected_tokens=t(1.0, 1.0, 1.0),
    )
    out = compute_loss("capo", logps)
    m = preference_metrics(logps, out)
    assert torch.allclose(m["rewards/chosen"], torch.tensor([-1.0, -2.0, -0.5]))
    assert torch.allclose(m["rewards/rejected"], torch.tensor([-1.5, -1.2, -0.5]))
    assert torch.allclose(m["rewards/margins"], torch.tensor([0.5, -0.8, 0.0]))
    assert torch.equal(m["rewards/accuracies"], torch.tensor([1.0, 0.0, 0.0]))  # ties are not correct
    assert torch.equal(m["logps/chosen"], torch.tensor([-10.0, -20.0, -5.0]))
    assert torch.equal(m["logps/rejected"], torch.tensor([-15.0, -12.0, -5.0]))
    assert torch.allclose(m["rrm"], torch.tensor([10 / 15, 20 / 12, 1.0]))
    assert torch.allclose(m["loss"], out.losses)
    for value in m.values():
        assert value.shape == (3,) and not value.requires_grad and value.dtype == torch.float32


def test_outputs_are_detached_except_losses():
    logps, *_ = pair(-10.0, -14.0, a_ref=-12.0, b_ref=-13.0, kl_policy=(-1.0,), kl_ref=(-2.0,))
    for name in LOSSES:
        out = compute_loss(name, logps)
        assert out.losses.requires_grad, name
        assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad, name
        assert all(not v.requires_grad for v in out.extras.values()), name


# --------------------------------------------------------------------------- dtypes and tensor-value independence


def batch(dtype: torch.dtype, device: str = "cpu") -> SequenceLogps:
    # Values exactly representable in bf16, so fp32 and bf16 inputs carry the same numbers.
    def mk(*v):
        return torch.tensor(v, dtype=dtype, device=device)

    return SequenceLogps(
        chosen=mk(-30.0, -12.5, -96.0),
        rejected=mk(-40.0, -10.0, -88.0),
        chosen_tokens=mk(6.0, 5.0, 24.0),
        rejected_tokens=mk(8.0, 4.0, 22.0),
        ref_chosen=mk(-31.0, -12.0, -95.0),
        ref_rejected=mk(-38.5, -11.0, -90.0),
        kl_policy=mk(-50.0, -61.0, -70.0),
        kl_ref=mk(-51.0, -60.0, -72.0),
    )


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bf16_inputs_give_float32_outputs_close_to_fp32(name):
    out32 = compute_loss(name, batch(torch.float32))
    out16 = compute_loss(name, batch(torch.bfloat16))
    for x32, x16 in [(out32.losses, out16.losses), (out32.chosen_rewards, out16.chosen_rewards)]:
        assert x16.dtype == torch.float32
        assert torch.allclose(x16, x32, rtol=1e-6, atol=1e-6)
    for key in out32.extras:
        assert out16.extras[key].dtype == torch.float32
    # Gradients reach bf16 leaves.
    logps = batch(torch.bfloat16)
    chosen = logps.chosen.clone().requires_grad_(True)
    logps = SequenceLogps(**{**logps.__dict__, "chosen": chosen})
    compute_loss(name, logps).losses.sum().backward()
    assert chosen.grad is not None and chosen.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_no_branching_on_tensor_values(name):
    # Meta tensors carry shapes but no values: any .item()/bool() on data would raise here.
    out = compute_loss(name, batch(torch.float32, device="meta"))
    metrics = preference_metrics(batch(torch.float32, device="meta"), out)
    assert out.losses.shape == (3,) and all(v.shape == (3,) for v in metrics.values())
