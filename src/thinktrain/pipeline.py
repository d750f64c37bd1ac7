"""`thinktrain pipeline [--out runs/demo]` (what `make demo` runs): pretrain -> SFT -> practice, offline on a CPU.

Practice is expert iteration (`--practice rft`, the default), GRPO (`--practice grpo`) or one then the other
(`--practice rft,grpo`). Each stage is a recipe in recipes/demo/ run exactly as `thinktrain train` would, starting
from the previous stage's output; after each, the same held-out problems (synthetic `test` split) are evaluated with the same fixed
settings (greedy pass@1, then k samples at temperature 1.0). OUT/results.json collects the summaries, OUT/eval/
the per-problem completions, OUT/report.md the curves; the table is printed at the end. A stage whose output
and evaluation already exist is skipped, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from . import tasks
from .arguments import ArgumentParser
from .configs import EvalArguments
from .errors import RecipeError, pct
from .recipe import parse

STAGES = ("pretrain", "sft")  # then the practice stage(s)
PRACTICE = ("grpo", "rft")
DEFAULT_PRACTICE = "rft"  # expert iteration: the practice that raised greedy accuracy (docs/practice.md)
RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "demo"
# The held-out evaluation: fixed, whatever the recipes do (docs/pipeline.md).
EVAL = EvalArguments(dataset="synthetic:gsm8k", split="test", limit=500, num_samples=8, temperature=1.0,
                     max_new_tokens=96, batch_size=512, seed=0)
# With tools (recipes/demo_tools): the same problems and settings, with the calculator, and a budget that holds
# the calls and their replies (they count against it, as in GRPO's tool loop: ~15 tokens per step).
TOOLS_MAX_NEW_TOKENS = 192
SUMMARY_KEYS = ("accuracy", "accuracy_lenient", "sampled_accuracy", "pass_at_k", "maj_at_k", "k", "n", "format",
                "mean_completion_tokens", "truncated", "seconds", "tool_use", "sampled_tool_use")


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="thinktrain pipeline", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/demo", help="output folder: <stage>/, eval/, results.json, report.md")
    p.add_argument("--recipes", default=str(RECIPES), help="folder with pretrain.yaml, sft.yaml, grpo.yaml, rft.yaml")
    p.add_argument("--seed", type=int, default=None, help="seed for every stage (default: each recipe's own)")
    p.add_argument("--practice", default=DEFAULT_PRACTICE,
                   help="practice after SFT: grpo, rft (expert iteration), or both in order, e.g. rft,grpo")
    p.add_argument("--stages", default=None, help="comma-separated subset, in pipeline order (default: all)")
    p.add_argument("--num_samples", type=int, default=EVAL.num_samples,
                   help="k samples per held-out problem for sampled pass@1 / pass@k (fewer is faster)")
    return p


def stage_argv(recipes: Path, stage: str, out: Path, previous: Path | None, seed: int | None) -> list[str]:
    argv = [str(recipes / f"{stage}.yaml"), "--output_dir", str(out / stage)]
    if previous is not None:
        argv += ["--model_name_or_path", str(previous)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    return argv


def format_results(results: dict) -> str:
    """The stage table: greedy strict/lenient, sampled pass@1, pass@k, with n and k."""
    head = f"{'stage':<9} {'greedy':>7} {'lenient':>8} {'sampled':>8} {'pass@k':>7} {'k':>3} {'n':>5} {'minutes':>8}"
    rows = [head, "-" * len(head)]
    for stage, r in results.items():
        minutes = r.get("train_minutes")
        greedy, lenient, sampled, passk = (pct(r.get(key)) for key in ("accuracy", "accuracy_lenient",
                                                                       "sampled_accuracy", "pass_at_k"))
        rows.append(f"{stage:<9} {greedy:>7} {lenient:>8} {sampled:>8} {passk:>7} {r.get('k', '-'):>3} {r.get('n', '-'):>5} "
                    f"{(f'{minutes:.1f}' if minutes is not None else '-'):>8}")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    practice = [s.strip() for s in args.practice.split(",") if s.strip()]
    if not practice or any(s not in PRACTICE for s in practice) or len(set(practice)) < len(practice):
        raise RecipeError(f"--practice: choose grpo, rft, or both in the order to run them, e.g. rft,grpo (got "
                          f"'{args.practice}')")
    order = [*STAGES, *practice]
    stages = [s.strip() for s in (args.stages or ",".join(order)).split(",") if s.strip()]
    if not stages or any(s not in order for s in stages) or stages != [s for s in order if s in stages]:
        raise RecipeError(f"--stages: choose from {', '.join(order)}, in that order (got '{args.stages}')")
    recipes, out = Path(args.recipes), Path(args.out)
    for stage in stages:
        if not (recipes / f"{stage}.yaml").is_file():
            raise RecipeError(f"--recipes: no {stage}.yaml in {recipes}")
    parsed = {}  # parse every stage before any runs: a bad recipe fails in a second, not after pretraining
    for i, stage in enumerate(stages):
        before = order.index(stage)
        previous = out / order[before - 1] if before > 0 else None
        parsed[stage] = parse(stage_argv(recipes, stage, out, previous, args.seed), check_model=i == 0)
    from accelerate.state import AcceleratorState, PartialState

    from .evaluation import evaluate_model, load_problems

    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    # one system prompt for every stage's evaluation: the SFT recipe's (the format the later stages learn)
    system_prompt = (parsed.get("sft") or parsed[stages[-1]]).script_args.system_prompt
    evaluation = dataclasses.replace(EVAL, num_samples=args.num_samples, system_prompt=system_prompt)
    tools = next((r.script_args.tools for r in parsed.values() if r.script_args.tools), None)
    if tools:
        evaluation = dataclasses.replace(evaluation, tools=tools, max_new_tokens=TOOLS_MAX_NEW_TOKENS)
    problems = load_problems(evaluation)  # the same held-out problems for every stage, loaded once
    started = time.time()
    for i, stage in enumerate(stages):
        recipe = parsed[stage]
        stage_dir = out / stage
        print(f"\n=== [{i + 1}/{len(stages)}] {stage}: {recipe.model_args.model_name_or_path} -> {stage_dir} ===",
              flush=True)
        if (stage_dir / "config.json").is_file() and stage in results:
            print(f"already done ({stage_dir} and results.json have it); delete {stage_dir} to rerun", flush=True)
            continue
        # accelerate keeps one process-wide state; a stage with another precision (bf16 pretrain -> fp32 SFT)
        # must start from a clean one, as it would in its own `thinktrain train` process
        AcceleratorState._reset_state(reset_partial_state=True)
        PartialState()  # refills the shared state the parsed TrainingArguments point at
        t = time.time()
        tasks.run(recipe)
        train_minutes = (time.time() - t) / 60
        # the pretrained model reads prose and cannot answer in the format yet (pass@8 0.0% on every seed): greedy
        # alone says so, and its 4,000 samples would cost ~40 s of the demo's 20 minutes
        settings = dataclasses.replace(evaluation, num_samples=1) if stage == "pretrain" else evaluation
        sampled = f" + {settings.num_samples} samples at T={settings.temperature}" if settings.num_samples > 1 else ""
        print(f"--- evaluating {stage} on {evaluation.limit} held-out problems (greedy{sampled}"
              f"{', tools: ' + ', '.join(tools) if tools else ''}) ---", flush=True)
        result = evaluate_model(str(stage_dir), problems, settings)
        (out / "eval").mkdir(exist_ok=True)
        (out / "eval" / f"{stage}.json").write_text(json.dumps(result, indent=1))
        results[stage] = {k: result.get(k) for k in SUMMARY_KEYS} | {"train_minutes": round(train_minutes, 2)}
        results_file.write_text(json.dumps(results, indent=1))
        print(format_results({stage: results[stage]}), flush=True)
    from .report import write_report

    report = write_report(out)
    print(f"\n=== results ({(time.time() - started) / 60:.1f} minutes; report: {report}) ===", flush=True)
    print(format_results(results), flush=True)
    return 0
