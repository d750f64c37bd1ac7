import json
import os
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from thinktrain.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, THINK_TAGS, build_tokenizer

SHARED = Path(os.environ.get("THINKTRAIN_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
GSM8K = SHARED / "data" / "gsm8k"
VOCAB = 1000  # deliberately not a power of two: len(tokenizer) must respect it exactly

MESSAGES = [
    {"role": "system", "content": "Think, then answer."},
    {"role": "user", "content": "What is 12+30?"},
    {"role": "assistant", "content": "<think>\n12+30=42\n</think>\n<answer>42</answer>"},
]
RENDERED = (
    "<|im_start|>system\nThink, then answer.<|im_end|>\n"
    "<|im_start|>user\nWhat is 12+30?<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n12+30=42\n</think>\n<answer>42</answer><|im_end|>\n"
)
UNICODE = "Café — 5€ ≈ ½ × 3 😀🧮 中文 \t\r\n  \x00\x7f naïve   trailing "


def gsm8k_texts(split: str, n: int | None = None) -> list[str]:
    if not (GSM8K / f"{split}.jsonl").is_file():
        pytest.skip(f"needs GSM8K data in {GSM8K} (set THINKTRAIN_SHARED)")
    with open(GSM8K / f"{split}.jsonl") as f:
        rows = [json.loads(line) for line in f][:n]
    return [r["question"] + "\n" + r["answer"] for r in rows]


@pytest.fixture(scope="module")
def trained():
    return build_tokenizer(gsm8k_texts("train", 3000), vocab_size=VOCAB)


@pytest.fixture(scope="module")
def byte_tok():
    return build_tokenizer(None)


@pytest.fixture(params=["bytes", "trained"])
def tok(request):  # tests that must hold for both variants
    return request.getfixturevalue("byte_tok" if request.param == "bytes" else "trained")


@pytest.mark.real_data
def test_gsm8k_test_split_round_trips_exactly(trained):
    texts = gsm8k_texts("test")
    joined = "".join(texts)
    assert "<<48/2=24>>" in joined and "$" in joined and "\n" in joined  # the tricky bits really are in there
    for text in texts + [UNICODE]:
        ids = trained.encode(text, add_special_tokens=False)
        assert trained.decode(ids) == text
    # the merges are real: GSM8K text takes far fewer tokens than bytes
    n_tokens = sum(len(trained.encode(t, add_special_tokens=False)) for t in texts[:200])
    assert n_tokens < 0.6 * sum(len(t.encode()) for t in texts[:200])


@pytest.mark.real_data
def test_vocab_size_is_respected(trained):
    assert len(trained) <= VOCAB
    assert len(trained) > 900  # and actually used for merges
    small = build_tokenizer(gsm8k_texts("train", 200), vocab_size=300)
    assert len(small) <= 300
    with pytest.raises(ValueError, match="vocab_size"):
        build_tokenizer(None, vocab_size=100)


def test_digits_are_one_token_each(tok):
    assert tok.tokenize("12345") == list("12345")
    ids = tok.encode("Pay $1,234.50 for 987 pens", add_special_tokens=False)
    digit_tokens = [tok.decode([i]) for i in ids if any(c.isdigit() for c in tok.decode([i]))]
    assert digit_tokens == list("123450987")
    # no merge ever glues a digit to anything
    assert all(len(t) == 1 for t in tok.get_vocab() if any(c.isdigit() for c in t) and t not in SPECIAL_TOKENS)


def test_special_tokens_and_tags_are_single_ids(tok):
    for t in SPECIAL_TOKENS + THINK_TAGS:
        assert len(tok.encode(t, add_special_tokens=False)) == 1, t
        ids = tok.encode(f"a {t}b", add_special_tokens=False)
        assert tok.convert_tokens_to_ids(t) in ids, t
    assert set(SPECIAL_TOKENS) <= set(tok.all_special_tokens)
    assert not set(THINK_TAGS) & set(tok.all_special_tokens)  # ordinary added tokens
    assert len({tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + THINK_TAGS}) == 8
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|endoftext|>", "<|im_end|>", "<|pad|>")
    assert tok("hi")["input_ids"] == tok.encode("hi", add_special_tokens=False)  # nothing added behind our back


def test_tags_survive_skip_special_tokens_with_exact_whitespace(tok):
    completion = " <think>\n 12 + 30 \n\n</think>\n<answer> 42 </answer>  "
    ids = tok.encode("<|im_start|>assistant\n" + completion + "<|im_end|>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "assistant\n" + completion
    assert tok.decode(ids) == "<|im_start|>assistant\n" + completion + "<|im_end|>"


def test_byte_only_variant(byte_tok):
    assert len(byte_tok) == len(SPECIAL_TOKENS) + 256 + len(THINK_TAGS) <= 300
    # no merges: every ordinary token is a single byte (one char of the byte-level alphabet)
    assert all(len(t) == 1 for t in byte_tok.get_vocab() if t not in SPECIAL_TOKENS + THINK_TAGS)
    ids = byte_tok.encode(UNICODE, add_special_tokens=False)
    assert len(ids) == len(UNICODE.encode())
    assert byte_tok.decode(ids) == UNICODE


def test_chat_template_renders_chatml(tok):
    assert tok.chat_template == CHAT_TEMPLATE
    assert tok.apply_chat_template(MESSAGES, tokenize=False) == RENDERED
    prompt = tok.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == RENDERED[: RENDERED.index("<think>")]
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    ids = tok.apply_chat_template(MESSAGES, tokenize=True, return_dict=True)["input_ids"]
    assert ids == tok.encode(RENDERED, add_special_tokens=False)  # rendering then encoding: same ids, no bos


def test_assistant_tokens_mask_covers_exactly_assistant_content(tok):
    chat = MESSAGES + [
        {"role": "user", "content": "And 7*6?"},
        {"role": "assistant", "content": "<think>7*6=42</think>\n<answer>42</answer>"},
    ]
    out = tok.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    runs, current = [], []
    for i, m in zip(ids, mask):
        if m:
            current.append(i)
        elif current:
            runs.append(current)
            current = []
    assert [tok.decode(r) for r in runs] == [m["content"] + "<|im_end|>" for m in chat if m["role"] == "assistant"]
    assert mask[-1] == 0  # the "\n" after the last <|im_end|> is template, not assistant output


def test_prompt_rendering_is_prefix_of_prompt_plus_completion(tok):
    from trl.data_utils import apply_chat_template as trl_apply_chat_template

    prompt, completion = MESSAGES[:2], MESSAGES[2:]
    p_text = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tok.apply_chat_template(prompt + completion, tokenize=False)
    assert full_text.startswith(p_text)
    # token level too, as TRL's SFT tokenizes both and takes the completion after the prompt ids
    p_ids = tok.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
    full_ids = tok.apply_chat_template(prompt + completion, return_dict=True)["input_ids"]
    assert full_ids[: len(p_ids)] == p_ids
    assert tok.decode(full_ids[len(p_ids):]) == completion[0]["content"] + "<|im_end|>\n"
    # and TRL's own prompt/completion rendering needs no prefix trimming
    out = trl_apply_chat_template({"prompt": prompt, "completion": completion}, tok)
    assert (out["prompt"], out["prompt"] + out["completion"]) == (p_text, full_text)


def test_save_and_reload_is_identical(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again.get_vocab() == tok.get_vocab() and len(again) == len(tok)
    assert again.chat_template == tok.chat_template == CHAT_TEMPLATE
    assert again.all_special_tokens == tok.all_special_tokens
    assert {i: (t.content, t.special) for i, t in again.added_tokens_decoder.items()} == {
        i: (t.content, t.special) for i, t in tok.added_tokens_decoder.items()
    }
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "model_max_length", "padding_side"):
        assert getattr(again, attr) == getattr(tok, attr), attr
    text = RENDERED + UNICODE + " 12345 <<48/2=24>>"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    ids = tok.encode(text)
    assert again.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True)
    assert again.apply_chat_template(MESSAGES, tokenize=False) == RENDERED


def test_model_max_length_is_a_parameter():
    assert build_tokenizer(None).model_max_length == 2048
    assert build_tokenizer(None, model_max_length=512).model_max_length == 512


@pytest.mark.real_data
def test_training_is_deterministic(trained):
    texts = gsm8k_texts("train", 3000)
    again = build_tokenizer(texts, vocab_size=VOCAB)
    assert again.backend_tokenizer.to_str() == trained.backend_tokenizer.to_str()
    assert build_tokenizer(None).backend_tokenizer.to_str() == build_tokenizer(None).backend_tokenizer.to_str()
    # sanity: the comparison can fail, a different budget gives a different vocabulary
    assert build_tokenizer(texts, vocab_size=VOCAB - 100).get_vocab() != trained.get_vocab()
