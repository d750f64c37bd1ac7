"""Command line: `thinktrain train RECIPE.yaml [--key value ...]` (also `python -m thinktrain`, src/train.py)."""

from __future__ import annotations

import importlib
import sys
import warnings

# TRL 1.x defaults `gradient_checkpointing`, which transformers 5 deprecated: every run would warn about a key
# the user never wrote. Drop that one warning (remove once TRL moves to `activation_checkpointing`).
warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated", category=FutureWarning)

USAGE = """usage: thinktrain train RECIPE.yaml [--key value ...]

  train     run a recipe (task: pretrain | sft | grpo); every recipe key can be overridden as --key value
            e.g. thinktrain train recipes/tiny/sft.yaml --max_steps 5 --output_dir runs/try
"""


def fail(message: str) -> int:
    print(f"thinktrain: error: {message}", file=sys.stderr, flush=True)
    return 2


def train(argv: list[str]) -> int:
    from .recipe import RecipeError, parse

    try:
        task, script_args, training_args, model_args = parse(argv)
        importlib.import_module(f"thinktrain.{task}").main(script_args, training_args, model_args)
    except RecipeError as e:
        return fail(str(e))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    commands = {"train": train}
    if command not in commands:
        return fail(f"unknown command '{command}'; commands: {', '.join(commands)}")
    return commands[command](rest)


if __name__ == "__main__":
    sys.exit(main())
