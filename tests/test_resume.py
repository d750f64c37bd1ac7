"""Auto-resume after a hard kill, a preemption signal or a torn checkpoint: a run SIGKILLed after a checkpoint (or in
the middle of writing one), preempted by SIGTERM/SIGUSR1 with no periodic checkpoint, or whose latest checkpoint was
truncated afterwards, is rerun with the same command and ends with exactly the weights of a run that was never
interrupted (CPU, fixed seed): SFT, GRPO, pretraining and expert iteration. The killed run's output_dir lock dies with
it (the kernel releases it), so the rerun just takes it."""

from __future__ import annotations

import json
import os
import re
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

    def on_step_begin(self, args, state, control, **kw):
        # a preemption signal in the middle of step `step` (the run must finish that step, then save it)
        if when.startswith("SIG") and state.global_step == step - 1 and not os.environ.get("SIGNALLED"):
            os.environ["SIGNALLED"] = "1"
            os.kill(os.getpid(), getattr(signal, when))

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
# no periodic checkpoint: what a preempted run has is the one it saves when the signal comes
PREEMPT_ARGS = {
    "sft": ["--max_steps", "12", "--save_strategy", "no", "--logging_steps", "4"],
    "grpo": [*ARGS["grpo"][:2], "--save_strategy", "no", *ARGS["grpo"][6:]],
    "pretrain": ["--model_name_or_path", "scratch:micro", "--max_steps", "8", "--tokenizer_train_samples", "500",
                 "--vocab_size", "300", "--max_length", "64", "--per_device_train_batch_size", "4", "--eval_strategy",
                 "no", "--bf16", "false"],
    # worked_split: every round trains (a micro model solves nothing, so it keeps nothing of its own)
    "rft": ["--worked_split", "worked", "--max_steps", "4", "--prompts_per_round", "8", "--num_generations", "2",
            "--max_completion_length", "16"],
}


def train(out: Path, kill_at: str | None = None, task: str = "sft", args: list | None = None) -> subprocess.CompletedProcess:
    argv = ["train", str(ROOT / f"recipes/tiny/{task}.yaml"), "--output_dir", str(out),
            *(ARGS[task] if args is None else args)]
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


# --------------------------------------------------------------------------- preemption


@pytest.fixture(scope="module")
def uninterrupted_runs(tmp_path_factory):
    """task -> the final weights of a run never interrupted, with PREEMPT_ARGS (made once, on first use)."""
    made = {}

    def get(task):
        if task not in made:
            out = tmp_path_factory.mktemp(f"uninterrupted_{task}")
            proc = train(out, task=task, args=PREEMPT_ARGS[task])
            assert proc.returncode == 0, proc.stderr[-2000:]
            made[task] = weights(out)
        return made[task]

    return get


def assert_same_weights(out: Path, expected: dict):
    import torch

    final = weights(out)
    assert final.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(final[name], tensor), name


@pytest.mark.parametrize("task,sig,step,steps_left", [
    ("sft", "SIGTERM", 6, 6),
    ("grpo", "SIGUSR1", 2, 1),
    ("pretrain", "SIGTERM", 5, 3),
])
def test_a_preempted_run_saves_its_step_exits_75_and_resumes_to_the_same_weights(tmp_path, uninterrupted_runs, task,
                                                                                  sig, step, steps_left):
    out = tmp_path / "run"
    preempted = train(out, f"{sig}:{step}", task=task, args=PREEMPT_ARGS[task])
    assert preempted.returncode == 75, preempted.stderr[-2000:]
    errors = [line for line in preempted.stderr.splitlines() if line.startswith("thinktrain: error:")]
    assert errors == [f"thinktrain: error: preempted ({sig}) at step {step}: saved {out / f'checkpoint-{step}'}; the "
                      f"same command resumes from it (exit 75)"]
    assert [p.name for p in out.glob("checkpoint-*")] == [f"checkpoint-{step}"]  # the step it was in, finished
    assert not (out / "model.safetensors").exists()  # not mistaken for a finished run
    assert not (out / "_thinktrain.owner").exists()  # released on the way out

    rerun = train(out, task=task, args=PREEMPT_ARGS[task])
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming   from {out / f'checkpoint-{step}'}" in rerun.stdout
    assert f"steps run in this process: {steps_left}" in rerun.stdout
    assert_same_weights(out, uninterrupted_runs(task))


@pytest.mark.parametrize("where", ["training", "sampling"])
def test_a_preempted_rft_round_resumes_to_the_same_weights(tmp_path, uninterrupted_runs, where):
    """Preempted in round 1's training (a checkpoint in round-1/, resumed) or in round 2's sampling (its pairs kept:
    the rerun trains on exactly them)."""
    out = tmp_path / "run"
    if where == "training":  # in round 1's step 2
        preempted = train(out, "SIGTERM:2", task="rft", args=PREEMPT_ARGS["rft"])
    else:  # the signal comes while round 2 samples: its own sampler sends it
        preempted = subprocess.run(
            [sys.executable, "-c", SAMPLING_CHILD, "train", str(ROOT / "recipes/tiny/rft.yaml"), "--output_dir",
             str(out), *PREEMPT_ARGS["rft"]],
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True, cwd=ROOT)
    assert preempted.returncode == 75, preempted.stderr[-2000:]
    errors = [line for line in preempted.stderr.splitlines() if line.startswith("thinktrain: error:")]
    assert len(errors) == 1 and errors[0].startswith("thinktrain: error: preempted (SIGTERM)"), errors
    stopped = out / ("round-1" if where == "training" else "round-2")
    assert (stopped / "sampling.json").is_file() and not (stopped / "round.json").exists()
    if where == "training":
        assert (stopped / "checkpoint-2" / "trainer_state.json").is_file()

    rerun = train(out, task="rft", args=PREEMPT_ARGS["rft"])
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    ran = [line for line in rerun.stdout.splitlines() if line.startswith("steps run in this process")]
    if where == "training":
        assert f"resuming   from {stopped / 'checkpoint-2'}" in rerun.stdout
        assert ran == ["steps run in this process: 2", "steps run in this process: 4"]  # round 1's rest, round 2
    else:
        assert ran == ["steps run in this process: 4"]  # round 2, on the pairs sampled before the signal
    assert not list(stopped.glob("checkpoint-*"))  # the round's model is saved: its checkpoint goes
    assert_same_weights(out, uninterrupted_runs("rft"))


SAMPLING_CHILD = """
import os, signal, sys
from thinktrain import rft

sample = rft.sample_and_keep
def sample_then_signal(model, tokenizer, rows, rewards, weights, args, seed, tools=()):
    if seed == args_seed + 2:  # round 2
        os.kill(os.getpid(), signal.SIGTERM)
    return sample(model, tokenizer, rows, rewards, weights, args, seed, tools)
args_seed = 42
rft.sample_and_keep = sample_then_signal

from thinktrain.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_signal_before_training_starts_exits_75_at_once(tmp_path):
    """Nothing trained yet, nothing to save: one line, exit 75, no checkpoint."""
    child = ("import os, signal, sys\nfrom thinktrain import run\nstart = run.start\n"
             "def start_then_signal(recipe):\n    os.kill(os.getpid(), signal.SIGUSR1)\n    return start(recipe)\n"
             "run.start = start_then_signal\nfrom thinktrain.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", child, "train", str(ROOT / "recipes/tiny/sft.yaml"), "--output_dir",
                           str(tmp_path / "run")], env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 75, proc.stderr[-2000:]
    assert "thinktrain: preempted (SIGUSR1) before training started: nothing to save; rerun the same command " \
           "(exit 75)" in proc.stdout
    assert not list((tmp_path / "run").glob("checkpoint-*"))


# --------------------------------------------------------------------------- torn checkpoints


@pytest.mark.parametrize("victim", ["model.safetensors", "optimizer.pt"])
def test_a_truncated_latest_checkpoint_is_named_and_the_one_before_resumes_to_the_same_weights(tmp_path, uninterrupted,
                                                                                                victim):
    out = tmp_path / "run"
    assert train(out, "after_save:8").returncode == -signal.SIGKILL
    f = out / "checkpoint-8" / victim
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # torn after it was marked complete

    rerun = train(out)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    skipped = [line for line in rerun.stdout.splitlines() if "skipping" in line]
    assert len(skipped) == 1 and skipped[0].startswith(f"  skipping   checkpoint-8: {victim}") \
        and "(truncated)" in skipped[0], rerun.stdout
    assert f"resuming   from {out / 'checkpoint-4'}" in rerun.stdout
    assert "steps run in this process: 8" in rerun.stdout
    assert "Traceback" not in rerun.stderr
    assert_same_weights(out, uninterrupted)


# --------------------------------------------------------------------------- disk full

# The run in a mount namespace of its own, its output_dir on a tmpfs with room for one checkpoint and a half: the
# second save meets a real ENOSPC from the kernel. What the full disk holds afterwards is copied out for the test.
DISK_FULL_CHILD = """
import os, shutil, sys
from thinktrain.sandbox_zygote import CLONE_NEWNS, CLONE_NEWUSER, map_to_root, mount, unshare
disk, size, copy_to = sys.argv[1:4]
uid, gid = os.getuid(), os.getgid()
unshare(CLONE_NEWUSER | CLONE_NEWNS)
map_to_root(uid, gid)
mount("tmpfs", disk, "tmpfs", 0, f"size={size}")
from thinktrain.cli import main
code = main(sys.argv[4:])
shutil.copytree(disk, copy_to)
sys.exit(code)
"""


def test_a_full_disk_while_saving_stops_in_one_line_and_the_checkpoint_before_resumes(tmp_path, uninterrupted):
    disk, after = tmp_path / "disk", tmp_path / "after"
    disk.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", DISK_FULL_CHILD, str(disk), "2200k", str(after), "train",
         str(ROOT / "recipes/tiny/sft.yaml"), "--output_dir", str(disk / "run"), *ARGS["sft"]],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True, cwd=ROOT)
    if "unshare: Operation not permitted" in proc.stderr:
        pytest.skip("this machine forbids user namespaces (needed for a tmpfs of our own)")
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("thinktrain: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert re.fullmatch(
        rf"thinktrain: error: no space left on device writing {disk / 'run' / 'checkpoint-8'} \([\d.]+ MiB free\); "
        r"removed the partial checkpoint-8; checkpoint-4 is whole and the same command resumes from it; free space "
        r"or set save_total_limit", errors[0]), errors[0]
    assert "Traceback" not in proc.stderr
    run = after / "run"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-4"]

    rerun = train(run)  # on a disk with room
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming   from {run / 'checkpoint-4'}" in rerun.stdout
    assert_same_weights(run, uninterrupted)
