"""The documented quick look at a GPU recipe on a CPU (docs/recipes.md) works with exactly its overrides, and a
refused recipe prints one line whatever the libraries imported on the way."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU_RECIPES = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))


def documented_overrides() -> list[str]:
    """The override line docs/recipes.md promises, word for word (so docs and test cannot drift apart)."""
    text = (ROOT / "docs/recipes.md").read_text()
    line = re.search(r"^    (--model_name_or_path PATH --dataset_name FOLDER .*)$", text, re.M).group(1)
    return line.split()


@pytest.fixture(scope="module")
def gsm8k_folder(tmp_path_factory, gsm8k_sample):
    folder = tmp_path_factory.mktemp("gsm8k-copy")
    lines = gsm8k_sample.read_text().splitlines()
    (folder / "train.jsonl").write_text("\n".join(lines[:48]) + "\n")
    (folder / "test.jsonl").write_text("\n".join(lines[48:64]) + "\n")
    return folder


@pytest.fixture(scope="module")
def big_math_folder(tmp_path_factory):
    """Rows in Big-Math-RL-Verified's published schema (problem, answer, source, domain, llama8b_solve_rate)."""
    from test_mixture import BIG_MATH_ROWS

    folder = tmp_path_factory.mktemp("big-math-copy")
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in BIG_MATH_ROWS * 8))
    return folder


@pytest.fixture(scope="module")
def conversation_folders(tmp_path_factory) -> dict:
    """UltraChat's layout (data/{split}-NNNNN-of-NNNNN: splits train_sft, test_sft) and oasst1's (train,
    validation), rows in their published shapes."""
    from conversation_rows import oasst_rows, ultrachat_rows

    ultrachat, oasst = tmp_path_factory.mktemp("ultrachat-copy"), tmp_path_factory.mktemp("oasst1-copy")
    (ultrachat / "data").mkdir()
    for name, rows in (("data/train_sft-00000-of-00001.jsonl", ultrachat_rows(16)),
                       ("data/test_sft-00000-of-00001.jsonl", ultrachat_rows(4))):
        (ultrachat / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name, rows in (("train.jsonl", oasst_rows(16)), ("validation.jsonl", oasst_rows(4))):
        (oasst / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return {"sft_ultrachat.yaml": ultrachat, "sft_oasst1.yaml": oasst}


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fineweb-copy")
    # the recipe holds out its first max_eval_samples (2000) documents; the rest must fill 2 steps of 64 x 1024
    # tokens (the test tokenizer has no merges: about a token per byte)
    docs = [{"text": f"Document {i}: {i} apples and {i + 2} pears make {2 * i + 2} fruits."} for i in range(2000)]
    docs += [{"text": " ".join(f"{i} and {j} make {i + j}." for j in range(150))} for i in range(100)]
    (folder / "train.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    return folder


def test_every_gpu_recipe_is_documented_and_found():
    assert GPU_RECIPES == ["grpo_big_math.yaml", "grpo_gsm8k.yaml", "grpo_gsm8k_lora.yaml", "grpo_gsm8k_python.yaml",
                           "grpo_gsm8k_tools.yaml", "pretrain_fineweb_edu.yaml", "rft_gsm8k.yaml", "sft_gsm8k.yaml",
                           "sft_oasst1.yaml", "sft_ultrachat.yaml"]
    assert documented_overrides() == ["--model_name_or_path", "PATH", "--dataset_name", "FOLDER", "--max_steps", "2",
                                      "--bf16", "false", "--push_to_hub", "false", "--report_to", "none"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", GPU_RECIPES)
def test_gpu_recipe_quick_look_with_exactly_the_documented_overrides(recipe, tmp_path, run_cli, tiny_model_dir,
                                                                      tiny_qwen_dir, gsm8k_folder, text_folder,
                                                                      big_math_folder, conversation_folders,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipe's own output_dir (runs/...) lands here
    folder = text_folder if recipe.startswith("pretrain") else big_math_folder if "big_math" in recipe else \
        conversation_folders.get(recipe, gsm8k_folder)
    # the tools recipes run on a Qwen2-architecture model with Qwen2.5's own template (TRL parses its tool calls)
    model = tiny_qwen_dir if "tools" in recipe or "python" in recipe else tiny_model_dir
    argv = [{"PATH": str(model), "FOLDER": str(folder)}.get(a, a) for a in documented_overrides()]
    if recipe.startswith("grpo"):
        argv += ["--use_vllm", "false"]
    if recipe.startswith("rft"):
        argv += ["--rounds", "1", "--prompts_per_round", "8"]
    code, out, err = run_cli("train", ROOT / "recipes" / recipe, *argv)
    assert code == 0, err
    if recipe.startswith("rft"):
        rounds = next(tmp_path.glob("runs/*/rounds.jsonl")).read_text().splitlines()
        assert [json.loads(line)["prompts"] for line in rounds] == [8]
        return
    state = json.loads(next(tmp_path.glob("runs/*/trainer_state.json")).read_text())
    assert state["global_step"] == 2
    assert all(isinstance(h.get("loss", 0.0), float) for h in state["log_history"])


def test_a_refused_recipe_is_one_line_on_a_fresh_datasets_cache(tmp_path):
    """No 'Generating train split' bar above the error (datasets draws one the first time it reads a file), and
    the bitsandbytes CPU-kernel warning (printed at import on AVX512-BF16 CPUs) is silenced through its logger:
    checked by what was imported and by emitting that warning after the run."""
    data = tmp_path / "no_question.jsonl"
    data.write_text('{"problem": "1 + 1?", "answer": "#### 2"}\n')
    script = (
        "import logging, sys\n"
        "from thinktrain.cli import main\n"
        f"code = main(['train', {str(ROOT / 'recipes/tiny/sft.yaml')!r}, '--dataset_name', {str(data)!r},"
        " '--dataset_train_split', 'train'])\n"
        "assert 'bitsandbytes' in sys.modules  # peft imported it on the way: the noisy import did happen\n"
        "logging.getLogger('bitsandbytes.backends.cpu.ops').warning('Failed to load CPU gemm_4bit_forward from "
        "kernels-community: test')\n"
        "sys.exit(code)\n")
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"thinktrain: error: dataset '{data}' lacks column(s) question (SFT needs messages, text, prompt+completion, "
        "or a question and an answer); it has: problem, answer — set prompt_column/answer_column to map yours"]
