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
    assert "thinktrain sft: scratch:tiny" in stdout and "world_size=1" in stdout and "precision fp32" in stdout
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


@pytest.mark.parametrize("recipe,extra", [
    ("recipes/sft_gsm8k.yaml", ["--max_steps", "2", "--eval_strategy", "no"]),
    ("recipes/grpo_gsm8k.yaml", ["--max_steps", "1", "--use_vllm", "false"]),
    # bitsandbytes is the optional qlora extra; the LoRA path is what this checks
    ("recipes/grpo_gsm8k_lora.yaml", ["--max_steps", "1", "--load_in_4bit", "false"]),
])
def test_gpu_recipes_run_on_cpu_with_overrides(tmp_path, run_cli, tiny_model_dir, gsm8k_sample, recipe, extra):
    out = tmp_path / "out"
    code, stdout, err = run_cli("train", ROOT / recipe, "--model_name_or_path", tiny_model_dir,
                                "--dataset_name", gsm8k_sample, "--output_dir", out, *CPU, *extra)
    assert code == 0, err
    saved = "adapter_model.safetensors" if "lora" in recipe else "model.safetensors"
    assert (out / saved).is_file()
    assert "train_loss" in json.loads((out / "train_results.json").read_text())
