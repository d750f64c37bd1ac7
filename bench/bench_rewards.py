"""Throughput of thinktrain's accuracy reward vs math_verify on GSM8K-sized completions built from real data.

    .venv/bin/python bench/bench_rewards.py [--n 3000] [--shared PATH]

--shared is a folder holding data/gsm8k/{train,test}.jsonl (e.g. a local copy of openai/gsm8k); default
$THINKTRAIN_SHARED, else the folder `shared` beside the repository.

Completions, a quarter each: the worked solution in think/answer format with the right answer; the same with a
wrong answer (N+1); the worked solution as plain text ending "The answer is N."; the same ending "$\\boxed{N}$".
Both graders see the same (completion, gold) pairs; math_verify runs as parse(gold), parse(completion),
verify(gold, pred). Single process, one core (rewards run in the trainer's process). "cold" clears the reward's
gold cache before every pass (each gold parsed once per pass); "warm" keeps it, as in training, where each gold
is seen num_generations times per step.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from thinktrain import answers  # noqa: E402
from thinktrain.rewards import accuracy_reward  # noqa: E402

CALC = re.compile(r"<<[^<>]*>>")


def build(shared: Path, n: int) -> tuple[list[str], list[str]]:
    rows = []
    for split in ("train", "test"):
        rows += [json.loads(line) for line in (shared / "data" / "gsm8k" / f"{split}.jsonl").open()]
    completions, golds = [], []
    for i, row in enumerate(rows * (n // len(rows) + 1)):
        if len(completions) == n:
            break
        steps, gold = row["answer"].rsplit("####", 1)
        steps, gold = CALC.sub("", steps).strip(), gold.strip()
        kind = i % 4
        if kind == 0:
            text = f"<think>\n{steps}\n</think>\n<answer>\n{gold}\n</answer>"
        elif kind == 1:
            text = f"<think>\n{steps}\n</think>\n<answer>\n{int(gold.replace(',', '')) + 1}\n</answer>"
        elif kind == 2:
            text = f"{steps}\nThe answer is {gold}."
        else:
            text = f"{steps}\nSo the final answer is $\\boxed{{{gold}}}$."
        completions.append(text)
        golds.append(gold)
    return completions, golds


def time_ours(completions, golds, cold: bool, batch=256, min_seconds=1.0) -> tuple[float, float, list]:
    """Completions/s by wall clock and by CPU time (medians of repeated passes, TRL-sized batches), verdicts."""
    wall, cpu, verdicts = [], [], None
    start = time.perf_counter()
    while time.perf_counter() - start < min_seconds or len(wall) < 3:
        if cold:
            answers._gold_cache.clear()
        t, c = time.perf_counter(), time.process_time()
        out = []
        for i in range(0, len(completions), batch):
            out += accuracy_reward(completions[i : i + batch], solution=golds[i : i + batch])
        cpu.append(len(completions) / max(time.process_time() - c, 1e-9))
        wall.append(len(completions) / (time.perf_counter() - t))
        verdicts = out
    return statistics.median(wall), statistics.median(cpu), verdicts


def time_math_verify(completions, golds) -> tuple[float, float, list]:
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    parse("1", parsing_timeout=None)  # warm-up: lazy imports
    t, c = time.perf_counter(), time.process_time()
    out = []
    for text, gold in zip(completions, golds):
        g = parse(gold, parsing_timeout=None)
        out.append(float(verify(g, parse(text, parsing_timeout=None), timeout_seconds=None)) if g else None)
    n = len(completions)
    return n / (time.perf_counter() - t), n / (time.process_time() - c), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="completions (default 3000)")
    default_shared = os.environ.get("THINKTRAIN_SHARED", str(ROOT.parent / "shared"))
    ap.add_argument("--shared", default=default_shared,
                    help="a folder holding data/gsm8k/{train,test}.jsonl (e.g. a local copy of openai/gsm8k)")
    args = ap.parse_args(argv)
    if not (Path(args.shared) / "data" / "gsm8k" / "train.jsonl").is_file():
        sys.exit(f"no GSM8K data in {args.shared}/data/gsm8k (pass --shared or set THINKTRAIN_SHARED)")

    completions, golds = build(Path(args.shared), args.n)
    cold_wall, cold_cpu, ours = time_ours(completions, golds, cold=True)
    warm_wall, warm_cpu, _ = time_ours(completions, golds, cold=False)
    mv_wall, mv_cpu, mv = time_math_verify(completions, golds)
    agree = sum(a == b for a, b in zip(ours, mv)) / len(ours)
    expected = [0.0 if i % 4 == 1 else 1.0 for i in range(len(ours))]
    print(f"{len(completions)} GSM8K completions: 1/4 right and formatted, 1/4 wrong and formatted, 1/2 plain text")
    print(f"{'grader':<26}{'completions/s':>14}{'(CPU time)':>12}{'correct verdicts':>18}")
    for name, wall, cpu, verdicts in (("accuracy_reward (cold)", cold_wall, cold_cpu, ours),
                                      ("accuracy_reward (warm)", warm_wall, warm_cpu, ours),
                                      ("math_verify parse+verify", mv_wall, mv_cpu, mv)):
        right = sum(v == e for v, e in zip(verdicts, expected)) / len(verdicts)
        print(f"{name:<26}{wall:>14,.0f}{cpu:>12,.0f}{right:>17.1%}")
    print(f"speed ratio {cold_wall / mv_wall:,.0f}x (cold) / {warm_wall / mv_wall:,.0f}x (warm); "
          f"verdict agreement {agree:.1%}")
    if os.getloadavg()[0] > (os.cpu_count() or 1) - 0.5:
        print(f"note: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: wall-clock rates are shared; "
              "the CPU-time column is this process's own")
    disagree = [(c[-60:], g, a, b) for c, g, a, b in zip(completions, golds, ours, mv) if a != b][:3]
    for c, g, a, b in disagree:
        print(f"  disagreement: gold {g!r} ours {a} math_verify {b} ...{c!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
