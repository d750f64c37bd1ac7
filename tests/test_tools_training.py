"""Tools in training and evaluation: a tiny model that learned to call the calculator, run through TRL's own tool
loop (GRPO), evaluation's loop and expert iteration; the two loops build the same conversation for the same
tokens; SFT trains the calls and not the replies; bad tool recipes stop in one line before any model loads."""

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from thinktrain.tools import calculator

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = "Think."
QUESTION = "What is 2 + 3?"
ROW = {"question": QUESTION, "answer": "2 + 3 = <<2+3=5>>5 in all.\n#### 5"}


def _sft_recipe(tmp, data, out, steps, tool="calculator"):
    recipe = tmp / "sft.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        task: sft
        model_name_or_path: scratch:micro
        dataset_name: {data}
        dataset_train_split: train
        tools: [{tool}]
        system_prompt: {SYSTEM}
        max_length: 256
        per_device_train_batch_size: 8
        max_steps: {steps}
        learning_rate: 1.0e-2
        lr_scheduler_type: constant
        bf16: false
        use_cpu: true
        gradient_checkpointing: false
        logging_steps: 50
        save_strategy: "no"
        report_to: none
        dataloader_pin_memory: false
        seed: 0
        output_dir: {out}
        """))
    return recipe


@pytest.fixture(scope="module")
def calculator_model(tmp_path_factory):
    """A micro model SFT-trained (through `thinktrain train`, tools: [calculator]) on one calculator
    conversation until it makes the call: `2 + 3 = <tool_call>calculator {"expression": "2+3"}</tool_call>`."""
    from thinktrain.cli import main

    tmp = tmp_path_factory.mktemp("calc")
    data = tmp / "one.jsonl"
    data.write_text((json.dumps(ROW) + "\n") * 64)
    out = tmp / "sft"
    assert main(["train", str(_sft_recipe(tmp, data, out, 200))]) == 0
    return out, data


def _trained_text(model_dir, tok, prompt, completion, tools) -> str:
    """The tokens SFTTrainer puts a loss on for one tool conversation (assistant_only_loss), decoded."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from thinktrain.data import tool_schemas

    ds = Dataset.from_list([{"prompt": prompt, "completion": completion, "tools": tool_schemas(tools)}])
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), processing_class=tok, train_dataset=ds,
                         args=SFTConfig(output_dir=str(model_dir.parent / "x"), assistant_only_loss=True, use_cpu=True,
                                        report_to="none", max_length=512))
    return tok.decode([label for label in trainer.train_dataset[0]["labels"] if label != -100])


@pytest.mark.slow
def test_sft_with_tools_trains_the_calls_not_the_replies(calculator_model):
    """The saved model's tokenizer carries the tool tags and the response template; the SFT labels cover the
    assistant's call tokens and none of the calculator's reply."""
    from transformers import AutoTokenizer

    from thinktrain.data import tool_conversation

    out, _ = calculator_model
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.response_template is not None and tok.convert_tokens_to_ids("<tool_call>") != tok.unk_token_id
    recipe = (out / "recipe.yaml").read_text()
    assert "tools:\n- calculator" in recipe
    prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    trained = _trained_text(out, tok, prompt, tool_conversation(ROW["answer"]), [calculator])
    assert trained == ('<think>\n2 + 3 = <tool_call>calculator {"expression": "2+3"}</tool_call><|im_end|>'
                       " in all.\n</think>\n<answer>\n5\n</answer><|im_end|>")


@pytest.mark.slow
def test_eval_runs_the_tool_loop_and_reports_tool_use(calculator_model, run_cli, tmp_path):
    out, data = calculator_model
    result = tmp_path / "eval.json"
    code, stdout, _ = run_cli("eval", "--model", out, "--dataset", data, "--limit", 1, "--tools", "calculator",
                              "--max_new_tokens", 128, "--num_samples", 2, "--output", result, "--quiet")
    assert code == 0
    r = json.loads(result.read_text())
    assert r["tools"] == ["calculator"] and r["tool_use"] == 1.0 and r["sampled_tool_use"] == 1.0
    p = r["problems"][0]
    assert p["calls"] == 1 and p["completion"].startswith("<think>\n2 + 3 = 5 in all.")  # "5": the calculator's
    assert "tools calculator: called in 100.0% of greedy completions, 100.0% of samples" in stdout
    # without --tools the same model stops at its call: nothing runs it
    code, _, _ = run_cli("eval", "--model", out, "--dataset", data, "--limit", 1, "--max_new_tokens", 128,
                         "--output", result, "--quiet")
    r = json.loads(result.read_text())
    assert r["tool_use"] is None and r["problems"][0]["completion"].startswith("<think>\n2 + 3 = <tool_call>")


@pytest.mark.slow
def test_grpo_rollouts_call_the_calculator_inside_trls_loop(calculator_model, run_cli, tmp_path, monkeypatch):
    """A real GRPO run (TRL's GRPOTrainer and its tool loop, no mock): the completions the rewards receive hold
    the model's call and the calculator's reply, and TRL logs the calls."""
    out, data = calculator_model
    (tmp_path / "recorder.py").write_text(textwrap.dedent(f"""\
        import json
        def recorder(completions, **kwargs):
            with open({str(tmp_path / 'seen.jsonl')!r}, "a") as f:
                f.writelines(json.dumps(c) + "\\n" for c in completions)
            return [0.0] * len(completions)
        """))
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_cli("train", ROOT / "recipes" / "tiny" / "grpo.yaml", "--model_name_or_path", out,
                           "--dataset_name", data, "--dataset_train_split", "train", "--tools", "calculator",
                           "--reward_funcs", "accuracy", "recorder:recorder", "--reward_weights", "1.0", "1.0",
                           "--system_prompt", SYSTEM, "--max_completion_length", 128, "--max_steps", 1,
                           "--logging_steps", 1, "--output_dir", tmp_path / "grpo")
    assert code == 0, err
    seen = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
    assert len(seen) == 8
    calls = [c for c in seen if len(c) >= 3 and c[0].get("tool_calls")]
    assert calls, seen[:2]
    for c in calls:
        assert c[0]["tool_calls"][0]["function"] == {"name": "calculator", "arguments": {"expression": "2+3"}}
        assert c[1] == {"role": "tool", "name": "calculator", "content": "5"}
    logged = re.findall(r"'tools/call_frequency': '([0-9.]+)'", stdout + err)  # TRL's own metric, logged
    assert logged and float(logged[0]) == len(calls) / len(seen)


@pytest.mark.slow
def test_rft_samples_with_tools_and_trains_on_the_conversations(calculator_model, run_cli, tmp_path):
    out, data = calculator_model
    code, _, err = run_cli("train", ROOT / "recipes" / "tiny" / "rft.yaml", "--model_name_or_path", out,
                           "--dataset_name", data, "--dataset_train_split", "train", "--tools", "calculator",
                           "--system_prompt", SYSTEM, "--rounds", 1, "--prompts_per_round", 4,
                           "--max_completion_length", 128, "--output_dir", tmp_path / "rft")
    assert code == 0, err
    log = json.loads((tmp_path / "rft" / "rounds.jsonl").read_text().splitlines()[0])
    kept = [json.loads(line) for line in (tmp_path / "rft" / "round-1" / "kept.jsonl").read_text().splitlines()]
    assert log["kept"] == len(kept) > 0 and log["train_loss"] is not None
    for row in kept:  # what was kept is the whole tool conversation, the calculator's reply in it
        assert row["completion"][1] == {"role": "tool", "name": "calculator", "content": "5"}


# --------------------------------------------------------------------------- the python tool


@pytest.fixture(scope="module")
def python_model(tmp_path_factory):
    """A micro model SFT-trained (through `thinktrain train`, tools: [python]) on the same one conversation, its
    annotation now a program: `2 + 3 = <tool_call>python {"code": "print(2+3)"}</tool_call>`, the reply `5\\n`."""
    from thinktrain.cli import main

    tmp = tmp_path_factory.mktemp("python")
    data = tmp / "one.jsonl"
    data.write_text((json.dumps(ROW) + "\n") * 64)
    out = tmp / "sft"
    assert main(["train", str(_sft_recipe(tmp, data, out, 200, tool="python"))]) == 0
    return out, data


@pytest.mark.slow
def test_sft_with_python_trains_the_program_not_its_output(python_model):
    """SFT data of `tools: [python]`, as `thinktrain train` shaped it: the labels cover the program the model writes
    and none of the sandbox's output."""
    from transformers import AutoTokenizer

    from thinktrain.data import tool_conversation
    from thinktrain.tools import TOOLS

    out, _ = python_model
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.response_template is not None and "tools:\n- python" in (out / "recipe.yaml").read_text()
    prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    completion = tool_conversation(ROW["answer"], "python")
    assert completion[1] == {"role": "tool", "name": "python", "content": "5\n"}
    trained = _trained_text(out, tok, prompt, completion, [TOOLS["python"]])
    assert trained == ('<think>\n2 + 3 = <tool_call>python {"code": "print(2+3)"}</tool_call><|im_end|>'
                       " in all.\n</think>\n<answer>\n5\n</answer><|im_end|>")


@pytest.mark.slow
def test_a_model_sft_trained_on_python_calls_writes_one(python_model, run_cli, tmp_path):
    """After `thinktrain train` (SFT, tools: [python]), greedy generation calls python: evaluation's tool loop runs
    the program in the sandbox and the model goes on after its output."""
    out, data = python_model
    result = tmp_path / "eval.json"
    code, stdout, _ = run_cli("eval", "--model", out, "--dataset", data, "--limit", 1, "--tools", "python",
                              "--max_new_tokens", 128, "--output", result, "--quiet")
    assert code == 0
    r = json.loads(result.read_text())
    assert r["tools"] == ["python"] and r["tool_use"] == 1.0
    p = r["problems"][0]
    assert p["calls"] == 1 and p["completion"].startswith("<think>\n2 + 3 = 5\n in all.")  # "5\n": the sandbox's
    # without --tools the same model stops at its call: the program it wrote, nothing ran it
    code, _, _ = run_cli("eval", "--model", out, "--dataset", data, "--limit", 1, "--max_new_tokens", 128,
                         "--output", result, "--quiet")
    assert code == 0
    assert json.loads(result.read_text())["problems"][0]["completion"].startswith(
        '<think>\n2 + 3 = <tool_call>python {"code": "print(2+3)"}</tool_call>')


def _recorder(tmp_path, name):
    """A reward module `name` (each test its own: a module imported once stays in sys.modules) that writes every
    completion it receives to seen.jsonl; returns the reader of that file."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(f"""\
        import json
        def recorder(completions, **kwargs):
            with open({str(tmp_path / 'seen.jsonl')!r}, "a") as f:
                f.writelines(json.dumps(c) + "\\n" for c in completions)
            return [0.0] * len(completions)
        """))
    return lambda: [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_grpo_rollouts_run_python_in_the_sandbox_inside_trls_loop(python_model, run_cli, tmp_path, monkeypatch):
    """recipes/tiny/grpo_python.yaml from the python-trained model: a user reward receives, from TRL's tool loop,
    the model's program and a tool message holding what the sandbox printed."""
    out, data = python_model
    seen = _recorder(tmp_path, "python_recorder")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("train", ROOT / "recipes" / "tiny" / "grpo_python.yaml", "--model_name_or_path", out,
                           "--dataset_name", data, "--dataset_train_split", "train",
                           "--reward_funcs", "accuracy", "python_recorder:recorder", "--reward_weights", "1.0", "1.0",
                           "--system_prompt", SYSTEM, "--max_completion_length", 128, "--max_steps", 1,
                           "--output_dir", tmp_path / "grpo")
    assert code == 0, err
    completions = seen()
    calls = [c for c in completions if len(c) >= 3 and c[0].get("tool_calls")]
    assert len(completions) == 8 and calls, completions[:2]
    for c in calls:
        assert c[0]["tool_calls"][0]["function"] == {"name": "python", "arguments": {"code": "print(2+3)"}}
        assert c[1] == {"role": "tool", "name": "python", "content": "5\n"}  # the program's output, run for real


SLEEPY = '''\
import time


def sleepy(seconds: str) -> str:
    """Sleep, and never come back.

    Args:
        seconds: how long
    """
    time.sleep(10**6)
    return "woke"
'''


@pytest.mark.slow
def test_a_hung_user_tool_is_cut_at_tool_timeout_and_grpo_finishes(run_cli, tmp_path, monkeypatch):
    """A user tool that sleeps 10**6 s, called by every rollout of a tiny GRPO run with tool_timeout: 1: each call
    is cut at 1 s (TRL runs one completion's calls after another's: 4 calls, at least 4 s), the model reads the
    error in its next turn, the run ends with code 0 and trainer_state.json logs the 4 timeouts. The model's turns
    are scripted (a random micro model would not call the tool); the tools, TRL's loop and the trainer are real."""
    from trl import GRPOTrainer

    (tmp_path / "sleepy_tools.py").write_text(SLEEPY)
    seen = _recorder(tmp_path, "sleepy_recorder")
    turns = ['<think>\nwait <tool_call>sleepy {"seconds": "forever"}</tool_call><|im_end|>',
             " done.\n</think>\n<answer>\n5\n</answer><|im_end|>"]
    contexts = []

    def scripted(self, prompt_ids, *args, **kwargs):  # the call first; after a tool reply, the answer
        texts = [self.processing_class.decode(list(ids)) for ids in prompt_ids]
        contexts.extend(texts)
        return [self.processing_class(turns["<|im_start|>tool\n" in t])["input_ids"] for t in texts], None

    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", scripted)
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    code, _, err = run_cli("train", ROOT / "recipes" / "tiny" / "grpo.yaml", "--tools", "sleepy_tools:sleepy",
                           "--tool_timeout", 1, "--reward_funcs", "accuracy", "sleepy_recorder:recorder",
                           "--reward_weights", "1.0", "1.0", "--num_generations", 4,
                           "--per_device_train_batch_size", 4, "--max_completion_length", 256, "--max_steps", 1,
                           "--logging_steps", 1, "--output_dir", tmp_path / "grpo")
    elapsed = time.monotonic() - start
    assert code == 0, err
    assert 4 <= elapsed < 120, elapsed
    error = "error: tool 'sleepy' timed out after 1 s"
    completions = seen()
    assert len(completions) == 4
    for c in completions:
        assert c[0]["tool_calls"][0]["function"] == {"name": "sleepy", "arguments": {"seconds": "forever"}}
        assert c[1] == {"role": "tool", "name": "sleepy", "content": error}
        assert c[2]["content"].endswith("<answer>\n5\n</answer>")
    second = [t for t in contexts if "<|im_start|>tool\n" in t]
    assert len(second) == 4 and all(f"<|im_start|>tool\n{error}<|im_end|>" in t for t in second)  # what it read
    log = json.loads((tmp_path / "grpo" / "trainer_state.json").read_text())["log_history"]
    assert max(h.get("tools/timeouts", 0) for h in log) == 4 and log[0]["tools/errors"] == 0


# --------------------------------------------------------------------------- the two loops agree


@pytest.mark.slow
def test_eval_loop_and_trls_loop_build_the_same_conversation(tiny_model_dir, tmp_path, monkeypatch):
    """Same tokens in, same conversation out: TRL's GRPOTrainer._generate (its tool loop) and
    generation.generate_with_tools, both driven by one scripted generator (a call, a failing call, an answer)."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from thinktrain import generation
    from thinktrain.generation import Completion, generate_with_tools, render_ids, tool_template
    from thinktrain.tools import prepare_tokenizer

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_model_dir), [calculator])
    turns = ['<think>\nA = <tool_call>calculator {"expression": "2+3"}</tool_call><|im_end|>',
             ' ok <tool_call>calculator {"expression": "1/0"}</tool_call><tool_call>nope {}</tool_call><|im_end|>',
             " done.\n</think>\n<answer>\n5\n</answer><|im_end|>"]
    script = [tok(t)["input_ids"] for t in turns]
    tool_start = tok.convert_tokens_to_ids("<|im_start|>")

    def scripted(context: list[int]) -> list[int]:  # the turn to write: by the tool replies so far (0, 1, then 3)
        replies = sum(1 for i in range(len(context)) if context[i] == tool_start and
                      tok.decode(context[i + 1: i + 5]) == "tool")
        return script[min(replies, 2)]

    prompts = [[{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]] * 2
    trainer = GRPOTrainer(model=str(tiny_model_dir), reward_funcs=lambda completions, **k: [0.0] * len(completions),
                          args=GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2,
                                          max_completion_length=400, use_cpu=True, report_to="none"),
                          train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]), processing_class=tok,
                          tools=[calculator])
    trainer._sync_tool_dicts = [{"calculator": calculator}] * 2  # what _generate_and_score_completions sets up
    trainer._async_tool_dicts = [{}] * 2
    monkeypatch.setattr(trainer, "_generate_single_turn",
                        lambda ids, *a, **k: ([scripted(list(x)) for x in ids], None))
    trl_prompt_ids, trl_ids, tool_mask, trl_completions, *_ = trainer._generate([list(p) for p in prompts])

    def fake_generate(model, tokenizer, prompts, *, max_new_tokens, **kw):
        budgets = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(prompts)
        out = []
        for ids, budget in zip(prompts, budgets):
            new = scripted(list(ids))[:budget]
            out.append(Completion(tokenizer.decode(new, skip_special_tokens=True), len(new), True, tuple(new)))
        return out

    monkeypatch.setattr(generation, "generate", fake_generate)
    template = tool_template(tok)
    ids = [render_ids(tok, p, [calculator], template) for p in prompts]
    assert ids == [list(x) for x in trl_prompt_ids]
    ours = generate_with_tools(trainer.model, tok, ids, [calculator], max_new_tokens=400, batch_size=2,
                               chat_template=template)
    for mine, theirs_ids, theirs in zip(ours, trl_ids, trl_completions):
        assert list(mine.ids) == list(theirs_ids)
        assert list(mine.messages) == theirs
        assert [m["role"] for m in theirs] == ["assistant", "tool", "assistant", "tool", "tool", "assistant"]
        assert theirs[1]["content"] == "5" and "division by zero" in theirs[3]["content"]
        assert theirs[4]["content"] == "{'error': 'Tool nope not found.'}"
        assert mine.calls == 3 and mine.text.endswith("<answer>\n5\n</answer>")


# --------------------------------------------------------------------------- bad tool recipes: one line, exit 2


@pytest.mark.slow
@pytest.mark.parametrize("extra, message", [
    (["--tools", "calculater"], "tools: unknown tool 'calculater' (did you mean 'calculator'?); built-in: "
                                "calculator, python, or give 'pkg.module:function'"),
    (["--tools", "thinktrain.tools:show"], "tools: 'thinktrain.tools:show' can't be offered to the model: "),
])
def test_bad_tools_stop_in_one_line_before_the_model_loads(extra, message):
    proc = subprocess.run([sys.executable, "-m", "thinktrain", "train", str(ROOT / "recipes" / "tiny" / "grpo.yaml"),
                           *extra], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("thinktrain: error: " + message), lines


@pytest.mark.slow
def test_a_template_without_tools_stops_in_one_line(tiny_model_dir, tmp_path):
    import shutil

    from test_tools import OLD_TEMPLATE

    model = tmp_path / "old"
    shutil.copytree(tiny_model_dir, model)
    (model / "chat_template.jinja").write_text(OLD_TEMPLATE)
    proc = subprocess.run([sys.executable, "-m", "thinktrain", "train", str(ROOT / "recipes" / "tiny" / "grpo.yaml"),
                           "--model_name_or_path", str(model), "--tools", "calculator", "--output_dir",
                           str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and "cannot render tool calls and tool replies" in lines[0], lines
    assert "Loading weights" not in proc.stderr
