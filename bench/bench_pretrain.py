"""Pretraining throughput on this machine: tokens/s and MFU of the tiny and small presets, fp32 vs bf16 autocast.

Each case is a real `thinktrain train recipes/tiny/pretrain.yaml` run (same trainer, packing and callback as any
recipe) on a smaller synthetic corpus, in this process. MFU is against the dense matmul peak measured in this
run, in the case's own precision (fp32 cases: fp32 peak; bf16: bf16 peak), so contention from other work on the
machine shows up in both (the peak is the best of several matmuls before and after the cases). The first logging
interval (warm-up) is left out of tokens/s. `other CPU` is the share of the machine other processes used during a
case: this box is shared, and a busy neighbour slows small-model training far more than its share (OpenMP threads
spin-wait), so trust rows where it is near 0. About 2-3 minutes on 2 cores.

    .venv/bin/python bench/bench_pretrain.py                      # tiny and small, fp32 and bf16
    .venv/bin/python bench/bench_pretrain.py --presets tiny --steps 40
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Per preset: sequences per step and steps (each logged interval = steps / 4), sized for ~20-60 s per case.
CASES = {"tiny": (16, 24), "small": (4, 12)}


def cpu_times() -> tuple[float, float]:
    """(seconds all CPUs were busy, seconds this process used) so far; Linux /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK"), sum(os.times()[:4])


def run_case(preset: str, precision: str, batch: int, steps: int, out: Path) -> dict:
    from thinktrain.cli import main

    args = ["train", str(ROOT / "recipes/tiny/pretrain.yaml"), "--model_name_or_path", f"scratch:{preset}",
            "--dataset_name", "synthetic:gsm8k?exposition=4000&worked=0&practice=0&test=0",
            "--tokenizer_train_samples", "4000", "--eval_strategy", "no", "--max_steps", str(steps),
            "--logging_steps", str(steps // 4), "--per_device_train_batch_size", str(batch),
            "--bf16", str(precision == "bf16").lower(), "--use_cpu", "true", "--disable_tqdm", "true",
            "--peak_tflops", "1", "--output_dir", str(out)]
    sink = io.StringIO()
    start, (busy0, own0) = time.perf_counter(), cpu_times()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        code = main(args)
    wall, (busy1, own1) = time.perf_counter() - start, cpu_times()
    if code != 0:
        raise SystemExit(f"{preset} {precision} failed:\n{sink.getvalue()[-2000:]}")
    logs = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h][1:]
    return {
        "tokens_per_second": sum(h["tokens_per_second"] for h in logs) / len(logs),
        "mfu_flops": sum(h["mfu"] for h in logs) / len(logs) / 100 * 1e12,  # logged against a 1 TFLOP/s "peak"
        "loss": logs[-1]["loss"],
        "wall": wall,
        "other_cpu": 100 * max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall * os.cpu_count()),
    }


def main():
    import torch

    from thinktrain.pretrain import measure_peak_tflops
    from thinktrain.hardware import cpu_bf16_speedup

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--steps", type=int, default=None, help="steps per case (default: per preset)")
    args = ap.parse_args()

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if (speedup := cpu_bf16_speedup()) < 0.5:  # the recipes train in fp32 there; a 2048^2 bf16 peak takes minutes
        print(f"bf16 skipped: no native bf16 on this CPU (matmuls {1 / speedup:.0f}x slower than fp32)", flush=True)
        del dtypes["bf16"]
    peaks = {name: measure_peak_tflops(dtype, "cpu", n=2048, reps=10) for name, dtype in dtypes.items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            batch, steps = CASES[preset]
            for precision in dtypes:
                out = Path(tmp) / f"{preset}-{precision}"
                print(f"running {preset} {precision} ...", file=sys.stderr, flush=True)
                rows.append((preset, precision, batch, run_case(preset, precision, batch, args.steps or steps, out)))
    for name, dtype in dtypes.items():  # again after: the best of both is the peak
        peaks[name] = max(peaks[name], measure_peak_tflops(dtype, "cpu", n=2048, reps=10))

    print(f"matmul peak, 2048x2048, {torch.get_num_threads()} threads: fp32 {peaks['fp32'] * 1e3:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16'] * 1e3:.0f} GFLOP/s", flush=True)
    print(f"{'preset':7} {'precision':9} {'batch':>11} {'tokens/s':>9} {'MFU %':>6} {'speedup':>7} "
          f"{'loss@end':>8} {'wall s':>6} {'other CPU':>9}")
    base = {}
    for preset, precision, batch, r in rows:
        base.setdefault(preset, r["tokens_per_second"])
        mfu = r["mfu_flops"] / (peaks[precision] * 1e12) * 100
        print(f"{preset:7} {precision:9} {f'{batch} x 256':>11} {r['tokens_per_second']:9.0f} {mfu:6.1f} "
              f"{r['tokens_per_second'] / base[preset]:6.2f}x {r['loss']:8.3f} {r['wall']:6.0f} {r['other_cpu']:8.0f}%")


if __name__ == "__main__":
    main()
