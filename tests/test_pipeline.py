"""`thinktrain pipeline`: pretrain -> SFT -> GRPO chained through real trainers, each stage evaluated, results.json,
report and table; bad input fails before anything trains. Tiny recipes and a small eval keep it to ~a minute."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from thinktrain import pipeline

ROOT = Path(__file__).resolve().parents[1]


def small_recipes(folder: Path) -> Path:
    """The demo recipes, shrunk: same keys and chain, a micro model and a few steps."""
    folder.mkdir()
    shrink = {
        "pretrain": dict(model_name_or_path="scratch:micro", max_steps=6, max_length=64, eval_strategy="no",
                         tokenizer_train_samples=300, max_train_samples=300, per_device_train_batch_size=4),
        "sft": dict(max_steps=4, max_train_samples=64, per_device_train_batch_size=4, heldout_steps=2,
                    heldout_problems=4),
        "grpo": dict(max_steps=2, max_train_samples=32, per_device_train_batch_size=8, num_generations=4,
                     max_completion_length=16, logging_steps=1),
        "rft": dict(rounds=1, prompts_per_round=8, num_generations=2, max_completion_length=16, max_steps=2,
                    num_train_epochs=1, per_device_train_batch_size=4, heldout_problems=4),
    }
    for stage, changes in shrink.items():
        recipe = yaml.safe_load((ROOT / "recipes/demo" / f"{stage}.yaml").read_text())
        recipe.update(changes)
        recipe.pop("max_eval_samples", None)
        (folder / f"{stage}.yaml").write_text(yaml.safe_dump(recipe))
    return folder


@pytest.mark.slow
def test_pipeline_chains_stages_evaluates_each_and_reports(tmp_path, run_cli, monkeypatch):
    monkeypatch.setattr(pipeline, "EVAL", dataclasses.replace(pipeline.EVAL, limit=6, max_new_tokens=8))
    recipes, out = small_recipes(tmp_path / "recipes"), tmp_path / "demo"
    code, stdout, err = run_cli("pipeline", "--out", out, "--recipes", recipes, "--num_samples", "2")
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["pretrain", "sft", "rft"]
    for stage, r in results.items():
        sampled = stage != "pretrain"  # the pretrained model cannot answer in the format yet: greedy alone
        assert r["n"] == 6 and r["k"] == (2 if sampled else 1), stage
        for key in ("accuracy", "accuracy_lenient") + (("sampled_accuracy", "pass_at_k") if sampled else ()):
            assert 0.0 <= r[key] <= 1.0, (stage, key)
        if not sampled:
            assert r["sampled_accuracy"] is None and r["pass_at_k"] is None
        assert (out / "eval" / f"{stage}.json").is_file()
    assert "--- evaluating pretrain on 6 held-out problems (greedy) ---" in stdout
    assert "--- evaluating sft on 6 held-out problems (greedy + 2 samples at T=1.0) ---" in stdout
    # each stage starts from the previous one's output
    assert yaml.safe_load((out / "sft/recipe.yaml").read_text())["model_name_or_path"] == str(out / "pretrain")
    assert yaml.safe_load((out / "rft/recipe.yaml").read_text())["model_name_or_path"] == str(out / "sft")
    assert (out / "rft" / "round-1" / "round.json").is_file()
    report = (out / "report.md").read_text()
    assert "## Evaluation" in report and (out / "eval_accuracy.png").is_file()
    # imitation's and practice's held-out curves on one time axis: the SFT stage's, then each rft round's
    assert "| sft |" in report.split("## Held-out accuracy while training")[1]
    assert "| rft |" in report.split("## Held-out accuracy while training")[1]
    assert (out / "heldout_accuracy.png").is_file()
    table = stdout.split("=== results")[1]
    assert all(stage in table for stage in results) and "sampled" in table and "pass@k" in table

    # a rerun skips what is done (an interrupted demo continues)
    code, stdout, _ = run_cli("pipeline", "--out", out, "--recipes", recipes, "--num_samples", "2")
    assert code == 0 and stdout.count("already done") == 3

    # GRPO is one flag away: it starts from the SFT stage and is evaluated like the others
    code, stdout, err = run_cli("pipeline", "--out", out, "--recipes", recipes, "--num_samples", "2", "--practice",
                                "grpo")
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert list(results) == ["pretrain", "sft", "rft", "grpo"] and results["grpo"]["n"] == 6
    assert yaml.safe_load((out / "grpo/recipe.yaml").read_text())["model_name_or_path"] == str(out / "sft")
    assert (out / "curves_grpo.png").is_file() and "=== [3/3] grpo:" in stdout


def test_group_signal_is_logged_from_the_accuracy_reward():
    from thinktrain.rewards import accuracy_reward

    logged = {}
    prompts = ["p1"] * 2 + ["p2"] * 2 + ["p3"] * 2
    completions = ["<answer>1</answer>", "<answer>1</answer>",  # all right
                   "<answer>2</answer>", "<answer>1</answer>",  # mixed
                   "<answer>5</answer>", "<answer>6</answer>"]  # all wrong
    scores = accuracy_reward(completions, solution=["1"] * 6, prompts=prompts,
                             log_metric=lambda name, value: logged.setdefault(name, value))
    assert scores == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    assert logged == pytest.approx({"accuracy/groups_all_right": 1 / 3, "accuracy/groups_mixed": 1 / 3,
                                    "accuracy/groups_all_wrong": 1 / 3})


@pytest.mark.parametrize("args, words", [
    (["--stages", "sft,pretrain"], ["--stages", "in that order"]),
    (["--stages", "dpo"], ["--stages", "choose from pretrain, sft, rft"]),
    (["--recipes", "nowhere"], ["--recipes", "no pretrain.yaml in nowhere"]),
    (["--num_samples", "many"], ["--num_samples", "invalid int value"]),
    (["--practice", "dpo"], ["--practice", "choose grpo, rft, or both"]),
    (["--practice", "grpo", "--stages", "sft,rft"], ["--stages", "choose from pretrain, sft, grpo"]),
])
def test_pipeline_bad_input_is_one_line_exit_2(run_cli, args, words):
    code, _, err = run_cli("pipeline", *args)
    assert code == 2
    assert err.startswith("thinktrain: error:") and err.count("\n") == 1
    for word in words:
        assert word in err


def test_a_bad_later_recipe_fails_before_the_first_stage_trains(tmp_path, run_cli, monkeypatch):
    recipes = small_recipes(tmp_path / "recipes")
    rft = yaml.safe_load((recipes / "rft.yaml").read_text())  # the default practice
    rft["reward_funcs"] = ["accuracy", "formatt"]
    (recipes / "rft.yaml").write_text(yaml.safe_dump(rft))
    import thinktrain.pretrain

    monkeypatch.setattr(thinktrain.pretrain, "main", lambda *a: pytest.fail("pretrain ran before the check"))
    code, _, err = run_cli("pipeline", "--out", tmp_path / "out", "--recipes", recipes)
    assert code == 2 and "unknown reward 'formatt'" in err
