"""Tools: the calculator on exact values and adversarial input, the registry's one-line refusals, the scratch
template's tool format, GSM8K annotations as tool conversations, and evaluation's tool loop against TRL's."""

import json
import re
import time
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinktrain.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]
from thinktrain.arithmetic import MAX_CHARS, CalcError, exact, show
from thinktrain.tools import calculator, load_tools, tool_calls

# --------------------------------------------------------------------------- the calculator


@pytest.mark.parametrize("expression, result", [
    ("48/2", "24"), ("48 / 2", "24"), ("2+3*4", "14"), ("(2+3)*4", "20"), ("10-2-3", "5"), ("2**10", "1024"),
    ("2^3^2", "512"), ("-3 + 5", "2"), ("-(-3)", "3"), ("7 × 6", "42"), ("84 ÷ 4", "21"), ("3 x 4", "12"),
    ("1,000 * 3", "3000"), ("1,234,567 - 1", "1234566"), ("$12 + $3.50", "15.5"), ("0.1 + 0.2", "0.3"),
    ("50%", "0.5"), ("20% * 150", "30"), ("10/4", "2.5"), ("1/8", "0.125"), ("10/3", "3.333333"),
    ("2/3", "0.666667"), ("-1/3", "-0.333333"), ("2**-2", "0.25"), (".5 * 4", "2"), ("1 - 1", "0"),
    ("  7  ", "7"), ("((((2))))", "2"), ("100 * 1.08", "108"),
])
def test_calculator_exact_values(expression, result):
    assert calculator(expression) == result


@pytest.mark.parametrize("expression, error", [
    ("1/0", "error: division by zero"), ("0**-1", "error: division by zero"), ("", "error: empty expression"),
    ("7 -", "error: incomplete expression"), ("(1 + 2", "error: missing ')'"), ("1 + 2)", "error: unexpected ')'"),
    ("2 * * 3", "error: unexpected '*'"), ("1e5", "error: unexpected 'e'"), ("1,5", "error: unexpected ','"),
    ("٣+٤", "error: unexpected '٣'"), ("１+１", "error: unexpected '１'"), ("import os", "error: unexpected 'i'"),
    ("__import__('os')", "error: unexpected '_'"), ("9**9**9", "error: exponent must be a whole number from -64 to 64"),
    ("2**0.5", "error: exponent must be a whole number from -64 to 64"),
    ("99999999999**64", "error: number too large"),
])
def test_calculator_refuses_in_words(expression, error):
    assert calculator(expression) == error


@pytest.mark.parametrize("expression", ["1" * 1_000_000, "(" * 10_000 + "1" + ")" * 10_000, "9**9**9**9**9",
                                        "-" * 150 + "1", "(" * 60 + "1" + ")" * 60, "2**64*" * 30 + "1"])
def test_calculator_is_bounded_on_hostile_input(expression):
    started = time.perf_counter()
    out = calculator(expression)
    assert out.startswith("error: ") and time.perf_counter() - started < 0.05, out
    assert len(out) < 120


def test_non_strings_and_huge_results_are_errors_not_exceptions():
    assert calculator(None) == "error: the expression must be a string"
    assert calculator(12) == "error: the expression must be a string"
    with pytest.raises(CalcError, match=f"longer than {MAX_CHARS}"):
        exact("1+" * 200 + "1")
    assert exact("1+" * 200 + "1", max_chars=None) == 201  # the arithmetic reward's own bounds apply there


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_calculator_never_raises_and_answers_fast(text):
    started = time.perf_counter()
    out = calculator(text)
    assert isinstance(out, str) and time.perf_counter() - started < 0.05


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=2, max_size=6), st.lists(st.sampled_from("+-*/"), min_size=5,
                                                                          max_size=5))
def test_calculator_agrees_with_exact_fractions(numbers, ops):
    expression = str(numbers[0]) + "".join(f" {op} {n}" for op, n in zip(ops, numbers[1:]))
    # the oracle: Python's own precedence over Fractions, on a string this test built
    reference = " ".join(f"Fraction({t})" if t.isdigit() else t for t in expression.split())
    try:
        want = eval(reference)  # noqa: S307
    except ZeroDivisionError:
        assert calculator(expression) == "error: division by zero"
        return
    assert exact(expression) == want
    assert calculator(expression) == show(want)


def test_show_writes_numbers_as_a_solution_would():
    assert [show(Fraction(x)) for x in ("24", "-5/2", "1/3", "123456789/1000", "-7", "0")] == \
        ["24", "-2.5", "0.333333", "123456.789", "-7", "0"]


# --------------------------------------------------------------------------- the registry


def untyped(expression):
    """Evaluate.

    Args:
        expression: what to evaluate
    """
    return expression


def undocumented(expression: str) -> str:
    return expression


def test_tools_load_by_name_or_path_and_refuse_in_one_line():
    # every tool comes back bounded by tool_timeout (tests/test_sandbox.py), wrapping the function named
    assert [t.__wrapped__ for t in load_tools(["calculator"])] == [calculator]
    assert [t.__wrapped__ for t in load_tools(["thinktrain.tools:calculator"])] == [calculator]
    assert load_tools(None) == []
    cases = {
        "calculater": "tools: unknown tool 'calculater' (did you mean 'calculator'?); built-in: calculator, python, "
                      "or give 'pkg.module:function'",
        "no_such_pkg.mod:fn": "tools: cannot import 'no_such_pkg.mod:fn': ModuleNotFoundError: No module named "
                              "'no_such_pkg'",
        "thinktrain.tools:nope": "tools: 'thinktrain.tools:nope': module 'thinktrain.tools' has no function 'nope'",
    }
    for name, message in cases.items():
        with pytest.raises(RecipeError) as e:
            load_tools([name])
        assert str(e.value) == message
    for name in ("test_tools:untyped", "test_tools:undocumented"):
        with pytest.raises(RecipeError, match=rf"^tools: '{name}' can't be offered to the model: .* \(a tool needs "
                                              r"type hints and a Google-style docstring with an Args: section\)$"):
            load_tools([name])
    with pytest.raises(RecipeError, match="two tools share a name"):
        load_tools(["calculator", "thinktrain.tools:calculator"])


def test_tool_calls_counts_assistant_calls():
    call = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "1+1"}}}
    assert tool_calls([{"role": "assistant", "content": "a", "tool_calls": [call, call]},
                       {"role": "tool", "content": "2"}, {"role": "assistant", "content": "b", "tool_calls": [call]}]) == 3
    assert tool_calls("text") == tool_calls([{"role": "assistant", "content": "x"}]) == tool_calls(None) == 0


# --------------------------------------------------------------------------- template and tokenizer


OLD_TEMPLATE = (  # the scratch template before tools: every tool-free conversation must render exactly as it did
    "{%- for message in messages %}{%- if message['role'] == 'assistant' %}{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}{{- '\\n' }}{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

CALL = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "3*4"}}}
CONVERSATION = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"},
                {"role": "assistant", "content": "<think>\nSam has 3 * 4 = ", "tool_calls": [CALL]},
                {"role": "tool", "name": "calculator", "content": "12"},
                {"role": "assistant", "content": " pears.\n</think>\n<answer>\n12\n</answer>"}]


@pytest.fixture(scope="module")
def tool_tokenizer():
    from thinktrain import synthetic
    from thinktrain.tokenizer import build_tokenizer

    texts = [row["text"] for row in synthetic.generate("exposition", 3000)]
    return build_tokenizer(texts, 512, tools=[calculator])


def test_template_renders_calls_compactly_and_plain_chats_as_before(tool_tokenizer):
    from thinktrain.tokenizer import build_tokenizer

    assert tool_tokenizer.apply_chat_template(CONVERSATION, tokenize=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n<think>\nSam has "
        '3 * 4 = <tool_call>calculator {"expression": "3*4"}</tool_call><|im_end|>\n<|im_start|>tool\n12<|im_end|>\n'
        "<|im_start|>assistant\n pears.\n</think>\n<answer>\n12\n</answer><|im_end|>\n")
    plain = CONVERSATION[:2] + [{"role": "assistant", "content": "<think>\nhi\n</think>"}]
    tok = build_tokenizer(None)
    for gen in (False, True):
        assert tok.apply_chat_template(plain, tokenize=False, add_generation_prompt=gen) == \
            tok.apply_chat_template(plain, tokenize=False, add_generation_prompt=gen, chat_template=OLD_TEMPLATE)
    assert tok.apply_chat_template(plain, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)[
        "assistant_masks"] == tok.apply_chat_template(plain, tokenize=True, return_dict=True,
                                                      return_assistant_tokens_mask=True,
                                                      chat_template=OLD_TEMPLATE)["assistant_masks"]


def test_tool_tokenizer_makes_calls_cheap_and_trl_accepts_it(tool_tokenizer):
    from trl.chat_template_utils import is_chat_template_prefix_preserving, supports_tool_calling

    from thinktrain.tokenizer import build_tokenizer

    tok = tool_tokenizer
    call = '<tool_call>calculator {"expression": "3*4"}</tool_call><|im_end|>'
    pieces = [tok.decode([i]) for i in tok(call)["input_ids"]]
    assert pieces[:2] == ["<tool_call>", "calculator"] and pieces[-2:] == ["</tool_call>", "<|im_end|>"]
    assert len(pieces) <= 12  # bytes only, the same call is 49 tokens
    assert len(build_tokenizer(None)(call)["input_ids"]) > 40
    assert len(tok) == 512 and tok.response_template is not None
    assert supports_tool_calling(tok) and is_chat_template_prefix_preserving(tok)
    # without tools the vocabulary is the one a tokenizer always had
    texts = ["Sam has 3 * 4 = 12 pears. The answer is 12."] * 50
    assert build_tokenizer(texts, 300).get_vocab() == build_tokenizer(texts, 300, tools=()).get_vocab()


def test_parse_response_reads_our_turns_back(tool_tokenizer):
    from trl.chat_template_utils import parse_response

    tok = tool_tokenizer
    prompt = tok.apply_chat_template(CONVERSATION[:2], add_generation_prompt=True, tokenize=True, return_dict=False)

    def parse(text):
        return parse_response(tok, tok(text)["input_ids"], prefix=prompt, tools=[calculator])

    assert parse('<think>\nSam has 3 * 4 = <tool_call>calculator {"expression": "3*4"}</tool_call><|im_end|>') == \
        {"role": "assistant", "content": "<think>\nSam has 3 * 4 = ", "tool_calls": [CALL]}
    assert parse(" pears.\n</think>\n<answer>\n12\n</answer><|im_end|>") == CONVERSATION[-1]
    two = parse('x <tool_call>calculator {"expression": "1"}</tool_call><tool_call>calculator {"expression": "2"}'
                "</tool_call><|im_end|>")
    assert [c["function"]["arguments"] for c in two["tool_calls"]] == [{"expression": "1"}, {"expression": "2"}]
    # a malformed or cut call is text, not a call (TRL's fallback), and nothing raises
    for text in ('x <tool_call>calculator {"expression": </tool_call><|im_end|>', 'x <tool_call>calculator {"ex'):
        assert "tool_calls" not in parse(text)


def test_templates_without_tool_support_are_refused(tiny_model_dir):
    from transformers import AutoTokenizer

    from thinktrain.tools import prepare_tokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = OLD_TEMPLATE
    with pytest.raises(RecipeError, match=r"^tools: the chat template of .* cannot render tool calls and tool "
                                          r"replies; use a model whose template can"):
        prepare_tokenizer(tok, [calculator])
    tok.chat_template = OLD_TEMPLATE.replace("message['content'] +", "message['content'] + (message.tool_calls | "
                                             "tojson if message.tool_calls else '') +").replace(
        "'<|im_start|>' + message['role'] + '\\n' + message['content']",
        "'<|im_start|>' + message['role'] + '\\n' + message['content'] + (message.name or '')")
    with pytest.raises(RecipeError, match=r"^tools: TRL cannot read tool calls back from the chat template"):
        prepare_tokenizer(tok, [calculator])
    assert prepare_tokenizer(tok, []) is tok  # no tools: nothing to check


# --------------------------------------------------------------------------- GSM8K annotations -> conversations


def test_annotations_become_calls_whose_turns_rejoin_as_the_plain_solution():
    from thinktrain.data import think_answer, tool_conversation
    from thinktrain.rewards import completion_text

    answer = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
              "altogether in April and May.\n#### 72")
    turns = tool_conversation(answer)
    assert [m["role"] for m in turns] == ["assistant", "tool", "assistant", "tool", "assistant"]
    assert turns[0] == {"role": "assistant", "content": "<think>\nNatalia sold 48/2 = ", "tool_calls": [
        {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "48/2"}}}]}
    assert turns[1] == {"role": "tool", "name": "calculator", "content": "24"}
    assert turns[-1]["content"] == " clips altogether in April and May.\n</think>\n<answer>\n72\n</answer>"
    assert completion_text(turns) == think_answer(answer)
    assert tool_conversation("No annotations here.\n#### 3") == [
        {"role": "assistant", "content": "<think>\nNo annotations here.\n</think>\n<answer>\n3\n</answer>"}]


def test_every_synthetic_solution_rejoins_exactly():
    from thinktrain import synthetic
    from thinktrain.data import think_answer, tool_conversation
    from thinktrain.rewards import completion_text

    rows = synthetic.generate("worked", 400)
    for row in rows:
        turns = tool_conversation(row["answer"])
        assert completion_text(turns) == think_answer(row["answer"])
        assert sum(m["role"] == "tool" for m in turns) == row["steps"]  # one call per step, every reply right
        assert all(m["content"] != "" and not m["content"].startswith("error") for m in turns if m["role"] == "tool")


@pytest.mark.real_data
def test_real_gsm8k_annotations_become_calls():
    """On real GSM8K, the calculator agrees with the annotation's result on nearly every call, and where it does
    the conversation rejoins into exactly the plain SFT text."""
    from conftest import GSM8K
    from thinktrain.data import think_answer, tool_conversation
    from thinktrain.rewards import completion_text

    rows = [json.loads(line) for line in (GSM8K / "train.jsonl").read_text().splitlines()[:500]]
    calls = agree = same = 0
    for row in rows:
        turns = tool_conversation(row["answer"])
        replies = [m["content"] for m in turns if m["role"] == "tool"]
        written = [w.strip() for _, w in re.findall(r"<<([^<>=]*)=([^<>]*)>>", row["answer"])]
        calls += len(replies)
        agree += sum(Fraction(r) == Fraction(w.replace(",", "")) for r, w in zip(replies, written)
                     if not r.startswith("error") and re.fullmatch(r"-?[\d,]*\.?\d+", w))
        if all(r == w for r, w in zip(replies, written)):
            same += completion_text(turns) == think_answer(row["answer"])
    assert calls > 1000 and agree / calls > 0.97, (calls, agree)
    assert same / len(rows) > 0.9


# --------------------------------------------------------------------------- GSM8K annotations -> python programs


@pytest.mark.parametrize("expression, program, printed", [
    ("48/2", "print(48/2)", "24.0\n"), ("48+24", "print(48+24)", "72\n"), ("$1,200 * 3", "print(1200*3)", "3600\n"),
    ("2.3*100", "print(2.3*100)", "229.99999999999997\n"), ("20% * 150", "print((20/100)*150)", "30.0\n"),
    ("10/50%", "print(10/(50/100))", "20.0\n"), ("7 × 6", "print(7*6)", "42\n"), ("84 ÷ 4", "print(84/4)", "21.0\n"),
    ("2^3", "print(2**3)", "8\n"), ("10/3", "print(10/3)", "3.3333333333333335\n"), ("007+1", "print(7+1)", "8\n"),
    (".5*4", "print(.5*4)", "2.0\n"), ("(12+8)*3", "print((12+8)*3)", "60\n"), ("2**-2", "print(2**-2)", "0.25\n"),
])
def test_python_steps_print_exactly_what_python_prints(expression, program, printed):
    from thinktrain.data import python_step

    assert python_step(expression) == (program, printed)
    assert f"{eval(program[6:-1])}\n" == printed  # noqa: S307  (literal arithmetic) CPython itself agrees


@pytest.mark.parametrize("expression", ["1/0", "abc", "", "2**1000", "-2**2", "(1+1)%"])
def test_python_steps_refuse_what_no_program_computes_as_written(expression):
    """-2**2 is 4 to the calculator and -4 to Python: no call rather than a wrong program."""
    from thinktrain.data import python_step

    assert python_step(expression) is None


def test_annotations_become_python_programs_and_their_output():
    from thinktrain.data import tool_conversation
    from thinktrain.rewards import completion_text

    answer = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
              "altogether in April and May.\n#### 72")
    call = {"type": "function", "function": {"name": "python", "arguments": {"code": "print(48/2)"}}}
    call2 = {"type": "function", "function": {"name": "python", "arguments": {"code": "print(48+24)"}}}
    assert tool_conversation(answer, "python") == [
        {"role": "assistant", "content": "<think>\nNatalia sold 48/2 = ", "tool_calls": [call]},
        {"role": "tool", "name": "python", "content": "24.0\n"},  # not the written 24: the solution writes it after
        {"role": "assistant", "content": "24 clips in May.\nNatalia sold 48+24 = ", "tool_calls": [call2]},
        {"role": "tool", "name": "python", "content": "72\n"},  # the written 72 itself: dropped after it
        {"role": "assistant", "content": " clips altogether in April and May.\n</think>\n<answer>\n72\n</answer>"}]
    assert completion_text(tool_conversation(answer, "python")).endswith("</think>\n<answer>\n72\n</answer>")
    # a step no program computes as written stays text, its annotation removed; the next step is still a call
    turns = tool_conversation("A is -2**2 = <<-2**2=4>>4 and 4+1 = <<4+1=5>>5.\n#### 5", "python")
    assert turns[0]["content"] == "<think>\nA is -2**2 = 4 and 4+1 = " and turns[1]["content"] == "5\n"
    assert turns[-1]["content"] == ".\n</think>\n<answer>\n5\n</answer>"


@pytest.mark.real_data
def test_real_gsm8k_annotations_become_python_programs():
    """On real GSM8K (500 solutions, 1,639 annotations) all but one annotation (`560//10`) become programs, and
    what each prints is the annotation's own result (to a float's precision); the answers stay the gold ones."""
    from conftest import GSM8K
    from thinktrain.answers import gold_answer
    from thinktrain.data import tool_conversation

    rows = [json.loads(line) for line in (GSM8K / "train.jsonl").read_text().splitlines()[:500]]
    annotations = calls = agree = 0
    for row in rows:
        turns = tool_conversation(row["answer"], "python")
        assert turns[-1]["content"].endswith(f"<answer>\n{gold_answer(row['answer'])}\n</answer>")
        written = re.findall(r"<<([^<>=]*)=([^<>]*)>>", row["answer"])
        annotations += len(written)
        codes = [m["tool_calls"][0]["function"]["arguments"]["code"] for m in turns if m.get("tool_calls")]
        replies = [m["content"] for m in turns if m["role"] == "tool"]
        calls += len(replies)
        for code, reply in zip(codes, replies):
            value = next(float(w.replace(",", "")) for e, w in written if code == python_code(e))
            agree += abs(float(reply) - value) <= 1e-6 * max(1.0, abs(value))
    assert annotations > 1000 and calls / annotations > 0.99 and agree == calls, (annotations, calls, agree)


def python_code(expression: str) -> str | None:
    from thinktrain.data import python_step

    step = python_step(expression.strip())
    return step and step[0]


def test_the_data_calls_the_calculator_when_offered_else_python():
    from thinktrain.data import annotation_tool
    from thinktrain.tools import TOOLS, bounded

    python, calc = bounded(TOOLS["python"], 10), bounded(calculator, 10)  # as load_tools gives them
    assert annotation_tool([python]) == "python"
    assert annotation_tool([calc, python]) == annotation_tool([python, calc]) == "calculator"
    assert annotation_tool([calc]) == annotation_tool([]) == "calculator"


def _sandbox() -> str:
    from thinktrain.sandbox import check_mechanism

    return "namespaces" if check_mechanism("namespaces") is None else "rlimits"


def test_every_synthetic_python_reply_is_what_the_sandbox_prints():
    """The replies SFT trains the model to read are the real tool's: each program of 150 synthetic solutions, run
    in the python tool's sandbox, prints exactly its reply; each solution keeps its gold answer."""
    from thinktrain import synthetic
    from thinktrain.answers import gold_answer
    from thinktrain.data import tool_conversation
    from thinktrain.sandbox import Sandbox

    box = Sandbox(_sandbox(), timeout=5)
    try:
        calls = 0
        for row in synthetic.generate("worked", 150):
            turns = tool_conversation(row["answer"], "python")
            assert turns[-1]["content"].endswith(f"<answer>\n{gold_answer(row['answer'])}\n</answer>")
            for call, reply in zip(turns[0::2], turns[1::2]):
                assert reply["role"] == "tool" and reply["name"] == "python"
                code = call["tool_calls"][0]["function"]["arguments"]["code"]
                assert box.run_sync(code) == reply["content"], code
                calls += 1
            assert calls and sum(m["role"] == "tool" for m in turns) == row["steps"]  # every synthetic step a call
    finally:
        box.close()


def test_scratch_tokenizer_writes_and_reads_python_calls():
    """A scratch tokenizer built with the python tool: `<tool_call>` is one token, and TRL's parser reads a
    python call back into the call the tool loop runs."""
    from trl.chat_template_utils import parse_response

    from thinktrain.data import tool_conversation
    from thinktrain.tokenizer import build_tokenizer
    from thinktrain.tools import TOOLS, bounded

    python = bounded(TOOLS["python"], 10)  # as load_tools gives it (its sandbox starts on a first call: none here)
    tok = build_tokenizer(None, tools=[python])
    turns = tool_conversation("Sam has 3*4 = <<3*4=12>>12 pears.\n#### 12", "python")
    chat = [{"role": "user", "content": "Q?"}] + turns
    text = tok.apply_chat_template(chat, tokenize=False)
    assert ('<|im_start|>assistant\n<think>\nSam has 3*4 = <tool_call>python {"code": "print(3*4)"}</tool_call>'
            "<|im_end|>\n<|im_start|>tool\n12\n<|im_end|>\n<|im_start|>assistant\n pears.") in text
    assert tok.convert_tokens_to_ids("<tool_call>") != tok.unk_token_id
    prompt = tok.apply_chat_template(chat[:1], add_generation_prompt=True, tokenize=True, return_dict=False)
    ids = tok('<think>\nSam has 3*4 = <tool_call>python {"code": "print(3*4)"}</tool_call><|im_end|>')["input_ids"]
    assert parse_response(tok, ids, prefix=prompt, tools=[python]) == turns[0]


# --------------------------------------------------------------------------- rewards, card, report see tool use


def test_rewards_judge_the_whole_tool_conversation_and_never_crash():
    from thinktrain import rewards
    from thinktrain.rewards import (accuracy_reward, arithmetic_reward, completion_text, format_reward,
                                    tool_use_reward)

    done = CONVERSATION[2:]
    # kept calling tools, never answered: scored 0, not crashed on
    add = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "3+4"}}}
    looping = [{"role": "assistant", "content": "<think>\nFirst 3 + 4 = ", "tool_calls": [add]},
               {"role": "tool", "name": "calculator", "content": "7"},
               {"role": "assistant", "content": " and again ", "tool_calls": [add]}]
    failed = [CONVERSATION[2], {"role": "tool", "name": "calculator", "content": "error: division by zero"},
              CONVERSATION[4]]
    before = rewards.errors
    assert accuracy_reward([done, looping, failed], solution=["12"] * 3) == [1.0, 0.0, 1.0]
    assert format_reward([done, looping, failed]) == [1.0, 0.0, 1.0]
    assert arithmetic_reward([done]) == [1.0]  # "3 * 4 = " + "12": the reply completes the equation
    assert tool_use_reward([done, looping, failed, [{"role": "assistant", "content": "x"}], "text", None]) == \
        [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert rewards.errors == before
    # Qwen's parser splits <think> off into reasoning_content: it is put back
    qwen = [{"role": "assistant", "reasoning_content": "3 * 4 = 12", "content": "<answer>\n12\n</answer>"}]
    assert completion_text(qwen) == "<think>\n3 * 4 = 12\n</think>\n<answer>\n12\n</answer>"
    assert format_reward([qwen]) == [1.0]


def test_model_card_and_header_say_tools_were_used(tmp_path):
    from thinktrain.hub import model_card
    from thinktrain.recipe import parse

    recipe = parse([str(ROOT / "recipes/tiny/grpo.yaml"), "--tools", "calculator", "--output_dir", str(tmp_path),
                    "--max_tool_calling_iterations", "4"])
    card = model_card(recipe.script_args, recipe.training_args, recipe.model_args, {}, recipe.resolved())
    assert "- tool-use" in card
    assert "trained to call tools while it thinks: `calculator`" in card
    assert "thinktrain eval --tools calculator" in card
    from thinktrain.run import header

    class Rows(list):
        pass

    text = header(recipe, Rows([1, 2]), None)
    assert "  tools      calculator (called while sampling, replies count against the token budget, at most 4 " \
           "rounds)" in text


def test_unknown_or_empty_tools_stop_the_recipe_in_one_line(tmp_path):
    from thinktrain.recipe import parse

    recipe = tmp_path / "empty.yaml"
    recipe.write_text((ROOT / "recipes/tiny/grpo.yaml").read_text() + "tools: []\n")
    with pytest.raises(RecipeError, match=r"^tools is empty: name at least one tool"):
        parse([str(recipe)])

    with pytest.raises(RecipeError, match=r"^tools: unknown tool 'calculato' \(did you mean 'calculator'\?\)"):
        parse([str(ROOT / "recipes/tiny/grpo.yaml"), "--tools", "calculato"])
    with pytest.raises(RecipeError, match=r"^tools: sft turns the data's <<expr=result>> annotations into calculator "
                                          r"or python calls; add calculator or python to tools"):
        parse([str(ROOT / "recipes/tiny/sft.yaml"), "--tools", "test_tools:typed_tool"])
    assert parse([str(ROOT / "recipes/tiny/sft.yaml"), "--tools", "python"]).task == "sft"  # python's programs


def typed_tool(x: str) -> str:
    """Echo.

    Args:
        x: anything
    """
    return x


def test_report_shows_tool_use(tmp_path):
    from thinktrain.report import write_report

    (tmp_path / "results.json").write_text(json.dumps({
        "sft": {"accuracy": 0.9, "n": 500, "k": 8, "sampled_accuracy": 0.6, "pass_at_k": 0.95, "tool_use": 1.0,
                "sampled_tool_use": 0.937},
        "grpo": {"accuracy": 0.9, "n": 500, "k": 8, "sampled_accuracy": 0.9, "pass_at_k": 0.96, "tool_use": 1.0,
                 "sampled_tool_use": 1.0}}))
    text = write_report(tmp_path).read_text()
    assert "| stage | n | k | pass@1 | sampled | pass@8 | tool use | tool use (sampled) |" in text
    assert "| sft | 500 | 8 | 90.0% | 60.0% | 95.0% | 100.0% | 93.7% |" in text


# --------------------------------------------------------------------------- tool faults in the run log


def test_tool_faults_reach_the_run_log():
    """tools.bounded turns failures into strings (TRL's tools/failure_frequency stays 0): GRPO logs its counts."""
    import asyncio
    from types import SimpleNamespace

    from transformers import TrainerControl, TrainerState

    from thinktrain.grpo import ToolFaults, add_tool_faults
    from thinktrain.tools import bounded

    def fails(text: str) -> str:
        """Fail.

        Args:
            text: anything
        """
        raise RuntimeError("no")

    callback, state = ToolFaults(), TrainerState()
    callback.on_train_begin(None, state, TrainerControl())
    assert asyncio.run(bounded(fails, 1)(text="x")) == "error: no"
    logs = {"loss": 1.0}
    state.log_history.append({**logs, "step": 1})
    callback.on_log(None, state, TrainerControl(), logs=logs)
    assert logs == {"loss": 1.0, "tools/timeouts": 0, "tools/errors": 1}
    assert state.log_history[-1] == {"loss": 1.0, "step": 1, "tools/timeouts": 0, "tools/errors": 1}

    trainer = SimpleNamespace(callback_handler=SimpleNamespace(callbacks=["printer", "reporter"]))
    add_tool_faults(trainer, SimpleNamespace(tools=[]))
    assert trainer.callback_handler.callbacks == ["printer", "reporter"]
    add_tool_faults(trainer, SimpleNamespace(tools=[fails]))
    assert isinstance(trainer.callback_handler.callbacks[0], ToolFaults)  # before the reporters
