"""Reading a final answer out of a completion and comparing it with the gold answer (used by thinktrain.rewards).

Numbers are compared exactly: a number is read by regex into a canonical form (sign, significant digits, power
of ten, and a denominator for non-terminating fractions), never with float() and never by evaluating text, so
`1,234 == 1234.00 == \\frac{2468}{2}`, `0.1 + 0.2` style rounding cannot happen, and `1e999999` is a tuple, not a
million-digit int. Answers that are not numbers (`\\sqrt{2}`, `\\frac{\\pi}{2}`) go to math_verify.
"""

from __future__ import annotations

import logging
import re
import threading
from math import gcd

from .arithmetic import DECIMAL as _DEC  # a number as written (1,234.5, .5): the calculator reads the same

# A final answer sits at the end: everything here reads at most the last _TAIL characters of a span, which keeps
# a reward's cost bounded on megabyte completions and avoids scanning numbers nobody will use.
_TAIL = 8192
_AFTER_MARKER = 200  # the number after '####' / 'the answer is' / 'A:' must come within this many characters
_MAX_EXP_DIGITS = 9  # exponents up to 10**9 are kept exactly (as an int beside the digits); longer ones: not a number
_MAX_FRACTION_DIGITS = 200  # a/b is reduced with ints only while that stays cheap
_GOLD_CACHE_SIZE = 100_000

# --------------------------------------------------------------------------- number tokens

_SIGNED = rf"[-−]?(?:{_DEC})"
_TOKEN = (
    r"(?<![0-9])(?<![0-9]\.)"  # the start of a number, never the middle of one
    r"(?:(?<![\w)\]}])(?P<neg>[-−]))?"  # unary minus only ("10-5" is not -5); U+2212 too
    r"(?:\\?\$|[€£¥])?[ ]?(?P<neg2>[-−])?"  # -$5, $-5, \$5
    r"(?:"
    rf"\\[dt]?frac[ ]*\{{[ ]*(?P<fn>{_SIGNED})[ ]*\}}[ ]*\{{[ ]*(?P<fd>{_SIGNED})[ ]*\}}"
    rf"|(?P<num>{_DEC})"
    r"(?:[eE](?P<exp>[-+−]?[0-9]+)(?![0-9])"  # 1.5e3
    # or 1.5 \times 10^{3}, 1.5×10^3
    r"|[ ]?(?:\\times|\\cdot|[x×*·])[ ]?10[ ]?(?:\^|\*\*)[ ]?\{?[ ]?(?P<exp2>[-+−]?[0-9]+)[ ]?\}?)?"
    rf"(?:[ ]?/[ ]?(?P<den>{_DEC}))?"  # 3/4
    r")"
    r"(?P<pct>[ ]?\\?%)?"
)
_NUMBER = re.compile(_TOKEN)
# A gold answer must be one number, optionally with $, a unit word or \text{unit} and a final period.
_UNIT = r"(?:\\(?:text|mbox|mathrm)\{[A-Za-z .]{0,40}\}|[A-Za-z][A-Za-z .]{0,40})"
# Matched against stripped text, with single optional spaces: chains like \s*\$?\s* backtrack quadratically.
_LONE_NUMBER = re.compile(rf"(?:\$[ ]?)?{_TOKEN}[ ]?\$?(?:[ ]?{_UNIT})?\.?")
_PARTIAL = re.compile(r"[0-9.,]*")
_A_COLON = re.compile(r"(?:^|\n)[ \t]*A[ \t]*:[ \t]*")
_BOXED = re.compile(r"\\(?:boxed|fbox)[ ]*\{((?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}")


def _dec_key(text: str, exp: int = 0):
    """'1,234.50' -> (False, '12345', -1, 1): negative?, significant digits, power of ten, denominator (1 for
    decimals; > 1 only for fractions without a finite decimal). Zero is (False, '', 0, 1)."""
    neg = text[:1] in "-−"
    if neg:
        text = text[1:]
    whole, _, frac = text.replace(",", "").partition(".")
    digits = (whole + frac).lstrip("0")
    sig = digits.rstrip("0")
    if not sig:
        return (False, "", 0, 1)
    return (neg, sig, exp - len(frac) + len(digits) - len(sig), 1)


def _exp_value(text: str | None) -> int | None:
    if text is None:
        return 0
    text = text.replace("−", "-")
    if len(text.lstrip("+-")) > _MAX_EXP_DIGITS:
        return None
    return int(text)


def _fraction_key(num, den):
    """(dec key) / (dec key) -> canonical key, exact; None when the parts are too large to reduce cheaply."""
    if not den[1]:
        return None  # division by zero
    if not num[1]:
        return (False, "", 0, 1)
    shift = num[2] - den[2]
    if len(num[1]) + len(den[1]) > _MAX_FRACTION_DIGITS or abs(shift) > _MAX_FRACTION_DIGITS:
        return None
    p, q = int(num[1]), int(den[1])
    if shift >= 0:
        p *= 10**shift
    else:
        q *= 10**-shift
    return _rational_key(num[0] != den[0], p, q)


def _rational_key(neg: bool, p: int, q: int):
    g = gcd(p, q)
    p, q = p // g, q // g
    twos = fives = 0
    rest = q
    while rest % 2 == 0:
        rest //= 2
        twos += 1
    while rest % 5 == 0:
        rest //= 5
        fives += 1
    if rest != 1:  # 1/3: no finite decimal; keep the reduced fraction
        return (neg, str(p), 0, q)
    k = max(twos, fives)
    digits = str(p * 10**k // q)
    sig = digits.rstrip("0")
    return (neg, sig, len(digits) - len(sig) - k, 1)


def _token_key(m: re.Match):
    """A _NUMBER match -> (key, percent) or None when it is not a usable number (x/0, huge exponent)."""
    neg, neg2, fn, fd, num, exp, exp2, den, pct = m.groups()
    if fn is not None:
        key = _fraction_key(_dec_key(fn), _dec_key(fd))
    elif exp is None and exp2 is None and den is None and num.isdigit():
        key = _digits_key(num)  # the common case: a plain integer
    else:
        e = _exp_value(exp or exp2)
        if e is None:
            return None
        key = _dec_key(num, e)
        if den is not None:
            key = _fraction_key(key, _dec_key(den))
    if key is None:
        return None
    if (neg is None) != (neg2 is None) and key[1]:  # one minus sign ("-$5" or "$-5"), and not zero
        key = (not key[0],) + key[1:]
    return key, pct is not None


def _variants(found) -> tuple:
    """The values a number may mean: '50%' is 50 (GSM8K writes percentages so) or 0.5."""
    if found is None:
        return ()
    key, pct = found
    if not pct or not key[1]:
        return (key,)
    neg, sig, exp, den = key
    if den == 1:
        return key, (neg, sig, exp - 2, 1)
    return key, _rational_key(neg, int(sig), den * 100)


def _digits_key(text: str):
    """Fast path for a plain ASCII integer such as '1234' (the usual content of <answer>)."""
    digits = text.lstrip("0")
    sig = digits.rstrip("0")
    return (False, sig, len(digits) - len(sig), 1) if sig else (False, "", 0, 1)


# --------------------------------------------------------------------------- where the answer is


def gold_answer(answer) -> str:
    """A gold answer as written: GSM8K's '... #### 1,234' -> '1,234'; text without '####' is returned stripped."""
    return str(answer).rsplit("####", 1)[-1].strip()


def answer_block(text: str) -> str | None:
    """Content of the LAST complete <answer>...</answer> block, or None.

    The last one counts: it is the model's final word (earlier ones are drafts or quoted in the reasoning), and
    one number cannot hedge between several answers.
    """
    end = text.rfind("</answer>")
    if end < 0:
        return None
    start = text.rfind("<answer>", 0, end)
    return None if start < 0 else text[start + 8 : end]


def _clean_latex(s: str) -> str:
    if "\\" in s or "{," in s:  # LaTeX thousands separators and spacing: 1{,}234, 1\,234, 1\!234
        s = s.replace("{,}", ",").replace("\\!", "").replace("\\,", "").replace("\\ ", " ")
        s = s.replace("\\left", "").replace("\\right", "").replace("\\dollar", "$")
    return s


def _last_number(span: str, start: int = 0):
    last = None
    for last in _NUMBER.finditer(span, start):
        pass
    return None if last is None else _token_key(last)


def _first_number(span: str, start: int, anchored: bool = False):
    """The number right after a marker: looked for in the next _AFTER_MARKER characters only."""
    piece = _clean_latex(span[start : start + _AFTER_MARKER])
    m = _NUMBER.match(piece) if anchored else _NUMBER.search(piece)
    return None if m is None else _token_key(m)


def _after_answer_marker(low: str) -> int:
    """Index just after the last 'answer is' or 'answer:' in lowercased text ('The final answer is'), or -1."""
    i, j = low.rfind("answer is"), low.rfind("answer:")
    return -1 if i == j == -1 else (i + 9 if i > j else j + 7)


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in text, or None when there is none or it is not closed.
    Only the last is tried: it is the final answer, and trying earlier ones would scan the text once per box."""
    b = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    m = _BOXED.match(text, b) if b >= 0 else None
    return None if m is None else m.group(1)


def _marked(tail: str):
    """The number a final-answer marker points at, by priority: \\boxed{}, ####, 'the answer is', 'A:'."""
    boxed = _boxed(tail)
    if boxed is not None:
        return True, _last_number(_clean_latex(boxed))
    h = tail.rfind("####")
    if h >= 0:
        found = _first_number(tail, h + 4)
        if found is not None:
            return True, found
    a = _after_answer_marker(tail.lower())
    if a >= 0:
        found = _first_number(tail, a)
        if found is not None:
            return True, found
    c = tail.rfind("A:")
    if c >= 0:
        m = _A_COLON.search(tail, max(0, tail.rfind("\n", 0, c)))
        if m is not None:
            found = _first_number(tail, m.end(), anchored=True)
            if found is not None:
                return True, found
    return False, None


def final_number(text: str):
    """A completion's final numeric answer as (key, percent), or None.

    Where: the last <answer> block if there is one, else the whole text; inside it, the last \\boxed{}, else the
    number after the last '####', 'the answer is'/'answer:' or 'A:', else the last number.
    """
    block = answer_block(text)
    span = text if block is None else block
    if len(span) > _TAIL:
        span = span[-_TAIL:]
        span = span[_PARTIAL.match(span).end() :]  # drop a number cut in half by the slice
    hit, found = _marked(span)
    return found if hit else _last_number(_clean_latex(span))


# --------------------------------------------------------------------------- gold answers


def gold_span(text: str) -> str:
    """Where a gold solution states its answer: an <answer> block, \\boxed{}, after '####' or 'the answer is'."""
    block = answer_block(text)
    if block is not None:
        text = block
    boxed = _boxed(text)
    if boxed is not None:
        return boxed
    h = text.rfind("####")
    if h >= 0:
        return text[h + 4 :]
    a = _after_answer_marker(text.lower())
    if a >= 0:
        return text[a:].lstrip(" :")
    return text


_gold_cache: dict = {}


def parse_gold(solution) -> tuple | None:
    """Gold -> ('num', {accepted keys}) or ('sym', math_verify parse) or None when it cannot be parsed (skip)."""
    if isinstance(solution, (int, float)) and not isinstance(solution, bool):
        try:
            solution = str(solution)  # an int/float column; str() of a >4300-digit int raises
        except ValueError:
            return None
    if not isinstance(solution, str):
        return None
    hit = _gold_cache.get(solution, False)
    if hit is not False:
        return hit
    span = gold_span(solution)
    m = _LONE_NUMBER.fullmatch(_clean_latex(span).strip()) if len(span) <= _TAIL else None
    if m is not None:  # a number; 1/0 or 1e99999999999 is a broken one, not a symbolic answer
        found = _token_key(m)
        out = ("num", frozenset(_variants(found))) if found else None
    else:
        parsed = symbolic_parse(span.strip())
        out = ("sym", parsed) if parsed else None
    if len(_gold_cache) >= _GOLD_CACHE_SIZE:
        _gold_cache.clear()
    _gold_cache[solution] = out
    return out


def grade(text: str, solution) -> float | None:
    """1.0 if the completion's final answer equals the gold answer, 0.0 if not, None if the gold is unparsable."""
    gold = parse_gold(solution)
    if gold is None:
        return None
    kind, accepted = gold
    if kind == "num":
        end = text.rfind("</answer>")
        if end >= 0:  # fast path: <answer>1234</answer>
            start = text.rfind("<answer>", 0, end)
            if start >= 0:
                content = text[start + 8 : end].strip()
                if content.isdigit() and content.isascii():
                    return 1.0 if _digits_key(content) in accepted else 0.0
        for key in _variants(final_number(text)):
            if key in accepted:
                return 1.0
        return 0.0
    candidate = _symbolic_candidate(text)
    return 1.0 if candidate and symbolic_equal(accepted, candidate) else 0.0


def _symbolic_candidate(text: str) -> str | None:
    """The short piece of a completion that math_verify gets: the <answer> block, else the last \\boxed{},
    else what follows 'the answer is'/'answer:' on its line, else a tail that holds $...$ math."""
    block = answer_block(text)
    if block is not None:
        return block
    tail = text[-_TAIL:]
    boxed = _boxed(tail)
    if boxed is not None:
        return boxed
    a = _after_answer_marker(tail.lower())
    if a >= 0:
        return tail[a:].split("\n", 1)[0].strip(" :.")
    tail = tail[-_MAX_PREDICTION_LEN:]
    return tail if "$" in tail else None


# --------------------------------------------------------------------------- math_verify, for non-numbers

# Sympy can hang on towers (10^{10^{10}}), huge factorials and long digit strings, and math_verify's timeouts use
# SIGALRM, which only exists in the main thread. So such text never reaches it, and the timeouts are used where
# they work (main thread) and switched off elsewhere (TRL calls rewards from other threads in async mode).
_UNSAFE = re.compile(r"\^[ ]*\{?[^}^]{0,40}\^|\*\*|[0-9]{40}|[0-9]{3,}[ ]*!|\\(?:prod|sum|int|lim)|[eE][+-]?[0-9]{4}")
_MAX_GOLD_LEN = 1000  # parsed once per gold (cached)
_MAX_PREDICTION_LEN = 200  # math_verify costs ~0.1-10 ms per 100 characters of odd text: keep its input short
_WORD = re.compile(r"[A-Za-z]{2,}")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_JUNK = re.compile(r"([-+*/=,.^_!])\1{3,}|[0-9]\.[0-9]+\.[0-9]")  # ----, ...., 1.2.3: no expression looks so


def _timeouts() -> tuple[int | None, int | None]:
    if threading.current_thread() is threading.main_thread():
        return 5, 5
    return None, None


for _name in ("math_verify.parser", "math_verify.grader", "math_verify.utils"):
    logging.getLogger(_name).setLevel(logging.ERROR)  # its "timeout is disabled" warning, once per process


def _safe_for_sympy(text: str, limit: int) -> bool:
    if not text or len(text) > limit or _UNSAFE.search(text) or _JUNK.search(text) or len(text.split()) > 40:
        return False
    # Deep or unbalanced brackets send latex2sympy's parser into seconds of backtracking ("((((((...").
    for opening, closing in (("(", ")"), ("{", "}"), ("[", "]")):
        n = text.count(opening)
        if n > 12 or (opening == "{" and n != text.count(closing)):
            return False
    return True


def symbolic_parse(text: str, limit: int = _MAX_GOLD_LEN) -> list:
    if not _safe_for_sympy(text, limit):
        return []
    try:
        from math_verify import parse

        parsing_timeout, _ = _timeouts()
        if "$" not in text and "\\boxed" not in text and not _WORD.search(_LATEX_COMMAND.sub("", text)):
            # Bare math (x^2 + 1, \frac{\pi}{2}) is read as one LaTeX expression: math_verify needs delimiters,
            # and without them picks out the last number. Text with words is left to its own extraction, so that
            # "hello" does not become a product of symbols.
            out = parse(f"${text}$", parsing_timeout=parsing_timeout)
            if out:
                return out
        return parse(text, parsing_timeout=parsing_timeout)
    except Exception:
        return []


def symbolic_equal(gold_parsed: list, text: str) -> bool:
    pred = symbolic_parse(text.strip(), _MAX_PREDICTION_LEN)
    if not pred:
        return False
    try:
        from math_verify import verify

        _, verify_timeout = _timeouts()
        return bool(verify(gold_parsed, pred, timeout_seconds=verify_timeout))
    except Exception:
        return False


__all__ = ["gold_answer", "answer_block", "final_number", "gold_span", "parse_gold", "grade", "symbolic_parse", "symbolic_equal"]
