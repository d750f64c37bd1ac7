"""Byte-level BPE tokenizer with ChatML and the <think>/<answer> tags, for models trained from scratch.

Byte-level with the full 256-byte alphabet, so every string round-trips exactly and nothing is ever <unk>.
Digits are split one per token: numbers then tokenize consistently, which small models need for arithmetic.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Ids 0..3, in this order. Roles (see build_tokenizer): bos, chat turn start, eos (chat turn end), pad.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")
BOS, IM_START, EOS, PAD = SPECIAL_TOKENS
# Ordinary (non-special) added tokens: GRPO decodes completions with skip_special_tokens=True and the
# format/answer rewards must still see the tags.
THINK_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
MIN_VOCAB = len(SPECIAL_TOKENS) + 256 + len(THINK_TAGS)  # what build_tokenizer needs before any merge

# Tool-call tags (ordinary added tokens, for the same reason as THINK_TAGS: TRL's parse fallback and our
# decoding skip special tokens). Added only to a tokenizer built with tools (build_tokenizer(tools=...)), so
# a tokenizer without tools is the one it always was.
TOOL_TAGS = ("<tool_call>", "</tool_call>")

# ChatML: `<|im_start|>role\ncontent<|im_end|>\n`. The {% generation %} block spans the assistant content and
# its <|im_end|> (the model must learn to stop), so `return_assistant_tokens_mask` / TRL's assistant_only_loss
# train on exactly that. The prompt with add_generation_prompt=True is a prefix of prompt + completion, as TRL's
# prompt/completion format requires. No bos in the template: chats start at <|im_start|>.
# Tool calls, compact: the assistant's text, then `<tool_call>NAME {json args}</tool_call>` per call, then
# <|im_end|> (the turn ends, the tool runs); a reply is a `tool` turn. No tool schema is written into the prompt
# (a Qwen-style template adds every tool's JSON schema to every prompt): a model trained here learns its
# tools from its SFT data. Without tool_calls every message renders exactly as before tools existed.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] or '' }}"
    "{%- for call in message['tool_calls'] or [] %}"
    "{%- set f = call['function'] if call['function'] is defined else call %}"
    "{{- '<tool_call>' + f['name'] + ' ' + (f['arguments'] if f['arguments'] is string else f['arguments'] | tojson)"
    " + '</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# How transformers' parse_response (and so TRL's tool loop) reads an assistant turn of CHAT_TEMPLATE back into
# {"content", "tool_calls"}; content keeps its whitespace, so text + tool replies rejoin exactly.
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open_pattern": r"<tool_call>(?P<name>[^\s<{]+) ?",
            "close_pattern": r"</tool_call>",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": {"name": "{name}", "arguments": "{content}"}},
        },
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text", "content_args": {"strip": False}},
    },
}


def build_tokenizer(
    texts: Iterable[str] | None = None,
    vocab_size: int = 512,
    show_progress: bool = False,
    model_max_length: int = 2048,
    tools: Sequence[Callable] = (),
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` (None: bytes only, no merges) and wrap it for transformers/TRL.

    `vocab_size` bounds `len(tokenizer)`: 4 specials + 256 bytes + merges + 4 tags (+ 2 tool tags with `tools`).
    Training is deterministic (same texts and vocab_size give the same vocabulary). With `tools`, each text is
    followed by one call of each tool as the chat template writes it, so BPE learns `calculator`, `expression`
    and the JSON around them as a few tokens: a call costs ~8 tokens plus its argument instead of ~45.
    """
    tags = THINK_TAGS + (TOOL_TAGS if tools else ())
    n_fixed = len(SPECIAL_TOKENS) + 256 + len(tags)
    if vocab_size < n_fixed:
        raise ValueError(f"vocab_size must be >= {n_fixed} (specials + 256 bytes + tags), got {vocab_size}")
    if tools and texts is not None:
        calls = [call_text(fn) for fn in tools] + ["tool\nassistant\n"]  # the reply's role headers too
        texts = (piece for text in texts for piece in (text, *calls))

    tok = Tokenizer(models.BPE())
    # Digits first (one token each), then GPT-2 byte-level splitting; no prefix space, so decode(encode(s)) == s.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(tags),  # the tags are added after training
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes even if unseen in `texts`
        min_frequency=2,
        show_progress=show_progress,
    )
    # texts=None: "training" on nothing yields just specials + the byte alphabet, instantly.
    tok.train_from_iterator(iter(texts) if texts is not None else iter(()), trainer=trainer)
    # normalized/lstrip/rstrip off: the tags must not eat or add the whitespace around them.
    tok.add_tokens([AddedToken(t, special=False, normalized=False, lstrip=False, rstrip=False) for t in tags])

    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        # eos = <|im_end|>: chat turns end with it, so generate()/GRPO stop there and TRL's SFT appends it.
        # bos = <|endoftext|> (document start for generate() from nothing), never added automatically so that
        # encode(text) has no hidden ids and chat renderings tokenize the same with or without the template.
        # pad = its own token: when pad == eos, collators that mask pad in labels also mask the real eos.
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=[IM_START],  # so all_special_tokens / skip_special_tokens know it too
        add_bos_token=False,
        add_eos_token=False,
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,  # the cleanup rewrites " ." etc. and breaks exact round trips
        **({"response_template": RESPONSE_TEMPLATE} if tools else {}),  # saved in tokenizer_config.json
        padding_side="right",
    )
    return out


def call_text(fn: Callable) -> str:
    """A call of `fn` as CHAT_TEMPLATE writes it, tags left out (they are whole tokens): `calculator {"expression": "1"}`."""
    from transformers.utils import get_json_schema

    params = get_json_schema(fn)["function"]["parameters"].get("properties", {})
    return f"{fn.__name__} {json.dumps({name: '1' for name in params})}"
