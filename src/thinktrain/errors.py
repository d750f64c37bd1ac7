"""The error every input mistake becomes, the constants several modules share, and the helpers that word messages.

A leaf: it imports nothing of thinktrain's (and nothing heavy), so any module can import it without a cycle.
"""

from __future__ import annotations

import difflib
import os
import re

TASKS = ("pretrain", "sft", "grpo", "rft")  # the trainers; tasks.py maps each to its main
DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}  # -> datasets builder

# Names that hold secrets (Hub tokens, API keys, passwords), as recipe keys or environment variables: their values
# are never written, printed or uploaded (recipe.parse, Recipe.resolved, cli.fail). Tokenizer special tokens
# (eos_token, pad_token, ...) end in `_token` too, but they are vocabulary, not secrets.
_SECRET_NAME = re.compile(r"token$|api_?key|secret|passw(or)?d|credential", re.IGNORECASE)
_SPECIAL_TOKEN = re.compile(r"(bos|eos|pad|unk|sep|cls|mask)_token", re.IGNORECASE)


def is_secret(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and not _SPECIAL_TOKEN.fullmatch(name)


def redact(text: str) -> str:
    """`text` with the value of every secret-named environment variable (recipe.parse moves a given hub_token to
    HF_TOKEN) and anything shaped like a Hub token replaced by ***: for messages that may quote user input."""
    for name, value in os.environ.items():
        if is_secret(name) and len(value) >= 8:  # (HF_HUB_DISABLE_IMPLICIT_TOKEN=1 is a flag, not a secret)
            text = text.replace(value, "***")
    return re.sub(r"\bhf_[A-Za-z0-9]{30,}", "hf_***", text)  # a Hub token is hf_ + 34 letters and digits


class RecipeError(Exception):
    """A mistake in the recipe or command line: reported as one line, exit code 2, before anything loads."""


class RunError(Exception):
    """A fault of a run, not of its recipe (the loss became NaN, another run holds output_dir): reported as one line,
    exit code 1 — the code of any run that started and failed; 2 stays "the command is wrong, nothing ran"."""

    exit_code = 1
    everywhere = True  # the same fault on every rank of a launch (NaN, preemption): rank 0 alone reports it


PREEMPTED_EXIT = 75  # sysexits' EX_TEMPFAIL, "try again": a job script requeues on it (docs/scaling.md)


class Preempted(RunError):
    """SIGTERM or SIGUSR1 (a cluster's preemption): a checkpoint was saved at the step reached; rerun to resume."""

    exit_code = PREEMPTED_EXIT


def suggest(key: str, known) -> str:
    """The tail of an 'unknown name' message: the closest known one, if any is close. (A recipe key's advice, which
    knows renamed and removed keys too: schema._key_advice.)"""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def one_line(exc: BaseException) -> str:
    """An exception's first line, whitespace collapsed (its class name when it has no message)."""
    text = str(exc).strip()
    return " ".join(text.split("\n")[0].split()) if text else type(exc).__name__


def pct(value, none: str = "-") -> str:
    """0.562 -> '56.2%'; anything that is not a number -> `none`."""
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else none


def mapping_of(value, key: str, expected: str):
    """A recipe value that is a mapping in YAML or JSON on the command line -> that mapping (anything else as it
    is, for the caller's own message); unreadable JSON is a RecipeError saying what was `expected`."""
    if not isinstance(value, str):
        return value
    import json

    try:
        return json.loads(value)
    except ValueError:
        raise RecipeError(f"{key}: expected {expected}, got {value!r}") from None
