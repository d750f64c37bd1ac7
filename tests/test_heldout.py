"""Held-out accuracy while training (recipe key heldout_steps): logged at the steps it names with the value the
accuracy reward gives, drawn by `thinktrain report`, after every rft round; bad values stop in one line."""

import json
from pathlib import Path

import pytest

from thinktrain import generation
from thinktrain.generation import Completion

ROOT = Path(__file__).resolve().parents[1]
TINY_SFT = ROOT / "recipes/tiny/sft.yaml"


def held_out(n: int) -> list[tuple[str, str]]:
    """(question, gold) of the first n problems of synthetic:gsm8k's test split, as heldout.load reads them."""
    from thinktrain.configs import EvalArguments
    from thinktrain.data import gold_answer
    from thinktrain.evaluation import load_problems

    ds = load_problems(EvalArguments(dataset="synthetic:gsm8k", split="test", limit=n))
    return [(row["question"], gold_answer(row["answer"])) for row in ds]


@pytest.fixture
def half_right(monkeypatch):
    """The generator answers the even-numbered held-out problems right and the odd ones wrong: accuracy 0.5."""
    problems = held_out(8)
    calls = []

    def fake(model, tokenizer, prompts, **kwargs):
        calls.append(len(prompts))
        out = []
        for text in prompts:
            i = next(i for i, (q, _) in enumerate(problems) if q in text)
            gold = problems[i][1]
            answer = gold if i % 2 == 0 else gold + "1"
            out.append(Completion(f"<think>so</think><answer>{answer}</answer>", 9, True, ()))
        return out

    monkeypatch.setattr(generation, "generate", fake)
    return calls


def test_logged_at_the_steps_named_with_the_rewards_value(tmp_path, run_cli, half_right):
    out = tmp_path / "sft"
    code, stdout, err = run_cli("train", TINY_SFT, "--max_steps", 4, "--heldout_steps", 2, "--heldout_problems", 8,
                                "--logging_steps", 1, "--output_dir", out)
    assert code == 0, err
    assert "  heldout    greedy accuracy on 8 problems of test, every 2 steps and at the start" in stdout
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    entries = [h for h in history if "heldout/accuracy" in h]
    assert [h["step"] for h in entries] == [0, 2, 4]
    assert [h["heldout/accuracy"] for h in entries] == [0.5, 0.5, 0.5]
    minutes = [h["heldout/minutes"] for h in entries]
    assert minutes == sorted(minutes) and minutes[0] == 0.0
    assert half_right == [8, 8, 8]  # one batch of the 8 problems per evaluation
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]  # the trainer's own logging goes on beside it

    from thinktrain.report import write_report

    report = write_report(out).read_text()
    assert "## Held-out accuracy while training" in report and "| sft | 50.0% | 50.0% | 50.0% |" in report
    assert (out / "heldout_accuracy.png").stat().st_size > 1000


def test_accuracy_is_the_strict_accuracy_of_greedy_completions(half_right):
    from thinktrain import heldout
    from thinktrain.tokenizer import build_tokenizer

    class Model:  # only the train/eval switch is touched: generation is the fake
        training = True

        def eval(self):
            self.training = False

        def train(self, mode=True):
            self.training = mode

    args = type("A", (), {"heldout_steps": 1, "heldout_problems": 8, "heldout_split": None,
                          "dataset_test_split": "test", "dataset_name": "synthetic:gsm8k", "dataset_config": None,
                          "prompt_column": "question", "answer_column": "answer", "system_prompt": None})()
    model = Model()
    value = heldout.accuracy(model, build_tokenizer(None), heldout.load(args), max_new_tokens=16, batch_size=4)
    assert value == 0.5 and model.training is True


@pytest.mark.parametrize("extra, words", [
    (["--heldout_steps", "0"], "heldout_steps"),
    (["--heldout_steps", "2", "--heldout_problems", "0"], "heldout_problems"),
    (["--heldout_steps", "2", "--heldout_max_new_tokens", "0"], "heldout_max_new_tokens"),
    (["--heldout_steps", "2", "--heldout_split", "nope"],
     "heldout_split: dataset 'synthetic:gsm8k' has no split 'nope'"),
])
def test_bad_values_stop_in_one_line(run_cli, monkeypatch, extra, words):
    import thinktrain.sft

    monkeypatch.setattr(thinktrain.sft, "load_model", lambda *a, **k: pytest.fail("a model loaded"))
    code, out, err = run_cli("train", TINY_SFT, *extra)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0], err


def test_data_without_gold_answers_stops_in_one_line(tmp_path, run_cli):
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    code, out, err = run_cli("train", TINY_SFT, "--dataset_name", data, "--dataset_train_split", "train",
                             "--heldout_steps", 1, "--heldout_split", "train")
    assert code == 2 and err.strip().splitlines() == [
        f"thinktrain: error: dataset '{data}' lacks column(s) question, answer (heldout_steps needs a question and a "
        f"gold answer); it has: messages — set prompt_column/answer_column to map yours"]


@pytest.mark.parametrize("env, words", [
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, "which DeepSpeed ZeRO-3 does not"),
    ({"ACCELERATE_USE_FSDP": "true"}, "which FSDP does not allow"),
])
def test_sharded_weights_are_refused_in_one_line(run_cli, monkeypatch, env, words):
    """The main process generates alone: a launch that shards the weights (accelerate's settings) is refused."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, out, err = run_cli("train", TINY_SFT, "--heldout_steps", 2)
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err


def test_a_recipes_own_zero3_config_counts_too(tmp_path):
    from thinktrain.checks import _sharded_weights

    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    for deepspeed, expected in ((str(config), "DeepSpeed ZeRO-3"), ({"zero_optimization": {"stage": 2}}, None),
                                (None, None)):
        assert _sharded_weights(type("T", (), {"fsdp": None, "deepspeed": deepspeed})()) == expected


def test_a_resumed_run_keeps_its_evaluations_and_minutes(tmp_path, run_cli, half_right):
    out = tmp_path / "sft"
    common = ["--heldout_steps", 2, "--heldout_problems", 8, "--logging_steps", 1, "--save_steps", 2,
              "--save_strategy", "steps", "--output_dir", out]
    assert run_cli("train", TINY_SFT, "--max_steps", 2, *common)[0] == 0
    first = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "heldout/accuracy" in h]
    assert run_cli("train", TINY_SFT, "--max_steps", 4, *common)[0] == 0  # resumes from checkpoint-2
    entries = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"]
               if "heldout/accuracy" in h]
    assert [h["step"] for h in entries] == [0, 2, 4] and half_right == [8, 8, 8]  # step 2 not evaluated again
    assert entries[:2] == first and entries[2]["heldout/minutes"] >= first[-1]["heldout/minutes"]


def test_pretrain_refuses_it(run_cli):
    code, out, err = run_cli("train", ROOT / "recipes/tiny/pretrain.yaml", "--heldout_steps", 5)
    assert code == 2 and "heldout_steps: held-out accuracy needs problems with gold answers" in err


@pytest.mark.slow
def test_every_rft_round_logs_the_accuracy_of_its_model(tmp_path, tiny_model_dir):
    from test_rft import run_child

    from thinktrain import heldout
    from thinktrain.models import load_checkpoint

    out = tmp_path / "rft"
    proc = run_child(tmp_path, out, tiny_model_dir, extra=["--heldout_steps", "1", "--heldout_problems", "16"])
    assert proc.returncode == 0, proc.stderr
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    args = type("A", (), {"heldout_steps": 1, "heldout_problems": 16, "heldout_split": None,
                          "dataset_test_split": "test", "dataset_name": "synthetic:gsm8k", "dataset_config": None,
                          "prompt_column": "question", "answer_column": "answer",
                          "system_prompt": "Think inside <think> </think>, then answer inside <answer> </answer>."})()
    problems = heldout.load(args)
    for r in rounds:  # greedy: the round's saved model gives the logged number again
        model, tok = load_checkpoint(str(out / f"round-{r['round']}"))
        assert r["heldout_accuracy"] == heldout.accuracy(model, tok, problems, max_new_tokens=48, batch_size=64)
        assert f"held-out accuracy {100 * r['heldout_accuracy']:.1f}%" in proc.stdout


# --------------------------------------------------------------------------- heldout_keep_best, heldout_patience


@pytest.fixture
def scripted(monkeypatch):
    """The generator's held-out accuracy follows a script, one value per evaluation (8 problems: multiples of 1/8)."""
    problems = held_out(8)
    script = []

    def fake(model, tokenizer, prompts, **kwargs):
        right = round(8 * script.pop(0))
        out = []
        for text in prompts:
            i = next(i for i, (q, _) in enumerate(problems) if q in text)
            answer = problems[i][1] if i < right else problems[i][1] + "1"
            out.append(Completion(f"<think>so</think><answer>{answer}</answer>", 9, True, ()))
        return out

    monkeypatch.setattr(generation, "generate", fake)
    return script


def weights(out):
    from safetensors.torch import load_file

    return load_file(out / "model.safetensors")


def same(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def checkpoints_every_2(tmp_path_factory):
    """A plain 8-step run (the schedule every run below shares) saving every 2 steps: the weights at each step."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("plain")
    proc = subprocess.run([sys.executable, "-m", "thinktrain", "train", str(TINY_SFT), "--max_steps", "8",
                           "--save_strategy", "steps", "--save_steps", "2", "--output_dir", str(out)],
                          capture_output=True, text=True, cwd=ROOT, env={**__import__("os").environ,
                                                                        "PYTHONPATH": str(ROOT / "src")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {step: weights(out / f"checkpoint-{step}") for step in (2, 4, 6, 8)}


def test_keep_best_saves_the_best_evaluations_weights_ties_to_the_later(tmp_path, run_cli, scripted,
                                                                         checkpoints_every_2):
    out = tmp_path / "sft"
    scripted += [0.25, 0.5, 0.75, 0.75, 0.5]  # steps 0, 2, 4, 6, 8: the best is reached at 4 and again at 6
    code, stdout, err = run_cli("train", TINY_SFT, "--max_steps", 8, "--heldout_steps", 2, "--heldout_problems", 8,
                                "--heldout_keep_best", "true", "--output_dir", out)
    assert code == 0, err
    assert "every 2 steps and at the start; keeps the best" in stdout
    assert "heldout: keeping step 6's weights (held-out accuracy 0.750; training ended at step 8)" in stdout
    assert same(weights(out), checkpoints_every_2[6]) and not same(weights(out), checkpoints_every_2[8])
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 8 and state["log_history"][-1]["heldout/best_step"] == 6
    assert not (out / "heldout-best.safetensors").exists() and scripted == []


def test_patience_stops_after_that_many_evaluations_without_the_best(tmp_path, run_cli, scripted,
                                                                     checkpoints_every_2):
    out = tmp_path / "sft"
    scripted += [0.25, 0.625, 0.5, 0.5]  # best at step 2, then two evaluations below it: stop at step 6
    code, stdout, err = run_cli("train", TINY_SFT, "--max_steps", 8, "--heldout_steps", 2, "--heldout_problems", 8,
                                "--heldout_keep_best", "true", "--heldout_patience", 2, "--output_dir", out)
    assert code == 0, err
    assert "heldout: 2 evaluations since the best accuracy (0.625 at step 2): stopping at step 6 " \
           "(heldout_patience)" in stdout
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6 and scripted == []
    assert same(weights(out), checkpoints_every_2[2])


def test_without_keep_best_the_last_step_is_saved(tmp_path, run_cli, scripted, checkpoints_every_2):
    out = tmp_path / "sft"
    scripted += [0.25, 0.75, 0.5, 0.5, 0.5]
    assert run_cli("train", TINY_SFT, "--max_steps", 8, "--heldout_steps", 2, "--heldout_problems", 8,
                   "--output_dir", out)[0] == 0
    assert same(weights(out), checkpoints_every_2[8])


def test_a_resumed_run_knows_its_best_from_the_kept_file(tmp_path):
    """Preempted after the best: the rerun's callback reads the best step from the file, counts the evaluations
    since it from the log, and at the end puts the kept weights back."""
    import types

    import torch

    from thinktrain import heldout

    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)  # frozen weights are not kept (they cannot change)
    heldout.save_best(model, tmp_path / heldout.BEST_FILE, 2, 0.75)
    at_best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert heldout.best_of(tmp_path / heldout.BEST_FILE) == (2, 0.75)
    with open(tmp_path / heldout.BEST_FILE, "rb") as f:
        assert b"0.weight" not in f.read(400)
    args = types.SimpleNamespace(output_dir=str(tmp_path), world_size=1, per_device_eval_batch_size=8)
    trainer = types.SimpleNamespace(args=args, model=model, is_world_process_zero=lambda: True)
    recipe = types.SimpleNamespace(script_args=types.SimpleNamespace(
        heldout_steps=2, heldout_keep_best=True, heldout_patience=3, heldout_max_new_tokens=8), training_args=args, heldout=[], tools=())
    cb = heldout.callback(trainer, recipe)
    state = types.SimpleNamespace(global_step=6, log_history=[
        {"heldout/accuracy": a, "heldout/minutes": 0.1 * s, "step": s} for s, a in ((0, .25), (2, .75), (4, .5), (6, .5))])
    control = types.SimpleNamespace(should_training_stop=False, should_log=False)
    cb.on_train_begin(args, state, control)  # step 6 was evaluated before the preemption: not again
    assert (cb.best, cb.since) == ((2, 0.75), 2)
    state.global_step = 8
    cb.track(state, control, 0.5)  # a third evaluation without the best: patience 3 stops
    assert control.should_training_stop
    cb.on_train_end(args, state, control)
    after = model.state_dict()
    assert torch.equal(after["0.weight"], at_best["0.weight"] + 1)  # frozen: untouched
    for k in ("0.bias", "1.weight", "1.bias"):
        assert torch.equal(after[k], at_best[k]), k
    assert not (tmp_path / heldout.BEST_FILE).exists()


@pytest.mark.parametrize("extra, words", [
    (["--heldout_keep_best", "true"], "heldout_keep_best: needs heldout_steps"),
    (["--heldout_patience", "3"], "heldout_patience: needs heldout_steps"),
    (["--heldout_steps", "2", "--heldout_patience", "-1"], "heldout_patience"),
])
def test_keep_best_and_patience_bad_values_stop_in_one_line(run_cli, monkeypatch, extra, words):
    import thinktrain.sft

    monkeypatch.setattr(thinktrain.sft, "load_model", lambda *a, **k: pytest.fail("a model loaded"))
    code, out, err = run_cli("train", TINY_SFT, *extra)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0], err


def test_rft_refuses_keep_best_in_one_line(run_cli):
    code, out, err = run_cli("train", ROOT / "recipes/tiny/rft.yaml", "--heldout_steps", 1, "--heldout_keep_best",
                             "true")
    assert code == 2 and err.strip() == ("thinktrain: error: heldout_keep_best: expert iteration evaluates after each "
                                         "round and keeps its last round; choose the number of rounds instead, or "
                                         "remove heldout_keep_best"), err
