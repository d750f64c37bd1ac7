"""Recipes through the real TRL trainers on tiny models (CPU, seconds each)."""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CPU = ["--bf16", "false", "--push_to_hub", "false", "--report_to", "none"]

pytestmark = pytest.mark.slow


def history(out: Path) -> list[dict]:
    return json.loads((out / "trainer_state.json").read_text())["log_history"]


def test_tiny_sft_trains_and_saves(tmp_path, run_cli):
    out = tmp_path / "sft"
    code, stdout, err = run_cli("train", ROOT / "recipes/tiny/sft.yaml", "--output_dir", out)
    assert code == 0, err
    assert "thinktrain sft: scratch:micro" in stdout and "world_size=1" in stdout and "precision fp32" in stdout
    losses = [h["loss"] for h in history(out) if "loss" in h]
    assert len(losses) >= 4 and losses[-1] < 0.7 * losses[0]  # a random byte-level model learns fast
    for name in ("model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "recipe.yaml",
                 "train_results.json"):
        assert (out / name).is_file(), name
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["task"] == "sft" and recipe["output_dir"] == str(out) and recipe["max_steps"] == 40

    # The output is an ordinary checkpoint: plain transformers loads it.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "llama"
    assert AutoTokenizer.from_pretrained(out).convert_tokens_to_ids("<think>") is not None


def test_learning_rate_groups_hold_their_rate_through_a_resume(tmp_path, run_cli, tiny_model_dir):
    # lr 0 for the final norm: exactly unchanged while the rest trains, also across a checkpoint resume (the
    # optimizer state must load into the same groups).
    from safetensors.torch import load_file

    out = tmp_path / "groups"
    args = ["train", ROOT / "recipes/tiny/sft.yaml", "--model_name_or_path", tiny_model_dir, "--output_dir", out,
            "--save_strategy", "steps", "--save_steps", "2", "--learning_rate_groups",
            r'{"model\\.norm\\.weight$": 0, "embed_tokens": 0.01}']
    code, stdout, err = run_cli(*args, "--max_steps", "2")
    assert code == 0, err
    assert "  frozen     " in stdout and " weights (learning rate 0)" in stdout
    assert "lr 0.01 for 1 parameter(s) matching 'embed_tokens': model.embed_tokens.weight" in stdout
    code, stdout, err = run_cli(*args, "--max_steps", "4")
    assert code == 0, err
    assert f"resuming   from {out / 'checkpoint-2'}" in stdout
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())  # the saved recipe reproduces the run
    assert recipe["learning_rate_groups"] == {r"model\.norm\.weight$": 0.0, "embed_tokens": 0.01}
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    assert after["model.norm.weight"].equal(before["model.norm.weight"])
    for name in ("model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"):
        assert not after[name].equal(before[name]), name
    # Adam moves a weight by about lr per step, and the group keeps the recipe's schedule (4 warm-up steps:
    # 0, 0.25, 0.5, 0.75 x lr): at most 1.5 x 0.01 for the embeddings, 1.5 x 3e-3 for the rest.
    def moved(name):
        return (after[name] - before[name]).abs().max().item()

    assert 0.012 < moved("model.embed_tokens.weight") <= 0.015 + 1e-4
    assert moved("model.layers.0.mlp.up_proj.weight") <= 0.0045 + 1e-4


@pytest.mark.parametrize("recipe", ["sft", "grpo"])
def test_learning_rate_zero_freezes_all_but_the_fast_group(tmp_path, run_cli, tiny_model_dir, recipe, monkeypatch):
    # The demo's GRPO shape: learning_rate 0 and one tensor at its own rate. Everything else is frozen (no
    # gradients at all), so it is bit-identical after training, and the one tensor moves.
    from safetensors.torch import load_file

    extra = []
    if recipe == "grpo":  # an untrained model earns equal rewards (no gradient): a reward that always differs
        (tmp_path / "lr_group_rewards.py").write_text(
            "def alternating(completions, **kwargs):\n    return [float(i % 2) for i in range(len(completions))]\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        extra = ["--reward_funcs", "lr_group_rewards:alternating", "--reward_weights", "1.0"]
    out = tmp_path / recipe
    code, stdout, err = run_cli("train", ROOT / f"recipes/tiny/{recipe}.yaml", "--model_name_or_path", tiny_model_dir,
                                "--output_dir", out, "--max_steps", "2", "--learning_rate", "0",
                                "--learning_rate_groups", r'{"model\\.norm\\.weight$": 0.05}', *extra)
    assert code == 0, err
    before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
    hidden = before["model.norm.weight"].numel()
    total = sum(t.numel() for t in before.values())
    assert f"  frozen     {total - hidden:,} of {total:,} weights (learning rate 0)" in stdout
    assert r"lr 0.05 for 1 parameter(s) matching 'model\.norm\.weight$': model.norm.weight" in stdout
    changed = [n for n in before if not after[n].equal(before[n])]
    assert changed == ["model.norm.weight"]  # the fast group moved, nothing else did


@pytest.mark.parametrize("extra,message", [
    (["--learning_rate_groups", '{"ln_f": 0.1}'],
     "learning_rate_groups: 'ln_f' matches no trainable parameter (names look like"),
    (["--learning_rate_groups", '{"ln_f": 0}'],
     "learning_rate_groups: 'ln_f' matches no trainable parameter (names look like"),
    (["--learning_rate", "0", "--learning_rate_groups", '{"ln_f": 0.1}'],  # not "nothing would train"
     "learning_rate_groups: 'ln_f' matches no trainable parameter (names look like"),
    (["--learning_rate", "0", "--learning_rate_groups", '{"norm": 0}'],
     "learning_rate_groups: every parameter has learning rate 0, so nothing would train"),
])
def test_learning_rate_groups_that_cannot_work_stop_with_one_line(tmp_path, run_cli, tiny_model_dir, extra, message):
    code, _, err = run_cli("train", ROOT / "recipes/tiny/sft.yaml", "--model_name_or_path", tiny_model_dir,
                           "--output_dir", tmp_path / "x", "--max_steps", "1", *extra)
    assert code == 2
    assert message in err


def test_tiny_grpo_logs_each_reward(tmp_path, run_cli):
    out = tmp_path / "grpo"
    code, stdout, err = run_cli("train", ROOT / "recipes/tiny/grpo.yaml", "--output_dir", out, "--max_steps", "3")
    assert code == 0, err
    assert "thinktrain grpo" in stdout and "rewards accuracy, format, tag_count" in stdout
    logged = {k for h in history(out) for k in h}
    for name in ("accuracy", "format", "tag_count"):
        assert f"rewards/{name}/mean" in logged
    assert "reward" in logged and "frac_reward_zero_std" in logged
    assert (out / "model.safetensors").is_file()


def test_auto_resume_picks_last_complete_checkpoint(tmp_path, run_cli):
    out = tmp_path / "resume"
    args = ["train", ROOT / "recipes/tiny/sft.yaml", "--output_dir", out, "--max_steps", "4",
            "--save_strategy", "steps", "--save_steps", "2"]
    assert run_cli(*args)[0] == 0
    (out / "checkpoint-6").mkdir()  # half-written: no trainer_state.json, must be ignored
    code, stdout, _ = run_cli(*args[:-6], "--output_dir", out, "--max_steps", "6", "--save_strategy", "steps",
                              "--save_steps", "2")
    assert code == 0
    assert f"resuming   from {out / 'checkpoint-4'}" in stdout
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and (out / "checkpoint-6" / "trainer_state.json").is_file()


@pytest.mark.parametrize("recipe,extra,base", [
    ("recipes/sft_gsm8k.yaml", ["--max_steps", "2", "--eval_strategy", "no"], "bf16"),
    ("recipes/grpo_gsm8k.yaml", ["--max_steps", "1", "--use_vllm", "false"], "bf16"),
    ("recipes/sft_gsm8k.yaml", ["--max_steps", "2", "--eval_strategy", "no", "--use_peft", "true",
                                "--load_in_4bit", "true", "--lora_target_modules", "q_proj", "v_proj"], "4-bit"),  # QLoRA
    ("recipes/grpo_gsm8k_lora.yaml", ["--max_steps", "1", "--load_in_4bit", "false"], "bf16"),  # LoRA
    ("recipes/grpo_gsm8k_lora.yaml", ["--max_steps", "1"], "4-bit"),  # QLoRA: bitsandbytes 4-bit nf4 base, on CPU
    ("recipes/grpo_gsm8k_lora.yaml", ["--max_steps", "1", "--load_in_4bit", "false", "--load_in_8bit", "true",
                                      "--use_bnb_nested_quant", "false"], "8-bit"),  # 8-bit base
])
def test_gpu_recipes_run_on_cpu_with_overrides(tmp_path, run_cli, tiny_model_dir, gsm8k_sample, recipe, extra, base,
                                               monkeypatch):
    """Each GPU recipe takes a real step on CPU: the base is what the recipe says (bitsandbytes 4-bit / 8-bit
    layers for QLoRA / 8-bit), and the step changed the trained weights (every LoRA B, which starts at zero, or
    the full model against the checkpoint it started from)."""
    import torch
    import transformers
    from safetensors.torch import load_file

    if "grpo" in recipe:  # one step at full rate (the recipes warm up from lr 0), and a reward that always differs
        # within a group (an untrained model's rewards are often all equal: no gradient), next to the recipe's own
        rewards = yaml.safe_load((ROOT / recipe).read_text())
        (tmp_path / "gpu_recipe_rewards.py").write_text(
            "def alternating(completions, **kwargs):\n    return [float(i % 2) for i in range(len(completions))]\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        # (completions cut to 32 tokens: a step of 32 x 512 new tokens took minutes, and length is not under test)
        extra = [*extra, "--warmup_steps", "0", "--max_completion_length", "32", "--reward_funcs", *rewards["reward_funcs"],
                 "gpu_recipe_rewards:alternating", "--reward_weights", *map(str, rewards["reward_weights"]), "1.0"]
    seen = {}
    train = transformers.Trainer.train

    def spy(self, *args, **kwargs):  # the model the trainer really trains: its base linear layers
        seen["base"] = {(type(m).__module__.split(".")[0], type(m).__name__, m.weight.dtype)
                        for n, m in self.model.named_modules()
                        if isinstance(m, torch.nn.Linear) and "lora_" not in n and "lm_head" not in n}
        return train(self, *args, **kwargs)

    monkeypatch.setattr(transformers.Trainer, "train", spy)
    out = tmp_path / "out"
    code, stdout, err = run_cli("train", ROOT / recipe, "--model_name_or_path", tiny_model_dir,
                                "--dataset_name", gsm8k_sample, "--output_dir", out, *CPU, *extra)
    assert code == 0, err
    assert "train_loss" in json.loads((out / "train_results.json").read_text())
    # every base projection is what the recipe asks for: bitsandbytes packed 4-bit (uint8) or int8, or plain bf16 —
    # float32 where the run header says this CPU has no native bf16 (recipe.parse loads dtype: bfloat16 in fp32)
    plain = torch.float32 if "weights loaded in float32" in stdout else torch.bfloat16
    assert seen["base"] == {"4-bit": {("bitsandbytes", "Linear4bit", torch.uint8)},
                            "8-bit": {("bitsandbytes", "Linear8bitLt", torch.int8)},
                            "bf16": {("torch", "Linear", plain)}}[base]
    if "lora" in recipe or "--use_peft" in extra:
        assert not (out / "model.safetensors").exists()
        lora_b = {n: t for n, t in load_file(out / "adapter_model.safetensors").items() if "lora_B" in n}
        assert lora_b and all(t.abs().max() > 0 for t in lora_b.values()), "a LoRA B is still all zero"
    else:
        before, after = load_file(tiny_model_dir / "model.safetensors"), load_file(out / "model.safetensors")
        # compared in the dtype it trained in (bf16, or fp32 by the fallback); in bf16 the norms' 1.0 does not
        # move by a 1e-5 step, every matrix does
        changed = {n for n in before if not after[n].equal(before[n].to(after[n].dtype))}
        assert {n for n in before if "norm" not in n} <= changed


def test_sft_messages_with_assistant_only_loss_and_lora(tmp_path, run_cli):
    rows = [{"messages": [{"role": "user", "content": f"What is {a} + {a}?"},
                          {"role": "assistant", "content": f"<think>\n{a} + {a} = {2 * a}\n</think>\n<answer>\n{2 * a}\n"
                                                           "</answer>"}]} for a in range(40)]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    code, stdout, err = run_cli("train", ROOT / "recipes/tiny/sft.yaml", "--dataset_name", data,
                                "--dataset_train_split", "train", "--assistant_only_loss", "true", "--use_peft", "true",
                                "--lora_target_modules", "q_proj", "v_proj", "--max_steps", "3", "--output_dir", out)
    assert code == 0, err
    assert "+ LoRA r=16" in stdout
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()


def test_dataset_columns_reach_a_custom_reward(tmp_path, run_cli, monkeypatch):
    seen = tmp_path / "seen.json"
    (tmp_path / "my_rewards.py").write_text(
        "import json\n"
        "def spy(completions, solution, **kwargs):\n"
        f"    open({str(seen)!r}, 'w').write(json.dumps({{'solution': solution, 'keys': sorted(kwargs)}}))\n"
        "    return [0.5] * len(completions)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    code, _, err = run_cli("train", ROOT / "recipes/tiny/grpo.yaml", "--reward_funcs", "my_rewards:spy",
                           "--reward_weights", "1.0", "--max_steps", "1", "--output_dir", out)
    assert code == 0, err
    got = json.loads(seen.read_text())
    assert all(s.isdigit() for s in got["solution"])
    assert {"prompts", "completion_ids", "question", "answer"} <= set(got["keys"])


def test_launchers_accelerate_and_script(tmp_path):
    """`accelerate launch src/train.py` and `python src/train.py` both run the recipe."""
    import subprocess
    import sys

    out = tmp_path / "acc"
    bindir = Path(sys.executable).parent
    proc = subprocess.run([str(bindir / "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "src/train.py",
                           "recipes/tiny/sft.yaml", "--max_steps", "2", "--output_dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "world_size=1" in proc.stdout and (out / "model.safetensors").is_file()
    # A real run starts with its header: no library's start-up line before it (DeepSpeed's "Setting accelerator to
    # CPU", kernels' offline "Skipping publisher trust check"), and none after it either.
    assert proc.stdout.startswith("thinktrain sft: scratch:micro\n"), proc.stdout[:500]
    for noise in ("Setting accelerator to CPU", "publisher trust", "[WARNING]"):
        assert noise not in proc.stdout + proc.stderr, noise
    proc = subprocess.run([sys.executable, "src/train.py", "recipes/tiny/sft.yaml", "--max_stepz", "2"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "did you mean 'max_steps'" in proc.stderr
