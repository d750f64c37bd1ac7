"""Where a GRPO step's time goes: generation, reward scoring, the other forward passes, backward, optimizer.

    .venv/bin/python bench/bench_grpo_step.py [--model runs/demo/sft] [--steps 12] [--recipe recipes/demo/grpo.yaml]

Runs the recipe through thinktrain's own GRPO path (thinktrain.grpo.main) for --steps steps and times each part
of every step after the first (warm-up) with TRL's own profiling hooks (`profiling_context`, which TRL calls
around generation, each reward function and every forward pass) plus a callback around the optimizer step:

    generation   transformers.generate (sampling num_generations completions per prompt)
    rewards      GRPOTrainer._calculate_rewards (every reward function, including thinktrain's logging)
    scoring fwd  the rest of generate-and-score: reference/old log-probs, advantages, padding, bookkeeping
    loss fwd     GRPOTrainer.compute_loss (policy forward + loss)
    backward     training_step minus the two above
    optimizer    gradient clipping, AdamW step, scheduler, zero_grad (on_pre_optimizer_step -> on_step_end)
    other        the Trainer loop outside those (data loading, callbacks, logging)
and, for a recipe with tools, the time generation spends waiting on tool calls (the union of their spans: TRL
gathers a batch's async calls) and how many calls a step makes.

On a GPU the parts are timed with a device synchronisation at each boundary (`instrument(sync=...)`, as
bench/gpu_check.py does), else queued GPU work would be billed to whichever part waits for it.

Use an SFT checkpoint for realistic completion lengths (a random model never stops, so every step generates the
full max_completion_length); `make demo` leaves one in runs/demo/sft. Alone on the machine: times taken beside
another CPU job are meaningless on 2 cores.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
PARTS = ("generation", "rewards", "scoring fwd", "loss fwd", "backward", "optimizer", "other")


TOOL_SPANS: list[tuple[float, float]] = []  # (start, end) of every tool call (timed_tools)


def timed_tools(tools: list) -> list:
    """The recipe's tools, each recording when it ran: TRL gathers a batch's async calls, so the time a step waits
    on tools is the union of these spans ("tool calls", within generation)."""
    import functools

    def timed(tool):
        @functools.wraps(tool)  # the same name, docstring and signature: the same JSON schema for the model
        async def call(**kwargs):
            start = time.perf_counter()
            try:
                return await tool(**kwargs)
            finally:
                TOOL_SPANS.append((start, time.perf_counter()))

        return call

    return [timed(t) for t in tools]


def _union(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        total += max(0.0, b - max(a, end))
        end = max(end, b)
    return total


def instrument(sync=lambda: None) -> list[dict[str, float]]:
    """Time every GRPOTrainer step from now on (TRL's class is patched); returns the list that gets one dict of
    {span name: seconds} per step. `sync` runs at every boundary (torch.cuda.synchronize on a GPU)."""
    import trl.extras.profiling as profiling
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    steps: list[dict[str, float]] = []
    spans: dict[str, float] = collections.defaultdict(float)  # name -> seconds within the current step
    enter, leave, log = (profiling.ProfilingContext.__enter__, profiling.ProfilingContext.__exit__,
                         profiling.ProfilingContext._log_metrics)

    def synced_enter(self):
        sync()
        return enter(self)

    def synced_exit(self, *exc):
        sync()
        return leave(self, *exc)

    def record(self, duration):
        spans[self.name] += duration
        log(self, duration)

    profiling.ProfilingContext.__enter__, profiling.ProfilingContext.__exit__ = synced_enter, synced_exit
    profiling.ProfilingContext._log_metrics = record

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            sync()
            spans.clear()
            self.t0 = time.perf_counter()

        def on_pre_optimizer_step(self, args, state, control, **kw):
            sync()
            self.t_opt = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync()
            t1 = time.perf_counter()
            mine = [(a, b) for a, b in TOOL_SPANS if a >= self.t0]
            TOOL_SPANS.clear()
            steps.append({**spans, "optimizer": t1 - self.t_opt, "step": t1 - self.t0, "tool calls": _union(mine),
                          "calls": len(mine)})

    init = GRPOTrainer.__init__

    def init_with_timer(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(StepTimer())

    GRPOTrainer.__init__ = init_with_timer
    # Time the whole training_step (prepare_inputs + compute_loss + backward) to get backward by difference.
    training_step = GRPOTrainer.training_step

    def timed_training_step(self, *args, **kwargs):
        t = time.perf_counter()
        out = training_step(self, *args, **kwargs)
        sync()
        spans["training_step"] += time.perf_counter() - t
        return out

    GRPOTrainer.training_step = timed_training_step
    return steps


def breakdown(steps: list[dict[str, float]]) -> dict[str, float]:
    """Mean seconds per part (PARTS, then "step") over the steps after the first (warm-up)."""
    rows = collections.defaultdict(list)
    for s in steps[1:]:
        gen = s.get("GRPOTrainer.transformers.generate", 0.0) + s.get("GRPOTrainer.transformers.generate_batch", 0.0)
        rew = s.get("GRPOTrainer._calculate_rewards", 0.0)
        prep = s.get("GRPOTrainer._prepare_inputs", 0.0)
        loss = s.get("GRPOTrainer.compute_loss", 0.0)
        parts = {
            "generation": gen,
            "rewards": rew,
            "scoring fwd": prep - gen - rew,
            "loss fwd": loss,
            "backward": s["training_step"] - prep - loss,
            "optimizer": s["optimizer"],
        }
        parts["other"] = s["step"] - sum(parts.values())
        parts["step"] = s["step"]
        if s.get("calls"):  # a recipe with tools: the part of generation spent waiting on them
            parts["tool calls"], parts["calls"] = s["tool calls"], s["calls"]
        for k, v in parts.items():
            rows[k].append(v)
    return {k: statistics.mean(v) for k, v in rows.items()}


def format_breakdown(means: dict[str, float]) -> str:
    lines = [f"{'part':<12} {'s/step':>8} {'share':>7}"]
    lines += [f"{k:<12} {v:8.3f} {v / means['step']:7.1%}" for k, v in means.items() if k not in ("tool calls", "calls")]
    if "tool calls" in means:  # within generation, not beside it
        lines.append(f"of which, waiting on {means['calls']:.0f} tool calls a step: {means['tool calls']:.3f} s "
                     f"({means['tool calls'] / means['step']:.1%} of the step)")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(ROOT / "runs/demo/sft"), help="model to train (default: the demo's SFT)")
    p.add_argument("--recipe", default=str(ROOT / "recipes/demo/grpo.yaml"))
    p.add_argument("--steps", type=int, default=12, help="GRPO steps; the first is warm-up and not counted")
    p.add_argument("overrides", nargs="*", help="extra recipe overrides, e.g. -- --per_device_train_batch_size 64")
    a = p.parse_args()
    if not Path(a.model).is_dir() and not a.model.startswith("scratch:"):
        sys.exit(f"bench_grpo_step: error: no model at {a.model}; run `make demo` first or pass --model PATH")

    from thinktrain import grpo
    from thinktrain.recipe import parse

    steps = instrument()
    with tempfile.TemporaryDirectory() as out:
        argv = [a.recipe, "--model_name_or_path", a.model, "--max_steps", str(a.steps), "--output_dir", out,
                "--logging_steps", "1000", *a.overrides]
        training_args = (recipe := parse(argv)).training_args
        if recipe.tools:
            recipe.tools = timed_tools(recipe.tools)
        grpo.main(recipe)

    completions = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    print(f"\nGRPO step breakdown: {a.model}, {completions} completions per step, "
          f"{training_args.max_completion_length} new tokens max, mean of {len(steps) - 1} steps after warm-up")
    print(format_breakdown(breakdown(steps)))


if __name__ == "__main__":
    main()
