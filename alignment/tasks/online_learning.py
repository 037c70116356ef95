"""Online learning with full information (docs/regret.md; Park et al. 2024, arXiv 2403.16843).

d actions, horizon T. At round t a learner plays a distribution pi_t over the actions, then sees the loss
vector l_t in [0, 1]^d. External regret after T rounds:

    Regret_T = sum_t <l_t, pi_t> - min_a sum_t l_{t,a}

Everything here is plain torch on batches: loss sequences are [n, T, d] tensors, policies [n, T, d] with
row t a distribution that depends only on l_1..l_{t-1}.

Families (:func:`make_losses`):

- ``uniform``: i.i.d. U[0, 1] entries;
- ``gaussian``: each sequence draws per-action means U[0.2, 0.8]; losses mean + 0.25 N(0, 1), clipped to
  [0, 1] (a best action exists and is learnable);
- ``drift``: the means start U[0, 1] and take a Gaussian random walk (step 0.05, reflected into [0, 1]);
  losses mean + 0.1 N(0, 1), clipped;
- ``adversarial``: a first round of small random losses in [0, 0.5], then every round loss 1 on the action
  with the lowest cumulative loss so far (Follow-the-Leader's pick) and 0 elsewhere: FTL pays 1 every round
  while the best action pays about T/d, so FTL's regret is linear, about T (1 - 1/d); with d = 2 and a first
  round (0.5, 0) this is the classic alternating sequence (0, 1), (1, 0), ...

Baselines (:func:`ftl`, :func:`hedge`, :func:`ftpl`, :func:`uniform`) and :func:`best_hedge_lr`, the
learning rate of Hedge that does best on training sequences (grid search).

Example::

    losses = make_losses("adversarial", n=64, horizon=50, actions=2, seed=0)
    regret(ftl(losses), losses).mean()     # about 25: linear
    regret(hedge(losses, lr=0.3), losses).mean()
"""

from __future__ import annotations

import math

import torch

from alignment.tasks.families import FAMILIES  # torch-free: the command line lists them


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _adversarial(n: int, horizon: int, actions: int, gen: torch.Generator) -> torch.Tensor:
    losses = torch.zeros(n, horizon, actions)
    losses[:, 0] = 0.5 * torch.rand(n, actions, generator=gen)
    total = losses[:, 0].clone()
    rows = torch.arange(n)
    for t in range(1, horizon):
        leader = total.argmin(dim=-1)  # FTL's action (distinct totals: the first round's values are continuous)
        losses[rows, t, leader] = 1.0
        total[rows, leader] += 1.0
    return losses


def make_losses(family: str, n: int, horizon: int, actions: int, seed: int = 0) -> torch.Tensor:
    """``n`` loss sequences of ``horizon`` rounds over ``actions`` actions, [n, T, d] in [0, 1] (float32)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown loss family {family!r}; expected one of {', '.join(FAMILIES)}")
    if n < 1 or horizon < 1 or actions < 2:
        raise ValueError(f"need n >= 1, horizon >= 1 and actions >= 2; got {n}, {horizon}, {actions}")
    gen = _generator(seed)
    shape = (n, horizon, actions)
    if family == "uniform":
        return torch.rand(shape, generator=gen)
    if family == "gaussian":
        means = 0.2 + 0.6 * torch.rand(n, 1, actions, generator=gen)
        return (means + 0.25 * torch.randn(shape, generator=gen)).clamp(0.0, 1.0)
    if family == "drift":
        steps = 0.05 * torch.randn(shape, generator=gen)
        walk = torch.rand(n, 1, actions, generator=gen) + steps.cumsum(dim=1)
        means = 1.0 - (walk.remainder(2.0) - 1.0).abs()  # reflected into [0, 1]
        return (means + 0.1 * torch.randn(shape, generator=gen)).clamp(0.0, 1.0)
    return _adversarial(n, horizon, actions, gen)


def _before(losses: torch.Tensor) -> torch.Tensor:
    """Cumulative losses before each round: [n, T, d], row t = sum of rounds < t (zeros at t = 0)."""
    total = losses.cumsum(dim=1)
    return torch.cat([torch.zeros_like(total[:, :1]), total[:, :-1]], dim=1)


def regret_curve(policies: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """External regret after each round t = 1..T: [n, T]."""
    if policies.shape != losses.shape:
        raise ValueError(f"policies {tuple(policies.shape)} and losses {tuple(losses.shape)} differ in shape")
    paid = (policies * losses).sum(dim=-1).cumsum(dim=1)
    best = losses.cumsum(dim=1).min(dim=-1).values
    return paid - best


def regret(policies: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """External regret at T: [n]."""
    return regret_curve(policies, losses)[:, -1]


def uniform(losses: torch.Tensor) -> torch.Tensor:
    return torch.full_like(losses, 1.0 / losses.shape[-1])


def ftl(losses: torch.Tensor) -> torch.Tensor:
    """Follow the Leader: uniform over the actions with the lowest cumulative loss so far."""
    before = _before(losses)
    leaders = (before == before.min(dim=-1, keepdim=True).values).to(losses.dtype)
    return leaders / leaders.sum(dim=-1, keepdim=True)


def hedge(losses: torch.Tensor, lr: float) -> torch.Tensor:
    """Hedge (FTRL with entropy): pi_t proportional to exp(-lr * cumulative loss before t)."""
    return torch.softmax(-lr * _before(losses), dim=-1)


def default_hedge_lr(horizon: int, actions: int) -> float:
    """The textbook rate sqrt(8 ln d / T) (regret at most sqrt(T ln d / 2) on losses in [0, 1])."""
    return math.sqrt(8.0 * math.log(actions) / horizon)


def best_hedge_lr(losses: torch.Tensor, grid=None) -> float:
    """The Hedge learning rate with the lowest mean regret at T on ``losses`` (training sequences), from a
    log-spaced grid (default 0.01 to 100, 41 points)."""
    grid = torch.logspace(-2, 2, 41).tolist() if grid is None else list(grid)
    scores = [regret(hedge(losses, lr), losses).mean().item() for lr in grid]
    return grid[min(range(len(grid)), key=scores.__getitem__)]


def ftpl(losses: torch.Tensor, scale: float | None = None, samples: int = 256, seed: int = 0) -> torch.Tensor:
    """Follow the Perturbed Leader: each round, the leader of cumulative loss minus ``scale`` x Exp(1) noise
    (fresh noise every round); the policy is the distribution of that leader, estimated from ``samples``
    draws. ``scale`` defaults to sqrt(T)."""
    _, horizon, actions = losses.shape
    scale = math.sqrt(horizon) if scale is None else scale
    gen = _generator(seed)
    before = _before(losses)
    counts = torch.zeros_like(losses)
    for _ in range(samples):
        noise = torch.empty(losses.shape).exponential_(1.0, generator=gen).to(losses.dtype)
        counts += torch.nn.functional.one_hot((before - scale * noise).argmin(dim=-1), actions).to(losses.dtype)
    return counts / samples


def next_policy(learner, history: torch.Tensor) -> torch.Tensor:
    """A learner's policy [n, d] for the round after ``history`` [n, t, d] (t may be 0): row t of its play on
    the history plus a placeholder round, which row t never sees."""
    padded = torch.cat([history, history.new_zeros(history.shape[0], 1, history.shape[2])], dim=1)
    return learner(padded)[:, -1].float()


def adaptive_adversary(learner, n: int, horizon: int, actions: int, seed: int = 0):
    """Loss sequences chosen against ``learner`` itself (``losses [n, t, d] -> policies [n, t, d]``): a first
    round of random losses in [0, 0.5], then every round loss 1 on the learner's likeliest action and 0
    elsewhere (for FTL this is the ``adversarial`` family). Uniform play has linear regret here (T/d), Hedge
    O(sqrt(T log d)). Returns (losses, policies), both [n, T, d]."""
    gen = _generator(seed)
    losses = 0.5 * torch.rand(n, 1, actions, generator=gen)
    policies = [next_policy(learner, losses[:, :0])]
    for _ in range(1, horizon):
        policies.append(next_policy(learner, losses))
        hit = torch.nn.functional.one_hot(policies[-1].argmax(dim=-1), actions).to(losses.dtype)
        losses = torch.cat([losses, hit[:, None]], dim=1)
    return losses, torch.stack(policies, dim=1)


def growth_exponent(curve: torch.Tensor) -> float:
    """Slope of log R against log t over the second half of the rounds, for the mean regret curve [n, T]
    (about 0.5 for a no-regret learner on hard sequences, 1 for linear regret). A mean regret that is not
    positive somewhere in the second half does not grow: the exponent is 0 there (log R is undefined)."""
    mean = curve.mean(dim=0).double()
    horizon = mean.shape[0]
    half = mean[horizon // 2 :]
    if horizon < 4 or (half <= 0).any():
        return 0.0
    t = torch.arange(1, horizon + 1, dtype=torch.float64)[horizon // 2 :].log()
    r = half.log()
    t, r = t - t.mean(), r - r.mean()
    return float((t * r).sum() / (t * t).sum())
