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
        assert "| beta | 0.1 |" in card and "rewards/accuracies" in card
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
