"""thinktrain.synthetic: determinism, disjoint and stable splits, and every answer recomputed from its steps."""

import json
import operator
import os
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinktrain.synthetic import (
    DEFAULT_SIZES, SPLITS, TEMPLATES, Difficulty, generate, load, main, parse_spec,
)

EQ = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": lambda a, b: a // b if a % b == 0 else None}
PROBLEM_SPLITS = ("worked", "validation", "practice", "test")
SOLVED_SPLITS = ("worked", "validation", "test")  # practice rows are answer keys


def numbers(text):
    return {int(x) for x in re.findall(r"\d+", text)}


def check_problem(row, d=Difficulty()):
    """Recompute every step; each operand must come from the question or an earlier step (or be a unit:
    60 minutes, or the divisor a percent in that same line implies); the final #### is the last result."""
    annotated = row["answer"].split("\n")[:-1]
    *steps, final = re.sub(r"<<[^<>]*>>", "", row["answer"]).split("\n")  # as SFT without tools reads it
    assert 1 <= row["steps"] == len(steps) == TEMPLATES[row["template"]].steps <= d.max_steps, row
    known = numbers(row["question"]) | {60}
    value = None
    for line in steps:
        found = EQ.findall(line)
        assert len(found) == 1, f"want one computation per line: {line!r}"
        a, op, b, c = found[0]
        a, b, c = int(a), int(b), int(c)
        assert OPS[op](a, b) == c, line
        implied = {100 // int(p) for p in re.findall(r"(\d+)%", line)}
        assert {a, b} <= known | implied, f"operand from nowhere in {line!r} ({row['question']})"
        if op == "*":
            assert all(x <= d.max_mul or x == 60 for x in (a, b)), line
        if op == "/":
            assert b <= d.max_mul and c <= d.max_mul, line
        assert c >= 0
        known.add(c)
        value = c
    assert final == f"#### {value}"
    for line, plain in zip(annotated, steps):  # GSM8K's calculator annotation on each step, as SFT with tools reads it
        a, op, b, c = EQ.findall(plain)[0]
        assert re.findall(r"<<([^<>]*)>>", line) == [f"{a}{op}{b}={c}"], line
        assert line.replace(f"<<{a}{op}{b}={c}>>", "") == plain
    assert 10 <= len(row["question"].split()) <= 45, row["question"]
    assert not re.search(r"\b1 (\w+s)\b", row["question"] + row["answer"]), row  # '1 apples'


def check_text(text):
    """Exposition: every computation is right, and 'The answer is N' names the last result."""
    results = []
    for a, op, b, c in EQ.findall(text):
        assert OPS[op](int(a), int(b)) == int(c), text
        results.append(int(c))
    assert results, text
    if m := re.search(r"The answer is (\d+)\.$", text):
        assert int(m.group(1)) == results[-1], text


@pytest.fixture(scope="module")
def default():
    return load()


def questions(ds):
    return set(ds["question"])


# --------------------------------------------------------------------------- shape and sizes


def test_default_load_has_five_splits_of_default_sizes(default):
    assert list(default) == list(SPLITS)
    assert {s: len(default[s]) for s in SPLITS} == DEFAULT_SIZES
    assert DEFAULT_SIZES["test"] >= 500
    assert default["exposition"].column_names == ["text"]
    for s in PROBLEM_SPLITS:
        assert default[s].column_names == ["question", "answer", "steps", "template"]


def test_spec_sizes_and_options_reach_the_splits():
    ds = load("gsm8k?exposition=7&worked=11&validation=5&practice=13&test=17&max_steps=1&seed=3")
    assert {s: len(ds[s]) for s in SPLITS} == {"exposition": 7, "worked": 11, "validation": 5, "practice": 13,
                                              "test": 17}
    assert set(ds["worked"]["steps"]) == {1}
    assert ds["test"].to_list() == generate("test", 17, seed=3, difficulty=Difficulty(max_steps=1))


def test_zero_size_split_is_empty():
    assert len(load("gsm8k?worked=0&exposition=0&practice=1&test=1")["worked"]) == 0


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_output_different_seed_different_output():
    for s in SPLITS:
        assert generate(s, 200, seed=5) == generate(s, 200, seed=5)
        assert generate(s, 200, seed=5) != generate(s, 200, seed=6)


def test_shorter_run_is_a_prefix_of_a_longer_one():
    for s in SPLITS:
        assert generate(s, 300)[:40] == generate(s, 40)


def test_output_is_identical_under_any_pythonhashseed():
    code = ("import json; from thinktrain.synthetic import generate; "
            "from thinktrain.synthetic import SPLITS; print(json.dumps([generate(s, 100, seed=2) for s in SPLITS]))")
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": h}).stdout for h in ("0", "12345")]
    assert outs[0] == outs[1]
    assert json.loads(outs[0]) == [generate(s, 100, seed=2) for s in SPLITS]


# --------------------------------------------------------------------------- splits


def test_problem_splits_are_disjoint_and_duplicate_free(default):
    for s in PROBLEM_SPLITS:
        assert len(questions(default[s])) == len(default[s])
    for i, a in enumerate(PROBLEM_SPLITS):
        for b in PROBLEM_SPLITS[i + 1:]:
            assert not questions(default[a]) & questions(default[b]), (a, b)


def test_exposition_solves_only_problems_of_the_worked_pool(default):
    """The textbook world: pretraining prose shows no exercise's (practice), exam's (test) or validation
    problem's solution, nor the question itself."""
    corpus = "\n".join(load("gsm8k?exposition=40000")["exposition"]["text"])
    assert "Question: " in corpus and "For example: " in corpus
    for s in ("test", "validation", "practice"):
        leaked = [q for q in default[s]["question"] if q in corpus]
        assert not leaked, (s, leaked[:3])
    assert any(q in corpus for q in default["worked"]["question"])  # the textbook's worked examples


def test_practice_rows_carry_only_the_answer_key(default):
    """No worked solution of an exercise exists to reach any trainer: the row is its question and `#### N`."""
    rows = load("gsm8k?practice=20000")["practice"]
    assert all(re.fullmatch(r"#### \d+", a) for a in rows["answer"])
    solved = {r["question"]: r["answer"] for r in generate("worked", 3000)}  # same questions are never in both
    assert not solved.keys() & set(rows["question"])


def test_test_split_is_stable_when_other_sizes_change(default):
    other = load("gsm8k?exposition=5&worked=3&practice=9000")
    assert other["test"].to_list() == default["test"].to_list()


def test_held_out_questions_stay_held_out_across_seeds(default):
    """Which split a question may land in doesn't depend on the seed: no seed trains on another's test set."""
    other = load("gsm8k?seed=1&exposition=2000")
    assert questions(other["test"]) != questions(default["test"])
    assert not questions(default["test"]) & (questions(other["worked"]) | questions(other["practice"]))
    assert not questions(other["test"]) & (questions(default["worked"]) | questions(default["practice"]))


# --------------------------------------------------------------------------- answers and difficulty


def test_every_default_answer_recomputes(default):
    for s in SOLVED_SPLITS:
        for row in default[s]:
            check_problem(row)
    for text in default["exposition"]["text"]:
        check_text(text)


def test_every_worked_solution_passes_the_arithmetic_reward(default):
    from thinktrain.rewards import arithmetic_reward

    for s in SOLVED_SPLITS:
        assert set(arithmetic_reward(default[s]["answer"])) == {1.0}, s


def test_default_mixes_templates_and_step_counts(default):
    rows = default["worked"]
    assert set(rows["steps"]) == {1, 2, 3}
    four = generate("worked", 2000, difficulty=Difficulty(max_steps=4))
    assert {r["steps"] for r in four} == {1, 2, 3, 4}
    assert {r["template"] for r in four} == set(TEMPLATES) and len(TEMPLATES) >= 10


@pytest.mark.parametrize("d", [Difficulty(max_steps=1), Difficulty(max_steps=4, max_mul=3, max_add=4),
                               Difficulty(max_steps=4, max_mul=5, max_add=8),
                               Difficulty(max_steps=4, max_mul=100, max_add=1000)])
def test_knobs_bound_steps_and_operands(d):
    rows = generate("worked", 1000, seed=1, difficulty=d)
    for row in rows:
        check_problem(row, d)
    assert max(r["steps"] for r in rows) == d.max_steps
    for row in rows:  # one-step add/subtract problems: every number is at most max_add
        if row["template"] in ("more", "give_away"):
            assert max(numbers(row["question"])) <= d.max_add


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**9), max_steps=st.integers(1, 4), max_mul=st.integers(3, 40),
       max_add=st.integers(4, 200))
def test_any_difficulty_and_seed_gives_verified_problems(seed, max_steps, max_mul, max_add):
    d = Difficulty(max_steps=max_steps, max_mul=max_mul, max_add=max_add)
    for row in generate("worked", 20, seed, d):
        check_problem(row, d)
    for row in generate("exposition", 20, seed, d):
        check_text(row["text"])


def test_a_used_up_problem_space_is_a_clear_error(monkeypatch):
    import thinktrain.synthetic as synthetic

    for name, words in (("SHE", ("Ana",)), ("HE", ("Tom",)), ("THINGS", ("apple",)), ("BOXES", ("bag",))):
        monkeypatch.setattr(synthetic, name, words)  # a tiny vocabulary: a few hundred questions in all
    with pytest.raises(ValueError, match="only .* distinct 'test' problems exist at Difficulty"):
        generate("test", 500, difficulty=Difficulty(max_steps=1, max_mul=3, max_add=4))


# --------------------------------------------------------------------------- spec grammar and errors


def test_parse_spec():
    assert parse_spec("gsm8k") == (0, Difficulty(), DEFAULT_SIZES)
    seed, d, sizes = parse_spec("gsm8k?max_steps=4&max_mul=20&worked=2000&seed=7")
    assert (seed, d) == (7, Difficulty(max_steps=4, max_mul=20, max_add=20))
    assert sizes == {**DEFAULT_SIZES, "worked": 2000}


@pytest.mark.parametrize("spec, message", [
    ("gsm9k", "unknown synthetic dataset 'gsm9k'; valid: gsm8k"),
    ("", "unknown synthetic dataset ''; valid: gsm8k"),
    ("gsm8k?steps=2", "unknown option 'steps' in synthetic spec 'gsm8k?steps=2'; valid: seed, max_steps, max_mul, "
                      "max_add, exposition, worked, validation, practice, test"),
    ("gsm8k?seed=x", "option 'seed' needs an integer, got 'x'"),
    ("gsm8k?seed", "option 'seed' needs an integer, got ''"),
    ("gsm8k?seed=1&seed=2", "option 'seed' is given twice in synthetic spec 'gsm8k?seed=1&seed=2'"),
    ("gsm8k?test=-1", "option 'test' is a split size and can't be negative, got -1"),
    ("gsm8k?max_steps=5", "max_steps=5 is out of range: use an integer from 1 to 4"),
    ("gsm8k?max_mul=2", "max_mul=2 is out of range: use an integer from 3 to 100"),
])
def test_bad_specs_say_what_is_wrong_in_one_line(spec, message):
    with pytest.raises(ValueError) as e:
        load(spec)
    assert str(e.value) == message and "\n" not in message


def test_unknown_split_is_named():
    with pytest.raises(ValueError, match="unknown split 'train'; valid: exposition, worked, validation, practice, test"):
        generate("train", 1)


def test_recipe_dataset_name_reaches_the_generator():
    data = pytest.importorskip("thinktrain.data", reason="the recipe/data layer doesn't import yet")
    load_raw, RecipeError = data.load_raw, data.RecipeError

    ds = load_raw("synthetic:gsm8k?exposition=2&worked=3&validation=1&practice=4&test=5")
    assert [len(ds[s]) for s in SPLITS] == [2, 3, 1, 4, 5]
    with pytest.raises(RecipeError, match="unknown option 'nope'"):
        load_raw("synthetic:gsm8k?nope=1")


# --------------------------------------------------------------------------- command line


def test_cli_prints_samples(capsys):
    main(["--spec", "gsm8k?seed=4", "--split", "worked", "--n", "3"])
    out = capsys.readouterr().out
    for row in generate("worked", 3, seed=4):
        assert row["question"] in out and row["answer"] in out
    main(["--split", "exposition", "--n", "2"])
    assert capsys.readouterr().out == "".join(r["text"] + "\n\n" for r in generate("exposition", 2))


def test_cli_rejects_a_bad_spec(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--spec", "gsm8k?bogus=1"])
    assert e.value.code == 2 and "unknown option 'bogus'" in capsys.readouterr().err
