"""The report's figures (matplotlib, Agg): each returns PNG bytes, or None when no run has the data.

Runs overlay in one color each; within a figure, solid lines are the chosen response and dashed lines the
rejected one.
"""

from __future__ import annotations

import io
import textwrap

from alignment.diagnostics.runs import Run
from alignment.diagnostics.summary import HEADLINE_METRICS as FIRST_METRICS

#: characters of a 12 pt figure title that fit the width of one 4.6-inch panel
TITLE_CHARS_PER_PANEL = 48
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    _plt().close(fig)
    return buffer.getvalue()


def _grid(n: int, title: str):
    plt = _plt()
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
    fig.suptitle(textwrap.fill(title, TITLE_CHARS_PER_PANEL * cols), fontsize=12)  # wrapped: never clipped
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _panel(ax, runs: list[Run], lines: list[tuple[str, str, str]], title: str, source: str = "log") -> bool:
    """Plot (key, label, style) series of every run on ``ax``; False when nothing was there."""
    drawn, seen = False, []
    for i, run in enumerate(runs):
        for key, label, style in lines:
            steps, values = run.series(key) if source == "log" else run.probe_series(key)
            if steps:
                name = f"{run.name}: {label}" if label else run.name
                ax.plot(steps, values, style, color=COLORS[i % len(COLORS)], label=name, lw=1.6, ms=4)
                drawn, seen = True, seen + values
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=7)
    if seen and all(v == 0 for v in seen):
        say_all_zero(ax)
    return drawn


def say_all_zero(ax) -> None:
    """A panel whose every value is exactly 0 says so, on an axis that does not magnify nothing into a line."""
    ax.set_ylim(-1, 1)
    ax.set_yticks([0])
    ax.text(
        0.5,
        0.62,
        "0 at every logged step",
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=10,
        color="#555",
        bbox={"facecolor": "white", "edgecolor": "#ccc", "boxstyle": "round"},
    )


def _figure(runs: list[Run], title: str, panels: list[tuple[str, list, str]], source: str = "log") -> bytes | None:
    wanted = [
        p
        for p in panels
        if any((r.series(k) if source == "log" else r.probe_series(k))[0] for r in runs for k, _, _ in p[1])
    ]
    if not wanted:
        return None
    fig, axes = _grid(len(wanted), title)
    for ax, (panel_title, lines, ylabel) in zip(axes, wanted):
        _panel(ax, runs, lines, panel_title, source)
        ax.set_ylabel(ylabel, fontsize=8)
    return _png(fig)


CHOSEN_REJECTED = {
    "rewards": [("rewards/chosen", "chosen", "-"), ("rewards/rejected", "rejected", "--")],
    "logps": [("logps/chosen", "chosen", "-"), ("logps/rejected", "rejected", "--")],
}


def training_curves(runs: list[Run]) -> bytes | None:
    return _figure(
        runs,
        "Training curves",
        [
            ("loss", [("loss", "", "-")], "loss"),
            ("rewards (beta x log-ratio)", CHOSEN_REJECTED["rewards"], ""),
            ("reward margin", [("rewards/margins", "", "-")], "chosen - rejected"),
            ("reward accuracy", [("rewards/accuracies", "", "-")], "share with margin > 0"),
            ("log-probabilities (batch)", CHOSEN_REJECTED["logps"], "sum over tokens"),
            ("SFT NLL per token", [("nll_per_token", "", "-")], "nats"),
        ],
    )


def displacement(runs: list[Run]) -> bytes | None:
    return _figure(
        runs,
        "Likelihood displacement on the probe pairs (change since step 0)",
        [
            ("mean change of log p", [("chosen_delta", "chosen", "o-"), ("rejected_delta", "rejected", "s--")], "nats"),
            ("share of pairs whose chosen log p fell", [("chosen_fell_share", "", "o-")], "share"),
            ("probe log p", [("logp_chosen", "chosen", "o-"), ("logp_rejected", "rejected", "s--")], "nats"),
        ],
        source="probes",
    )  # fmt: skip


def entanglement(runs: list[Run]) -> bytes | None:
    return _figure(
        runs,
        "Gradient entanglement on the probe pairs",
        [
            ("share of entangled pairs (rho > 1)", [("entangled_share", "", "o-")], "share"),
            ("predicted: chosen down / rejected up", [("chosen_down_predicted", "chosen down", "o-"),
                                                      ("rejected_up_predicted", "rejected up", "s--")], "share"),
            ("mean cos(g_w, g_l)", [("cosine_mean", "", "o-")], "cosine"),
            ("median condition ratio rho", [("rho_median", "", "o-")], "<g_w,g_l> / min(|g_w|^2, |g_l|^2)"),
            ("gradient norms", [("grad_norm_chosen", "|g_w|", "o-"), ("grad_norm_rejected", "|g_l|", "s--")], "norm"),
            ("sign agreement with the prediction", [("sign_agreement_chosen", "chosen", "o-"),
                                                    ("sign_agreement_rejected", "rejected", "s--")], "share"),
        ],
        source="probes",
    )  # fmt: skip


def collapse(runs: list[Run]) -> bytes | None:
    return _figure(
        runs,
        "Softmax collapse (kernel flags, every step)",
        [
            ("softmax collapse", [("diagnostics/softmax_collapse", "", "-")], "share of scored tokens"),
            ("tokens with loss exactly 0", [("diagnostics/zero_loss_tokens", "", "-")], "share of scored tokens"),
        ],
    )


def first_order(runs: list[Run]) -> bytes | None:
    """Predicted <delta theta, g> against the observed change of log p, over the steps after each probe."""
    points = [(i, r) for i, r in enumerate(runs) if r.first_order]
    if not points:
        return None
    fig, (ax,) = _grid(1, "First-order check: predicted vs observed change of log p over one step")
    for i, run in points:
        for key, marker in (("w", "o"), ("l", "s")):
            pred = [v for rec in run.first_order for v in rec["pairs"][f"predicted_dlogp_{key}"]]
            obs = [v for rec in run.first_order for v in rec["pairs"][f"observed_dlogp_{key}"]]
            label = f"{run.name}: {'chosen' if key == 'w' else 'rejected'}"
            ax.scatter(obs, pred, marker=marker, color=COLORS[i % len(COLORS)], s=14, label=label, alpha=0.7)
    low, high = ax.get_xlim()
    ax.plot([low, high], [low, high], "k:", lw=1)
    ax.set_xlabel("observed change")
    ax.set_ylabel("predicted <delta theta, g>")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def token_masks(runs: list[Run]) -> bytes | None:
    """SparsePO: mask sparsity and mean over training, and the reward mask of each token of a few probe
    pairs (chosen responses) at the end of training."""
    series = [
        ("mask sparsity (share of tokens at exactly 0)",
         [("sparsepo/mask_sparsity_reward", "reward", "-"), ("sparsepo/mask_sparsity_kl", "KL", "--")], "share"),
        ("mask mean", [("sparsepo/mask_mean_reward", "reward", "-"), ("sparsepo/mask_mean_kl", "KL", "--")], "mask"),
    ]  # fmt: skip
    wanted = [p for p in series if any(r.series(k)[0] for r in runs for k, _, _ in p[1])]
    snapshots = [(r, k, pair) for r in runs for k, pair in enumerate(r.token_masks.get("pairs", [])[:2])]
    if not wanted and not snapshots:
        return None
    fig, axes = _grid(len(wanted) + len(snapshots), "SparsePO token masks")
    for ax, (title, lines, ylabel) in zip(axes, wanted):
        _panel(ax, runs, lines, title)
        ax.set_ylabel(ylabel, fontsize=8)
    for ax, (run, k, pair) in zip(axes[len(wanted) :], snapshots):
        tokens = pair["chosen"]
        ax.bar(range(len(tokens)), [t["mask_reward"] for t in tokens], color=COLORS[runs.index(run) % len(COLORS)])
        ax.set_xticks(range(len(tokens)), [t["token"].strip() or repr(t["token"]) for t in tokens], rotation=70,
                      fontsize=7)  # fmt: skip
        ax.set_title(f"{run.name}: reward mask, probe pair {k} (chosen)", fontsize=9)
        ax.set_ylabel("mask", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def iteration_metrics(runs: list[Run]) -> list[str]:
    """The task metrics the runs' self-play iterations logged, the headline ones first (``n`` left out)."""
    keys = []
    for run in runs:
        for row in run.iterations:
            for mode in ("sampled", "greedy"):
                keys += [k for k, v in row.get(mode, {}).items() if isinstance(v, (int, float)) and k != "n"]
    keys = list(dict.fromkeys(keys))
    return [k for k in FIRST_METRICS if k in keys] + [k for k in keys if k not in FIRST_METRICS]


def self_play(runs: list[Run]) -> bytes | None:
    """Self-play: each task metric of pi_t per iteration t (0 = the starting model), sampled (solid) and
    greedy (dashed) decoding."""
    keys = iteration_metrics(runs)[:6]
    if not keys:
        return None
    fig, axes = _grid(len(keys), "Self-play: the policy after each iteration (iteration 0 = the starting model)")
    for ax, key in zip(axes, keys):
        for i, run in enumerate(runs):
            for mode, style in (("sampled", "o-"), ("greedy", "s--")):
                points = [(r["iteration"], r[mode][key]) for r in run.iterations if key in r.get(mode, {})]
                if points:
                    ax.plot(*zip(*points), style, color=COLORS[i % len(COLORS)], label=f"{run.name}: {mode}", lw=1.6,
                            ms=4)  # fmt: skip
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("iteration")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)  # the same runs in every panel: one legend
    return _png(fig)


FIGURES = [
    ("self_play", "Self-play iterations", self_play),
    ("training", "Training curves", training_curves),
    ("displacement", "Likelihood displacement", displacement),
    ("entanglement", "Gradient entanglement", entanglement),
    ("collapse", "Softmax collapse", collapse),
    ("first_order", "First-order check", first_order),
    ("token_masks", "SparsePO token masks", token_masks),
]
