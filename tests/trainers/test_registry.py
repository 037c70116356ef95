"""A method is one module: a toy method defined in this file alone registers itself and then trains
through the registry (recipe, CLI list, exports, model card), with no other file touched."""

from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F

import alignment
from alignment.cli import main
from alignment.configs import PreferenceConfig
from alignment.run import train
from alignment.trainers import PreferenceTrainer, get_method, methods, register
from alignment.trainers.registry import unregister
from tests.conftest import ROOT


# ----- the whole toy method: a loss, a config, a trainer, one registration ----------------------------------
def length_normalized_sigmoid(chosen, rejected, chosen_tokens, rejected_tokens, beta):
    """-log sigmoid(beta * (logp_w / n_w - logp_l / n_l)): reference-free, per-token averages."""
    margin = beta * (chosen / chosen_tokens.clamp(min=1) - rejected / rejected_tokens.clamp(min=1))
    return -F.logsigmoid(margin), {"rewards/margins": margin.detach()}


@dataclass
class LNSigmoidConfig(PreferenceConfig):
    ln_beta: float = field(default=2.0, metadata={"help": "Scale of the per-token log-probability margin."})


class LNSigmoidTrainer(PreferenceTrainer):
    def pair_losses(self, chunk, anchors, token_scale):
        assert anchors == {}  # declared reference-free: no anchor is built or evaluated
        return length_normalized_sigmoid(
            chunk.chosen_logps, chunk.rejected_logps, chunk.chosen_tokens, chunk.rejected_tokens, self.args.ln_beta
        )


@pytest.fixture
def toy():
    register(
        "ln_sigmoid", config=LNSigmoidConfig, loss=length_normalized_sigmoid, paper="a length-normalized sigmoid",
        arxiv="0000.00000", recipe="quickstart/dpo.yaml", summary="test method",
    )(LNSigmoidTrainer)  # fmt: skip
    yield get_method("ln_sigmoid")
    unregister("ln_sigmoid")


def test_a_toy_method_trains_one_step_through_the_registry(toy, tmp_path, capsys):
    assert toy.trainer is LNSigmoidTrainer and LNSigmoidTrainer.method is toy and not toy.needs_reference
    assert alignment.LNSigmoidTrainer is LNSigmoidTrainer and alignment.LNSigmoidConfig is LNSigmoidConfig
    assert "LNSigmoidTrainer" in alignment.__all__
    assert main(["methods"]) == 0
    assert "ln_sigmoid" in capsys.readouterr().out
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(
        "method: ln_sigmoid\n"
        f"model_name_or_path: {ROOT / 'data' / 'sft_model'}\n"
        f"dataset_mixture: [{ROOT / 'data' / 'tasks' / 'arithmetic' / 'pref_train_conversational.jsonl'}:0.01]\n"
        "ln_beta: 3.0\nmax_steps: 1\nper_device_train_batch_size: 4\nlearning_rate: 1.0e-3\nlogging_steps: 1\n"
        f"use_cpu: true\nbf16: false\nreport: false\ndiagnostics_probe_pairs: 2\noutput_dir: {tmp_path / 'out'}\n"
    )
    summary = train(str(recipe), command="alignment train toy.yaml")
    assert summary["method"] == "ln_sigmoid" and summary["active"]["reference"] == "none"
    assert summary["active"]["method"] == "ln_sigmoid (a length-normalized sigmoid, arXiv 0000.00000)"
    assert summary["log_history"][0]["loss"] > 0 and "rewards/margins" in summary["log_history"][0]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "**LN_SIGMOID**" in card and "arXiv 0000.00000" in card
    assert "| ln_beta | 3.0 | Scale of the per-token log-probability margin. |" in card
    assert "| beta |" not in card and "| eta |" not in card


def test_registration_errors(toy):
    with pytest.raises(ValueError, match="already registered"):
        register("ln_sigmoid", config=LNSigmoidConfig, paper="x")(type("Other", (PreferenceTrainer,), {}))
    with pytest.raises(TypeError, match="subclass of AlignmentConfig"):
        register("bad", config=dict, paper="x")
    with pytest.raises(ValueError, match="method name"):
        register("no spaces", config=LNSigmoidConfig, paper="x")
    with pytest.raises(TypeError, match="not a registered method"):
        type("Unregistered", (PreferenceTrainer,), {})("unused")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        get_method("nope")


def test_built_in_methods_declare_their_anchors():
    known = methods()
    assert known["dpo"].anchors == ("ref",) and known["rpo"].anchors == ("ref",) and known["sft"].anchors == ()
    for name in ("sft", "dpo", "rpo"):
        method = known[name]
        assert method.trainer.method is method and (ROOT / "recipes" / method.recipe).exists()


def test_the_worked_example_in_docs_adding_a_method_runs(tokenizer, data_dir, tmp_path):
    """The two code blocks of docs/adding-a-method.md (the loss file, the method module) run as written."""
    import copy
    import re

    from tests.helpers import preference_rows, tiny_llama, train_args

    text = (ROOT / "docs" / "adding-a-method.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    loss_module, method_module = blocks[0], blocks[1]
    namespace: dict = {}
    exec(compile(loss_module, "slic_ln_loss.py", "exec"), namespace)
    body = method_module.replace("from alignment.losses.slic_ln import slic_ln_loss\n", "")
    exec(compile(body, "slic_ln.py", "exec"), namespace)
    try:
        method = get_method("slic_ln")
        loss, _ = method.loss(*(torch.tensor([x]) for x in (-4.0, -9.0, 2.0, 3.0)))
        assert loss.item() == 0.0  # the docstring's worked example
        model = tiny_llama(len(tokenizer))
        before = copy.deepcopy(model.state_dict())
        trainer = method.trainer(
            model, args=train_args(method.config, tmp_path, max_steps=1), train_dataset=preference_rows(data_dir),
            processing_class=tokenizer,
        )  # fmt: skip
        trainer.train()
        assert trainer.anchors == {} and trainer.state.log_history[0]["loss"] >= 0
        assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    finally:
        unregister("slic_ln")
