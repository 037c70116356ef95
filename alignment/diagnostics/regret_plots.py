"""Figures of ``alignment regret-eval`` (regret_eval.json): regret against rounds per loss family, and the
distance of self-play's time-averaged play to the Nash equilibrium. Used by the command (PNG files) and by
``alignment report`` (a panel for every run folder holding a regret_eval.json)."""

from __future__ import annotations

from alignment.diagnostics.plots import COLORS, _grid, _png
from alignment.diagnostics.runs import Run

STYLES = {"model": ("-", 2.4), "uniform": (":", 1.4), "ftl": ("--", 1.4), "ftpl": ("-.", 1.4),
          "hedge": ("--", 1.4), "hedge_best": ("-", 1.2)}  # fmt: skip


def regret_png(result: dict, title: str = "") -> bytes:
    """One panel per family: the mean regret after t rounds, model (thick) and baselines."""
    fams = result["families"]
    fig, axes = _grid(len(fams), title or f"Regret against rounds: {result['model']} (held-out sequences)")
    for ax, fam in zip(axes, fams):
        for i, (name, row) in enumerate(fam["methods"].items()):
            style, width = STYLES.get(name, ("-", 1.4))
            label = f"{name} (lr {fam['hedge_best_lr']:.3g})" if name == "hedge_best" else name
            label += f": {row['regret']:.2f}, exp. {row['exponent']:.2f}"
            ax.plot(range(1, len(row["curve"]) + 1), row["curve"], style, lw=width, color=COLORS[i % len(COLORS)],
                    label=label)  # fmt: skip
        ax.set_title(f"{fam['family']} (n={fam['n']})", fontsize=10)
        ax.set_xlabel("round t")
        ax.set_ylabel("mean regret", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return _png(fig)


def games_png(result: dict) -> bytes:
    """One panel per game: TV distance of the time-averaged play to Nash after each round (log-log)."""
    games = result["games"]
    fig, axes = _grid(len(games), "Self-play: time-averaged play's distance to the Nash equilibrium")
    for ax, game in zip(axes, games):
        for i, (name, row) in enumerate(game["players"].items()):
            style, width = STYLES.get(name, ("-", 1.4))
            ax.loglog(range(1, len(row["curve"]) + 1), row["curve"], style, lw=width, color=COLORS[i % len(COLORS)],
                      label=f"{name}: {row['final_distance']:.3f}")  # fmt: skip
        ax.set_title(game["game"], fontsize=10)
        ax.set_xlabel("round")
        ax.set_ylabel("TV distance to Nash", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def regret_curves(runs: list[Run]) -> bytes | None:
    """The report's panel: the first run with a regret evaluation (several would overlay unreadably)."""
    found = [r for r in runs if r.regret_eval]
    if not found:
        return None
    return regret_png(found[0].regret_eval, f"Regret against rounds: {found[0].name} (held-out sequences)")


def regret_games(runs: list[Run]) -> bytes | None:
    found = [r for r in runs if r.regret_eval.get("games")]
    return games_png(found[0].regret_eval) if found else None


REGRET_FIGURES = [
    ("regret", "Regret on held-out loss sequences", regret_curves),
    ("regret_games", "Repeated games in self-play", regret_games),
]
