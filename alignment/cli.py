"""The ``alignment`` command line.

    alignment train RECIPE.yaml [--field value ...]   train (directly, or under `accelerate launch`)
    alignment methods                                   the registered methods, papers and recipes
    alignment eval MODEL --task NAME [--n 500]          task metrics, greedy and sampled
    alignment data build [--out data]         regenerate the shipped datasets and tokenizer
    alignment data check [--data data]        rebuild in a temporary folder and compare byte for byte
    alignment data validate PATH [...]        load, validate and tokenize a preference dataset; print reports
    alignment data pairs MODEL --task T --out F  on-policy pairs ranked by the task's oracle
    alignment judges fit-bt MODEL --task T --out DIR   a Bradley-Terry reward model fitted to the task's oracle
    alignment report RUN_DIR [RUN_DIR ...] [-o report.html]   HTML page + Markdown summary of runs
    alignment plan RECIPE.yaml [--max_length auto --device_memory 80GB] [--devices 8] [--json F]   memory, simulated
    alignment token-entanglement MODEL DATA --row N [-o tokens.png]   per-token gradient cosines
    alignment masks RUN_DIR DATA --row N [-o masks.json]   SparsePO's per-token masks of one pair (+ PNG)

A user mistake (a bad file, row or option) prints one line ``error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from alignment import __version__
from alignment.tasks import TASKS

TASK_NAMES = sorted(TASKS)


def _int_at_least(minimum: int, what: str):
    """An argparse type: a whole number >= ``minimum`` (argparse prints one line for anything else)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what} >= {minimum}, got {text!r}")
        return value

    return parse


positive_int = _int_at_least(1, "a whole number")
pair_samples = _int_at_least(2, "a number of samples per prompt (a pair compares two)")
row_number = _int_at_least(0, "a row number")


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser (and its subcommands') with a bad option as one line, ``error: PROG: ...``, status 2
    (argparse prints the usage block first)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}\n")


def _pattern(text: str) -> str:
    """An argparse type: a valid regular expression."""
    import re

    try:
        re.compile(text)
    except re.error as e:
        raise argparse.ArgumentTypeError(f"not a valid regular expression ({e}): {text!r}") from None
    return text


def _data_build(args) -> int:
    from alignment.tasks.export import build

    for path in build(args.out):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


def _data_check(args) -> int:
    from alignment.tasks.export import check

    differ = check(args.data)
    if differ:
        print(f"{len(differ)} files differ from a fresh build: {', '.join(differ)}")
        return 1
    print(f"{args.data}: every shipped file equals a fresh build")
    return 0


def _data_pairs(args) -> int:
    from alignment.loops.onpolicy import write_pairs

    n = write_pairs(args.model, args.task, args.n, args.samples, args.out, args.seed)
    print(f"wrote {n} on-policy pairs to {args.out}")
    return 0


def _fit_bt(args) -> int:
    from alignment.judges import TaskJudge
    from alignment.judges.bradley_terry import BTFitConfig, fit_bradley_terry

    config = BTFitConfig(
        prompts=args.prompts, samples_per_prompt=args.samples, epochs=args.epochs, learning_rate=args.learning_rate,
        batch_size=args.batch_size, seed=args.seed, use_cpu=args.use_cpu,
    )  # fmt: skip
    fit_bradley_terry(args.model, args.task, TaskJudge(args.task), args.out, config, base_path=args.base)
    print(f"wrote the reward model to {args.out}; use it as judge: reward_model:{args.out}")
    print((Path(args.out) / "fit.json").read_text())
    return 0


def _data_validate(args) -> int:
    from alignment.data import load_preference_dataset, tokenize_preference_dataset

    dataset, report = load_preference_dataset(args.path, args.split, args.config, args.drop_invalid)
    print(report)
    if args.tokenizer:
        from alignment.models import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
        _, tok_report = tokenize_preference_dataset(dataset, tokenizer, args.max_length, args.truncation_mode)
        print(tok_report)
    return 0


def _train(args) -> int:
    method = getattr(args, "method_command", None)
    if "-h" in args.overrides or "--help" in args.overrides:  # after the recipe: argparse left it to the overrides
        from alignment.method_index import method_help

        named = method or _method_of([args.recipe or "", *args.overrides])
        print(method_help(named) if named else "the recipe names no method: add --method NAME")
        return 0
    from alignment.recipes import RecipeError, parse_overrides
    from alignment.run import train
    from alignment.secrets import redact_argv

    if getattr(args, "method", None):  # alignment train --method dpo RECIPE: as the override --method dpo
        args.overrides = ["--method", args.method, *args.overrides]
    if method is not None and args.recipe is None:
        raise RecipeError(f"alignment {method}: give the recipe with --config RECIPE.yaml")
    words = " ".join(redact_argv([args.recipe, *args.overrides]))  # the command that reproduces the run, no secret
    # TRL's shape: alignment dpo --config RECIPE [--field value ...]
    command = f"alignment train {words}" if method is None else f"alignment {method} --config {words}"
    summary = train(args.recipe, parse_overrides(args.overrides), command, method)
    if "eval" in summary:
        print(json.dumps({"eval": summary["eval"]}, indent=1))
    return 0


def _methods(args) -> int:
    from alignment.method_index import builtin_methods, method_help, methods_table, plugin_methods

    if args.name is None:
        print(methods_table())
        return 0
    if args.name not in builtin_methods() and args.name not in plugin_methods():
        from alignment.errors import RecipeError

        known = sorted({*builtin_methods(), *plugin_methods()})
        raise RecipeError(f"no method {args.name!r}: the methods are {', '.join(known)}")
    print(method_help(args.name))
    return 0


def _eval(args) -> int:
    from alignment.run import eval_command

    modes = ("greedy", "sampled") if args.mode == "both" else (args.mode,)
    results = eval_command(args.model, args.task, args.n, modes, args.output)
    print(json.dumps(results, indent=1))
    return 0


def _report(args) -> int:
    from alignment.diagnostics.report import write_report

    page, markdown = write_report(args.run_dirs, args.output)
    print(f"wrote {page} and {markdown}")
    return 0


def _plan(args) -> int:
    from alignment.planning.plan import describe, plan_recipe
    from alignment.recipes import parse_overrides

    overrides = parse_overrides(args.overrides)  # the plan's own options may come after the recipe too
    from alignment.errors import RecipeError

    empty = [k for k in _PLAN_OPTIONS if k in overrides and overrides[k] in (None, "")]
    if empty:  # `--device ""` after the recipe: given, but no value
        raise RecipeError(f"--{empty[0]} needs a value")
    options = {k: overrides.pop(k) if k in overrides else getattr(args, k) for k in _PLAN_OPTIONS}
    options = {k: _plan_option(k, v) for k, v in options.items()}
    length = overrides.pop("max_length", args.max_length)
    length = None if length is None else _plan_option("max_length", length)
    batch = options["batch"]
    if batch is None and "per_device_train_batch_size" in overrides:
        batch = _plan_option("batch", overrides.pop("per_device_train_batch_size"))
    card = options["device"] if options["device"] is not None else options["device_memory"]
    plan = plan_recipe(args.recipe, overrides, options["devices"], card, None if length is None else str(length),
                       None if batch is None else str(batch), options["trainer"], options["skew"], options["target"],
                       options["prompt_tokens"], options["completion_tokens"], options["host_memory"],
                       options["devices_per_node"])  # fmt: skip
    print("\n".join(describe(plan)))
    if options["json"]:
        from alignment.io import atomic_write_text

        atomic_write_text(options["json"], json.dumps(plan.to_json(), indent=1))
        print(f"wrote {options['json']}")
    return 0


def _length_option(text) -> int | str:
    if str(text).strip().lower() == "auto":
        return "auto"
    return _int_at_least(1, "a number of tokens or auto")(str(text))


def _batch_option(text) -> int | str:
    if str(text).strip().lower() == "auto":
        return "auto"
    return _int_at_least(1, "a number of pairs or auto")(str(text))


def _completions_option(text) -> tuple[int, int]:
    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    parse = _int_at_least(1, "a number of tokens")
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected CHOSEN,REJECTED tokens (e.g. 1500,900), got {text!r}")
    return parse(parts[0]), parse(parts[1])


def _memory_option(name: str):
    def parse(text):
        from alignment.planning.plan import parse_memory

        return parse_memory(str(text), name)

    return parse


def _device_option(text):
    from alignment.planning.devices import device

    return device(str(text))


def _flag_option(text) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _choice_option(*choices):
    def parse(text):
        if str(text) not in choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)}, got {text!r}")
        return str(text)

    return parse


#: alignment plan's own options: how a value given after the recipe (which argparse does not see) is read
_PLAN_OPTIONS = {
    "devices": positive_int,
    "devices_per_node": positive_int,
    "device": _device_option,
    "device_memory": _memory_option("--device_memory"),
    "host_memory": _memory_option("--host_memory"),
    "batch": _batch_option,
    "json": str,
    "trainer": _choice_option("alignment", "trl"),
    "skew": _flag_option,
    "target": _choice_option("cpu", "cuda"),
    "prompt_tokens": _int_at_least(0, "a number of tokens"),
    "completion_tokens": _completions_option,
}


def _plan_option(name: str, value):
    """``value`` of plan option ``name`` (from argparse or after the recipe) read with its type; None stays None; a
    bad value is a one-line RecipeError naming the option."""
    from alignment.errors import RecipeError

    reader = _length_option if name == "max_length" else _PLAN_OPTIONS[name]
    if value is None:
        return None
    try:
        return reader(str(value))
    except argparse.ArgumentTypeError as e:
        raise RecipeError(f"--{name}: {e}") from None


def _regret_eval(args) -> int:
    from alignment.regret_eval import regret_eval, table

    result = regret_eval(args.model, args.family, args.horizon, args.sequences, args.seed, args.out, args.rounds,
                         not args.no_games, not args.no_adaptive)  # fmt: skip
    print("\n".join(table(result)))
    out = args.out or args.model
    print(
        f"wrote {out}/regret_eval.json and {out}/regret_curves.png"
        + (" (+ regret_games.png)" if result.get("games") else "")
    )
    return 0


def _tokens(args) -> int:
    from alignment.diagnostics.tokens import token_command

    out = token_command(args.model, args.data, args.row, args.params, args.output, args.max_length)
    print(f"wrote {out['heatmap']} and {out['json']} ({out['shape'][0]} chosen x {out['shape'][1]} rejected tokens)")
    return 0


def _masks(args) -> int:
    from alignment.diagnostics.masks import masks_command

    out = masks_command(args.run_dir, args.data, args.row, args.output, args.reference, args.max_length)
    print(f"wrote {out['json']} and {out['png']} ({out['tokens'][0]} chosen, {out['tokens'][1]} rejected tokens)")
    return 0


class _MethodHelp(argparse.Action):
    """-h/--help of a training command: its usage, then the method's fields (type, default, the first sentence
    of their help) and the recipe's script and model arguments, read without importing the trainers
    (alignment.method_index). The method: the command's (``alignment dpo``), else ``--method NAME`` or the
    recipe's ``method:`` when the command line has them."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None, method=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)
        self.method = method

    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help()
        method = self.method or getattr(namespace, "method", None) or _method_of(sys.argv[1:])
        if method is not None:
            from alignment.method_index import method_help

            print("\n" + method_help(method))
        else:
            print("\nthe fields of a method: alignment train RECIPE.yaml --help, alignment train --method NAME --help, "
                  "or alignment NAME --help")  # fmt: skip
        parser.exit()


def _method_of(argv: list[str]) -> str | None:
    """The method a command line names: ``--method NAME`` or a recipe file's ``method:``."""
    from alignment.method_index import recipe_method

    for i, word in enumerate(argv):
        if word == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("--method="):
            return word.split("=", 1)[1]
    for word in argv:
        if word.endswith((".yaml", ".yml")) and recipe_method(word):
            return recipe_method(word)
    return None


def _method_commands(commands) -> None:
    """``alignment <method> --config RECIPE.yaml [--field value ...]`` for every method (TRL's CLI shape); the
    recipe's ``method:`` may then be left out. Listed from alignment.method_index (no trainer is imported)."""
    from alignment.method_index import builtin_methods, plugin_methods

    entries = {name: m.summary for name, m in builtin_methods().items()}
    entries.update({name: f"registered by {module}" for name, module in plugin_methods().items()})
    for name, summary in entries.items():
        sub = commands.add_parser(name, help=f"{summary} (train from a recipe: --config RECIPE.yaml)",
                                  add_help=False)  # fmt: skip
        sub.add_argument("-h", "--help", action=_MethodHelp, method=name, help="this help and the method's fields")
        sub.add_argument("--config", dest="recipe", help="the recipe file (YAML)")
        sub.add_argument("overrides", nargs=argparse.REMAINDER, help="--field value pairs overriding the recipe")
        sub.set_defaults(func=_train, method_command=name)


def _add_train(commands) -> None:
    """``alignment train``."""
    train = commands.add_parser("train", help="train from a YAML recipe", add_help=False)
    train.add_argument("-h", "--help", action=_MethodHelp, help="this help and the recipe's method's fields")
    train.add_argument("--method", default=None, help="the method, for a recipe that names none (e.g. dpo)")
    train.add_argument("recipe", help="a recipe file, e.g. recipes/quickstart/dpo.yaml")
    train.add_argument("overrides", nargs=argparse.REMAINDER, help="--field value pairs overriding the recipe")
    train.set_defaults(func=_train)


def _add_eval(commands) -> None:
    """``alignment eval``."""
    evaluate = commands.add_parser("eval", help="evaluate a model on a synthetic task")
    evaluate.add_argument("model", help="a model folder (or Hub name)")
    evaluate.add_argument("--task", required=True, choices=TASK_NAMES,
                          help="the synthetic task whose held-out prompts and oracle score the model: arithmetic "
                          "(exact-match accuracy, mean absolute error), sentiment (the oracle's sentiment score, "
                          "valid rate, words), rps (the move distribution, its TV distance to uniform and "
                          "exploitability); README, 'Synthetic tasks'")  # fmt: skip
    evaluate.add_argument("--n", type=positive_int, default=500, help="held-out prompts (default 500)")
    evaluate.add_argument("--mode", choices=("greedy", "sampled", "both"), default="both",
                          help="greedy decoding, sampling at temperature 1, or both (default); each reports the "
                          "task's metrics")  # fmt: skip
    evaluate.add_argument("--output", default=None, help="also write the metrics to this JSON file")
    evaluate.set_defaults(func=_eval)


def _add_data(commands) -> None:
    """``alignment data``."""
    data = commands.add_parser("data", help="shipped data and dataset checks").add_subparsers(
        dest="data_command", required=True
    )
    build = data.add_parser("build", help="regenerate data/ (task datasets and tokenizer)")
    build.add_argument("--out", default="data")
    build.set_defaults(func=_data_build)
    check = data.add_parser("check", help="check that data/ equals a fresh build, byte for byte")
    check.add_argument("--data", default="data")
    check.set_defaults(func=_data_check)
    validate = data.add_parser("validate", help="load, validate and (optionally) tokenize a preference dataset")
    validate.add_argument("path", help="a .jsonl/.json/.parquet/.csv file, a save_to_disk folder or a Hub name")
    validate.add_argument("--split", default="train")
    validate.add_argument("--config", default=None, help="Hub dataset config name")
    validate.add_argument("--drop-invalid", action="store_true", help="drop bad rows instead of failing")
    validate.add_argument("--tokenizer", default=None, help="tokenize with this tokenizer and report truncation")
    validate.add_argument("--max-length", type=positive_int, default=1024)
    validate.add_argument("--truncation-mode", choices=("keep_start", "keep_end"), default="keep_start")
    validate.set_defaults(func=_data_validate)
    pairs = data.add_parser("pairs", help="on-policy pairs: sample from a model, rank with the task's oracle")
    pairs.add_argument("model", help="a model folder")
    pairs.add_argument("--task", required=True, choices=TASK_NAMES)
    pairs.add_argument("--n", type=positive_int, default=3000, help="training prompts")
    pairs.add_argument("--samples", type=pair_samples, default=4, help="responses sampled per prompt (>= 2)")
    pairs.add_argument("--seed", type=int, default=0)
    pairs.add_argument("--out", required=True, help="output .jsonl (conversational format)")
    pairs.set_defaults(func=_data_pairs)


def _add_judges(commands) -> None:
    """``alignment judges``."""
    judges = commands.add_parser("judges", help="judges for self-play").add_subparsers(
        dest="judges_command", required=True
    )
    fit = judges.add_parser("fit-bt", help="fit a Bradley-Terry reward model to a task oracle's comparisons")
    fit.add_argument("model", help="the policy whose samples are compared (and, by default, the model's base)")
    fit.add_argument("--task", required=True, choices=TASK_NAMES, help="the task whose oracle labels the pairs")
    fit.add_argument("--out", required=True, help="output folder (a finished fit there is loaded, not refitted)")
    fit.add_argument("--base", default=None, help="initialize the reward model from this model (default MODEL)")
    fit.add_argument("--prompts", type=positive_int, default=2048, help="training prompts sampled (default 2048)")
    fit.add_argument(
        "--samples", type=pair_samples, default=4, help="responses per prompt, paired at random (default 4, >= 2)"
    )
    fit.add_argument("--epochs", type=float, default=6.0)
    fit.add_argument("--learning-rate", type=float, default=3e-4)
    fit.add_argument("--batch-size", type=positive_int, default=32)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--use-cpu", action="store_true", help="train on the CPU even when a GPU is there")
    fit.set_defaults(func=_fit_bt)


def _add_report(commands) -> None:
    """``alignment report``."""
    report = commands.add_parser("report", help="render runs into one HTML page (+ Markdown summary)")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="output_dir of a training run")
    report.add_argument(
        "-o", "--output", default=None, help="HTML file or folder (default: RUN_DIR/report.html, the first)"
    )
    report.set_defaults(func=_report)


def _add_plan(commands) -> None:
    """``alignment plan``."""
    plan = commands.add_parser("plan", help="simulate one training step on fake tensors: the memory per device")
    plan.add_argument("recipe", help="a recipe file")
    plan.add_argument("--devices", type=positive_int, default=1, help="devices: > 1 plans each rank's ZeRO-3 share")
    plan.add_argument("--device", type=str, default=None,
                      help="the card: h100-80gb, h100-94gb, h200, a100-40gb, a100-80gb, l40s, b200 (its usable "
                           "memory: what torch reports minus the CUDA context and an allocator reserve)")  # fmt: skip
    plan.add_argument("--device_memory", default=None, help="a raw memory budget per device instead, e.g. 80GB")
    plan.add_argument("--max_length", default=None, help="tokens per sequence, or auto (longest that fits)")
    plan.add_argument("--batch", default=None, help="pairs per device, or auto (largest that fits)")
    plan.add_argument("--prompt_tokens", default=None, help="the planned pair's prompt tokens")
    plan.add_argument("--completion_tokens", default=None,
                      help="the planned pair's CHOSEN,REJECTED completion tokens (e.g. 150000,60000)")  # fmt: skip
    plan.add_argument("--host_memory", default=None, help="host memory per node (default: this machine's), e.g. 2TB")
    plan.add_argument("--devices_per_node", default=None, help="devices sharing a node's host memory (default: "
                      "min(--devices, 8))")  # fmt: skip
    plan.add_argument("--json", default=None, help="also write the plan to this JSON file")
    plan.add_argument(
        "--trainer",
        choices=["alignment", "trl"],
        default="alignment",
        help="plan trl's DPOTrainer on the same model and batch instead (DPO recipes)",
    )
    plan.add_argument("--skew", action="store_true", help="length-skewed pairs: pair i has max_length / 2**i tokens")
    plan.add_argument(
        "--target",
        choices=["cpu", "cuda"],
        default=None,
        help="the device's code paths (default: cpu when the recipe sets use_cpu, else cuda)",
    )
    plan.add_argument("overrides", nargs=argparse.REMAINDER, help="--field value pairs overriding the recipe")
    plan.set_defaults(func=_plan)


def _add_regret_eval(commands) -> None:
    """``alignment regret-eval``."""
    from alignment.tasks.families import FAMILIES

    regret = commands.add_parser("regret-eval", help="a regret-loss learner against Hedge, FTL, ... on held-out losses")
    regret.add_argument("model", metavar="MODEL", help="output_dir of a regret-loss run (regret_learner.json)")
    regret.add_argument("--family", action="append", choices=FAMILIES, help="loss family (repeat; default: all)")
    regret.add_argument("--horizon", type=positive_int, default=None, help="rounds T (default: the training horizon)")
    regret.add_argument("--sequences", type=positive_int, default=256, help="held-out sequences per family")
    regret.add_argument("--seed", type=int, default=0, help="seed of the held-out and tuning sequences")
    regret.add_argument("--rounds", type=positive_int, default=100, help="rounds of the repeated games")
    regret.add_argument("--no-games", action="store_true", help="skip the repeated games")
    regret.add_argument("--no-adaptive", action="store_true", help="skip the adaptive adversary")
    regret.add_argument("--out", default=None, help="folder for regret_eval.json and the PNGs (default MODEL)")
    regret.set_defaults(func=_regret_eval)


def _add_token_entanglement(commands) -> None:
    """``alignment token-entanglement``."""
    tokens = commands.add_parser("token-entanglement", help="heatmap of per-token gradient cosines of one pair")
    tokens.add_argument("model", help="a model folder")
    tokens.add_argument("data", help="a preference dataset (file, folder or Hub name)")
    tokens.add_argument("--row", type=row_number, default=0, help="the pair's row (default 0)")
    tokens.add_argument("--params", type=_pattern, default=None,
                        help="regex on parameter names (default: all trainable)")  # fmt: skip
    tokens.add_argument("--max-length", type=positive_int, default=1024)
    tokens.add_argument("-o", "--output", default="token_entanglement.png", help="PNG file (a .json twin is written)")
    tokens.set_defaults(func=_tokens)


def _add_masks(commands) -> None:
    """``alignment masks``."""
    masks = commands.add_parser("masks", help="SparsePO's per-token masks of one pair (JSON and a PNG strip)")
    masks.add_argument("run_dir", help="the output_dir of a SparsePO run")
    masks.add_argument("data", help="a preference dataset (file, folder or Hub name)")
    masks.add_argument("--row", type=row_number, default=0, help="the pair's row, 0-based (default 0)")
    masks.add_argument("--reference", default=None, help="the reference model (default: the run's starting model)")
    masks.add_argument("--max-length", type=positive_int, default=1024)
    masks.add_argument("-o", "--output", default="masks.json", help="JSON file (a .png twin is written)")
    masks.set_defaults(func=_masks)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="alignment", description="Preference alignment for language models.")
    parser.add_argument("--version", action="version", version=f"alignment {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_train(commands)
    listing = commands.add_parser("methods", help="list the methods, or show one (its paper, fields and recipes)")
    listing.add_argument("name", nargs="?", default=None, metavar="NAME", help="a method: its paper, fields, recipes")
    listing.set_defaults(func=_methods)
    _method_commands(commands)
    _add_eval(commands)
    _add_data(commands)
    _add_judges(commands)
    _add_report(commands)
    _add_plan(commands)
    _add_regret_eval(commands)
    _add_token_entanglement(commands)
    _add_masks(commands)
    return parser


def _close_progress_bars() -> None:
    """Close the progress bars an interrupted run left open, so that the last line printed is ours."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", [])):
        bar.close()


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `alignment dpo --help | head`: the reader closed the pipe; stop quietly, as cat does
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141  # 128 + SIGPIPE, what a shell reports for a command its pipe closed


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "method_command", None) is None:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:  # alignment dpo --config RECIPE --beta 0.2: the overrides argparse did not take
        args.overrides = [*extra, *args.overrides]
    try:
        return args.func(args)
    except KeyboardInterrupt:  # a second Ctrl-C during training, or one outside it
        _close_progress_bars()
        print("interrupted (Ctrl-C): stopped at once; complete checkpoints are kept", file=sys.stderr)
        return 130
    except Exception as e:
        from alignment.errors import one_line

        line = one_line(e)  # a user's mistake: one line; an internal bug: its traceback
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
