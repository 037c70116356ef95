"""The command line's view of the methods (alignment.method_index, read from the source without importing the
trainers) equals the registry that training uses; --help, methods and methods NAME never import torch."""

import dataclasses
import subprocess
import sys
import typing

import pytest

from alignment.method_index import builtin_methods, config_fields, first_sentence, method_help, recipes_using
from alignment.trainers import methods
from tests.conftest import ROOT


def test_the_index_equals_the_registry():
    index, registry = builtin_methods(), methods()
    assert set(index) == set(registry)
    for name, info in index.items():
        method = registry[name]
        assert (info.paper, info.arxiv, info.anchors, info.recipe, info.summary, info.config) == (
            method.paper, method.arxiv, method.anchors, method.recipe, method.summary, method.config.__name__
        ), name  # fmt: skip


@pytest.mark.parametrize("name", sorted(methods()))
def test_the_fields_are_the_configs_own(name):
    """Every field the package's config classes declare (TrainingArguments' are summarized in one line), with
    the runtime default where the source gives a literal."""
    config = methods()[name].config
    declared = {}
    for cls in config.__mro__:
        if cls.__module__.startswith("alignment") and dataclasses.is_dataclass(cls):
            hints = typing.get_type_hints(cls, include_extras=False)
            own = getattr(cls, "__annotations__", {})
            declared.update({k: cls for k in own if typing.get_origin(hints.get(k)) is not typing.ClassVar})
    fields = config_fields(name)
    assert {f.name for f in fields} == set(declared)
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    factories = {f.name: f.default_factory for f in dataclasses.fields(config)}
    for f in fields:
        assert "lambda" not in f.default and not f.default.endswith("()"), (f.name, f.default)  # a value, not code
        if defaults[f.name] is dataclasses.MISSING:  # a default_factory: the value it makes, or "auto"
            if f.default != "auto":
                assert eval(f.default, {}) == factories[f.name](), f.name
            continue
        try:
            literal = eval(f.default, {}) if f.default else dataclasses.MISSING
        except Exception:
            continue
        assert literal == defaults[f.name], f.name


def test_method_help_and_recipes():
    text = method_help("dpo")
    assert "Direct Preference Optimization" in text and "--beta (float = 0.1)" in text
    assert "quickstart/iterative_dpo.yaml" in text and "ScriptArguments:" in text and "ModelArguments:" in text
    assert "quickstart/regret.yaml" in recipes_using("regret") and "quickstart/inpo_arithmetic.yaml" in recipes_using(
        "inpo"
    )


def test_first_sentence_keeps_abbreviations():
    text = "LD-DPO (Liu et al. 2024, arXiv 2409.06411): weight of the tokens, e.g. the tail. Second sentence."
    assert first_sentence(text) == "LD-DPO (Liu et al. 2024, arXiv 2409.06411): weight of the tokens, e.g. the tail."
    ellipsis = "names (default ' A', ' B', ... else ' a')."
    assert first_sentence(ellipsis + " More.") == ellipsis


def test_help_fills_in_the_constants_an_f_string_names():
    by_name = {f.name: f for f in config_fields("dpo")}
    assert "['reverse_kl', 'forward_kl', 'js_divergence', 'alpha_divergence']" in by_name["f_divergence_type"].help
    regret = {f.name: f for f in config_fields("regret")}
    assert regret["families"].default == "['uniform', 'gaussian', 'drift', 'adversarial']"
    assert by_name["bf16"].default == "auto"  # decided at start-up from the device


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["methods"], ["methods", "kto"], ["dpo", "--help"], ["eval", "--help"], ["train", "--help"],
     ["train", "recipes/quickstart/dpo.yaml", "--help"], ["train", "--method", "kto", "--help"], ["plan", "--help"],
     ["regret-eval", "--help"]],
)  # fmt: skip
def test_help_and_methods_do_not_import_torch(argv):
    code = (
        f"import sys\nfrom alignment.cli import main\ntry:\n    code = main({argv!r})\nexcept SystemExit as e:\n"
        "    code = e.code\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] in ("NO-TORCH 0", "NO-TORCH None"), done.stdout[-500:] + done.stderr
    assert len(done.stdout) > 200  # something was explained


def test_train_help_shows_the_method_of_the_recipe_or_of_method(capsys):
    from alignment.cli import main

    assert main(["train", "recipes/quickstart/kto.yaml", "--help"]) == 0
    assert capsys.readouterr().out.startswith("kto: KTO on unpaired")
    with pytest.raises(SystemExit):
        main(["train", "--method", "orpo", "--help"])
    assert "orpo: ORPO" in capsys.readouterr().out


def test_an_unknown_method_is_one_line(capsys):
    from alignment.cli import main

    assert main(["methods", "dpoo"]) == 2
    assert "no method 'dpoo': the methods are cpo, dpo" in capsys.readouterr().err


def test_help_into_a_closed_pipe_stops_quietly():
    """`alignment dpo --help | head -2`: the reader closes the pipe early; no traceback, the shell's 141."""
    code = "import sys\nfrom alignment.cli import main\nsys.exit(main(['dpo', '--help']))"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the help is printed: every write meets a closed pipe
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and b"Traceback" not in err, err.decode()[-800:]
