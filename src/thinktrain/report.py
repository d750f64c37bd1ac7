"""`thinktrain report OUTPUT_DIR`: OUTPUT_DIR/report.md with PNG curves, from what a pipeline left behind.

Stages are OUTPUT_DIR's subfolders with a `trainer_state.json` (the final one, else the newest checkpoint's):
pretrain/, sft/, grpo/, ... (OUTPUT_DIR itself counts when it is a single run's folder). Each gets a figure:
loss (and eval_loss); for GRPO also the reward with each component (`rewards/<name>/mean`),
`frac_reward_zero_std` (share of prompt groups with no learning signal) with the all-wrong / all-right split,
token entropy, and `completions/mean_length`.
With heldout_steps, held-out accuracy against training minutes for every stage on one plot (a trainer's
`heldout/*` entries; expert iteration's rounds.jsonl); in a pipeline's folder (results.json) each stage's curve
starts where the previous stage's ended, so imitation and the practice after it share one time axis.
`OUTPUT_DIR/results.json` = {"sft": {accuracy, accuracy_lenient, sampled_accuracy, pass_at_k, k, n}, ...}
(e.g. evaluate_model's output per stage) becomes a table and a bar chart. Whatever is missing is skipped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .arguments import ArgumentParser
from .errors import RecipeError, pct

STAGE_ORDER = ("pretrain", "sft", "rft", "grpo")
EVAL_COLUMNS = {"accuracy": "pass@1", "accuracy_lenient": "lenient", "sampled_accuracy": "sampled",
                "pass_at_k": "pass@k", "maj_at_k": "maj@k"}
TOOL_COLUMNS = {"tool_use": "tool use", "sampled_tool_use": "tool use (sampled)"}
_COMPONENT = re.compile(r"^rewards/(.+)/mean$")


def find_stages(out: Path) -> dict[str, Path]:
    """Stage name -> its trainer_state.json, pretrain/sft/grpo first, then by name."""
    found = {}
    for folder in [out, *sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("checkpoint-"))]:
        state = folder / "trainer_state.json"
        if not state.is_file():
            checkpoints = [p for p in folder.glob("checkpoint-*/trainer_state.json") if p.parent.name[11:].isdigit()]
            state = max(checkpoints, key=lambda p: int(p.parent.name[11:]), default=None)
        if state is not None:
            found[folder.name] = state
    rank = {name: i for i, name in enumerate(STAGE_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def series(history: list[dict], key: str) -> tuple[list, list]:
    points = [(h.get("step", i), h[key]) for i, h in enumerate(history) if isinstance(h.get(key), (int, float))]
    return [s for s, _ in points], [v for _, v in points]


def panels(history: list[dict]) -> list[tuple[str, list[str]]]:
    """(title, keys) per panel, only those with data: loss; GRPO reward + components, zero-std groups, length."""
    keys = {k for h in history for k in h}
    out = [("loss", [k for k in ("loss", "eval_loss") if k in keys])]
    out.append(("reward", [k for k in ["reward", *sorted(k for k in keys if _COMPONENT.match(k))] if k in keys]))
    # is there RL signal? groups whose samples all score the same teach nothing (rewards.log_group_signal)
    signal = ("frac_reward_zero_std", "accuracy/groups_all_wrong", "accuracy/groups_all_right")
    out.append(("share of prompt groups", [k for k in signal if k in keys]))
    if any(_COMPONENT.match(k) for k in keys):  # GRPO: entropy falling = sharpening, rising = collapse
        out.append(("entropy", [k for k in ("entropy",) if k in keys]))
    out.append(("completion length (tokens)", [k for k in ("completions/mean_length",) if k in keys]))
    out.append(("held-out accuracy", [k for k in ("heldout/accuracy",) if k in keys]))  # heldout_steps
    return [(title, ks) for title, ks in out if ks]


def heldout_curves(out: Path, stages: dict[str, Path]) -> dict[str, tuple[list, list]]:
    """Stage -> (training minutes, held-out accuracy) from heldout_steps: a trainer's `heldout/*` log entries, or
    expert iteration's rounds.jsonl (minutes summed over rounds, accuracy after each)."""
    curves = {}
    folders = {name: state.parent.parent if state.parent.name.startswith("checkpoint-") else state.parent
               for name, state in stages.items()}
    for rounds in sorted(out.glob("*/rounds.jsonl")):  # expert iteration whose rounds trained nothing has no state
        folders.setdefault(rounds.parent.name, rounds.parent)
    for name, folder in folders.items():
        rounds = folder / "rounds.jsonl"
        if rounds.is_file():
            rows = [json.loads(line) for line in rounds.read_text().splitlines() if line.strip()]
            minutes, acc, total = [], [], 0.0
            for row in rows:
                total += row.get("minutes") or 0.0
                if isinstance(row.get("heldout_accuracy"), (int, float)):
                    minutes.append(total)
                    acc.append(row["heldout_accuracy"])
        else:
            history = [h for h in _read_json(stages[name]).get("log_history", []) if isinstance(h, dict)]
            points = [(h["heldout/minutes"], h["heldout/accuracy"]) for h in history
                      if isinstance(h.get("heldout/accuracy"), (int, float))]
            minutes, acc = [m for m, _ in points], [a for _, a in points]
        if acc:
            curves[name] = (minutes, acc)
    results = out / "results.json"
    if results.is_file():  # a pipeline: each of its stages starts from the previous one's model and minute
        offset = 0.0
        for name in (s for s in json.loads(results.read_text()) if s in curves):
            minutes, acc = curves[name]
            curves[name] = ([offset + m for m in minutes], acc)
            offset += minutes[-1]
    return curves


def plot_heldout(curves: dict[str, tuple[list, list]], path: Path):
    fig, ax = _pyplot().subplots(figsize=(6, 3.6))
    for name, (minutes, acc) in curves.items():
        ax.plot(minutes, [100 * a for a in acc], marker="o", markersize=3, label=name)
    ax.set_xlabel("training minutes (held-out evaluation excluded; stages one after another)")
    ax.set_ylabel("held-out greedy accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none opened
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


def plot_stage(name: str, history: list[dict], path: Path) -> bool:
    chosen = panels(history)
    if not chosen:
        return False
    fig, axes = _pyplot().subplots(1, len(chosen), figsize=(4.2 * len(chosen), 3.2), squeeze=False)
    for ax, (title, keys) in zip(axes[0], chosen):
        for key in keys:
            steps, values = series(history, key)
            label = _COMPONENT.sub(r"\1", key)
            ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(name)
    _save(fig, path)
    return True


def eval_columns(results: dict) -> dict[str, str]:
    """Metric key -> column label, for the metrics some stage has; "@k" reads "@8" when every stage used k=8."""
    ks = {r.get("k") for r in results.values() if isinstance(r.get("k"), int) and r["k"] > 1}
    k = str(ks.pop()) if len(ks) == 1 else "k"
    return {key: label.replace("@k", f"@{k}") for key, label in EVAL_COLUMNS.items()
            if any(isinstance(r.get(key), (int, float)) for r in results.values())}


def plot_eval(results: dict, columns: dict[str, str], path: Path):
    keys = list(columns)
    fig, ax = _pyplot().subplots(figsize=(min(2 + 0.5 * len(results) * max(len(keys), 1), 12), 3.4))
    width = 0.8 / max(len(keys), 1)
    for j, key in enumerate(keys):
        xs = [i + j * width for i in range(len(results))]
        ax.bar(xs, [100 * (r.get(key) or 0) for r in results.values()], width, label=columns[key])
    ax.set_xticks([i + width * (len(keys) - 1) / 2 for i in range(len(results))], list(results))
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RecipeError(f"report: can't read {path}: {e}") from None


def write_report(out_dir) -> Path:
    """Write OUTPUT_DIR/report.md and its PNGs; returns the report's path. RecipeError when nothing is there."""
    out = Path(out_dir)
    if not out.is_dir():
        raise RecipeError(f"report: no such folder: {out}")
    stages = find_stages(out)
    results_file = out / "results.json"
    results = _read_json(results_file) if results_file.is_file() else {}
    results = {k: v for k, v in results.items() if isinstance(v, dict)} if isinstance(results, dict) else {}
    if not stages and not results:
        raise RecipeError(f"report: {out} has no <stage>/trainer_state.json and no results.json: nothing to report")
    lines = [f"# Training report: {out.name}", ""]
    if results:
        columns = eval_columns(results)
        keys = list(columns)
        # with tools: the share of completions that called one (greedy, sampled); not plotted
        tool_columns = {k: label for k, label in TOOL_COLUMNS.items() if any(r.get(k) is not None
                                                                              for r in results.values())}
        shown = {**columns, **tool_columns}
        lines += ["## Evaluation", "", "| stage | n | k | " + " | ".join(shown.values()) + " |",
                  "|---|---:|---:|" + "---:|" * len(shown)]
        lines += [f"| {name} | {_fmt(r.get('n'))} | {_fmt(r.get('k'))} | " + " | ".join(pct(r.get(k)) for k in shown)
                  + " |" for name, r in results.items()]
        plot_eval(results, columns, out / "eval_accuracy.png")
        sampled = ", ".join(columns[k] for k in keys[2:])
        lines += ["", "pass@1 and lenient: greedy" + (f"; {sampled}: k samples per problem" if sampled else "")
                  + " (docs/evaluation.md).", "", "![evaluation accuracy per stage](eval_accuracy.png)", ""]
    curves = heldout_curves(out, stages)
    if curves:
        plot_heldout(curves, out / "heldout_accuracy.png")
        lines += ["## Held-out accuracy while training", "", "| stage | first | last | best | minutes |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {name} | {pct(acc[0])} | {pct(acc[-1])} | {pct(max(acc))} | {minutes[-1]:.1f} |"
                  for name, (minutes, acc) in curves.items()]
        lines += ["", "![held-out accuracy against training minutes](heldout_accuracy.png)", ""]
    for name, state_file in stages.items():
        state = _read_json(state_file)
        history = [h for h in state.get("log_history", []) if isinstance(h, dict)]
        runtime = history[-1].get("train_runtime") if history else None
        lines += [f"## Stage: {name}", "", f"`{state_file.relative_to(out)}`: {state.get('global_step', '?')} steps"
                  + (f", {runtime:.0f} s" if isinstance(runtime, (int, float)) else ""), ""]
        keys = [k for _, ks in panels(history) for k in ks]
        if keys:
            lines += ["| metric | first | last | min | max |", "|---|---:|---:|---:|---:|"]
            for key in keys:
                _, values = series(history, key)
                lines.append(f"| {key} | {_fmt(values[0])} | {_fmt(values[-1])} | {_fmt(min(values))} | "
                             f"{_fmt(max(values))} |")
            png = f"curves_{name}.png"
            if plot_stage(name, history, out / png):
                lines += ["", f"![{name} training curves]({png})"]
        else:
            lines.append("No training metrics were logged (set logging_steps).")
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="thinktrain report", description="report.md + PNG curves for a pipeline's output folder.")
    p.add_argument("output_dir", help="a pipeline's output folder (pretrain/, sft/, grpo/, results.json)")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    path = write_report(args.output_dir)
    print(f"wrote {path}", flush=True)
    return 0
