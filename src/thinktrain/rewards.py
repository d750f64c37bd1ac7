"""Reward functions for GRPO on <think>…</think><answer>…</answer> completions, and the registry recipes use.

Every reward has TRL's signature `fn(completions, **kwargs) -> list[float | None]`: `completions` are strings or
message lists, dataset columns (such as `solution`) and `completion_ids` arrive as keyword arguments. They never
raise (an internal failure scores the item with a neutral value and is counted in `errors`), never evaluate
model text, and are fast (see docs/rewards.md). `REWARDS` at the end is the one registry of the names a recipe's
`reward_funcs` may use; each function's docstring says what it scores.

Answer extraction and number comparison live in thinktrain.answers, the exact arithmetic the `arithmetic` reward
checks equations with in thinktrain.arithmetic, and loading a 'pkg.mod:fn' reward in thinktrain.callables.
Over 450 lines on purpose: one file holds every reward and the registry, so "where is the format reward" has one
answer (open-r1's rewards.py + one dict); each reward is short and stands alone.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable
from fractions import Fraction

from . import answers
from .arithmetic import CalcError, exact, number
from .callables import Wording, load_callable
from .errors import RecipeError, suggest
from .tools import tool_calls

logger = logging.getLogger(__name__)
errors = 0  # items scored by the safety net below; tests assert it stays 0


def _failed(exc: Exception, default):
    global errors
    errors += 1
    if errors <= 5:
        logger.warning("reward failed on one completion (%s: %s); scored %r", type(exc).__name__, exc, default)
    return default


# --------------------------------------------------------------------------- completions -> text


def _content(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):  # multimodal parts: [{"type": "text", "text": ...}, ...]
        parts = [p if isinstance(p, str) else p.get("text") if isinstance(p, dict) else None for p in content]
        return "".join(p for p in parts if isinstance(p, str))
    return ""


def completion_text(completion) -> str:
    """A completion as text: a string as is; a message list (a tool-using completion is several turns) -> every
    assistant turn and tool reply joined in order, so `48/2 = ` + `24` (the calculator's reply) + ` clips` reads
    as the worked line it is, and format/accuracy judge the whole completion. A turn whose reasoning a chat
    template split off (`reasoning_content`, Qwen's parser) gets its <think> tags back."""
    if isinstance(completion, str):
        return completion
    try:
        messages = [completion] if isinstance(completion, dict) else completion
        if not isinstance(messages, (list, tuple)):
            return ""
        parts = []
        for m in messages:
            if not isinstance(m, dict) or m.get("role", "assistant") not in ("assistant", "tool"):
                continue
            reasoning = m.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                parts.append(f"<think>\n{reasoning}\n</think>\n")
            parts.append(_content(m.get("content")))
        return "".join(parts)
    except Exception as e:
        return _failed(e, "")


def _texts(completions) -> list[str]:
    if isinstance(completions, (str, dict)) or completions is None:
        completions = [completions] if completions is not None else []
    try:
        return [completion_text(c) for c in completions]
    except Exception:  # not iterable
        return []


def _column(values, n: int) -> list:
    """A dataset column as a list of length n (a scalar is repeated, missing entries are None)."""
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
        return [values] * n
    try:
        values = list(values)[:n]
    except Exception:
        return [None] * n
    return values + [None] * (n - len(values))


# --------------------------------------------------------------------------- correctness: accuracy, length, cosine


def accuracy_reward(completions, solution=None, **kwargs) -> list[float | None]:
    """1.0 if the final answer equals `solution`, else 0.0; None when the gold itself cannot be parsed.

    The answer is the last <answer> block, else the final answer in the text (\\boxed{}, '#### N', 'The answer
    is N', 'A: N', else the last number). Numbers compare exactly; non-numeric golds go to math_verify.
    """
    texts = _texts(completions)
    out = []
    for text, gold in zip(texts, _column(solution, len(texts))):
        try:
            out.append(answers.grade(text, gold))
        except Exception as e:
            out.append(_failed(e, None))
    if callable(kwargs.get("log_metric")):
        log_group_signal(out, kwargs.get("prompts"), kwargs["log_metric"])
    return out


def log_group_signal(scores: list[float | None], prompts, log_metric) -> None:
    """Does RL have signal? Per step, the share of prompt groups (consecutive completions of one prompt, as TRL
    lays them out) whose completions were all wrong, all right, or mixed. Only mixed groups carry a GRPO gradient;
    1 - all_wrong is pass@num_generations on the training prompts. Logged as accuracy/groups_*."""
    try:
        keys = [_group_key(p) for p in prompts] if isinstance(prompts, (list, tuple)) else None
        if not keys or len(keys) != len(scores):
            return
        groups, start = [], 0
        for i in range(1, len(keys) + 1):
            if i == len(keys) or keys[i] != keys[start]:
                groups.append([s for s in scores[start:i] if s is not None])
                start = i
        groups = [g for g in groups if g]
        if not groups:
            return
        for name, test in (("all_wrong", lambda g: not any(g)), ("all_right", lambda g: all(g)),
                           ("mixed", lambda g: any(g) and not all(g))):
            log_metric(f"accuracy/groups_{name}", sum(map(test, groups)) / len(groups))
    except Exception as e:  # diagnostics must never stop training
        _failed(e, None)


def _lengths(texts: list[str], completion_ids) -> list[int]:
    """Token counts when TRL passes completion_ids (always, in training), else character counts."""
    if isinstance(completion_ids, (list, tuple)) and len(completion_ids) == len(texts):
        try:
            return [len(ids) for ids in completion_ids]
        except Exception:
            pass
    return [len(t) for t in texts]


def _group_key(prompt) -> str | None:
    try:
        return prompt if isinstance(prompt, str) else repr(prompt)
    except Exception:
        return None


def length_reward(completions, solution=None, completion_ids=None, prompts=None, **kwargs) -> list[float | None]:
    """Kimi 1.5 length reward, within each group of completions of the same prompt (the whole batch if no prompts).

    With lambda = 0.5 - (len - min_len) / (max_len - min_len): correct -> lambda, wrong -> min(0, lambda); all
    lengths equal -> 0.0. None where the gold cannot be parsed (as accuracy).
    """
    texts = _texts(completions)
    correct = accuracy_reward(texts, solution)
    lengths = _lengths(texts, completion_ids)
    groups: dict = {}
    for i, p in enumerate(_column(prompts, len(texts))):
        groups.setdefault(_group_key(p), []).append(i)
    out: list[float | None] = [None] * len(texts)
    for members in groups.values():
        lo = min(lengths[i] for i in members)
        hi = max(lengths[i] for i in members)
        for i in members:
            if correct[i] is None:
                continue
            lam = 0.0 if hi == lo else 0.5 - (lengths[i] - lo) / (hi - lo)
            out[i] = float(lam if correct[i] == 1.0 else min(0.0, lam))
    return out


def cosine_reward(
    completions,
    solution=None,
    completion_ids=None,
    *,
    min_value_wrong: float = -1.0,
    max_value_wrong: float = -0.5,
    min_value_correct: float = 0.5,
    max_value_correct: float = 1.0,
    max_len: int = 1000,
    **kwargs,
) -> list[float | None]:
    """Correctness scaled by length on a cosine schedule (open-r1 / "Demystifying Long CoT" App. C.1).

    Correct: max_value_correct at length 0 falling to min_value_correct at max_len; wrong: min_value_wrong at 0
    rising to max_value_wrong. Lengths past max_len stay at the max_len value (cos would climb back up).
    """
    texts = _texts(completions)
    correct = accuracy_reward(texts, solution)
    out: list[float | None] = []
    for ok, length in zip(correct, _lengths(texts, completion_ids)):
        if ok is None:
            out.append(None)
            continue
        cosine = math.cos(min(length / max_len, 1.0) * math.pi)
        lo, hi = (min_value_correct, max_value_correct) if ok == 1.0 else (max_value_wrong, min_value_wrong)
        out.append(float(lo + 0.5 * (hi - lo) * (1.0 + cosine)))
    return out


# --------------------------------------------------------------------------- format: format, format_strict, tag_count

# A chat template that opens the assistant turn with "<think>" (R1-distill, some Qwen3 variants) puts that tag in
# the prompt, not the completion. With think_prefilled the completion is judged as if it began with it.
_PREFILL = "<think>\n"
_LAYOUT_MIDDLE = "\n</think>\n<answer>\n"


def _is_formatted(text: str, strict: bool) -> bool:
    s = text.strip()
    if not (s.startswith("<think>") and s.endswith("</answer>")):
        return False
    if s.count("<think>") != 1 or s.count("</think>") != 1 or s.count("<answer>") != 1 or s.count("</answer>") != 1:
        return False
    close, opening = s.find("</think>"), s.find("<answer>")
    if opening < close or s[close + 8 : opening].strip() or not s[opening + 8 : -9].strip():
        return False  # something between the blocks, or an empty answer (which would be free format reward)
    if not strict:
        return True
    # open-r1's re.match(r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$", text, re.DOTALL), by string
    # operations: the regex backtracks quadratically on repeated tags. `$` also accepts one trailing newline.
    for t in (text, text[:-1] if text.endswith("\n") else None):
        if t and t.startswith("<think>\n") and t.endswith("\n</answer>"):
            if t.find(_LAYOUT_MIDDLE, 8, len(t) - 10) >= 0:
                return True
    return False


def _format_scores(completions, think_prefilled: bool, strict: bool) -> list[float]:
    out = []
    for text in _texts(completions):
        try:
            out.append(1.0 if _is_formatted(_PREFILL + text if think_prefilled else text, strict) else 0.0)
        except Exception as e:
            out.append(_failed(e, 0.0))
    return out


def format_reward(completions, think_prefilled: bool = False, **kwargs) -> list[float]:
    """1.0 iff the completion is one <think>…</think> block then one non-empty <answer>…</answer> block, with
    only whitespace around and between them (any content inside, multi-line fine; no other R1 tags)."""
    return _format_scores(completions, think_prefilled, strict=False)


def format_strict_reward(completions, think_prefilled: bool = False, **kwargs) -> list[float]:
    """format_reward plus open-r1's layout: exactly "<think>\\n…\\n</think>\\n<answer>\\n…\\n</answer>"."""
    return _format_scores(completions, think_prefilled, strict=True)


def tag_count_reward(completions, think_prefilled: bool = False, **kwargs) -> list[float]:
    """0.25 for each of "<think>\\n", "\\n</think>\\n", "\\n<answer>\\n", "\\n</answer>" appearing exactly once."""
    out = []
    for text in _texts(completions):
        if think_prefilled:
            text = _PREFILL + text
        out.append(0.25 * ((text.count("<think>\n") == 1) + (text.count("\n</think>\n") == 1)
                           + (text.count("\n<answer>\n") == 1) + (text.count("\n</answer>") == 1)))
    return out


def template_prefills_think(tokenizer) -> bool:
    """True if the tokenizer's chat template ends the generation prompt with "<think>" (plus whitespace)."""
    try:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": "What is 1 + 1?"}], tokenize=False, add_generation_prompt=True
        )
    except Exception:  # no chat template, or one that needs more than a user turn
        return False
    return isinstance(rendered, str) and rendered.rstrip().endswith("<think>")


# --------------------------------------------------------------------------- length shaping: repetition, overlong


_REPETITION_MAX_WORDS = 50_000


def repetition_reward(completions, *, n_grams: int = 3, max_penalty: float = -1.0, **kwargs) -> list[float]:
    """(1 - unique/total word n-grams) * max_penalty: 0.0 for no repetition, max_penalty for pure repetition.

    Words are whitespace-separated and lowercased, as in open-r1. Only the last 50,000 words count (~65k tokens,
    more than any completion limit): that bounds the cost on megabyte inputs, and degenerate loops sit at the end.
    """
    out = []
    for text in _texts(completions):
        words = text.rsplit(None, _REPETITION_MAX_WORDS)  # splits from the end only: cost ~ the words kept
        if len(words) > _REPETITION_MAX_WORDS:
            del words[0]  # the unsplit head
        words = [w.lower() for w in words]
        total = len(words) - n_grams + 1
        if total < 1:
            out.append(0.0)
            continue
        unique = len(set(zip(*[words[i:] for i in range(n_grams)])))
        out.append((1.0 - unique / total) * max_penalty if unique < total else 0.0)
    return out


@functools.lru_cache(maxsize=8)
def _soft_overlong_punishment(max_length: int, buffer: int) -> Callable:
    # TRL imported here, not at the top: importing trl costs ~0.1 s that the other rewards' users need not pay
    from trl.rewards import get_soft_overlong_punishment

    return get_soft_overlong_punishment(max_length, buffer)


def overlong_reward(completions, completion_ids=None, *, max_length: int = 512, buffer: int = 256, **kwargs):
    """DAPO soft overlong punishment on token counts (TRL's get_soft_overlong_punishment): 0 up to
    max_length - buffer, then linearly down to -1 at max_length, -1 beyond. None for an item without
    `completion_ids` (it cannot be judged from text), instead of TRL's error."""
    n = len(_texts(completions))
    try:
        punish = _soft_overlong_punishment(max_length, buffer)
    except Exception as e:
        return [_failed(e, None) for _ in range(n)]
    out: list[float | None] = []
    for ids in _column(completion_ids, n):
        try:
            len(ids)
        except Exception:  # no token ids for this item (None, a number): not judged, and not a failure
            out.append(None)
            continue
        try:
            out.append(punish([ids])[0])
        except Exception as e:
            out.append(_failed(e, None))
    return out


# --------------------------------------------------------------------------- process: arithmetic

# "12 * 4 = 48", "$1,200 / 3 = $400", GSM8K's "<<48/2=24>>": numbers joined by + - * / x × ÷, then "= number".
# Numbers: commas only as thousands separators; ".5" is a number. Not checked: a result written as a fraction
# ("= 3/4"), mixed numbers ("8 x 1 1/2"), parentheses. _NUM is not arithmetic.DECIMAL (the calculator's and
# answers.py's "number as written") on purpose: it allows at most 15 digits a part, because DECIMAL's unbounded
# digits would make 20-term products of huge numbers, and int() past 4,300 digits, slow or raising here.
_NUM = r"\$?(?:(?:\d{1,3}(?:,\d{3})+|\d{1,15})(?:\.\d{1,15})?|\.\d{1,15})"
_OP = r"(?:[-+*/×÷]|(?<=\s)x(?=\s))"
# One pass, no backtracking across chains: each match is a whole chain "a op b ... [= r]" and the scan resumes after
# it, so a megabyte of "1 + 1 + ..." costs one linear scan, not one per start position.
_CHAIN = re.compile(rf"(?<![\w.,$])(?<!\d )-?{_NUM}(?:\s*{_OP}\s*{_NUM})*(?:\s*=\s*-?{_NUM}(?![\d/]))?")
_TERM = re.compile(rf"({_OP})?\s*(-?{_NUM})")
_MAX_EQUATIONS, _MAX_TERMS, _MAX_CHARS = 200, 20, 50_000  # bound the cost on megabyte inputs


def _evaluate(left: str) -> Fraction | None:
    """Left side of an equation, exactly (the calculator's engine: * and / before + and -); None when it does not
    evaluate (division by zero). No eval of model text."""
    try:
        return exact(left, max_chars=None)
    except CalcError:
        return None


def _checks_out(value: Fraction | None, stated: str) -> bool:
    if value is None:
        return False
    result = number(stated)
    if value == result:
        return True
    decimals = len(stated.partition(".")[2]) if "." in stated else 0
    return decimals > 0 and abs(value - result) <= Fraction(1, 2 * 10**decimals)  # 10 / 3 = 3.33 is right


def arithmetic_reward(completions, **kwargs) -> list[float]:
    """Share of the equations `a op b [op c ...] = r` in the completion whose left side really equals r (exact
    rational arithmetic, usual precedence, a rounded decimal r accepted); 0.0 when there is none.

    A process reward: it scores the reasoning's arithmetic, not the answer, so it separates completions whose
    answers are all wrong (or all right) by how many slips they made. The first 200 equations in the first 50,000
    characters count (far more than a 96-token budget writes; a bound on the cost of megabyte inputs).
    """
    out = []
    for text in _texts(completions):
        try:
            checked = right = 0
            for m in _CHAIN.finditer(text, 0, _MAX_CHARS):
                left, equals, stated = m.group().partition("=")
                terms = _TERM.findall(left) if equals else []
                if not 2 <= len(terms) <= _MAX_TERMS:
                    continue  # no "=", a lone number, or a chain no reasoning writes (big-number products are slow)
                checked += 1
                right += _checks_out(_evaluate(left), stated.strip())
                if checked == _MAX_EQUATIONS:
                    break
            out.append(right / checked if checked else 0.0)
        except Exception as e:
            out.append(_failed(e, 0.0))
    return out


def tool_use_reward(completions, **kwargs) -> list[float]:
    """1.0 when the completion called a tool and no call came back as an error; else 0.0 (plain-text completions
    included). Pair it with accuracy to teach a model to reach for its calculator."""
    out = []
    for completion in completions if isinstance(completions, (list, tuple)) else []:
        try:
            replies = [m for m in completion if isinstance(m, dict) and m.get("role") == "tool"] \
                if isinstance(completion, (list, tuple)) else []
            ok = tool_calls(completion) > 0 and not any(_content(m.get("content")).startswith(("error", "{'error'"))
                                                        for m in replies)
            out.append(1.0 if ok else 0.0)
        except Exception as e:
            out.append(_failed(e, 0.0))
    return out


# --------------------------------------------------------------------------- registry


class UnknownRewardError(RecipeError, ValueError):
    """A reward name that is neither in REWARDS nor an importable 'pkg.mod:fn' path (one-line message)."""


def _overlong_params(args, max_completion_length):
    limit = args.overlong_max_length or max_completion_length
    if not limit:
        raise RecipeError("overlong needs a length limit: set overlong_max_length or max_completion_length")
    if args.overlong_buffer >= limit:
        raise RecipeError(f"overlong_buffer ({args.overlong_buffer}) must be smaller than the overlong limit "
                          f"({limit}, overlong_max_length or max_completion_length)")
    return {"max_length": limit, "buffer": args.overlong_buffer}


# The registry: recipe name -> (function, its parameters from the recipe's RewardArguments + max_completion_length).
# `think_prefilled` is resolved before these run (None -> detected from the chat template).
REWARDS: dict[str, tuple[Callable, Callable[..., dict]]] = {
    "accuracy": (accuracy_reward, lambda a, n: {}),
    "format": (format_reward, lambda a, n: {"think_prefilled": a.think_prefilled}),
    "format_strict": (format_strict_reward, lambda a, n: {"think_prefilled": a.think_prefilled}),
    "tag_count": (tag_count_reward, lambda a, n: {"think_prefilled": a.think_prefilled}),
    "length": (length_reward, lambda a, n: {}),
    "cosine": (cosine_reward, lambda a, n: {
        "min_value_wrong": a.cosine_min_value_wrong, "max_value_wrong": a.cosine_max_value_wrong,
        "min_value_correct": a.cosine_min_value_correct, "max_value_correct": a.cosine_max_value_correct,
        "max_len": a.cosine_max_len}),
    "repetition": (repetition_reward, lambda a, n: {"n_grams": a.repetition_n_grams,
                                                    "max_penalty": a.repetition_max_penalty}),
    "overlong": (overlong_reward, _overlong_params),
    "arithmetic": (arithmetic_reward, lambda a, n: {}),
    "tool_use": (tool_use_reward, lambda a, n: {}),
}


class NamedReward:
    """A registry reward: `__name__` is its short name, which TRL logs as rewards/<name>/mean. A class rather than
    a closure so it pickles (TRL's async rollout worker sends reward functions to a child process)."""

    def __init__(self, name: str, fn: Callable, **params):
        self.__name__ = name
        self.fn = fn
        self.params = params

    def __call__(self, completions, **kwargs):
        return self.fn(completions, **{**kwargs, **self.params})

    def __repr__(self):
        return f"NamedReward({self.__name__!r}, {self.fn.__name__}, {self.params})"


# how a 'pkg.mod:fn' reward that cannot be loaded is refused (the names, {known}, are REWARDS')
_WORDING = Wording(
    malformed="reward '{path}': expected a name ({known}) or 'pkg.module:function'",
    unimportable="cannot import reward '{path}': {error}",
    missing="cannot load reward '{path}': module '{module}' has no '{attr}'",
    not_callable="reward '{path}' is not callable (got {got})",
)


def _import_reward(path: str) -> Callable:
    """'pkg.mod:fn' or 'pkg.mod.fn' -> the function; the working directory is importable, as in TRL's scripts."""
    return load_callable(path, _WORDING, UnknownRewardError, known=", ".join(REWARDS))


def resolve_reward(name: str) -> Callable:
    """A reward_funcs name -> its function: the registry's (parameters bound later, by load_rewards) or the imported
    'pkg.mod:fn'. Anything else raises UnknownRewardError, in one line."""
    if not isinstance(name, str) or not name.strip():
        raise UnknownRewardError(f"reward name must be a non-empty string, got {name!r}")
    if name in REWARDS:
        return REWARDS[name][0]
    if ":" in name or "." in name:
        return _import_reward(name)
    raise UnknownRewardError(f"unknown reward '{name}'{suggest(name, REWARDS)}; known: {', '.join(REWARDS)}")


def load_rewards(names: list[str], args=None, tokenizer=None, max_completion_length: int | None = None,
                 functions: list[Callable] | None = None) -> list[Callable]:
    """Recipe reward names -> callables for GRPOTrainer(reward_funcs=...), in order.

    `functions`: the names already resolved (Recipe.rewards, resolved once when the recipe is validated); None
    resolves them here. `args` holds the reward parameters (configs.RewardArguments, or the GRPO recipe's
    script_args; None: the defaults). The tokenizer's chat template decides think_prefilled when it is unset;
    max_completion_length is overlong's default limit."""
    from dataclasses import fields

    from .configs import RewardArguments

    # our own copy (validated again by its __post_init__), so resolving think_prefilled never touches the recipe's
    args = RewardArguments(**{f.name: getattr(args, f.name) for f in fields(RewardArguments)} if args else {})
    if args.think_prefilled is None:
        args.think_prefilled = (tokenizer is not None and bool({"format", "format_strict", "tag_count"} & set(names))
                                and template_prefills_think(tokenizer))
    functions = functions if functions is not None else [resolve_reward(name) for name in names]
    return [NamedReward(name, fn, **REWARDS[name][1](args, max_completion_length)) if name in REWARDS else fn
            for name, fn in zip(names, functions)]
