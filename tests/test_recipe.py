"""Recipe parsing, overrides, and the one-line errors (exit code 2, before any model loads)."""

import subprocess
import sys
from pathlib import Path

import pytest

from thinktrain.errors import RecipeError
from thinktrain.recipe import parse

ROOT = Path(__file__).resolve().parents[1]
TINY_SFT = ROOT / "recipes/tiny/sft.yaml"
TINY_GRPO = ROOT / "recipes/tiny/grpo.yaml"


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    """Every error here must come before a model loads: loading one fails the test."""
    import thinktrain.grpo
    import thinktrain.sft

    def forbidden(*a, **k):
        raise AssertionError("a model was loaded before the error")

    monkeypatch.setattr(thinktrain.sft, "load_model", forbidden)
    monkeypatch.setattr(thinktrain.grpo, "load_model", forbidden)


def write(tmp_path, text, name="recipe.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


BASE = "task: sft\nmodel_name_or_path: scratch:tiny\ndataset_name: synthetic:gsm8k\ndataset_train_split: worked\n"
GRPO = BASE.replace("task: sft", "task: grpo").replace("worked", "practice") + "bf16: false\n"


# --------------------------------------------------------------------------- parsing and overrides


def test_yaml_values_are_typed_and_cli_overrides_win(tmp_path):
    # PyYAML reads 1e-3 as a string; the recipe layer converts it with the CLI's own type function.
    p = write(tmp_path, BASE + "learning_rate: 1e-3\nmax_steps: 7\nbf16: false\nreport_to: none\n")
    r = parse([str(p), "--max_steps", "3", "--seed", "5"])
    task, script, train, model = r.task, r.script_args, r.training_args, r.model_args
    assert task == "sft"
    assert train.learning_rate == 1e-3 and isinstance(train.learning_rate, float)
    assert (train.max_steps, train.seed) == (3, 5)
    assert script.dataset_train_split == "worked" and model.model_name_or_path == "scratch:tiny"


def test_config_flag_and_equals_form(tmp_path):
    p = write(tmp_path, BASE + "bf16: false\n")
    r = parse(["--config", str(p), "--max_steps=4"])
    train = r.training_args
    assert train.max_steps == 4


@pytest.mark.parametrize("speedup, bf16", [(0.01, False), (4.5, True)])
def test_cpu_bf16_falls_back_to_fp32_where_the_cpu_has_no_bf16(tmp_path, monkeypatch, capsys, speedup, bf16):
    # AVX2-only CPUs emulate bf16 matmuls ~100x slower than fp32: a CPU bf16 recipe trains in fp32 there, and the
    # run header says why (stderr stays clean, so a bad recipe still fails with one line)
    import torch

    import thinktrain.recipe
    from thinktrain.run import header

    monkeypatch.setattr(thinktrain.recipe, "cpu_bf16_speedup", lambda: speedup)
    p = write(tmp_path, BASE + "bf16: true\nuse_cpu: true\n")
    r = parse([str(p), "--max_steps", "3"])
    train = r.training_args
    assert train.bf16 is bf16 and train.max_steps == 3 and train.use_cpu
    assert train.mixed_precision == ("bf16" if bf16 else "no")
    assert capsys.readouterr().err == ""
    line = header(r, [0] * 4, None).split("\n")[2]
    if bf16:
        assert line.endswith("on cpu, precision bf16")
    else:
        assert line.endswith(f"on cpu, precision fp32 (bf16 asked for, but this CPU has no native bf16 "
                             f"({torch.backends.cpu.get_cpu_capability()}): its bf16 matmuls run 100x slower than fp32)")


@pytest.mark.parametrize("bf16_tflops, fp32_tflops, native", [
    (0.02, 2.0, False),  # AVX2 only: PyTorch emulates bf16, its matmuls ~100x slower than fp32's
    (0.98, 2.0, False),  # just under half fp32's speed: still emulated
    (1.0, 2.0, True),  # half fp32's speed: counts as native
    (9.0, 2.0, True),  # AVX512-BF16 / AMX: bf16 faster than fp32
])
def test_cpu_bf16_precision_follows_the_measured_speedup(tmp_path, monkeypatch, bf16_tflops, fp32_tflops, native):
    # The decision, from fixed matmul speeds (the probe's stopwatch is not asserted on: a timing compared with a flag
    # flakes under load): the probe divides bf16's speed by fp32's on the CPU, and a CPU bf16 recipe keeps bf16 on a
    # CPU with native bf16 (>= half fp32's speed), else trains in fp32 and says how much slower bf16 would be.
    import torch

    import thinktrain.recipe
    from thinktrain import hardware

    calls = []

    def measured(dtype, device, n=None, reps=5):
        calls.append((dtype, str(device)))
        return {torch.bfloat16: bf16_tflops, torch.float32: fp32_tflops}[dtype]

    monkeypatch.setattr(hardware, "measure_peak_tflops", measured)
    probe = hardware.cpu_bf16_speedup.__wrapped__  # uncached: the cached real measurement stays as it was
    assert probe() == pytest.approx(bf16_tflops / fp32_tflops)
    assert sorted(calls, key=str) == [(torch.bfloat16, "cpu"), (torch.float32, "cpu")]

    monkeypatch.setattr(thinktrain.recipe, "cpu_bf16_speedup", probe)
    r = parse([str(write(tmp_path, BASE + "bf16: true\nuse_cpu: true\n"))])
    assert r.training_args.bf16 is native
    assert r.training_args.mixed_precision == ("bf16" if native else "no")
    if native:
        assert r.bf16_fallback is None
    else:
        assert f"its bf16 matmuls run {fp32_tflops / bf16_tflops:.0f}x slower than fp32" in r.bf16_fallback

    # bf16 *weights* (a GPU recipe's dtype) on a machine without a bf16 accelerator: the same decision
    monkeypatch.setattr(thinktrain.recipe, "has_bf16_accelerator", lambda: False)
    r = parse([str(write(tmp_path, BASE + "bf16: false\ndtype: bfloat16\n"))])
    assert r.model_args.dtype == ("bfloat16" if native else "float32")
    assert (r.bf16_fallback is None) is native


def test_cpu_bf16_probe_runs_both_dtypes_on_this_cpu():
    import math

    from thinktrain.hardware import cpu_bf16_speedup

    # the real measurement, small and uncached: a finite positive ratio (its size depends on the CPU and the load)
    speedup = cpu_bf16_speedup.__wrapped__(n=64)
    assert math.isfinite(speedup) and speedup > 0


def test_grpo_fields_and_rewards(tmp_path):
    p = write(tmp_path, GRPO + "reward_funcs: [accuracy, format]\nreward_weights: [1, 0.5]\nnum_generations: 4\n"
              "per_device_train_batch_size: 8\nmax_prompt_length: 64\n")
    r = parse([str(p)])
    task, script, train = r.task, r.script_args, r.training_args
    assert task == "grpo"
    assert script.reward_funcs == ["accuracy", "format"] and train.reward_weights == [1.0, 0.5]
    assert script.max_prompt_length == 64 and train.num_generations == 4


def test_learning_rate_groups_from_yaml_mapping_or_cli_json(tmp_path):
    p = write(tmp_path, BASE + "bf16: false\nlearning_rate_groups:\n  'model\\.norm\\.weight$': 1.0e-2\n  embed: 0\n")
    r = parse([str(p)])
    script = r.script_args
    assert script.learning_rate_groups == {r"model\.norm\.weight$": 0.01, "embed": 0.0}
    r = parse([str(p), "--learning_rate_groups", '{"lm_head": "3e-4"}'])
    script = r.script_args
    assert script.learning_rate_groups == {"lm_head": 3e-4}
    r = parse([str(write(tmp_path, BASE + "bf16: false\n"))])
    script = r.script_args
    assert script.learning_rate_groups is None


def test_task_override_from_cli(tmp_path):
    p = write(tmp_path, BASE + "bf16: false\n")
    r = parse([str(p), "--task", "grpo", "--dataset_train_split", "practice"])
    task, script, train = r.task, r.script_args, r.training_args
    assert task == "grpo" and type(train).__name__ == "GRPOConfig" and script.reward_funcs


def test_resolved_recipe_keeps_user_keys_with_final_values(tmp_path):
    p = write(tmp_path, BASE + "learning_rate: 1e-3\nbf16: false\n")
    recipe = parse([str(p), "--learning_rate", "2e-3"]).resolved()
    assert recipe["task"] == "sft" and recipe["learning_rate"] == 2e-3 and recipe["bf16"] is False
    assert "per_device_train_batch_size" not in recipe  # only what the user set


def test_env_block_sets_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("THINKTRAIN_TEST_VAR", raising=False)
    p = write(tmp_path, BASE + "bf16: false\nenv:\n  THINKTRAIN_TEST_VAR: 7\n")
    parse([str(p)])
    import os

    assert os.environ["THINKTRAIN_TEST_VAR"] == "7"


@pytest.mark.parametrize("recipe", sorted(p.relative_to(ROOT) for p in (ROOT / "recipes").rglob("*.yaml")))
def test_every_recipe_parses_with_cpu_overrides(recipe, tiny_model_dir, gsm8k_sample):
    text = (ROOT / recipe).read_text()
    overrides = ["--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(gsm8k_sample),
                 "--dataset_test_split", "train", "--bf16", "false", "--push_to_hub", "false", "--report_to", "none"]
    if "use_vllm" in text:
        overrides += ["--use_vllm", "false"]
    if "load_in_4bit: true" in text:
        overrides += ["--load_in_4bit", "false"]  # bitsandbytes is an optional extra; QLoRA has its own tests
    task = parse([str(ROOT / recipe), *overrides]).task
    assert task in ("pretrain", "sft", "grpo", "rft")


# --------------------------------------------------------------------------- errors: exit 2, one line

ERRORS = [
    # (recipe text or None for a missing file, extra CLI args, words the message must contain)
    (BASE + "lerning_rate: 0.1\n", [], ["unknown recipe key 'lerning_rate'", "did you mean 'learning_rate'"]),
    (BASE, ["--lerning_rate", "0.1"], ["unknown option 'lerning_rate'", "did you mean 'learning_rate'"]),
    (BASE + "learning_rate: fast\n", [], ["recipe key 'learning_rate'", "expected float", "'fast'"]),
    (BASE + "packing: maybe\n", [], ["recipe key 'packing'", "expected true/false"]),
    (BASE + "max_steps: 2.5\n", [], ["recipe key 'max_steps'", "expected int"]),
    (BASE, ["--max_steps", "abc"], ["--max_steps", "invalid int value: 'abc'"]),
    (BASE + "lr_scheduler_type: sideways\n", [], ["lr_scheduler_type", "'sideways' is not one of", "cosine"]),
    (BASE.replace("task: sft", "task: dpo"), [], ["unknown task 'dpo'", "sft, grpo"]),
    (BASE + "torch_dtype: bfloat16\n", [], ["'torch_dtype'", "renamed: use dtype"]),
    (BASE + "max_seq_length: 512\n", [], ["'max_seq_length'", "renamed: use max_length"]),
    (BASE + "warmup_ratio: 0.1\n", [], ["'warmup_ratio'", "renamed: use warmup_steps"]),
    (BASE + "evaluation_strategy: steps\n", [], ["'evaluation_strategy'", "renamed: use eval_strategy"]),
    (BASE, ["--torch_dtype", "float32"], ["'torch_dtype'", "renamed: use dtype"]),
    (GRPO + "reward_funcs: [acuracy]\n", [], ["unknown reward 'acuracy'", "accuracy"]),
    (GRPO + "reward_funcs: [no_such_pkg.mod:fn]\n", [], ["no_such_pkg.mod:fn"]),
    (GRPO + "reward_funcs: [accuracy, format]\nreward_weights: [1.0]\n", [],
     ["reward_weights has 1 values but reward_funcs has 2"]),
    (GRPO + "reward_funcs: []\n", [], ["reward_funcs"]),
    (GRPO + "num_generations: 3\nper_device_train_batch_size: 8\n", [],
     ["generation_batch_size (8) must be divisible by num_generations (3)"]),
    (GRPO + "num_generations: 1\nper_device_train_batch_size: 8\n", [], ["at least 2 generations"]),
    (BASE.replace("synthetic:gsm8k", "data/nope.jsonl"), [], ["dataset_name: no such file or folder: data/nope.jsonl"]),
    (BASE.replace("scratch:tiny", "./models/missing"), [], ["model_name_or_path: no such file or folder"]),
    (BASE.replace("scratch:tiny", "Qwen/Qwen2.5-0.5B-Instruct"), [],
     ["model_name_or_path: 'Qwen/Qwen2.5-0.5B-Instruct' is a Hugging Face Hub id", "HF_HUB_OFFLINE"]),
    (BASE.replace("synthetic:gsm8k", "openai/gsm8k"), [], ["dataset_name: 'openai/gsm8k' is a Hugging Face Hub id"]),
    (BASE.replace("scratch:tiny", "scratch:huge"), [], ["unknown preset", "scratch:tiny"]),
    (BASE.replace("model_name_or_path: scratch:tiny\n", ""), [], ["model_name_or_path is missing"]),
    (BASE.replace("dataset_name: synthetic:gsm8k\n", ""), [], ["dataset_name is missing"]),
    (BASE.replace("synthetic:gsm8k", "synthetic:chess"), [], ["dataset_name 'synthetic:chess'"]),
    (BASE.replace("split: worked", "split: nope"), [], ["dataset_train_split", "no split 'nope'", "worked"]),
    (BASE + "dataset_train_split: nope\n", [], ["line 5: key 'dataset_train_split' is set twice (first on line 4)"]),
    (BASE + "bf16: true\n", [], ["bf16: true needs a GPU", "--bf16 false"]),
    (GRPO + "use_vllm: true\n", [], ["use_vllm: true needs vllm", "--use_vllm false"]),
    (None, [], ["recipe file not found"]),
    ("task: sft\n  model: [\n", [], ["YAML syntax error", "line"]),
    ("", [], ["is empty"]),
    ("# only a comment\n", [], ["is empty"]),
    ("- task: sft\n", [], ["must be a YAML mapping", "list"]),
    ("task: sft\ncmd: !!python/object/apply:os.system ['echo pwned']\n", [], ["YAML tag not allowed"]),
    (BASE, ["stray"], ["unexpected argument(s) stray"]),
    (BASE + "learning_rate_groups:\n  'norm(': 0.01\n", [], ["learning_rate_groups: 'norm(' is not a valid regex"]),
    (BASE + "learning_rate_groups:\n  norm: fast\n", [],
     ["learning_rate_groups: the learning rate for 'norm' must be a number, got 'fast'"]),
    (BASE + "learning_rate_groups:\n  norm: -0.1\n", [], ["for 'norm' must be non-negative, got -0.1"]),
    (BASE + "learning_rate_groups: [norm]\n", [], ["learning_rate_groups: expected a mapping"]),
    (BASE, ["--learning_rate_groups", "norm=0.1"], ["learning_rate_groups: expected a JSON mapping like"]),
    (BASE, ["--learning_rate", "0", "--learning_rate_groups", '{"norm": 0}'],
     ["learning_rate_groups: every parameter has learning rate 0, so nothing would train"]),
]


@pytest.mark.parametrize("text,extra,words", ERRORS, ids=[" ".join(w[:1]) for *_, w in ERRORS])
def test_error_is_one_line_exit_2(tmp_path, run_cli, text, extra, words):
    recipe = tmp_path / "missing.yaml" if text is None else write(tmp_path, text)
    if "stray" in extra:
        extra = ["--bf16", "false", *extra]
    code, out, err = run_cli("train", recipe, *extra)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("thinktrain: error:")]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0]


def test_missing_columns_named_before_model_loads(tmp_path, run_cli):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"foo": 1, "bar": 2}\n')
    code, _, err = run_cli("train", write(tmp_path, BASE.replace("synthetic:gsm8k", str(data))
                                          .replace("worked", "train") + "bf16: false\n"))
    assert code == 2
    assert "lacks column(s) question, answer" in err and "it has: foo, bar" in err


def test_real_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "thinktrain", "train", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"thinktrain: error: recipe file not found: {tmp_path / 'nope.yaml'} " \
                                  "(pass a YAML file, e.g. recipes/tiny/sft.yaml)"
    assert "Traceback" not in proc.stderr


def test_unknown_command(run_cli):
    code, _, err = run_cli("trian")
    assert code == 2 and "unknown command 'trian'" in err


def test_recipe_error_is_an_exception_type():
    with pytest.raises(RecipeError, match="recipe file not found"):
        parse(["/nonexistent/recipe.yaml"])


def test_unreachable_hub_is_named_when_not_flagged_offline(tmp_path, run_cli, monkeypatch):
    import thinktrain.checks as checks

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # read once, at import
    monkeypatch.setattr(checks, "_hub_reachable", lambda: False)
    code, _, err = run_cli("train", write(tmp_path, BASE.replace("scratch:tiny", "Qwen/Qwen2.5-0.5B-Instruct")))
    assert code == 2
    assert "'Qwen/Qwen2.5-0.5B-Instruct' is a Hugging Face Hub id, but huggingface.co cannot be reached" in err
