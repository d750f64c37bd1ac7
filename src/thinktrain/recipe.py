"""How a recipe becomes arguments: YAML + CLI overrides -> TRL/transformers dataclasses -> a validated Recipe.

A recipe is a flat YAML mapping. `task:` picks the trainer; every other key is a field of a dataclass in
thinktrain.configs (which extends TRL's ScriptArguments, SFTConfig/GRPOConfig and ModelConfig). TrlParser does
the parsing (`--config`, the `env:` block, CLI overrides); this module adds only what it lacks: typed YAML values
(PyYAML reads `1e-5` as a string), a key written twice refused, one-line errors with the closest key or the new
name of a renamed one, and checks that must fail before any model loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from trl import TrlParser

from .configs import dataclass_types, evaluating
from .errors import DATA_SUFFIXES, TASKS, RecipeError, one_line, suggest
from .hardware import cpu_bf16_speedup, has_bf16_accelerator

# Numbers that must be > 0 (>= 0 for NON_NEGATIVE) when set: TRL/transformers accept 0 or -1 and fail after the
# model loads (an empty batch, a division by zero) or, for a negative learning rate, train the wrong way.
POSITIVE = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
            "num_train_epochs", "max_length", "max_completion_length", "max_prompt_length", "max_train_samples",
            "max_eval_samples", "temperature")
NON_NEGATIVE = ("learning_rate",)


@dataclass
class Recipe:
    """A parsed recipe: the task's three dataclasses, the keys the user set, and what parse decided for them."""

    task: str
    script_args: object  # configs.RecipeArguments (or its GRPO / pretrain subclass)
    training_args: object  # SFTConfig, GRPOConfig or configs.PretrainConfig
    model_args: object  # trl.ModelConfig
    keys: list[str] = field(default_factory=list)  # set in the YAML or on the command line, in that order
    bf16_fallback: str | None = None  # why a CPU bf16 recipe trains in fp32 here (the run header says it)

    def resolved(self) -> dict:
        """The keys the user set, with the values that were actually used (what recipe.yaml records)."""
        out = {}
        for key in dict.fromkeys(self.keys):
            for obj in (self.script_args, self.training_args, self.model_args):
                if any(f.name == key for f in dataclasses.fields(obj)):
                    value = getattr(obj, key)
                    out[key] = getattr(value, "value", value)  # enums -> their string
                    break
        return {"task": self.task, **out}


class Parser(TrlParser):
    """TrlParser whose mistakes are one-line RecipeErrors, and whose config values get the CLI's types. Also the
    argument parser of the other commands (eval, pipeline, report, merge)."""

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
        raise RecipeError(one_line(e)) from None
    if rest:
        raise RecipeError(f"unexpected argument(s) {' '.join(rest)}: overrides look like --key value")
    return tuple(args)


def _check_keys(config: dict, overrides: list[str], parser: Parser, task: str):
    actions = {a.dest for a in parser._actions if a.dest != "help"}
    for key in config:
        if str(key) not in actions:
            raise RecipeError(f"unknown recipe key '{key}' for task '{task}'{suggest(str(key), sorted(actions))}")
    options = {s.lstrip("-") for a in parser._actions for s in a.option_strings}
    for tok in overrides:
        name = tok[2:].split("=", 1)[0] if tok.startswith("--") else None
        if tok.startswith("--") and not name:
            raise RecipeError(f"unknown option '{tok}'; options look like --key value")
        if name is not None and name not in options:
            raise RecipeError(f"unknown option '{name}' for task '{task}'{suggest(name, sorted(options))}")
        if name is None and tok.startswith("-") and not re.fullmatch(r"-[\d.]+(e-?\d+)?", tok):
            raise RecipeError(f"unknown option '{tok}'; options look like --key value")


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
    validate(recipe, check_model)
    return recipe


def validate(recipe: Recipe, check_model: bool = True):
    """Checks TRL would only make after loading the model (or never): fail now, in one line."""
    script_args, training_args, model_args = recipe.script_args, recipe.training_args, recipe.model_args
    if not model_args.model_name_or_path:
        raise RecipeError("model_name_or_path is missing: set it in the recipe or pass --model_name_or_path")
    if not script_args.dataset_name:
        raise RecipeError("dataset_name is missing: a hub id, a local .jsonl/.json/.parquet/.csv file or folder, "
                          "or synthetic:gsm8k")
    for key in POSITIVE + NON_NEGATIVE:
        value = next((getattr(a, key) for a in (script_args, training_args) if hasattr(a, key)), None)
        if value is not None and (value < 0 or (value == 0 and key in POSITIVE)):
            sign = "positive" if key in POSITIVE else "non-negative"
            raise RecipeError(f"{key}: expected a {sign} number, got {value!r}; fix it, or remove the key for the "
                              f"default")
    script_args.learning_rate_groups = check_learning_rate_groups(script_args.learning_rate_groups)
    if (script_args.learning_rate_groups and training_args.learning_rate == 0
            and not any(script_args.learning_rate_groups.values())):
        raise RecipeError("learning_rate_groups: every parameter has learning rate 0, so nothing would train; "
                          "give learning_rate or a group a positive rate")
    if recipe.task == "grpo":
        from .rewards import check_reward_name

        if not script_args.reward_funcs:
            raise RecipeError("reward_funcs is empty: name at least one reward, e.g. [accuracy, format]")
        for name in script_args.reward_funcs:
            check_reward_name(name)
        weights = training_args.reward_weights
        if weights is not None and len(weights) != len(script_args.reward_funcs):
            raise RecipeError(
                f"reward_weights has {len(weights)} values but reward_funcs has {len(script_args.reward_funcs)} "
                f"({', '.join(script_args.reward_funcs)}): give one weight per reward"
            )
    for key, on, package, extra in (
        ("use_vllm", getattr(training_args, "use_vllm", False), "vllm", "vllm"),
        ("load_in_4bit", model_args.load_in_4bit, "bitsandbytes", "qlora"),
        ("load_in_8bit", model_args.load_in_8bit, "bitsandbytes", "qlora"),
    ):
        if on and importlib.util.find_spec(package) is None:
            raise RecipeError(f"{key}: true needs {package}, which is not installed; pip install "
                              f"'thinktrain[{extra}]' or pass --{key} false")
    if model_args.load_in_4bit and evaluating(training_args) and (training_args.use_cpu or not has_bf16_accelerator()):
        # measured: after an eval-mode forward, CPU 4-bit training crashes (Qwen2) or computes wrong gradients
        # without an error (Llama); 8-bit is unaffected
        raise RecipeError("load_in_4bit on CPU: bitsandbytes 4-bit training breaks after an evaluation (eval-mode "
                          "forward); set eval_strategy: no, or use load_in_8bit on CPU")
    check_source("dataset_name", script_args.dataset_name, repo_type="dataset")
    if training_args.push_to_hub:  # seconds now, not a failed push after hours of training
        from .hub import preflight

        training_args.hub_model_id = preflight(training_args)  # namespace/name, as the checks resolved it
    if check_model:
        check_source("model_name_or_path", model_args.model_name_or_path, repo_type="model")


def check_learning_rate_groups(groups) -> dict[str, float] | None:
    """`learning_rate_groups` as {regex: lr}, from the recipe's mapping or a CLI JSON string."""
    key = "learning_rate_groups"
    if groups is None or groups == {}:
        return None
    if isinstance(groups, str):
        try:
            groups = json.loads(groups)
        except ValueError:
            raise RecipeError(f"{key}: expected a JSON mapping like '{{\"model\\\\.norm\\\\.weight$\": 0.01}}', "
                              f"got {groups!r}") from None
    if not isinstance(groups, dict):
        raise RecipeError(f"{key}: expected a mapping of parameter-name regex: learning rate, got {groups!r}")
    out = {}
    for pattern, lr in groups.items():
        try:
            re.compile(str(pattern))
        except re.error as e:
            raise RecipeError(f"{key}: '{pattern}' is not a valid regex ({e})") from None
        try:
            rate = None if isinstance(lr, bool) else float(lr)  # YAML reads 1e-2 as a string, like any lr
        except (TypeError, ValueError):
            rate = None
        if rate is None:
            raise RecipeError(f"{key}: the learning rate for '{pattern}' must be a number, got {lr!r}")
        if not rate >= 0:
            raise RecipeError(f"{key}: the learning rate for '{pattern}' must be non-negative, got {lr!r}")
        out[str(pattern)] = rate
    return out


def check_source(key: str, value: str, repo_type: str):
    """A local path must exist; a hub id must be reachable (or cached) — say so now, not after 48 s of retries."""
    if value.startswith(("synthetic:", "scratch:")):
        return
    p = Path(value)
    if p.exists():
        return
    looks_local = value.startswith((".", "/", "~")) or p.suffix in DATA_SUFFIXES or value.count("/") > 1
    if looks_local or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", value):
        raise RecipeError(f"{key}: no such file or folder: {value}")
    if _hub_cached(value, repo_type):
        return
    from huggingface_hub import is_offline_mode

    offline = is_offline_mode()
    if offline or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else "huggingface.co cannot be reached"
        raise RecipeError(f"{key}: '{value}' is a Hugging Face Hub id, but {why} and it is not in the local cache; "
                          f"pass a local path (--{key.lstrip('-')} PATH) or go online")


def _hub_cached(repo_id: str, repo_type: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    filename = "config.json" if repo_type == "model" else "README.md"
    return isinstance(try_to_load_from_cache(repo_id, filename, repo_type=repo_type), str)


def _hub_reachable() -> bool:
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HF_ENDPOINT")):
        return True  # behind a proxy or mirror a direct probe proves nothing; let the real request decide
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False
