"""Calls/s of the `python` tool's sandbox vs a fresh `python -c` per call (the baseline), in the same run.

    .venv/bin/python bench/bench_sandbox.py [--n 400] [--concurrency 16] [--rounds 3]

Each call runs a small GSM8K-style program (`print(48/2 + 3*7)`). sandbox: thinktrain.sandbox with each
mechanism, `concurrency` calls in flight at once (as TRL's loop gathers async tools) and one at a time; baseline:
`subprocess.run([python, "-I", "-S", "-c", code])` with an empty environment, `concurrency` at once from a thread
pool (no isolation at all: the cheapest fresh interpreter). Besides wall-clock calls/s (which a busy machine
lowers) it reports CPU milliseconds per call, trainer and sandbox processes together, and the calls/s that CPU
cost allows on the machine's cores: the capacity of an otherwise idle machine. Median of `rounds`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from thinktrain.sandbox import Sandbox, check_mechanism  # noqa: E402

CODE = "print(48/2 + 3*7)"
WANT = "45.0\n"


def cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def sandbox_round(mechanism: str, n: int, concurrency: int) -> tuple[float, float]:
    """(calls/s wall, CPU s per call): the worker's CPU is counted when close() reaps it."""
    box = Sandbox(mechanism)
    box.run_sync("print(1)")  # started and warm: start-up is not what rollouts pay per call
    c0, t0 = cpu(), time.perf_counter()

    async def all_calls():
        gate = asyncio.Semaphore(concurrency)

        async def one():
            async with gate:
                return await box.run(CODE)

        return await asyncio.gather(*(one() for _ in range(n)))

    if concurrency > 1:
        out = asyncio.run(all_calls())
    else:
        out = [box.run_sync(CODE) for _ in range(n)]
    wall = time.perf_counter() - t0
    box.close()
    assert all(o == WANT for o in out), {o for o in out if o != WANT}
    return n / wall, (cpu() - c0) / n


def baseline_round(n: int, concurrency: int) -> tuple[float, float]:
    python = os.path.realpath(sys.executable)

    def one(_):
        return subprocess.run([python, "-I", "-S", "-c", CODE], env={}, capture_output=True, text=True).stdout

    c0, t0 = cpu(), time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        out = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t0
    assert all(o == WANT for o in out)
    return n / wall, (cpu() - c0) / n


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count()
    rows = []
    for mechanism in ("namespaces", "rlimits"):
        why = check_mechanism(mechanism)
        if why:
            print(f"{mechanism}: not available here ({why})")
            continue
        for conc in (args.concurrency, 1):
            rows.append((f"sandbox {mechanism}, {conc} in flight", lambda m=mechanism, c=conc: sandbox_round(m, args.n, c)))
    rows.append((f"fresh python -c, {args.concurrency} in flight", lambda: baseline_round(args.n, args.concurrency)))
    results = {}
    for _ in range(args.rounds):  # interleaved, so a change in the machine's load touches every row alike
        for name, fn in rows:
            results.setdefault(name, []).append(fn())
    base = statistics.median(r[0] for r in results[rows[-1][0]])
    base_cpu = statistics.median(r[1] for r in results[rows[-1][0]])
    print(f"{args.n} calls of {CODE!r}, median of {args.rounds} rounds, {cores} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"| {'what':<34} | calls/s | vs baseline | CPU ms/call | calls/s the CPU allows on {cores} cores |")
    print(f"|{'-' * 36}|---------|-------------|-------------|---------------------------|")
    for name, _ in rows:
        rate = statistics.median(r[0] for r in results[name])
        per = statistics.median(r[1] for r in results[name])
        print(f"| {name:<34} | {rate:7.0f} | {rate / base:10.2f}x | {1000 * per:11.2f} | {cores / per:25.0f} |"
              + (f"  ({base_cpu / per:.1f}x less CPU)" if name != rows[-1][0] else ""))


if __name__ == "__main__":
    main()
