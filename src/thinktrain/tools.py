"""Tools a model calls while it thinks, and the one registry recipes name them from (`tools: [calculator]`).

A tool is a plain typed Python function with a docstring (TRL's contract: its name, type hints and docstring
become the JSON schema the chat template shows). GRPOTrainer's own tool loop runs them during rollouts;
`thinktrain eval --tools` and expert iteration run them through evaluation.generate_with_tools, which follows
TRL's loop step for step. A tool never raises and never hangs on any string: a bad call returns an error string
the model reads.

`exact()` is the exact-rational arithmetic both the calculator and the `arithmetic` reward use: a small
recursive-descent parser over Fractions, never `eval`, bounded in input size, nesting and number size.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from fractions import Fraction

from .errors import RecipeError, one_line, suggest

MAX_CHARS = 200  # an arithmetic step a solution writes is far shorter; a longer string is refused at once
MAX_DEPTH = 30  # parentheses
MAX_BITS = 256  # numerator/denominator size of any value (~77 digits): far past any word problem
MAX_EXPONENT = 64


class CalcError(ValueError):
    """A malformed or too-large expression (the calculator returns its message)."""


# numbers: 1,234.5 (comma thousands), .5, $12; operators + - * / × ÷ x ^ ** ( ) and a postfix %
_TOKENS = re.compile(r"\s*(?:(?P<num>\$?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?|\$?\.[0-9]+)"
                     r"|(?P<op>\*\*|[-+*/×÷x^()%−]))")


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKENS.match(text, pos)
        if not m:
            raise CalcError(f"unexpected {text[pos:].strip()[:1]!r}")
        out.append(m.group("num") or {"×": "*", "x": "*", "÷": "/", "−": "-", "^": "**"}.get(m.group("op"),
                                                                                              m.group("op")))
        pos = m.end()
    return out


def _check(value: Fraction) -> Fraction:
    if value.numerator.bit_length() > MAX_BITS or value.denominator.bit_length() > MAX_BITS:
        raise CalcError("number too large")
    return value


class _Parser:
    """expr := term (('+'|'-') term)*; term := power (('*'|'/') power)*; power := unary ('**' power)?;
    unary := '-' unary | atom '%'?; atom := number | '(' expr ')'."""

    def __init__(self, tokens: list[str]):
        self.tokens, self.i, self.depth = tokens, 0, 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise CalcError("incomplete expression")
        self.i += 1
        return token

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op, right = self.take(), self.term()
            value = _check(value + right if op == "+" else value - right)
        return value

    def term(self) -> Fraction:
        value = self.power()
        while self.peek() in ("*", "/"):
            op, right = self.take(), self.power()
            if op == "/" and right == 0:
                raise CalcError("division by zero")
            value = _check(value * right if op == "*" else value / right)
        return value

    def power(self) -> Fraction:
        base = self.unary()
        if self.peek() != "**":
            return base
        self.take()
        self.depth += 1  # right-associative: 2**3**2 recurses
        if self.depth > MAX_DEPTH:
            raise CalcError("expression nested too deeply")
        exponent = self.power()
        self.depth -= 1
        if exponent.denominator != 1 or abs(exponent) > MAX_EXPONENT:
            raise CalcError(f"exponent must be a whole number from -{MAX_EXPONENT} to {MAX_EXPONENT}")
        if base == 0 and exponent < 0:
            raise CalcError("division by zero")
        bits = max(base.numerator.bit_length(), base.denominator.bit_length()) * abs(int(exponent))
        if bits > MAX_BITS:
            raise CalcError("number too large")
        return base ** int(exponent)

    def unary(self) -> Fraction:
        if self.peek() in ("-", "+"):
            sign = -1 if self.take() == "-" else 1
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise CalcError("expression nested too deeply")
            value = sign * self.unary()
            self.depth -= 1
            return value
        value = self.atom()
        if self.peek() == "%":
            self.take()
            value /= 100
        return value

    def atom(self) -> Fraction:
        token = self.take()
        if token == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise CalcError("expression nested too deeply")
            value = self.expr()
            if self.peek() != ")":
                raise CalcError("missing ')'")
            self.take()
            self.depth -= 1
            return value
        if token[0] in "$.0123456789":
            return Fraction(token.replace("$", "").replace(",", ""))
        raise CalcError(f"unexpected {token!r}")


def exact(expression: str, max_chars: int | None = MAX_CHARS) -> Fraction:
    """The exact value of an arithmetic expression; CalcError when it is malformed, too long or too large.
    (The arithmetic reward bounds its equations itself, in terms and digits, and passes max_chars=None.)"""
    if not isinstance(expression, str):
        raise CalcError("the expression must be a string")
    if max_chars is not None and len(expression) > max_chars:
        raise CalcError(f"expression longer than {MAX_CHARS} characters")
    parser = _Parser(_tokens(expression))
    if not parser.tokens:
        raise CalcError("empty expression")
    value = parser.expr()
    if parser.peek() is not None:
        raise CalcError(f"unexpected {parser.peek()!r}")
    return value


def show(value: Fraction) -> str:
    """A Fraction as a number a solution would write: 24, -2.5, 3.333333 (non-terminating: 6 decimals)."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den == 1:  # a terminating decimal: exact
        digits = max(_power_of(value.denominator, 2), _power_of(value.denominator, 5))
        text = f"{abs(value.numerator) * 10**digits // value.denominator:0{digits + 1}d}"
        out = f"{text[:-digits]}.{text[-digits:]}"
    else:
        scaled = round(abs(value) * 10**6)
        out = f"{scaled // 10**6}.{scaled % 10**6:06d}".rstrip("0").rstrip(".")
    return ("-" if value < 0 else "") + out


def _power_of(n: int, p: int) -> int:
    k = 0
    while n % p == 0:
        n //= p
        k += 1
    return k


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly and return the result.

    Args:
        expression: Numbers with + - * / ( ), decimals, percents and thousands separators, e.g. "48/2" or
            "(12 + 8) * 1,000".
    """
    try:
        return show(exact(expression))
    except CalcError as e:
        return f"error: {e}"
    except Exception as e:  # never raise into the rollout; never expected
        return f"error: {type(e).__name__}"


# --------------------------------------------------------------------------- registry

TOOLS: dict[str, Callable] = {"calculator": calculator}


def _import_tool(path: str) -> Callable:
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attr:
        raise RecipeError(f"tools: '{path}' is neither a built-in tool ({', '.join(TOOLS)}) nor 'pkg.module:function'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as e:
        raise RecipeError(f"tools: cannot import '{path}': {type(e).__name__}: {one_line(e)}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise RecipeError(f"tools: '{path}': module '{module_name}' has no function '{attr}'")
    return fn


def load_tools(names) -> list[Callable]:
    """Recipe tool names (built-in or 'pkg.mod:fn') -> functions, each checked the way TRL will read it."""
    from transformers.utils import get_json_schema

    if isinstance(names, str):
        names = [names]
    out = []
    for name in names or []:
        if not isinstance(name, str) or not name.strip():
            raise RecipeError(f"tools: each entry must be a tool name, got {name!r}")
        if name in TOOLS:
            fn = TOOLS[name]
        elif ":" in name or "." in name:
            fn = _import_tool(name)
        else:
            raise RecipeError(f"tools: unknown tool '{name}'{suggest(name, TOOLS)}; built-in: {', '.join(TOOLS)}, "
                              f"or give 'pkg.module:function'")
        try:
            get_json_schema(fn)
        except Exception as e:  # no type hints, no docstring, an undocumented argument
            raise RecipeError(f"tools: '{name}' can't be offered to the model: {one_line(e)} (a tool needs type hints "
                              f"and a Google-style docstring with an Args: section)") from None
        out.append(fn)
    names_seen = [fn.__name__ for fn in out]
    if len(set(names_seen)) < len(names_seen):
        raise RecipeError(f"tools: two tools share a name ({', '.join(names_seen)}); the model calls tools by name")
    return out


def prepare_tokenizer(tokenizer, tools):
    """Make `tokenizer` ready for TRL's tool loop, or refuse in one line (before the model loads): its chat
    template must render tool calls and replies (TRL's supports_tool_calling), and parse_response must be able to
    read calls back (a response_template: thinktrain's scratch tokenizers carry theirs, TRL knows Qwen2.5/Qwen3/
    Llama 3.1 and others)."""
    from trl.chat_template_utils import add_response_schema, supports_tool_calling

    from .tokenizer import CHAT_TEMPLATE, RESPONSE_TEMPLATE

    if not tools:
        return tokenizer
    name = getattr(tokenizer, "name_or_path", "") or "the model"
    if not supports_tool_calling(tokenizer):
        raise RecipeError(f"tools: the chat template of {name} cannot render tool calls and tool replies; use a "
                          f"model whose template can (Qwen2.5, Qwen3, a thinktrain scratch model), or remove tools")
    if getattr(tokenizer, "response_template", None) is None and getattr(tokenizer, "response_schema", None) is None:
        if tokenizer.chat_template == CHAT_TEMPLATE:  # a thinktrain tokenizer saved before tools existed
            tokenizer.response_template = RESPONSE_TEMPLATE
        else:
            try:
                add_response_schema(tokenizer)
            except ValueError:
                raise RecipeError(f"tools: TRL cannot read tool calls back from the chat template of {name} (no "
                                  f"response_template, and not a template it knows); set tokenizer.response_template "
                                  f"in the model folder's tokenizer_config.json, or use Qwen2.5/Qwen3") from None
    return tokenizer


def tool_calls(completion) -> int:
    """How many tool calls a completion (a message list) made; 0 for a plain string."""
    if not isinstance(completion, (list, tuple)):
        return 0
    return sum(len(m.get("tool_calls") or []) for m in completion if isinstance(m, dict)
               and m.get("role", "assistant") == "assistant")
