"""Which trainer runs a recipe: the one table from a recipe's `task:` to the `main` that trains it.

Each entry imports its module only when called, so a run pays for one trainer's dependencies, not all three.
"""

from __future__ import annotations


def pretrain(recipe):
    from .pretrain import main

    return main(recipe)


def sft(recipe):
    from .sft import main

    return main(recipe)


def grpo(recipe):
    from .grpo import main

    return main(recipe)


def rft(recipe):
    from .rft import main

    return main(recipe)


TRAINERS = {"pretrain": pretrain, "sft": sft, "grpo": grpo, "rft": rft}  # keys: errors.TASKS


def run(recipe):
    """Train a parsed recipe (recipe.parse) with its task's trainer; returns the final training metrics."""
    return TRAINERS[recipe.task](recipe)
