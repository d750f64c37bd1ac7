"""Evaluation: the gsm8k_accuracy metric module, the pass@k / maj@k estimators, generation on a tiny model, exact
numbers through a stubbed generator, and the `thinktrain eval` command's one-line errors."""

import json
from math import comb
from pathlib import Path

import pytest

from thinktrain import evaluation, generation
from thinktrain.evaluation import answer_groups, evaluate_model, majority_vote, pass_at_k
from thinktrain.generation import Completion

METRIC_DIR = Path(evaluation.__file__).parent / "metrics" / "gsm8k_accuracy"


@pytest.fixture(autouse=True)
def one_thread():
    """Other jobs share this 2-core box; torch's threads then spin against them (a 16-token run: 2 s vs 30 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def micro_model_dir(make_micro_model):
    """A saved 0.1M-parameter Llama with thinktrain's byte-level tokenizer (ChatML template): this module's own copy
    of conftest's micro model."""
    return make_micro_model("micro-model")


# --------------------------------------------------------------------------- the metric module


@pytest.mark.parametrize("where", ["folder", "file"])
def test_metric_loads_offline_by_path_and_scores_strict_vs_lenient(where):
    import evaluate

    metric = evaluate.load(str(METRIC_DIR if where == "folder" else METRIC_DIR / "gsm8k_accuracy.py"))
    predictions = [
        "<think>6 * 12 = 72</think><answer>72</answer>",  # right, in the block: strict and lenient
        "6 * 12 = 72. The answer is 72",  # right, but no block: lenient only
        "<think>6 * 12 = 70</think><answer>70</answer>",  # wrong
        "<think>72?</think><answer>70</answer>",  # the block is the answer, even with 72 elsewhere: wrong
    ]
    out = metric.compute(predictions=predictions, references=["72"] * 4)
    assert out == {"accuracy": 0.25, "accuracy_lenient": 0.5, "unscored": 0}


def test_metric_per_example_numbers_and_gsm8k_references():
    import evaluate

    metric = evaluate.load(str(METRIC_DIR), keep_in_memory=True)
    out = metric.compute(
        predictions=["<answer>1,234</answer>", "<answer>1234.0</answer>", "so 18", "<answer>3</answer>", "x"],
        references=["1234", "1,234", "Half of 36 is 18.\n#### 18", "three", "7"],
        per_example=True,
    )
    assert out["correct"] == [True, True, False, False, False]
    assert out["correct_lenient"] == [True, True, True, False, False]
    assert out["scored"] == [True, True, True, False, True]  # "three" is not a number: counted wrong, reported
    assert out["unscored"] == 1
    assert out["accuracy"] == pytest.approx(2 / 5) and out["accuracy_lenient"] == pytest.approx(3 / 5)


def test_metric_is_the_reward():
    """One truth, written out by hand: the metric's strict / lenient / scored verdicts and accuracy_reward's values
    on the same (completion, gold) pairs."""
    import evaluate

    from thinktrain.rewards import accuracy_reward

    cases = [  # completion, gold, strict, lenient, reward
        ("<think>6*12=72</think><answer>72</answer>", "72", True, True, 1.0),  # in the block: both
        ("6*12 = 72, so the answer is 72", "72", False, True, 1.0),  # right, no block: lenient only
        ("\\boxed{42}", "42", False, True, 1.0),
        ("#### 42", "42", False, True, 1.0),
        ("41 or 42", "42", False, True, 1.0),  # no block: the last number
        ("<answer>$42</answer>", "42", True, True, 1.0),
        ("<answer>1,234</answer>", "1234.0", True, True, 1.0),  # numbers compare as numbers
        ("<answer>1234.0</answer>", "1,234", True, True, 1.0),
        ("The answer is 1,234.", "1234", False, True, 1.0),
        ("<answer>70</answer>", "72", False, False, 0.0),  # wrong
        ("<think>72</think><answer>70</answer>", "72", False, False, 0.0),  # the block is the answer
        ("so it is 70", "72", False, False, 0.0),
        ("<answer>72</answer>", "seventy-two", False, False, None),  # gold not a number: unscored, counted wrong
        ("72", "many", False, False, None),
    ]
    completions, golds, strict, lenient, rewards = (list(c) for c in zip(*cases))
    metric = evaluate.load(str(METRIC_DIR), keep_in_memory=True)
    out = metric.compute(predictions=completions, references=golds, per_example=True)
    assert out["correct"] == strict
    assert out["correct_lenient"] == lenient
    assert out["scored"] == [r is not None for r in rewards]
    assert (out["accuracy"], out["accuracy_lenient"], out["unscored"]) == (4 / 14, 9 / 14, 2)
    assert accuracy_reward(completions, solution=golds) == rewards


# --------------------------------------------------------------------------- estimators


def test_pass_at_k_exact_values():
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the fraction correct
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)  # 1 - C(2,2)/C(4,2)
    assert pass_at_k(8, 1, 2) == pytest.approx(1 - comb(7, 2) / comb(8, 2)) == pytest.approx(0.25)
    assert pass_at_k(5, 1, 5) == 1.0  # k = n: any correct sample
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_vote_and_answer_groups():
    assert majority_vote(["a", "b", "b", None]) == 1
    assert majority_vote(["a", "b", "b", "a"]) == 0  # tie: the group seen first
    assert majority_vote([None, None]) is None
    completions = ["<answer>1,234</answer>", "<answer>1234</answer>", "the answer is 1234", "<answer>5</answer>",
                   "<think>7</think><answer>5.0</answer>", "<answer>n/a</answer>", "<answer>n/a</answer>"]
    # numbers compare as numbers; no block: no vote (maj@k is strict); a non-number matches its own text only
    assert answer_groups(completions) == [0, 0, None, 3, 3, 5, 5]


# --------------------------------------------------------------------------- exact numbers, generation stubbed


PROBLEMS = [  # question, GSM8K answer, steps, greedy completion, 4 samples
    ("Q0: 6 boxes of 12?", "6*12=72\n#### 72", 1, "<think>6*12=72</think><answer>72</answer>",
     ["<answer>72</answer>", "<answer>72</answer>", "<answer>70</answer>", "The answer is 72"]),
    ("Q1: 10 minus 5?", "10-5=5\n#### 5", 1, "The answer is 5",
     ["<answer>4</answer>", "<answer>4</answer>", "<answer>5</answer>", "5"]),
    ("Q2: 1000 plus 234?", "1000+234=1234\n#### 1,234", 2, "<think>ok</think><answer>1234</answer>",
     ["<answer>0</answer>"] * 4),
    ("Q3: 3 times 3?", "3*3=9\n#### 9", 2, "<think>3*3</think>",
     ["<answer>9</answer>", "<answer>9.0</answer>", "<answer>8</answer>", "<answer>8</answer>"]),
]


def _stub_generate(monkeypatch):
    calls = []

    def fake(model, tokenizer, prompts, *, do_sample=False, **kwargs):
        calls.append((len(prompts), do_sample, kwargs))
        out, seen = [], {}
        for prompt in prompts:
            i = next(j for j, p in enumerate(PROBLEMS) if p[0] in prompt)
            if do_sample:
                seen[i] = seen.get(i, -1) + 1
                text = PROBLEMS[i][4][seen[i]]
            else:
                text = PROBLEMS[i][3]
            out.append(Completion(text, 10 * (i + 1), i != 3))
        return out

    monkeypatch.setattr(generation, "generate", fake)
    return calls


def _problems():
    from datasets import Dataset

    return Dataset.from_dict({"question": [p[0] for p in PROBLEMS], "answer": [p[1] for p in PROBLEMS],
                              "steps": [p[2] for p in PROBLEMS]})


class _NoModel:
    """Stands in for a model: generation is stubbed, so only train()/eval() are called."""

    training = True
    name_or_path = ""

    def eval(self):
        self.training = False
        return self

    def train(self, mode=True):
        self.training = mode
        return self


def test_exact_numbers_with_known_completions(monkeypatch):
    from thinktrain.tokenizer import build_tokenizer

    calls = _stub_generate(monkeypatch)
    model = _NoModel()
    r = evaluate_model(model, _problems(), num_samples=4, temperature=0.7, max_new_tokens=32, batch_size=3,
                       system_prompt="", tokenizer=build_tokenizer(None), progress=False)
    assert [c[:2] for c in calls] == [(4, False), (16, True)]
    assert calls[1][2]["temperature"] == 0.7 and calls[1][2]["max_new_tokens"] == 32
    assert model.training  # put back as it was
    assert (r["n"], r["k"]) == (4, 4)
    assert r["accuracy"] == 0.5  # Q0, Q2 (1234 == 1,234); Q1 has no block
    assert r["accuracy_lenient"] == 0.75
    assert r["sampled_accuracy"] == 5 / 16  # 2 + 1 + 0 + 2 strict-correct samples
    assert r["pass_at_k"] == 0.75  # Q0, Q1, Q3
    assert r["maj_at_k"] == 0.5  # Q0 (72 x2), Q3 (9 and 9.0 tie 8, 8: first group wins); Q1 votes 4
    assert r["pass_at"] == {"1": 5 / 16, "2": pytest.approx((5 / 6 + 1 / 2 + 0 + 5 / 6) / 4), "4": 0.75}
    assert r["format"] == 0.5  # Q0 and Q2 greedy are exactly <think>…</think><answer>…</answer>
    assert r["mean_completion_tokens"] == 25.0 and r["truncated"] == 0.25
    assert r["system_prompt"] is None and r["system_prompt_source"] == "argument"
    assert r["breakdown"]["steps"] == {
        "1": {"n": 2, "accuracy": 0.5, "accuracy_lenient": 1.0, "sampled_accuracy": 3 / 8, "pass_at_k": 1.0,
              "maj_at_k": 0.5},
        "2": {"n": 2, "accuracy": 0.5, "accuracy_lenient": 0.5, "sampled_accuracy": 2 / 8, "pass_at_k": 0.5,
              "maj_at_k": 0.5},
    }
    q3 = r["problems"][3]
    assert q3["num_correct"] == 2 and q3["majority"] == 0 and q3["majority_correct"] is True
    assert [s["correct"] for s in q3["samples"]] == [True, True, False, False]
    assert r["problems"][1]["majority"] == 0 and r["problems"][1]["majority_correct"] is False
    json.dumps(r)  # the whole result is JSON as is


def test_greedy_only_leaves_sampling_metrics_empty(monkeypatch):
    from thinktrain.tokenizer import build_tokenizer

    calls = _stub_generate(monkeypatch)
    r = evaluate_model(_NoModel(), _problems(), tokenizer=build_tokenizer(None), progress=False)
    assert len(calls) == 1 and r["k"] == 1 and r["accuracy"] == 0.5
    assert r["sampled_accuracy"] is r["pass_at_k"] is r["maj_at_k"] is r["pass_at"] is None
    assert "samples" not in r["problems"][0]
    assert r["system_prompt_source"].startswith("default")  # no model folder, no recipe.yaml


def test_system_prompt_comes_from_the_models_recipe(tmp_path):
    from thinktrain.data import THINK_SYSTEM_PROMPT
    from thinktrain.evaluation import resolve_system_prompt

    assert resolve_system_prompt(None, None) == (THINK_SYSTEM_PROMPT, "default (thinktrain.data.THINK_SYSTEM_PROMPT)")
    (tmp_path / "recipe.yaml").write_text("task: sft\nsystem_prompt: Think, then answer.\n")
    assert resolve_system_prompt(None, str(tmp_path)) == ("Think, then answer.", str(tmp_path / "recipe.yaml"))
    assert resolve_system_prompt("Mine.", str(tmp_path)) == ("Mine.", "argument")
    assert resolve_system_prompt("", str(tmp_path)) == (None, "argument")
    (tmp_path / "recipe.yaml").write_text("task: sft\n")  # trained without one: evaluated without one
    assert resolve_system_prompt(None, str(tmp_path))[0] is None


# --------------------------------------------------------------------------- a real (tiny) model


KEYS = {"model", "dataset", "split", "n", "k", "accuracy", "accuracy_lenient", "format", "sampled_accuracy",
        "pass_at_k", "maj_at_k", "pass_at", "mean_completion_tokens", "mean_sampled_completion_tokens", "truncated",
        "unscored", "temperature", "max_new_tokens", "seed", "system_prompt", "system_prompt_source",
        "prompt_format", "seconds", "breakdown", "problems", "tools", "tool_use", "sampled_tool_use",
        "max_tool_calling_iterations"}


def test_tiny_model_on_synthetic_runs_and_greedy_is_deterministic(micro_model_dir):
    from thinktrain.models import load_checkpoint

    a = evaluate_model(str(micro_model_dir), "synthetic:gsm8k", limit=8, max_new_tokens=16, batch_size=3,
                       num_samples=2, progress=False)
    model, tokenizer = load_checkpoint(str(micro_model_dir))  # a loaded model goes in as well (e.g. after training)
    b = evaluate_model(model, "synthetic:gsm8k", limit=8, max_new_tokens=16, batch_size=8, tokenizer=tokenizer,
                       progress=False)
    assert set(a) == KEYS and set(b) == KEYS
    assert (a["tools"], a["tool_use"], a["sampled_tool_use"]) == (None, None, None)  # no tools, nothing claimed
    assert (a["n"], a["k"], b["k"], a["split"], a["prompt_format"]) == (8, 2, 1, "test", "chat_template")
    for key in ("accuracy", "accuracy_lenient", "format", "sampled_accuracy", "pass_at_k", "maj_at_k", "truncated"):
        assert 0.0 <= a[key] <= 1.0
    assert 1 <= a["mean_completion_tokens"] <= 16
    assert set(a["breakdown"]) == {"steps", "template"}
    assert sum(s["n"] for s in a["breakdown"]["steps"].values()) == 8
    assert len(a["problems"]) == 8 and all(len(p["samples"]) == 2 for p in a["problems"])
    for p in a["problems"]:
        assert isinstance(p["completion"], str) and p["solution"] and 1 <= p["tokens"] <= 16
    # greedy does not depend on the run, the batch size or sampling next to it
    assert [p["completion"] for p in a["problems"]] == [p["completion"] for p in b["problems"]]
    assert [p["tokens"] for p in a["problems"]] == [p["tokens"] for p in b["problems"]]
    assert a["accuracy"] == b["accuracy"]


def test_generate_pads_left_and_stops_at_eos(micro_model_dir):
    """A prompt alone or batched with a longer one gives the same greedy completion (left padding is right)."""
    from thinktrain.generation import generate
    from thinktrain.models import load_checkpoint

    model, tok = load_checkpoint(str(micro_model_dir))
    short, long = "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>user\n" + "x" * 40
    alone = generate(model, tok, [short], max_new_tokens=12, batch_size=1, progress=False)
    batched = generate(model, tok, [long, short], max_new_tokens=12, batch_size=2, progress=False)
    assert batched[1] == alone[0]
    assert all(c.tokens == 12 or c.finished for c in batched)


def test_static_cache_on_cpu_gives_the_dynamic_caches_completions(micro_model_dir, monkeypatch):
    """The CPU speed-up (a static KV cache) must not change a single token, greedy or sampled."""
    from transformers import set_seed

    from thinktrain.generation import generate
    from thinktrain.models import load_checkpoint

    model, tok = load_checkpoint(str(micro_model_dir))
    assert generation._cache(model.device) == {"cache_implementation": "static"}  # what a CPU run uses
    prompts = [f"<|im_start|>user\n{'x' * n} {n}+{n}?<|im_end|>\n<|im_start|>assistant\n" for n in range(0, 30, 3)]
    runs = []
    for cache in ({"cache_implementation": "static"}, {}):
        monkeypatch.setattr(generation, "_cache", lambda device, c=cache: c)
        greedy = generate(model, tok, prompts, max_new_tokens=20, batch_size=4, progress=False)
        set_seed(0)
        sampled = generate(model, tok, prompts * 2, max_new_tokens=20, batch_size=8, do_sample=True, progress=False)
        runs.append((greedy, sampled))
    assert runs[0] == runs[1]


def test_sampled_evaluation_same_seed_same_samples(micro_model_dir):
    """--seed decides the samples: the same seed gives the same sampled completions whatever the global RNG did
    before; another seed gives other ones (16 samples of 16 tokens from a random model cannot all coincide)."""
    import random

    import numpy as np
    import torch

    calls = []

    def sampled(seed):
        calls.append(seed)
        torch.manual_seed(1000 + len(calls))  # the global RNGs in another state before each run
        random.seed(len(calls))
        np.random.seed(len(calls))
        r = evaluate_model(str(micro_model_dir), "synthetic:gsm8k", limit=4, num_samples=4, temperature=1.0,
                           max_new_tokens=16, batch_size=8, seed=seed, progress=False)
        assert r["seed"] == seed and r["k"] == 4
        return [(s["completion"], s["tokens"]) for p in r["problems"] for s in p["samples"]]

    first, again, other = sampled(0), sampled(0), sampled(1)
    assert len(first) == 16 and len({text for text, _ in first}) > 1  # really sampled, not 16 greedy copies
    assert again == first
    assert sum(a != b for a, b in zip(first, other)) >= 8


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def no_model_load(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(evaluation, "load_checkpoint", boom)


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "synthetic:gsm8k"], "the following arguments are required: --model"),
    (["--model", "/no/such/model", "--dataset", "synthetic:gsm8k"], "--model: no such file or folder: /no/such/model"),
    (["--model", "{model}", "--dataset", "/no/such/file.jsonl"], "--dataset: no such file or folder"),
    (["--model", "{model}", "--dataset", "synthetic:gsm8k", "--split", "tset"], "has no split 'tset'"),
    (["--model", "{model}", "--dataset", "synthetic:gsm8k", "--num_samples", "0"], "--num_samples"),
    (["--model", "{model}", "--dataset", "synthetic:gsm8k", "--num_samples", "4", "--temperature", "0"],
     "--temperature"),
    (["--model", "{model}", "--dataset", "{data}", "--answer_column", "solution_text"], "lacks column"),
    (["--model", "{model}", "--dataset", "synthetic:gsm8k", "--limit", "many"], "--limit: invalid int value"),
    (["--model", "{empty}", "--dataset", "synthetic:gsm8k"], "holds no model"),
])
def test_cli_bad_input_is_one_line_before_any_model_loads(run_cli, no_model_load, micro_model_dir, gsm8k_sample,
                                                          tmp_path, argv, message):
    subs = {"{model}": str(micro_model_dir), "{data}": str(gsm8k_sample), "{empty}": str(tmp_path)}
    code, out, err = run_cli("eval", *[subs.get(a, a) for a in argv])
    assert code == 2, err
    last = err.rstrip("\n").split("\n")[-1]  # (datasets may draw a progress bar above it)
    assert last.startswith("thinktrain: error: ") and err.count("thinktrain: error") == 1 and message in last, err


def test_cli_writes_json_and_prints_a_table(run_cli, micro_model_dir, gsm8k_sample, tmp_path):
    output = tmp_path / "out" / "eval.json"
    code, out, err = run_cli("eval", "--model", micro_model_dir, "--dataset", gsm8k_sample, "--limit", 3,
                             "--max_new_tokens", 8, "--output", output, "--quiet")
    assert code == 0, err
    assert "accuracy" in out and "lenient" in out and f"wrote {output}" in out
    result = json.loads(output.read_text())
    assert result["n"] == 3 and result["split"] is None  # a single file is its own split
    assert len(result["problems"]) == 3 and "completion" in result["problems"][0]


def test_cli_help(run_cli):
    code, out, _ = run_cli("eval", "--help")
    assert code == 0 and "--num_samples" in out
