"""What a trained SparsePO mask network does, head by head, on held-out sentiment pairs.

For each run folder (a learned-mask SparsePO output_dir) it reads the mask network and the reference (the run's
starting model) on the first N held-out pairs of data/tasks/sentiment/pref_eval_conversational.jsonl and
prints, as JSON and as a Markdown table:

- the mean reward mask on sentiment-word and on neutral-word tokens (word tokens: the task's lexicons) and
  their ratio; the share of word tokens and of all completion tokens whose mask is exactly 0;
- per head of the mask network (one per layer input: the embeddings when ``mask_embeddings``, then each layer):
  its mix weight, the share of tokens where its ReLU is open (score > 0), the mean of its post-ReLU score on
  sentiment and on neutral words; "uniform" marks a head open on at least 90% of the tokens whose sentiment /
  neutral ratio is below 1.5 (it adds about the same to every token's mask: a scale, not a selection);
- the uniform part of the mask, min over tokens of the mixed score: no token can reach 0 while it is > 0.

    OMP_NUM_THREADS=1 python experiments/sparsepo_heads.py RUN_DIR [RUN_DIR ...] [--pairs 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "tasks" / "sentiment" / "pref_eval_conversational.jsonl"


def _word_sets():
    from alignment.tasks.sentiment import NEGATIVE, NEUTRAL, POSITIVE

    return set(POSITIVE) | set(NEGATIVE), set(NEUTRAL)


def head_scores(network, layers) -> tuple[torch.Tensor, torch.Tensor]:
    """(post-ReLU per-head scores [N, T, L], the mixed mask before its ReLU [N, T]) of the reward head."""
    head = network.reward
    normed = [network.norm(h.detach().to(network.norm.weight.dtype)) for h in layers]
    scores = torch.relu(torch.stack([h @ w + b for h, w, b in zip(normed, head.layer_weight, head.layer_bias)], -1))
    return scores, head.mix(scores).squeeze(-1)


def analyse(run_dir: Path, pairs: int) -> dict:
    from alignment.data import PreferenceCollator, load_preference_dataset, tokenize_preference_dataset
    from alignment.diagnostics.masks import run_mask_settings
    from alignment.heads import reference_states
    from alignment.learners.token_mask import TokenMaskNetwork, mask_layers
    from alignment.models import load_model, load_tokenizer

    settings = run_mask_settings(run_dir)
    reference_path = settings["base_model"] or str(ROOT / "data" / "sft_model")
    tokenizer, reference = load_tokenizer(reference_path), load_model(reference_path).eval()
    network = TokenMaskNetwork.load(run_dir).eval()
    dataset, _ = load_preference_dataset(str(DATA))
    tokens, _ = tokenize_preference_dataset(dataset.select(range(pairs)), tokenizer, 96, name="eval")
    sentiment, neutral = _word_sets()
    rows = []  # (kind: sentiment/neutral/other, mask, per-head scores, mixed)
    with torch.no_grad():
        for row in tokens:
            batch = PreferenceCollator(tokenizer.pad_token_id)([row])
            states = reference_states(reference, batch["input_ids"], batch["attention_mask"],
                                      batch["completion_mask"], True)  # fmt: skip
            layers = mask_layers(states.layers, settings["mask_inputs"], settings["mask_embeddings"])
            scores, mixed = head_scores(network, layers)
            valid = batch["completion_mask"][:, 1:].bool()
            ids = batch["input_ids"][:, 1:]
            for r in range(ids.shape[0]):
                for t in valid[r].nonzero().flatten().tolist():
                    word = tokenizer.decode([int(ids[r, t])]).strip().lower()
                    kind = "sentiment" if word in sentiment else "neutral" if word in neutral else "other"
                    rows.append((kind, float(torch.relu(mixed[r, t])), scores[r, t].tolist(), float(mixed[r, t])))
    return summarize(rows, network)


def summarize(rows: list, network) -> dict:
    def mean(values):
        return sum(values) / max(len(values), 1)

    words = [r for r in rows if r[0] != "other"]
    by = {k: [r for r in rows if r[0] == k] for k in ("sentiment", "neutral")}
    m_s, m_n = mean([r[1] for r in by["sentiment"]]), mean([r[1] for r in by["neutral"]])
    mix = network.reward.mix.weight.detach().flatten().tolist()
    heads = []
    for h, weight in enumerate(mix):
        s_mean = mean([r[2][h] for r in by["sentiment"]])
        n_mean = mean([r[2][h] for r in by["neutral"]])
        open_share = mean([r[2][h] > 0 for r in rows])
        ratio = s_mean / n_mean if n_mean > 0 else float("inf")
        heads.append({"head": h, "mix": weight, "open_share": open_share, "sentiment": s_mean, "neutral": n_mean,
                      "uniform": open_share >= 0.9 and ratio < 1.5 and weight > 0})  # fmt: skip
    return {
        "mask_sentiment": m_s,
        "mask_neutral": m_n,
        "ratio": m_s / m_n if m_n > 0 else float("inf"),
        "zero_share_words": mean([r[1] == 0 for r in words]),
        "zero_share_all": mean([r[1] == 0 for r in rows]),
        "min_mixed": min(r[3] for r in rows),
        "tokens": {"words": len(words), "all": len(rows), **{k: len(v) for k, v in by.items()}},
        "heads": heads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = {run: analyse(Path(run), args.pairs) for run in args.runs}
    print("| run | sentiment / neutral mask | ratio | word tokens at 0 | all tokens at 0 | min mixed | uniform heads |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    for run, r in results.items():
        uniform = [f"{h['head']} (mix {h['mix']:.2f}, open {h['open_share']:.0%})" for h in r["heads"] if h["uniform"]]
        print(f"| {run} | {r['mask_sentiment']:.3f} / {r['mask_neutral']:.3f} | {r['ratio']:.1f}x | "
              f"{r['zero_share_words']:.0%} | {r['zero_share_all']:.0%} | {r['min_mixed']:.3f} | "
              f"{', '.join(uniform) or 'none'} |")  # fmt: skip
    for run, r in results.items():
        print(f"\n{run} heads:")
        for h in r["heads"]:
            flag = "  <- uniform" if h["uniform"] else ""
            print(f"  head {h['head']}: mix {h['mix']:+.3f}, open on {h['open_share']:.0%} of tokens, mean score "
                  f"sentiment {h['sentiment']:.3f} / neutral {h['neutral']:.3f}{flag}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
