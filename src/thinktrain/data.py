"""Where datasets come from and how they are shaped for each trainer.

Sources: a Hub id (`openai/gsm8k` + dataset_config `main`), a local .jsonl/.json/.parquet/.csv file or a folder
of them, or `synthetic:SPEC` (thinktrain.synthetic). Shapes: GRPO gets a conversational `prompt` and a gold
`solution` column (other columns ride along and reach the rewards as kwargs); SFT gets `messages`, `text`, or
conversational `prompt`/`completion` (loss on the completion only); pretraining gets the `text` column alone
(the trainer tokenizes and packs it). GSM8K's question/answer shape is built in.
"""

from __future__ import annotations

import contextlib
import re
from fractions import Fraction
from pathlib import Path

from .answers import gold_answer
from .configs import evaluating
from .conversations import by_lang, from_message_trees, is_message_tree
from .errors import DATA_SUFFIXES, RecipeError

THINK_SYSTEM_PROMPT = (
    "You are a helpful assistant. Think step by step inside <think> </think>, then give only the final "
    "answer inside <answer> </answer>."
)
_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations: 48/2 = <<48/2=24>>24
_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")


# --------------------------------------------------------------------------- GSM8K shape


def worked_steps(answer: str) -> str:
    """The reasoning part of a GSM8K answer, calculator annotations removed."""
    return _CALCULATOR.sub("", str(answer).rsplit("####", 1)[0]).strip()


def answer_keys_only(ds, column: str, rows: int = 100) -> bool:
    """Whether a split's first rows are bare GSM8K answer keys (`#### 42`, no worked steps): exercises."""
    head = [row[column] for row in ds.take(rows)]
    return bool(head) and all("####" in str(a) and not worked_steps(a) for a in head)


def think_answer(answer: str) -> str:
    """A GSM8K worked solution in the R1 format the rewards expect."""
    return f"<think>\n{worked_steps(answer)}\n</think>\n<answer>\n{gold_answer(answer)}\n</answer>"


def annotation_tool(tools) -> str:
    """Which tool SFT data makes of a worked solution's `<<48/2=24>>` annotations: the calculator whenever the recipe
    offers it (one exact expression per step is its job; its reply is the number the solution writes), python when
    the recipe offers python without the calculator. (Other tools are offered in the schemas, not called in data.)"""
    names = {getattr(fn, "__name__", fn) for fn in tools or ()}
    return "python" if "python" in names and "calculator" not in names else "calculator"


def python_step(expression: str) -> tuple[str, str] | None:
    """An annotation's expression as a python tool call -> (program, what it prints), or None where no program
    computes it as written (a malformed or unbounded expression; a translation Python reads otherwise).

    The program is `print(EXPR)`, EXPR the annotation's arithmetic as Python writes it ($ and thousands commas
    dropped, x/×/÷/^ as * / **, 50% as (50/100)), division always `/`: the code a model learns is the arithmetic
    as written and never wrong (a `//` learnt where a division happened to be whole would floor silently where it
    is not). What it prints is computed exactly as CPython would (its own int/float operators on the same
    literals): `print(48/2)` prints `24.0\n`, `print(48+24)` `72\n`, `print(2.3*100)` `229.99999999999997\n`."""
    import ast
    import operator

    from .arithmetic import CalcError, _tokens, exact

    try:
        value = exact(expression)
        tokens = _tokens(expression)
    except CalcError:
        return None
    parts = []
    for i, token in enumerate(tokens):
        if token[0] in "$.0123456789":
            number = token.replace("$", "").replace(",", "")
            number = number if "." in number else str(int(number))  # 007 is a SyntaxError in Python 3
            parts.append(f"({number}/100)" if i + 1 < len(tokens) and tokens[i + 1] == "%" else number)
        elif token == "%":
            if tokens[i - 1][0] not in "$.0123456789":  # a percent of a bracket: rare; no call
                return None
        else:
            parts.append(token)
    program = f"print({''.join(parts)})"
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}

    def run(node, number):  # the expression's tree evaluated with `number` making its literals
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return number(node)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](run(node.left, number), run(node.right, number))
        if isinstance(node, ast.UnaryOp) and type(node.op) in ops:
            return ops[type(node.op)](run(node.operand, number))
        raise ValueError(ast.dump(node))

    try:
        tree = ast.parse(program[len("print("):-1], mode="eval").body
        if run(tree, lambda c: Fraction(ast.get_source_segment(program[6:-1], c) or repr(c.value))) != value:
            return None  # Python would read the translation otherwise (-2**2): no call
        printed = run(tree, lambda c: c.value)  # CPython's own arithmetic: what print() writes
    except (ValueError, ArithmeticError, SyntaxError, TypeError):
        return None
    if type(printed) not in (int, float):  # a complex power
        return None
    return program, f"{printed}\n"


def tool_conversation(answer: str, tool: str = "calculator") -> list[dict]:
    """A GSM8K worked solution as the assistant/tool turns of a tool-using completion: each `<<expr=result>>`
    annotation becomes a call of `tool` (annotation_tool). The calculator's call is the expression and its reply
    (the calculator's own result) stands in for the number the annotation repeats: joined, the turns read as
    think_answer(answer). Python's call is a program that prints the computation (python_step) and its reply is
    what that prints (`24.0\n` for 48/2); the written number is dropped after it only where the reply is that
    number, so the solution still writes `24` itself after reading `24.0`. An annotation python_step cannot
    translate stays text (no call), its annotation removed.
    """
    steps = str(answer).rsplit("####", 1)[0].strip()
    messages, text, pos = [], "<think>\n", 0
    for m in _ANNOTATION.finditer(steps):
        expression, written = m.group(1).strip(), m.group(2).strip()
        if tool == "python":
            step = python_step(expression)
            if step is None:
                continue
            arguments, reply = {"code": step[0]}, step[1]
            skip = reply.strip() == written
        else:
            from .tools import calculator

            arguments, reply, skip = {"expression": expression}, calculator(expression), True
        call = {"type": "function", "function": {"name": tool, "arguments": arguments}}
        messages += [{"role": "assistant", "content": text + _CALCULATOR.sub("", steps[pos:m.start()]),
                      "tool_calls": [call]},
                     {"role": "tool", "name": tool, "content": reply}]
        pos, text = m.end(), ""
        if skip and steps.startswith(written, pos):  # "<<48/2=24>>24 clips": the reply is the 24
            pos += len(written)
    final = f"{text}{_CALCULATOR.sub('', steps[pos:])}\n</think>\n<answer>\n{gold_answer(answer)}\n</answer>"
    return messages + [{"role": "assistant", "content": final}]


# --------------------------------------------------------------------------- loading


def load_raw(name: str, config: str | None = None, streaming: bool = False):
    """Any supported source -> datasets.DatasetDict (IterableDatasetDict when streaming)."""
    from datasets import DatasetDict, IterableDatasetDict, load_dataset

    if name.startswith("synthetic:"):
        from . import synthetic

        try:
            return synthetic.load(name.split(":", 1)[1])
        except ValueError as e:
            raise RecipeError(f"dataset_name '{name}': {e}") from None
    path = Path(name)
    if path.is_file() and DATA_SUFFIXES.get(path.suffix) is None:
        raise RecipeError(f"dataset_name: can't read '{name}': use a {'/'.join(DATA_SUFFIXES)} file")
    import logging

    datasets_log = logging.getLogger("datasets")
    level = datasets_log.level
    if path.exists():  # its "Failed to load JSON from file ..." would repeat the one line below
        datasets_log.setLevel(logging.CRITICAL)
    try:
        if path.is_file():
            ds = load_dataset(DATA_SUFFIXES[path.suffix], data_files=str(path), streaming=streaming)
        else:
            # dataset_config names a Hub dataset's config (openai/gsm8k's "main"); a local folder has none, so a
            # GPU recipe pointed at a local copy of its data works as it is
            ds = load_dataset(name, name=None if path.exists() else config, streaming=streaming)
    except Exception as e:  # datasets' traceback for an empty or malformed local file: say which and why, in one line
        if not path.exists():
            raise
        if isinstance(e, StopIteration) or "corresponds to no data" in str(e):
            raise RecipeError(f"dataset_name: '{name}' has no rows; fill it or point dataset_name at another "
                              f"file") from None
        why = " ".join(str(e.__cause__ or e).split()) or type(e).__name__
        raise RecipeError(f"dataset_name: can't read '{name}': {why}; fix it or point dataset_name at "
                          f"another") from None
    finally:
        datasets_log.setLevel(level)
    if isinstance(ds, (DatasetDict, IterableDatasetDict)):
        return ds
    return IterableDatasetDict(train=ds) if streaming else DatasetDict(train=ds)


def source_name(script_args) -> str:
    """What the messages call the recipe's data: dataset_name, or its mixture's datasets."""
    mixture = getattr(script_args, "dataset_mixture", None)
    if mixture:
        from .mixture import describe

        return describe(mixture)
    return script_args.dataset_name


def source_ids(script_args) -> list[str]:
    """Every dataset the recipe reads (one, or each of its mixture's)."""
    mixture = getattr(script_args, "dataset_mixture", None)
    return [e["id"] for e in mixture["datasets"]] if mixture else [script_args.dataset_name]


def raw_source(script_args, streaming: bool = False):
    """The recipe's data as a DatasetDict: dataset_name's (load_raw), or its dataset_mixture (mixture.load)."""
    mixture = getattr(script_args, "dataset_mixture", None)
    if mixture:
        if streaming:
            raise RecipeError("dataset_streaming: a dataset_mixture is loaded whole (shuffled and cut by weight); "
                              "set dataset_streaming: false")
        from . import mixture as mixtures

        return mixtures.load(mixture, load_raw, split_of)
    return load_raw(script_args.dataset_name, script_args.dataset_config, streaming)


@contextlib.contextmanager
def quiet_if_local(name: str):
    """No datasets progress bars while local (or synthetic) data loads and is shaped: they are instant there, and
    before a data error they would print above its one-line message. A Hub download keeps its bars."""
    import datasets

    local = all(n.startswith("synthetic:") or Path(n).exists() for n in ([name] if isinstance(name, str) else name))
    enabled = not datasets.are_progress_bars_disabled()
    if local and enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if local and enabled:
            datasets.enable_progress_bars()


def load(script_args, training_args, tokenizer=None, tools: list = ()):
    """(train, eval or None) shaped for script_args.task; every mistake is a one-line RecipeError. `tools`: the
    recipe's tool functions (Recipe.tools), whose schemas SFT rows carry and GRPO prompts are measured with."""
    with quiet_if_local(source_ids(script_args)):
        if script_args.task == "pretrain":
            return load_text(script_args, training_args)
        return _load_problems(script_args, training_args, tokenizer, tools)


def worked_rows(script_args, split: str, key: str, tools: list = ()) -> list[dict]:
    """The worked solutions of `split` of the recipe's dataset as SFT (prompt, completion) rows, e.g. rft's
    worked_split; a split of answer keys only is refused in one line naming it."""
    name = source_name(script_args)
    with quiet_if_local(source_ids(script_args)):
        ds = split_of(raw_source(script_args), split, name, key)
        rows = to_sft(ds, script_args, tools, split)
    if not {"prompt", "completion"} <= set(rows.column_names):
        raise RecipeError(f"{key}: split '{split}' of '{name}' must hold a question and a worked answer "
                          f"({script_args.prompt_column}/{script_args.answer_column}); it has: "
                          f"{', '.join(rows.column_names)}")
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]


def by_solve_rate(ds, script_args, name: str, split: str):
    """`ds` with only the problems whose solve_rate_column lies in [min_solve_rate, max_solve_rate] (Big-Math's
    llama8b_solve_rate: how hard a problem is for a model of that size); rows without a rate are dropped."""
    low, high = getattr(script_args, "min_solve_rate", None), getattr(script_args, "max_solve_rate", None)
    if low is None and high is None:
        return ds
    column, key = script_args.solve_rate_column, "min_solve_rate" if low is not None else "max_solve_rate"
    if column not in (ds.column_names or []):
        raise RecipeError(f"{key}: split '{split}' of '{name}' has no column '{column}' (solve_rate_column) to filter "
                          f"by; it has: {', '.join(ds.column_names or [])}")
    low, high = 0.0 if low is None else low, 1.0 if high is None else high
    kept = ds.filter(lambda rate: rate is not None and low <= rate <= high, input_columns=column,
                     desc="Filtering by solve rate")
    if hasattr(kept, "__len__") and len(kept) == 0:
        raise RecipeError(f"{key}: no problem of split '{split}' of '{name}' has {column} in [{low:g}, {high:g}] "
                          f"({len(ds)} rows); widen the range")
    return kept


def split_of(raw, split: str, name: str, key: str):
    """raw[split], or the one-line error naming the recipe key (or option) and the splits there are."""
    if split not in raw:
        raise RecipeError(f"{key}: dataset '{name}' has no split '{split}'; it has: {', '.join(raw)}")
    return raw[split]


def _load_problems(script_args, training_args, tokenizer, tools: list = ()):
    raw, name = raw_source(script_args, script_args.dataset_streaming), source_name(script_args)
    want_eval = evaluating(training_args)
    splits = {"train": script_args.dataset_train_split}
    if want_eval:
        splits["eval"] = script_args.dataset_test_split
    out = {}
    for role, split in splits.items():
        key = "dataset_train_split" if role == "train" else "dataset_test_split"
        ds = split_of(raw, split, name, key)
        if is_message_tree(ds.column_names) and script_args.task == "sft":  # oasst1: trees -> conversations
            ds = from_message_trees(ds, script_args.lang, name, split)
        else:
            ds = by_lang(ds, script_args.lang, name, split)
        ds = by_solve_rate(ds, script_args, name, split)
        limit = script_args.max_train_samples if role == "train" else script_args.max_eval_samples
        if limit is not None and not script_args.dataset_streaming:
            ds = ds.select(range(min(limit, len(ds))))
        if script_args.task in ("grpo", "rft"):  # practice: prompt + gold solution
            out[role] = to_grpo(ds, script_args.prompt_column, script_args.answer_column, script_args.system_prompt,
                                name)
        else:
            out[role] = to_sft(ds, script_args, tools, split)
    if script_args.task in ("grpo", "rft") and script_args.max_prompt_length and tokenizer is not None:
        out["train"] = drop_long_prompts(out["train"], tokenizer, script_args.max_prompt_length, tools)
    if script_args.task == "sft" and getattr(training_args, "assistant_only_loss", False) and tokenizer is not None:
        out = assistant_only_without_markers(out, tokenizer, training_args)
    return out["train"], out.get("eval")


def _prompt(question, system_prompt: str | None) -> list[dict]:
    if isinstance(question, list):  # already a conversation
        messages = list(question)
    else:
        messages = [{"role": "user", "content": str(question)}]
    if system_prompt and messages[0].get("role") != "system":
        messages = [{"role": "system", "content": system_prompt}] + messages
    return messages


def _require(ds, columns: list[str], name: str, needs: str, fix: str = "set prompt_column/answer_column to map "
                                                                          "yours"):
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise RecipeError(f"dataset '{name}' lacks column(s) {', '.join(missing)} ({needs}); it has: "
                          f"{', '.join(ds.column_names)} — {fix}")


def problem_columns(ds, prompt_column: str, answer_column: str, name: str, needs: str, fix: str | None = None
                    ) -> tuple[str, str]:
    """The (question, gold answer) columns: `prompt`/`solution` when the data has them, else the named ones."""
    q = "prompt" if "prompt" in ds.column_names else prompt_column
    a = "solution" if "solution" in ds.column_names else answer_column
    _require(ds, [q, a], name, needs, *([fix] if fix else []))
    return q, a


def to_grpo(ds, prompt_column: str, answer_column: str, system_prompt: str | None, name: str):
    """-> conversational `prompt` + gold `solution` (e.g. '18' from GSM8K's '#### 18'); GRPO trains and evaluation
    tests on exactly this."""
    q, a = problem_columns(ds, prompt_column, answer_column, name, "GRPO needs a prompt and a gold answer")
    system = system_prompt

    def shape(row):
        return {"prompt": _prompt(row[q], system), "solution": gold_answer(row[a])}

    return ds.map(shape, desc="Shaping prompts")


def to_sft(ds, script_args, tools: list = (), split: str = ""):
    """-> `messages` | `text` | conversational `prompt`/`completion` (worked solution as think/answer); with tools,
    GSM8K's calculator annotations become calls and replies (of the calculator, or of python: annotation_tool), and
    each row carries the tools' schemas. Rows that are answer keys only (`#### 42`: exercises) are refused: there
    is no solution to imitate."""
    cols = ds.column_names
    system = script_args.system_prompt
    if "messages" in cols:
        # only the conversation: beside it, UltraChat's `prompt` (its first user turn, a string) would make TRL
        # read the rows as prompt-only text and refuse assistant_only_loss
        ds = ds.select_columns(["messages"])
        return ds.map(lambda r: {"messages": _prompt(r["messages"], system)}, desc="Shaping messages") if system else ds
    if "text" in cols or {"prompt", "completion"} <= set(cols):
        return ds
    q, a = script_args.prompt_column, script_args.answer_column
    _require(ds, [q, a], source_name(script_args),
             "SFT needs messages, text, prompt+completion, or a question and an answer")
    if answer_keys_only(ds, a):
        raise RecipeError(f"split '{split}' of '{source_name(script_args)}' holds answer keys only ('#### N', no "
                          f"worked solution): SFT has nothing to imitate — practise on it with task: rft or grpo, or "
                          f"train SFT on a split of worked solutions")

    tool = annotation_tool(tools)
    tools = tool_schemas(tools)

    def shape(row):
        answer = row[a]
        if tools and "####" in str(answer):
            return {"prompt": _prompt(row[q], system), "completion": tool_conversation(answer, tool), "tools": tools}
        completion = think_answer(answer) if "####" in str(answer) else str(answer)
        return {"prompt": _prompt(row[q], system), "completion": [{"role": "assistant", "content": completion}],
                **({"tools": tools} if tools else {})}

    return ds.map(shape, remove_columns=cols, desc="Shaping worked solutions")


def tool_schemas(tools: list) -> str | None:
    """The JSON schemas of a recipe's tool functions as one JSON string (TRL's SFT reads a `tools` column that way),
    so an SFT prompt renders with the tools exactly as GRPO's and evaluation's do."""
    if not tools:
        return None
    import json

    from transformers.utils import get_json_schema

    return json.dumps([get_json_schema(fn) for fn in tools])


def assistant_only_without_markers(splits: dict, tokenizer, training_args) -> dict:
    """assistant_only_loss needs `{% generation %}` markers in the chat template, and TRL can patch only the
    templates it knows; others (SmolLM2's ChatML, most community models) fail inside the trainer, after the model
    loaded. A conversation whose only assistant turn is its last needs no markers: as prompt + completion, TRL's
    completion-only loss trains on exactly that turn (its end-of-turn token included)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = getattr(tokenizer, "chat_template", None)
    if "messages" not in (splits["train"].column_names or []) or training_args.chat_template_path or not template:
        return splits
    if has_generation_markers(template):
        return splits
    try:
        get_training_chat_template(tokenizer)
        return splits  # TRL swaps in its training version of this template
    except ValueError:
        pass

    def single_final_turn(messages) -> bool:
        roles = [m.get("role") for m in messages]
        return roles.count("assistant") == 1 and roles[-1] == "assistant"

    if any(hasattr(ds, "__len__") and not all(map(single_final_turn, ds["messages"])) for ds in splits.values()):
        raise RecipeError(
            "assistant_only_loss: the model's chat template has no {% generation %} markers and TRL cannot "
            "patch it, and conversations with several assistant turns need them; set chat_template_path to a "
            "template with markers, or assistant_only_loss: false"
        )
    training_args.assistant_only_loss = False
    training_args.completion_only_loss = True
    print("  note       chat template has no {% generation %} markers: each conversation's final assistant turn "
          "is trained as a completion (the same assistant-only loss)", flush=True)
    return {role: ds.map(lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
                         remove_columns=["messages"], desc="Splitting off the assistant turn")
            for role, ds in splits.items()}


def load_text(script_args, training_args):
    """Pretraining: (train, eval or None) with only the text column, documents as they are (the trainer packs).

    Streaming keeps the training set lazy (a Hub corpus is read as it trains); the eval set is always materialised
    (max_eval_samples documents), so every evaluation scores the same text. An eval split equal to the train split
    holds out its first max_eval_samples documents (default 1000) for corpora that ship only a train split.
    """
    from datasets import Dataset

    name, streaming, column = source_name(script_args), script_args.dataset_streaming, training_args.dataset_text_field
    raw = raw_source(script_args, streaming)
    want_eval = evaluating(training_args)
    for key in ("dataset_train_split", "dataset_test_split")[: 1 + want_eval]:
        split_of(raw, getattr(script_args, key), name, key)
    train = raw[script_args.dataset_train_split]
    columns = train.column_names or list(next(iter(train)))  # a stream may not know its columns until read
    if column not in columns:
        raise RecipeError(f"dataset '{name}' lacks column '{column}' (pretraining reads raw text); it has: "
                          f"{', '.join(columns)} — set dataset_text_field to yours")
    train = train.select_columns([column])

    def first(ds, n):
        return ds.take(n) if streaming else ds.select(range(min(n, len(ds))))

    eval_ds = None
    if want_eval:
        n = script_args.max_eval_samples or 1000
        held_out = script_args.dataset_test_split == script_args.dataset_train_split
        eval_ds = first(train if held_out else raw[script_args.dataset_test_split].select_columns([column]), n)
        if streaming:
            eval_ds = Dataset.from_list(list(eval_ds))
        if held_out:
            if not streaming and n >= len(train):
                raise RecipeError(f"max_eval_samples={n} would hold out all {len(train)} training documents")
            train = train.skip(n) if streaming else train.select(range(n, len(train)))
    if script_args.max_train_samples is not None:
        train = first(train, script_args.max_train_samples)
    return train, eval_ds


def drop_long_prompts(ds, tokenizer, max_prompt_length: int, tools: list = ()):
    """TRL 1.x dropped max_prompt_length; we keep its meaning by filtering instead of truncating silently. Prompts
    are measured as the trainer renders them, tools included (a Qwen template writes their schemas in)."""
    import logging

    functions = list(tools) or None

    def fits(row):
        ids = tokenizer.apply_chat_template(row["prompt"], tools=functions, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        return len(ids) <= max_prompt_length

    before = len(ds)
    ds = ds.filter(fits, desc=f"Dropping prompts > {max_prompt_length} tokens")
    if len(ds) == 0:  # before the warning: the error alone is the one line
        raise RecipeError(f"max_prompt_length={max_prompt_length} drops every training prompt; raise it")
    logging.getLogger("thinktrain").warning(
        "max_prompt_length=%d: dropped %d of %d training prompts", max_prompt_length, before - len(ds), before
    )
    return ds
