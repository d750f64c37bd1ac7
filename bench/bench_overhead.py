"""thinktrain's cost over plain TRL: the same recipe trained through thinktrain and through a bare TRL script.

    .venv/bin/python bench/bench_overhead.py [--model runs/demo/sft] [--rounds 4] [--sft_steps 40] [--grpo_steps 8] [--tasks sft,grpo]

For SFT and GRPO, each round trains the demo recipe (recipes/demo/{sft,grpo}.yaml) twice, each run in a fresh
Python process (a long-lived process drifts: allocator, page cache), in alternating order (ABBA): once through
thinktrain (`thinktrain.sft.main` / `thinktrain.grpo.main`: recipe parsing, its data shaping, model loading, run
header, reward wrappers that log the RL signal, saving) and once as the plain TRL script a user would write —
`SFTTrainer` / `GRPOTrainer` given the same parsed config, model path, dataset rows and the bare reward
functions. Both use the same seed, so GRPO samples the same completions. The figure is steps/s inside
`trainer.train()` (the Trainer's own `train_runtime`, which excludes set-up); ratio = thinktrain / TRL within each
round (1.00 = no overhead; target >= 0.97), reported as the median over rounds with the range.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def parse(task: str, model: str, steps: int, out: str):
    from thinktrain.recipe import parse as parse_recipe

    argv = [str(ROOT / f"recipes/demo/{task}.yaml"), "--model_name_or_path", model, "--max_steps", str(steps),
            "--output_dir", out, "--logging_steps", "1000"]
    return parse_recipe(argv)


def thinktrain_run(task: str, model: str, steps: int) -> float:
    from thinktrain import tasks

    with tempfile.TemporaryDirectory() as out:
        metrics = tasks.run(parse(task, model, steps, out))
    return steps / metrics["train_runtime"]


def trl_run(task: str, model: str, steps: int) -> float:
    """The plain script: TRL's trainer, the same config, model path, dataset rows and reward functions."""
    from transformers import AutoTokenizer, set_seed
    from trl import GRPOTrainer, SFTTrainer

    from thinktrain import data, rewards

    with tempfile.TemporaryDirectory() as out:
        recipe = parse(task, model, steps, out)
        script_args, training_args = recipe.script_args, recipe.training_args
        set_seed(training_args.seed)
        tokenizer = AutoTokenizer.from_pretrained(model)
        train_ds, _ = data.load(script_args, training_args, tokenizer)
        if task == "sft":
            trainer = SFTTrainer(model=model, args=training_args, train_dataset=train_ds, processing_class=tokenizer)
        else:
            funcs = [getattr(rewards, f"{name}_reward") for name in script_args.reward_funcs]
            trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=training_args, train_dataset=train_ds,
                                  processing_class=tokenizer)
        metrics = trainer.train().metrics
        trainer.save_model(out)
    return steps / metrics["train_runtime"]


def child(task: str, who: str, model: str, steps: int) -> None:
    """One measurement in this (fresh) process; the parent reads the last line."""
    import logging

    logging.disable(logging.WARNING)
    sps = (thinktrain_run if who == "thinktrain" else trl_run)(task, model, steps)
    print(f"STEPS_PER_SEC {sps:.6f}", flush=True)


def measure(task: str, who: str, model: str, steps: int) -> float:
    cmd = [sys.executable, __file__, "--child", task, who, "--model", model, f"--{task}_steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("STEPS_PER_SEC ")]
    if out.returncode or not lines:
        sys.exit(f"bench_overhead: error: {task}/{who} run failed:\n{out.stderr[-3000:]}")
    return float(lines[-1].split()[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(ROOT / "runs/demo/sft"), help="a chat model (default: the demo's SFT)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--sft_steps", type=int, default=40)
    p.add_argument("--grpo_steps", type=int, default=8)
    p.add_argument("--tasks", default="sft,grpo")
    p.add_argument("--child", nargs=2, metavar=("TASK", "WHO"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if not Path(a.model).is_dir():
        sys.exit(f"bench_overhead: error: no model at {a.model}; run `make demo` first or pass --model PATH")
    steps = {"sft": a.sft_steps, "grpo": a.grpo_steps}
    if a.child:
        return child(a.child[0], a.child[1], a.model, steps[a.child[0]])

    tasks = a.tasks.split(",")
    results = {}
    for task in tasks:
        runs = {"thinktrain": [], "trl": []}
        for r in range(a.rounds):
            # ABBA order: a slow drift over the session (thermal, page cache) cancels out of the ratios
            order = ["thinktrain", "trl"] if r % 2 == 0 else ["trl", "thinktrain"]
            for who in order:
                sps = measure(task, who, a.model, steps[task])
                runs[who].append(sps)
                print(f"  {task} round {r + 1} {who:<10} {sps:.3f} steps/s", flush=True)
        results[task] = runs

    print(f"\nOverhead vs plain TRL ({a.model}; {a.rounds} alternating rounds, each run in a fresh process; "
          f"steps/s in trainer.train())")
    print(f"{'task':<6} {'steps':>5} {'thinktrain':>11} {'TRL':>8} {'ratio':>7}  {'range':>13}")
    for task in tasks:
        t, b = results[task]["thinktrain"], results[task]["trl"]
        ratios = [x / y for x, y in zip(t, b)]
        print(f"{task:<6} {steps[task]:5d} {statistics.median(t):11.3f} {statistics.median(b):8.3f} "
              f"{statistics.median(ratios):7.3f}  {min(ratios):.3f}-{max(ratios):.3f}")


if __name__ == "__main__":
    main()
