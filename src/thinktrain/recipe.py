"""How a recipe becomes arguments: YAML + CLI overrides -> TRL/transformers dataclasses -> a validated Recipe.

A recipe is a flat YAML mapping. `task:` picks the trainer; every other key is a field of a dataclass in
thinktrain.configs (which extends TRL's ScriptArguments, SFTConfig/GRPOConfig and ModelConfig). TrlParser does
the parsing (`--config`, the `env:` block, CLI overrides); this module adds only what it lacks: typed YAML values
(PyYAML reads `1e-5` as a string), secrets kept out of every file, a library's refusal led by its key. Reading the
YAML (a key written twice refused) and the key checks (one-line errors with the closest key or the new name of a
renamed one, porting.py's tables) live in schema.py, which also answers them before TRL is imported; the value
checks that must fail before any model loads: checks.py; the Recipe object itself: configs.py.
"""

from __future__ import annotations

import os
import re
import sys

from trl import TrlParser

from . import schema
from .checks import validate
from .configs import Recipe, dataclass_types
from .errors import RecipeError, is_secret, one_line
from .hardware import cpu_bf16_speedup, has_bf16_accelerator


class Parser(TrlParser):
    """TrlParser whose mistakes are one-line RecipeErrors, and whose config values get the CLI's types. (The other
    commands parse with arguments.py.)"""

    def error(self, message):  # argparse would print usage and exit 2; we want one line through RecipeError
        raise RecipeError(message)

    def set_defaults_with_config(self, **config) -> list[str]:
        actions = {a.dest: a for a in self._actions if a.dest != "help"}
        values = {k: schema.coerce(actions[k], k, v) if k in actions else v for k, v in config.items()}
        if "bf16" in actions and "bf16" not in values and not has_bf16_accelerator():
            values["bf16"] = False  # TRL defaults to bf16, which fails on a CPU-only box; unset means "where it works"
        return super().set_defaults_with_config(**values)


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


def parse(argv: list[str] | None = None, check_model: bool = True) -> Recipe:
    """`RECIPE.yaml [--key value ...]` (or `--config RECIPE.yaml ...`) -> a validated Recipe. Raises RecipeError.
    check_model=False skips checking that model_name_or_path exists (a pipeline's stage not yet trained)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    path, config, env, overrides, task = schema.read(argv)
    if argv and not argv[0].startswith("-"):
        argv = ["--config", *argv]
    parser = Parser(dataclass_types(task))
    known = schema.load()
    if known is None:  # the first parse with these versions: cache the keys for schema.precheck's fast answers
        known = schema.build(Parser, dataclass_types)
        schema.save(known)
    schema.check_keys(config, overrides, known, task)
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


