"""Reward functions: exact values for every reward and edge case, the registry, and fuzzing for robustness/speed."""

import math
import pickle
import random
import re
import sys
import threading
import time
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thinktrain import answers, rewards
from thinktrain.configs import RewardArguments
from thinktrain.errors import RecipeError
from thinktrain.rewards import (
    REWARDS,
    UnknownRewardError,
    accuracy_reward,
    arithmetic_reward,
    resolve_reward,
    cosine_reward,
    format_reward,
    format_strict_reward,
    length_reward,
    load_rewards,
    overlong_reward,
    repetition_reward,
    tag_count_reward,
    template_prefills_think,
)

GOOD = "<think>\nJanet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\n</think>\n<answer>\n18\n</answer>"


def acc(completion, gold):
    return accuracy_reward([completion], solution=[gold])[0]


def msg(text):
    return [{"role": "assistant", "content": text}]


@pytest.fixture(autouse=True)
def no_swallowed_errors():
    """The rewards' safety net turns an internal exception into a neutral score; none may happen in tests."""
    before = rewards.errors
    yield
    assert rewards.errors == before, "a reward raised internally (see the log)"


# --------------------------------------------------------------------------- accuracy: numbers


@pytest.mark.parametrize("answer, gold, expected", [
    # thousands separators, currency, decimals, words and sentences around the number
    ("1234", "1,234", 1.0), ("1,234", "1234", 1.0), ("$1,234", "1234", 1.0), ("\\$1,234", "1,234", 1.0),
    ("1234.00", "1234", 1.0), ("1234.", "1234", 1.0), ("\\boxed{1234}", "1234", 1.0), ("\\boxed{1,234}", "1234", 1.0),
    ("1234 dollars", "1234", 1.0), ("The answer is 1234.", "1234", 1.0), ("The answer is $1,234.00.", "1234", 1.0),
    ("$1234$", "1234", 1.0), ("1{,}234", "1234", 1.0), ("1\\,234", "1234", 1.0), ("\\text{1234 apples}", "1234", 1.0),
    ("1235", "1234", 0.0), ("123", "1234", 0.0), ("12340", "1234", 0.0), ("1,2345", "12345", 0.0),
    ("18.5", "18", 0.0), ("18.00", "18", 1.0), ("018", "18", 1.0), ("1.8e1", "18", 1.0),
    # negatives, the unicode minus, signs with currency; a hyphen between numbers is not a sign
    ("-5", "-5", 1.0), ("−5", "-5", 1.0), ("-5", "−5", 1.0), ("5", "-5", 0.0), ("-5", "5", 0.0),
    ("-$5", "-5", 1.0), ("$-5", "-5", 1.0), ("10-5", "5", 1.0), ("-0", "0", 1.0),
    # fractions, \frac, decimals of fractions, percentages
    ("3/4", "0.75", 1.0), ("\\frac{3}{4}", "3/4", 1.0), ("\\dfrac{3}{4}", "0.75", 1.0),
    ("\\tfrac{-3}{4}", "-0.75", 1.0),
    ("-\\frac{3}{4}", "-3/4", 1.0), ("\\frac{6}{8}", "\\frac{3}{4}", 1.0), ("1/3", "\\frac{1}{3}", 1.0),
    ("0.333", "1/3", 0.0), ("0.75", "\\frac{3}{4}", 1.0), ("\\frac{1}{0}", "1", 0.0), (".5", "1/2", 1.0),
    ("50%", "50", 1.0), ("50%", "0.5", 1.0), ("0.5", "50%", 1.0), ("50", "50%", 1.0), ("50\\%", "50", 1.0),
    ("5%", "50", 0.0),
    # scientific notation, exactly: no float rounding, no huge ints
    ("1.5e3", "1500", 1.0), ("1.5E+3", "1,500", 1.0), ("1.5 \\times 10^{3}", "1500", 1.0), ("15e-1", "1.5", 1.0),
    ("1.5×10^3", "1500", 1.0), ("1e999999", "1e999999", 1.0), ("1e999999", "1e999998", 0.0), ("1e-999999", "0", 0.0),
    ("0.1", "1e-1", 1.0), ("1e99999999999", "1", 0.0),
    # huge integers compare digit by digit
    ("9" * 5000, "9" * 5000, 1.0), ("9" * 5000, "9" * 4999 + "8", 0.0), (f"{10**40:,}", str(10**40), 1.0),
    ("123456789012345678901234567890", "123456789012345678901234567891", 0.0),
    # several numbers: the last counts (one number, no hedging); unicode digits are not numbers
    ("17 or 18", "18", 1.0), ("18 or 17", "18", 0.0), ("١٨", "18", 0.0), ("", "18", 0.0), ("eighteen", "18", 0.0),
])
def test_accuracy_numbers_in_answer_block(answer, gold, expected):
    assert acc(f"<think>\nworking 7 + 11\n</think>\n<answer>\n{answer}\n</answer>", gold) == expected
    assert acc(f"<answer>{answer}</answer>", gold) == expected


@pytest.mark.parametrize("text, gold, expected", [
    ("So she makes 9 * 2 = $18 every day.", "18", 1.0),  # last number
    ("She makes $18.\n#### 18\nQuestion: 5 more?", "18", 1.0),  # '####' beats the later number
    ("The answer is 18. Check: 18 * 2 = 36.", "18", 1.0),  # 'the answer is' beats the last number
    ("Final answer: 18 (from 9 * 2)", "18", 1.0),
    ("Q: eggs?\nA: 18\nbecause 9 * 2", "18", 1.0),
    ("I think \\boxed{18}, not 20", "18", 1.0), ("\\boxed{\\frac{1}{2}} is 0.5", "0.5", 1.0),
    ("first \\boxed{17} then \\boxed{18}", "18", 1.0),  # the last \boxed
    ("<answer>17</answer> on second thought <answer>18</answer>", "18", 1.0),  # the last <answer> block
    ("<answer>18</answer> on second thought <answer>17</answer>", "18", 0.0),
    ("<answer>18</answer> trailing 5", "18", 1.0),  # the block, not the last number
    ("<think>18</think><answer>17", "18", 0.0),  # unclosed block: the whole text, last number 17
    ("<think>\nno numbers here\n</think>", "18", 0.0),
])
def test_accuracy_finds_the_final_answer(text, gold, expected):
    assert acc(text, gold) == expected


def test_gold_is_normalised_like_answers_and_unparsable_gold_is_skipped():
    assert acc("<answer>1234</answer>", "1,234") == 1.0
    assert acc("<answer>1234</answer>", "... so 1000 + 234 = <<1000+234=1234>>1234\n#### 1,234") == 1.0
    assert acc("<answer>1234</answer>", "The answer is 1,234.") == 1.0
    assert acc("<answer>1234</answer>", "\\boxed{1234}") == 1.0
    assert acc("<answer>18</answer>", 18) == 1.0 and acc("<answer>0.5</answer>", 0.5) == 1.0  # numeric columns
    for gold in (None, "", "   ", "hello", "not available", ["18"], {"a": 1}, True, "10**10**10", "1/0"):
        assert acc("<answer>18</answer>", gold) is None, gold


def test_symbolic_answers_fall_back_to_math_verify():
    assert acc("<answer>\\frac{\\pi}{2}</answer>", "\\frac{\\pi}{2}") == 1.0
    assert acc("<answer>\\sqrt{2}</answer>", "\\sqrt{2}") == 1.0
    assert acc("<answer>2^{1/2}</answer>", "\\sqrt{2}") == 1.0
    assert acc("<answer>\\sqrt{3}</answer>", "\\sqrt{2}") == 0.0
    assert acc("The result is $\\boxed{x^2+1}$", "x^2 + 1") == 1.0
    assert acc("<answer>no idea</answer>", "\\sqrt{2}") == 0.0


@pytest.mark.parametrize("bomb", ["10**10**10", "$10^{10^{10}}$", "9^{9^{9^{9}}}", "100000!", "1" * 500,
                                  "\\sum_{n=1}^{10^{10}} n", "1e999999", "(" * 5000])
def test_math_verify_never_sees_text_that_could_hang_it(bomb):
    start = time.perf_counter()
    assert acc(f"<answer>{bomb}</answer>", "\\sqrt{2}") == 0.0
    assert acc(bomb, "\\sqrt{2}") == 0.0
    assert time.perf_counter() - start < 2.0


def test_math_verify_fallback_works_outside_the_main_thread():
    """math_verify's timeouts use SIGALRM, which raises outside the main thread; TRL may call rewards there."""
    out = {}
    thread = threading.Thread(target=lambda: out.update(r=accuracy_reward(
        [msg("<answer>\\frac{\\pi}{2}</answer>"), msg("<answer>\\pi</answer>"), msg("<answer>10**10**10</answer>")],
        solution=["\\frac{\\pi}{2}"] * 3)))
    thread.start()
    thread.join(60)
    assert out["r"] == [1.0, 0.0, 0.0]


def test_completion_shapes():
    text = "<answer>18</answer>"
    assert accuracy_reward([text, msg(text)], solution=["18", "18"]) == [1.0, 1.0]
    # several turns (tool use): the last assistant message is the answer
    turns = [{"role": "assistant", "content": "<answer>5</answer>"}, {"role": "tool", "content": "18"},
             {"role": "assistant", "content": text}]
    assert accuracy_reward([turns], solution=["18"]) == [1.0]
    parts = [{"role": "assistant",
              "content": [{"type": "text", "text": "<answer>1"}, {"type": "text", "text": "8</answer>"}]}]
    assert accuracy_reward([parts], solution=["18"]) == [1.0]
    junk = [None, 18, 1.5, {"content": 18}, [{"role": "assistant", "content": None}], [None], [[text]], b"18", object()]
    assert accuracy_reward(junk, solution=["18"] * len(junk)) == [0.0] * len(junk)
    assert accuracy_reward([text] * 3, solution=["18"]) == [1.0, None, None]  # short column: missing gold = skip
    assert accuracy_reward([text, text], solution="18") == [1.0, 1.0]  # a scalar applies to every completion
    assert accuracy_reward([], solution=[]) == [] and accuracy_reward(None) == [] and accuracy_reward(5) == []


# --------------------------------------------------------------------------- format, format_strict, tag_count


@pytest.mark.parametrize("text, fmt, strict", [
    (GOOD, 1.0, 1.0),
    (GOOD + "\n", 1.0, 1.0),  # open-r1's `$` accepts one final newline
    ("<think>\nline 1\n\nline 2\n</think>\n<answer>\nline 1\nline 2\n</answer>", 1.0, 1.0),
    ("<think>\n\n</think>\n<answer>\n\n5\n</answer>", 1.0, 1.0),
    ("<think>a</think><answer>5</answer>", 1.0, 0.0),  # right blocks, not open-r1's newlines
    ("  \n<think> a </think>\n\n\t<answer> 5 </answer>\n\n ", 1.0, 0.0),
    ("<think></think><answer>5</answer>", 1.0, 0.0),  # empty reasoning is allowed (no-think mode)
    ("<think>a</think><answer> \n </answer>", 0.0, 0.0),  # empty answer is not
    ("<think>a</think>", 0.0, 0.0), ("<answer>5</answer>", 0.0, 0.0), ("", 0.0, 0.0), ("5", 0.0, 0.0),
    ("<answer>5</answer><think>a</think>", 0.0, 0.0),
    ("<think>a</think> so <answer>5</answer>", 0.0, 0.0),  # text between the blocks
    ("Sure! <think>a</think><answer>5</answer>", 0.0, 0.0), ("<think>a</think><answer>5</answer> Done.", 0.0, 0.0),
    ("<think>a<think>b</think></think><answer>5</answer>", 0.0, 0.0),  # nested
    ("<think>a</think><answer>5</answer><answer>6</answer>", 0.0, 0.0),  # extra block
    ("<think>\na\n</think>\n<answer>\n5\n</think>\n<answer>\n6\n</answer>", 0.0, 0.0),  # open-r1's regex accepts this
    ("<think>a <answer>x</answer></think><answer>5</answer>", 0.0, 0.0),
    ("<think>a</think><answer>5", 0.0, 0.0), ("<think>a<answer>5</answer>", 0.0, 0.0),
    ("<THINK>a</THINK><ANSWER>5</ANSWER>", 0.0, 0.0),
    ("<think>\na\n</think>\n<answer>\n5\n</answer>\n\n", 1.0, 0.0), ("\n" + GOOD, 1.0, 0.0),
])
def test_format_and_format_strict(text, fmt, strict):
    assert format_reward([text, msg(text)]) == [fmt, fmt]
    assert format_strict_reward([text, msg(text)]) == [strict, strict]


def test_format_with_prefilled_think():
    """R1-distill/Qwen3 templates end the prompt with '<think>': the completion starts inside the reasoning."""
    body = "Janet sells 9 eggs.\n</think>\n<answer>\n18\n</answer>"
    assert format_reward([body]) == [0.0] and format_reward([body], think_prefilled=True) == [1.0]
    assert format_strict_reward([body], think_prefilled=True) == [1.0]
    assert format_strict_reward(["\n" + body], think_prefilled=True) == [1.0]
    assert tag_count_reward([body]) == [0.75] and tag_count_reward([body], think_prefilled=True) == [1.0]
    assert format_reward([GOOD], think_prefilled=True) == [0.0]  # a second <think> is a nested one
    assert format_reward([msg(body)], think_prefilled=True) == [1.0]


@pytest.mark.parametrize("text, expected", [
    (GOOD, 1.0),
    (GOOD.replace("<think>\n", "<think>"), 0.75), (GOOD.replace("\n</think>\n", "</think>\n"), 0.75),
    (GOOD.replace("<answer>\n18", "<answer>18"), 0.75), (GOOD.replace("\n</answer>", "</answer>"), 0.75),
    (GOOD.replace("\n<answer>\n", "<answer>\n"), 0.5),  # the newline "\n</think>\n" and "\n<answer>\n" share
    ("<think>a</think><answer>5</answer>", 0.0), ("", 0.0),
    (GOOD + GOOD, 0.0),  # every tag twice
    ("<think>\n" + GOOD, 0.75),  # "<think>\n" twice
    ("<think>\n\n</think>\n\n<answer>\n\n</answer>", 1.0),  # tags only: open-r1's definition
])
def test_tag_count(text, expected):
    assert tag_count_reward([text, msg(text)]) == [expected, expected]


def test_template_prefills_think():
    from thinktrain.tokenizer import CHAT_TEMPLATE, build_tokenizer

    tok = build_tokenizer(None)
    assert template_prefills_think(tok) is False
    tok.chat_template = CHAT_TEMPLATE.replace("'<|im_start|>assistant\\n' }}{%- endif %}",
                                              "'<|im_start|>assistant\\n<think>\\n' }}{%- endif %}")
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True).endswith("<think>\n")
    assert template_prefills_think(tok) is True
    tok.chat_template = None
    assert template_prefills_think(tok) is False  # no template: nothing is prefilled
    assert template_prefills_think(object()) is False

    # load_rewards asks the tokenizer once when think_prefilled is unset; an explicit value wins
    body = "x\n</think>\n<answer>\n1\n</answer>"
    tok.chat_template = CHAT_TEMPLATE.replace("'<|im_start|>assistant\\n' }}{%- endif %}",
                                              "'<|im_start|>assistant\\n<think>' }}{%- endif %}")
    fmt, tags = load_rewards(["format", "tag_count"], RewardArguments(), tok)
    assert fmt([body]) == [1.0] and tags([body]) == [1.0]
    fmt, = load_rewards(["format"], RewardArguments(think_prefilled=False), tok)
    assert fmt([body]) == [0.0]


# --------------------------------------------------------------------------- length, cosine, repetition, overlong


def test_length_reward_kimi_within_prompt_groups():
    right, wrong = "<answer>18</answer>", "<answer>17</answer>"
    completions = [right, right + " " * 10, wrong, wrong + " " * 20]  # lengths 19, 29, 19, 39
    # one group: min 19, max 39 -> lambda = 0.5, 0.0, 0.5, -0.5; wrong answers keep only the negative part
    assert length_reward(completions, solution=["18"] * 4) == [0.5, 0.0, 0.0, -0.5]
    # two prompts: each group has its own min/max
    out = length_reward(completions, solution=["18"] * 4, prompts=["p", "p", "q", "q"])
    assert out == [0.5, -0.5, 0.0, -0.5]
    # token counts when TRL passes completion_ids; equal lengths -> 0
    ids = [[1] * 10, [1] * 30, [1] * 10, [1] * 10]
    assert length_reward(completions, solution=["18"] * 4, completion_ids=ids) == [0.5, -0.5, 0.0, 0.0]
    assert length_reward([right, right], solution=["18", "18"]) == [0.0, 0.0]
    assert length_reward([right, wrong + " "], solution=["18", None]) == [0.5, None]
    msgs_prompts = [[{"role": "user", "content": "a"}]] * 2  # conversational prompts group too
    assert length_reward([right, right + "  "], solution=["18"] * 2, prompts=msgs_prompts) == [0.5, -0.5]


def test_cosine_reward_values():
    right, wrong = "<answer>18</answer>", "<answer>17</answer>"
    ids = lambda *n: [[0] * k for k in n]  # noqa: E731
    out = cosine_reward([right] * 4, solution=["18"] * 4, completion_ids=ids(0, 500, 1000, 5000))
    assert out == pytest.approx([1.0, 0.75, 0.5, 0.5])  # past max_len: stays at the max_len value
    out = cosine_reward([wrong] * 4, solution=["18"] * 4, completion_ids=ids(0, 500, 1000, 5000))
    assert out == pytest.approx([-1.0, -0.75, -0.5, -0.5])
    out = cosine_reward([right, wrong], solution=["18", "18"], completion_ids=ids(50, 50), max_len=100,
                        min_value_correct=0.0, max_value_correct=2.0, min_value_wrong=-2.0, max_value_wrong=0.0)
    assert out == pytest.approx([1.0, -1.0])
    # characters without completion_ids (open-r1): 19 chars of 1000
    assert cosine_reward([right], solution=["18"]) == pytest.approx([0.75 + 0.25 * math.cos(math.pi * 19 / 1000)])
    assert cosine_reward([right], solution=["hello"], completion_ids=ids(3)) == [None]


def test_repetition_reward_values():
    assert repetition_reward(["a b c d e"]) == [0.0]
    assert repetition_reward(["a a a a a"], n_grams=2) == [-0.75]  # 1 unique of 4 bigrams
    assert repetition_reward(["A a a A a"], n_grams=2) == [-0.75]  # lowercased
    assert repetition_reward(["a b a b a b"], n_grams=2, max_penalty=-0.5) == [pytest.approx(-0.3)]  # (1 - 2/5) * .5
    assert repetition_reward(["", "a b", None, msg("x y x y x y")], n_grams=3) == [0.0, 0.0, 0.0, -0.5]
    long_loop = "word " * 200_000  # only the last 50,000 words count
    assert repetition_reward([long_loop]) == [pytest.approx(-(1 - 1 / 49_998))]


def test_overlong_reward_values():
    ids = [[0] * n for n in (10, 80, 90, 100, 101, 5000)]
    out = overlong_reward([""] * 6, completion_ids=ids, max_length=100, buffer=20)
    assert out == [0.0, 0.0, -0.5, -1.0, -1.0, -1.0]
    assert overlong_reward(["", ""], completion_ids=[[0] * 100, [0] * 101], max_length=100, buffer=0) == [0.0, -1.0]
    assert overlong_reward(["a", "b"], max_length=100, buffer=20) == [None, None]  # no token counts: cannot judge
    assert overlong_reward(["a"], completion_ids=[None], max_length=100, buffer=20) == [None]


@pytest.mark.parametrize("text, expected", [
    (GOOD, 1.0),  # 16 - 3 - 4 = 9 and 9 * 2 = $18
    ("<think>\nLily saves 10 * 5 = 50.\nShe has 50 - 5 = 45.\nNow 45 + 2 = 46.\n</think>\n<answer>\n46\n</answer>",
     2 / 3),  # the sampled slip this reward exists for
    ("no arithmetic at all", 0.0),
    ("the answer is 12 = 12", 0.0),  # no operator: nothing to check
    ("2 + 3 * 4 = 14", 1.0),  # precedence
    ("8 - 2 * 3 = 2", 1.0),
    ("2 * 3 / 4 = 1.5", 1.0),
    ("-3 + 5 = 2", 1.0),
    ("5 - 7 = -2", 1.0),
    ("3 x 4 = 12 and 3 × 4 = 12 and 12 ÷ 4 = 3", 1.0),
    ("$1,200 / 3 = $400", 1.0),
    ("10 / 3 = 3.33", 1.0),  # a rounded decimal is right to its last digit
    ("10 / 3 = 3.3", 1.0),
    ("10 / 3 = 3.4", 0.0),
    ("10 / 3 = 3", 0.0),  # an integer result must be exact
    ("<<48/2=24>> <<24*2=50>>", 0.5),  # GSM8K's calculator annotations
    ("1 / 0 = 5", 0.0),  # division by zero: a slip, not a crash
    ("2 + 3 = 5 + 1 = 6", 1.0),  # one chain per match: only 2 + 3 = 5 is checked
    ("v1.2 + 3 = 4.2", 0.0),  # numbers glued to words are not arithmetic
    ("1 + 1 = 2, 2 + 2 = 5, 3 + 3 = 6, 4 + 4 = 9", 0.5),
    ("2*20*.01=.4", 1.0),  # GSM8K writes decimals without the leading zero
    ("So it cost 192*100=$1920", 0.0),  # a real slip in a GSM8K gold solution
    ("3 * 1/4 = 3/4", 0.0),  # fractions as results, mixed numbers, parentheses: not checked (no false slips)
    ("8 x 1 1/2 = 12", 0.0),
    ("6*(20/60)=2 and (2 + 3) * 4 = 20", 0.0),
])
def test_arithmetic_reward_values(text, expected):
    assert arithmetic_reward([text]) == [pytest.approx(expected)]


def test_arithmetic_reward_counts_at_most_200_equations_and_skips_long_chains():
    assert arithmetic_reward(["1 + 1 = 2 " * 200 + "1 + 1 = 3 " * 50]) == [1.0]  # the first 200 only
    assert arithmetic_reward([" * ".join(["999999999999999"] * 21) + " = 5"]) == [0.0]  # 21 terms: not checked
    assert arithmetic_reward([" + ".join(["1"] * 20) + " = 20"]) == [1.0]


# --------------------------------------------------------------------------- registry and loading


def test_registry_names_are_the_logged_names_and_pickle():
    funcs = load_rewards(list(REWARDS), RewardArguments(), max_completion_length=512)
    assert [f.__name__ for f in funcs] == list(REWARDS) == [
        "accuracy", "format", "format_strict", "tag_count", "length", "cosine", "repetition", "overlong", "arithmetic", "tool_use"]
    import trl.rewards
    from trl.trainer.utils import get_callable_name

    assert [get_callable_name(f) for f in funcs] == list(REWARDS)  # what GRPOTrainer logs
    assert "accuracy_reward" == trl.rewards.accuracy_reward.__name__ != funcs[0].__name__
    # the plain functions stay usable and keep their names
    assert (accuracy_reward.__name__, format_reward.__name__, tag_count_reward.__name__) == (
        "accuracy_reward", "format_reward", "tag_count_reward")
    # picklable: TRL's async rollout worker sends reward functions to a child process
    clones = pickle.loads(pickle.dumps(funcs))
    kwargs = dict(solution=["18"], completion_ids=[[1] * 300], prompts=["p"])
    assert [f([GOOD], **kwargs) for f in clones] == [f([GOOD], **kwargs) for f in funcs]
    assert [f([GOOD], **kwargs)[0] for f in funcs] == pytest.approx(
        [1.0, 1.0, 1.0, 1.0, 0.0, 0.5 + 0.25 * (1 + math.cos(math.pi * 0.3)), 0.0, -44 / 256, 1.0, 0.0])


def test_load_rewards_passes_parameters():
    args = RewardArguments(cosine_max_len=100, cosine_max_value_correct=2.0, repetition_n_grams=1,
                           repetition_max_penalty=-2.0, overlong_max_length=50, overlong_buffer=10)
    cosine, repetition, overlong = load_rewards(["cosine", "repetition", "overlong"], args, max_completion_length=999)
    assert cosine(["<answer>1</answer>"], solution=["1"], completion_ids=[[0] * 0]) == [2.0]
    assert repetition(["a a"]) == [-1.0]
    assert overlong(["x"], completion_ids=[[0] * 45]) == [-0.5]
    overlong, = load_rewards(["overlong"], RewardArguments(overlong_buffer=100), max_completion_length=300)
    assert overlong(["x"], completion_ids=[[0] * 250]) == [-0.5]  # limit from max_completion_length
    assert len(load_rewards(["accuracy"], None)) == 1  # args default


@pytest.mark.parametrize("kwargs, max_len, words", [
    ({"overlong_buffer": 256}, None, "overlong needs a length limit"),
    ({"overlong_buffer": 512}, 512, "overlong_buffer (512) must be smaller"),
])
def test_load_rewards_overlong_errors(kwargs, max_len, words):
    with pytest.raises(RecipeError, match=re.escape(words)):
        load_rewards(["overlong"], RewardArguments(**kwargs), max_completion_length=max_len)


@pytest.mark.parametrize("kwargs, words", [
    ({"repetition_max_penalty": 0.5}, "repetition_max_penalty must be <= 0"),
    ({"repetition_n_grams": 0}, "repetition_n_grams must be >= 1"),
    ({"cosine_max_len": 0}, "cosine_max_len must be > 0"),
    ({"overlong_buffer": -1}, "overlong_buffer must be >= 0"),
    ({"overlong_max_length": 0}, "overlong_max_length must be > 0"),
])
def test_reward_arguments_are_validated(kwargs, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        RewardArguments(**kwargs)


def test_unknown_reward_errors_are_one_line_with_a_suggestion():
    with pytest.raises(UnknownRewardError) as e:
        resolve_reward("acuracy")
    assert str(e.value) == ("unknown reward 'acuracy' (did you mean 'accuracy'?); known: accuracy, format, "
                            "format_strict, tag_count, length, cosine, repetition, overlong, arithmetic, tool_use")
    with pytest.raises(UnknownRewardError, match=r"did you mean 'format_strict'\?"):
        resolve_reward("format_stric")
    with pytest.raises(UnknownRewardError, match=r"^unknown reward 'zzz'; known: accuracy"):
        resolve_reward("zzz")
    with pytest.raises(UnknownRewardError) as e:
        resolve_reward("no_such_pkg.mod:fn")
    assert str(e.value) == ("cannot import reward 'no_such_pkg.mod:fn': ModuleNotFoundError: "
                            "No module named 'no_such_pkg'")
    with pytest.raises(UnknownRewardError, match="module 'thinktrain.rewards' has no 'nope'"):
        resolve_reward("thinktrain.rewards.nope")
    with pytest.raises(UnknownRewardError, match="is not callable"):
        resolve_reward("thinktrain.rewards:REWARDS")
    with pytest.raises(UnknownRewardError):
        load_rewards(["accuracy", "acuracy"], RewardArguments())
    assert issubclass(UnknownRewardError, RecipeError)  # a recipe mistake: one line, exit 2
    for name in (*REWARDS, "thinktrain.rewards:accuracy_reward", "thinktrain.rewards.format_reward"):
        resolve_reward(name)


def test_dotted_paths_load_user_functions_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_mod.py").write_text(
        "def shout(completions, **kwargs):\n    return [float(len(str(c))) for c in completions]\n"
        "SCORE = 3\n")
    (tmp_path / "broken_rewards_mod.py").write_text("import nothing_here_at_all\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    for path in ("my_rewards_mod:shout", "my_rewards_mod.shout"):
        resolve_reward(path)
        fn, = load_rewards([path], RewardArguments())
        assert fn.__name__ == "shout" and fn(["ab", "abc"]) == [2.0, 3.0]
    with pytest.raises(UnknownRewardError) as e:
        resolve_reward("broken_rewards_mod:fn")
    assert str(e.value) == ("cannot import reward 'broken_rewards_mod:fn': ModuleNotFoundError: "
                            "No module named 'nothing_here_at_all'")
    with pytest.raises(UnknownRewardError, match="not callable"):
        resolve_reward("my_rewards_mod:SCORE")


def test_reward_arguments_become_recipe_keys_without_collisions(tmp_path):
    import dataclasses

    from trl import GRPOConfig, ModelConfig, ScriptArguments, SFTConfig

    from thinktrain.configs import RecipeArguments
    from thinktrain.recipe import parse

    ours = {f.name for f in dataclasses.fields(RewardArguments)}
    assert len(ours) == 10
    for cls in (GRPOConfig, SFTConfig, ModelConfig, ScriptArguments, RecipeArguments):
        assert not ours & {f.name for f in dataclasses.fields(cls)}, cls.__name__
    assert all(f.metadata.get("help") for f in dataclasses.fields(RewardArguments))

    recipe = tmp_path / "grpo.yaml"
    recipe.write_text("task: grpo\nmodel_name_or_path: scratch:tiny\ndataset_name: synthetic:gsm8k\n"
                      "dataset_train_split: practice\nbf16: false\nreward_funcs: [accuracy, cosine, overlong]\n"
                      "cosine_max_len: 300\nthink_prefilled: true\noverlong_buffer: 64\n")
    r = parse([str(recipe), "--repetition_max_penalty", "-0.5"])
    script, train = r.script_args, r.training_args
    assert (script.cosine_max_len, script.think_prefilled, script.overlong_buffer) == (300, True, 64)
    assert script.repetition_max_penalty == -0.5 and script.overlong_max_length is None
    funcs = load_rewards(script.reward_funcs, script, None, train.max_completion_length)
    assert [f.__name__ for f in funcs] == ["accuracy", "cosine", "overlong"]
    assert funcs[2].params == {"max_length": train.max_completion_length, "buffer": 64}
    with pytest.raises(RecipeError, match="repetition_max_penalty must be <= 0"):
        parse([str(recipe), "--repetition_max_penalty", "1"])


# --------------------------------------------------------------------------- properties


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(n=st.one_of(st.integers(-10**6, 10**6), st.integers(-10**60, 10**60)))
def test_property_surface_forms_of_an_integer(n):
    gold = f"{n:,}"
    for answer in (str(n), f"{n:,}", f"${n:,}", f"{n}.00", f"\\boxed{{{n}}}", f"{n} dollars", f"The answer is {n}.",
                   str(n).replace("-", "−"), f"{n:,}".replace(",", "{,}")):
        assert acc(f"<answer>{answer}</answer>", gold) == 1.0, answer
    for wrong in (n + 1, n - 1, n * 10):
        assert acc(f"<answer>{wrong}</answer>", gold) == (1.0 if wrong == n else 0.0)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(p=st.integers(-10**12, 10**12), q=st.integers(1, 10**6))
def test_property_fractions_equal_their_decimals(p, q):
    value = Fraction(p, q)
    frac = f"\\frac{{{p}}}{{{q}}}"
    assert acc(f"<answer>{frac}</answer>", f"{p}/{q}") == 1.0
    assert acc(f"<answer>{frac}</answer>", f"{value.numerator}/{value.denominator}") == 1.0
    den = value.denominator
    while den % 2 == 0:
        den //= 2
    while den % 5 == 0:
        den //= 5
    if den == 1:  # terminating: its decimal expansion is the same number
        k = 0
        while (value * 10**k).denominator != 1:
            k += 1
        digits = str(abs(value.numerator * 10**k // value.denominator)).rjust(k + 1, "0")
        decimal = ("-" if value < 0 else "") + (digits[:-k] + "." + digits[-k:] if k else digits)
        assert acc(f"<answer>{decimal}</answer>", frac) == 1.0, decimal
    assert acc(f"<answer>{frac}</answer>", f"{p + q}/{q}") == 0.0


def _open_r1_regex(text):
    return re.match(r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$", text, re.DOTALL) is not None


def _open_r1_tag_count(text):
    return sum(0.25 for tag in ("<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>") if text.count(tag) == 1)


def _open_r1_repetition(text, n, max_penalty):
    words = text.lower().split()
    if len(words) < n:
        return 0.0
    grams = list(zip(*[words[i:] for i in range(n)]))
    return (1 - len(set(grams)) / len(grams)) * max_penalty


TAG_PIECES = ["<think>", "</think>", "<answer>", "</answer>", "\n", " ", "a", "5", "b c", "\n\n"]


@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(pieces=st.lists(st.sampled_from(TAG_PIECES), max_size=14), n=st.integers(1, 4))
def test_property_format_rewards_agree_with_open_r1(pieces, n):
    text = "".join(pieces)
    fmt, strict = format_reward([text])[0], format_strict_reward([text])[0]
    assert strict <= fmt
    assert strict == float(fmt == 1.0 and _open_r1_regex(text))
    assert tag_count_reward([text]) == [_open_r1_tag_count(text)]
    expected = _open_r1_repetition(text, n, -1.0)
    assert repetition_reward([text], n_grams=n, max_penalty=-1.0)[0] == pytest.approx(expected)
    if fmt:  # a formatted completion keeps its format when the template prefills <think>
        assert format_reward([text.strip()[len("<think>"):]], think_prefilled=True) == [1.0]


@pytest.mark.parametrize("limit, buffer, length, expected", [
    (100, 20, 0, 0.0), (100, 20, 80, 0.0), (100, 20, 81, -0.05), (100, 20, 90, -0.5), (100, 20, 99, -0.95),
    (100, 20, 100, -1.0), (100, 20, 101, -1.0), (512, 256, 300, -44 / 256), (3, 2, 1, 0.0), (3, 2, 2, -0.5),
    (1, 0, 1, 0.0), (1, 0, 2, -1.0), (4096, 1, 4095, 0.0), (4096, 1, 4096, -1.0), (4096, 4095, 4096, -1.0),
])
def test_overlong_exact_values_at_the_edges(limit, buffer, length, expected):
    # TRL's get_soft_overlong_punishment computes it: 0 up to limit - buffer, then linear to -1 at limit, -1 past it
    assert overlong_reward([""], completion_ids=[[0] * length], max_length=limit, buffer=buffer) == [expected]


# --------------------------------------------------------------------------- fuzzing: never raise, stay fast

FUNCS = load_rewards(list(REWARDS), RewardArguments(), max_completion_length=512)
FUNCS_PREFILLED = load_rewards(["format", "format_strict", "tag_count"], RewardArguments(think_prefilled=True))
ATOMS = [
    "<think>", "</think>", "<answer>", "</answer>", "<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>",
    "<answer", "answer>", "</", "<", ">", "\\boxed{", "\\fbox{", "}", "{", "\\frac{", "\\dfrac{", "}{", "####",
    "The answer is ", "answer:", "A:", "\nA: ", "1", "0", "9", "18", "-", "−", "+", ",", ".", "%", "\\%", "$", "\\$",
    "e", "E", "1e999999", "1e-999999", "9e99999999999", "10**10**10", "10^{10^{10}}", "\\times 10^{", "×10^", "/",
    "/0", "0/0", "١٢٣", "１２３", "\x00", "\x1b[2J", "\u202e", "\ud800", "\ufeff", "\t", "\r\n", " ", "  ", "\n",
    "€", "£", "\\sqrt{", "\\pi", "x", "!", "100000!", "(", ")", "[", "]", "\\text{", "\\,", "{,}", "\\!", "1,234",
    "1,2345", ".5", "5.", "3/4", "\\left(", "\\right)", "\\sum_{n=1}^{\\infty}", "$$", "```", "<<", ">>", "<|im_end|>",
]
GOLDS = ["18", "1,234", "-5", "0.75", "3/4", "50%", "1e999999", "9" * 300, "0", "", None, "hello", 18, 2.5,
         "#### 1,234", "\\boxed{18}", "<answer>18</answer>", "10**10**10", "\\frac{1}{0}", "١٢٣", " " * 8000,
         "$" * 5000, " $ " * 3000, "\\boxed{" * 1000, "#### " * 2000, "1" * 8000, "answer is " * 800]
SYMBOLIC_GOLDS = ["\\sqrt{2}", "\\frac{\\pi}{2}", "x^2+1"]
texts = st.one_of(
    st.text(max_size=200),
    st.lists(st.sampled_from(ATOMS), max_size=40).map("".join),
    st.builds(lambda a, k: a * k, st.sampled_from(ATOMS + ["1 ", "1,", "<think><answer>", "a b c "]),
              st.integers(1, 500)),  # the 1 MB cases are below
)
contents = st.one_of(texts, st.none(), st.integers(), st.floats(), st.booleans(),
                     st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
                     st.lists(st.one_of(texts, st.none(), st.dictionaries(st.sampled_from(["type", "text"]), texts)),
                              max_size=3))
messages = st.one_of(
    st.builds(lambda c: [{"role": "assistant", "content": c}], contents),
    st.lists(st.one_of(st.fixed_dictionaries({"role": st.sampled_from(["assistant", "user", "tool", None]),
                                              "content": contents}),
                       st.none(), st.integers(), texts), max_size=3),
    st.dictionaries(st.sampled_from(["role", "content"]), contents),
)
completions = st.one_of(texts, texts, messages, st.none(), st.integers(), st.binary(max_size=20))


def check_all(batch, golds, ids):
    n = len(batch)
    kwargs = dict(solution=golds, completion_ids=ids, prompts=["p"] * n)
    out = {f.__name__: f(batch, **kwargs) for f in FUNCS}
    for name, values in out.items():
        assert isinstance(values, list) and len(values) == n, name
        assert all(v is None or type(v) is float for v in values), (name, values)
    for i in range(n):
        assert out["accuracy"][i] in (0.0, 1.0, None)
        assert out["format"][i] in (0.0, 1.0) and out["format_strict"][i] <= out["format"][i]
        assert out["tag_count"][i] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert out["length"][i] is None or -1.0 <= out["length"][i] <= 0.5
        assert out["cosine"][i] is None or -1.0 <= out["cosine"][i] <= 1.0
        assert -1.0 <= out["repetition"][i] <= 0.0
        assert 0.0 <= out["arithmetic"][i] <= 1.0
        assert (out["overlong"][i] is None) if ids is None else -1.0 <= out["overlong"][i] <= 0.0
        assert (out["accuracy"][i] is None) == (out["cosine"][i] is None) == (out["length"][i] is None)
    for f in FUNCS_PREFILLED:
        values = f(batch)
        assert isinstance(values, list) and len(values) == n and all(type(v) is float for v in values), f.__name__
    return out


FUZZ = settings(deadline=None, derandomize=True, database=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])


@settings(FUZZ, max_examples=3000)
@given(batch=st.lists(completions, min_size=1, max_size=4), gold=st.sampled_from(GOLDS))
def test_fuzz_completions_never_raise(batch, gold):
    check_all(batch, [gold] * len(batch), [[0] * (i * 300) for i in range(len(batch))])


@settings(FUZZ, max_examples=1500)
@given(batch=st.lists(texts, min_size=1, max_size=4), golds=st.lists(st.one_of(st.sampled_from(GOLDS), texts),
                                                                        min_size=0, max_size=3))
def test_fuzz_adversarial_golds_never_raise(batch, golds):
    check_all(batch, golds, None)


@settings(FUZZ, max_examples=150)
@given(text=texts, gold=st.sampled_from(SYMBOLIC_GOLDS))
def test_fuzz_symbolic_golds_never_raise(text, gold):
    check_all([text, f"<answer>{text}</answer>"], [gold, gold], [[0], [0] * 600])


MB = 1_000_000


def _fill(piece, prefix="", suffix=""):
    return prefix + piece * ((MB - len(prefix) - len(suffix)) // len(piece) + 1) + suffix


BIG = {
    "think tags": lambda: _fill("<think>"), "think newline tags": lambda: _fill("<think>\n"),
    "digits": lambda: _fill("1"), "digits in answer": lambda: "<answer>" + _fill("9") + "</answer>",
    "exponent digits": lambda: "<answer>1e" + _fill("9") + "</answer>", "1e999999": lambda: _fill("1e999999 "),
    "thousands": lambda: _fill("1,234,"), "numbers": lambda: _fill("1 "), "decimals": lambda: _fill("1."),
    "answer blocks": lambda: _fill("<answer>1</answer>"), "open answer": lambda: _fill("<answer>"),
    "close answer": lambda: _fill("</answer>"), "nested tags": lambda: _fill("<think><answer>"),
    "boxed open": lambda: _fill("\\boxed{"), "boxed": lambda: _fill("\\boxed{1}"),
    "frac open": lambda: _fill("\\frac{1}{"),
    "fracs": lambda: _fill("\\frac{1}{2}"), "answer is": lambda: _fill("The answer is "), "hashes": lambda: _fill("#"),
    "A:": lambda: _fill("A:\n"), "spaces": lambda: _fill(" "), "newlines": lambda: _fill("\n"),
    "dollars": lambda: _fill("$"),
    "minus": lambda: _fill("-"), "sci": lambda: _fill("1 \\times 10^{"),
    "words": lambda: _fill("the cat sat on a mat "),
    "unicode digits": lambda: _fill("١٢٣"), "control chars": lambda: _fill("\x00\x01\x1b"),
    "strict layout repeated": lambda: _fill("\n</think>\n<answer>\n", "<think>\n", "\n</answer>"),
    "formatted, long reasoning": lambda: _fill("reason step ", "<think>\n", "\n</think>\n<answer>\n18\n</answer>"),
    "10**10**10": lambda: _fill("10**10**10 "), "percent": lambda: _fill("%"), "slashes": lambda: _fill("1/"),
    "carets": lambda: _fill("^{"),
}


@pytest.mark.parametrize("name", list(BIG))
def test_one_megabyte_completion_scores_in_under_50ms_per_reward(name):
    text = BIG[name]()
    assert len(text) >= MB
    for gold in ("18", "\\sqrt{2}", text):  # the last: a 1 MB gold solution
        check_all([text], [gold], [[0] * 600])
        for f in FUNCS:
            best = _timed(f, text, gold)
            if best >= 0.050:  # retry: the machine may be busy
                best = min(best, _timed(f, text, gold), _timed(f, text, gold))
            assert best < 0.050, f"{f.__name__} took {best * 1e3:.1f} ms on 1 MB of {name!r}"


def _timed(f, text, gold):
    answers._gold_cache.clear()  # the gold's parsing counts too
    # CPU time of this process, not wall time: a guard against quadratic work that other jobs on the machine
    # (CI beside a training run) cannot trip
    start = time.process_time()
    f([text], solution=[gold], completion_ids=[[0] * 600], prompts=["p"])
    return time.process_time() - start


_CHARS = [chr(c) for c in range(32, 127)] + list("\n\t\r\x00\x1b\u202e\ufeff\ud800−×١٢٣１２３€£é中😀")


def _random_text(rng):
    """One draw of `texts` above, from a seeded Random: free text, a string of ATOMS, or one atom repeated; or, so
    that the scores that need a layout come up too, fuzz inside the <think>/<answer> layout (a gold as the answer)."""
    kind = rng.randrange(4)
    if kind == 0:
        return "".join(rng.choices(_CHARS, k=rng.randrange(201)))
    if kind == 1:
        return "".join(rng.choices(ATOMS, k=rng.randrange(41)))
    if kind == 2:
        return rng.choice(ATOMS + ["1 ", "1,", "<think><answer>", "a b c "]) * rng.randint(1, 500)
    answer = rng.choice([str(rng.choice(GOLDS)), _random_text(rng)])
    return f"<think>\n{_random_text(rng)}\n</think>\n<answer>\n{answer}\n</answer>"


def _random_content(rng):
    """A message's content, as `contents` above: text, or anything a malformed message could hold."""
    def part():
        return rng.choice([lambda: _random_text(rng), lambda: None,
                           lambda: {rng.choice(["type", "text"]): _random_text(rng)}])()

    return rng.choice([
        lambda: _random_text(rng), lambda: None, lambda: rng.randint(-10**12, 10**12),
        lambda: rng.choice([0.0, -1.5, 1e308, float("inf"), float("nan")]), lambda: rng.random() < 0.5,
        lambda: {_random_text(rng)[:5]: rng.randint(0, 9) for _ in range(rng.randrange(4))},
        lambda: [part() for _ in range(rng.randrange(4))],
    ])()


def _random_completion(rng):
    """One completion, as `completions` above: text (twice as likely), conversational messages well or badly formed,
    None, an int, bytes."""
    def message():
        return rng.choice([lambda: {"role": rng.choice(["assistant", "user", "tool", None]),
                                    "content": _random_content(rng)},
                           lambda: None, lambda: rng.randint(-9, 9), lambda: _random_text(rng)])()

    messages = rng.choice([
        lambda: [{"role": "assistant", "content": _random_content(rng)}],
        lambda: [message() for _ in range(rng.randrange(4))],
        lambda: {key: _random_content(rng) for key in rng.sample(["role", "content"], rng.randrange(3))},
    ])
    return rng.choice([lambda: _random_text(rng), lambda: _random_text(rng), messages, lambda: None,
                       lambda: rng.randint(-10**12, 10**12), lambda: rng.randbytes(rng.randrange(21))])()


def test_fuzz_covered_ten_thousand_completions():
    """Self-contained, seeded (no hypothesis: the count is exact, the run a few seconds): 10,000 completions of every
    shape, in batches of 1-8, with golds from GOLDS or adversarial text, as many as the completions or fewer, with
    and without completion_ids, through every reward. check_all asserts a list of floats/None of the batch's length,
    each value in its range; nothing raises, and the autouse fixture asserts the safety net caught nothing."""
    rng = random.Random(0)
    scored, seen = 0, set()
    while scored < 10_000:
        batch = [_random_completion(rng) for _ in range(rng.randint(1, 8))]
        n_golds = rng.choice([len(batch)] * 3 + [0, 1, 2])
        golds = [rng.choice(GOLDS) if rng.random() < 0.9 else _random_text(rng) for _ in range(n_golds)]
        ids = None if rng.random() < 0.3 else [[0] * rng.randrange(800) for _ in batch]
        out = check_all(batch, golds, ids)
        scored += len(batch)
        seen |= {(name, value) for name in ("accuracy", "format", "tag_count") for value in out[name]}
    # the completions reach every outcome, not only the zeros of garbage
    assert {("accuracy", v) for v in (0.0, 1.0, None)} | {("format", 0.0), ("format", 1.0)} <= seen
    assert {("tag_count", v) for v in (0.0, 0.25, 0.5, 0.75, 1.0)} <= seen
