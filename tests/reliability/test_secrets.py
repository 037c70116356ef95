"""Secrets stay secret: a run with --hub_token on the command line (and a key in the recipe's env:) pushed to a
local server speaking the Hub API; neither value is in any uploaded file, any local file of the run, or its
logs; the reference cache files are not uploaded."""

import json
import os
import pickle
import subprocess
import sys

import yaml

from alignment.secrets import MASK, is_secret_name, redact, redact_argv, redact_text, without_secrets
from tests.conftest import ROOT
from tests.hub_server import HubServer

TOKEN = "hf_SeCrEtToKeN0123456789abcdef"
ENV_KEY = "wandb-key-0123456789-secret"
NESTED = "nested-credential-0123456789"  # not token-shaped: found only by its key, inside a mapping


def test_names_and_shapes():
    assert all(map(is_secret_name, ["hub_token", "HF_TOKEN", "WANDB_API_KEY", "db_password", "--hub-token", "secret"]))
    assert not any(map(is_secret_name, ["pad_token", "max_new_tokens", "include_num_input_tokens_seen", "keys"]))
    assert redact_argv(["r.yaml", "--hub_token", "x", "--beta", "0.1", "--api_key=y"]) == [
        "r.yaml", "--hub_token", MASK, "--beta", "0.1", f"--api_key={MASK}"]  # fmt: skip
    assert redact_text("run --hub_token=abc\nhub_token: abc HF_TOKEN=abc pad_token: <pad>") == (
        f"run --hub_token={MASK}\nhub_token: {MASK} HF_TOKEN={MASK} pad_token: <pad>"
    )
    assert redact({"a": [f"see {TOKEN}"], "hub_token": "x", "pad_token": "<pad>"}) == {
        "a": [f"see {MASK}"], "hub_token": MASK, "pad_token": "<pad>"}  # fmt: skip


def test_secrets_at_any_depth():
    """Mappings inside fields, lists inside them, JSON words on a command line, quoted entries inside text."""
    state = {"hub_token": "x", "model_init_kwargs": {"token": NESTED, "dtype": "bfloat16",
             "deep": [{"api_key": NESTED}, f"see {TOKEN}"]}, "n": 3}  # fmt: skip
    assert without_secrets(state) == {"hub_token": None, "model_init_kwargs": {"token": None, "dtype": "bfloat16",
                                      "deep": [{"api_key": None}, f"see {MASK}"]}, "n": 3}  # fmt: skip
    assert state["model_init_kwargs"]["token"] == NESTED  # the live object keeps it
    assert redact(state)["model_init_kwargs"]["deep"][0]["api_key"] == MASK
    words = redact_argv(["r.yaml", "--model_init_kwargs", json.dumps({"token": NESTED}), "--x", "{token: y}"])
    assert NESTED not in " ".join(words) and words[2] == json.dumps({"token": MASK}) and "y" not in words[4]
    text = redact_text(f'--model_init_kwargs {{"token": "{NESTED}", "pad_token": "<p>"}} {{\'secret\': \'z\'}}')
    assert NESTED not in text and "'secret': '<redacted>'" in text and '"pad_token": "<p>"' in text


def test_a_pushed_run_leaks_no_secret_anywhere(tmp_path):
    recipe = yaml.safe_load((ROOT / "recipes" / "quickstart" / "dpo.yaml").read_text())
    recipe["env"] = {"WANDB_API_KEY": ENV_KEY}
    recipe["dataset_mixture"] = [{"path": str(ROOT / p), "weight": 0.05} for p in recipe["dataset_mixture"]]
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    server = HubServer().start()
    try:
        env = {**os.environ, "HF_ENDPOINT": server.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
               "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # fmt: skip
        command = [sys.executable, "-m", "alignment.cli", "train", str(recipe_path), "--max_steps", "2",
                   "--per_device_train_batch_size", "4", "--eval_task", "null", "--eval_dataset", "null",
                   "--logging_steps", "1", "--save_steps", "1", "--push_to_hub", "true", "--hub_model_id",
                   "alice/secret-run", "--hub_token", TOKEN, "--hub_strategy", "checkpoint",
                   "--model_init_kwargs", json.dumps({"token": NESTED}), "--output_dir", str(out)]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        uploaded = server.repos["alice/secret-run"]
    finally:
        server.stop()
    assert {"README.md", "alignment_run.json", "report.html", "training_args.bin", "model.safetensors"} <= set(uploaded)
    assert any(p.startswith("last-checkpoint/") and p.endswith("training_args.bin") for p in uploaded), sorted(uploaded)
    assert not [p for p in uploaded if "logps_cache" in p or "-ref-" in p]  # the reference cache stays home
    assert list((out / "_ref_logps_cache").glob("*.pt"))  # ... where it was written
    local = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert "README.md" in local and "alignment_run.json" in local and "report.html" in local
    for name, data in [*uploaded.items(), *local.items(), ("stdout", done.stdout.encode()),
                       ("stderr", done.stderr.encode())]:  # fmt: skip
        for secret in (TOKEN, ENV_KEY, NESTED):
            assert secret.encode() not in data, f"{secret} in {name}"
    for name in [n for n in local if n.endswith(("training_args.bin", ".pt", ".pkl"))]:  # the pickles, opened
        loaded = _unpickled(out / name)
        assert all(secret not in repr(loaded) for secret in (TOKEN, ENV_KEY, NESTED)), name
    args = _unpickled(out / "training_args.bin")
    assert args.model_init_kwargs == {"token": None} and args.hub_token is None
    assert "--hub_token <redacted>" in uploaded["README.md"].decode()  # the command is still there, masked


def _unpickled(path):
    import torch

    try:
        return torch.load(path, weights_only=False)
    except (RuntimeError, pickle.UnpicklingError):  # a plain pickle, not torch's zip
        with open(path, "rb") as handle:
            return pickle.load(handle)
