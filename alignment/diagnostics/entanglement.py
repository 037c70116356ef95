"""Gradient entanglement (Yuan et al., "A Common Pitfall of Margin-based Language Model Alignment: Gradient
Entanglement", arXiv 2410.13828): pure functions of per-pair gradient inner products.

With g_w = grad_theta log pi(y_w | x) and g_l = grad_theta log pi(y_l | x) (sums over response tokens, over the
trainable parameters), a gradient step on a margin loss with equal weights moves, to first order,

    d logp_w  ~  |g_w|^2 - <g_w, g_l>          d logp_l  ~  <g_w, g_l> - |g_l|^2

so the chosen log-probability FALLS when <g_w, g_l> > |g_w|^2 and the rejected one RISES when
<g_w, g_l> > |g_l|^2. The condition ratio rho = <g_w, g_l> / min(|g_w|^2, |g_l|^2) > 1 flags an entangled pair
(the minimum of both norms: the authors' analysis code uses |g_w| twice, a bug). For any loss and optimizer
the change of logp_w over one step is, to first order, <delta theta, g_w> (:func:`first_order_change`).

Shapes: every argument of :func:`entanglement_stats` is [k] (one entry per probe pair).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Grads = Sequence[torch.Tensor | None]


def grad_dot(a: Grads, b: Grads) -> torch.Tensor:
    """<a, b> over lists of per-parameter tensors (None = zero), accumulated in float64; a 0-dim tensor."""
    total = torch.zeros((), dtype=torch.float64)
    for x, y in zip(a, b, strict=True):
        if x is not None and y is not None:
            total += (x.double() * y.double()).sum().cpu()
    return total


def first_order_change(delta: Grads, grad: Grads) -> torch.Tensor:
    """Predicted change of a function f over a parameter step: <delta theta, grad_theta f> (a 0-dim tensor)."""
    return grad_dot(delta, grad)


def entanglement_stats(inner: torch.Tensor, sq_w: torch.Tensor, sq_l: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-pair entanglement statistics from <g_w, g_l>, |g_w|^2 and |g_l|^2 (all [k], float64).

    Returns [k] tensors: inner, norm_w, norm_l, cosine, rho (the condition ratio), predicted_dlogp_w
    (|g_w|^2 - <g_w, g_l>) and predicted_dlogp_l (<g_w, g_l> - |g_l|^2) (directions of the equal-weight
    margin step, up to the positive step size), chosen_down (bool: <g_w, g_l> > |g_w|^2), rejected_up (bool:
    <g_w, g_l> > |g_l|^2) and entangled (bool: rho > 1, i.e. chosen_down or rejected_up).

    Example (worked numbers): inner 3, |g_w|^2 = 2, |g_l|^2 = 8 -> cosine 3/4, rho 3/2, the chosen
    log-probability is predicted to fall (2 - 3 < 0) and the rejected one to fall (3 - 8 < 0)::

        s = entanglement_stats(torch.tensor([3.0]), torch.tensor([2.0]), torch.tensor([8.0]))
        s["rho"]  # tensor([1.5])
    """
    inner, sq_w, sq_l = (torch.as_tensor(x, dtype=torch.float64) for x in (inner, sq_w, sq_l))
    norm_w, norm_l = sq_w.clamp(min=0).sqrt(), sq_l.clamp(min=0).sqrt()
    tiny = torch.finfo(torch.float64).tiny
    cosine = inner / (norm_w * norm_l).clamp(min=tiny)
    rho = inner / torch.minimum(sq_w, sq_l).clamp(min=tiny)
    chosen_down = inner > sq_w
    rejected_up = inner > sq_l
    return {
        "inner": inner,
        "norm_w": norm_w,
        "norm_l": norm_l,
        "cosine": cosine,
        "rho": rho,
        "predicted_dlogp_w": sq_w - inner,
        "predicted_dlogp_l": inner - sq_l,
        "chosen_down": chosen_down,
        "rejected_up": rejected_up,
        "entangled": chosen_down | rejected_up,
    }


def sign_agreement(predicted: torch.Tensor, observed: torch.Tensor) -> float:
    """Share of entries where the predicted and the observed changes have the same sign (nan for none)."""
    if predicted.numel() == 0:
        return float("nan")
    return float((torch.sign(predicted) == torch.sign(observed)).double().mean())
