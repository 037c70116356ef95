"""``alignment regret-eval MODEL``: a trained no-regret learner against the baselines on held-out loss
sequences, and in repeated games against a copy of itself (docs/regret.md).

For each family: n held-out sequences (a generator seeded ``HELD_OUT + seed``; the trainer draws every
training sequence from its own generator seeded ``seed * 1_000_003 + s``, so none is seen in training);
the regret at T and the mean regret curve of the model and of every baseline (uniform, FTL, FTPL, Hedge with
the textbook rate sqrt(8 ln d / T), Hedge with the best fixed rate from a grid search on n *other* sequences
of the family, seeded ``TUNING + seed``), and each curve's growth exponent (slope of log R against log t over
the second half of the rounds). Then the adaptive adversary (``adaptive``: loss 1 on the player's own likeliest
action every round, so each method faces its own worst sequence; FTL and uniform have linear regret there, Hedge
O(sqrt T)). Games (for a learner with as many actions as the game): two copies play
each other; the distance of the time-averaged play to Nash after every round, against Hedge and FTL.

Writes ``regret_eval.json`` and ``regret_curves.png`` (+ ``regret_games.png``) into ``--out`` (default: the
model folder, so that ``alignment report MODEL`` shows them as a panel).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from alignment.io import atomic_write_text
from alignment.tasks import games as games_lib
from alignment.tasks import online_learning as ol

HELD_OUT = 1_000_000_007
TUNING = 2_000_000_011
BASELINES = ("uniform", "ftl", "ftpl", "hedge", "hedge_best")


def _baseline(name: str, losses: torch.Tensor, best_lr: float) -> torch.Tensor:
    horizon, actions = losses.shape[1], losses.shape[2]
    if name == "hedge":
        return ol.hedge(losses, ol.default_hedge_lr(horizon, actions))
    if name == "hedge_best":
        return ol.hedge(losses, best_lr)
    return {"uniform": ol.uniform, "ftl": ol.ftl, "ftpl": ol.ftpl}[name](losses)


def _summary(curve: torch.Tensor) -> dict:
    last = curve[:, -1]
    return {
        "regret": last.mean().item(),
        "stderr": (last.std().item() / math.sqrt(len(last))) if len(last) > 1 else 0.0,
        "exponent": ol.growth_exponent(curve),
        "curve": [round(v, 5) for v in curve.mean(dim=0).tolist()],
    }


def evaluate_family(learner, family: str, n: int, horizon: int, seed: int = 0) -> dict:
    """Regret at T, curve and exponent of the learner and every baseline on one family's held-out sequences."""
    d = learner.actions
    held = ol.make_losses(family, n, horizon, d, seed=HELD_OUT + seed)
    best_lr = ol.best_hedge_lr(ol.make_losses(family, n, horizon, d, seed=TUNING + seed))
    methods = {"model": _summary(ol.regret_curve(learner.policies(held), held))}
    for name in BASELINES:
        methods[name] = _summary(ol.regret_curve(_baseline(name, held, best_lr), held))
    return {"family": family, "n": n, "horizon": horizon, "hedge_lr": ol.default_hedge_lr(horizon, d),
            "hedge_best_lr": best_lr, "methods": methods}  # fmt: skip


def evaluate_adaptive(learner, n: int, horizon: int, seed: int = 0) -> dict:
    """Against the adaptive adversary (loss 1 on each player's own likeliest action; ol.adaptive_adversary):
    the sequences are different for every method. ``hedge_best`` uses the rate tuned on the (oblivious)
    adversarial family."""
    d = learner.actions
    best_lr = ol.best_hedge_lr(ol.make_losses("adversarial", n, horizon, d, seed=TUNING + seed))
    players = {"model": learner.policies, **{name: (lambda x, b=name: _baseline(b, x, best_lr)) for name in BASELINES}}
    methods = {}
    for name, fn in players.items():
        losses, policies = ol.adaptive_adversary(fn, n, horizon, d, seed=HELD_OUT + seed)
        methods[name] = _summary(ol.regret_curve(policies, losses))
    return {"family": "adaptive", "n": n, "horizon": horizon, "hedge_lr": ol.default_hedge_lr(horizon, d),
            "hedge_best_lr": best_lr, "methods": methods}  # fmt: skip


def evaluate_games(learner, rounds: int, n: int = 8, seed: int = 0) -> list[dict]:
    """Self-play in every game with the learner's number of actions: the model, Hedge and FTL."""
    out = []
    for name in games_lib.GAMES:
        if games_lib.get_game(name).row.shape[0] != learner.actions:
            continue
        rate = ol.default_hedge_lr(rounds, learner.actions)
        players = {"model": learner.policies, "hedge": lambda x, r=rate: ol.hedge(x, r), "ftl": ol.ftl}
        rows = {}
        for label, fn in players.items():
            play = games_lib.self_play(fn, fn, name, rounds, n=n, seed=seed)
            mean = play.distance.mean(dim=0)
            rows[label] = {"final_distance": mean[-1].item(), "curve": [round(v, 5) for v in mean.tolist()],
                           "row_average": play.row_average[:, -1].mean(0).tolist(),
                           "column_average": play.column_average[:, -1].mean(0).tolist()}  # fmt: skip
        out.append({"game": name, "rounds": rounds, "n": n, "players": rows})
    return out


def table(result: dict) -> list[str]:
    """Markdown: regret at T per family and method (mean +- stderr), then the growth exponents."""
    names = ["model", *BASELINES]
    out = ["| family | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
    for fam in result["families"]:
        cells = [f"{fam['methods'][m]['regret']:.3f} ± {fam['methods'][m]['stderr']:.3f}" for m in names]
        out.append(f"| {fam['family']} (T={fam['horizon']}) | " + " | ".join(cells) + " |")
    out += ["", "| growth exponent | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
    for fam in result["families"]:
        out.append(f"| {fam['family']} | " + " | ".join(f"{fam['methods'][m]['exponent']:.2f}" for m in names) + " |")
    for game in result.get("games", []):
        cells = ", ".join(f"{k} {v['final_distance']:.3f}" for k, v in game["players"].items())
        out += ["", f"{game['game']} self-play, TV distance of the time-averaged play to Nash after "
                    f"{game['rounds']} rounds: {cells}"]  # fmt: skip
    return out


def trained_horizon(folder: Path, default: int = 50) -> int:
    meta = json.loads((folder / "regret_learner.json").read_text())
    return int(meta.get("trained", {}).get("horizon", default))


def regret_eval(model: str, families=None, horizon: int | None = None, n: int = 256, seed: int = 0,
                out: str | None = None, rounds: int = 100, games: bool = True,
                adaptive: bool = True) -> dict:  # fmt: skip
    """Evaluate the learner saved in ``model``; write regret_eval.json and the PNGs into ``out``."""
    from alignment.diagnostics.regret_plots import games_png, regret_png
    from alignment.learners.regret_learner import RegretLearner

    folder = Path(model)
    learner = RegretLearner.from_pretrained(folder)
    horizon = horizon or trained_horizon(folder)
    families = list(families or ol.FAMILIES)
    for family in families:
        if family not in ol.FAMILIES:
            raise ValueError(f"unknown loss family {family!r}; expected one of {', '.join(ol.FAMILIES)}")
    result = {"model": str(folder), "actions": learner.actions, "seed": seed,
              "families": [evaluate_family(learner, f, n, horizon, seed) for f in families]}  # fmt: skip
    if adaptive:
        result["families"].append(evaluate_adaptive(learner, min(n, 64), horizon, seed))
    if games:
        result["games"] = evaluate_games(learner, rounds, seed=seed)
    target = Path(out) if out else folder
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target / "regret_eval.json", json.dumps(result, indent=1))
    (target / "regret_curves.png").write_bytes(regret_png(result))
    if result.get("games"):
        (target / "regret_games.png").write_bytes(games_png(result))
    return result
