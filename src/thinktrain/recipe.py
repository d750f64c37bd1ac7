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
import difflib
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
from .errors import DATA_SUFFIXES, REMOVED, RENAMED, TASKS, RecipeError, is_secret, one_line, suggest
from .hardware import cpu_bf16_speedup, has_bf16_accelerator

# --------------------------------------------------------------------------- what a value may be
# TRL, transformers and PEFT take any value of a field's type and find many bad ones only after the model loads (an
# empty batch, a division by zero, a logits processor or the loss refusing it) or never (training the wrong way).
# validate checks these tables first. A rule applies when the task has the key and its value is set; the comment
# says whose code rejects the value later, or what goes wrong. (A value the dataclasses' own __post_init__ rejects is
# refused by them, at parse: those checks are not repeated here.)


def _range(low, high=None, low_open=False, high_open=False) -> tuple:
    return low, high, low_open, high_open


POSITIVE, NON_NEGATIVE = _range(0, low_open=True), _range(0)
PROBABILITY, FRACTION = _range(0, 1), _range(0, 1, high_open=True)  # [0, 1], [0, 1)
RANGES = {
    # sizes and counts: 0 is an empty batch, a division by zero, or a loop that never runs
    "per_device_train_batch_size": POSITIVE, "per_device_eval_batch_size": POSITIVE,
    "gradient_accumulation_steps": POSITIVE, "eval_accumulation_steps": POSITIVE, "num_train_epochs": POSITIVE,
    "max_length": POSITIVE, "max_completion_length": POSITIVE, "max_prompt_length": POSITIVE,
    "max_train_samples": POSITIVE, "max_eval_samples": POSITIVE,
    "dataset_num_proc": POSITIVE,  # datasets' map(num_proc=0) raises
    "generation_batch_size": POSITIVE, "steps_per_generation": POSITIVE,  # GRPOConfig takes 0: no batch to generate
    "num_generations_eval": POSITIVE, "num_iterations": POSITIVE,  # GRPO: 0 updates per generation trains nothing
    "ref_model_sync_steps": POSITIVE, "vllm_tensor_parallel_size": POSITIVE, "vllm_max_model_length": POSITIVE,
    # intervals: save_steps 0 never saves, without a word; eval_steps 0 is read as "every logging_steps"
    "logging_steps": POSITIVE, "save_steps": POSITIVE, "eval_steps": POSITIVE,
    # LoRA: peft's LoraLayer.update_layer raises for r <= 0 once the model is wrapped; the update is scaled by
    # lora_alpha / r, so alpha 0 trains an adapter that changes nothing; torch.nn.Dropout raises outside [0, 1]
    "lora_r": POSITIVE, "lora_alpha": POSITIVE, "lora_dropout": FRACTION,
    # optimizer: torch.optim.AdamW raises for these when the first step builds it; max_grad_norm < 0 turns
    # clipping off without a word (0 does so on purpose); a negative learning rate trains the wrong way
    "learning_rate": NON_NEGATIVE, "weight_decay": NON_NEGATIVE, "adam_epsilon": NON_NEGATIVE,
    "adam_beta1": FRACTION, "adam_beta2": FRACTION, "max_grad_norm": NON_NEGATIVE,
    "label_smoothing_factor": FRACTION, "eval_delay": NON_NEGATIVE, "neftune_noise_alpha": NON_NEGATIVE,
    # GRPO: a negative KL coefficient rewards drifting away from the reference model; a negative clipping range
    # inverts the trust region; GRPOConfig documents top_entropy_quantile and ref_model_mixup_alpha in [0, 1]
    "beta": NON_NEGATIVE, "epsilon": NON_NEGATIVE, "epsilon_high": NON_NEGATIVE,
    "top_entropy_quantile": PROBABILITY, "ref_model_mixup_alpha": PROBABILITY,
    "vllm_gpu_memory_utilization": _range(0, 1, low_open=True),  # a share of the GPU's memory
    # sampling: transformers' logits processors (generation/logits_process.py) raise when generation starts;
    # top_p 0 would make every completion of a group the same (vLLM refuses it outright); top_k 0 turns it off
    "temperature": POSITIVE, "top_p": _range(0, 1, low_open=True), "min_p": PROBABILITY, "top_k": NON_NEGATIVE,
    "repetition_penalty": POSITIVE,
    # not quantities: numpy.random.seed takes [0, 2**32 - 1]; torch's DataLoader raises for negative workers
    "seed": _range(0, 2**32 - 1), "data_seed": _range(0, 2**32 - 1), "dataloader_num_workers": NON_NEGATIVE,
    "vllm_server_port": _range(1, 65535), "vllm_group_port": _range(1, 65535), "vllm_server_timeout": POSITIVE,
    "ddp_timeout": POSITIVE,
}

# Strings that TRL types as plain `str` and rejects only in the training loop (or, for vLLM's, when it starts).
GRPO_CHOICES = {
    "loss_type": ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"),  # GRPOTrainer._compute_loss
    "scale_rewards": ("group", "batch", "none"),  # GRPOTrainer._generate_and_score_completions (true/false mapped)
    "importance_sampling_level": ("token", "sequence"),  # GRPOTrainer._compute_loss
    "multi_objective_aggregation": ("sum_then_normalize", "normalize_then_sum"),  # GRPOTrainer
    "vllm_mode": ("colocate", "server"),  # trl.generation.vllm_generation.VLLMGeneration
    "vllm_model_impl": ("vllm", "transformers"),  # GRPOConfig's help; vLLM's model_impl
    "vllm_importance_sampling_mode": ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"),
}
CHOICES = {
    "torch_compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),  # torch.compile
}


@dataclass
class Recipe:
    """A parsed recipe: the task's three dataclasses, the keys the user set, and what parse decided for them."""

    task: str
    script_args: object  # configs.RecipeArguments (or its GRPO / pretrain subclass)
    training_args: object  # SFTConfig, GRPOConfig or configs.PretrainConfig
    model_args: object  # trl.ModelConfig
    keys: list[str] = field(default_factory=list)  # set in the YAML or on the command line, in that order
    bf16_fallback: str | None = None  # why a CPU bf16 recipe trains in fp32 here (the run header says it)
    secrets: list[str] = field(default_factory=list)  # names of the secrets given (never their values)
    tools: list = field(default_factory=list)  # the `tools` key resolved once to functions (validate); all use these
    rewards: list = field(default_factory=list)  # reward_funcs resolved once to functions (validate), in order

    def resolved(self) -> dict:
        """The keys the user set, with the values that were actually used (what recipe.yaml records and the model
        card quotes). Secret keys (hub_token, ...) are left out: both files are uploaded with the model."""
        out = {}
        for key in dict.fromkeys(self.keys):
            if is_secret(key):
                continue
            for obj in (self.script_args, self.training_args, self.model_args):
                if any(f.name == key for f in dataclasses.fields(obj)):
                    value = getattr(obj, key)
                    out[key] = getattr(value, "value", value)  # enums -> their string
                    break
        return {"task": self.task, **out}

    def to_yaml(self) -> str:
        """recipe.yaml: resolved(), led by a comment naming the secrets that were given and not recorded, and where
        a rerun takes them from, so the file stays rerunnable without ever holding one."""
        hub = [s for s in self.secrets if s in ("hub_token", "env HF_TOKEN", "env HUGGING_FACE_HUB_TOKEN")]
        other = [s for s in self.secrets if s not in hub]
        note = [f"# Secrets given to this run, not recorded here: {', '.join(self.secrets)}."] if self.secrets else []
        if hub:
            note.append("# To rerun it, give the Hub token as HF_TOKEN in the environment, or run `hf auth login`.")
        if other:
            note.append(f"# To rerun it, give {', '.join(other)} again (environment or command line), not in this "
                        f"file.")
        return "".join(line + "\n" for line in note) + yaml.safe_dump(self.resolved(), sort_keys=False)


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


def validate(recipe: Recipe, check_model: bool = True):
    """Checks TRL would only make after loading the model (or never): fail now, in one line. What is checked, by
    family: docs/recipes.md#mistakes-are-caught-before-anything-loads."""
    script_args, training_args, model_args = recipe.script_args, recipe.training_args, recipe.model_args
    if not model_args.model_name_or_path:
        raise RecipeError("model_name_or_path is missing: set it in the recipe or pass --model_name_or_path")
    if not script_args.dataset_name:
        raise RecipeError("dataset_name is missing: a hub id, a local .jsonl/.json/.parquet/.csv file or folder, "
                          "or synthetic:gsm8k")
    check_values(recipe)
    script_args.learning_rate_groups = check_learning_rate_groups(script_args.learning_rate_groups)
    if (script_args.learning_rate_groups and training_args.learning_rate == 0
            and not any(script_args.learning_rate_groups.values())):
        raise RecipeError("learning_rate_groups: every parameter has learning rate 0, so nothing would train; "
                          "give learning_rate or a group a positive rate")
    if recipe.task in ("grpo", "rft"):
        check_rewards(recipe)
        weights = getattr(training_args, "reward_weights", None)  # GRPOConfig's (rft checks its own)
        if weights is not None and len(weights) != len(script_args.reward_funcs):
            raise RecipeError(
                f"reward_weights has {len(weights)} values but reward_funcs has {len(script_args.reward_funcs)} "
                f"({', '.join(script_args.reward_funcs)}): give one weight per reward"
            )
    if script_args.tools is not None:
        check_tools(recipe)
    check_packages(recipe)
    check_combinations(recipe)
    check_with_libraries(recipe)
    check_paths(recipe)
    check_source("dataset_name", script_args.dataset_name, repo_type="dataset")
    if training_args.push_to_hub:  # seconds now, not a failed push after hours of training
        from .hub import preflight

        training_args.hub_model_id = preflight(training_args)  # namespace/name, as the checks resolved it
    if check_model:
        check_source("model_name_or_path", model_args.model_name_or_path, repo_type="model")


def _set(recipe: Recipe, key: str):
    """The value of `key` in the task's dataclasses (None where the task has no such key)."""
    for args in (recipe.script_args, recipe.training_args, recipe.model_args):
        if key in {f.name for f in dataclasses.fields(args)}:
            value = getattr(args, key)
            return getattr(value, "value", value)  # enums -> their string
    return None


def _describe(rule: tuple) -> str:
    low, high, low_open, high_open = rule
    if high is None:
        return "a positive number" if low == 0 and low_open else "a non-negative number" if low == 0 else \
            f"a number {'>' if low_open else '>='} {low}"
    return f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def check_values(recipe: Recipe):
    """RANGES, CHOICES and GRPO_CHOICES; the sets transformers itself keeps (cache and attention implementations)."""
    for key in sorted(RANGES, key=lambda k: k not in recipe.keys):  # the keys set first, then derived ones
        rule, value = RANGES[key], _set(recipe, key)
        low, high, low_open, high_open = rule
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value < low or (low_open and value == low) or (high is not None and (value > high or (
                high_open and value == high))):
            raise RecipeError(f"{key}: expected {_describe(rule)}, got {value!r}; fix it, or remove the key for the "
                              f"default")
    training_args = recipe.training_args
    if recipe.task == "grpo" and str(training_args.scale_rewards).lower() in ("true", "false"):
        # GRPOConfig maps the documented booleans true/false to group/none, but a YAML or command-line value
        # arrives as the string "True"/"False", which it keeps, and the trainer refuses mid-run
        training_args.scale_rewards = "group" if str(training_args.scale_rewards).lower() == "true" else "none"
    for key, allowed in {**CHOICES, **(GRPO_CHOICES if recipe.task == "grpo" else {})}.items():
        _check_choice(recipe, key, allowed)
    if getattr(training_args, "cache_implementation", None) is not None:
        from transformers.generation.configuration_utils import ALL_CACHE_IMPLEMENTATIONS

        _check_choice(recipe, "cache_implementation", ALL_CACHE_IMPLEMENTATIONS)  # GenerationConfig.validate
    if "torch_compile_backend" in recipe.keys and training_args.torch_compile_backend is not None:
        from torch._dynamo import list_backends  # (seconds to import: only when the recipe names a backend)

        _check_choice(recipe, "torch_compile_backend", list_backends(exclude_tags=()))  # torch.compile raises
    attention = recipe.model_args.attn_implementation
    if attention is not None and "/" not in attention:  # org/repo: a kernel from the Hub
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        # PreTrainedModel.get_correct_attn_implementation, when the model loads ("paged|" is a deprecated prefix)
        known = ["eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()]
        if attention.removeprefix("paged|") not in known:
            _check_choice(recipe, "attn_implementation", known)


def _check_choice(recipe: Recipe, key: str, allowed):
    value = _set(recipe, key)
    if value is not None and value not in allowed:
        raise RecipeError(f"{key}: '{value}' is not one of: {', '.join(allowed)}; pick one, or remove the key for "
                          f"the default")


def check_rewards(recipe: Recipe):
    """Every reward name of reward_funcs resolved once, into recipe.rewards; the unknown ones named together, like
    the keys of a ported recipe."""
    from .rewards import UnknownRewardError, resolve_reward

    names = recipe.script_args.reward_funcs
    if not names:
        raise RecipeError("reward_funcs is empty: name at least one reward, e.g. [accuracy, format]")
    wrong, resolved = {}, []
    for name in names:
        try:
            resolved.append(resolve_reward(name))
        except UnknownRewardError as e:
            wrong[name] = str(e)
    if len(wrong) == 1:
        raise RecipeError(next(iter(wrong.values())))
    if wrong:
        raise RecipeError("\n".join([f"{len(wrong)} of reward_funcs' names need changing:",
                                     *(f"  {why}" for why in wrong.values())]))
    recipe.rewards = resolved


def check_tools(recipe: Recipe):
    """Each tool importable, typed and documented (transformers' get_json_schema, which TRL uses), resolved once
    into recipe.tools; sft needs the calculator its data's annotations call."""
    from .tools import load_tools

    names = recipe.script_args.tools
    if not names:
        raise RecipeError("tools is empty: name at least one tool (e.g. [calculator]), or remove the key")
    recipe.tools = load_tools(names)
    if recipe.task == "sft" and "calculator" not in names:
        raise RecipeError("tools: sft turns the data's <<expr=result>> annotations into calculator calls; add "
                          "calculator to tools")


def check_combinations(recipe: Recipe):
    """Values that are fine alone and fail together, after the model loads (or never do what they say)."""
    script_args, training_args, model_args = recipe.script_args, recipe.training_args, recipe.model_args
    peft, scratch = model_args.use_peft, model_args.model_name_or_path.startswith("scratch:")
    if (model_args.load_in_4bit or model_args.load_in_8bit) and not peft:
        # transformers' Trainer refuses to train a quantized model without adapters
        bits = "load_in_4bit" if model_args.load_in_4bit else "load_in_8bit"
        raise RecipeError(f"{bits}: a quantized model trains only through LoRA adapters; set use_peft: true, or "
                          f"{bits}: false")
    if recipe.task == "grpo":  # GRPOConfig's keys (rft's trainer config is SFTConfig)
        if training_args.beta > 0 and scratch and not peft:
            # GRPOTrainer builds its reference model with from_pretrained(the model's name); a scratch model has none
            raise RecipeError(f"beta: {training_args.beta:g} needs a reference model that GRPO loads by name, and "
                              f"{model_args.model_name_or_path} is built in memory; set beta: 0, or start from a saved "
                              f"checkpoint (model_name_or_path: runs/tiny/sft)")
        if training_args.sync_ref_model and (training_args.beta == 0 or peft):
            # GRPOTrainer.__init__: there is no separate reference model to sync
            why = "beta is 0, so there is no reference model" if training_args.beta == 0 else \
                "with use_peft the reference model is the base model with the adapter off"
            raise RecipeError(f"sync_ref_model: true, but {why}; set sync_ref_model: false")
        if (training_args.loss_type == "vespo" and training_args.use_vllm
                and training_args.vllm_importance_sampling_correction
                and training_args.vllm_importance_sampling_mode not in ("token_truncate", "token_mask")):
            raise RecipeError("loss_type: vespo with vLLM needs vllm_importance_sampling_mode: token_truncate or "
                              "token_mask")  # GRPOTrainer.__init__
    if recipe.task != "grpo" and training_args.padding_free and not training_args.packing \
            and training_args.max_length is not None:
        # SFTTrainer.__init__: without packing, padding-free batches would not be cut to max_length
        raise RecipeError("padding_free: true without packing would not enforce max_length; set packing: true, or "
                          "max_length: null")
    if script_args.dataset_streaming and training_args.max_steps <= 0:
        # the Trainer needs the length of an epoch, which a stream does not have
        raise RecipeError("dataset_streaming: true needs max_steps (a stream has no length to count epochs in)")
    save = str(getattr(training_args.save_strategy, "value", training_args.save_strategy))
    if save == "best" and not evaluating(training_args):
        raise RecipeError("save_strategy: best keeps the checkpoint with the best evaluation, but eval_strategy is "
                          "no; set eval_strategy: steps (or epoch), or another save_strategy")
    if save == "best" and training_args.metric_for_best_model is None:
        # transformers' Trainer.__init__
        raise RecipeError("save_strategy: best needs metric_for_best_model (e.g. loss); set it, or another "
                          "save_strategy")


# optimizers that need no package beyond torch and transformers
_PLAIN_OPTIMIZERS = {"adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop"}


def check_packages(recipe: Recipe):
    """Features that need a package (or an NVIDIA GPU) this machine does not have."""
    training_args, model_args = recipe.training_args, recipe.model_args
    for key, on, package, install in (
        ("use_vllm", getattr(training_args, "use_vllm", False), "vllm", "'thinktrain[vllm]'"),
        ("load_in_4bit", model_args.load_in_4bit, "bitsandbytes", "'thinktrain[qlora]'"),
        ("load_in_8bit", model_args.load_in_8bit, "bitsandbytes", "'thinktrain[qlora]'"),
        ("use_liger_kernel", training_args.use_liger_kernel, "liger_kernel", "liger-kernel"),
    ):
        if on and importlib.util.find_spec(package) is None:
            raise RecipeError(f"{key}: true needs {package}, which is not installed; pip install {install} or pass "
                              f"--{key} false")
    if model_args.load_in_4bit and evaluating(training_args) and (training_args.use_cpu or not has_bf16_accelerator()):
        # measured: after an eval-mode forward, CPU 4-bit training crashes (Qwen2) or computes wrong gradients
        # without an error (Llama); 8-bit is unaffected
        raise RecipeError("load_in_4bit on CPU: bitsandbytes 4-bit training breaks after an evaluation (eval-mode "
                          "forward); set eval_strategy: no, or use load_in_8bit on CPU")
    attention = model_args.attn_implementation or ""
    if attention.startswith("flash_attention") and not model_args.model_name_or_path.startswith("scratch:"):
        import torch

        if training_args.use_cpu or not torch.cuda.is_available():
            raise RecipeError(f"attn_implementation: {attention} needs an NVIDIA GPU; use sdpa here (or remove the "
                              f"key)")
    if training_args.report_to:  # [] for none; transformers' Trainer raises for a tracker that is not installed
        from transformers.integrations import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations

        available = get_available_reporting_integrations()
        for name in training_args.report_to:
            if name not in INTEGRATION_TO_CALLBACK:
                raise RecipeError(f"report_to: '{name}' is not one of: none, all, "
                                  f"{', '.join(INTEGRATION_TO_CALLBACK)}; fix it, or report_to: none")
            if name not in available:
                raise RecipeError(f"report_to: {name} is not installed; pip install {name.replace('_', '-')}, or "
                                  f"report_to: none")


def check_with_libraries(recipe: Recipe):
    """The checks that PEFT's, bitsandbytes' and transformers' own constructors make, made now on the recipe's
    values instead of after the model loads (LoraConfig, BitsAndBytesConfig, the scheduler, the optimizer)."""
    training_args, model_args = recipe.training_args, recipe.model_args
    if model_args.use_peft:
        from trl import get_peft_config

        lora = sorted((f.name for f in dataclasses.fields(model_args) if f.name.startswith("lora_")), key=len)[::-1]
        _library_check(lambda: get_peft_config(model_args), [*lora, "use_dora", "use_rslora"])
    if model_args.load_in_4bit or model_args.load_in_8bit:
        from trl import get_quantization_config

        _library_check(lambda: get_quantization_config(model_args),
                       ["bnb_4bit_quant_storage", "bnb_4bit_quant_type", "use_bnb_nested_quant", "load_in_4bit"])
    scheduler = str(getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type))
    if training_args.lr_scheduler_kwargs or scheduler in ("cosine_with_min_lr", "cosine_warmup_with_min_lr",
                                                          "warmup_stable_decay"):  # those need kwargs
        import torch
        from transformers import get_scheduler

        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=training_args.learning_rate or 1e-3)
        _library_check(lambda: get_scheduler(scheduler, optimizer, num_warmup_steps=0, num_training_steps=100,
                                             scheduler_specific_kwargs=training_args.lr_scheduler_kwargs),
                       [f"lr_scheduler_kwargs (for lr_scheduler_type {scheduler})"])
    optim = str(getattr(training_args.optim, "value", training_args.optim))
    if optim not in _PLAIN_OPTIMIZERS:  # the others need a package (bitsandbytes, torchao, galore, ...)
        from transformers import Trainer

        _library_check(lambda: Trainer.get_optimizer_cls_and_kwargs(training_args), [f"optim {optim}"],
                       model_free=True)


def _library_check(check, keys: list[str], model_free: bool = False):
    """Run a library's own check of these keys' values; a refusal becomes one line led by the key it is about (the
    first of `keys` its message names, as is or as words: lora_task_type is "task type"), else by keys[0]."""
    try:
        check()
    except (ValueError, TypeError, ImportError) as e:
        if model_free and "model" in str(e).lower() and not isinstance(e, ImportError):
            return  # needs the model itself (GaLore's target modules): checked when it loads
        text = one_line(e)
        named = (k for k in keys if k in text or re.search(rf"\b{k.split('_', 1)[-1].replace('_', ' ')}\b",
                                                               text.lower()))
        raise RecipeError(f"{next(named, keys[0])}: {text}") from None


def check_paths(recipe: Recipe):
    """Files and folders the trainer would write to or read from after loading."""
    script_args, training_args = recipe.script_args, recipe.training_args
    out = Path(training_args.output_dir).expanduser()
    for parent in [out, *out.parents]:
        if parent.exists():
            if not parent.is_dir():
                where = "is a file" if parent == out else f"is inside {parent}, a file"
                raise RecipeError(f"output_dir: {out} {where}; choose a folder path (--output_dir runs/NAME)")
            if not os.access(parent, os.W_OK):
                raise RecipeError(f"output_dir: {out} cannot be created or written ({parent} is not writable); "
                                  f"choose a folder you can write")
            break
    resume = training_args.resume_from_checkpoint
    if resume:
        if resume.lower() in ("true", "false"):
            raise RecipeError(f"resume_from_checkpoint: give a checkpoint folder, not {resume}; a rerun resumes "
                              f"from output_dir's newest checkpoint by itself (auto_resume: true)")
        path = Path(resume).expanduser()
        if not path.is_dir():
            raise RecipeError(f"resume_from_checkpoint: no such folder: {resume}; give a checkpoint folder, e.g. "
                              f"{out}/checkpoint-500, or remove the key (auto_resume finds the newest)")
        if not (path / "trainer_state.json").is_file():
            raise RecipeError(f"resume_from_checkpoint: {resume} is not a complete checkpoint (no "
                              f"trainer_state.json); give a checkpoint-N folder that has one")
    template = getattr(training_args, "chat_template_path", None)
    if template and (template.endswith((".jinja", ".j2")) or template.startswith((".", "/", "~"))) \
            and not Path(template).expanduser().exists():
        raise RecipeError(f"chat_template_path: no such file or folder: {template}")
    tokenizer = getattr(script_args, "tokenizer_name_or_path", None)
    if tokenizer:
        check_source("tokenizer_name_or_path", tokenizer, repo_type="model")


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
