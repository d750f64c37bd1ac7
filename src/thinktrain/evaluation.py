"""Evaluation: generate answers to held-out problems, score them, summarise (pass@1, sampled, pass@k, maj@k).

    thinktrain eval --model runs/tiny/sft --dataset synthetic:gsm8k --limit 200 --num_samples 8
    from thinktrain.evaluation import evaluate_model
    results = evaluate_model("runs/tiny/sft", "synthetic:gsm8k", limit=200)     # or a loaded model / a Dataset

Every problem gets one greedy completion (pass@1, strict and lenient); with num_samples k > 1 it also gets k
samples at `temperature` (top_p 1, no top-k) for sampled accuracy, pass@k and maj@k. Scoring is the
`gsm8k_accuracy` evaluate metric (metrics/gsm8k_accuracy), i.e. thinktrain.rewards.accuracy_reward: evaluation
and the GRPO reward agree on what is right by construction. Definitions and the JSON format: docs/evaluation.md.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import NamedTuple

from .answers import answer_block
from .configs import EvalArguments
from .errors import RecipeError, pct
from .generation import complete, encode_prompts
from .models import load_checkpoint
from .arguments import dataclass_parser
from .checks import check_source

METRIC = Path(__file__).parent / "metrics" / "gsm8k_accuracy"
BREAKDOWN_COLUMNS = ("steps", "template")  # per-difficulty tables when the data has them (synthetic does)


# --------------------------------------------------------------------------- estimators


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al., 2021): 1 - C(n-c, k) / C(n, k)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_vote(keys: list) -> int | None:
    """Index of the first member of the largest group of equal non-None keys; ties go to the group seen first."""
    counts = Counter(key for key in keys if key is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(i for i, key in enumerate(keys) if key is not None and counts[key] == best)


def answer_groups(completions: list[str]) -> list[int | None]:
    """Group completions by their `<answer>` value: the index of the group's first member, None without a block.

    Two answers are equal when accuracy_reward says so (the rewards' numeric comparison: "1,234" == "1234.0");
    an answer it can't parse as a number matches only the same text."""
    from .rewards import accuracy_reward

    blocks = [b.strip() if (b := answer_block(c)) is not None else None for c in completions]
    groups: list[int | None] = [None] * len(completions)
    for i, block in enumerate(blocks):
        if block is None or groups[i] is not None:
            continue
        groups[i] = i
        rest = [j for j in range(i + 1, len(blocks)) if blocks[j] is not None and groups[j] is None]
        if not rest:
            continue
        same = accuracy_reward([completions[j] for j in rest], solution=[block] * len(rest))
        for j, s in zip(rest, same):
            if (s is None and blocks[j] == block) or (s is not None and s >= 1.0):
                groups[j] = i
    return groups


# --------------------------------------------------------------------------- problems, prompts, model


def load_problems(args: EvalArguments):
    """The first `args.limit` problems of `args.split` of `args.dataset` (anything thinktrain.data.load_raw reads;
    a single data file is its own split), checked for a question and a gold answer column. Every mistake raises a
    one-line RecipeError before any model loads."""
    from datasets import Dataset

    from .data import load_raw, quiet_if_local, split_of

    name = args.dataset
    if not name:
        raise RecipeError("the following arguments are required: --dataset")
    check_source("--dataset", name, repo_type="dataset")
    with quiet_if_local(name):
        raw = load_raw(_only_split(name, args.split), args.dataset_config)
    if len(raw) == 1 and args.split not in raw and Path(name).is_file():
        ds = next(iter(raw.values()))  # a single data file is its own split
    else:
        ds = split_of(raw, args.split, name, "--split")
    if not isinstance(ds, Dataset):
        raise RecipeError(f"--dataset: expected a datasets.Dataset, got {type(ds).__name__}")
    return _checked(ds, args)


def _checked(ds, args: EvalArguments):
    """A Dataset of problems cut to args.limit rows; empty data and missing columns are RecipeErrors."""
    if len(ds) == 0:
        raise RecipeError(f"--dataset: {args.dataset or 'the dataset'} has no rows in split '{args.split}'")
    ds = ds.select(range(min(args.limit, len(ds)))) if args.limit is not None else ds
    from .data import problem_columns

    problem_columns(ds, args.prompt_column, args.answer_column, args.dataset or "dataset",
                    "evaluation needs a question and a gold answer", "pass --prompt_column/--answer_column")
    return ds


def _only_split(name: str, split: str) -> str:
    """synthetic:SPEC -> the same SPEC generating only `split` (each split has its own random stream, so the
    rows are identical; saves generating ~30k unused problems)."""
    if not name.startswith("synthetic:"):
        return name
    from .synthetic import SPLITS

    base, _, query = name.partition("?")
    given = {item.partition("=")[0] for item in query.split("&") if item}
    extra = [f"{s}=0" for s in SPLITS if s != split and s not in given]
    return f"{base}?{'&'.join(filter(None, [query, *extra]))}" if extra else name


def resolve_system_prompt(system_prompt: str | None, model_dir: str | None) -> tuple[str | None, str]:
    """(prompt, where it came from). Given ("" = none) > the model's recipe.yaml (trained with it) > the default."""
    from .data import THINK_SYSTEM_PROMPT

    if system_prompt is not None:
        return system_prompt or None, "argument"
    recipe = Path(model_dir) / "recipe.yaml" if model_dir else None
    if recipe is not None and recipe.is_file():
        import yaml

        value = (yaml.safe_load(recipe.read_text()) or {}).get("system_prompt")
        return value or None, str(recipe) if value else f"{recipe} (none set: trained without one)"
    return THINK_SYSTEM_PROMPT, "default (thinktrain.data.THINK_SYSTEM_PROMPT)"


# --------------------------------------------------------------------------- scoring and summaries


def load_metric():
    """The gsm8k_accuracy metric module, loaded offline by path."""
    import evaluate

    return evaluate.load(str(METRIC), keep_in_memory=True)


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def summarize(records: list[dict], k: int) -> dict:
    """The headline numbers over a list of per-problem records (all problems, or one steps/template group)."""
    out = {"n": len(records), "accuracy": _mean(r["correct"] for r in records),
           "accuracy_lenient": _mean(r["correct_lenient"] for r in records)}
    if k > 1:
        out["sampled_accuracy"] = _mean(r["num_correct"] / k for r in records)
        out["pass_at_k"] = _mean(pass_at_k(k, r["num_correct"], k) for r in records)
        out["maj_at_k"] = _mean(r["majority_correct"] for r in records)
    return out


class Prepared(NamedTuple):
    """What generation needs, resolved once: the model and its prompts, golds and settings."""
    model: object
    tokenizer: object
    model_dir: str | None
    name: str
    shaped: object  # the problems shaped exactly as GRPO trains on them (data.to_grpo)
    prompts: list
    chat_template: str | None
    tools: list
    system: str | None
    system_source: str


def evaluate_model(model_or_path, problems, args: EvalArguments | None = None, *, tokenizer=None,
                   tools: list | None = None, progress: bool = True, **settings) -> dict:
    """Generate, score and summarise; returns the results dict (docs/evaluation.md), per-problem records included.

    model_or_path: a checkpoint path / Hub id (loaded with load_checkpoint), or a loaded causal LM (its tokenizer
    from `tokenizer=`, else from model.name_or_path). problems: a datasets.Dataset (e.g. from load_problems), or a
    dataset name / file that load_problems reads. args: the settings (configs.EvalArguments); keyword `settings`
    replace single fields of it (limit=200, num_samples=8, ...). system_prompt None = the model folder's
    recipe.yaml, else data.THINK_SYSTEM_PROMPT; "" = none. tools: args.tools already resolved to functions (None:
    resolved here)."""
    args = dataclasses.replace(args or EvalArguments(), **settings)
    check_options(args)
    started = time.time()
    if isinstance(problems, (str, Path)):
        args = dataclasses.replace(args, dataset=str(problems))
    prep = prepare(model_or_path, problems, args, tokenizer, tools)
    greedy, samples = generate_all(prep, args, progress)
    records, unscored = score(prep, args, greedy, samples)
    return summarise(prep, args, records, greedy, samples, unscored, time.time() - started)


def prepare(model_or_path, problems, args: EvalArguments, tokenizer=None, tools: list | None = None) -> Prepared:
    """Problems loaded and checked, the model and tokenizer loaded (or taken), the tools resolved, prompts rendered."""
    from .data import to_grpo
    from .tools import load_tools, prepare_tokenizer

    problems = load_problems(args) if isinstance(problems, (str, Path)) else _checked(problems, args)
    name = args.dataset or "<datasets.Dataset>"
    if isinstance(model_or_path, (str, Path)):
        model_dir = str(model_or_path)
        model, loaded_tokenizer = load_checkpoint(model_dir)
        tokenizer = tokenizer or loaded_tokenizer
    else:
        model, model_dir = model_or_path, getattr(model_or_path, "name_or_path", None) or None
        if tokenizer is None:
            if not model_dir:
                raise RecipeError("evaluate_model: pass tokenizer= with a model that has no name_or_path")
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(model_dir)
    system, system_source = resolve_system_prompt(args.system_prompt, model_dir if model_dir and
                                                  Path(model_dir).is_dir() else None)
    shaped = to_grpo(problems, args.prompt_column, args.answer_column, system, name)  # exactly as GRPO trains
    tools = load_tools(args.tools, args.tool_timeout, args.python_sandbox) if tools is None else tools
    prepare_tokenizer(tokenizer, tools)
    prompts, template = encode_prompts(tokenizer, shaped["prompt"], tools)  # with tools: as GRPO's tool loop
    return Prepared(model, tokenizer, model_dir, name, shaped, prompts, template, tools, system, system_source)


def generate_all(prep: Prepared, args: EvalArguments, progress: bool = True) -> tuple[list, list]:
    """(one greedy completion per problem, k samples per problem when k > 1), each from the seed."""
    from transformers import set_seed

    k, model = args.num_samples, prep.model
    has_template = bool(getattr(prep.tokenizer, "chat_template", None))
    run = functools.partial(complete, model, prep.tokenizer, tools=prep.tools, chat_template=prep.chat_template,
                            max_iterations=args.max_tool_calling_iterations, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size, add_special_tokens=not has_template,
                            progress=progress and not args.quiet)
    was_training = model.training
    model.eval()
    try:
        set_seed(args.seed)
        greedy = run(prep.prompts, desc="greedy")
        samples = []
        if k > 1:
            set_seed(args.seed)
            samples = run([p for p in prep.prompts for _ in range(k)], do_sample=True, temperature=args.temperature,
                          desc=f"sampling {k} per problem")
    finally:
        model.train(was_training)
    return greedy, samples


def score(prep: Prepared, args: EvalArguments, greedy: list, samples: list) -> tuple[list[dict], int]:
    """(per-problem records, greedy completions the grader could not score): strict and lenient correctness by the
    gsm8k_accuracy metric, format, and for k > 1 the samples' correctness and majority vote."""
    from .rewards import format_reward, template_prefills_think

    k, tools, shaped = args.num_samples, prep.tools, prep.shaped
    golds = list(shaped["solution"])
    texts = [c.text for c in greedy] + [c.text for c in samples]
    references = golds + [g for g in golds for _ in range(k if k > 1 else 0)]
    scores = load_metric().compute(predictions=texts, references=references, per_example=True)
    strict, lenient = scores["correct"], scores["correct_lenient"]
    # a template that opens the answer with "<think>" put that tag in the prompt: judge the format accordingly
    formats = format_reward([c.text for c in greedy], think_prefilled=template_prefills_think(prep.tokenizer))

    records = []
    columns = [c for c in BREAKDOWN_COLUMNS if c in shaped.column_names]
    for i, (row, c) in enumerate(zip(shaped, greedy)):
        question = row.get(args.prompt_column) if args.prompt_column in row else row["prompt"][-1]["content"]
        rec = {"index": i, "question": question, "solution": golds[i], **{col: row[col] for col in columns},
               "completion": c.text, "tokens": c.tokens, "finished": c.finished,
               "correct": strict[i], "correct_lenient": lenient[i], "format": (formats[i] or 0.0) >= 1.0,
               **({"calls": c.calls} if tools else {})}
        if k > 1:
            lo = len(greedy) + i * k
            mine = samples[i * k : (i + 1) * k]
            rec["samples"] = [{"completion": s.text, "tokens": s.tokens, "finished": s.finished,
                               "correct": strict[lo + j], "correct_lenient": lenient[lo + j],
                               **({"calls": s.calls} if tools else {})}
                              for j, s in enumerate(mine)]
            rec["num_correct"] = sum(strict[lo : lo + k])
            winner = majority_vote(answer_groups([s.text for s in mine]))
            rec["majority"] = winner
            rec["majority_correct"] = winner is not None and strict[lo + winner]
        records.append(rec)
    return records, sum(not ok for ok in scores["scored"][: len(greedy)])


def summarise(prep: Prepared, args: EvalArguments, records: list[dict], greedy: list, samples: list,
              unscored: int, seconds: float) -> dict:
    """The results dict: headline numbers, settings, per-group breakdowns and the records."""
    k, tools = args.num_samples, prep.tools
    summary = summarize(records, k)
    columns = [c for c in BREAKDOWN_COLUMNS if c in prep.shaped.column_names]
    return {
        "model": prep.model_dir, "dataset": prep.name,
        "split": args.split if args.dataset and not Path(args.dataset).is_file() else None,
        "n": summary["n"], "k": k, "accuracy": summary["accuracy"], "accuracy_lenient": summary["accuracy_lenient"],
        "format": _mean(r["format"] for r in records),
        "sampled_accuracy": summary.get("sampled_accuracy"), "pass_at_k": summary.get("pass_at_k"),
        "maj_at_k": summary.get("maj_at_k"),
        "pass_at": {str(j): _mean(pass_at_k(k, r["num_correct"], j) for r in records) for j in _powers_of_two(k)}
        if k > 1 else None,
        "mean_completion_tokens": _mean(c.tokens for c in greedy),
        "mean_sampled_completion_tokens": _mean(c.tokens for c in samples) if k > 1 else None,
        "truncated": _mean(not c.finished for c in greedy),
        "tools": [fn.__name__ for fn in tools] or None,
        # share of completions that called a tool at least once (None without tools)
        "tool_use": _mean(c.calls > 0 for c in greedy) if tools else None,
        "sampled_tool_use": _mean(c.calls > 0 for c in samples) if tools and k > 1 else None,
        "max_tool_calling_iterations": args.max_tool_calling_iterations if tools else None,
        "unscored": unscored,
        "temperature": args.temperature if k > 1 else None, "max_new_tokens": args.max_new_tokens,
        "seed": args.seed, "system_prompt": prep.system, "system_prompt_source": prep.system_source,
        "prompt_format": "chat_template" if getattr(prep.tokenizer, "chat_template", None) else "plain",
        "seconds": round(seconds, 2),
        "breakdown": {col: {str(v): summarize(group, k) for v, group in _groups(records, col)} for col in columns},
        "problems": records,
    }


def _powers_of_two(k: int) -> list[int]:
    return sorted({2**e for e in range(k.bit_length()) if 2**e <= k} | {k})


def _groups(records: list[dict], column: str):
    groups = defaultdict(list)
    for r in records:
        groups[r[column]].append(r)
    return sorted(groups.items(), key=lambda kv: (not isinstance(kv[0], (int, float)), kv[0]))


def check_options(args: EvalArguments):
    for key in ("num_samples", "max_new_tokens", "batch_size", "limit"):
        value = getattr(args, key)
        if key == "limit" and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RecipeError(f"--{key}: expected a positive integer, got {value!r}")
    if not args.tool_timeout > 0:
        raise RecipeError(f"--tool_timeout: expected seconds > 0, got {args.tool_timeout!r}")
    if args.num_samples > 1 and not args.temperature > 0:
        raise RecipeError(f"--temperature: sampling {args.num_samples} per problem needs a temperature > 0, "
                          f"got {args.temperature}")


# --------------------------------------------------------------------------- printing, command line


def format_table(result: dict) -> str:
    """A compact table: overall, then one row per steps/template value."""
    k = result["k"]
    where = result["dataset"] + (f" [{result['split']}]" if result.get("split") else "")
    sampling = f", {k} samples at temperature {result['temperature']:g}" if k > 1 else ", greedy"
    names = ["accuracy", "lenient"] + (["sampled", f"pass@{k}", f"maj@{k}"] if k > 1 else [])
    keys = ["accuracy", "accuracy_lenient"] + (["sampled_accuracy", "pass_at_k", "maj_at_k"] if k > 1 else [])
    rows = [("all", result)] + [(f"{col} {value}", s) for col, groups in result.get("breakdown", {}).items()
                                for value, s in groups.items()]
    w = max(len(label) for label, _ in rows)
    lines = [f"thinktrain eval: {result['model']} on {where} (n={result['n']}{sampling})",
             f"  system prompt: {result['system_prompt_source']}",
             f"  {'':<{w}} {'n':>5} " + " ".join(f"{name:>9}" for name in names)]
    lines += [f"  {label:<{w}} {s['n']:>5} " + " ".join(f"{pct(s.get(key)):>9}" for key in keys) for label, s in rows]
    lines.append(f"  format {pct(result['format'])}, {result['mean_completion_tokens']:.1f} tokens per greedy "
                 f"completion, {pct(result['truncated'])} cut at max_new_tokens, {result['seconds']:.1f} s")
    if result.get("tools"):
        sampled = f", {pct(result['sampled_tool_use'])} of samples" if result.get("sampled_tool_use") is not None else ""
        lines.append(f"  tools {', '.join(result['tools'])}: called in {pct(result['tool_use'])} of greedy "
                     f"completions{sampled}")
    return "\n".join(lines)


def check_model_source(model: str):
    check_source("--model", model, repo_type="model")
    path = Path(model)
    if path.is_dir() and not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
        raise RecipeError(f"--model: {model} holds no model (no config.json or adapter_config.json)")


def main(argv: list[str]) -> int:
    """`thinktrain eval ...`: every input mistake is a RecipeError raised before the model loads."""
    parser = dataclass_parser(EvalArguments, prog="thinktrain eval", description="Evaluate a causal LM on GSM8K-style problems "
                    "(pass@1 greedy; with --num_samples k > 1 also sampled accuracy, pass@k, maj@k).")
    try:
        args, rest = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    if rest:
        raise RecipeError(f"unrecognized arguments: {' '.join(rest)}")
    missing = [f"--{key}" for key in ("model", "dataset") if not getattr(args, key)]
    if missing:
        raise RecipeError(f"the following arguments are required: {', '.join(missing)}")
    check_options(args)
    check_model_source(args.model)
    if args.output and Path(args.output).is_dir():
        raise RecipeError(f"--output: {args.output} is a folder; give a file name, e.g. {args.output}/eval.json")
    from .tools import load_tools, prepare_tokenizer

    # an unknown tool, or a python sandbox this machine cannot provide: one line, before the model loads
    tools = load_tools(args.tools, args.tool_timeout, args.python_sandbox)
    if tools:  # a model whose template can't call tools: the same
        from transformers import AutoTokenizer

        prepare_tokenizer(AutoTokenizer.from_pretrained(args.model), tools)
    problems = load_problems(args)  # loaded and checked once, before the model
    result = evaluate_model(args.model, problems, args, tools=tools)
    print(format_table(result), flush=True)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {out}", flush=True)
    return 0
