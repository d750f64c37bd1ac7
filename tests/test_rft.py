"""Expert iteration (task rft): the selection rule, the per-round log, a tiny run that trains on what it kept,
resume between rounds after SIGKILL, and the recipe mistakes refused before a model loads."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from thinktrain.data import think_answer
from thinktrain.rft import round_prompts, select

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes/tiny/rft.yaml"


# --------------------------------------------------------------------------- selection


def test_best_correct_keeps_the_highest_total_among_the_correct():
    texts = ["a", "b", "c", "d"]
    # d has the highest total but is wrong; among the correct, b's total is highest
    assert select(texts, [True, True, False, True], [1.0, 1.75, 0.0, 1.5], [10, 30, 5, 8], "best_correct") == [1]


def test_best_correct_ties_go_to_the_fewest_tokens_then_the_first():
    texts = ["a", "b", "c", "d"]
    assert select(texts, [True, True, True, False], [1.5, 1.5, 1.5, 9.0], [40, 12, 30, 1], "best_correct") == [1]
    assert select(texts, [True, True, False, False], [1.0, 1.0, 0.0, 0.0], [7, 7, 7, 7], "best_correct") == [0]


def test_nothing_is_kept_when_nothing_is_right():
    for rule in ("best_correct", "all_correct"):
        assert select(["a", "b"], [False, False], [0.75, 0.5], [3, 4], rule) == []


def test_all_correct_keeps_every_distinct_correct_completion():
    texts = ["x", "y", "x", "z", "y"]
    assert select(texts, [True, True, True, False, True], [1, 1, 1, 1, 1], [1] * 5, "all_correct") == [0, 1]


def test_each_round_practises_fresh_prompts_in_a_seeded_order():
    one, two, three = (round_prompts(10, 4, r, seed=42) for r in (1, 2, 3))
    assert len(set(one) | set(two)) == 8  # rounds 1 and 2 share no prompt
    assert set(one) | set(two) | set(three) == set(range(10))  # round 3 wraps around
    assert round_prompts(10, 4, 1, seed=42) == one and round_prompts(10, 4, 1, seed=1) != one
    assert sorted(round_prompts(10, None, 2, seed=42)) == list(range(10))


def test_required_rewards_keep_only_right_answers_whose_arithmetic_checks_out(monkeypatch):
    """A right answer reached through a false equation is not kept when arithmetic is required too."""
    import thinktrain.generation as generation
    from thinktrain.configs import RFTArguments
    from thinktrain.generation import Completion
    from thinktrain.rewards import load_rewards
    from thinktrain.rft import sample_and_keep

    texts = ["<think>\n3 * 4 = 13\n</think>\n<answer>\n12\n</answer>",  # right answer, false arithmetic, shortest
             "<think>\nThere are 3 * 4 = 12 apples.\n</think>\n<answer>\n12\n</answer>",  # right and verified
             "<think>\n3 * 4 = 11\n</think>\n<answer>\n11\n</answer>"]  # wrong
    monkeypatch.setattr(generation, "encode_prompts", lambda tok, chats, tools=(): (chats, None))
    monkeypatch.setattr(generation, "complete", lambda model, tok, prompts, **k: [
        Completion(t, tokens=len(t), finished=True, ids=(1,)) for t in texts])
    rows = [{"prompt": [{"role": "user", "content": "3 bags of 4 apples?"}], "solution": "12"}]

    class Model:
        def eval(self):
            pass

    def keep(**kw):
        args = RFTArguments(dataset_name="x", reward_funcs=["accuracy", "arithmetic"], num_generations=3, **kw)
        rewards = load_rewards(args.reward_funcs, args, None, 96)
        return sample_and_keep(Model(), None, rows, rewards, [1.0, 0.0], args, seed=0)

    kept, stats = keep()
    assert [k["completion"][0]["content"] for k in kept] == [texts[0]]  # ties on the total: the fewest tokens
    assert "sampled_verified" not in stats
    kept, stats = keep(required_rewards=["arithmetic"])
    assert [k["completion"][0]["content"] for k in kept] == [texts[1]]
    assert stats["sampled_correct"] == pytest.approx(2 / 3) and stats["sampled_verified"] == pytest.approx(1 / 3)
    kept, stats = keep(required_rewards=["arithmetic"], selection="all_correct")
    assert len(kept) == 1 and stats["solved"] == 1.0


# --------------------------------------------------------------------------- recipe mistakes


@pytest.mark.parametrize("extra, words", [
    (["--reward_funcs", "format", "--reward_weights", "1"],
     "correctness_reward 'accuracy' is not in reward_funcs (format): rft keeps only completions it scores 1"),
    (["--rounds", "0"], "rounds must be >= 1, got 0"),
    (["--num_generations", "0"], "num_generations must be >= 1, got 0"),
    (["--selection", "best_corect"], "invalid choice: 'best_corect' (choose from 'best_correct', 'all_correct')"),
    (["--use_vllm", "true"], "use_vllm: rft samples with thinktrain's batched generator"),
    (["--reward_funcs", "accuracy", "--reward_weights", "1", "2"], "reward_weights has 2 values but reward_funcs has 1"),
    (["--temperature", "0"], "temperature"),
    (["--required_rewards", "arithmetic"], "required_rewards arithmetic not in reward_funcs (accuracy, format, "
                                           "tag_count): add them there (weight 0 keeps them out of the ranking)"),
    (["--worked_split", "practice"], "split 'practice' of 'synthetic:gsm8k' holds answer keys only"),
    (["--worked_split", "workd"], "worked_split: dataset 'synthetic:gsm8k' has no split 'workd'; it has: "),
])
def test_bad_rft_recipes_are_one_line_before_any_model_loads(run_cli, monkeypatch, extra, words):
    import thinktrain.rft

    def forbidden(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(thinktrain.rft, "load_round_model", forbidden)
    code, out, err = run_cli("train", TINY, *extra)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("thinktrain: error: ") and words in err, err


# --------------------------------------------------------------------------- a real run

# A child process that SIGKILLs itself at the start of round KILL_AT_ROUND's sampling (after round KILL_AT_ROUND-1
# is complete), so the test cannot miss the moment.
CHILD = """
import os, signal, sys
import thinktrain.rft as rft

kill_at = int(os.environ.get("KILL_AT_ROUND", "0"))
sample = rft.sample_and_keep
rounds_seen = []
def sample_or_die(*a, **k):
    rounds_seen.append(1)
    if len(rounds_seen) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return sample(*a, **k)
rft.sample_and_keep = sample_or_die

if os.environ.get("SCRIPTED_SAMPLES"):  # per prompt, in turn: right by true arithmetic, right by false, wrong
    import thinktrain.generation as generation
    from thinktrain.synthetic import load
    gold = {r["question"]: r["answer"].split("####")[-1].strip() for r in load("gsm8k")["practice"]}
    def scripted(model, tokenizer, prompts, **kwargs):
        out = []
        for p in prompts:
            n = next(v for q, v in gold.items() if q in p)
            text = [f"<think>{n} + 0 = {n}</think><answer>{n}</answer>", f"<think>2 + 2 = 5</think><answer>{n}</answer>",
                    "<think>1 + 1 = 2</think><answer>-1</answer>"][len(out) % 3]
            ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
            out.append(generation.Completion(text, len(ids), True, ids))
        return out
    generation.complete = scripted

from thinktrain.cli import main
sys.exit(main(["train", *sys.argv[1:]]))
"""


def run_child(tmp_path, out, model, kill_at=0, extra=(), scripted=False):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    argv = [sys.executable, str(script), str(TINY), "--model_name_or_path", str(model), "--output_dir", str(out),
            "--rounds", "2", "--prompts_per_round", "16", "--max_steps", "4", *extra]
    env = {**os.environ, "KILL_AT_ROUND": str(kill_at), "HF_HUB_OFFLINE": "1", "SCRIPTED_SAMPLES": "1" if scripted else ""}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def nll(model_dir: Path, pairs: list[dict]) -> float:
    """Mean loss of the kept completions given their prompts under a saved model (chat template, completion only)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    losses = []
    with torch.no_grad():
        for p in pairs:
            prompt = tok.apply_chat_template(p["prompt"], add_generation_prompt=True, tokenize=False)
            full = tok.apply_chat_template(p["prompt"] + p["completion"], tokenize=False)
            ids = tok(full, add_special_tokens=False, return_tensors="pt")["input_ids"]
            n = len(tok(prompt, add_special_tokens=False)["input_ids"])
            labels = ids.clone()
            labels[:, :n] = -100
            losses.append(model(input_ids=ids, labels=labels).loss.item())
    return sum(losses) / len(losses)


@pytest.mark.slow
def test_a_tiny_run_logs_each_round_and_trains_on_what_it_kept(tmp_path, tiny_model_dir):
    out = tmp_path / "rft"
    proc = run_child(tmp_path, out, tiny_model_dir)
    assert proc.returncode == 0, proc.stderr
    log = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in log] == [1, 2]
    for r in log:
        kept = [json.loads(line) for line in (out / f"round-{r['round']}" / "kept.jsonl").read_text().splitlines()]
        assert r["prompts"] == 16 and r["kept"] == len(kept) <= 16  # best_correct: at most one per prompt
        assert r["solved"] == pytest.approx(len({json.dumps(k["prompt"]) for k in kept}) / 16)
        if kept:
            assert r["mean_kept_tokens"] == pytest.approx(sum(k["tokens"] for k in kept) / len(kept))
            assert isinstance(r["train_loss"], float)
        assert f"round {r['round']}/2: solved {100 * r['solved']:.1f}% of 16 prompts" in proc.stdout
    first = [json.loads(line) for line in (out / "round-1" / "kept.jsonl").read_text().splitlines()]
    assert first, "the tiny model verified nothing in round 1: the test needs kept pairs"
    # it trained on exactly those pairs: their loss fell from the starting model to round 1's
    assert nll(out / "round-1", first) < nll(tiny_model_dir, first) - 0.1
    assert weights(out).keys() == weights(out / "round-2").keys()
    assert all((weights(out)[k] == weights(out / "round-2")[k]).all() for k in weights(out))  # final = last round
    assert "rounds     2 x (16 prompts -> keep best_correct by accuracy -> SFT)" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("required", [True, False])
def test_a_tiny_run_requiring_arithmetic_keeps_only_completions_whose_equations_check_out(tmp_path, tiny_model_dir,
                                                                                           required):
    """A scripted sampler offers, per prompt, the right answer by true arithmetic, the right answer by a false (and
    shorter) equation, and a wrong answer; the real rewards and selection choose."""
    from thinktrain.rewards import arithmetic_reward

    out = tmp_path / "rft"
    extra = ["--reward_funcs", "accuracy", "format", "arithmetic", "--reward_weights", "1", "0.5", "0"]
    proc = run_child(tmp_path, out, tiny_model_dir, scripted=True,
                     extra=extra + (["--required_rewards", "arithmetic"] if required else []))
    assert proc.returncode == 0, proc.stderr
    log = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [(r["round"], r["solved"], r["kept"]) for r in log] == [(1, 1.0, 16), (2, 1.0, 16)]
    kept = [json.loads(line) for r in (1, 2) for line in (out / f"round-{r}" / "kept.jsonl").read_text().splitlines()]
    checks = arithmetic_reward([k["completion"] for k in kept])
    if required:  # the false equation is never kept
        assert checks == [1.0] * 32 and all(0 < r["sampled_verified"] < r["sampled_correct"] for r in log)
        assert "keep best_correct by accuracy + arithmetic -> SFT" in proc.stdout
    else:  # without the rule a false equation wins wherever its tokens are fewer
        assert 0.0 in checks


@pytest.mark.slow
def test_worked_split_mixes_the_gold_solutions_into_every_round(tmp_path, tiny_model_dir):
    from thinktrain.synthetic import load

    out = tmp_path / "rft"
    proc = run_child(tmp_path, out, tiny_model_dir, extra=["--worked_split", "worked", "--max_steps", "12"])
    assert proc.returncode == 0, proc.stderr
    log = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["worked"] for r in log] == [500, 500]
    system = "Think inside <think> </think>, then answer inside <answer> </answer>."
    gold = [{"prompt": [{"role": "system", "content": system}, {"role": "user", "content": r["question"]}],
             "completion": [{"role": "assistant", "content": think_answer(r["answer"])}]}
            for r in load("gsm8k")["worked"].select(range(16))]
    assert nll(out, gold) < nll(tiny_model_dir, gold)  # it imitated them again


@pytest.mark.slow
def test_sigkill_between_rounds_resumes_to_the_uninterrupted_weights(tmp_path, tiny_model_dir):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run_child(tmp_path, straight, tiny_model_dir).returncode == 0
    proc = run_child(tmp_path, killed, tiny_model_dir, kill_at=2)  # dies as round 2 starts sampling
    assert proc.returncode == -signal.SIGKILL
    assert (killed / "round-1" / "round.json").is_file() and not (killed / "round-2" / "round.json").exists()
    proc = run_child(tmp_path, killed, tiny_model_dir)
    assert proc.returncode == 0, proc.stderr
    assert "resuming   after round 1 of 2" in proc.stdout
    assert [json.loads(line)["round"] for line in (killed / "rounds.jsonl").read_text().splitlines()] == [1, 2]
    a, b = weights(straight), weights(killed)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.slow
def test_learning_rate_groups_hold_in_every_round(tmp_path, tiny_model_dir):
    """Each round's SFT goes through run.fit, as every task's training does: a rate-0 group stays frozen."""
    out = tmp_path / "rft"
    proc = run_child(tmp_path, out, tiny_model_dir, extra=["--learning_rate_groups", '{"embed_tokens": 0}'])
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["kept"] > 0 for line in (out / "rounds.jsonl").read_text().splitlines()][0]
    assert "frozen" in proc.stdout and "(learning rate 0)" in proc.stdout
    before, after = weights(tiny_model_dir), weights(out)
    frozen = [k for k in before if "embed_tokens" in k]
    assert frozen and all((before[k] == after[k]).all() for k in frozen)
    assert any(not (before[k] == after[k]).all() for k in before if k not in frozen)

