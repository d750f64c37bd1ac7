"""accelerate launches with the configs in accelerate_configs/, on this CPU machine with 2 processes: they must
really run 2 processes (world_size=2 in the header) and train the same as one process with the same global batch.
DeepSpeed ZeRO-2/3 run on CPU through thinktrain.distributed's gloo workaround; FSDP is refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = Path(sys.executable).parent / "accelerate"
pytestmark = pytest.mark.slow


def launch(config: str | None, *args, processes: int = 2, script: Path = ROOT / "src/train.py"):
    if config is None:  # one plain process
        cmd = [sys.executable, str(script), *map(str, args)]
    else:
        cmd = [str(ACCELERATE), "launch", "--config_file", str(ROOT / "accelerate_configs" / f"{config}.yaml"),
               "--num_processes", str(processes), "--mixed_precision", "no", str(script), *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


def losses(out: Path) -> list[float]:
    return [h["loss"] for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]


def sft(out: Path, model: str = "scratch:micro", per_device: int = 8) -> list:
    return [ROOT / "recipes/tiny/sft.yaml", "--model_name_or_path", model, "--output_dir", out, "--max_steps", "4",
            "--logging_steps", "1", "--per_device_train_batch_size", per_device, "--ddp_find_unused_parameters",
            "false"]


@pytest.fixture(scope="module")
def single_sft(tmp_path_factory, tiny_model_dir) -> dict:
    """One process, batch 16: the reference for 2 processes x 8."""
    out = {}
    for name, model in (("scratch", "scratch:micro"), ("saved", str(tiny_model_dir))):
        d = tmp_path_factory.mktemp(f"single-{name}")
        proc = launch(None, *sft(d, model, per_device=16))
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = losses(d)
    return out


def test_multi_cpu_runs_two_processes_with_the_losses_of_one(tmp_path, single_sft):
    proc = launch("multi_cpu", *sft(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size=2 on cpu" in proc.stdout
    assert "8 per device x 1 accumulation x 2 = 16 sequences per step" in proc.stdout
    assert losses(tmp_path) == pytest.approx(single_sft["scratch"], abs=1e-5)


# GRPO samples with the global RNG of each process, so 2 processes draw other completions than 1 would and the
# losses could not be compared. This sampler (patched in for the comparison only) seeds every completion from its
# prompt, its index in the prompt's group and the step: the same completions whatever the process layout.
SAME_SAMPLES = """
import hashlib, sys, torch
from trl import GRPOTrainer

def sample(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
    model = self.accelerator.unwrap_model(self.model)
    out, seen = [], {}
    for ids in prompt_ids:
        k = seen[tuple(ids)] = seen.get(tuple(ids), -1) + 1
        key = f"{ids}/{k}/{self.state.global_step}".encode()
        g = torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:6], "big"))
        x, new = torch.tensor([ids]), []
        with torch.no_grad():
            for _ in range(self.max_completion_length):
                probs = torch.softmax(model(x).logits[0, -1].float() / self.temperature, -1)
                t = int(torch.multinomial(probs, 1, generator=g))
                new.append(t)
                x = torch.cat([x, torch.tensor([[t]])], 1)
                if t in self.eos_token_ids:
                    break
        out.append(new)
    return out, None

def distinct_chars(completions, **kwargs):  # a reward that varies between random completions of equal length
    from thinktrain.rewards import completion_text
    return [len(set(completion_text(c))) / 10 for c in completions]

GRPOTrainer._generate_single_turn = sample
from thinktrain.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


def test_multi_cpu_grpo_matches_one_process_on_the_same_completions(tmp_path):
    script = tmp_path / "same_samples.py"
    script.write_text(SAME_SAMPLES)
    runs = {}
    for name, config, per_device in (("one", None, 8), ("two", "multi_cpu", 4)):
        out = tmp_path / name
        args = [ROOT / "recipes/tiny/grpo.yaml", "--output_dir", out, "--max_steps", "3", "--logging_steps", "1",
                "--per_device_train_batch_size", per_device, "--max_completion_length", "16",
                "--ddp_find_unused_parameters", "false", "--reward_funcs", "__main__:distinct_chars", "--reward_weights", "1.0"]
        proc = launch(config, *args, script=script)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = (proc.stdout, json.loads((out / "trainer_state.json").read_text())["log_history"])
    assert "world_size=2 on cpu" in runs["two"][0] and "4 per device x 1 accumulation x 2 = 8 completions" in runs[
        "two"][0]
    one, two = runs["one"][1][:3], runs["two"][1][:3]
    assert [h["num_tokens"] for h in two] == [h["num_tokens"] for h in one]  # the same completions
    assert [h["reward"] for h in two] == pytest.approx([h["reward"] for h in one], abs=1e-6)
    # On-policy, with completions of equal length, the GRPO loss *value* is 0 (group-normalised advantages sum to
    # zero) while its gradient is not: compare the gradients and the weights they lead to.
    assert all(h["grad_norm"] > 1e-3 for h in one)
    assert [h["grad_norm"] for h in two] == pytest.approx([h["grad_norm"] for h in one], rel=1e-4)
    assert [h["loss"] for h in two] == pytest.approx([h["loss"] for h in one], abs=1e-5)
    from safetensors.torch import load_file

    w1, w2 = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for name in w1:
        assert (w1[name] - w2[name]).abs().max() < 1e-5, name


def test_deepspeed_zero2_on_cpu_matches_one_process(tmp_path, single_sft):
    proc = launch("zero2", *sft(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size=2 on cpu" in proc.stdout
    assert losses(tmp_path) == pytest.approx(single_sft["scratch"], abs=1e-5)
    assert (tmp_path / "model.safetensors").is_file()


def test_deepspeed_zero3_on_cpu_saves_a_consolidated_model(tmp_path, single_sft, tiny_model_dir):
    """From a saved checkpoint (ZeRO-3 initialises a scratch model partitioned, with other random draws)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    proc = launch("zero3", *sft(tmp_path, str(tiny_model_dir)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size=2 on cpu" in proc.stdout
    assert losses(tmp_path) == pytest.approx(single_sft["saved"], abs=1e-4)
    # one file with every full-size tensor (not ZeRO shards), that plain transformers loads
    saved = load_file(tmp_path / "model.safetensors")
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    for name, tensor in saved.items():
        assert tensor.shape == reference[name].shape, name
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert not torch.equal(model.state_dict()["model.embed_tokens.weight"], reference["model.embed_tokens.weight"])


def test_deepspeed_zero3_grpo_on_cpu(tmp_path, tiny_model_dir):
    """Two GRPO steps under ZeRO-3 from a saved checkpoint change every weight, and the saved model is whole.
    Next to the recipe's rewards, one that always differs within a group: an untrained model's rewards are often
    all equal, which gives no gradient (the weights would stay put and prove nothing)."""
    from safetensors.torch import load_file

    script = tmp_path / "zero3_grpo.py"
    script.write_text("import sys\n"
                      "def alternating(completions, **kwargs):\n"
                      "    return [float(i % 2) for i in range(len(completions))]\n"
                      "from thinktrain.cli import main\n"
                      "sys.exit(main(['train', *sys.argv[1:]]))\n")
    out = tmp_path / "out"
    proc = launch("zero3", ROOT / "recipes/tiny/grpo.yaml", "--model_name_or_path", tiny_model_dir, "--output_dir",
                  out, "--max_steps", "2", "--per_device_train_batch_size", "4", "--logging_steps", "1",
                  "--reward_funcs", "accuracy", "format", "tag_count", "__main__:alternating",
                  "--reward_weights", "1.0", "0.5", "0.25", "1.0", script=script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size=2 on cpu" in proc.stdout and "8 completions per step" in proc.stdout
    assert len(losses(out)) == 2
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert {n: t.shape for n, t in after.items()} == {n: t.shape for n, t in before.items()}  # whole, not shards
    assert [n for n in before if after[n].equal(before[n])] == []  # every tensor moved


@pytest.mark.parametrize("config", ["multi_cpu", "zero3"])
def test_frozen_weights_stay_frozen_across_processes(tmp_path, tiny_model_dir, config):
    # The demo GRPO's shape (learning_rate 0, one tensor at its own rate) under DDP and ZeRO-3: the frozen weights
    # are excluded from gradient sync / partitioned optimizer state, and the saved model has only the norm moved.
    from safetensors.torch import load_file

    proc = launch(config, *sft(tmp_path, str(tiny_model_dir)), "--learning_rate", "0", "--learning_rate_groups",
                  r'{"model\\.norm\\.weight$": 0.05}')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size=2 on cpu" in proc.stdout and " weights (learning rate 0)" in proc.stdout
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert [n for n in before if not after[n].equal(before[n])] == ["model.norm.weight"]


def test_fsdp_config_loads_and_is_refused_on_cpu_in_one_line(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "accelerate_configs/fsdp.yaml"))
    assert config.distributed_type == "FSDP" and config.fsdp_config["fsdp_version"] == 2
    proc = launch("fsdp", *sft(tmp_path))
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("thinktrain: error:")]
    assert len(errors) == 1, proc.stderr  # one line per run, not one per rank
    assert "FSDP needs GPUs" in errors[0] and "multi_cpu.yaml" in errors[0]
    assert not (tmp_path / "model.safetensors").exists()


# rank 1 alone gets SIGTERM in the middle of step 3: both ranks must finish it, save checkpoint-3 together, stop
PREEMPT_RANK_1 = """
import os, signal, sys
from transformers import Trainer, TrainerCallback

class SignalRank1(TrainerCallback):
    def on_step_begin(self, args, state, control, **kw):
        if os.environ.get("RANK") == "1" and state.global_step == 2 and os.environ.get("PREEMPT") == "1":
            os.kill(os.getpid(), signal.SIGTERM)

init = Trainer.__init__
def patched_init(self, *a, **kw):
    init(self, *a, **kw)
    self.add_callback(SignalRank1())
Trainer.__init__ = patched_init

from thinktrain.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


def test_a_rank_preempted_alone_stops_every_rank_at_one_checkpoint_reported_once(tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "preempt_rank_1.py"
    script.write_text(PREEMPT_RANK_1)
    whole, out = tmp_path / "whole", tmp_path / "run"
    args = [*sft(whole)[:-2], "--max_steps", "6", "--save_strategy", "no"]
    assert launch("multi_cpu", *args, script=script).returncode == 0
    os.environ["PREEMPT"] = "1"
    try:
        proc = launch("multi_cpu", *[out if a == whole else a for a in args], script=script)
    finally:
        del os.environ["PREEMPT"]
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("thinktrain: error:")]
    assert errors == [f"thinktrain: error: preempted (a signal on another rank) at step 3: saved {out / 'checkpoint-3'}; "
                      f"the same command resumes from it (exit 75)"], proc.stderr[-3000:]
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-3"]
    rerun = launch("multi_cpu", *[out if a == whole else a for a in args], script=script)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming   from {out / 'checkpoint-3'}" in rerun.stdout
    expected, final = load_file(whole / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(final[k].equal(v) for k, v in expected.items())


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3", "zero3_offload", "fsdp", "multi_cpu"])
def test_every_config_loads(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "accelerate_configs" / f"{name}.yaml"))
    assert config.num_processes == (2 if name == "multi_cpu" else 8)
    assert config.mixed_precision == ("no" if name == "multi_cpu" else "bf16")


@pytest.mark.parametrize("group_alive", [True, False])
def test_a_launched_cpu_worker_exits_at_once_even_when_deepspeed_already_ended_the_group(monkeypatch, group_alive):
    """Under ZeRO-3 the process group is gone when training returns; the worker must still skip interpreter
    teardown (where a rank aborted ~1 in 25 launches, bench/launch_loop.sh)."""
    import torch.distributed as dist

    from thinktrain import distributed

    class Exited(Exception):
        pass

    calls = []
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed, "_no_accelerator", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: group_alive)
    monkeypatch.setattr(dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroy"))
    monkeypatch.setattr(distributed.os, "_exit", lambda code: (_ for _ in ()).throw(Exited(code)))
    with pytest.raises(Exited) as exited:
        distributed.end_processes()
    assert exited.value.args == (0,) and calls == (["barrier", "destroy"] if group_alive else [])


def test_a_callers_own_process_is_never_exited(monkeypatch):
    import torch.distributed as dist

    from thinktrain import distributed

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.os, "_exit", lambda code: pytest.fail("exited the caller's process"))
    distributed.end_processes()


def test_the_slurm_script_passes_preemption_on_and_requeues(tmp_path):
    """accelerate_configs/slurm_multinode.sh with stand-ins for srun, scontrol and accelerate: USR1 to the batch
    script reaches the run as SIGTERM; the run's exit 75 makes the script requeue its job and exit 75 itself."""
    import signal as sig
    import time

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {
        "srun": 'exec "$@"',
        "scontrol": 'if [ "$1" = show ]; then echo node1; else echo "$@" >> "$LOG"; fi',
        # the run: ready, then on SIGTERM "saves" and exits 75 as thinktrain does
        "accelerate": 'trap \'echo saved >> "$LOG"; exit 75\' TERM; echo started >> "$LOG"; '
                      'while true; do sleep 0.1; done',
    }
    for name, body in fakes.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log), "SLURM_JOB_NODELIST": "node1",
           "SLURM_NNODES": "1", "SLURM_JOB_ID": "1234", "SLURM_PROCID": "0"}
    job = subprocess.Popen(["bash", str(ROOT / "accelerate_configs/slurm_multinode.sh"), "recipes/tiny/sft.yaml"],
                           env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(100):  # until the run has started
        if log.exists() and "started" in log.read_text():
            break
        time.sleep(0.05)
    job.send_signal(sig.SIGUSR1)
    out, err = job.communicate(timeout=30)
    assert job.returncode == 75, err
    assert log.read_text().split("\n") == ["started", "saved", "requeue 1234", ""]
    assert "requeueing job 1234" in out
