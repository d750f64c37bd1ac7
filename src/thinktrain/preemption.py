"""Preemption: on SIGTERM or SIGUSR1 (what slurm sends before it kills a job: `sbatch --signal=USR1@120`, or
scancel/preemption's SIGTERM) a run finishes the optimizer step it is in, saves a checkpoint at that step, says so
in one line and exits with PREEMPTED_EXIT (75), so a job script can requeue; the rerun resumes from that checkpoint
(checkpoints.to_resume) to exactly the weights of an uninterrupted run.

The signal only sets a flag; the Trainer acts on it at the end of a step (Callback), through its own save. Outside
a training loop (loading, before the first step) there is nothing new to save: the run exits at once. expert
iteration (rft) keeps a round's sampled pairs and resumes the round's training. A second signal stops at once.
"""

from __future__ import annotations

import os
import signal

from .errors import PREEMPTED_EXIT, Preempted

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_state = {"signal": None, "deferred": 0}


def install() -> None:
    """Catch the preemption signals in this process (the main thread of each rank; elsewhere Python cannot)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        signal.signal(sig, _handler)


def _handler(signum, frame):
    name = signal.Signals(signum).name
    if _state["signal"] is not None:  # the second one: the user (or the scheduler) wants it gone now
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _state["signal"] = name
    if not _state["deferred"]:  # not inside a training loop: nothing since the last checkpoint to keep
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"thinktrain: preempted ({name}) before training started: nothing to save; rerun the same "
                  f"command (exit {PREEMPTED_EXIT})", flush=True)
        raise SystemExit(PREEMPTED_EXIT)  # BaseException: no library's `except Exception` swallows it


def requested() -> str | None:
    """The signal's name once one arrived, else None."""
    return _state["signal"]


class deferred:
    """Within it a signal only sets the flag (the code inside acts on it at its next safe point)."""

    def __enter__(self):
        _state["deferred"] += 1

    def __exit__(self, *exc):
        _state["deferred"] -= 1


def agreed(device) -> bool:
    """Whether a signal arrived on any rank (an all-reduce in a launch: every rank must stop at the same place)."""
    import torch

    asked = requested() is not None
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        flag = torch.tensor([int(asked)], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        asked = bool(flag.item())
    return asked


def callback():
    """A TrainerCallback: after the step in which a signal arrived (on any rank: the ranks agree by an all-reduce,
    so all save the same step, as a checkpoint needs), save and stop. The Trainer's own _save_checkpoint writes it,
    whatever save_strategy says."""
    from transformers import TrainerCallback

    class StopOnPreemption(TrainerCallback):
        stopped_at = None

        def on_step_end(self, args, state, control, **kwargs):
            if agreed(args.device):
                control.should_save = control.should_training_stop = True
                self.stopped_at = state.global_step

    return StopOnPreemption()


def stop_if_preempted(trainer, stopper) -> None:
    """After trainer.train() returned: if it stopped for a signal, raise Preempted naming the checkpoint."""
    if stopper.stopped_at is None:
        return
    saved = os.path.join(trainer.args.output_dir, f"checkpoint-{stopper.stopped_at}")
    raise Preempted(f"preempted ({requested() or 'a signal on another rank'}) at step {stopper.stopped_at}: saved "
                    f"{saved}; the same command resumes from it (exit {PREEMPTED_EXIT})")
