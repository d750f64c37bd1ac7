"""bench/: the GPU check's CPU dry run, the overhead and errors benchmarks' quick modes, and the wheel gatherer's
package list."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def run(*argv, timeout=900) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def positive(*values):
    for value in values:
        assert isinstance(value, (int, float)) and value > 0, values


@pytest.mark.slow
def test_gpu_check_runs_its_code_path_on_cpu(tmp_path):
    from bench_grpo_step import PARTS

    run(ROOT / "bench/gpu_check.py", "--device", "cpu", "--quick", "--out", tmp_path)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["errors"] == {}
    assert report["device"]["type"] == "cpu" and report["device"]["name"]
    assert {"python", "torch", "transformers", "trl", "datasets"} <= set(report["versions"])
    assert "not installed" not in [report["versions"][k] for k in ("torch", "transformers", "trl")]
    positive(report["peak"]["tflops"], report["seconds"])

    assert [r["preset"] for r in report["pretrain"]] == ["micro", "tiny"]
    for r in report["pretrain"]:
        positive(r["params_m"], r["vocab_size"], r["tokens_per_step"], r["tokens_per_second"], r["mfu_percent"],
                 r["loss_first"], r["loss_last"], r["median_step_seconds"], r["first_step_seconds"])
    for name in ("sft", "grpo"):  # the GPU recipes' settings, in fp32 here
        r = report[name]
        positive(r["steps"], r["median_step_seconds"], r["first_step_seconds"], r["seconds"])
        assert (r["attn_implementation"], r["gradient_checkpointing"], r["weights_dtype"]) == ("sdpa", True, "float32")
    breakdown = report["grpo"]["breakdown_seconds"]
    assert list(breakdown) == [*PARTS, "step"]
    positive(breakdown["generation"], breakdown["loss fwd"], breakdown["backward"], breakdown["step"])
    positive(report["grpo"]["mean_completion_tokens"])

    assert list(report["demo"]["results"]) == ["pretrain", "sft", "grpo"]
    for stage, r in report["demo"]["results"].items():
        assert r["n"] == 16 and r["k"] == (1 if stage == "pretrain" else 2), stage  # the pretrained model: greedy only
        positive(r["train_minutes"], r["seconds"])
    text = (tmp_path / "gpu_check.md").read_text()
    assert "GRPO step breakdown" in text and "## Demo at the micro preset" in text and "failed" not in text


@pytest.mark.slow
def test_overhead_benchmark_sides_run_the_same_computation():
    out = run(ROOT / "bench/bench_overhead.py", "--quick").stdout
    for task in ("sft", "grpo"):
        section = out.split(f"{task}: same computation on both sides?")[1].split("\n\n")[0]
        rows = [line for line in section.splitlines() if line.strip()]
        assert {"trainable", "groups", "loss", "grad_norm"} <= {row.split()[0] for row in rows}
        assert all(row.rstrip().endswith("same") for row in rows), section
    assert "throughput:" in out and "start-up:" in out and "DIFFERENT" not in out


@pytest.mark.slow
def test_the_errors_benchmark_times_every_case_three_ways():
    import re

    out = run(ROOT / "bench/bench_errors.py", "--rounds", "1").stdout
    rows = {m[0].strip(): [float(x) for x in m[1:]] for m in
            re.findall(r"\| ([\w ]+?)\s+\|\s+([\d.]+) \|\s+([\d.]+) \|\s+([\d.]+) \|\s+([\d.]+)x \|", out)}
    assert set(rows) == {"typo", "renamed key", "wrong type", "YAML syntax error"}, out
    for values in rows.values():
        positive(*values)  # (how fast is the benchmark's to say, not a test's)
    assert "valid run, launch to its header" in out and "TRL's CLI on the same typo" in out


def test_gathered_wheels_are_thinktrains_dependencies_at_the_installed_versions():
    from importlib import metadata

    pytest.importorskip("tomllib")  # Python >= 3.11 (gather_wheels reads pyproject.toml)
    import gather_wheels

    top, pins = gather_wheels.needed()
    names = {gather_wheels.name(r.name) for r in top}
    assert {"transformers", "trl", "datasets", "evaluate", "math-verify"} <= names
    assert not names & {"torch", "tensorboard"}
    assert {"huggingface-hub", "dill", "multiprocess", "xxhash", "latex2sympy2-extended", "aiohttp"} <= set(pins)
    assert not set(pins) & gather_wheels.SKIP
    assert all(pins[n] == metadata.version(n) for n in pins)


def test_spread_is_median_and_quartiles():
    from bench_overhead import spread

    assert spread([2.0]) == (2.0, 2.0, 2.0)
    assert spread([1.0, 2.0, 3.0, 4.0, 5.0]) == (3.0, 2.0, 4.0)
