"""`thinktrain report`: report.md + PNGs from recorded trainer states and eval results; missing pieces skipped."""

import json

import pytest

PNG = b"\x89PNG\r\n\x1a\n"


def _sft_state(steps=4):
    history = [{"epoch": 0.1 * s, "grad_norm": 1.0, "learning_rate": 1e-3, "loss": 3.0 - 0.5 * s,
                "num_tokens": 900.0 * s, "mean_token_accuracy": 0.2 + 0.1 * s, "step": s} for s in range(1, steps + 1)]
    history.append({"epoch": 0.4, "eval_loss": 1.4, "eval_runtime": 0.5, "step": steps})
    history.append({"epoch": 0.4, "step": steps, "total_flos": 1.0e9, "train_loss": 1.9, "train_runtime": 31.2,
                    "train_samples_per_second": 10.2})
    return {"global_step": steps, "max_steps": steps, "log_history": history}


def _grpo_state(steps=6):
    history = []
    for s in range(1, steps + 1):  # the keys TRL 1.16's GRPOTrainer logs
        history.append({
            "step": s, "epoch": 0.05 * s, "loss": 0.01 * (-1) ** s, "grad_norm": 0.3, "learning_rate": 1e-4,
            "num_tokens": 4000.0 * s, "completions/mean_length": 40.0 - s, "completions/min_length": 20.0,
            "completions/max_length": 48.0, "completions/clipped_ratio": 0.5,
            "completions/mean_terminated_length": 30.0,
            "rewards/accuracy_reward/mean": 0.1 * s, "rewards/accuracy_reward/std": 0.2,
            "rewards/format_reward/mean": 0.5 + 0.05 * s, "rewards/format_reward/std": 0.1,
            "reward": 0.4 + 0.1 * s, "reward_std": 0.3, "frac_reward_zero_std": 0.5 - 0.05 * s, "entropy": 1.2,
            "clip_ratio/region_mean": 0.0,
        })
    history.append({"step": steps, "train_loss": 0.0, "train_runtime": 12.0})
    return {"global_step": steps, "max_steps": steps, "log_history": history}


RESULTS = {
    "pretrain": {"accuracy": 0.0, "accuracy_lenient": 0.02, "sampled_accuracy": 0.0, "pass_at_k": 0.01, "k": 8,
                 "n": 200},
    "sft": {"accuracy": 0.81, "accuracy_lenient": 0.82, "sampled_accuracy": 0.64, "pass_at_k": 0.928, "maj_at_k": 0.85,
            "k": 8, "n": 200, "problems": [{"completion": "..."}]},
    "grpo": {"accuracy": 0.815, "accuracy_lenient": 0.82, "sampled_accuracy": 0.70, "pass_at_k": 0.93, "k": 8,
             "n": 200},
}


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _assert_png(path):
    assert path.is_file() and path.read_bytes()[:8] == PNG and path.stat().st_size > 1000, path


def test_full_pipeline_report(run_cli, tmp_path):
    _write(tmp_path / "pretrain" / "trainer_state.json", {"global_step": 3, "log_history": [
        {"step": s, "loss": 5.0 / s} for s in (1, 2, 3)]})
    _write(tmp_path / "sft" / "trainer_state.json", _sft_state())
    _write(tmp_path / "grpo" / "trainer_state.json", _grpo_state())
    _write(tmp_path / "results.json", RESULTS)
    code, out, err = run_cli("report", tmp_path)
    assert code == 0, err
    assert f"wrote {tmp_path / 'report.md'}" in out
    md = (tmp_path / "report.md").read_text()
    for text in ("## Stage: pretrain", "## Stage: sft", "## Stage: grpo", "| loss |", "| eval_loss |", "| reward |",
                 "rewards/accuracy_reward/mean", "rewards/format_reward/mean", "frac_reward_zero_std",
                 "completions/mean_length", "## Evaluation", "pass@1", "lenient", "sampled", "pass@8", "maj@8",
                 "| sft | 200 | 8 | 81.0% | 82.0% | 64.0% | 92.8% | 85.0% |", "| pretrain | 200 | 8 | 0.0% | 2.0% |",
                 "![evaluation accuracy per stage](eval_accuracy.png)", "(curves_grpo.png)", "31 s"):
        assert text in md, text
    assert md.index("## Stage: pretrain") < md.index("## Stage: sft") < md.index("## Stage: grpo")  # pipeline order
    assert "| reward | 0.5 | 1 | 0.5 | 1 |" in md  # first, last, min, max
    for name in ("eval_accuracy", "curves_pretrain", "curves_sft", "curves_grpo"):
        _assert_png(tmp_path / f"{name}.png")


def test_sft_only_and_checkpoint_state(run_cli, tmp_path):
    """No results.json, no GRPO; a stage whose final state is missing falls back to its newest checkpoint."""
    _write(tmp_path / "sft" / "checkpoint-2" / "trainer_state.json", _sft_state(2))
    _write(tmp_path / "sft" / "checkpoint-10" / "trainer_state.json", _sft_state(10))
    (tmp_path / "notes").mkdir()  # a folder that is not a stage
    code, out, err = run_cli("report", tmp_path)
    assert code == 0, err
    md = (tmp_path / "report.md").read_text()
    assert "## Stage: sft" in md and "checkpoint-10" in md and "10 steps" in md
    assert "Evaluation" not in md and "reward" not in md and "notes" not in md
    _assert_png(tmp_path / "curves_sft.png")
    assert not (tmp_path / "eval_accuracy.png").exists()


def test_results_only_and_a_single_run_folder(tmp_path):
    from thinktrain.report import write_report

    _write(tmp_path / "results.json", {"sft": {"accuracy": 0.5, "accuracy_lenient": 0.75, "k": 1, "n": 4,
                                               "sampled_accuracy": None, "pass_at_k": None}})
    md = write_report(tmp_path).read_text()
    assert "| sft | 4 | 1 | 50.0% | 75.0% |" in md and "sampled" not in md  # columns nobody has are left out
    _assert_png(tmp_path / "eval_accuracy.png")

    run = tmp_path / "grpo-run"  # `thinktrain report runs/tiny/grpo`: the run folder is the one stage
    _write(run / "trainer_state.json", _grpo_state(3))
    md = write_report(run).read_text()
    assert "## Stage: grpo-run" in md
    _assert_png(run / "curves_grpo-run.png")


@pytest.mark.parametrize("what", ["empty", "missing", "corrupt"])
def test_nothing_to_report_is_one_line(run_cli, tmp_path, what):
    target = tmp_path if what != "missing" else tmp_path / "nope"
    if what == "corrupt":
        (tmp_path / "results.json").write_text('{"sft": {"accuracy": 0.5,')  # a run killed mid-write
    code, out, err = run_cli("report", target)
    assert code == 2 and err.startswith("thinktrain: error: report: ") and err.count("\n") == 1, err


def test_report_needs_a_folder_argument(run_cli):
    code, _, err = run_cli("report")
    assert code == 2 and "output_dir" in err


def test_grpo_figure_shows_whether_rl_has_signal():
    from thinktrain.report import panels

    history = _grpo_state(2)["log_history"]
    history[0] |= {"accuracy/groups_all_wrong": 0.3, "accuracy/groups_all_right": 0.1, "accuracy/groups_mixed": 0.6}
    chosen = dict(panels(history))
    assert chosen["share of prompt groups"] == ["frac_reward_zero_std", "accuracy/groups_all_wrong",
                                                "accuracy/groups_all_right"]
    assert chosen["entropy"] == ["entropy"]
    assert "entropy" not in dict(panels(_sft_state()["log_history"]))  # SFT's token entropy is not a panel


def test_report_command_parses_without_trl_or_torch(tmp_path):
    """`thinktrain report` is argparse (arguments.py), not TrlParser: a mistake costs no TRL/torch import."""
    import subprocess
    import sys

    code = ("import sys; from thinktrain.cli import main; rc = main(['report', sys.argv[1]]); "
            "print(rc, *(m in sys.modules for m in ('trl', 'torch', 'transformers')))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing")], capture_output=True, text=True)
    assert proc.stdout.split() == ["2", "False", "False", "False"], proc.stderr
    assert proc.stderr.strip() == f"thinktrain: error: report: no such folder: {tmp_path / 'missing'}"



def test_a_pipelines_heldout_curves_share_one_time_axis(tmp_path):
    """Imitation then practice: the rft curve starts at the minute the SFT curve ended (a lone run's does not)."""
    from thinktrain.report import find_stages, heldout_curves

    sft = _sft_state()
    sft["log_history"] += [{"heldout/accuracy": a, "heldout/minutes": m, "step": s}
                           for s, m, a in ((0, 0.0, 0.05), (2, 0.5, 0.3), (4, 1.25, 0.35))]
    _write(tmp_path / "sft" / "trainer_state.json", sft)
    _write(tmp_path / "rft" / "trainer_state.json", _sft_state())
    (tmp_path / "rft" / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"round": 1, "minutes": 1.5, "heldout_accuracy": 0.4}, {"round": 2, "minutes": 1.0, "heldout_accuracy": 0.45})))
    assert heldout_curves(tmp_path, find_stages(tmp_path)) == {"sft": ([0.0, 0.5, 1.25], [0.05, 0.3, 0.35]),
                                                               "rft": ([1.5, 2.5], [0.4, 0.45])}
    _write(tmp_path / "sweep" / "trainer_state.json", sft)  # a run of its own beside the pipeline's stages
    _write(tmp_path / "results.json", {**RESULTS, "rft": RESULTS["grpo"]})
    assert heldout_curves(tmp_path, find_stages(tmp_path)) == {"sft": ([0.0, 0.5, 1.25], [0.05, 0.3, 0.35]),
                                                               "rft": ([2.75, 3.75], [0.4, 0.45]),
                                                               "sweep": ([0.0, 0.5, 1.25], [0.05, 0.3, 0.35])}
