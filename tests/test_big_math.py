"""Big-Math-RL-Verified: difficulty filtering by its llama8b_solve_rate (min_solve_rate / max_solve_rate) and the
accuracy reward on its answer styles (LaTeX fractions, radicals, pi, tuples, sets, plain numbers)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from test_mixture import BIG_MATH_ROWS
from thinktrain.errors import RecipeError


def args(**kw):
    return SimpleNamespace(**{"min_solve_rate": None, "max_solve_rate": None,
                              "solve_rate_column": "llama8b_solve_rate", **kw})


@pytest.fixture
def rows():
    from datasets import Dataset

    return Dataset.from_list(BIG_MATH_ROWS + [{**BIG_MATH_ROWS[0], "llama8b_solve_rate": None}])


@pytest.mark.parametrize("low,high,kept", [
    (None, None, ["\\frac{5}{6}", "56", "4", "9\\pi", "12", "8", "\\frac{5}{6}"]),  # no filter: every row
    (0.1, 0.8, ["\\frac{5}{6}", "9\\pi", "8"]),  # 0.6875, 0.421875, 0.1875 (the row without a rate is dropped)
    (0.9, None, ["56", "12"]),  # 0.953125, 0.9765625: the easy ones
    (None, 0.2, ["8"]),
])
def test_the_solve_rate_keys_keep_the_problems_in_range(rows, low, high, kept):
    from thinktrain.data import by_solve_rate

    out = by_solve_rate(rows, args(min_solve_rate=low, max_solve_rate=high), "big-math", "train")
    assert out["answer"] == kept


def test_the_solve_rate_keys_say_what_is_wrong(rows):
    from thinktrain.data import by_solve_rate

    with pytest.raises(RecipeError, match=r"^min_solve_rate: split 'train' of 'gsm8k' has no column "
                                          r"'llama8b_solve_rate' \(solve_rate_column\) to filter by; it has: problem"):
        by_solve_rate(rows.rename_column("llama8b_solve_rate", "rate"), args(min_solve_rate=0.1), "gsm8k", "train")
    with pytest.raises(RecipeError, match=r"^max_solve_rate: no problem of split 'train' of 'big-math' has "
                                          r"llama8b_solve_rate in \[0, 0.1\] \(7 rows\); widen the range"):
        by_solve_rate(rows, args(max_solve_rate=0.1), "big-math", "train")


@pytest.mark.parametrize("gold,written,reward", [
    ("\\frac{5}{6}", "5/6", 1.0), ("\\frac{5}{6}", "\\frac{5}{6}", 1.0), ("\\frac{5}{6}", "\\dfrac{5}{6}", 1.0),
    ("\\frac{5}{6}", "6/5", 0.0), ("\\frac{5}{6}", "0.83", 0.0),
    ("9\\pi", "9\\pi", 1.0), ("9\\pi", "9π", 1.0), ("9\\pi", "9", 0.0),
    ("2\\sqrt{3}", "2\\sqrt3", 1.0), ("2\\sqrt{3}", "3\\sqrt{2}", 0.0),
    ("(1, 2)", "(1,2)", 1.0), ("\\{1,2\\}", "{1, 2}", 1.0),
    ("4", "x = 4", 1.0), ("x=4", "4", 1.0), ("56", "56.0", 1.0), ("56", "65", 0.0),
])
def test_the_accuracy_reward_grades_big_maths_answer_styles(gold, written, reward):
    from thinktrain.rewards import accuracy_reward

    completion = [[{"role": "assistant", "content": f"<think>work</think><answer>{written}</answer>"}]]
    assert accuracy_reward(completion, solution=[gold]) == [reward]


def test_solve_rate_bounds_are_checked_before_anything_loads(run_cli, tmp_path):
    data = tmp_path / "bm.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in BIG_MATH_ROWS))
    base = ["train", "recipes/tiny/grpo.yaml", "--dataset_name", str(data), "--dataset_train_split", "train",
            "--prompt_column", "problem"]
    code, out, err = run_cli(*base, "--min_solve_rate", "0.8", "--max_solve_rate", "0.2")
    assert (code, out) == (2, "")
    assert err == "thinktrain: error: min_solve_rate 0.8 is above max_solve_rate 0.2: no problem can be kept; swap them\n"
    code, out, err = run_cli(*base, "--max_solve_rate", "1.5")
    assert code == 2 and "max_solve_rate" in err and "1.5" in err


def test_eval_scores_big_math_rows(run_cli, tiny_model_dir, tmp_path):
    data = tmp_path / "big_math.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in BIG_MATH_ROWS))
    out = tmp_path / "eval.json"
    code, stdout, err = run_cli("eval", "--model", tiny_model_dir, "--dataset", data, "--prompt_column", "problem",
                                "--answer_column", "answer", "--limit", 6, "--max_new_tokens", 8, "--output", out)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["n"] == 6 and result["unscored"] == 0  # every LaTeX gold answer could be graded
