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

import contextlib
import dataclasses
import functools
import json
import math
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import NamedTuple

from .answers import answer_block
from .configs import EvalArguments
from .errors import RecipeError, pct
from .recipe import Parser, check_source

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

    from .data import load_raw, quiet_if_local

    name = args.dataset
    if not name:
        raise RecipeError("the following arguments are required: --dataset")
    check_source("--dataset", name, repo_type="dataset")
    with quiet_if_local(name):
        raw = load_raw(_only_split(name, args.split), args.dataset_config)
    if args.split in raw:
        ds = raw[args.split]
    elif len(raw) == 1 and Path(name).is_file():
        ds = next(iter(raw.values()))
    else:
        raise RecipeError(f"--split: dataset '{name}' has no split '{args.split}'; it has: {', '.join(raw)}")
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


def load_checkpoint(path: str, *, dtype=None, device: str | None = None):
    """(model in eval mode, tokenizer) from a local checkpoint or Hub id (an adapter folder loads base + LoRA)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(path)
    dtype = dtype or ("auto" if device != "cpu" else torch.float32)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    return model.eval(), tokenizer


def render(tokenizer, messages: list[dict]) -> str:
    """The prompt text the model sees: its chat template with the generation prompt (plain text without one)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return "\n\n".join(m["content"] for m in messages) + "\n"


# --------------------------------------------------------------------------- generation


class Completion(NamedTuple):
    text: str
    tokens: int  # generated tokens, the eos included
    finished: bool  # stopped at eos (False: cut at max_new_tokens)
    ids: tuple = ()  # the generated token ids (what rewards get as completion_ids)


def _eos_ids(model, tokenizer) -> list[int]:
    ids = []
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        ids += value if isinstance(value, list) else [] if value is None else [value]
    return list(dict.fromkeys(ids))


def _cache(device) -> dict:
    # On CPU the default dynamic KV cache grows by torch.cat every token, half of a decode step at batch 512; a
    # static cache writes in place: the same completions (compared token for token, greedy and sampled), 1.5-1.9x
    # sooner. Models without Cache support ignore the option with a warning. GPUs keep the default.
    return {"cache_implementation": "static"} if device.type == "cpu" else {}


@contextlib.contextmanager
def _padding_token(tokenizer, pad_id: int):
    """The tokenizer pads with `pad_id` for the duration (eos when it has no pad token, as generate does)."""
    saved = tokenizer.pad_token_id
    if saved is None:
        tokenizer.pad_token_id = pad_id
    try:
        yield
    finally:
        if saved is None:
            tokenizer.pad_token_id = None


def generate(model, tokenizer, prompts: list[str] | list[list[int]], *, max_new_tokens: int | list[int],
             batch_size: int, do_sample: bool = False, temperature: float = 1.0, add_special_tokens: bool = False,
             desc: str = "generating", progress: bool = True) -> list[Completion]:
    """One completion per prompt (rendered text, or token ids), in order. Batches of similar length, left-padded;
    stops at eos. A list max_new_tokens gives each prompt its own budget (a batch generates to its largest and
    each completion is cut to its own, as TRL's tool loop does).

    The model's own generation_config sampling defaults (top_k, top_p, repetition_penalty) are overridden, so a
    number means the same for every model: greedy, or pure temperature sampling. Its eos ids are kept."""
    import torch
    from tqdm.auto import tqdm

    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    if prompts and isinstance(prompts[0], str):
        prompts = tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]
    budgets = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first: less padding, OOM at once
    sampling = dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0) if do_sample else dict(do_sample=False)
    out: list[Completion | None] = [None] * len(prompts)
    device = model.device
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.inference_mode(), _padding_token(tokenizer, pad):
        for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress or not batches, file=sys.stderr):
            enc = tokenizer.pad({"input_ids": [prompts[i] for i in batch]}, padding=True, padding_side="left",
                                return_tensors="pt")
            width = enc["input_ids"].shape[1]
            generated = model.generate(
                input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                max_new_tokens=max(budgets[i] for i in batch),
                pad_token_id=pad, eos_token_id=eos or None, repetition_penalty=1.0, **sampling, **_cache(device),
            )[:, width:].tolist()
            for row, i in enumerate(batch):
                tokens = generated[row][: budgets[i]]
                end = next((t + 1 for t, tok in enumerate(tokens) if tok in eos), None)
                tokens = tokens if end is None else tokens[:end]
                out[i] = Completion(tokenizer.decode(tokens, skip_special_tokens=True), len(tokens), end is not None,
                                    tuple(tokens))
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------- generation with tools


class ToolCompletion(NamedTuple):
    text: str  # every assistant turn and tool reply joined (rewards.completion_text): what is scored
    tokens: int  # completion tokens, tool replies and their headers included (they count against the budget)
    finished: bool
    ids: tuple
    messages: tuple  # the completion as TRL's tool loop builds it: assistant, tool, ..., assistant
    calls: int  # tool calls made


def _suffix_ids(tokenizer, chat_template, tool_messages: list[dict]) -> list[int]:
    """The tokens that follow an assistant turn ending in tool calls: the replies and the next assistant header.
    TRL's own method (GRPOTrainer._get_tool_suffix_ids), called with the few attributes it reads, so evaluation
    and training build the same conversation token for token."""
    from types import SimpleNamespace

    from trl import GRPOTrainer

    owner = SimpleNamespace(processing_class=tokenizer, _tokenizer=tokenizer, _is_vlm=False,
                            chat_template=chat_template, chat_template_kwargs={})
    return GRPOTrainer._get_tool_suffix_ids(owner, tool_messages)


def _call(toolbox: dict, call: dict):
    """(name, result) of one parsed tool call, as TRL's loop reports it: an exception becomes {'error': ...}."""
    function = call.get("function", call) if isinstance(call, dict) else {}
    name = function.get("name", "unknown")
    try:
        if name not in toolbox:
            raise ValueError(f"Tool {name} not found.")
        return name, toolbox[name](**(function.get("arguments") or {}))
    except Exception as e:
        return name, {"error": str(e)}


def tool_template(tokenizer) -> str | None:
    """The chat template TRL's tool loop renders with: the tokenizer's own when prefix-preserving, else TRL's
    training version of it (GRPOTrainer.__init__ makes the same choice)."""
    from trl.chat_template_utils import get_training_chat_template, is_chat_template_prefix_preserving

    return None if is_chat_template_prefix_preserving(tokenizer) else get_training_chat_template(tokenizer)


def render_ids(tokenizer, messages: list[dict], tools: list, chat_template: str | None = None) -> list[int]:
    """A prompt's token ids as GRPOTrainer renders it with tools (their schemas, where the template shows them)."""
    ids = tokenizer.apply_chat_template(messages, tools=tools or None, chat_template=chat_template,
                                        add_generation_prompt=True, tokenize=True, return_dict=False)
    return list(ids)


def generate_with_tools(model, tokenizer, prompt_ids: list[list[int]], tools: list, *, max_new_tokens: int,
                        max_iterations: int | None = None, chat_template: str | None = None, desc: str = "generating",
                        progress: bool = True, **gen) -> list[ToolCompletion]:
    """Generation with tool calls, step for step as GRPOTrainer's tool loop (trl 1.16 `_tool_call_loop`): parse
    each turn with TRL's parse_response; run its calls (an exception is the reply {'error': ...}); append the
    replies and the next assistant header (TRL's suffix); generate on from the whole sequence; stop when a turn
    calls nothing, after max_iterations rounds, or when the replies would push the completion past
    max_new_tokens (that round's replies are dropped, as TRL drops them). Replies count against the budget."""
    from trl.chat_template_utils import parse_response

    from .rewards import completion_text

    toolbox = {fn.__name__: fn for fn in tools}
    limit = getattr(model.config, "max_position_embeddings", None) or float("inf")
    first = generate(model, tokenizer, prompt_ids, max_new_tokens=max_new_tokens, desc=desc, progress=progress, **gen)
    ids = [list(c.ids) for c in first]
    messages = [[parse_response(tokenizer, list(c.ids), prefix=list(p), tools=tools)] for c, p in zip(first, prompt_ids)]
    pending = [i for i, m in enumerate(messages) if m[-1].get("tool_calls")]
    rounds = 0
    while pending and (max_iterations is None or rounds < max_iterations):
        going, contexts = [], []
        for i in pending:
            replies = [{"role": "tool", "name": name, "content": result if isinstance(result, list) else str(result)}
                       for name, result in (_call(toolbox, call) for call in messages[i][-1]["tool_calls"])]
            context = list(prompt_ids[i]) + ids[i] + _suffix_ids(tokenizer, chat_template, replies)
            if len(context) - len(prompt_ids[i]) > max_new_tokens or len(context) >= limit:
                continue  # over budget: the completion ends as it is (TRL rolls these replies back)
            messages[i] += replies
            going.append(i)
            contexts.append(context)
        budgets = [max_new_tokens - (len(c) - len(prompt_ids[i])) for c, i in zip(contexts, going)]
        # a budget of 0 still asks generate() for 1 token and cuts it: TRL generates then truncates the same way
        more = generate(model, tokenizer, contexts, max_new_tokens=[max(b, 1) for b in budgets], desc=f"{desc} "
                        f"(after tool round {rounds + 1})", progress=False, **gen) if going else []
        pending = []
        for i, context, budget, c in zip(going, contexts, budgets, more):
            new = list(c.ids)[:budget]
            ids[i] = context[len(prompt_ids[i]):] + new
            if new:
                turn = parse_response(tokenizer, new, prefix=context, tools=tools)
                messages[i].append(turn)
                if turn.get("tool_calls"):
                    pending.append(i)
        rounds += 1
    eos = set(_eos_ids(model, tokenizer))
    return [ToolCompletion(completion_text(m), len(i), bool(i) and i[-1] in eos, tuple(i), tuple(m),
                           sum(len(t.get("tool_calls") or []) for t in m if t.get("role") == "assistant"))
            for i, m in zip(ids, messages)]


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


def evaluate_model(model_or_path, problems, args: EvalArguments | None = None, *, tokenizer=None,
                   progress: bool = True, **settings) -> dict:
    """Generate, score and summarise; returns the results dict (docs/evaluation.md), per-problem records included.

    model_or_path: a checkpoint path / Hub id (loaded with load_checkpoint), or a loaded causal LM (its tokenizer
    from `tokenizer=`, else from model.name_or_path). problems: a datasets.Dataset (e.g. from load_problems), or a
    dataset name / file that load_problems reads. args: the settings (configs.EvalArguments); keyword `settings`
    replace single fields of it (limit=200, num_samples=8, ...). system_prompt None = the model folder's
    recipe.yaml, else data.THINK_SYSTEM_PROMPT; "" = none."""
    args = dataclasses.replace(args or EvalArguments(), **settings)
    check_options(args)
    from transformers import set_seed

    from .data import to_grpo
    from .rewards import format_reward, template_prefills_think
    from .tools import load_tools, prepare_tokenizer

    started = time.time()
    if isinstance(problems, (str, Path)):
        args = dataclasses.replace(args, dataset=str(problems))
        problems = load_problems(args)
    else:
        problems = _checked(problems, args)
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
    has_template = bool(getattr(tokenizer, "chat_template", None))
    tools = load_tools(args.tools)
    prepare_tokenizer(tokenizer, tools)
    if tools:  # rendered and run as GRPOTrainer's tool loop does
        template = tool_template(tokenizer)
        prompts = [render_ids(tokenizer, p, tools, template) for p in shaped["prompt"]]
    else:
        prompts = [render(tokenizer, p) for p in shaped["prompt"]]
    golds = list(shaped["solution"])
    k, seed, prompt_column = args.num_samples, args.seed, args.prompt_column

    gen = dict(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, add_special_tokens=not has_template,
               progress=progress and not args.quiet)
    if tools:
        run = functools.partial(generate_with_tools, model, tokenizer, tools=tools, chat_template=template,
                                max_iterations=args.max_tool_calling_iterations, **gen)
    else:
        run = functools.partial(generate, model, tokenizer, **gen)
    was_training = model.training
    model.eval()
    try:
        set_seed(seed)
        greedy = run(prompts, desc="greedy")
        samples = []
        if k > 1:
            set_seed(seed)
            samples = run([p for p in prompts for _ in range(k)], do_sample=True, temperature=args.temperature,
                          desc=f"sampling {k} per problem")
    finally:
        model.train(was_training)

    texts = [c.text for c in greedy] + [c.text for c in samples]
    references = golds + [g for g in golds for _ in range(k if k > 1 else 0)]
    scores = load_metric().compute(predictions=texts, references=references, per_example=True)
    strict, lenient = scores["correct"], scores["correct_lenient"]
    # a template that opens the answer with "<think>" put that tag in the prompt: judge the format accordingly
    formats = format_reward([c.text for c in greedy], think_prefilled=template_prefills_think(tokenizer))

    records = []
    columns = [c for c in BREAKDOWN_COLUMNS if c in shaped.column_names]
    for i, (row, c) in enumerate(zip(shaped, greedy)):
        question = row.get(prompt_column) if prompt_column in row else row["prompt"][-1]["content"]
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

    summary = summarize(records, k)
    return {
        "model": model_dir, "dataset": name,
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
        "unscored": sum(not ok for ok in scores["scored"][: len(greedy)]),
        "temperature": args.temperature if k > 1 else None, "max_new_tokens": args.max_new_tokens, "seed": seed,
        "system_prompt": system, "system_prompt_source": system_source,
        "prompt_format": "chat_template" if has_template else "plain",
        "seconds": round(time.time() - started, 2),
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
    parser = Parser(EvalArguments, prog="thinktrain eval", description="Evaluate a causal LM on GSM8K-style problems "
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
    if args.tools:  # an unknown tool, or a model whose template can't call tools: one line, before the model loads
        from transformers import AutoTokenizer

        from .tools import load_tools, prepare_tokenizer

        prepare_tokenizer(AutoTokenizer.from_pretrained(args.model), load_tools(args.tools))
    problems = load_problems(args)  # loaded and checked once, before the model
    result = evaluate_model(args.model, problems, args)
    print(format_table(result), flush=True)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {out}", flush=True)
    return 0
