"""Exact arithmetic on the expressions solutions write: the engine of the `calculator` tool and the `arithmetic`
reward (both must agree on what `48/2` is, so there is one engine).

A small recursive-descent parser over Fractions, never `eval`, bounded in input size, nesting and number size, so
no string a model writes can make it slow, raise anything but CalcError, or run code. A leaf: it imports nothing
of thinktrain's, so tools.py, rewards.py and answers.py can all import it.
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_CHARS = 200  # an arithmetic step a solution writes is far shorter; a longer string is refused at once
MAX_DEPTH = 30  # parentheses
MAX_BITS = 256  # numerator/denominator size of any value (~77 digits): far past any word problem
MAX_EXPONENT = 64

# A number as written: 1,234.5 (commas only as thousands separators), 12, 12.5, .5. Digits are ASCII only:
# str.isdigit()/int() also accept '١٢٣' and other scripts, which no gold answer uses. The calculator's tokenizer
# and answers.py's number reader both use it; rewards._NUM differs on purpose (bounded digit counts).
DECIMAL = r"(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+"


class CalcError(ValueError):
    """A malformed or too-large expression (the calculator returns its message)."""


# numbers: a DECIMAL, optionally after $; operators + - * / × ÷ x ^ ** ( ) and a postfix %
_TOKENS = re.compile(rf"\s*(?:(?P<num>\$?(?:{DECIMAL}))|(?P<op>\*\*|[-+*/×÷x^()%−]))")
_OPERATORS = {"×": "*", "x": "*", "÷": "/", "−": "-", "^": "**"}


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKENS.match(text, pos)
        if not m:
            raise CalcError(f"unexpected {text[pos:].strip()[:1]!r}")
        out.append(m.group("num") or _OPERATORS.get(m.group("op"), m.group("op")))
        pos = m.end()
    return out


def number(token: str) -> Fraction:
    """A number token ('$1,234.5', '.5') -> its exact value."""
    return Fraction(token.replace("$", "").replace(",", ""))


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
            return number(token)
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
