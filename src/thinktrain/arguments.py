"""The argument parser of the commands that are not recipes (eval, pipeline, report, merge): argparse, or
transformers' HfArgumentParser for dataclass options, whose mistakes are one-line RecipeErrors (exit 2) instead of
argparse's usage text. Recipes go through recipe.Parser (TRL's TrlParser); these commands need none of TRL, so
`thinktrain report` draws its plots without importing it."""

from __future__ import annotations

import argparse

from .errors import RecipeError


class ArgumentParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)  # --help shows the defaults
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse would print usage and exit 2; one line through RecipeError instead
        raise RecipeError(message)


def dataclass_parser(*types, **kwargs):
    """An HfArgumentParser over `types` (e.g. configs.EvalArguments) with the same one-line errors."""
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message):
            raise RecipeError(message)

    return Parser(types, **kwargs)
