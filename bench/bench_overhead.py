"""thinktrain's cost over a plain TRL script doing the same job: training throughput and start-up time.

    .venv/bin/python bench/bench_overhead.py                 # 6 ABBA rounds of SFT and GRPO, ~16 min alone on 2 cores
    .venv/bin/python bench/bench_overhead.py --rounds 10 --tasks grpo
    .venv/bin/python bench/bench_overhead.py --quick         # 1 round, a few steps: checks that it works

Set-up, once, in a temporary folder: a random Llama of the `tiny` preset with a 512-token BPE trained on synthetic
prose, saved as an ordinary checkpoint, and each task's training rows written as jsonl in the shape its TRL trainer
takes (SFT: conversational prompt/completion; GRPO: prompt/solution). Nothing is downloaded.

Each task's fixed recipe (bench/recipes/overhead_{sft,grpo}.yaml) is trained two ways, each run in a fresh Python
process, in alternating order (ABBA: round 1 thinktrain first, round 2 TRL first, ...):
  thinktrain  `thinktrain train RECIPE` (recipe parsing and validation, data shaping, run header, output_dir lock,
              reward wrappers that log the RL signal, the NaN guard, learning_rate_groups, saving);
  TRL         the plain script a user would write for the same job: TrlParser on the recipe's TRL keys, the rows
              from load_dataset("json"), SFTTrainer / GRPOTrainer with the model path and the bare reward
              functions; where the recipe trains only some weights (learning_rate 0 + one learning_rate_groups
              entry) it freezes every other weight and gives learning_rate the group's rate.
Both sides must run the same computation, and the benchmark checks it: the same trainable parameter count, the
same optimizer groups (learning rate, weight decay, size) and the same first-step values (loss, gradient norm;
GRPO's reward and entropy too); a mismatch is printed and the benchmark exits 1.

Two figures, each the median over rounds of a per-round ratio thinktrain / TRL with its interquartile range:
  throughput  steps/s from the start of step 2 to the end of the last step (a callback on both sides);
  start-up    wall seconds from launching the process to the start of the first training step (imports, parsing,
              checks, data, model loading, trainer set-up); shown with the difference in seconds.
Alone on the machine: on 2 cores a second CPU job makes single runs 3-5x slower.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "bench" / "recipes"
SYSTEM_PROMPT = "Think inside <think> </think>, then answer inside <answer> </answer>."
# --quick: a few small steps on both sides (the same overrides for both), to check that everything works
QUICK = {"sft": ["--max_steps", "3", "--per_device_train_batch_size", "4", "--max_length", "128"],
         "grpo": ["--max_steps", "2", "--per_device_train_batch_size", "16", "--max_completion_length", "16"]}
THINKTRAIN_KEYS = ("task", "learning_rate_groups", "reward_funcs")  # not TRL's: the plain script does their job
CHECKED = ("loss", "grad_norm", "learning_rate", "num_tokens", "reward", "reward_std", "entropy",
           "completions/mean_length")  # first-step values both sides log (those a task has)


# --------------------------------------------------------------------------- set-up (parent process)


def prepare(tmp: Path) -> None:
    """tmp/model (random tiny Llama + BPE), tmp/{sft,grpo}.jsonl, and the plain script's TRL config per task."""
    import yaml

    sys.path.insert(0, str(ROOT / "src"))
    from types import SimpleNamespace

    import datasets

    from thinktrain import data, synthetic
    from thinktrain.models import load_model
    from thinktrain.tokenizer import build_tokenizer

    datasets.disable_progress_bars()
    raw = synthetic.load("gsm8k?exposition=1000&worked=1024&practice=256&test=0")
    tokenizer = build_tokenizer(raw["exposition"]["text"], vocab_size=512)
    model = load_model(SimpleNamespace(model_name_or_path="scratch:tiny"), SimpleNamespace(seed=0), tokenizer)
    model.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    shape = SimpleNamespace(system_prompt=SYSTEM_PROMPT, prompt_column="question", answer_column="answer",
                            dataset_name="synthetic:gsm8k")
    data.to_sft(raw["worked"], shape).select_columns(["prompt", "completion"]).to_json(tmp / "sft.jsonl")
    grpo = data.to_grpo(raw["practice"], "question", "answer", SYSTEM_PROMPT, "synthetic:gsm8k")
    grpo.select_columns(["prompt", "solution"]).to_json(tmp / "grpo.jsonl")
    for task in ("sft", "grpo"):
        config = yaml.safe_load((RECIPES / f"overhead_{task}.yaml").read_text())
        plain = {k: v for k, v in config.items() if k not in THINKTRAIN_KEYS}
        groups = {p: float(lr) for p, lr in (config.get("learning_rate_groups") or {}).items()}
        trained = {p: lr for p, lr in groups.items() if lr > 0}
        if groups and (float(config["learning_rate"]) != 0 or len(set(trained.values())) != 1):
            sys.exit("bench_overhead: error: the plain script does one job: learning_rate 0 and every positive "
                     "group at one rate (it freezes the rest)")
        if trained:
            plain["learning_rate"] = next(iter(trained.values()))
        (tmp / f"trl_{task}.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))
        (tmp / f"trl_{task}.json").write_text(json.dumps({"train_only": "|".join(trained) or None,
                                                          "rewards": config.get("reward_funcs", [])}))


# --------------------------------------------------------------------------- one run (child process)


def install_probe(result: dict) -> None:
    """The same callback on both sides (added as trainer.train starts): what trains, the first step's logged values,
    when the first step starts, and the time from step 2 to the end."""
    from transformers import Trainer, TrainerCallback

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kw):
            result["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
            result["dtype"] = str(next(model.parameters()).dtype)
            result["groups"] = sorted(  # [rate before the schedule, weight decay, size] of each non-empty group
                [g.get("initial_lr", g["lr"]), g["weight_decay"], sum(p.numel() for p in g["params"])]
                for g in optimizer.param_groups if g["params"])

        def on_step_begin(self, args, state, control, **kw):
            result.setdefault("first_step_at", time.time())
            if state.global_step == 1:
                self.second = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.end = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            result.setdefault("first_log", {k: v for k, v in logs.items() if k in CHECKED})

        def on_train_end(self, args, state, control, **kw):
            result["steps_per_second"] = (state.global_step - 1) / (self.end - self.second)

    train = Trainer.train

    def train_with_probe(self, *args, **kwargs):
        self.add_callback(Probe())
        return train(self, *args, **kwargs)

    Trainer.train = train_with_probe


def thinktrain_run(task: str, tmp: Path, overrides: list[str]) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from thinktrain.cli import main

    if main(["train", str(RECIPES / f"overhead_{task}.yaml"), *overrides]):
        sys.exit(1)


def trl_run(task: str, tmp: Path, overrides: list[str]) -> None:
    """The plain TRL script for the same job."""
    import re

    from datasets import load_dataset
    from trl import GRPOConfig, GRPOTrainer, ModelConfig, ScriptArguments, SFTConfig, SFTTrainer, TrlParser

    job = json.loads((tmp / f"trl_{task}.json").read_text())
    config, trainer_class = (SFTConfig, SFTTrainer) if task == "sft" else (GRPOConfig, GRPOTrainer)
    script_args, training_args, model_args = TrlParser((ScriptArguments, config, ModelConfig)).parse_args_and_config(
        ["--config", str(tmp / f"trl_{task}.yaml"), *overrides])
    dataset = load_dataset("json", data_files=script_args.dataset_name, split="train")
    kwargs = {}
    if task == "grpo":
        sys.path.insert(0, str(ROOT / "src"))
        from thinktrain import rewards

        kwargs["reward_funcs"] = [getattr(rewards, f"{name}_reward") for name in job["rewards"]]
    trainer = trainer_class(model=model_args.model_name_or_path, args=training_args, train_dataset=dataset, **kwargs)
    if job["train_only"]:  # train only these weights: freeze the rest (no gradients, no backward through them)
        for name, p in trainer.model.named_parameters():
            p.requires_grad_(re.search(job["train_only"], name) is not None)
    trainer.train()
    trainer.save_model(training_args.output_dir)


def child(who: str, task: str, tmp: Path, extra: list[str]) -> None:
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    result: dict = {}
    install_probe(result)
    out = tmp / f"out-{who}-{task}"
    overrides = ["--model_name_or_path", str(tmp / "model"), "--dataset_name", str(tmp / f"{task}.jsonl"),
                 "--output_dir", str(out), *extra]
    (thinktrain_run if who == "thinktrain" else trl_run)(task, tmp, overrides)
    shutil.rmtree(out, ignore_errors=True)
    print("BENCH_RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- rounds and figures (parent)


def measure(who: str, task: str, tmp: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", who, task, "--tmp", str(tmp), "--extra", json.dumps(extra)]
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"bench_overhead: error: {task}/{who} run failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    result = json.loads(lines[-1].split(" ", 1)[1])
    result["startup"] = result["first_step_at"] - started
    return result


def same(a, b) -> bool:
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))
    return a == b


def check(task: str, runs: dict[str, list[dict]]) -> bool:
    """Print what each side trained and its first-step values; True when every run of both sides agrees."""
    ref, consistent = runs["thinktrain"][0], True
    print(f"\n{task}: same computation on both sides?")
    for key in ("trainable", "dtype", "groups", *ref["first_log"]):
        values = {who: [r[key] if key in r else r["first_log"].get(key) for r in rs] for who, rs in runs.items()}
        ok = all(same(v, values["thinktrain"][0]) for vs in values.values() for v in vs)
        shown = {who: vs[0] for who, vs in values.items()}
        print(f"  {key:<24} thinktrain {shown['thinktrain']!s:<26} TRL {shown['trl']!s:<26} "
              f"{'same' if ok else 'DIFFERENT (across runs: ' + json.dumps(values) + ')'}")
        consistent &= ok
    return consistent


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return median, q1, q3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=6, help="ABBA rounds (each: both sides once per task)")
    p.add_argument("--tasks", default="sft,grpo")
    p.add_argument("--sft_steps", type=int, default=None, help="default: the recipe's max_steps")
    p.add_argument("--grpo_steps", type=int, default=None, help="default: the recipe's max_steps")
    p.add_argument("--quick", action="store_true", help="1 round of a few small steps: checks that it works")
    p.add_argument("--child", nargs=2, metavar=("WHO", "TASK"), help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    p.add_argument("--extra", default="[]", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a.child[0], a.child[1], Path(a.tmp), json.loads(a.extra))

    import yaml

    tasks = a.tasks.split(",")
    rounds = 1 if a.quick else a.rounds
    extra, steps = {}, {}
    for task in tasks:  # the same overrides for both sides
        given = getattr(a, f"{task}_steps")
        extra[task] = (QUICK[task] if a.quick else []) + (["--max_steps", str(given)] if given else [])
        recipe_steps = yaml.safe_load((RECIPES / f"overhead_{task}.yaml").read_text())["max_steps"]
        steps[task] = int(extra[task][extra[task].index("--max_steps") + 1]) if "--max_steps" in extra[task] \
            else recipe_steps
    if min(steps.values()) < 2:
        sys.exit("bench_overhead: error: at least 2 steps per run (throughput is timed from step 2 on)")
    started = time.time()
    results = {task: {"thinktrain": [], "trl": []} for task in tasks}
    with tempfile.TemporaryDirectory(prefix="bench_overhead-") as tmp:
        prepare(Path(tmp))
        print(f"set-up (model + data) {time.time() - started:.0f} s; {rounds} round(s), each run a fresh process",
              flush=True)
        for r in range(rounds):
            for task in tasks:
                # ABBA: a slow drift over the session (thermal, page cache, neighbours) cancels out of the ratios
                for who in (("thinktrain", "trl") if r % 2 == 0 else ("trl", "thinktrain")):
                    res = measure(who, task, Path(tmp), extra[task])
                    results[task][who].append(res)
                    print(f"  round {r + 1} {task:<4} {who:<10} {res['steps_per_second']:6.3f} steps/s, first step "
                          f"{res['startup']:5.1f} s after launch", flush=True)

    consistent = all([check(task, results[task]) for task in tasks])
    print(f"\nthinktrain vs plain TRL, {rounds} ABBA round(s), each run a fresh process "
          f"({(time.time() - started) / 60:.1f} minutes in all); ratio = thinktrain / TRL per round, "
          f"median [interquartile range]")
    print("throughput: steps/s from the start of step 2 to the end (1.00 = no overhead, < 1 = thinktrain slower)")
    print(f"  {'task':<5} {'steps':>5} {'thinktrain':>10} {'TRL':>7}  {'ratio':>6} {'IQR':>13}")
    for task in tasks:
        t, b = ([r["steps_per_second"] for r in results[task][w]] for w in ("thinktrain", "trl"))
        m, q1, q3 = spread([x / y for x, y in zip(t, b)])
        print(f"  {task:<5} {steps[task]:5d} {statistics.median(t):10.3f} {statistics.median(b):7.3f}  {m:6.3f} "
              f"[{q1:.3f}-{q3:.3f}]")
    print("start-up: seconds from launching the process to the start of the first training step")
    print(f"  {'task':<5} {'thinktrain':>10} {'TRL':>7}  {'extra s':>7} {'IQR':>13}  {'ratio':>6} {'IQR':>13}")
    for task in tasks:
        t, b = ([r["startup"] for r in results[task][w]] for w in ("thinktrain", "trl"))
        d, d1, d3 = spread([x - y for x, y in zip(t, b)])
        m, q1, q3 = spread([x / y for x, y in zip(t, b)])
        print(f"  {task:<5} {statistics.median(t):10.1f} {statistics.median(b):7.1f}  {d:+7.1f} [{d1:+.1f} {d3:+.1f}]"
              f"  {m:6.3f} [{q1:.3f}-{q3:.3f}]")
    if not consistent:
        sys.exit("bench_overhead: error: the two sides did not run the same computation (above): the ratios "
                 "measure something else")


if __name__ == "__main__":
    main()
