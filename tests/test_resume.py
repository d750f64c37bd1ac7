"""Auto-resume after a hard kill: a run SIGKILLed after a checkpoint (or in the middle of writing one) is rerun
with the same command and ends with exactly the weights of a run that was never interrupted (CPU, fixed seed), SFT
and GRPO. The killed run's output_dir lock dies with it (the kernel releases it), so the rerun just takes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# The run under test is `thinktrain train` in a child process; KILL_AT makes the child SIGKILL itself at a chosen
# moment (after checkpoint N is complete, or while checkpoint N is half written), which no timing race can miss.
CHILD = """
import os, signal, sys
import transformers
from transformers import Trainer, TrainerCallback

when, step = os.environ["KILL_AT"].split(":")
step = int(step)

class KillAfterSave(TrainerCallback):
    steps_run = 0

    def on_step_end(self, args, state, control, **kw):
        self.steps_run += 1

    def on_save(self, args, state, control, **kw):
        if when == "after_save" and state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_end(self, args, state, control, **kw):
        print(f"steps run in this process: {self.steps_run}", flush=True)

init = Trainer.__init__
def patched_init(self, *a, **kw):
    init(self, *a, **kw)
    self.add_callback(KillAfterSave())
Trainer.__init__ = patched_init

save_optimizer = Trainer._save_optimizer_and_scheduler
def half_written(self, output_dir):
    # the weights of checkpoint-N are on disk, the optimizer and trainer_state.json are not
    if when == "mid_save" and self.state.global_step == step:
        os.kill(os.getpid(), signal.SIGKILL)
    return save_optimizer(self, output_dir)
Trainer._save_optimizer_and_scheduler = half_written

from thinktrain.cli import main
sys.exit(main(sys.argv[1:]))
"""


ARGS = {
    "sft": ["--max_steps", "12", "--save_strategy", "steps", "--save_steps", "4", "--logging_steps", "4"],
    # fewer and shorter completions than the recipe's, to keep three runs within a minute
    "grpo": ["--max_steps", "3", "--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1",
             "--per_device_train_batch_size", "4", "--max_completion_length", "24"],
}


def train(out: Path, kill_at: str | None = None, task: str = "sft") -> subprocess.CompletedProcess:
    argv = ["train", str(ROOT / f"recipes/tiny/{task}.yaml"), "--output_dir", str(out), *ARGS[task]]
    env = {**os.environ, "KILL_AT": kill_at or "never:0", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-c", CHILD, *argv], env=env, capture_output=True, text=True, cwd=ROOT)


def weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(out / "model.safetensors")


def assert_released_lock(out: Path):
    """The killed run's owner note is still there, naming a process that no longer exists, but its lock is free."""
    from thinktrain import output_lock

    owner = json.loads((out / output_lock.OWNER).read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(owner["pid"], 0)
    assert not output_lock.is_locked(out)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = train(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return weights(out)


@pytest.fixture(scope="module")
def uninterrupted_grpo(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted_grpo")
    proc = train(out, task="grpo")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return weights(out)


@pytest.mark.parametrize("kill_at,resumes_from,steps_left", [
    ("after_save:8", "checkpoint-8", 4),
    ("mid_save:8", "checkpoint-4", 8),  # checkpoint-8 was half written: never resumed from
])
def test_sigkilled_run_resumes_to_the_same_weights(tmp_path, uninterrupted, kill_at, resumes_from, steps_left):
    import torch

    out = tmp_path / "run"
    killed = train(out, kill_at)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists()
    assert_released_lock(out)
    if kill_at.startswith("mid_save"):  # the half-written checkpoint is there, without trainer_state.json
        assert (out / "checkpoint-8" / "model.safetensors").is_file()
        assert not (out / "checkpoint-8" / "trainer_state.json").exists()

    rerun = train(out)  # the same command, nothing else
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert not (out / "_thinktrain.owner").exists()  # taken, then released
    assert f"resuming   from {out / resumes_from}" in rerun.stdout
    assert f"steps run in this process: {steps_left}" in rerun.stdout  # it continued, it did not start over
    final = weights(out)
    assert final.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(final[name], tensor), name


def test_sigkilled_grpo_run_resumes_to_the_same_weights(tmp_path, uninterrupted_grpo):
    import torch

    out = tmp_path / "run"
    killed = train(out, "after_save:2", task="grpo")
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "model.safetensors").exists()
    assert_released_lock(out)

    rerun = train(out, task="grpo")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming   from {out / 'checkpoint-2'}" in rerun.stdout
    assert "steps run in this process: 1" in rerun.stdout
    assert not (out / "_thinktrain.owner").exists()
    final = weights(out)
    assert final.keys() == uninterrupted_grpo.keys()
    for name, tensor in uninterrupted_grpo.items():
        assert torch.equal(final[name], tensor), name


def test_auto_resume_false_starts_over(tmp_path):
    out = tmp_path / "run"
    assert train(out, "after_save:8").returncode == -signal.SIGKILL
    proc = subprocess.run(
        [sys.executable, "-m", "thinktrain", "train", str(ROOT / "recipes/tiny/sft.yaml"), "--output_dir", str(out),
         "--max_steps", "4", "--auto_resume", "false"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming" not in proc.stdout
    import json

    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4  # from step 0, not 8
