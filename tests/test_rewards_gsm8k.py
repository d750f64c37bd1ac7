"""The rewards on all 8,792 real GSM8K rows (train + test): golds, worked solutions, wrong and reworded answers."""

import json
import os
import re
from pathlib import Path

import pytest

from thinktrain import answers
from thinktrain.rewards import accuracy_reward, arithmetic_reward, format_reward, format_strict_reward, tag_count_reward

SHARED = Path(os.environ.get("THINKTRAIN_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
GSM8K = SHARED / "data" / "gsm8k"
CALCULATOR = re.compile(r"<<[^<>]*>>")  # 48/2 = <<48/2=24>>24

pytestmark = [
    pytest.mark.real_data,
    pytest.mark.skipif(not (GSM8K / "train.jsonl").is_file(),
                       reason=f"needs GSM8K in {GSM8K} (set THINKTRAIN_SHARED, or put shared/ beside the repo)"),
]


@pytest.fixture(scope="module")
def rows():
    out = []
    for split in ("train", "test"):
        with open(GSM8K / f"{split}.jsonl") as f:
            out += [json.loads(line) for line in f]
    assert len(out) == 8792
    return out


def split_answer(answer):
    steps, gold = answer.rsplit("####", 1)
    return CALCULATOR.sub("", steps).strip(), gold.strip()


def formatted(steps, answer):
    return f"<think>\n{steps}\n</think>\n<answer>\n{answer}\n</answer>"


def failures(completions, golds, scores, want):
    bad = [(g, c[-80:], s) for c, g, s in zip(completions, golds, scores) if s != want]
    return f"{len(bad)} of {len(scores)} scored != {want}, e.g. {bad[:3]}"


def test_every_gold_answer_parses_as_a_number(rows):
    for row in rows:
        _, gold = split_answer(row["answer"])
        parsed = answers.parse_gold(gold)
        assert parsed is not None and parsed[0] == "num", gold
        assert answers.parse_gold(row["answer"]) == parsed  # the whole worked answer: the number after ####
        assert re.fullmatch(r"-?[0-9]{1,3}(,[0-9]{3})*|-?[0-9]+", gold), gold  # integers, some with separators


def test_worked_solutions_in_think_answer_format_get_full_rewards(rows):
    golds = [split_answer(r["answer"])[1] for r in rows]
    completions = [formatted(*split_answer(r["answer"])) for r in rows]
    for fn in (accuracy_reward, format_reward, format_strict_reward, tag_count_reward):
        scores = fn(completions, solution=golds)
        assert scores == [1.0] * len(rows), f"{fn.__name__}: " + failures(completions, golds, scores, 1.0)
    # as message lists (conversational GRPO), against the whole worked answer as the gold
    scores = accuracy_reward([[{"role": "assistant", "content": c}] for c in completions],
                             solution=[r["answer"] for r in rows])
    assert scores == [1.0] * len(rows)
    # the raw GSM8K answer text ("... #### N") is also read correctly
    scores = accuracy_reward([r["answer"] for r in rows], solution=golds)
    assert scores == [1.0] * len(rows), failures([r["answer"] for r in rows], golds, scores, 1.0)


def wrong_answers(gold):
    n = int(gold.replace(",", ""))
    out = {"plus one": str(n + 1)}
    if n != 0:
        out["wrong sign"] = str(-n)
    digits = str(abs(n))
    if len(digits) >= 2:
        out["dropped digit"] = ("-" if n < 0 else "") + digits[:-1]
    return out


def test_wrong_answers_get_zero(rows):
    completions, golds, kinds = [], [], {}
    for row in rows:
        steps, gold = split_answer(row["answer"])
        for kind, wrong in wrong_answers(gold).items():
            completions.append(formatted(steps, wrong))
            golds.append(gold)
            kinds[kind] = kinds.get(kind, 0) + 1
    assert kinds["plus one"] == 8792 and kinds["wrong sign"] > 8700 and kinds["dropped digit"] > 7000
    scores = accuracy_reward(completions, solution=golds)
    assert scores == [0.0] * len(completions), failures(completions, golds, scores, 0.0)
    assert format_reward(completions) == [1.0] * len(completions)  # wrong, but well formatted


SURFACE = {
    "currency and separators": lambda n: f"${n:,}",
    "decimals": lambda n: f"{n}.00",
    "boxed": lambda n: f"\\boxed{{{n}}}",
    "unit word": lambda n: f"{n} dollars",
    "sentence": lambda n: f"The answer is {n}.",
}


@pytest.mark.parametrize("variant", list(SURFACE))
def test_surface_forms_of_the_right_answer_get_full_accuracy(rows, variant):
    completions, golds = [], []
    for row in rows:
        steps, gold = split_answer(row["answer"])
        completions.append(formatted(steps, SURFACE[variant](int(gold.replace(",", "")))))
        golds.append(gold)
    scores = accuracy_reward(completions, solution=golds)
    assert scores == [1.0] * len(rows), failures(completions, golds, scores, 1.0)
    if variant == "currency and separators":
        assert sum("," in c for c in completions) > 1000  # the separators really were exercised


def test_sft_targets_earn_full_rewards(rows):
    """thinktrain.data builds the SFT targets; a model that imitates them perfectly gets every reward."""
    from thinktrain.data import gold_answer, think_answer

    completions = [think_answer(r["answer"]) for r in rows]
    golds = [gold_answer(r["answer"]) for r in rows]
    for fn in (accuracy_reward, format_reward, format_strict_reward, tag_count_reward):
        assert fn(completions, solution=golds) == [1.0] * len(rows), fn.__name__


def test_arithmetic_reward_on_every_gsm8k_solution(rows):
    """The process reward trusts correct working: 96.6% of GSM8K's solutions (with their <<a*b=c>> annotations)
    score 1.0. Most of the rest have no equation it checks (parentheses, fractions as results: score 0); a few
    are real slips in the gold text."""
    scores = arithmetic_reward([r["answer"] for r in rows])
    assert sum(s == 1.0 for s in scores) / len(rows) > 0.96
    assert all(0.0 <= s <= 1.0 for s in scores)
    slip = next(r["answer"] for r in rows if "192*100=$1920" in r["answer"])  # a real slip in a gold solution
    assert arithmetic_reward([slip]) == [0.75]  # 2*60=120, 120*.6=72, 50*2=100 check out; 192*100=1920 does not
