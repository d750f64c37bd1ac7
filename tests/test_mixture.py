"""dataset_mixture (thinktrain/mixture.py): open-r1's mixture format with column mapping, pinned on small local files
in the real datasets' shapes (GSM8K: question/answer with '#### N'; Big-Math-RL-Verified: problem, answer, source,
domain, llama8b_solve_rate), and run through the real trainers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from thinktrain import mixture
from thinktrain.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]
GSM8K_ROWS = [{"question": f"Tom has {n} apples and buys {n + 1} more. How many apples does he have?",
               "answer": f"Tom has {n} + {n + 1} = <<{n}+{n + 1}={2 * n + 1}>>{2 * n + 1} apples.\n#### {2 * n + 1}"}
              for n in range(1, 11)]
BIG_MATH_ROWS = [  # the published card's columns and answer styles (LaTeX, plain numbers)
    {"problem": "Compute $\\frac{1}{2} + \\frac{1}{3}$.", "answer": "\\frac{5}{6}", "source": "synthetic_math",
     "domain": ["Mathematics -> Algebra -> Prealgebra -> Fractions"], "llama8b_solve_rate": 0.6875},
    {"problem": "What is $7 \\times 8$?", "answer": "56", "source": "orca_math",
     "domain": ["Mathematics -> Algebra -> Prealgebra -> Integers"], "llama8b_solve_rate": 0.953125},
    {"problem": "Solve for $x$: $2x + 3 = 11$.", "answer": "4", "source": "cn_k12",
     "domain": ["Mathematics -> Algebra -> Equations and Inequalities -> Other"], "llama8b_solve_rate": 0.84375},
    {"problem": "Find the area of a circle of radius 3.", "answer": "9\\pi", "source": "olympiads",
     "domain": ["Mathematics -> Geometry -> Plane Geometry -> Circles"], "llama8b_solve_rate": 0.421875},
    {"problem": "What is $\\sqrt{144}$?", "answer": "12", "source": "big_math",
     "domain": ["Mathematics -> Algebra -> Prealgebra -> Integers"], "llama8b_solve_rate": 0.9765625},
    {"problem": "How many primes are below 20?", "answer": "8", "source": "aops_forum",
     "domain": ["Mathematics -> Number Theory -> Prime Numbers"], "llama8b_solve_rate": 0.1875},
]


def load(mix):
    from thinktrain.data import load_raw, split_of

    return mixture.load(mix, load_raw, split_of)


def write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def files(tmp_path) -> dict:
    return {"gsm8k": write(tmp_path / "gsm8k.jsonl", GSM8K_ROWS), "bigmath": write(tmp_path / "bigmath.jsonl",
                                                                                   BIG_MATH_ROWS)}


def mix(files, **top):
    return mixture.check({"datasets": [
        {"id": files["gsm8k"], "columns": ["question", "answer"], "weight": 0.5},
        {"id": files["bigmath"], "columns": {"problem": "question", "answer": "answer"}},
    ], **top})


def test_a_mixture_keeps_its_weights_maps_its_columns_and_splits_off_a_test_set(files):
    loaded = load(mix(files, seed=42, test_split_size=0.25))
    assert {k: len(v) for k, v in loaded.items()} == {"train": 8, "test": 3}  # 5 of gsm8k (weight 0.5) + 6
    assert loaded["train"].column_names == ["question", "answer"]
    rows = loaded["train"].to_list() + loaded["test"].to_list()
    assert sum(r["question"].startswith("Tom has") for r in rows) == 5
    assert {r["answer"] for r in rows} >= {r["answer"] for r in BIG_MATH_ROWS}  # every Big-Math row, renamed
    again = load(mix(files, seed=42, test_split_size=0.25))
    assert again["train"].to_list() == loaded["train"].to_list()  # the seed fixes the draw and the order
    assert list(load(mix(files))) == ["train"]  # no test_split_size: train only


@pytest.mark.parametrize("given,words", [
    ({"datasets": []}, "dataset_mixture: `datasets` must list at least one dataset"),
    ({}, "dataset_mixture: `datasets` must list at least one dataset"),
    ({"datasets": [{"id": "a.jsonl", "weight": 1.5}]}, "dataset_mixture.datasets[0] (a.jsonl): weight 1.5 must be in (0, 1]"),
    ({"datasets": [{"id": "a.jsonl", "weight": 0}]}, "weight 0 must be in (0, 1]"),
    ({"datasets": [{"id": "a.jsonl", "wieght": 0.5}]}, "dataset_mixture.datasets[0]: unknown key 'wieght' (did you mean 'weight'?)"),
    ({"datasets": [{"config": "main"}]}, "dataset_mixture.datasets[0]: `id` is missing"),
    ({"datasets": [{"id": "a.jsonl"}], "test_split_size": 1.5}, "test_split_size 1.5 must be in (0, 1)"),
    ({"datasets": [{"id": "a.jsonl"}], "shuffle": True}, "dataset_mixture: unknown key 'shuffle'"),
    ({"datasets": [{"id": "a.jsonl", "columns": "question"}]}, "`columns` is a list of column names to keep, or a mapping"),
    ("not json", "dataset_mixture: expected a mapping with `datasets:` (in the recipe, or JSON on the command line), got 'not json'"),
])
def test_a_malformed_mixture_is_refused_in_one_line(given, words):
    with pytest.raises(RecipeError) as e:
        mixture.check(given)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_an_unknown_column_or_columns_that_differ_are_named(files):
    bad = mixture.check({"datasets": [{"id": files["bigmath"], "columns": {"problme": "question"}}]})
    with pytest.raises(RecipeError, match=r"dataset_mixture.datasets\[0\] \(.*bigmath.jsonl\): no column 'problme' "
                                          r"\(did you mean 'problem'\?\); it has: problem, answer, source"):
        load(bad)
    unmapped = mixture.check({"datasets": [{"id": files["gsm8k"]}, {"id": files["bigmath"],
                                                                     "columns": ["problem", "answer"]}]})
    with pytest.raises(RecipeError, match=r"has columns problem, answer but .*gsm8k.jsonl\) has question, answer; "
                                          r"keep or rename them alike with columns: \{old: new\}"):
        load(unmapped)


def test_the_json_form_from_the_command_line_is_the_recipes(files):
    as_yaml = mix(files, seed=3)
    as_json = mixture.check(json.dumps({"datasets": [
        {"id": files["gsm8k"], "columns": ["question", "answer"], "weight": 0.5},
        {"id": files["bigmath"], "columns": {"problem": "question", "answer": "answer"}}], "seed": 3}))
    assert as_json == as_yaml


def run(recipe: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thinktrain", "train", str(recipe), *map(str, args)],
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_grpo_trains_on_a_mixture_of_gsm8k_and_big_math(files, tmp_path):
    recipe = yaml.safe_load((ROOT / "recipes/tiny/grpo.yaml").read_text())
    recipe.pop("dataset_name")
    recipe["dataset_train_split"] = "train"
    recipe["dataset_mixture"] = {"datasets": [
        {"id": files["gsm8k"], "columns": ["question", "answer"]},
        {"id": files["bigmath"], "columns": {"problem": "question", "answer": "answer"}}], "seed": 0}
    path = tmp_path / "grpo_mix.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = run(path, "--output_dir", tmp_path / "out", "--max_steps", "2", "--per_device_train_batch_size", "4",
               "--max_completion_length", "16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dataset    dataset_mixture of " in proc.stdout and "(16 train)" in proc.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file()


# open-r1's recipes/OpenR1-Distill-7B/sft/config_distill.yaml, its dataset_mixture pointed at a local file in the
# Mixture-of-Thoughts shape (`messages`), with the quick-look overrides of a CPU
OPEN_R1_SFT = """
model_name_or_path: open-r1/Qwen2.5-Math-7B-RoPE-300k
model_revision: main
dtype: bfloat16
attn_implementation: flash_attention_2
chat_template: "{CHAT_TEMPLATE}"
dataset_mixture:
  datasets:
    - id: {MOT}
      config: all
      split: train
      columns:
        - messages
      weight: 1.0
  seed: 0
  test_split_size: null
dataset_num_proc: 12
eos_token: <|im_end|>
learning_rate: 4.0e-05
lr_scheduler_type: cosine_with_min_lr
lr_scheduler_kwargs:
  min_lr_rate: 0.1
max_length: 32768
num_train_epochs: 5
output_dir: data/OpenR1-Distill-7B
per_device_train_batch_size: 2
seed: 42
"""


@pytest.mark.slow
def test_a_ported_open_r1_recipe_with_a_dataset_mixture_runs(tmp_path):
    mot = tmp_path / "mixture_of_thoughts"
    mot.mkdir()
    rows = [{"messages": [{"role": "user", "content": f"What is {n} + {n}?"},
                          {"role": "assistant", "content": f"<think>{n} + {n} = {2 * n}</think> {2 * n}"}],
             "num_tokens": 20, "source": "open-r1/OpenR1-Math-220k"} for n in range(12)]
    write(mot / "train.jsonl", rows)
    text = OPEN_R1_SFT.replace("{MOT}", str(mot)).replace('chat_template: "{CHAT_TEMPLATE}"\n', "")
    recipe = tmp_path / "config_distill.yaml"
    recipe.write_text(text)
    # what a CPU quick look changes; the port itself needs: task (default sft), and nothing about the mixture
    proc = run(recipe, "--model_name_or_path", "scratch:micro", "--dtype", "float32", "--attn_implementation", "sdpa",
               "--model_revision", "main", "--max_steps", "2", "--max_length", "128", "--eos_token", "<|im_end|>",
               "--output_dir", tmp_path / "out", "--dataset_num_proc", "1", "--bf16", "false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"dataset    dataset_mixture of {mot} (12 train)" in proc.stdout
