"""The bad-input corpus (tests/bad_inputs/cases.yaml): every malformed recipe, override, dataset file or command
stops with exit code 2 and one line naming the mistake and the fix, in seconds, before any model loads."""

import time
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent / "bad_inputs"
CASES = yaml.safe_load((HERE / "cases.yaml").read_text())
SECONDS = 10  # per case, imports already done: the checks themselves take well under a second


@pytest.fixture(autouse=True)
def nothing_heavy(monkeypatch):
    """Run from tests/bad_inputs/ with every way of getting a model forbidden: one call fails the case."""
    import datasets
    import transformers
    import trl
    from trl import GRPOConfig, SFTConfig  # noqa: F401  (imported here, not inside the timed call)

    import thinktrain.evaluation
    import thinktrain.grpo
    import thinktrain.models
    import thinktrain.pretrain
    import thinktrain.sft

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded (or a trainer built) before the error")

    for module in (thinktrain.models, thinktrain.sft, thinktrain.grpo, thinktrain.pretrain):
        monkeypatch.setattr(module, "load_model", forbidden)
    monkeypatch.setattr(thinktrain.evaluation, "load_checkpoint", forbidden)
    monkeypatch.setattr(thinktrain.evaluation, "evaluate_model", forbidden)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", forbidden)
    # any model class, however built, except a skeleton on the meta device (checks.check_model_structure: module
    # names without a weight read or allocated)
    for owner, name in ((transformers.AutoModelForCausalLM, "from_config"), (transformers.PreTrainedModel, "__init__")):
        monkeypatch.setattr(owner, name, _unless_meta(getattr(owner, name), forbidden))
    monkeypatch.setattr(trl, "SFTTrainer", forbidden)
    monkeypatch.setattr(trl, "GRPOTrainer", forbidden)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.chdir(HERE)
    # datasets draws progress bars on stderr the first time it reads a file; they are not messages
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    yield
    if bars:
        datasets.enable_progress_bars()


def _unless_meta(original, forbidden):
    import torch

    def guarded(*args, **kwargs):
        return (original if torch.get_default_device().type == "meta" else forbidden)(*args, **kwargs)

    return guarded


def _files():
    return sorted(str(p.relative_to(HERE)) for p in HERE.rglob("*"))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input(case, run_cli, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    hidden = set(case.get("missing", []))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else find_spec(name, *a))
    before = _files()
    start = time.perf_counter()
    code, out, err = run_cli(*case["argv"])
    seconds = time.perf_counter() - start
    lines = err.rstrip("\n").split("\n")
    n = case.get("lines", 1)  # several keys to change: a summary line, then one key a line
    assert code == case["exit_code"] == 2, err
    assert len(lines) == n and lines[0].strip(), f"stderr must be {n} line(s), got:\n{err}"
    assert lines[0].startswith("thinktrain: error: "), err
    assert all(line.startswith("  ") for line in lines[1:]), err
    for item in case["contains"]:
        assert item.lower() in err.lower(), f"{item!r} not in: {err}"
    assert out == "", "nothing may run (no header, no output) before the error"
    assert seconds < SECONDS, f"took {seconds:.1f}s"
    assert _files() == before, "the case wrote files"


def test_manifest_is_consistent():
    assert len(CASES) >= 190
    root = HERE.parents[1]  # the README and docs/recipes.md say how many cases there are
    assert f"({len(CASES)} cases test it)" in (root / "README.md").read_text()
    assert f"holds {len(CASES)} such cases" in " ".join((root / "docs/recipes.md").read_text().split())
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate ids"
    for case in CASES:
        assert {"id", "argv", "exit_code", "contains"} <= set(case) <= {"id", "argv", "exit_code", "contains",
                                                                         "missing", "lines"}, case
        assert case["exit_code"] == 2 and case["contains"] and all(isinstance(a, str) for a in case["argv"]), case
    used = " ".join(a for c in CASES for a in c["argv"])
    recipes = [p.relative_to(HERE).as_posix() for p in (HERE / "recipes").glob("*.yaml")]
    assert not [r for r in recipes if r not in used], "recipes no case runs"
    referenced = used + " ".join((HERE / r).read_text() for r in recipes)
    data = [p.relative_to(HERE).as_posix() for p in (HERE / "data").iterdir()]
    assert not [d for d in data if d not in referenced], "data files no case reads"


# A real GRPO recipe as open-r1 ships it, for TRL 0.x: recipes/Qwen2.5-Coder-7B-Instruct/grpo/config_codeforces.yaml
# of github.com/huggingface/open-r1 at commit 1416fa0cf21595d2083b399a2a0bbddd7f6e9563, verbatim.
OPEN_R1_CODEFORCES = r"""
# Model arguments
model_name_or_path: Qwen/Qwen2.5-Coder-7B-Instruct
model_revision: main
torch_dtype: bfloat16
attn_implementation: flash_attention_2
# Data training arguments
dataset_name: open-r1/codeforces
dataset_prompt_column: prompt
dataset_config: verifiable-prompts
dataset_test_split: test
dataset_train_split: train

system_prompt: "You are a helpful AI Assistant that provides well-reasoned and detailed responses. You first think about the reasoning process as an internal monologue and then provide the user with the answer. Respond in the following format: <think>\n...\n</think>\n<answer>\n...\n</answer>"

# GRPO trainer config
callbacks:
- push_to_hub_revision
benchmarks:
- lcb_v4
beta: 0.0
loss_type: dr_grpo
scale_rewards: false
bf16: true
do_eval: false
eval_strategy: "no"
use_vllm: true
vllm_device: auto
vllm_gpu_memory_utilization: 0.7
gradient_accumulation_steps: 32
gradient_checkpointing: true
gradient_checkpointing_kwargs:
  use_reentrant: false
hub_model_id: open-r1/Qwen2.5-Coder-7B-Instruct-Codeforces-GRPO
hub_model_revision: v01.00
hub_strategy: every_save
learning_rate: 1.0e-06
log_completions: true
log_level: info
logging_first_step: true
logging_steps: 1
logging_strategy: steps
lr_scheduler_type: constant_with_warmup
max_grad_norm: 0.2
max_prompt_length: 2000
max_completion_length: 8192
max_steps: -1
num_generations: 16
# aiming for 1k optimization steps
# total_samples_per_batch = num_gpus * grad_accumulation_steps * per_device_batch_size = 8 * 32 * 4 = 1024
# unique_prompts_per_batch = total_samples_per_batch / num_generations = 1024 / 16 = 64
# #dataset ~= 16k (8k * 2, for python and cpp)
# global_steps_per_epoch = #dataset / unique_prompts_per_batch = 16k / 64 ~= 250
# epochs_for_1k_steps = 1000/250 = 4 epochs
num_train_epochs: 4
output_dir: data/Qwen2.5-Coder-7B-Instruct-Codeforces-GRPO_v01.00
overwrite_output_dir: true
per_device_train_batch_size: 4
push_to_hub: true
report_to:
- wandb
reward_funcs:
- cf_code
- code_format
reward_weights:
- 1.0
- 0.1
save_strategy: "steps"
save_steps: 0.05
save_total_limit: 1
seed: 42
temperature: 0.7
wandb_entity: huggingface
wandb_project: open-r1
warmup_ratio: 0.1

mask_truncated_completions: true
# for each generation, evaluate these many test cases in parallel, then check if any of them failed (0 score): if so stop evaluating
# otherwise continue with the next batch of test cases. Useful to avoid overloading the eval server + save time on wrong solutions
code_eval_test_batch_size: -1
code_eval_scoring_mode: weighted_sum
"""[1:]
# What each of its keys needs (the start of its row): 1 missing, 4 renamed, 8 removed.
OPEN_R1_CHANGES = {
    "task": "missing, add task: grpo", "torch_dtype": "renamed, use dtype",
    "dataset_prompt_column": "renamed, use prompt_column", "hub_model_revision": "renamed, use hub_revision",
    "warmup_ratio": "renamed, use warmup_steps", "callbacks": "removed, delete it",
    "benchmarks": "removed, delete it; after training, run thinktrain eval", "vllm_device": "removed, delete it",
    "overwrite_output_dir": "removed, delete it", "wandb_entity": "removed, set WANDB_ENTITY in the recipe's env:",
    "wandb_project": "removed, set WANDB_PROJECT in the recipe's env:",
    "code_eval_test_batch_size": "removed, delete it", "code_eval_scoring_mode": "removed, delete it",
}


def test_a_ported_open_r1_recipe_gets_every_key_to_change_in_one_error(run_cli, tmp_path):
    recipe = tmp_path / "config_codeforces.yaml"
    recipe.write_text(OPEN_R1_CODEFORCES)
    code, out, err = run_cli("train", recipe)
    lines = err.rstrip("\n").split("\n")
    assert code == 2 and out == ""
    assert lines[0] == ("thinktrain: error: 13 recipe keys need changing for task 'grpo' (1 missing, 4 renamed, "
                        "8 removed):"), err
    rows = dict(line.removeprefix("  ").split(": ", 1) for line in lines[1:])
    assert set(rows) == set(OPEN_R1_CHANGES), err
    for key, start in OPEN_R1_CHANGES.items():
        assert rows[key].startswith(start), (key, rows[key])

    # doing what the rows say leaves no key to change: the next error is about a value (its code rewards)
    config = yaml.safe_load(OPEN_R1_CODEFORCES)
    for key, row in rows.items():
        value = config.pop(key, None)
        if row.startswith("renamed, use "):
            config[row.removeprefix("renamed, use ").split()[0]] = value
        elif row.startswith("missing, add task: "):
            config["task"] = row.removeprefix("missing, add task: ").split()[0]
        elif row.startswith("removed, set "):  # WANDB_* move to the env: block
            config.setdefault("env", {})[row.removeprefix("removed, set ").split()[0]] = value
    recipe.write_text(yaml.safe_dump(config))
    code, out, err = run_cli("train", recipe, "--bf16", "false")  # (bf16 needs a GPU: refused at once on a CPU)
    assert code == 2 and out == "" and "recipe key" not in err, err
    assert err.startswith("thinktrain: error: 2 of reward_funcs' names need changing:\n"), err
    assert "unknown reward 'cf_code'" in err and "unknown reward 'code_format'" in err, err


def test_renamed_and_removed_keys_match_the_installed_dataclasses():
    """Each old key of porting.RENAMED / REMOVED is no recipe key of any task, and each new name is one."""
    import dataclasses
    import re

    from thinktrain.configs import dataclass_types
    from thinktrain.errors import TASKS
    from thinktrain.porting import REMOVED, RENAMED

    fields = {f.name for task in TASKS for c in dataclass_types(task) for f in dataclasses.fields(c)}
    assert not (set(RENAMED) | set(REMOVED)) & fields
    assert not [new for new in RENAMED.values() if re.match(r"\w+", new).group() not in fields]
