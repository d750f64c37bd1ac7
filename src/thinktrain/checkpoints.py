"""Which checkpoint a run resumes from, and what a save that fails leaves behind.

A checkpoint counts once the Trainer has written trainer_state.json, its last file, and only while every file in it
is still whole: a safetensors file as long as its header says, a torch file (optimizer, scheduler, RNG states,
DeepSpeed shards: zip archives) with its end-of-archive directory, trainer_state.json readable. That catches a save
cut by a kill and a file truncated afterwards, by reading headers only (no weights). A torn latest checkpoint is
named in one line and the run resumes from the one before; an explicit resume_from_checkpoint that is torn is
refused before anything loads (checks.check_paths). A save that meets a full disk removes its own partial checkpoint and stops in one line naming the path and
the free space; the earlier checkpoints are untouched.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
import struct
import zipfile
from pathlib import Path

from .errors import RunError


def _torn_file(f: Path) -> str | None:
    """Why `f` is not whole, or None."""
    size = f.stat().st_size
    try:
        if f.suffix == ".safetensors":
            with open(f, "rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    return f"{f.name} is {size} bytes, shorter than its header"
                header = json.loads(fh.read(struct.unpack("<Q", head)[0]))
            end = 8 + struct.unpack("<Q", head)[0] + max(
                (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if size != end:
                return f"{f.name} is {size:,} bytes, its header says {end:,} (truncated)"
        elif f.suffix in (".pt", ".pth", ".bin") and not zipfile.is_zipfile(f):
            return f"{f.name} ({size:,} bytes) is not a whole torch file (truncated)"
        elif f.name == "trainer_state.json":
            json.loads(f.read_text())
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        return f"{f.name} is unreadable ({type(e).__name__})"
    return None


def torn(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from, or None when it can."""
    if not (checkpoint / "trainer_state.json").is_file():
        return "interrupted while saving (no trainer_state.json)"
    for f in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        why = _torn_file(f)
        if why:
            return why
    return None


def _number(p: Path) -> int:
    return int(p.name.split("-")[1])


def to_resume(script_args, training_args) -> str | None:
    """An explicit resume_from_checkpoint; else the newest whole checkpoint in
    output_dir, each torn newer one named in a line; None when auto_resume is off or there is none."""
    main = training_args.process_index == 0
    if training_args.resume_from_checkpoint:  # (checks.check_paths refused a torn one before anything loaded)
        return training_args.resume_from_checkpoint
    out = Path(training_args.output_dir)
    if not script_args.auto_resume or not out.is_dir():
        return None
    found = sorted((p for p in out.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name)),
                   key=_number, reverse=True)
    for checkpoint in found:
        why = torn(checkpoint)
        if why is None:
            if main:
                print(f"  resuming   from {checkpoint} (set auto_resume: false to start over)", flush=True)
            return str(checkpoint)
        if main:
            print(f"  skipping   {checkpoint.name}: {why}", flush=True)
    if found and main:
        print(f"  starting   over: no whole checkpoint in {out}", flush=True)
    return None


def _free(path: Path) -> int:
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def disk_full(exc: BaseException, output_dir: str) -> bool:
    """Whether `exc`, raised while training or saving into output_dir, is a write that found no space: an OSError's
    ENOSPC or the message safetensors wraps it in, or a failed save while the disk holds less than 64 MiB (torch.save
    loses the errno: "unexpected pos 240512 vs 240404")."""
    e = exc
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if re.search(r"No space left on device|StorageFull|Disk quota exceeded", str(e)):
            return True
        e = e.__cause__ or e.__context__
    return isinstance(exc, (OSError, RuntimeError)) and _while_saving(exc) and _free(Path(output_dir)) < 64 * 2**20


def _while_saving(exc: BaseException) -> bool:
    """Whether `exc` was raised under a save (torch.save, save_model, _save_checkpoint, ...), not by a training bug."""
    tb = exc.__traceback__
    while tb is not None:
        if "save" in tb.tb_frame.f_code.co_name:
            return True
        tb = tb.tb_next
    return False


def disk_full_error(output_dir: str, step: int | None) -> RunError:
    """The one line for a save that found the disk full; removes the partial checkpoint-`step` first (a torn
    checkpoint resumes nothing, and its files hold the space the next try needs)."""
    out = Path(output_dir)
    partial = out / f"checkpoint-{step}" if step is not None else None
    free = _free(out)
    removed = ""
    if partial is not None and partial.is_dir() and torn(partial):
        shutil.rmtree(partial, ignore_errors=True)
        removed = f"; removed the partial {partial.name}"
    whole = [p for p in out.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name) and not torn(p)]
    last = f"{max(whole, key=_number).name} is whole and the same command resumes from it" if whole else \
        "no earlier checkpoint"
    error = RunError(f"no space left on device writing {partial or out} ({free / 2**20:,.1f} MiB free){removed}; "
                     f"{last}; free space or set save_total_limit")
    error.everywhere = False  # a rank's own disk may be the full one
    return error
