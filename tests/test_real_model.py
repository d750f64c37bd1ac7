"""A real instruct model (SmolLM2-135M-Instruct: Llama, 49k BPE, ChatML without generation markers) through the
GSM8K recipes with CPU overrides: chat template, assistant-only loss, one LoRA SFT and one LoRA GRPO step, merge,
and `thinktrain eval` on real GSM8K test problems. The model comes from ../shared/fixtures/smollm2.sh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import GSM8K, ROOT, SHARED

pytestmark = [pytest.mark.real_model, pytest.mark.real_data, pytest.mark.slow]

# What a GPU recipe needs changed to take one step on a CPU in seconds.
CPU = ["--dtype", "float32", "--bf16", "false", "--gradient_checkpointing", "false", "--push_to_hub", "false",
       "--report_to", "none", "--save_strategy", "no", "--eval_strategy", "no", "--max_steps", "1",
       "--gradient_accumulation_steps", "1", "--logging_steps", "1", "--warmup_steps", "0",
       "--dataloader_pin_memory", "false"]


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> Path:
    script = SHARED / "fixtures" / "smollm2.sh"
    if not script.is_file():
        pytest.skip(f"needs {script} (set THINKTRAIN_SHARED)")
    cache = os.environ.get("THINKTRAIN_FIXTURES", str(Path.home() / ".cache" / "thinktrain-fixtures"))
    out = subprocess.run(["bash", str(script), f"{cache}/smollm2-135m-instruct"], capture_output=True, text=True,
                         env={**os.environ, "PYTHON": sys.executable})
    assert out.returncode == 0, out.stderr[-2000:]
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def tokenizer(smollm2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2)


def messages_file(tmp_path: Path, rows: int = 8, extra_turn: bool = False) -> Path:
    from thinktrain.data import think_answer

    out = tmp_path / "messages.jsonl"
    with out.open("w") as f:
        for line in (GSM8K / "train.jsonl").read_text().splitlines()[:rows]:
            row = json.loads(line)
            msgs = [{"role": "user", "content": row["question"]},
                    {"role": "assistant", "content": think_answer(row["answer"])}]
            if extra_turn:
                msgs += [{"role": "user", "content": "Are you sure?"}, {"role": "assistant", "content": "Yes."}]
            f.write(json.dumps({"messages": msgs}) + "\n")
    return out


def test_chat_template_is_chatml_without_generation_markers(tokenizer):
    from trl.chat_template_utils import has_generation_markers

    from thinktrain.data import THINK_SYSTEM_PROMPT, _prompt

    text = tokenizer.apply_chat_template(_prompt("What is 2 + 3?", THINK_SYSTEM_PROMPT), tokenize=False,
                                         add_generation_prompt=True)
    assert text == (f"<|im_start|>system\n{THINK_SYSTEM_PROMPT}<|im_end|>\n"
                    "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")
    assert not has_generation_markers(tokenizer.chat_template)


def test_assistant_only_loss_without_generation_markers_trains_the_assistant_turn(smollm2, tokenizer, tmp_path):
    """TRL cannot patch SmolLM2's template: thinktrain turns each conversation into prompt + completion, and the
    loss mask covers exactly the assistant's answer and its end-of-turn token."""
    from trl import SFTTrainer

    from thinktrain import data
    from thinktrain.recipe import parse

    f = messages_file(tmp_path, rows=4)
    r = parse([
        str(ROOT / "recipes/sft_gsm8k.yaml"), *CPU, "--model_name_or_path", str(smollm2), "--dataset_name", str(f),
        "--assistant_only_loss", "true", "--packing", "false", "--output_dir", str(tmp_path / "out")])
    script_args, training_args = r.script_args, r.training_args
    train_ds, _ = data.load(script_args, training_args, tokenizer)
    assert train_ds.column_names == ["prompt", "completion"] and training_args.assistant_only_loss is False
    trainer = SFTTrainer(model=str(smollm2), args=training_args, train_dataset=train_ds, processing_class=tokenizer)
    row = trainer.train_dataset[0]
    trained = [t for t in row["labels"] if t != -100]  # TRL's labels: -100 wherever the loss is masked
    answer = json.loads(f.read_text().splitlines()[0])["messages"][1]["content"]
    assert tokenizer.decode(trained).strip() == f"{answer}<|im_end|>"


def test_assistant_only_loss_with_several_assistant_turns_fails_before_the_model_loads(smollm2, tokenizer, tmp_path):
    from thinktrain import data
    from thinktrain.errors import RecipeError
    from thinktrain.recipe import parse

    f = messages_file(tmp_path, rows=2, extra_turn=True)
    r = parse([
        str(ROOT / "recipes/sft_gsm8k.yaml"), *CPU, "--model_name_or_path", str(smollm2), "--dataset_name", str(f),
        "--assistant_only_loss", "true", "--output_dir", str(tmp_path / "out")])
    script_args, training_args = r.script_args, r.training_args
    with pytest.raises(RecipeError, match="no \\{% generation %\\} markers .* several assistant turns"):
        data.load(script_args, training_args, tokenizer)


@pytest.fixture(scope="session")
def lora_sft(smollm2, tmp_path_factory):
    """One LoRA SFT step of recipes/sft_gsm8k.yaml on real GSM8K rows."""
    from thinktrain.cli import main

    out = tmp_path_factory.mktemp("lora-sft")
    code = main(["train", str(ROOT / "recipes/sft_gsm8k.yaml"), *CPU, "--model_name_or_path", str(smollm2),
                 "--dataset_name", str(GSM8K / "train.jsonl"), "--max_train_samples", "8", "--packing", "false",
                 "--per_device_train_batch_size", "2", "--max_length", "256", "--learning_rate", "1e-3",
                 "--use_peft", "true", "--lora_r", "8", "--lora_alpha", "16", "--output_dir", str(out)])
    assert code == 0
    return out


def test_lora_sft_step_saves_an_adapter_that_names_its_base(lora_sft, smollm2):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = json.loads((lora_sft / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(smollm2) and config["r"] == 8
    assert not (lora_sft / "model.safetensors").exists()  # the adapter alone, not a 500 MB copy of the base
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2), lora_sft)
    b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert b and any(p.abs().sum() > 0 for p in b)  # LoRA B starts at zero: one step moved it
    assert "base_model" in (lora_sft / "README.md").read_text()


def test_merge_gives_a_full_model_with_the_adapters_outputs(lora_sft, smollm2, tmp_path, run_cli):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    code, out, err = run_cli("merge", lora_sft, tmp_path / "merged")
    assert code == 0, err
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2), lora_sft)
    ids = AutoTokenizer.from_pretrained(tmp_path / "merged")("Natalia sold 48 clips", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=1e-4)
    assert (tmp_path / "merged" / "recipe.yaml").is_file()


def test_lora_grpo_step_on_real_gsm8k(smollm2, tmp_path, monkeypatch):
    """One LoRA GRPO step of recipes/grpo_gsm8k_lora.yaml (4-bit off: bitsandbytes 4-bit breaks after the
    generation's eval-mode forward on CPU) with the recipe's rewards, and one that always differs within a group:
    24 tokens rarely earn the recipe's rewards, and equal rewards give no gradient. The step moved every adapter."""
    from safetensors.torch import load_file

    from thinktrain.cli import main

    (tmp_path / "real_grpo_rewards.py").write_text(
        "def alternating(completions, **kwargs):\n    return [float(i % 2) for i in range(len(completions))]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "grpo"
    code = main(["train", str(ROOT / "recipes/grpo_gsm8k_lora.yaml"), *CPU, "--model_name_or_path", str(smollm2),
                 "--load_in_4bit", "false", "--use_bnb_nested_quant", "false",
                 "--dataset_name", str(GSM8K / "train.jsonl"), "--max_train_samples", "4",
                 "--num_generations", "2", "--per_device_train_batch_size", "2", "--max_completion_length", "24",
                 "--reward_funcs", "accuracy", "format", "tag_count", "real_grpo_rewards:alternating",
                 "--reward_weights", "1.0", "0.5", "0.25", "1.0", "--output_dir", str(out)])
    assert code == 0
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(smollm2)
    state = json.loads((out / "trainer_state.json").read_text())
    logged = state["log_history"][0]
    for key in ("rewards/accuracy/mean", "rewards/format/mean", "rewards/tag_count/mean", "loss"):
        assert key in logged
    assert logged["frac_reward_zero_std"] == 0  # the step had a signal...
    lora_b = {n: t for n, t in load_file(out / "adapter_model.safetensors").items() if "lora_B" in n}
    assert len(lora_b) == 30 * 7  # ...and moved every adapter: LoRA B starts at zero (30 layers x 7 projections)
    assert [n for n, t in lora_b.items() if not t.any()] == []


def test_eval_on_real_gsm8k_extracts_the_models_answers(smollm2, tmp_path, run_cli):
    """Real outputs, graded two independent ways: thinktrain's lenient verdict equals math_verify's."""
    from math_verify import parse, verify

    out = tmp_path / "eval.json"
    code, stdout, err = run_cli("eval", "--model", smollm2, "--dataset", GSM8K / "test.jsonl", "--limit", "6",
                                "--max_new_tokens", "160", "--batch_size", "6", "--quiet", "--output", out)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["n"] == 6 and result["prompt_format"] == "chat_template"
    for p in result["problems"]:
        assert p["completion"].strip() and p["solution"] == p["solution"].strip()
        gold, pred = parse(p["solution"]), parse(p["completion"])
        expected = bool(pred) and verify(gold, pred)
        assert p["correct_lenient"] == expected, (p["solution"], p["completion"][-200:])
    assert result["accuracy_lenient"] == sum(p["correct_lenient"] for p in result["problems"]) / 6
