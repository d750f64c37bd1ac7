"""How a recipe becomes arguments: YAML + CLI overrides -> TRL/transformers dataclasses -> a validated Recipe.

A recipe is a flat YAML mapping. `task:` picks the trainer; every other key is a field of a dataclass in
thinktrain.configs (which extends TRL's ScriptArguments, SFTConfig/GRPOConfig and ModelConfig). TrlParser does
the parsing (`--config`, the `env:` block, CLI overrides); this module adds only what it lacks: typed YAML values
(PyYAML reads `1e-5` as a string), a key written twice refused, one-line errors with the closest key or the new
name of a renamed one (porting.py's tables), secrets kept out of every file. The value checks that must fail before
any model loads: checks.py; the Recipe object itself: configs.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
from pathlib import Path

import yaml
from trl import TrlParser

from .checks import validate
from .configs import Recipe, dataclass_types
from .errors import TASKS, RecipeError, is_secret, one_line, suggest
from .hardware import cpu_bf16_speedup, has_bf16_accelerator
from .porting import REMOVED, RENAMED


class Parser(TrlParser):
    """TrlParser whose mistakes are one-line RecipeErrors, and whose config values get the CLI's types. (The other
    commands parse with arguments.py.)"""

    def error(self, message):  # argparse would print usage and exit 2; we want one line through RecipeError
        raise RecipeError(message)

    def set_defaults_with_config(self, **config) -> list[str]:
        actions = {a.dest: a for a in self._actions if a.dest != "help"}
        values = {k: _coerce(actions[k], k, v) if k in actions else v for k, v in config.items()}
        if "bf16" in actions and "bf16" not in values and not has_bf16_accelerator():
            values["bf16"] = False  # TRL defaults to bf16, which fails on a CPU-only box; unset means "where it works"
        return super().set_defaults_with_config(**values)


# --------------------------------------------------------------------------- reading the YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice (PyYAML silently keeps the last one: a recipe with two
    learning_rate lines would train with whichever came last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise RecipeError(f"line {key_node.start_mark.line + 1}: key '{key}' is set twice (first on line "
                                  f"{seen[key]}); keep one")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe file not found: {path} (pass a YAML file, e.g. recipes/tiny/sft.yaml)")
    try:
        config = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)  # safe: never constructs Python objects
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
    except yaml.constructor.ConstructorError as e:
        raise RecipeError(f"{path}: YAML tag not allowed ({e.problem}); recipes hold plain values only") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(f"{path}:{where} YAML syntax error: {getattr(e, 'problem', e)}") from None
    if config is None:
        raise RecipeError(f"{path} is empty: a recipe needs at least `task:` and `model_name_or_path:`")
    if not isinstance(config, dict):
        raise RecipeError(f"{path} must be a YAML mapping of key: value, not a {type(config).__name__}")
    return config


# --------------------------------------------------------------------------- types


def _coerce(action: argparse.Action, key: str, value):
    """Convert a YAML value with the same type function argparse uses for the CLI, so both agree."""
    if isinstance(value, dict) and (action.type in (int, float) or "bool" in getattr(action.type, "__name__", "")):
        raise RecipeError(f"recipe key '{key}': expected a single value, got a mapping")  # only dict fields take one
    if value is None or action.type is None or isinstance(value, dict):
        return value
    if action.nargs in ("+", "*"):
        return [_coerce_one(action, key, v) for v in (value if isinstance(value, list) else [value])]
    if isinstance(value, list):
        if action.type is str:  # `str | list[str]` fields such as report_to take a list as it is
            return value
        raise RecipeError(f"recipe key '{key}': expected a single value, got a list")
    return _coerce_one(action, key, value)


def _coerce_one(action, key, value):
    type_name = getattr(action.type, "__name__", "value")
    if isinstance(value, bool) and action.type in (int, float):
        raise RecipeError(f"recipe key '{key}': expected {type_name}, got {value!r}")
    if isinstance(value, float) and action.type is int and not value.is_integer():
        raise RecipeError(f"recipe key '{key}': expected int, got {value!r}")
    try:
        out = action.type(str(int(value)) if isinstance(value, float) and action.type is int else str(value))
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        expected = "true/false" if "bool" in type_name else type_name
        raise RecipeError(f"recipe key '{key}': expected {expected}, got {value!r}") from None
    if action.choices is not None and out not in action.choices:
        choices = ", ".join(str(getattr(c, "value", c)) for c in action.choices)
        raise RecipeError(f"recipe key '{key}': {value!r} is not one of: {choices}")
    return out


# --------------------------------------------------------------------------- parse + validate


def _parse(parser: Parser, argv: list[str]) -> tuple:
    try:
        *args, rest = parser.parse_args_and_config(argv, return_remaining_strings=True)
    except RecipeError:
        raise
    except (ValueError, TypeError) as e:  # a dataclass __post_init__ rejected a combination of values
        if "support bf16" in str(e):
            raise RecipeError("bf16: true needs a GPU here; pass --bf16 false (or --use_cpu true for CPU bf16 "
                              "autocast)") from None
        raise RecipeError(_name_the_key(one_line(e), parser)) from None
    if rest:
        raise RecipeError(f"unexpected argument(s) {' '.join(rest)}: overrides look like --key value")
    return tuple(args)


def _name_the_key(message: str, parser: Parser) -> str:
    """A library's refusal led by the recipe key it is about, when it does not say (TRL: "GRPO requires at least 2
    generations per prompt" is num_generations'): the key named verbatim, else the one whose words it uses
    (num_generations -> "generations"; not a short common word such as system_prompt's), if exactly one does."""
    keys = [a.dest for a in parser._actions if a.dest != "help"]
    named = [k for k in keys if re.search(rf"\b{k}\b", message)]
    if not named:
        words = {k: k.split("_", 1)[1].replace("_", " ") for k in keys if "_" in k}
        named = [k for k, w in words.items() if len(w) >= 8 and re.search(rf"\b{w}\b", message.lower())]
    return f"{named[0]}: {message}" if len(named) == 1 and not message.startswith(named[0]) else message


def _check_keys(config: dict, overrides: list[str], parser: Parser, task: str):
    """Every YAML key and every --option must be one of the task's recipe keys. All the keys to change are named in
    one error (a recipe ported from open-r1 or TRL 0.x would otherwise take one run per key): one line for a single
    key, else a summary line and then one key a line: each renamed key with its new name, each removed one with what
    to do instead, each unknown one with the closest valid key; a recipe without `task:` whose keys are another
    task's is told to name it. Then the given values the dataclasses would rewrite or choke on."""
    actions = {a.dest for a in parser._actions if a.dest != "help"}
    options = {s.lstrip("-") for a in parser._actions for s in a.option_strings}
    given = {str(key): "recipe key" for key in config}
    for tok in overrides:
        name = tok[2:].split("=", 1)[0] if tok.startswith("--") else None
        if tok.startswith("--") and not name:
            raise RecipeError(f"unknown option '{tok}'; options look like --key value")
        if name is not None:
            given.setdefault(name, "option")
        if name is None and tok.startswith("-") and not re.fullmatch(r"-[\d.]+(e-?\d+)?", tok):
            raise RecipeError(f"unknown option '{tok}'; options look like --key value")
    wrong = {key: where for key, where in given.items() if key not in (actions if where == "recipe key" else options)}
    rows = {}
    if wrong and "task" not in given:  # read as sft; open-r1's GRPO recipes have no task: key
        misses = {t: [key for key in given if key not in _fields(t)] for t in TASKS if t != task}
        other = min(misses, key=lambda t: len(misses[t]))
        if len(misses[other]) < len(wrong):
            mine = [key for key in given if key in _fields(other) and key in wrong]
            rows["task"] = ("missing", f"add task: {other} (without it the recipe is read as {task}, and "
                                       f"{', '.join(mine[:3])}{', ...' if len(mine) > 3 else ''} are {other}'s keys)")
            task, actions, wrong = other, _fields(other), {key: given[key] for key in misses[other]}
    if not rows and len(wrong) == 1:
        (key, where), = wrong.items()
        _, tail, _ = _key_advice(key, actions if where == "recipe key" else options, task)
        raise RecipeError(f"unknown {where} '{key}' for task '{task}'{tail}")
    if rows and not wrong:
        raise RecipeError(f"task is not set: {rows['task'][1]}")
    if wrong:
        rows.update({key: _key_advice(key, actions, task)[::2] for key in wrong})
        kinds = [kind for kind, _ in rows.values()]
        counts = ", ".join(f"{kinds.count(k)} {k}" for k in ("missing", "renamed", "removed", "unknown") if k in kinds)
        lines = [f"  {'--' if given.get(key) == 'option' else ''}{key}: {kind}, {row}"
                 for key, (kind, row) in rows.items()]
        raise RecipeError("\n".join([f"{len(rows)} recipe keys need changing for task '{task}' ({counts}):", *lines]))
    _check_given(config, overrides)


def _fields(task: str) -> set[str]:
    return {f.name for c in dataclass_types(task) for f in dataclasses.fields(c)}


def _key_advice(key: str, known, task: str) -> tuple[str, str, str]:
    """For a key the task does not have: 'renamed' | 'removed' | 'unknown', the tail of its one-line message, and
    its row in a list of several."""
    new = RENAMED.get(key)
    if new and re.match(r"\w+", new).group() in known:
        return "renamed", f"; it was renamed: use {new}", f"use {new}"
    if key in REMOVED:
        return "removed", f"; it was removed: {REMOVED[key]}", REMOVED[key]
    if new:  # renamed to a key this task does not have (max_seq_length in a GRPO recipe)
        return "removed", f"; it was renamed to {new}, which task '{task}' does not have", f"delete it (renamed to " \
            f"{new}, which task '{task}' does not have)"
    others = [t for t in TASKS if t != task and key in _fields(t)]
    if others:
        where = f"a key of task {' and '.join([', '.join(others[:-1]), others[-1]] if others[:-1] else others)}, " \
                f"not of {task}"
        return "unknown", f"; it is {where}", f"{where}; delete it"
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    if close:
        return "unknown", f" (did you mean '{close[0]}'?)", f"did you mean '{close[0]}'?"
    return "unknown", "; no recipe key is close (docs/recipes.md)", "no recipe key is close (docs/recipes.md)"


def _check_given(config: dict, overrides: list[str]):
    """Values as given (the command line's over the YAML's), for what TrainingArguments.__post_init__ would turn
    into something else or choke on: eval_steps 0 silently becomes logging_steps; accelerator_config / fsdp_config
    name JSON files it opens without a check (a FileNotFoundError traceback)."""
    given = dict(config)
    for i, tok in enumerate(overrides):
        name, eq, value = tok[2:].partition("=")
        if tok.startswith("--") and not eq and i + 1 < len(overrides) and not overrides[i + 1].startswith("--"):
            given[name] = overrides[i + 1]
        elif tok.startswith("--") and eq:
            given[name] = value
    try:
        zero = float(given.get("eval_steps", 1)) == 0
    except (TypeError, ValueError):
        zero = False  # not a number: the parser says so
    if zero:
        raise RecipeError("eval_steps: 0 would quietly mean 'every logging_steps'; give the steps between "
                          "evaluations (a float < 1 is a ratio of the total), or set eval_strategy: no")
    for key in ("accelerator_config", "fsdp_config"):
        value = given.get(key)
        if isinstance(value, str) and value.strip() and not value.lstrip().startswith("{") \
                and not Path(value).expanduser().is_file():
            raise RecipeError(f"{key}: no such file: {value}; give a JSON file, or a mapping in the recipe")


def parse(argv: list[str] | None = None, check_model: bool = True) -> Recipe:
    """`RECIPE.yaml [--key value ...]` (or `--config RECIPE.yaml ...`) -> a validated Recipe. Raises RecipeError.
    check_model=False skips checking that model_name_or_path exists (a pipeline's stage not yet trained)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--config", *argv]
    path, overrides = None, argv
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise RecipeError("--config needs a recipe file")
        path, overrides = argv[i + 1], argv[:i] + argv[i + 2:]
    config = load_yaml(path) if path else {}
    env = config.pop("env", None) or {}
    if not isinstance(env, dict):
        raise RecipeError(f"recipe key 'env': expected a mapping of VARIABLE: value, got a {type(env).__name__}")

    task = config.get("task", "sft")
    for i, tok in enumerate(overrides):
        if tok == "--task" and i + 1 < len(overrides):
            task = overrides[i + 1]
        elif tok.startswith("--task="):
            task = tok.split("=", 1)[1]
    if task not in TASKS:
        raise RecipeError(f"unknown task '{task}'{suggest(str(task), TASKS)}; choose one of: {', '.join(TASKS)}")
    parser = Parser(dataclass_types(task))
    _check_keys(config, overrides, parser, task)
    if path is None:
        parser.set_defaults_with_config()  # TrlParser applies (our) defaults only with a --config file

    keys = list(config) + [t[2:].split("=")[0] for t in overrides if t.startswith("--")]
    recipe = Recipe(task, *_parse(parser, argv), keys=keys)
    if recipe.training_args.bf16 and recipe.training_args.use_cpu and (speedup := cpu_bf16_speedup()) < 0.5:
        # bf16 autocast on a CPU without bf16 hardware: every matmul ~100x slower, an hour where fp32 takes a minute.
        # The run header says so (not a warning here: a bad recipe must still fail with its one-line error).
        import torch

        recipe = Recipe(task, *_parse(parser, [*argv, "--bf16", "false"]), keys=keys, bf16_fallback=(
            f"bf16 asked for, but this CPU has no native bf16 ({torch.backends.cpu.get_cpu_capability()}): its bf16 "
            f"matmuls run {1 / speedup:.0f}x slower than fp32"))
    if (recipe.model_args.dtype == "bfloat16" and not has_bf16_accelerator()
            and (speedup := cpu_bf16_speedup()) < 0.5):
        # the same for bf16 *weights* (GPU recipes set dtype: bfloat16): a quick look at a GPU recipe on such a CPU
        # would crawl; the weights load in float32 and the header says so
        import torch

        recipe.model_args.dtype = "float32"
        recipe.bf16_fallback = recipe.bf16_fallback or (
            f"dtype bfloat16 asked for, but this CPU has no native bf16 ({torch.backends.cpu.get_cpu_capability()}): "
            f"weights loaded in float32, its bf16 matmuls run {1 / speedup:.0f}x slower")
    keep_secrets_out(recipe, env)
    validate(recipe, check_model)
    return recipe


def keep_secrets_out(recipe: Recipe, env: dict):
    """Move a hub_token given in the YAML or on the command line into the process environment as HF_TOKEN, and
    record only the names of the secrets given. Why: the Trainer pickles its TrainingArguments whole into
    training_args.bin in output_dir and in every checkpoint, and both are pushed (checkpoints to their branches,
    the final folder to main); huggingface_hub reads HF_TOKEN at every call (utils/_auth.get_token), so with
    hub_token None every Hub call (preflight, Trainer.init_hf_repo/push_to_hub, PushRevisions) still
    authenticates with it, and no file can hold it. `env:` secrets are set by TrlParser and never written."""
    args = recipe.training_args
    recipe.secrets = [key for key in dict.fromkeys(recipe.keys) if is_secret(key)]
    recipe.secrets += [f"env {key}" for key in env if is_secret(str(key))]
    token = getattr(args, "hub_token", None)
    if token:
        os.environ["HF_TOKEN"] = token  # the command line wins over the environment, as for every key
        # trackers (wandb, ...) record the command line: keep the value out of this process's sys.argv too
        sys.argv[:] = ["***" if a == token else a[:-len(token)] + "***" if a.endswith(f"={token}") else a
                       for a in sys.argv]
        args.hub_token = None


