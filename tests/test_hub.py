"""push_to_hub against a local HTTP server speaking the Hub API, then from_pretrained from it."""

import json
import os
import subprocess
import sys

from alignment.hub import model_card
from tests.conftest import DATA, ROOT
from tests.hub_server import HubServer


def test_push_to_hub_and_load_back():
    server = HubServer().start()
    try:
        env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
               "HF_HOME": str(ROOT / ".pytest_hf_home"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # fmt: skip
        done = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "hub_push_script.py"), str(DATA)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["max_diff"] == 0.0
        files = server.repos["alice/tiny-dpo"]
        assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= set(files)
        card = files["README.md"].decode()
        assert "**DPO**" in card and "arXiv 2305.18290" in card
        assert "| beta | 0.1 | KL strength beta. |" in card and "rewards/accuracies" in card
        assert "| loss_type | sigmoid |" in card and "| precompute_ref_logps | False |" in card
        assert "ref_cache_dir" not in card and "| eta |" not in card  # DPO has no eta
        assert "data/tasks/rps/pref_train_conversational.jsonl" in card and "python tests/hub_push_script.py" in card
        assert ("POST", "/api/repos/create") in server.requests
    finally:
        server.stop()


def test_model_card_sections():
    card = model_card(
        {
            "method": "rpo",
            "paper": "Provably Mitigating Overoptimization in RLHF (Liu et al. 2024)",
            "arxiv": "2405.16436",
            "base_model": "org/base",
            "datasets": ["org/prefs"],
            "hyperparameters": {"eta": 0.005},
            "metrics": {"loss": 0.5},
            "command": "alignment train recipes/zephyr-7b/rpo.yaml",
        }
    )
    assert card.startswith("---\nlibrary_name: transformers")
    assert "base_model: org/base" in card and "- org/prefs" in card
    assert "(arXiv 2405.16436)" in card or "arXiv 2405.16436" in card
    assert "| eta | 0.005 |" in card and "| loss | 0.5 |" in card
    assert "alignment train recipes/zephyr-7b/rpo.yaml" in card


def test_card_hyperparameters_are_the_configs_own_fields(tmp_path):
    """Each method's card lists the fields its config adds (with their help), never another method's."""
    from alignment.hub import card_hyperparameters
    from alignment.trainers import get_method

    common = dict(output_dir=str(tmp_path), use_cpu=True)
    rpo_values, rpo_help = card_hyperparameters(get_method("rpo").config(eta=0.25, **common))
    assert rpo_values["eta"] == 0.25 and rpo_values["beta"] == 0.1 and "SFT term" in rpo_help["eta"]
    keys = list(rpo_values)
    assert keys[0] == "precompute_ref_logps" and keys.index("beta") < keys.index("loss_type") < keys.index("eta")
    assert keys.index("eta") < keys.index("learning_rate")  # own fields first, then the TrainingArguments ones
    assert rpo_values["learning_rate"] == 1e-06 and "learning_rate" not in rpo_help
    dpo_values, _ = card_hyperparameters(get_method("dpo").config(**common))
    assert "eta" not in dpo_values and "sft_normalization" not in dpo_values
    sft_values, sft_help = card_hyperparameters(get_method("sft").config(**common))
    assert "beta" not in sft_values and set(sft_help) == {"completion_only_loss"}


def _info(**extra):
    return {"method": "dpo", "paper": "Direct Preference Optimization (Rafailov et al. 2023)", "arxiv": "2305.18290",
            "base_model": "org/base", "datasets": ["org/prefs"], "hyperparameters": {"beta": 0.1},
            "metrics": {"loss": 0.5}, "command": "alignment train r.yaml", **extra}  # fmt: skip


def test_card_escapes_raw_html_from_data_and_configs():
    card = model_card(_info(
        datasets=["<img src=x onerror=alert(1)>"], model_name="<script>alert(1)</script>",
        hyperparameters={"system_prompt": "<iframe src=//evil>|x"}, hyperparameter_help={"system_prompt": "<b>hi</b>"},
        command="echo ```; <script>x</script>", eval={"greedy": {"<i>m</i>": 0.5}},
    ))  # fmt: skip
    body = card.split("## Reproduce")[0]
    assert "<script" not in body and "<iframe" not in body and "<b>" not in body and "<i>" not in body
    assert "&lt;script>alert(1)&lt;/script>" in body and "&lt;iframe src=//evil>\\|x" in body
    assert "`<img src=x onerror=alert(1)>`" in body  # a code span shows it literally
    assert 'datasets:\n- "<img src=x onerror=alert(1)>"' in card  # quoted YAML in the front matter
    reproduce = card.split("## Reproduce")[1]
    assert "\n````bash\necho ```; <script>x</script>\n````\n" in reproduce  # the fence outlasts the command's


def test_card_links_the_projects_url_or_none():
    assert "Trained with [alignment](https://example.org/alignment) using **DPO**" in model_card(
        _info(url="https://example.org/alignment")
    )
    card = model_card(_info(url=None))
    assert "Trained with alignment using **DPO**" in card and "https://github.com/)" not in card


def test_project_url_reads_the_package_metadata(monkeypatch):
    from importlib import metadata

    from alignment import hub

    class Meta:
        def __init__(self, urls):
            self.urls = urls

        def get_all(self, key):
            return self.urls if key == "Project-URL" else None

    monkeypatch.setattr(
        metadata, "metadata", lambda name: Meta(["Documentation, https://d.org", "Homepage, https://h.org"])
    )
    assert hub.project_url() == "https://h.org"
    monkeypatch.setattr(metadata, "metadata", lambda name: Meta([]))
    assert hub.project_url() is None
    assert "https://github.com/)" not in model_card(_info())  # the installed package declares no URL today


def test_card_puts_the_start_model_beside_the_trained_one():
    card = model_card(_info(eval={"greedy": {"accuracy": 0.806}}, eval_start={"greedy": {"accuracy": 0.598}}))
    assert (
        "| evaluation | metric | start model | this model |" in card and "| greedy | accuracy | 0.598 | 0.806 |" in card
    )
