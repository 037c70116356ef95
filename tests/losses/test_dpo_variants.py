"""TRL's DPO variants in the loss table: worked numbers (alignment/losses/dpo_variants.py docstring),
MPO weighted lists, f-divergence scores, AOT's sort and the combination checks. (Equivalence with trl 1.16's
trainer: tests/trainers/test_trl_equivalence.py.)"""

import math

import pytest
import torch

from alignment.losses import dpo_loss
from alignment.losses.dpo import f_scores
from alignment.trainers import DPOConfig

T = torch.tensor


def one(x):
    return T([float(x)], dtype=torch.float64)


def worked(loss_type, eps=0.0, **kw):
    losses, _ = dpo_loss(one(-10), one(-12), one(-11), one(-11), beta=0.1, loss_type=loss_type,
                         label_smoothing=eps, chosen_tokens=one(2), rejected_tokens=one(4), **kw)  # fmt: skip
    return losses.item()


@pytest.mark.parametrize(
    "loss_type, eps, expected",
    [
        ("nca_pair", 0.0, 1.338793),
        ("bco_pair", 0.0, 1.288793),
        ("sppo_hard", 0.0, 32.0),
        ("apo_zero", 0.0, 0.950042),
        ("apo_down", 0.0, 0.975145),
        ("discopop", 0.0, 0.814763),
        ("exo_pair", 0.1, 0.406304),
        # sigmoid_norm: h = 1/2 - (-1)/4 = 0.75, -log sigmoid(0.075)
        ("sigmoid_norm", 0.0, -math.log(1 / (1 + math.exp(-0.075)))),
        # sft: -logp_w * B / N with B = 1 pair, N = 2 chosen tokens
        ("sft", 0.0, 5.0),
        # one pair: aot sorts nothing, so it is cDPO on the same margin
        ("aot", 0.1, 0.618139),
    ],
)
def test_worked_numbers(loss_type, eps, expected):
    assert worked(loss_type, eps) == pytest.approx(expected, abs=1e-6)


def test_mpo_list_is_the_weighted_sum():
    parts = {name: worked(name) for name in ("sigmoid", "bco_pair", "sft")}
    mixed = worked(["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0])
    assert mixed == pytest.approx(0.8 * parts["sigmoid"] + 0.2 * parts["bco_pair"] + parts["sft"])
    assert worked(["sigmoid", "hinge"]) == pytest.approx(parts["sigmoid"] + worked("hinge"))


def test_f_divergence_scores_by_hand():
    u = T([0.5], dtype=torch.float64)
    assert f_scores(u, "forward_kl").item() == pytest.approx(1 - math.exp(-0.5))
    assert f_scores(u, "js_divergence").item() == pytest.approx(math.log(2 * math.exp(0.5) / (math.exp(0.5) + 1)))
    assert f_scores(u, "alpha_divergence", 0.3).item() == pytest.approx((math.exp(-0.7 * 0.5) - 1) / -0.7)
    assert f_scores(u, "alpha_divergence", 1.0).item() == 0.5  # the limit: reverse KL
    # forward KL through sigmoid: m = beta (s_w - s_l) with s = 1 - exp(-u), u_w = 1, u_l = -1
    m = 0.1 * ((1 - math.exp(-1)) - (1 - math.exp(1)))
    assert worked("sigmoid", f_divergence_type="forward_kl") == pytest.approx(math.log1p(math.exp(-m)))


def test_aot_pairs_sorted_quantiles_not_rows():
    # policy log-ratio differences [3, -1], reference [0, 2]: sorted, d = [-1 - 0, 3 - 2] = [-1, 1]
    w, lose = T([3.0, -1.0], dtype=torch.float64), T([0.0, 0.0], dtype=torch.float64)
    ref_w, ref_l = T([0.0, 2.0], dtype=torch.float64), T([0.0, 0.0], dtype=torch.float64)
    losses, _ = dpo_loss(w, lose, ref_w, ref_l, beta=1.0, loss_type="aot")
    expected = sorted(-math.log(1 / (1 + math.exp(-d))) for d in (-1.0, 1.0))
    assert sorted(losses.tolist()) == pytest.approx(expected)
    unsorted, _ = dpo_loss(w, lose, ref_w, ref_l, beta=1.0, loss_type="sigmoid")  # rows: d = [3, -3]
    assert unsorted.sum().item() != pytest.approx(losses.sum().item())


def test_aot_gradient_is_finite_and_flows_to_every_pair():
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    losses, _ = dpo_loss(w, torch.zeros(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64),
                         torch.zeros(6, dtype=torch.float64), loss_type="aot")  # fmt: skip
    losses.mean().backward()
    assert torch.isfinite(w.grad).all() and (w.grad != 0).all()


def test_the_config_checks_combinations():
    base = dict(output_dir="x", use_cpu=True)
    with pytest.raises(ValueError, match="one weight per loss_type"):
        DPOConfig(**base, loss_type=["sigmoid", "sft"], loss_weights=[1.0])
    with pytest.raises(ValueError, match="exo_pair needs label_smoothing > 0"):
        DPOConfig(**base, loss_type="exo_pair")
    with pytest.raises(ValueError, match="f_divergence_type='forward_kl' works with"):
        DPOConfig(**base, loss_type="bco_pair", f_divergence_type="forward_kl")
    with pytest.raises(ValueError, match="loss_type must be one of"):
        DPOConfig(**base, loss_type=["sigmoid", "kto"])
    config = DPOConfig(**base, loss_type=["aot", "sft"], loss_weights=[1.0, 0.5])
    assert config.loss_types == ("aot", "sft") and config.whole_batch_loss
    assert DPOConfig(**base, loss_type=["ipo"]).loss_type == "ipo"  # TRL's one-element list
    assert not DPOConfig(**base).whole_batch_loss
