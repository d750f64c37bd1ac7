"""One run per output_dir: an OS file lock (filelock; flock on Unix) held for the whole run.

The kernel releases it when its process ends, however it ends (SIGKILL, the OOM killer), so there is no stale lock
to detect or take over. Who holds it (pid, host, since) is written beside it, for the refusal's words only. Only the
main process of a launch locks; its other ranks work under its lock. Across nodes it is as good as the shared
filesystem's flock (NFSv4 and Lustre mounted with `flock` honour it); on one without file locks the run says so in
its header and goes on unlocked, never with a marker file that a killed run would leave behind.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import time
from pathlib import Path

from .errors import RecipeError, RunError

LOCK = "_thinktrain.lock"  # '_': Trainer.push_to_hub leaves _* files out of what it uploads
OWNER = "_thinktrain.owner"  # who holds LOCK (the lock file itself stays in place: waiters share its inode)
_held: dict[str, object] = {}  # output_dir -> its FileLock, held by this process


def lock_output_dir(training_args) -> None:
    """Take output_dir's lock, or refuse in one line while another run holds it. Idempotent in one process."""
    from filelock import FileLock, Timeout

    if training_args.process_index != 0:
        return
    out = Path(training_args.output_dir)
    if str(out) in _held:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RecipeError(f"output_dir {out} cannot be created: {e.strerror}") from None
    lock = FileLock(out / LOCK, timeout=0, fallback_to_soft=False)  # a marker file would outlive a killed run
    try:
        lock.acquire()
    except Timeout:
        owner = _owner(out)
        who = f" (pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('since')})" if owner else ""
        raise RunError(f"output_dir {out} is in use by another run{who}; wait for it to end or use another "
                       f"output_dir") from None
    except (OSError, NotImplementedError) as e:  # a filesystem without flock (some network mounts)
        print(f"  lock       none: {out}'s filesystem has no file locks ({type(e).__name__}); a second run on it "
              f"would not be refused", flush=True)
        return
    _held[str(out)] = lock
    (out / OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                         "since": time.strftime("%Y-%m-%d %H:%M:%S")}))


def unlock_output_dir(training_args) -> None:
    _release(str(Path(training_args.output_dir)))


def is_locked(output_dir) -> bool:
    """Whether some process (this one included) holds output_dir's lock."""
    from filelock import FileLock, Timeout

    if str(Path(output_dir)) in _held:
        return True
    if not (Path(output_dir) / LOCK).exists():
        return False
    probe = FileLock(Path(output_dir) / LOCK, timeout=0, fallback_to_soft=False)
    try:
        probe.acquire()
    except Timeout:
        return True
    probe.release()
    return False


def _owner(out: Path) -> dict:
    try:
        owner = json.loads((out / OWNER).read_text())
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _release(out: str) -> None:
    lock = _held.pop(out, None)
    if lock is None:
        return
    try:
        (Path(out) / OWNER).unlink(missing_ok=True)
    except OSError:
        pass
    lock.release()


@atexit.register
def _release_all():  # at exit (a run that ended by an error after train): the owner note goes with the lock
    for out in list(_held):
        _release(out)
