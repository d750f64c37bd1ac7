"""How long a mistake takes to answer: seconds from launching `thinktrain train` to its one-line error, for a typo, a
renamed key, a value of the wrong type and a YAML syntax error, each run in a fresh process; and the start-up of a
valid run (launch to the run header), which the fast path must not slow.

    .venv/bin/python bench/bench_errors.py              # 5 rounds, ~2 minutes on 2 cores
    .venv/bin/python bench/bench_errors.py --rounds 1   # a quick look

Three ways, alternating within each round (so a busy moment hits all of them):
  warm     the fast path with its cache of recipe keys (schema.py): what every run after the first one gets;
  cold     no cache yet (an empty THINKTRAIN_CACHE_DIR each time): the first run with new library versions, which
           takes the full path and writes the cache;
  full     THINKTRAIN_PRECHECK=0: the full parse, as every run answered before the fast path (the baseline);
and TRL's own CLI on the same typo (`trl sft --lerning_rate 1`), for scale. Each figure is the median over rounds;
the ratio is full / warm of the same round (then the median). Alone on the machine: a second CPU job skews it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CASES = {
    "typo": ["recipes/tiny/sft.yaml", "--lerning_rate", "1e-4"],
    "renamed key": ["recipes/tiny/sft.yaml", "--max_seq_length", "256"],
    "wrong type": ["recipes/tiny/sft.yaml", "--max_steps", "ten"],
    "YAML syntax error": ["BAD_YAML"],
}


def timed(cmd: list[str], env: dict, until: str | None = None) -> float:
    """Seconds from launch to exit (or to the first stdout line starting with `until`, then the process is
    stopped)."""
    start = time.perf_counter()
    if until is None:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 2 and "error" not in proc.stderr.lower():
            raise SystemExit(f"expected an error from {' '.join(cmd)}; got {proc.returncode}: {proc.stderr[-500:]}")
        return time.perf_counter() - start
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith(until):
            seconds = time.perf_counter() - start
            proc.kill()
            proc.wait()
            return seconds
    raise SystemExit(f"{' '.join(cmd)} ended without printing '{until}'")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-errors-"))
    bad = tmp / "bad.yaml"
    bad.write_text("task: sft\nmodel_name_or_path: scratch:micro\nlearning_rate: [1e-4\n")
    warm_dir = tmp / "warm"
    base = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "THINKTRAIN_CACHE_DIR": str(warm_dir)}
    thinktrain = [PYTHON, "-m", "thinktrain", "train"]
    timed([*thinktrain, *CASES["typo"]], base)  # fills the warm cache
    results: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for case, case_argv in CASES.items():
            case_argv = [str(bad) if a == "BAD_YAML" else a for a in case_argv]
            for way in ("warm", "cold", "full"):
                env = dict(base)
                if way == "cold":
                    env["THINKTRAIN_CACHE_DIR"] = tempfile.mkdtemp(dir=tmp)
                elif way == "full":
                    env["THINKTRAIN_PRECHECK"] = "0"
                results.setdefault((case, way), []).append(timed([*thinktrain, *case_argv], base | env))
        results.setdefault(("typo", "trl"), []).append(timed(
            [str(Path(PYTHON).parent / "trl"), "sft", "--model_name_or_path", "x", "--dataset_name", "y",
             "--lerning_rate", "1"], base))
        for way, env in (("warm", base), ("full", base | {"THINKTRAIN_PRECHECK": "0"})):
            results.setdefault(("valid run, to its header", way), []).append(timed(
                [*thinktrain, "recipes/tiny/sft.yaml", "--output_dir", str(tmp / "run"), "--max_steps", "1"], env,
                until="thinktrain sft:"))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"seconds to the answer, median of {args.rounds} ({os.cpu_count()} cores, {cpu})\n")
    print(f"| {'case':<26} | warm (cached keys) | cold (first run) | full parse (before) | full / warm |")
    print(f"|{'-' * 28}|{'-' * 20}|{'-' * 18}|{'-' * 21}|{'-' * 13}|")
    for case in CASES:
        warm, full = results[(case, "warm")], results[(case, "full")]
        cold = results.get((case, "cold"))
        ratio = statistics.median(f / w for f, w in zip(full, warm))
        print(f"| {case:<26} | {statistics.median(warm):>18.2f} | "
              f"{statistics.median(cold) if cold else float('nan'):>16.2f} | {statistics.median(full):>19.2f} | "
              f"{ratio:>10.2f}x |")
    warm, full = results[("valid run, to its header", "warm")], results[("valid run, to its header", "full")]
    print(f"\nvalid run, launch to its header: {statistics.median(warm):.2f} s with the fast path, "
          f"{statistics.median(full):.2f} s without (median difference {statistics.median(w - f for w, f in zip(warm, full)):+.2f} s: "
          f"its cost on a recipe it passes)")
    trl = statistics.median(results[("typo", "trl")])
    print(f"TRL's CLI on the same typo (trl sft --lerning_rate 1): {trl:.2f} s, "
          f"{trl / statistics.median(results[('typo', 'warm')]):.1f}x the warm answer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
