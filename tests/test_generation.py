"""The one generator (thinktrain.generation): its entry points, and the single private TRL method it relies on."""

import inspect
import re

import pytest

from thinktrain import generation
from thinktrain.tools import calculator


@pytest.fixture(scope="module")
def tok():
    from thinktrain.tokenizer import build_tokenizer

    return build_tokenizer(None, tools=[calculator])


def test_trl_tool_suffix_method_reads_only_what_we_give_it():
    """generation._suffix_ids calls GRPOTrainer._get_tool_suffix_ids with a stand-in `self`: if a TRL upgrade makes
    that method read another attribute (or take other arguments), this fails here, by name, instead of deep in a
    tool-calling evaluation."""
    from trl import GRPOTrainer

    method = GRPOTrainer._get_tool_suffix_ids
    assert list(inspect.signature(method).parameters) == ["self", "tool_messages"]
    read = set(re.findall(r"self\.(\w+)", inspect.getsource(method)))
    assert read == set(generation.SUFFIX_ATTRIBUTES), f"TRL's _get_tool_suffix_ids now reads {sorted(read)}"


def test_tool_suffix_is_the_reply_then_the_next_assistant_header(tok):
    ids = generation._suffix_ids(tok, None, [{"role": "tool", "name": "calculator", "content": "12"}])
    text = tok.decode(ids)
    assert "12" in text and text.rstrip().endswith("<|im_start|>assistant")


def test_encode_prompts_renders_text_without_tools_and_grpo_ids_with_them(tok):
    chats = [[{"role": "user", "content": "What is 3 * 4?"}], [{"role": "user", "content": "And 5 - 2?"}]]
    texts, template = generation.encode_prompts(tok, chats)
    assert template is None and texts == [generation.render(tok, c) for c in chats]
    assert texts[0].endswith("<|im_start|>assistant\n") and "What is 3 * 4?" in texts[0]
    ids, template = generation.encode_prompts(tok, chats, [calculator])
    assert template == generation.tool_template(tok)
    assert ids == [generation.render_ids(tok, c, [calculator], template) for c in chats]
    assert all(isinstance(i, int) for i in ids[0]) and tok.decode(ids[0]) == texts[0]


def test_complete_dispatches_on_tools(monkeypatch):
    seen = []
    monkeypatch.setattr(generation, "generate", lambda *a, **k: seen.append(("plain", k)) or ["p"])
    monkeypatch.setattr(generation, "generate_with_tools", lambda *a, **k: seen.append(("tools", k)) or ["t"])
    assert generation.complete("model", "tok", ["x"], max_new_tokens=4, batch_size=1) == ["p"]
    assert generation.complete("model", "tok", [[1]], tools=[calculator], chat_template="T", max_iterations=2,
                               max_new_tokens=4, batch_size=1) == ["t"]
    assert seen[0] == ("plain", {"max_new_tokens": 4, "batch_size": 1})
    assert seen[1] == ("tools", {"chat_template": "T", "max_iterations": 2, "max_new_tokens": 4, "batch_size": 1})


@pytest.mark.parametrize("lora", [False, True], ids=["model", "lora"])
def test_sampling_reads_each_repeated_prompt_once_and_samples_the_same_tokens(tiny_model_dir, monkeypatch, lora):
    """k samples of a prompt share one forward of the prompt (its keys and values copied to each row): the
    completions are token for token those of k separate prompt forwards, under the same seed, LoRA or not; greedy
    generation (no repeated rows) never takes that path."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    if lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(1)  # adapters that change the outputs (init_lora_weights=False: B is not zero)
        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    questions = ("A longer question: what is 12 + 30 - 7?", "What is 3 * 4?", "Hi")  # three widths: left padding
    rows = [generation.render(tok, [{"role": "user", "content": q}]) for q in questions for _ in range(4)]
    shared, real = [], generation._shared_prompts
    monkeypatch.setattr(generation, "_shared_prompts", lambda *a: shared.append(real(*a)) or shared[-1])

    def sample():
        torch.manual_seed(0)
        return generation.generate(model, tok, rows, max_new_tokens=12, batch_size=8, do_sample=True, progress=False)

    once = sample()
    assert [cache is not None for cache in shared] == [True, True]  # batches of 8 and 4 rows, each repeating prompts
    monkeypatch.setattr(generation, "_shared_prompts", lambda *a: None)
    assert once == sample()
    assert len({c.text for c in once}) > 3  # really sampled: the rows of one prompt differ
    shared.clear()
    generation.generate(model, tok, rows[:1], max_new_tokens=4, batch_size=8, progress=False)
    assert shared == []
