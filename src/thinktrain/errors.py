"""The error every input mistake becomes, the constants several modules share, and the helpers that word messages.

A leaf: it imports nothing of thinktrain's (and nothing heavy), so any module can import it without a cycle.
"""

from __future__ import annotations

import difflib

TASKS = ("pretrain", "sft", "grpo")  # the trainers; tasks.py maps each to its main
DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}  # -> datasets builder

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


class RecipeError(Exception):
    """A mistake in the recipe or command line: reported as one line, exit code 2, before anything loads."""


def suggest(key: str, known) -> str:
    """The tail of an 'unknown key' message: the new name of a renamed key, else the closest known one."""
    if key in RENAMED:
        return f"; it was renamed: use {RENAMED[key]}"
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def one_line(exc: BaseException) -> str:
    """An exception's first line, whitespace collapsed (its class name when it has no message)."""
    text = str(exc).strip()
    return " ".join(text.split("\n")[0].split()) if text else type(exc).__name__


def pct(value, none: str = "-") -> str:
    """0.562 -> '56.2%'; anything that is not a number -> `none`."""
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else none
