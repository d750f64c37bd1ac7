"""Datasets: sources (file, folder, synthetic) and shapes (GSM8K -> GRPO prompt/solution, SFT completion)."""

import json

import pytest

from thinktrain import data
from thinktrain.configs import GRPORecipeArguments, RecipeArguments
from thinktrain.errors import RecipeError
from conftest import GSM8K

NATALIA = {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
                       "May. How many clips did Natalia sell altogether in April and May?",
           "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
                     "altogether in April and May.\n#### 72"}


def test_gsm8k_helpers_pin_the_format():
    assert data.gold_answer("a\n#### 1,234") == "1,234"
    assert data.think_answer(NATALIA["answer"]) == (
        "<think>\nNatalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."
        "\n</think>\n<answer>\n72\n</answer>")


class _Args:  # what data.load reads from TrainingArguments
    eval_strategy = "no"


def _jsonl(tmp_path, rows, name="rows.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


def test_grpo_shape_from_local_file(tmp_path):
    args = GRPORecipeArguments(task="grpo", dataset_name=_jsonl(tmp_path, [NATALIA] * 3), system_prompt="SYS")
    train, ev = data.load(args, _Args())
    assert ev is None and len(train) == 3
    row = train[0]
    assert row["prompt"] == [{"role": "system", "content": "SYS"}, {"role": "user", "content": NATALIA["question"]}]
    assert row["solution"] == "72"
    assert row["answer"] == NATALIA["answer"]  # other columns ride along to the rewards


def test_sft_shape_is_prompt_completion(tmp_path):
    args = RecipeArguments(task="sft", dataset_name=_jsonl(tmp_path, [NATALIA]), max_train_samples=1)
    train, _ = data.load(args, _Args())
    assert train.column_names == ["prompt", "completion"]
    assert train[0]["prompt"] == [{"role": "user", "content": NATALIA["question"]}]
    assert train[0]["completion"][0]["content"].endswith("<answer>\n72\n</answer>")


def test_sft_messages_pass_through_with_system_prompt(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    args = RecipeArguments(task="sft", dataset_name=_jsonl(tmp_path, rows), system_prompt="S")
    train, _ = data.load(args, _Args())
    assert [m["role"] for m in train[0]["messages"]] == ["system", "user", "assistant"]


def test_column_mapping(tmp_path):
    rows = [{"problem": "2+2?", "target": "4"}]
    args = GRPORecipeArguments(task="grpo", dataset_name=_jsonl(tmp_path, rows), prompt_column="problem",
                               answer_column="target")
    train, _ = data.load(args, _Args())
    assert train[0]["solution"] == "4" and train[0]["prompt"][-1]["content"] == "2+2?"


def test_eval_split_required_when_evaluating(tmp_path):
    args = RecipeArguments(task="sft", dataset_name=_jsonl(tmp_path, [NATALIA]))
    _Args.eval_strategy = "steps"
    try:
        with pytest.raises(RecipeError, match="dataset_test_split: dataset .* has no split 'test'; it has: train"):
            data.load(args, _Args())
    finally:
        _Args.eval_strategy = "no"


def test_unreadable_suffix(tmp_path):
    p = tmp_path / "rows.txt"
    p.write_text("x")
    with pytest.raises(RecipeError, match="can't read"):
        data.load_raw(str(p))


def test_max_prompt_length_drops_long_prompts(tmp_path, caplog):
    from thinktrain.tokenizer import build_tokenizer

    rows = [{"question": "short?", "answer": "#### 1"}, {"question": "long " * 100, "answer": "#### 2"}]
    args = GRPORecipeArguments(task="grpo", dataset_name=_jsonl(tmp_path, rows), max_prompt_length=64)
    with caplog.at_level("WARNING", logger="thinktrain"):
        train, _ = data.load(args, _Args(), build_tokenizer(None))
    assert train["solution"] == ["1"]
    assert "dropped 1 of 2 training prompts" in caplog.text
    args.max_prompt_length = 2
    with pytest.raises(RecipeError, match="drops every training prompt"):
        data.load(args, _Args(), build_tokenizer(None))


@pytest.mark.real_data
def test_real_gsm8k_folder_loads_with_both_splits():
    raw = data.load_raw(str(GSM8K))
    assert {k: len(v) for k, v in raw.items()} == {"train": 7473, "test": 1319}


@pytest.mark.real_data
def test_real_gsm8k_rows_shape_for_both_tasks():
    grpo = GRPORecipeArguments(task="grpo", dataset_name=str(GSM8K))
    train, _ = data.load(grpo, _Args())
    assert train[0]["solution"] == "72"
    assert all(s and "####" not in s for s in train["solution"])
    sft = RecipeArguments(task="sft", dataset_name=str(GSM8K))
    train, _ = data.load(sft, _Args())
    texts = [c[0]["content"] for c in train["completion"]]
    assert all("<<" not in t and t.startswith("<think>\n") and t.endswith("\n</answer>") for t in texts)
    assert len(texts) == 7473
