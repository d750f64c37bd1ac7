"""Deterministic GSM8K-style word problems, so a tiny model can learn to reason offline (`synthetic:gsm8k`).

Problems come in GSM8K's own shape, {"question", "answer"}, so the same code trains on both: the answer is a
worked solution with one computation `a op b = <<a op b=c>>c` per line (GSM8K's calculator annotation, which
SFT strips or, with tools, turns into a calculator call) and `#### N` last.
`steps` and `template` ride along for per-difficulty evaluation. The world is a textbook's: exposition (pretraining
prose, {"text"}: facts, methods, and solved problems from the worked pool only), worked (a few hundred worked
solutions, for SFT), validation (more worked solutions, kept aside to choose SFT's steps), practice (many exercises
whose rows carry only the answer key, `#### N`: GRPO and rft), test (held-out, worked, only its final answers graded).
No trainer can see a worked solution of a practice or test problem. See docs/synthetic.md.

    python -m thinktrain.synthetic --spec "gsm8k?max_steps=4" --split worked --n 3
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Callable, NamedTuple

if TYPE_CHECKING:
    import datasets

SPLITS = ("exposition", "worked", "validation", "practice", "test")
# A few minutes of CPU pipeline: ~20k pretraining passages, 500 worked solutions (scarce, as written solutions are),
# 200 more kept aside for validation, 4k exercises with answers only, 500 held out.
DEFAULT_SIZES = {"exposition": 20000, "worked": 500, "validation": 200, "practice": 4000, "test": 500}
NAMES = ("gsm8k",)


@dataclass(frozen=True)
class Difficulty:
    """max_steps: most computation lines in a solution (1-4; step counts are drawn uniformly up to it).
    max_mul: largest factor of a `*` and largest divisor and quotient of a `/` (the constant 60 and percent
    divisors aside). max_add: largest number that is only added or subtracted (gifts, losses, leftovers)."""

    max_steps: int = 3
    max_mul: int = 10
    max_add: int = 20

    def __post_init__(self):
        for name, lo, hi in (("max_steps", 1, 4), ("max_mul", 3, 100), ("max_add", 4, 1000)):
            value = getattr(self, name)
            if type(value) is not int or not lo <= value <= hi:
                raise ValueError(f"{name}={value!r} is out of range: use an integer from {lo} to {hi}")


# --------------------------------------------------------------------------- vocabulary

SHE = ("Ana", "Mia", "Lily", "Emma", "Zoe", "Sara", "Nina", "Kim", "Lucy", "Maria")
HE = ("Tom", "Sam", "Ben", "Leo", "Max", "Omar", "Raj", "Jack", "Luis", "Dan")
THINGS = ("apple", "pencil", "sticker", "marble", "card", "shell", "crayon", "bead", "stamp", "egg")
FOODS = ("cookie", "muffin", "cupcake", "roll", "pie", "bun")
BOXES = ("bag", "box", "pack", "jar", "basket")
GOODS = ("pen", "book", "notebook", "ball", "cup", "hat", "kite", "toy car", "lamp", "shirt")
FLOWERS = ("tulip", "rose", "sunflower", "carrot", "onion")
HOBBIES = ("practices piano", "reads", "plays chess", "paints", "swims", "studies")
MOVES = ("walks", "runs", "bikes", "rows")
BILLS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
PERCENTS = {10: 10, 20: 5, 25: 4, 50: 2}  # percent -> divisor: p% of a multiple of it is whole, in one step


class Person(NamedTuple):
    name: str
    he: str
    him: str
    his: str

    @property
    def He(self) -> str:
        return self.he.capitalize()


def _people(r: random.Random, k: int = 1) -> list[Person]:
    return [Person(n, "she", "her", "her") if n in SHE else Person(n, "he", "him", "his")
            for n in r.sample(SHE + HE, k)]


def _pl(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "ch")) else "s")


def _n(k: int, word: str) -> str:
    """'3 boxes', '1 hour': counts that read naturally."""
    return f"{k} {word if k == 1 else _pl(word)}"


def _usd(k: int) -> str:
    return _n(k, "dollar")


def _mul(r: random.Random, d: Difficulty) -> int:
    return r.randint(2, d.max_mul)


def _add(r: random.Random, d: Difficulty, lo: int = 2) -> int:
    return r.randint(lo, d.max_add)


def _pair(r: random.Random, lo: int, hi: int, m: int) -> tuple[int, int] | None:
    """(k, q) with 2 <= k, q <= m and lo <= k*q <= hi, or None: a total that divides into k equal parts."""
    for _ in range(20):
        k = r.randint(2, m)
        qlo, qhi = max(2, -(-lo // k)), min(m, hi // k)
        if qlo <= qhi:
            return k, r.randint(qlo, qhi)
    return None


# --------------------------------------------------------------------------- templates
# Each returns (question, solution lines, answer): one line per step, each with exactly one `a op b = c`.


class Template(NamedTuple):
    name: str
    steps: int
    rule: str  # the method in words: exposition states it before a worked example
    make: Callable[[random.Random, Difficulty], tuple[str, list[str], int]]


TEMPLATES: dict[str, Template] = {}


def template(steps: int, rule: str):
    def register(fn):
        TEMPLATES[fn.__name__] = Template(fn.__name__, steps, rule, fn)
        return fn
    return register


@template(1, "When there are equal groups, multiply the number of groups by the size of each group.")
def groups(r, d):
    (p,), box, t, a, b = _people(r), r.choice(BOXES), r.choice(THINGS), _mul(r, d), _mul(r, d)
    return (f"{p.name} buys {_n(a, box)} of {_pl(t)}. Each {box} holds {_n(b, t)}. "
            f"How many {_pl(t)} does {p.name} have?",
            [f"{p.name} has {a} * {b} = {_n(a * b, t)}."], a * b)


@template(1, "When someone gets more, add the new amount to what they had.")
def more(r, d):
    (p, q), t, a, b = _people(r, 2), r.choice(THINGS), _add(r, d), _add(r, d)
    return (f"{p.name} has {_n(a, t)}. {q.name} gives {p.him} {b} more. How many {_pl(t)} does {p.name} have now?",
            [f"{p.name} now has {a} + {b} = {_n(a + b, t)}."], a + b)


@template(1, "When someone gives some away, subtract what they gave from what they had.")
def give_away(r, d):
    (p, q), t, a = _people(r, 2), r.choice(THINGS), _add(r, d, lo=4)
    b = r.randint(2, a - 2)
    return (f"{p.name} has {_n(a, t)} and gives {b} to {q.name}. How many {_pl(t)} does {p.name} have left?",
            [f"{p.name} has {a} - {b} = {_n(a - b, t)} left."], a - b)


@template(1, "To share equally, divide the total by the number of people sharing.")
def share(r, d):
    (p,), t, k, q = _people(r), r.choice(THINGS), _mul(r, d), _mul(r, d)
    return (f"{p.name} shares {_n(k * q, t)} equally among {k} friends. How many {_pl(t)} does each friend get?",
            [f"Each friend gets {k * q} / {k} = {_n(q, t)}."], q)


@template(2, "To find the change, multiply to get the cost, then subtract the cost from the money paid.")
def change(r, d):
    (p,), g, a, price = _people(r), r.choice(GOODS), _mul(r, d), _mul(r, d)
    cost = a * price
    bill = r.choice([b for b in BILLS if b >= cost + 2][:2])
    return (f"{p.name} buys {_n(a, g)} at ${price} each and pays with a ${bill} bill. "
            f"How much change does {p.he} get?",
            [f"The {_pl(g)} cost {a} * {price} = {_usd(cost)}.",
             f"The change is {bill} - {cost} = {_usd(bill - cost)}."], bill - cost)


@template(2, "To take a percent off a price, find that percent of the price by dividing, then subtract it.")
def discount(r, d):
    (p,), g, off = _people(r), r.choice(GOODS), _mul(r, d)
    pct = r.choice([k for k, v in PERCENTS.items() if v <= d.max_mul])
    price = off * PERCENTS[pct]
    return (f"A {g} costs ${price}. Today it is {pct}% off. How much does {p.name} pay for it?",
            [f"{pct}% of {price} is {price} / {PERCENTS[pct]} = {_usd(off)}.",
             f"{p.name} pays {price} - {off} = {_usd(price - off)}."], price - off)


@template(2, "Distance is speed times time: add up the hours first, then multiply them by the speed.")
def trip(r, d):
    (p,), move, speed, hours = _people(r), r.choice(MOVES), _mul(r, d), _mul(r, d)
    h1 = r.randint(1, hours - 1)
    return (f"{p.name} {move} {speed} km each hour. {p.He} {move} for {_n(h1, 'hour')} in the morning and "
            f"{_n(hours - h1, 'hour')} in the evening. How many km does {p.he} cover?",
            [f"{p.name} {move} for {h1} + {hours - h1} = {_n(hours, 'hour')}.",
             f"{p.He} covers {hours} * {speed} = {hours * speed} km."], hours * speed)


@template(2, "First subtract what was used, then divide what is left into equal parts.")
def bake(r, d):
    (p,), f, k, q, eaten = _people(r), r.choice(FOODS), _mul(r, d), _mul(r, d), _add(r, d, lo=1)
    return (f"{p.name} bakes {_n(k * q + eaten, f)} and eats {eaten}. {p.He} packs the rest equally into {k} "
            f"boxes. How many {_pl(f)} go in each box?",
            [f"{p.name} has {k * q + eaten} - {eaten} = {_n(k * q, f)} left.",
             f"Each box gets {k * q} / {k} = {_n(q, f)}."], q)


@template(2, "An hour has 60 minutes: multiply the hours by 60, then add the extra minutes.")
def minutes(r, d):
    (p,), hobby, h, m = _people(r), r.choice(HOBBIES), _mul(r, d), 5 * r.randint(1, 11)
    return (f"{p.name} {hobby} for {_n(h, 'hour')} and {m} minutes. How many minutes is that in all?",
            [f"{_n(h, 'hour')} is {h} * 60 = {h * 60} minutes.",
             f"In all that is {h * 60} + {m} = {h * 60 + m} minutes."], h * 60 + m)


@template(3, "To find a total cost, multiply each price by how many were bought, then add the costs.")
def shopping(r, d):
    (p,), (g1, g2), a, x, b, y = _people(r), r.sample(GOODS, 2), _mul(r, d), _mul(r, d), _mul(r, d), _mul(r, d)
    return (f"{p.name} buys {_n(a, g1)} at ${x} each and {_n(b, g2)} at ${y} each. How much does {p.he} spend?",
            [f"The {_pl(g1)} cost {a} * {x} = {_usd(a * x)}.", f"The {_pl(g2)} cost {b} * {y} = {_usd(b * y)}.",
             f"{p.name} spends {a * x} + {b * y} = {_usd(a * x + b * y)}."], a * x + b * y)


@template(3, "Multiply to find the savings, subtract what is spent, then add what is received.")
def savings(r, d):
    (p, q), g, a, w = _people(r, 2), r.choice(GOODS), _mul(r, d), _mul(r, d)
    spent, gift = r.randint(1, min(d.max_add, a * w - 2)), _add(r, d, lo=1)
    left = a * w - spent
    return (f"{p.name} saves ${a} a week for {w} weeks. {p.He} spends ${spent} on a {g}, then {q.name} gives "
            f"{p.him} ${gift}. How much money does {p.name} have now?",
            [f"{p.name} saves {a} * {w} = {_usd(a * w)}.",
             f"After the {g}, {p.he} has {a * w} - {spent} = {_usd(left)}.",
             f"Now {p.he} has {left} + {gift} = {_usd(left + gift)}."], left + gift)


@template(3, "Multiply to find how many there are, subtract the ones lost, then divide the rest into equal groups.")
def garden(r, d):
    (p,), f = _people(r), r.choice(FLOWERS)
    while True:  # redraw until the survivors tie into equal bunches
        rows, per = _mul(r, d), _mul(r, d)
        grown = rows * per
        if pair := _pair(r, grown - d.max_add, grown - 1, d.max_mul):
            break
    k, q = pair
    return (f"{p.name} plants {rows} rows of {per} {_pl(f)}. Rabbits eat {grown - k * q} of them. {p.He} ties "
            f"the rest into {k} equal bunches. How many {_pl(f)} are in each bunch?",
            [f"{p.name} plants {rows} * {per} = {_n(grown, f)}.",
             f"{grown} - {grown - k * q} = {_n(k * q, f)} are left.", f"Each bunch has {k * q} / {k} = {_n(q, f)}."], q)


@template(3, "Work through the ages in order: add for older, multiply for times as old, subtract to compare.")
def ages(r, d):
    (p,), sister, times = _people(r), r.randint(3, d.max_mul), _mul(r, d)
    older = r.randint(1, sister - 2)
    age, aunt = sister - older, times * sister
    return (f"{p.name} is {age} years old, and {p.his} sister is {_n(older, 'year')} older. Their aunt is {times} "
            f"times as old as the sister. How many years older than {p.name} is the aunt?",
            [f"The sister is {age} + {older} = {sister} years old.",
             f"The aunt is {times} * {sister} = {aunt} years old.",
             f"The aunt is {aunt} - {age} = {aunt - age} years older."], aunt - age)


@template(4, "Multiply each daily amount by its days, add the parts, then subtract the sum from the whole.")
def pages(r, d):
    (p,), a, x, b, y, left = _people(r), _mul(r, d), _mul(r, d), _mul(r, d), _mul(r, d), _add(r, d)
    read = a * x + b * y
    return (f"A book has {read + left} pages. {p.name} reads {a} pages a day for {x} days, then {b} pages a day "
            f"for {y} days. How many pages are left?",
            [f"First {p.he} reads {a} * {x} = {a * x} pages.", f"Then {p.he} reads {b} * {y} = {b * y} pages.",
             f"{p.He} reads {a * x} + {b * y} = {read} pages in all.",
             f"{read + left} - {read} = {left} pages are left."],
            left)


@template(4, "Multiply for each cost, add them for the total, then subtract the total from the money paid.")
def change2(r, d):
    (p,), (g1, g2), a, x, b, y = _people(r), r.sample(GOODS, 2), _mul(r, d), _mul(r, d), _mul(r, d), _mul(r, d)
    cost = a * x + b * y
    bill = r.choice([v for v in BILLS if v >= cost + 2][:2])
    return (f"{p.name} buys {_n(a, g1)} at ${x} each and {_n(b, g2)} at ${y} each. {p.He} pays with a "
            f"${bill} bill. How much change does {p.he} get?",
            [f"The {_pl(g1)} cost {a} * {x} = {_usd(a * x)}.", f"The {_pl(g2)} cost {b} * {y} = {_usd(b * y)}.",
             f"Together they cost {a * x} + {b * y} = {_usd(cost)}.",
             f"The change is {bill} - {cost} = {_usd(bill - cost)}."], bill - cost)


@template(4, "Multiply and add to find the total, subtract the ones lost, then divide the rest equally.")
def party(r, d):
    (p,) = _people(r)
    while True:  # redraw until the rest shares out evenly
        packs, per, extra = _mul(r, d), _mul(r, d), _add(r, d, lo=1)
        have = packs * per + extra
        if pair := _pair(r, have - d.max_add, have - 1, d.max_mul):
            break
    k, q = pair
    return (f"{p.name} buys {packs} packs of {per} balloons and {extra} more balloons. {p.He} loses "
            f"{have - k * q}. {p.He} shares the rest equally among {k} kids. How many balloons does each kid get?",
            [f"The packs hold {packs} * {per} = {packs * per} balloons.",
             f"{p.He} has {packs * per} + {extra} = {have} balloons.",
             f"{p.He} keeps {have} - {have - k * q} = {k * q} balloons.",
             f"Each kid gets {k * q} / {k} = {_n(q, 'balloon')}."], q)


BY_STEPS = {s: [t for t in TEMPLATES.values() if t.steps == s] for s in range(1, 5)}


# --------------------------------------------------------------------------- splits


def _problem(r: random.Random, d: Difficulty) -> tuple[Template, str, list[str], int]:
    t = r.choice(BY_STEPS[r.randint(1, d.max_steps)])  # steps first, so each difficulty is equally common
    return (t, *t.make(r, d))


def _bucket(question: str) -> str:
    """The one split of test/validation/worked/practice a question may appear in, fixed by its text alone: splits
    are disjoint by construction, and each depends only on its own seed stream and size, never on the others'.
    (test 10%, practice 30%, and the worked pool's 60% split 1:9 into validation and worked.)"""
    h = int.from_bytes(hashlib.blake2b(question.encode(), digest_size=8).digest(), "big")
    if h % 10 == 0:
        return "test"
    if h % 10 >= 7:
        return "practice"
    return "validation" if h // 10 % 10 == 0 else "worked"


def _fact(r: random.Random, d: Difficulty) -> str:
    (a, b), x, y = r.sample(range(2, d.max_mul + 1), 2), _add(r, d), _add(r, d)
    pct = r.choice([k for k, v in PERCENTS.items() if v <= d.max_mul])
    facts = (
        lambda: f"The {a} times table: " + ", ".join(f"{a} * {i} = {a * i}" for i in range(1, 11)) + ".",
        lambda: f"Division undoes multiplication: {a} * {b} = {a * b}, so {a * b} / {b} = {a} and {a * b} / {a} = {b}.",
        lambda: f"Subtraction undoes addition: {x} + {y} = {x + y}, so {x + y} - {y} = {x} and {x + y} - {x} = {y}.",
        lambda: f"{pct}% means {pct} out of every 100, so to find {pct}% of a number, divide it by {PERCENTS[pct]}. "
                f"For example, {pct}% of {a * PERCENTS[pct]} is {a * PERCENTS[pct]} / {PERCENTS[pct]} = {a}.",
        lambda: f"An hour has 60 minutes, so {_n(a, 'hour')} is {a} * 60 = {a * 60} minutes.",
    )
    return r.choice(facts)()


def _exposition(r: random.Random, d: Difficulty) -> str | None:
    """A textbook passage: an arithmetic fact, a method then an example, or a worked problem as prose. Solved
    problems come from the worked pool only: an exercise's (practice) or an exam's (test, validation) solution is
    never written anywhere."""
    kind = r.random()
    if kind < 0.2:
        return _fact(r, d)
    t, question, lines, answer = _problem(r, d)
    if _bucket(question) != "worked":
        return None
    if kind < 0.55:
        return f"{t.rule} For example: {question} {' '.join(lines)} The answer is {answer}."
    return f"Question: {question}\nAnswer: {' '.join(lines)} The answer is {answer}."


def generate(split: str, n: int, seed: int = 0, difficulty: Difficulty = Difficulty()) -> list[dict]:
    """n rows of one split. Deterministic, and a prefix of any longer run with the same arguments."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")
    # A str seed goes through sha512, not hash(): identical under any PYTHONHASHSEED.
    r = random.Random(f"thinktrain.synthetic/{seed}/{split}")
    rows, seen, misses = [], set(), 0
    while len(rows) < n:
        if split == "exposition":
            if text := _exposition(r, difficulty):
                rows.append({"text": text})
            continue
        t, question, lines, answer = _problem(r, difficulty)
        if _bucket(question) != split or question in seen:
            misses += 1
            if misses > 5000:  # the problem space is (nearly) used up
                raise ValueError(f"only {len(rows)} distinct '{split}' problems exist at {difficulty}; "
                                 f"ask for fewer or raise max_mul/max_add/max_steps")
            continue
        misses = 0
        seen.add(question)
        solution = "" if split == "practice" else "\n".join(map(annotate, lines)) + "\n"  # practice: the key only
        rows.append({"question": question, "answer": f"{solution}#### {answer}",
                     "steps": len(lines), "template": t.name})
    return rows


_STEP = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def annotate(line: str) -> str:
    """GSM8K's calculator annotation on a solution line: `3 * 4 = 12 apples` -> `3 * 4 = <<3*4=12>>12 apples`.
    Stripped (data.worked_steps) the line is what it was; with `tools: [calculator]` SFT makes it a call."""
    return _STEP.sub(r"\1 \2 \3 = <<\1\2\3=\4>>\4", line, count=1)


def parse_spec(spec: str) -> tuple[int, Difficulty, dict[str, int]]:
    """'gsm8k?seed=1&max_steps=4&worked=2000' -> (seed, Difficulty, sizes per split)."""
    name, _, query = spec.partition("?")
    if name not in NAMES:
        raise ValueError(f"unknown synthetic dataset '{name}'; valid: {', '.join(NAMES)}")
    valid = ["seed", *(f.name for f in fields(Difficulty)), *SPLITS]
    opts: dict[str, int] = {}
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key not in valid:
            raise ValueError(f"unknown option '{key}' in synthetic spec '{spec}'; valid: {', '.join(valid)}")
        if key in opts:
            raise ValueError(f"option '{key}' is given twice in synthetic spec '{spec}'")
        try:
            opts[key] = int(value)
        except ValueError:
            raise ValueError(f"option '{key}' needs an integer, got '{value}'") from None
        if key in SPLITS and opts[key] < 0:
            raise ValueError(f"option '{key}' is a split size and can't be negative, got {value}")
    sizes = {s: opts.pop(s, DEFAULT_SIZES[s]) for s in SPLITS}
    seed = opts.pop("seed", 0)
    return seed, Difficulty(**opts), sizes


def load(spec: str = "gsm8k") -> datasets.DatasetDict:
    """`synthetic:SPEC` in a recipe's dataset_name -> datasets.DatasetDict with the five splits."""
    from datasets import Dataset, DatasetDict

    seed, difficulty, sizes = parse_spec(spec)
    out = {}
    for split, n in sizes.items():
        rows = generate(split, n, seed, difficulty)
        columns = ["text"] if split == "exposition" else ["question", "answer", "steps", "template"]
        out[split] = Dataset.from_dict({c: [row[c] for row in rows] for c in columns})
    return DatasetDict(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m thinktrain.synthetic", description="Print a few synthetic problems.")
    ap.add_argument("--spec", default="gsm8k", help="what follows 'synthetic:' in a recipe, e.g. 'gsm8k?max_steps=4'")
    ap.add_argument("--split", default="test", choices=SPLITS)
    ap.add_argument("--n", type=int, default=5)
    args = ap.parse_args(argv)
    try:
        seed, difficulty, _ = parse_spec(args.spec)
    except ValueError as e:
        ap.error(str(e))
    for row in generate(args.split, args.n, seed, difficulty):
        print(row.get("text") or f"[{row['template']}, {_n(row['steps'], 'step')}]\n{row['question']}\n{row['answer']}",
              end="\n\n")


if __name__ == "__main__":
    main()
