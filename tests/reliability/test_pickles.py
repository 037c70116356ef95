"""No pickles from user paths: every torch.load passes weights_only=True, so an environment entry (a recipe's
``env: {TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD: 1}``) cannot turn a cache file into code execution."""

import ast
import os

import torch

from alignment.trainers.anchors import _cached
from tests.conftest import ROOT


def test_every_torch_load_passes_weights_only_true():
    calls = []
    for path in (ROOT / "alignment").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            func = getattr(node, "func", None)
            if (
                isinstance(node, ast.Call)
                and getattr(func, "attr", None) == "load"
                and getattr(func.value, "id", None) == "torch"
            ):
                ok = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", ok))
    assert calls, "no torch.load found: the test looks at the wrong place"
    assert [where for where, ok in calls if not ok] == []


class _Payload:
    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_a_pickled_cache_file_runs_no_code_even_when_the_env_asks(tmp_path, monkeypatch):
    marker = tmp_path / "code-ran"
    payload = _Payload()
    payload.target = str(marker)
    cache = tmp_path / "train-ref-0123.pt"
    torch.save({"chosen": payload, "rejected": torch.zeros(1)}, cache)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    assert _cached(cache, 1, tokens=False) is False  # unreadable: recomputed, never unpickled
    assert not marker.exists()
