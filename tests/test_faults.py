"""Faults during a run (guard.guard_finite, output_lock.lock_output_dir): a NaN/inf loss, gradient norm or weight
stops the run with one line (exit 1) and leaves only finite weights in output_dir; a second run on the same
output_dir is refused in one line while the first lives, and a killed run's lock is free at once (the kernel
releases it). (A SIGKILLed run's rerun: tests/test_resume.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from thinktrain import output_lock, run
from thinktrain.errors import RunError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def thinktrain(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thinktrain", *map(str, args)], env=ENV, capture_output=True,
                          text=True, cwd=ROOT)


def error_lines(proc) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [line for line in proc.stderr.splitlines() if "thinktrain: error" in line]


def finite_weights(path: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    tensors = load_file(path)
    for name, tensor in tensors.items():
        assert torch.isfinite(tensor).all(), f"{path}: {name}"
    return tensors


# --------------------------------------------------------------------------- NaN / inf, end to end


@pytest.mark.slow
def test_a_nan_run_stops_in_one_line_keeps_its_good_checkpoints_and_goes_on_at_a_lower_rate(tmp_path):
    import torch

    out = tmp_path / "run"
    # a peak learning rate of 1e6 reached over 4 warmup steps: step 1 trains at 0, step 2 at 2.5e5, then NaN
    proc = thinktrain("train", ROOT / "recipes/tiny/sft.yaml", "--output_dir", out, "--max_steps", 4,
                      "--learning_rate", "1e6", "--save_strategy", "steps", "--save_steps", 1)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = error_lines(proc)
    assert len(lines) == 1 and lines[0] == proc.stderr.splitlines()[-1]
    m = re.fullmatch(r"thinktrain: error: step (\d+): the (loss|gradient norm) is (nan|inf|-inf); the last good "
                     r"checkpoint is (\S+) \(nothing later was saved\): keep going with --resume_from_checkpoint "
                     r"(\S+) and a lower --learning_rate \(now 1e\+06\)", lines[0])
    assert m, lines[0]
    step, last = int(m[1]), Path(m[4])
    assert last == Path(m[5]) == out / f"checkpoint-{step - 1}"
    # nothing of the faulty step was saved: no final model, no checkpoint from it on, every checkpoint finite
    assert not (out / "model.safetensors").exists() and not (out / "recipe.yaml").exists()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [f"checkpoint-{i}" for i in range(1, step)]
    for checkpoint in out.glob("checkpoint-*"):
        finite_weights(checkpoint / "model.safetensors")
    assert not output_lock.is_locked(out)  # released on the error

    # keep going from checkpoint-1 (the last one before the rate took off) at a lower rate: the resumed schedule
    # uses it (the Trainer alone would restore the checkpoint's 1e6)
    before = finite_weights(out / "checkpoint-2/model.safetensors")
    proc = thinktrain("train", ROOT / "recipes/tiny/sft.yaml", "--output_dir", out, "--max_steps", 3,
                      "--learning_rate", "1e-3", "--resume_from_checkpoint", out / "checkpoint-1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "  lr         0.001 from step 1 on (the checkpoint had 1e+06)" in proc.stdout
    start, final = finite_weights(out / "checkpoint-1/model.safetensors"), finite_weights(out / "model.safetensors")
    # two Adam steps at <= 1e-3 move a weight by ~1e-3 at most (at the checkpoint's rate: by ~1e5, or to NaN)
    assert max((final[k] - start[k]).abs().max().item() for k in start) < 1e-2
    after = finite_weights(out / "checkpoint-2/model.safetensors")  # an earlier checkpoint is never overwritten
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not output_lock.is_locked(out)


# --------------------------------------------------------------------------- NaN / inf, each check on a toy model


def toy_trainer(tmp_path, fault: str, save_strategy: str = "no"):
    """A transformers Trainer on one 4-weight parameter whose loss goes wrong at step 2 in the way `fault` says."""
    import torch
    from torch import nn
    from transformers import Trainer, TrainingArguments

    class Toy(nn.Module):
        calls = 0

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4))

        def forward(self, x):
            self.calls += 1
            loss = (self.w * x).sum()
            if self.calls < 2:
                return {"loss": loss * 0}  # step 1 leaves the weights as they are
            if fault == "loss":  # the loss itself is nan
                return {"loss": loss * float("nan")}
            if fault == "gradient":  # a finite loss (0) whose gradient is nan: d sqrt(|w * 0|) / dw
                return {"loss": torch.sqrt((self.w * 0).abs()).sum()}
            return {"loss": loss * 1e15}  # weight: finite loss and gradient; the SGD step overflows w to -inf

    rows = [{"x": torch.ones(4)} for _ in range(4)]
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=1,
                             learning_rate=1e30, optim="sgd", lr_scheduler_type="constant", max_grad_norm=0,
                             logging_steps=1, save_strategy=save_strategy, save_steps=1, report_to="none",
                             use_cpu=True, disable_tqdm=True, dataloader_pin_memory=False, seed=0)
    trainer = Trainer(model=Toy(), args=args, train_dataset=rows)
    recipe = SimpleNamespace(script_args=SimpleNamespace(learning_rate_groups=None, auto_resume=True),
                             training_args=args, model_args=SimpleNamespace(use_peft=False))
    return trainer, recipe


@pytest.mark.slow
@pytest.mark.parametrize("fault,message", [
    ("loss", "step 2: the loss is nan; no checkpoint was saved before it: rerun with a lower --learning_rate "
             "(now 1e+30)"),
    ("gradient", "step 2: the gradient norm is nan; no checkpoint was saved before it: rerun with a lower "
                 "--learning_rate (now 1e+30)"),
])
def test_a_nan_loss_or_gradient_norm_stops_before_the_optimizer_step(tmp_path, fault, message):
    import torch

    trainer, recipe = toy_trainer(tmp_path, fault)
    with pytest.raises(RunError) as e:
        run.train(trainer, recipe)
    assert str(e.value) == message
    assert torch.isfinite(trainer.model.w).all()  # stopped before the step that would have written the NaN
    assert trainer.state.global_step == 1
    assert not output_lock.is_locked(recipe.training_args.output_dir)


@pytest.mark.slow
def test_non_finite_weights_are_never_saved_as_a_checkpoint(tmp_path):
    # the loss and gradient are finite, the optimizer step overflows the weights: the check before the save sees it
    trainer, recipe = toy_trainer(tmp_path, "weight", save_strategy="steps")
    with pytest.raises(RunError) as e:
        run.train(trainer, recipe)
    out = Path(recipe.training_args.output_dir)
    assert str(e.value) == (f"step 2: a weight is -inf; the last good checkpoint is {out / 'checkpoint-1'} (nothing "
                            f"later was saved): keep going with --resume_from_checkpoint {out / 'checkpoint-1'} and a "
                            f"lower --learning_rate (now 1e+30)")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    finite_weights(out / "checkpoint-1/model.safetensors")


@pytest.mark.slow
def test_non_finite_weights_are_never_saved_as_the_final_model(tmp_path):
    trainer, recipe = toy_trainer(tmp_path, "weight")  # no checkpoints: only finish's check stands in the way
    result = run.train(trainer, recipe)
    with pytest.raises(RunError) as e:
        run.finish(trainer, result, recipe)
    assert str(e.value) == ("step 2: a weight is -inf; no checkpoint was saved before it: rerun with a lower "
                            "--learning_rate (now 1e+30)")
    assert not list(Path(recipe.training_args.output_dir).glob("*.safetensors"))


# --------------------------------------------------------------------------- the output_dir lock


def args_for(out: Path, process_index: int = 0):
    return SimpleNamespace(output_dir=str(out), process_index=process_index)


HOLD = ("import sys, time; from types import SimpleNamespace; from thinktrain import output_lock; "
        "output_lock.lock_output_dir(SimpleNamespace(output_dir=sys.argv[1], process_index=0)); "
        "print('locked', flush=True); time.sleep(300)")


@pytest.fixture
def holder(tmp_path):
    """Another live process that holds tmp_path's lock, as a run's main process does."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    proc.kill()
    proc.wait()


def test_the_lock_names_its_owner_and_is_released(tmp_path):
    out = tmp_path / "new" / "run"  # made if missing
    output_lock.lock_output_dir(args_for(out))
    owner = json.loads((out / output_lock.OWNER).read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    assert output_lock.is_locked(out)
    output_lock.lock_output_dir(args_for(out))  # the same process again: already its own
    output_lock.unlock_output_dir(args_for(out))
    assert not output_lock.is_locked(out) and os.listdir(out) == [output_lock.LOCK]


def test_a_live_run_refuses_a_second_one(tmp_path, holder):
    since = json.loads((tmp_path / output_lock.OWNER).read_text())["since"]
    with pytest.raises(RunError) as e:
        output_lock.lock_output_dir(args_for(tmp_path))
    assert str(e.value) == (f"output_dir {tmp_path} is in use by another run (pid {holder.pid} on "
                            f"{socket.gethostname()}, since {since}); wait for it to end or use another output_dir")
    output_lock.unlock_output_dir(args_for(tmp_path))  # not ours: nothing happens
    assert output_lock.is_locked(tmp_path) and (tmp_path / output_lock.OWNER).is_file()


def test_a_killed_run_leaves_no_lock_behind(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert not output_lock.is_locked(tmp_path)  # the kernel released it: nothing stale to judge or take over
    output_lock.lock_output_dir(args_for(tmp_path))
    assert json.loads((tmp_path / output_lock.OWNER).read_text())["pid"] == os.getpid()
    output_lock.unlock_output_dir(args_for(tmp_path))


def test_a_refusal_without_owner_file_still_says_in_use(tmp_path, holder):
    (tmp_path / output_lock.OWNER).unlink()
    with pytest.raises(RunError, match=r"^output_dir .* is in use by another run; wait for it to end"):
        output_lock.lock_output_dir(args_for(tmp_path))


def test_only_the_main_process_of_a_launch_locks(tmp_path, holder):
    # rank 1 of a launch whose rank 0 (here: another live process) holds the lock goes on under that lock
    output_lock.lock_output_dir(args_for(tmp_path, process_index=1))
    output_lock.unlock_output_dir(args_for(tmp_path, process_index=1))
    assert output_lock.is_locked(tmp_path)


def test_racing_runs_end_with_exactly_one_owner(tmp_path):
    code = ("import sys; from types import SimpleNamespace; from thinktrain import output_lock; "
            "from thinktrain.errors import RunError\n"
            "print('ready', flush=True); sys.stdin.readline()\n"  # all four try at once
            "try:\n"
            f"    output_lock.lock_output_dir(SimpleNamespace(output_dir={str(tmp_path)!r}, process_index=0)); "
            "print('owner')\n"
            "except RunError: print('refused')\n"
            "sys.stdout.flush(); sys.stdin.readline()\n")  # the owner holds the lock until the test has all answers
    procs = [subprocess.Popen([sys.executable, "-c", code], env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 4
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = sorted(p.stdout.readline().strip() for p in procs)
    for p in procs:
        p.communicate("")
    assert results == ["owner", "refused", "refused", "refused"]
    assert not output_lock.is_locked(tmp_path)  # released when its owner exited


@pytest.mark.slow
def test_a_second_run_on_a_busy_output_dir_is_refused_in_one_line(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        since = json.loads((out / output_lock.OWNER).read_text())["since"]
        proc = thinktrain("train", ROOT / "recipes/tiny/sft.yaml", "--output_dir", out, "--max_steps", 1)
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert error_lines(proc) == [f"thinktrain: error: output_dir {out} is in use by another run (pid {holder.pid} "
                                     f"on {socket.gethostname()}, since {since}); wait for it to end or use another "
                                     f"output_dir"]
        assert sorted(os.listdir(out)) == [output_lock.LOCK, output_lock.OWNER]  # nothing written beside them
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- torn checkpoints, full disks, ranks


def _checkpoint(path: Path) -> Path:
    """A whole checkpoint-like folder: a safetensors file, a torch file, trainer_state.json."""
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    save_file({"w": torch.arange(16.0)}, path / "model.safetensors")
    torch.save({"state": torch.ones(64)}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text('{"global_step": 4}')
    return path


def _cut(f: Path, keep: int):
    f.write_bytes(f.read_bytes()[:keep])


def test_torn_names_what_is_wrong_with_a_checkpoint(tmp_path):
    from thinktrain.checkpoints import torn

    assert torn(_checkpoint(tmp_path / "whole")) is None
    c = _checkpoint(tmp_path / "weights")
    _cut(c / "model.safetensors", 100)
    assert torn(c) == "model.safetensors is 100 bytes, its header says 128 (truncated)"
    c = _checkpoint(tmp_path / "optimizer")
    size = (c / "optimizer.pt").stat().st_size
    _cut(c / "optimizer.pt", size - 10)
    assert torn(c) == f"optimizer.pt ({size - 10:,} bytes) is not a whole torch file (truncated)"
    c = _checkpoint(tmp_path / "state")
    (c / "trainer_state.json").write_text('{"global_st')
    assert torn(c) == "trainer_state.json is unreadable (JSONDecodeError)"
    c = _checkpoint(tmp_path / "header")
    _cut(c / "model.safetensors", 5)
    assert torn(c) == "model.safetensors is 5 bytes, shorter than its header"
    c = _checkpoint(tmp_path / "unmarked")
    (c / "trainer_state.json").unlink()
    assert torn(c) == "interrupted while saving (no trainer_state.json)"


def test_a_full_disk_is_told_from_other_failures(tmp_path):
    import errno

    from thinktrain.checkpoints import disk_full

    def save_model():
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 240512 vs 240404")

    assert disk_full(OSError(errno.ENOSPC, "No space left on device"), str(tmp_path))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0") from inner
    except RuntimeError as e:
        assert disk_full(e, str(tmp_path))  # the cause says it
    try:
        save_model()
    except RuntimeError as e:
        assert not disk_full(e, str(tmp_path))  # a failed save, but this disk has room: not called a full disk
    assert not disk_full(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), str(tmp_path))


@pytest.mark.parametrize("rank,everywhere,printed", [
    ("0", True, "thinktrain: error: the loss is nan\n"),
    ("1", True, ""),  # rank 0 says it for the run
    ("1", False, "thinktrain: error: rank 1: no space left on device\n"),  # this rank's own fault
])
def test_a_fault_is_one_line_per_run_not_per_rank(monkeypatch, capsys, rank, everywhere, printed):
    from thinktrain.cli import fail

    monkeypatch.setenv("RANK", rank)
    message = "the loss is nan" if everywhere else "no space left on device"
    assert fail(message, code=1, everywhere=everywhere) == 1
    assert capsys.readouterr().err == printed


def test_the_structure_skeleton_is_built_under_zero3_and_leaves_zero3_on():
    """models.skeleton (LoRA targets, modules_to_save, lr groups checked before the weights load) sets a ZeRO-3
    config aside while it builds on the meta device (zero.Init would partition real tensors) and puts it back."""
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    from thinktrain.models import skeleton

    zero3 = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_batch_size": 1})  # registers itself
    try:
        assert is_deepspeed_zero3_enabled()
        model = skeleton(SimpleNamespace(model_name_or_path="scratch:micro", model_revision=None),
                         SimpleNamespace(trust_remote_code=False))
        assert model is not None and next(model.parameters()).device.type == "meta"
        assert "model.layers.0.self_attn.q_proj" in dict(model.named_modules())
        assert is_deepspeed_zero3_enabled()  # the run's own config is back
    finally:
        unset_hf_deepspeed_config()
        del zero3
