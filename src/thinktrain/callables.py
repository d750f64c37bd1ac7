"""Loading a user's function named in a recipe as 'pkg.module:function' or 'pkg.module.function'.

Rewards (`reward_funcs`) and tools (`tools`) both accept such paths, so one loader keeps one rule for both: the
working directory is importable (as in TRL's scripts), and every failure, even a module that calls sys.exit at
import, becomes one RecipeError line. The wording stays each caller's own (a Wording of message templates), so
the messages users and tests know do not change.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import NamedTuple

from .errors import RecipeError, one_line


class Wording(NamedTuple):
    """Message templates; str.format fields: path, module, attr, known (the caller's built-in names), error
    ('Type: message' of a failed import) and got (the type name of a non-callable attribute)."""

    malformed: str  # no module or no attribute in the path
    unimportable: str  # importing the module raised
    missing: str  # the module has no such attribute
    not_callable: str  # it has one, but it cannot be called


def load_callable(path: str, wording: Wording, error: type[RecipeError] = RecipeError, known: str = "") -> Callable:
    """'pkg.mod:fn' or 'pkg.mod.fn' -> the function, or `error` with the matching `wording` message."""
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    fields = {"path": path, "module": module_name, "attr": attr, "known": known}
    if not module_name or not attr:
        raise error(wording.malformed.format(**fields))
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as e:  # any failure of the user's module, even sys.exit at import
        raise error(wording.unimportable.format(**fields, error=f"{type(e).__name__}: {one_line(e)}")) from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise error(wording.missing.format(**fields))
    if not callable(fn):
        raise error(wording.not_callable.format(**fields, got=type(fn).__name__))
    return fn
