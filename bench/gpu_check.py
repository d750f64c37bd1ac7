"""The GPU check: pretraining tokens/s and MFU, the GPU recipes' SFT and GRPO, and the demo, in one command.

    bench/gpu_check.sh --out runs/gpu_check [--skip-demo]       # a GPU machine without network: wheels, then this
    python bench/gpu_check.py --out runs/gpu_check [--skip-demo] # where thinktrain's packages are installed
    .venv/bin/python bench/gpu_check.py --device cpu --quick --out /tmp/gc    # the same code path on a CPU, ~1 min

Everything runs in this process on scratch models and synthetic data (nothing is downloaded), through thinktrain's
own code (recipe.parse, tasks.run, pipeline.main, hardware.measure_peak_tflops):
  1. peak     the dense bf16 matmul TFLOP/s of this GPU, measured first: the denominator of MFU
  2. pretrain recipes/pretrain_fineweb_edu.yaml with model `scratch:small`, then `scratch:gpt2-124m`, on synthetic
              prose (its own BPE, so the vocabulary is a few thousand tokens, not 32k), bf16, fixed steps:
              tokens/s and MFU (the run's own PretrainMetrics, first logging interval left out)
  3. sft      recipes/sft_gsm8k.yaml from the pretrained `small`, on synthetic worked problems
     grpo     recipes/grpo_gsm8k.yaml from that SFT model, on synthetic practice problems: step times and the step
              breakdown of bench/bench_grpo_step.py (timed with a device synchronisation at each boundary)
              Both keep the GPU recipes' settings (bf16 weights and autocast, gradient checkpointing, SDPA
              attention, batch, lengths) and change only the model, the data, the steps and what needs the network
              or a package the machine lacks (Hub push, vLLM, tensorboard).
  4. demo     `thinktrain pipeline` on recipes/demo at the `small` preset, bf16, fixed steps, with its held-out
              table (--skip-demo leaves it out)
  OUT/gpu_check.json and OUT/gpu_check.md hold all of it, with the versions and the device it ran on.
--device cpu trains in fp32 (bf16 false, dtype float32, use_cpu); --quick makes every part a few small steps on
the `micro` and `tiny` presets (the demo's evaluation: 16 problems), a dry run of the same code path. A part that
fails is recorded and the others still run; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "evaluate", "math-verify",
            "huggingface_hub", "numpy", "pyarrow")
# The pretraining presets; the first is also where SFT starts, and the demo's. --quick: smaller ones, same code.
PRESETS = {"full": ("small", "gpt2-124m"), "quick": ("micro", "tiny")}
OFFLINE = ["--push_to_hub", "false", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true"]


def synthetic(**sizes) -> str:
    return "synthetic:gsm8k?" + "&".join(f"{s}={sizes.get(s, 0)}" for s in ("exposition", "worked", "practice", "test"))


# What each part changes in its recipe: the GPU settings, and --quick's (applied after them).
PRETRAIN = {
    "full": ["--dataset_name", synthetic(exposition=8000), "--tokenizer_train_samples", "8000", "--max_steps", "40",
             "--logging_steps", "10"],  # the recipe's 32 x 2 x 1024 tokens per step
    "quick": ["--dataset_name", synthetic(exposition=300), "--tokenizer_train_samples", "300", "--max_steps", "4",
              "--logging_steps", "1", "--max_length", "64", "--per_device_train_batch_size", "2",
              "--gradient_accumulation_steps", "1"],
}
SFT = {
    "full": ["--dataset_name", synthetic(worked=2000), "--max_steps", "30", "--logging_steps", "10"],
    "quick": ["--dataset_name", synthetic(worked=64), "--max_steps", "3", "--logging_steps", "1", "--max_length",
              "256", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1"],
}
GRPO = {
    "full": ["--dataset_name", synthetic(practice=256), "--max_steps", "6", "--logging_steps", "1"],
    "quick": ["--dataset_name", synthetic(practice=16), "--max_steps", "2", "--logging_steps", "1",
              "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2", "--num_generations", "4",
              "--max_completion_length", "16"],
}
DEMO_STEPS = {"full": {"pretrain": 600, "sft": 200, "grpo": 30}, "quick": {"pretrain": 4, "sft": 3, "grpo": 2}}
DEMO_QUICK = {
    "pretrain": {"dataset_name": synthetic(exposition=300), "tokenizer_train_samples": 300, "max_length": 64,
                 "per_device_train_batch_size": 4, "eval_strategy": "no"},
    "sft": {"dataset_name": synthetic(worked=64), "max_length": 128, "per_device_train_batch_size": 4},
    "grpo": {"dataset_name": synthetic(practice=16), "per_device_train_batch_size": 8, "max_completion_length": 16},
}


# --------------------------------------------------------------------------- what ran, and on what


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_info(device: str) -> dict:
    import torch

    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        return {"type": "cuda", "name": p.name, "count": torch.cuda.device_count(),
                "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1),
                "cuda": torch.version.cuda}
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
                platform.processor())
    return {"type": "cpu", "name": name, "cores": os.cpu_count(), "capability": torch.backends.cpu.get_cpu_capability()}


# --------------------------------------------------------------------------- running recipes


class Probe:
    """A callback on every Trainer.train of this process: step times (synchronised) and what the model ran with."""

    def __init__(self, sync):
        from transformers import Trainer, TrainerCallback

        self.seen: dict = {}
        probe = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kw):
                config = model.config.get_text_config()
                probe.seen.update(
                    attn_implementation=getattr(config, "_attn_implementation", None),
                    gradient_checkpointing=bool(getattr(model, "is_gradient_checkpointing", False)),
                    weights_dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
                    autocast="bf16" if args.bf16 else "fp16" if args.fp16 else "none",
                    params=sum(p.numel() for p in model.parameters()), vocab_size=config.vocab_size,
                    step_seconds=[])

            def on_step_begin(self, args, state, control, **kw):
                sync()
                self.t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                sync()
                probe.seen["step_seconds"].append(time.perf_counter() - self.t)

        train = Trainer.train

        def train_with_probe(trainer, *args, **kwargs):
            trainer.add_callback(Callback())
            return train(trainer, *args, **kwargs)

        Trainer.train = train_with_probe


def run_recipe(recipe: Path, argv: list[str], probe: Probe) -> tuple[object, dict]:
    """Train a recipe in this process, from a clean accelerate state (as `thinktrain train` would); returns the
    parsed recipe and what the probe saw, with the wall seconds of parse + train."""
    import gc

    import torch
    from accelerate.state import AcceleratorState, PartialState

    from thinktrain import tasks
    from thinktrain.recipe import parse

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    AcceleratorState._reset_state(reset_partial_state=True)  # precision differs from run to run
    PartialState()
    probe.seen.clear()
    started = time.perf_counter()
    parsed = parse([str(recipe), *argv])
    tasks.run(parsed)
    info = dict(probe.seen, seconds=time.perf_counter() - started)
    steps = info.get("step_seconds") or []
    info["first_step_seconds"] = steps[0] if steps else None
    info["median_step_seconds"] = statistics.median(steps[1:]) if len(steps) > 1 else None
    return parsed, info


def log_history(output_dir: str) -> list[dict]:
    return json.loads((Path(output_dir) / "trainer_state.json").read_text())["log_history"]


def pretrain(preset: str, device_args: list[str], mode: str, peak: float, work: Path, probe: Probe) -> dict:
    out = work / f"pretrain-{preset}"
    parsed, info = run_recipe(ROOT / "recipes/pretrain_fineweb_edu.yaml", [
        "--model_name_or_path", f"scratch:{preset}", "--dataset_train_split", "exposition", "--dataset_streaming",
        "false", "--eval_strategy", "no", "--warmup_steps", "0.1", "--peak_tflops", f"{peak:.6g}", "--output_dir",
        str(out), *OFFLINE, *device_args, *PRETRAIN[mode]], probe)
    args = parsed.training_args
    logs = [h for h in log_history(args.output_dir) if "tokens_per_second" in h][1:]  # the first: warm-up
    return {"preset": preset, "params_m": info["params"] / 1e6, "vocab_size": info["vocab_size"],
            "steps": args.max_steps,  # one process: tokens per step = batch x accumulation x block
            "tokens_per_step": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.max_length,
            "tokens_per_second": statistics.mean(h["tokens_per_second"] for h in logs),
            "mfu_percent": statistics.mean(h["mfu"] for h in logs),
            "loss_first": logs[0]["loss"], "loss_last": logs[-1]["loss"], **_run_fields(info)}


def _run_fields(info: dict) -> dict:
    keys = ("seconds", "first_step_seconds", "median_step_seconds", "attn_implementation", "gradient_checkpointing",
            "weights_dtype", "autocast")
    return {k: info.get(k) for k in keys}


def sft(device_args: list[str], mode: str, work: Path, probe: Probe) -> dict:
    out = work / "sft"
    parsed, info = run_recipe(ROOT / "recipes/sft_gsm8k.yaml", [
        "--model_name_or_path", str(work / f"pretrain-{PRESETS[mode][0]}"), "--dataset_train_split", "worked",
        "--eval_strategy", "no", "--attn_implementation", "sdpa", "--output_dir", str(out), *OFFLINE, *device_args,
        *SFT[mode]], probe)
    args = parsed.training_args
    losses = [h["loss"] for h in log_history(args.output_dir) if "loss" in h]
    return {"steps": args.max_steps, "sequences_per_step": args.per_device_train_batch_size *
            args.gradient_accumulation_steps, "max_length": args.max_length, "packing": args.packing,
            "loss_first": losses[0], "loss_last": losses[-1], **_run_fields(info)}


def grpo(device_args: list[str], mode: str, work: Path, probe: Probe, grpo_steps: list) -> dict:
    from bench_grpo_step import breakdown

    out, before = work / "grpo", len(grpo_steps)
    parsed, info = run_recipe(ROOT / "recipes/grpo_gsm8k.yaml", [
        "--model_name_or_path", str(work / "sft"), "--dataset_train_split", "practice", "--use_vllm", "false",
        "--log_completions", "false", "--attn_implementation", "sdpa", "--output_dir", str(out), *OFFLINE,
        *device_args, *GRPO[mode]], probe)
    args = parsed.training_args
    logs = [h for h in log_history(args.output_dir) if "reward" in h]
    return {"steps": args.max_steps, "completions_per_step": args.per_device_train_batch_size *
            args.gradient_accumulation_steps, "num_generations": args.num_generations,
            "max_completion_length": args.max_completion_length,
            "mean_completion_tokens": statistics.mean(h["completions/mean_length"] for h in logs),
            "reward_mean": statistics.mean(h["reward"] for h in logs),
            "breakdown_seconds": breakdown(grpo_steps[before:]), **_run_fields(info)}


def demo(device: str, mode: str, work: Path) -> dict:
    """The pipeline on recipes/demo at the small preset (micro with --quick): the recipes, changed as below, in
    work/demo-recipes."""
    import yaml

    from thinktrain import pipeline

    recipes = work / "demo-recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    for stage, steps in DEMO_STEPS[mode].items():
        config = yaml.safe_load((ROOT / "recipes/demo" / f"{stage}.yaml").read_text())
        config.update(max_steps=steps, disable_tqdm=True)
        config.update({"bf16": True, "use_cpu": False, "dataloader_pin_memory": True} if device == "cuda" else
                      {"bf16": False, "use_cpu": True})
        if stage == "pretrain":
            config.pop("model_config_overrides", None)
            config["model_name_or_path"] = f"scratch:{PRESETS[mode][0]}"
        if mode == "quick":
            config.update(DEMO_QUICK[stage])
        (recipes / f"{stage}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    argv = ["--out", str(work / "demo"), "--recipes", str(recipes), "--practice", "grpo"]  # GRPO's GPU path
    if mode == "quick":  # 16 held-out problems, 16 new tokens, 2 samples: the code path, not a result
        pipeline.EVAL = dataclasses.replace(pipeline.EVAL, dataset=synthetic(test=16), limit=16, num_samples=2,
                                            max_new_tokens=16, batch_size=16)
    if importlib.util.find_spec("matplotlib") is None:  # thinktrain[report] is optional: no PNG report then
        import thinktrain.report

        thinktrain.report.write_report = lambda out: Path(out) / "results.json"
    started = time.perf_counter()
    if pipeline.main(argv):
        raise RuntimeError("thinktrain pipeline failed")
    results = json.loads((work / "demo" / "results.json").read_text())
    return {"preset": PRESETS[mode][0], "steps": DEMO_STEPS[mode], "eval": dataclasses.asdict(pipeline.EVAL),
            "results": results, "table": pipeline.format_results(results), "seconds": time.perf_counter() - started}


# --------------------------------------------------------------------------- report


def markdown(report: dict) -> str:
    d, peak = report["device"], report["peak"]
    lines = [f"# GPU check: {d['name']}", "",
             f"{report['date']}, {report['seconds']:.0f} s in all{' (--quick)' if report['quick'] else ''}; device: "
             + ", ".join(f"{k} {x}" for k, x in d.items() if k != "name"), "",
             "versions: " + ", ".join(f"{k} {x}" for k, x in report["versions"].items()), "",
             f"dense matmul peak ({peak['dtype']}, measured here): {peak['tflops']:.1f} TFLOP/s", ""]
    for part, error in report["errors"].items():
        lines += [f"**{part} failed**: `{error}`", ""]
    if report.get("pretrain"):
        lines += ["## Pretraining (recipes/pretrain_fineweb_edu.yaml, synthetic prose)", "",
                  "| preset | params (M) | vocab | tokens/step | steps | tokens/s | MFU % | loss first → last | "
                  "median s/step | attention | autocast |", "|---|---:|---:|---:|---:|---:|---:|---|---:|---|---|"]
        lines += [f"| {r['preset']} | {r['params_m']:.1f} | {r['vocab_size']} | {r['tokens_per_step']} | "
                  f"{r['steps']} | {r['tokens_per_second']:,.0f} | {r['mfu_percent']:.1f} | {r['loss_first']:.3f} → "
                  f"{r['loss_last']:.3f} | {r['median_step_seconds']:.3f} | {r['attn_implementation']} | "
                  f"{r['autocast']} |" for r in report["pretrain"]]
        lines.append("")
    runs = [(name, report[name]) for name in ("sft", "grpo") if report.get(name)]
    if runs:
        lines += ["## SFT and GRPO (the GPU recipes, synthetic GSM8K)", "",
                  "| run | steps | first step s | median s/step | weights | autocast | attention | "
                  "grad. checkpointing |", "|---|---:|---:|---:|---|---|---|---|"]
        lines += [f"| {name} | {r['steps']} | {r['first_step_seconds']:.2f} | {r['median_step_seconds']:.3f} | "
                  f"{r['weights_dtype']} | {r['autocast']} | {r['attn_implementation']} | "
                  f"{r['gradient_checkpointing']} |" for name, r in runs]
        lines.append("")
    if report.get("grpo"):
        g = report["grpo"]
        b = g["breakdown_seconds"]
        lines += [f"GRPO step breakdown: {g['completions_per_step']} completions per step, "
                  f"{g['mean_completion_tokens']:.0f} tokens on average (max {g['max_completion_length']}), mean of "
                  f"{g['steps'] - 1} steps after the first", "", "| part | s/step | share |", "|---|---:|---:|"]
        lines += [f"| {k} | {x:.3f} | {x / b['step']:.1%} |" for k, x in b.items()]
        lines.append("")
    if report.get("demo"):
        lines += [f"## Demo at the {report['demo']['preset']} preset (steps {report['demo']['steps']})", "", "```",
                  report["demo"]["table"], "```", ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when there is one")
    p.add_argument("--quick", action="store_true", help="a few small steps per part: the code path, in ~1 minute")
    p.add_argument("--skip-demo", action="store_true", help="leave out the demo pipeline")
    p.add_argument("--out", default="runs/gpu_check", help="where gpu_check.json and gpu_check.md go")
    p.add_argument("--work", default=None, help="checkpoints go here (default: a temporary folder, removed)")
    a = p.parse_args()

    import torch

    from bench_grpo_step import instrument
    from thinktrain.hardware import measure_peak_tflops

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: error: --device cuda, but torch sees no GPU here")
    mode = "quick" if a.quick else "full"
    started = time.perf_counter()
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[1:], "quick": a.quick,
              "device": device_info(device), "versions": versions(), "errors": {}}
    print(f"gpu_check on {report['device']['name']} ({device}); " +
          ", ".join(f"{k} {x}" for k, x in report["versions"].items()), flush=True)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tflops = (measure_peak_tflops(dtype, "cuda", reps=10) if device == "cuda" else
              measure_peak_tflops(dtype, "cpu", n=1024 if a.quick else 2048, reps=3))
    report["peak"] = {"dtype": str(dtype).replace("torch.", ""), "tflops": tflops}
    print(f"dense matmul peak {report['peak']['dtype']}: {tflops:.1f} TFLOP/s", flush=True)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    probe, grpo_steps = Probe(sync), instrument(sync)
    device_args = [] if device == "cuda" else ["--use_cpu", "true", "--bf16", "false"]
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    parts = [(f"pretrain {preset}", lambda preset=preset: report.setdefault("pretrain", []).append(
        pretrain(preset, device_args, mode, tflops, work, probe))) for preset in PRESETS[mode]]
    float_weights = [] if device == "cuda" else ["--dtype", "float32"]  # the GPU recipes load bf16 weights
    parts += [("sft", lambda: report.update(sft=sft(device_args + float_weights, mode, work, probe))),
              ("grpo", lambda: report.update(grpo=grpo(device_args + float_weights, mode, work, probe, grpo_steps)))]
    if not a.skip_demo:
        parts.append(("demo", lambda: report.update(demo=demo(device, mode, work))))
    try:
        for name, part in parts:
            print(f"\n===== gpu_check: {name} ({time.perf_counter() - started:.0f} s so far) =====", flush=True)
            try:
                part()
            except Exception as e:  # record it and go on: a GPU day is short
                traceback.print_exc()
                report["errors"][name] = f"{type(e).__name__}: {' '.join(str(e).split())[:500]}"
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = time.perf_counter() - started
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (out / "gpu_check.md").write_text(text)
    print("\n" + text + f"\nwritten: {out / 'gpu_check.json'}, {out / 'gpu_check.md'}", flush=True)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
