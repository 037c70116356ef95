"""SparsePO's loss: the worked numbers of its docstring, the DPO and TDPO-v1 identities (TDPO-v1 from full
logits by a plain reference), gradients through the masks, and the masks themselves."""

import pytest
import torch
import torch.nn.functional as F

from alignment.learners.token_mask import TokenMaskNetwork, activation_mask, fixed_mask, mask_layers
from alignment.losses import dpo_loss
from alignment.losses.sparsepo import sparsepo_loss
from alignment.ops import pair_fused_loss
from tests.helpers import FRESH_SEED, make_pairs, rel_err

T = torch.tensor


def worked(**kw):
    # chosen tokens then the rejected token of one pair
    logp, ref = T([0.5, -0.1, -0.3]), T([0.0, 0.0, 0.0])
    kl, m_u, m_d = T([0.2, 0.1, 0.4]), T([1.0, 0.0, 1.0]), T([0.0, 2.0, 0.5])
    pair, chosen = T([0, 0, 0]), T([True, True, False])
    return sparsepo_loss(logp, ref, kl, m_u, m_d, pair, chosen, 1, beta=1.0, **kw)


def test_worked_numbers():
    losses, metrics = worked(lambda_reward=0.0, lambda_kl=0.0)
    assert losses.item() == pytest.approx(0.371101, abs=1e-6)
    assert worked(lambda_reward=0.1, lambda_kl=0.1)[0].item() == pytest.approx(0.821101, abs=1e-6)
    # common mask on both terms: the lambdas are halved (the authors' code counts the mask twice)
    halved = worked(lambda_reward=0.1, lambda_kl=0.1, common_mask=True)[0].item()
    assert halved == pytest.approx(0.371101 + 0.05 * 2 + 0.05 * 2.5, abs=1e-6)
    # rewards are beta*(u - d) per side: chosen 0.5 - 0.2, rejected -0.3 - 0.2
    assert metrics["rewards/chosen"].item() == pytest.approx(0.3)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.5)
    assert metrics["sparsepo/mask_sparsity_reward"].item() == pytest.approx(1 / 3)
    assert metrics["sparsepo/mask_sparsity_kl"].item() == pytest.approx(1 / 3)
    assert metrics["sparsepo/kl_chosen"].item() == pytest.approx(0.3)
    assert metrics["sparsepo/kl_chosen_masked"].item() == pytest.approx(0.2)
    # switches: masks off means 1 (and no L1 term, no mask metrics)
    off, off_metrics = worked(mask_on_reward=False, mask_on_kl=False, lambda_reward=0.1, lambda_kl=0.1)
    u, d = (0.5 - 0.1) - (-0.3), 0.4 - 0.3
    assert off.item() == pytest.approx(-F.logsigmoid(T(u - d)).item(), abs=1e-6)
    assert "sparsepo/mask_mean_reward" not in off_metrics


def random_tokens(seed, k=4, n=30):
    gen = torch.Generator().manual_seed(seed)
    pair = torch.randint(0, k, (n,), generator=gen)
    pair[:k] = torch.arange(k)  # every pair has a chosen and a rejected token
    pair[k : 2 * k] = torch.arange(k)
    chosen = torch.rand(n, generator=gen) < 0.5
    chosen[:k], chosen[k : 2 * k] = True, False
    logp, ref = (
        -torch.rand(n, generator=gen, dtype=torch.float64) * 3,
        -torch.rand(n, generator=gen, dtype=torch.float64) * 3,
    )
    kl = torch.rand(n, generator=gen, dtype=torch.float64)
    return logp, ref, kl, pair, chosen, k


@pytest.mark.parametrize("seed", [0, FRESH_SEED])
def test_all_masks_one_and_no_kl_term_is_dpo(seed):
    logp, ref, kl, pair, chosen, k = random_tokens(seed)
    ones = torch.ones_like(logp)
    losses, metrics = sparsepo_loss(logp, ref, kl, ones, ones, pair, chosen, k, beta=0.3, kl_coef=0.0,
                                    lambda_reward=0.0, lambda_kl=0.0)  # fmt: skip

    def sums(x):
        return torch.zeros(k, dtype=x.dtype).index_add(0, pair[chosen], x[chosen]), torch.zeros(
            k, dtype=x.dtype
        ).index_add(0, pair[~chosen], x[~chosen])

    (lw, ll), (rw, rl) = sums(logp), sums(ref)
    dpo, dpo_metrics = dpo_loss(lw, ll, rw, rl, beta=0.3)
    assert torch.allclose(losses, dpo, atol=1e-12)
    assert torch.allclose(metrics["rewards/chosen"], dpo_metrics["rewards/chosen"], atol=1e-12)


def tdpo_v1_from_full_logits(hidden, weight, ref_hidden, targets, beta):
    """TDPO-v1 (Zeng et al. 2024, eq. 18) written plainly: full logits, log_softmax, per-token KL."""
    logp_all = torch.log_softmax(hidden.double() @ weight.double().t(), -1)
    ref_all = torch.log_softmax(ref_hidden.double() @ weight.double().t(), -1)
    mask = targets != -100
    safe = targets.clamp(min=0).unsqueeze(-1)
    ratio = (logp_all.gather(-1, safe) - ref_all.gather(-1, safe)).squeeze(-1) * mask
    kl = (ref_all.exp() * (ref_all - logp_all)).sum(-1) * mask
    b = hidden.shape[0] // 2
    u = ratio[:b].sum(-1) - ratio[b:].sum(-1)
    delta = kl[b:].sum(-1) - kl[:b].sum(-1)
    return -F.logsigmoid(beta * (u - delta)).mean()


@pytest.mark.parametrize("seed", [0, 1, FRESH_SEED])
def test_all_masks_one_is_tdpo_v1_through_the_fused_op(seed):
    hidden, weight, _, targets, _ = make_pairs(seed, 3, 8, 8, 29, torch.float64)
    targets[:, -1] = 1
    ref_hidden = hidden + 0.3 * torch.randn_like(hidden)
    ref_logps = torch.log_softmax(ref_hidden @ weight.t(), -1).gather(-1, targets.clamp(min=0).unsqueeze(-1))
    ref_logps = ref_logps.squeeze(-1) * (targets != -100)
    ones = torch.ones(targets.shape, dtype=torch.float64)

    def loss_fn(chunk):
        losses, _ = sparsepo_loss(
            chunk.token_logps, chunk.token_inputs["ref"], chunk.token_kl, chunk.token_inputs["m"],
            chunk.token_inputs["m"], chunk.token_pair, chunk.token_chosen, chunk.pair_index.numel(), beta=0.7,
            lambda_reward=0.0, lambda_kl=0.0,
        )  # fmt: skip
        return losses.sum() / 3, {}

    h = hidden.clone().requires_grad_()
    out = pair_fused_loss(
        h, weight, targets, loss_fn, ref_hidden=ref_hidden, token_inputs={"ref": ref_logps, "m": ones}, token_chunk=7
    )
    h2 = hidden.clone().requires_grad_()
    plain = tdpo_v1_from_full_logits(h2, weight, ref_hidden, targets, 0.7)
    assert out.loss.item() == pytest.approx(plain.item(), rel=1e-9)
    (g,) = torch.autograd.grad(out.loss, h)
    (g2,) = torch.autograd.grad(plain, h2)
    assert rel_err(g, g2) <= 1e-8


def test_masks_get_gradients_and_gradcheck():
    logp, ref, kl, pair, chosen, k = random_tokens(3)
    m_u = torch.rand_like(logp).requires_grad_()
    m_d = torch.rand_like(logp).requires_grad_()

    def fn(a, b, lp):
        return sparsepo_loss(lp, ref, kl, a, b, pair, chosen, k, lambda_reward=0.01, lambda_kl=0.02)[0].sum()

    assert torch.autograd.gradcheck(fn, (m_u, m_d, logp.clone().requires_grad_()))


# ----- masks ---------------------------------------------------------------------------------------------
def test_activation_mask_is_never_nan_and_in_unit_range():
    gen = torch.Generator().manual_seed(0)
    layers = [torch.randn(4, 6, 8, generator=gen) for _ in range(3)]
    layers[1][2] = 5.0  # a constant sequence in one layer
    valid = torch.ones(4, 6, dtype=torch.bool)
    valid[0, 1:] = False  # one valid token
    valid[3] = False  # none
    mask = activation_mask(layers, valid)
    assert torch.isfinite(mask).all() and (mask >= 0).all() and (mask <= 1).all()
    assert mask[0, 0] == 1.0 and (mask[0, 1:] == 0).all() and (mask[3] == 0).all()
    assert mask[1].max() > 0.5 and mask[1].min() < 0.5  # spread on a normal sequence
    constant = activation_mask([torch.full((1, 5, 8), 2.0, dtype=torch.float16)], torch.ones(1, 5, dtype=torch.bool))
    assert torch.equal(constant, torch.ones(1, 5))  # float16 constants: 1, not NaN (the original's bug)


def test_learned_mask_network_shapes_sharing_and_save_load(tmp_path):
    torch.manual_seed(0)
    layers = [torch.randn(2, 5, 16) for _ in range(3)]
    net = TokenMaskNetwork(3, 16, "common", dropout=0.0)
    reward, kl = net(layers)
    assert reward.shape == (2, 5) and reward is kl and (reward >= 0).all() and reward.mean() > 0.5
    indep = TokenMaskNetwork(3, 16, "independent", dropout=0.0)
    a, b = indep(layers)
    assert a is not b and not torch.equal(a, b)
    with torch.no_grad():
        indep.reward.layer_bias.fill_(-100.0)
    assert (indep(layers)[0] == 0).all()  # exact zeros: the ReLU is the sparsity mechanism
    indep.save(tmp_path)
    again = TokenMaskNetwork.load(tmp_path)
    assert again.config == indep.config and torch.equal(again(layers)[1], indep(layers)[1])
    with pytest.raises(FileNotFoundError, match=r"token_mask\.safetensors"):
        TokenMaskNetwork.load(tmp_path / "none")
    with pytest.raises(ValueError, match="mask_sharing"):
        TokenMaskNetwork(3, 16, "shared")


def test_fixed_masks():
    valid = torch.tensor([[True, False, True]])
    assert torch.equal(fixed_mask("constant", valid), T([[1.0, 0.0, 1.0]]))
    noise = fixed_mask("random", valid, torch.Generator().manual_seed(0))
    assert noise[0, 1] == 0 and 0 <= noise[0, 0] < 1
    with pytest.raises(ValueError):
        fixed_mask("learned", valid)


def test_mask_inputs_choose_the_predicting_or_the_token_position():
    positions = torch.arange(5.0).reshape(1, 5, 1).expand(2, 5, 3)  # each state holds its position
    states = [positions * 0, positions]  # the embeddings, then one layer
    prefix, token = mask_layers(states, "prefix")[0], mask_layers(states, "token")[0]
    assert len(mask_layers(states, "token", embeddings=True)) == 2
    assert prefix.shape == token.shape == (2, 4, 3)
    # scored position t (token t+1): "prefix" reads the state at t, "token" the state at t+1
    assert torch.equal(prefix[0, :, 0], T([0.0, 1, 2, 3])) and torch.equal(token[0, :, 0], T([1.0, 2, 3, 4]))
    with pytest.raises(ValueError, match="mask_inputs"):
        mask_layers(states, "next")
