"""How a recipe becomes arguments: YAML + CLI overrides -> TRL/transformers dataclasses, validated.

A recipe is a flat YAML mapping. `task:` picks the trainer; every other key is a field of a dataclass the
task's trainer already has (ScriptArguments, SFTConfig/GRPOConfig, ModelConfig) or of the few thinktrain adds
below. TrlParser does the parsing; this module only adds what it lacks: typed YAML values (PyYAML reads `1e-5`
as a string), one-line errors with the closest key, renamed-key hints, and checks that must fail before any
model loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import importlib.util
import json
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from trl import ModelConfig, ScriptArguments, TrlParser

from .rewards import RewardArguments

TASKS = ("pretrain", "sft", "grpo")
DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}

# Keys that TRL / transformers renamed or removed: old recipes (open-r1, TRL 0.x) get pointed at the new name.
RENAMED = {
    "torch_dtype": "dtype",
    "warmup_ratio": "warmup_steps (a float < 1 is a ratio of the total steps)",
    "max_seq_length": "max_length",
    "evaluation_strategy": "eval_strategy",
    "no_cuda": "use_cpu",
    "overwrite_output_dir": "nothing (output_dir is reused; checkpoints there are resumed, see auto_resume)",
    "logging_dir": "nothing (logs go to output_dir; set TENSORBOARD_LOGGING_DIR for tensorboard)",
    "group_by_length": "nothing (removed by transformers 5)",
    "max_completion_len": "max_completion_length",
}
# Numbers that must be > 0 (>= 0 for NON_NEGATIVE) when set: TRL/transformers accept 0 or -1 and fail after the
# model loads (an empty batch, a division by zero) or, for a negative learning rate, train the wrong way.
POSITIVE = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
            "num_train_epochs", "max_length", "max_completion_length", "max_prompt_length", "max_train_samples",
            "max_eval_samples", "temperature")
NON_NEGATIVE = ("learning_rate",)


class RecipeError(Exception):
    """A mistake in the recipe or command line: reported as one line, exit code 2, before anything loads."""


@dataclass
class RecipeArguments(ScriptArguments):
    """thinktrain's own keys, shared by every task (ScriptArguments brings dataset_name/config/splits)."""

    task: str = field(default="sft", metadata={"help": "Which trainer runs the recipe.", "choices": list(TASKS)})
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message prepended to every prompt (e.g. ask for <think>/<answer>)."}
    )
    prompt_column: str = field(
        default="question", metadata={"help": "Column holding the question when the data has no `prompt`."}
    )
    answer_column: str = field(
        default="answer",
        metadata={"help": "Column holding the gold answer; GSM8K-style '... #### N' gives the worked solution and N."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation rows."})
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "Drop training prompts longer than this many tokens (TRL 1.x removed the key; we honour it)."},
    )
    auto_resume: bool = field(
        default=True, metadata={"help": "Resume from the last checkpoint in output_dir when there is one."}
    )
    push_revisions: bool = field(
        default=True,
        metadata={"help": "With push_to_hub: upload each checkpoint to its own branch checkpoint-<step> in the "
                          "background (main gets the final model only)."},
    )
    license: str | None = field(
        default=None, metadata={"help": "License tag of the pushed model card (e.g. apache-2.0); default 'other'."}
    )
    learning_rate_groups: dict | str | None = field(
        default=None,
        metadata={"help": "{regex: lr}: parameters whose name matches the regex (re.search; first match wins) train "
                          "at that learning rate instead of learning_rate, on the same schedule; a rate of 0 "
                          "freezes them (with learning_rate 0: everything outside the groups). JSON on the CLI."},
    )


@dataclass
class GRPORecipeArguments(RecipeArguments, RewardArguments):
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy", "format"],
        metadata={"help": "Reward names (see thinktrain.rewards) or dotted paths 'my_pkg.my_mod:my_reward'."},
    )


def dataclass_types(task: str) -> tuple:
    """The dataclasses whose fields are a task's recipe keys."""
    from trl import GRPOConfig, SFTConfig

    if task == "grpo":
        return (GRPORecipeArguments, GRPOConfig, ModelConfig)
    if task == "sft":
        return (RecipeArguments, SFTConfig, ModelConfig)
    from .pretrain import PretrainArguments, PretrainConfig

    return (PretrainArguments, PretrainConfig, ModelConfig)


class _Parser(TrlParser):
    def error(self, message):  # argparse would print usage and exit; we want one line through RecipeError
        raise RecipeError(message)


class ArgParser(argparse.ArgumentParser):
    """argparse for the other commands (eval, pipeline, report, merge): errors as one line, exit code 2."""

    def error(self, message):
        raise RecipeError(message)


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


def split_argv(argv: list[str]) -> tuple[str | None, list[str]]:
    """`RECIPE.yaml --key v` or `--config RECIPE.yaml --key v` -> (recipe path, overrides)."""
    argv = list(argv)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise RecipeError("--config needs a recipe file")
        path = argv[i + 1]
        del argv[i : i + 2]
        return path, argv
    if argv and not argv[0].startswith("-"):
        return argv[0], argv[1:]
    return None, argv


# --------------------------------------------------------------------------- keys and types


def _suggest(key: str, known: list[str]) -> str:
    if key in RENAMED:
        return f"; it was renamed: use {RENAMED[key]}"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_key(key: str, actions: dict, task: str, where: str):
    if key in actions:
        return
    raise RecipeError(f"unknown {where} '{key}' for task '{task}'{_suggest(key, sorted(actions))}")


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


def _has_bf16_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


@functools.cache
def cpu_bf16_speedup(n: int = 256) -> float:
    """How many times faster an n x n matmul runs in bf16 than in fp32 on this CPU: > 1 with AVX512-BF16 or AMX,
    ~0.01 on CPUs without native bf16 (AVX2 only), where PyTorch emulates it."""
    import torch

    from .pretrain import measure_peak_tflops

    return (measure_peak_tflops(torch.bfloat16, "cpu", n=n, reps=3)
            / measure_peak_tflops(torch.float32, "cpu", n=n, reps=3))


def _first_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split("\n")[0].split())


# --------------------------------------------------------------------------- parse + validate


def _parse_dataclasses(parser, overrides: list[str]) -> list:
    try:
        *args, rest = parser.parse_args_into_dataclasses(args=overrides, return_remaining_strings=True)
    except RecipeError:
        raise
    except (ValueError, TypeError) as e:  # a dataclass __post_init__ rejected a combination of values
        if "support bf16" in str(e):
            raise RecipeError("bf16: true needs a GPU here; pass --bf16 false (or --use_cpu true for CPU bf16 "
                              "autocast)") from None
        raise RecipeError(_first_line(e)) from None
    if rest:
        raise RecipeError(f"unexpected argument(s) {' '.join(rest)}: overrides look like --key value")
    return args


def parse(argv: list[str] | None = None, check_model: bool = True):
    """Recipe + overrides -> (task, script_args, training_args, model_args). Raises RecipeError.
    check_model=False skips checking that model_name_or_path exists (a pipeline's stage not yet trained)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    path, overrides = split_argv(argv)
    config = load_yaml(path) if path else {}
    env = config.pop("env", None) or {}
    if not isinstance(env, dict):
        raise RecipeError(f"recipe key 'env': expected a mapping of VARIABLE: value, got a {type(env).__name__}")
    for key, value in env.items():  # TrlParser's `env:` block
        os.environ[key] = str(value)

    task = config.get("task", "sft")
    for i, tok in enumerate(overrides):
        if tok == "--task" and i + 1 < len(overrides):
            task = overrides[i + 1]
        elif tok.startswith("--task="):
            task = tok.split("=", 1)[1]
    if task not in TASKS:
        raise RecipeError(f"unknown task '{task}'{_suggest(str(task), list(TASKS))}; choose one of: {', '.join(TASKS)}")

    parser = _Parser(dataclass_types(task))
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    for key in config:
        _check_key(str(key), actions, task, "recipe key")
    options = {s.lstrip("-"): a for a in parser._actions for s in a.option_strings}
    for tok in overrides:
        if tok.startswith("--") and not tok[2:].split("=", 1)[0]:
            raise RecipeError(f"unknown option '{tok}'; options look like --key value")
        if tok.startswith("--"):
            _check_key(tok[2:].split("=", 1)[0], options, task, "option")
        elif tok.startswith("-") and not re.fullmatch(r"-[\d.]+(e-?\d+)?", tok):
            raise RecipeError(f"unknown option '{tok}'; options look like --key value")
    defaults = {k: _coerce(actions[k], k, v) for k, v in config.items()}
    if "bf16" not in defaults and not _has_bf16_accelerator():
        defaults["bf16"] = False  # TRL defaults to bf16, which fails on a CPU-only box; unset means "where it works"
    parser.set_defaults_with_config(**defaults)

    script_args, training_args, model_args = _parse_dataclasses(parser, overrides)
    fallback = None
    if training_args.bf16 and training_args.use_cpu and (speedup := cpu_bf16_speedup()) < 0.5:
        # bf16 autocast on a CPU without bf16 hardware: every matmul ~100x slower, an hour where fp32 takes a minute.
        # The run header says so (not a warning here: a bad recipe must still fail with its one-line error).
        import torch

        fallback = (f"bf16 asked for, but this CPU has no native bf16 ({torch.backends.cpu.get_cpu_capability()}): "
                    f"its bf16 matmuls run {1 / speedup:.0f}x slower than fp32")
        script_args, training_args, model_args = _parse_dataclasses(parser, [*overrides, "--bf16", "false"])
    script_args._bf16_fallback = fallback
    script_args.task = task
    script_args._recipe_keys = list(config) + [t[2:].split("=")[0] for t in overrides if t.startswith("--")]
    validate(script_args, training_args, model_args, check_model)
    return task, script_args, training_args, model_args


def validate(script_args, training_args, model_args, check_model: bool = True):
    """Checks TRL would only make after loading the model (or never): fail now, in one line."""
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
    if script_args.task == "grpo":
        from .rewards import check_reward_name

        if not script_args.reward_funcs:
            raise RecipeError("reward_funcs is empty: name at least one reward, e.g. [accuracy, format]")
        for name in script_args.reward_funcs:
            try:
                check_reward_name(name)
            except ValueError as e:
                raise RecipeError(_first_line(e)) from None
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
    evaluating = str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) != "no"
    if model_args.load_in_4bit and evaluating and (training_args.use_cpu or not _has_bf16_accelerator()):
        # measured (NOTES-cpu-stack): after an eval-mode forward, CPU 4-bit training crashes (Qwen2) or computes
        # wrong gradients without an error (Llama); 8-bit is unaffected
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
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
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


def resolved_recipe(script_args, training_args, model_args) -> dict:
    """The keys the user set (YAML or CLI), with the values that were actually used."""
    out = {}
    for key in dict.fromkeys(script_args._recipe_keys):
        for obj in (script_args, training_args, model_args):
            if any(f.name == key for f in dataclasses.fields(obj)):
                value = getattr(obj, key)
                out[key] = getattr(value, "value", value)  # enums -> their string
                break
    return {"task": script_args.task, **out}
