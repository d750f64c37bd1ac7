"""The one generator: batched completions for evaluation, expert iteration's sampling (and a chat command), with
or without tools.

    prompts, template = encode_prompts(tokenizer, chats, tools)          # as the model sees them
    completions = complete(model, tokenizer, prompts, tools=tools, chat_template=template, max_new_tokens=96,
                           batch_size=64, do_sample=True, temperature=1.0)

Without tools a prompt is its rendered chat text and `generate` batches it; with tools a prompt is token ids
rendered as GRPOTrainer renders them, and `generate_with_tools` follows TRL's tool loop step for step (TRL's own
parser and suffix), so what is evaluated or kept for training is what GRPO's rollouts would have produced.
GRPO itself generates inside TRL's trainer (vLLM or transformers); this module is for everything else.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import sys
from typing import NamedTuple


def render(tokenizer, messages: list[dict]) -> str:
    """The prompt text the model sees: its chat template with the generation prompt (plain text without one)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return "\n\n".join(m["content"] for m in messages) + "\n"


class Completion(NamedTuple):
    text: str
    tokens: int  # generated tokens, the eos included
    finished: bool  # stopped at eos (False: cut at max_new_tokens)
    ids: tuple = ()  # the generated token ids (what rewards get as completion_ids)


def _eos_ids(model, tokenizer) -> list[int]:
    ids = []
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        ids += value if isinstance(value, list) else [] if value is None else [value]
    return list(dict.fromkeys(ids))


def _cache(device) -> dict:
    # On CPU the default dynamic KV cache grows by torch.cat every token, half of a decode step at batch 512; a
    # static cache writes in place: the same completions (compared token for token, greedy and sampled), 1.5-1.9x
    # sooner. Models without Cache support ignore the option with a warning. GPUs keep the default.
    return {"cache_implementation": "static"} if device.type == "cpu" else {}


def _shared_prompts(model, input_ids, attention_mask, max_length: int):
    """A KV cache for a batch whose rows repeat prompts (k samples of each): every distinct prompt but its last token
    runs through the model once and its keys and values are copied to each of its rows; generate reads on from the
    last token. The prompt's forward is half of a CPU sampling batch (90-token prompts, 80 new tokens); once per
    prompt instead of k times, the same tokens come out (compared token for token) 1.5-1.8x sooner. None when no row
    repeats (greedy evaluation keeps generate's own path)."""
    import torch
    from transformers import DynamicCache, StaticCache

    distinct, rows = torch.unique(input_ids, dim=0, return_inverse=True)
    if len(distinct) == len(input_ids):
        return None
    first = torch.empty(len(distinct), dtype=torch.long).scatter_(0, rows, torch.arange(len(rows)))
    ids, mask = input_ids[first], attention_mask[first]
    config = model.config.get_text_config(decoder=True)
    cache = StaticCache(config=config, max_cache_len=max_length) if _cache(model.device) else DynamicCache(config=config)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # as generate numbers a left-padded prompt
    model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], cache=cache,
          use_cache=True, logits_to_keep=1)
    cache.reorder_cache(rows.to(model.device))
    for layer in cache.layers:
        if hasattr(layer, "batch_size"):  # a static layer's size, read by generate's checks
            layer.batch_size = len(rows)
    return cache


@contextlib.contextmanager
def _padding_token(tokenizer, pad_id: int):
    """The tokenizer pads with `pad_id` for the duration (eos when it has no pad token, as generate does)."""
    saved = tokenizer.pad_token_id
    if saved is None:
        tokenizer.pad_token_id = pad_id
    try:
        yield
    finally:
        if saved is None:
            tokenizer.pad_token_id = None


def generate(model, tokenizer, prompts: list[str] | list[list[int]], *, max_new_tokens: int | list[int],
             batch_size: int, do_sample: bool = False, temperature: float = 1.0, add_special_tokens: bool = False,
             desc: str = "generating", progress: bool = True) -> list[Completion]:
    """One completion per prompt (rendered text, or token ids), in order. Batches of similar length, left-padded;
    stops at eos. A list max_new_tokens gives each prompt its own budget (a batch generates to its largest and
    each completion is cut to its own, as TRL's tool loop does).

    The model's own generation_config sampling defaults (top_k, top_p, repetition_penalty) are overridden, so a
    number means the same for every model: greedy, or pure temperature sampling. Its eos ids are kept."""
    import torch
    from tqdm.auto import tqdm

    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    if prompts and isinstance(prompts[0], str):
        prompts = tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]
    budgets = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first: less padding, OOM at once
    sampling = dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0) if do_sample else dict(do_sample=False)
    out: list[Completion | None] = [None] * len(prompts)
    device = model.device
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.inference_mode(), _padding_token(tokenizer, pad):
        for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress or not batches, file=sys.stderr):
            enc = tokenizer.pad({"input_ids": [prompts[i] for i in batch]}, padding=True, padding_side="left",
                                return_tensors="pt")
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            width, new_tokens = ids.shape[1], max(budgets[i] for i in batch)
            shared = _shared_prompts(model, ids, mask, width + new_tokens) if do_sample and width > 1 else None
            cache = {"cache": shared} if shared is not None else _cache(device)
            generated = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                pad_token_id=pad, eos_token_id=eos or None, repetition_penalty=1.0, **sampling, **cache,
            )[:, width:].tolist()
            for row, i in enumerate(batch):
                tokens = generated[row][: budgets[i]]
                end = next((t + 1 for t, tok in enumerate(tokens) if tok in eos), None)
                tokens = tokens if end is None else tokens[:end]
                out[i] = Completion(tokenizer.decode(tokens, skip_special_tokens=True), len(tokens), end is not None,
                                    tuple(tokens))
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------- with tools


class ToolCompletion(NamedTuple):
    text: str  # every assistant turn and tool reply joined (rewards.completion_text): what is scored
    tokens: int  # completion tokens, tool replies and their headers included (they count against the budget)
    finished: bool
    ids: tuple
    messages: tuple  # the completion as TRL's tool loop builds it: assistant, tool, ..., assistant
    calls: int  # tool calls made


# The attributes of GRPOTrainer that its `_get_tool_suffix_ids` reads (trl 1.16); tests/test_generation.py fails
# when TRL's method reads any other, so a TRL upgrade that changes it is caught before it builds other tokens.
SUFFIX_ATTRIBUTES = ("processing_class", "_tokenizer", "_is_vlm", "chat_template", "chat_template_kwargs")


def _suffix_ids(tokenizer, chat_template, tool_messages: list[dict]) -> list[int]:
    """The tokens that follow an assistant turn ending in tool calls: the replies and the next assistant header.
    TRL's own (private) method, GRPOTrainer._get_tool_suffix_ids, called with the few attributes it reads, so
    evaluation, expert iteration and GRPO's rollouts build the same conversation token for token. The one place
    thinktrain calls a private TRL method."""
    from types import SimpleNamespace

    from trl import GRPOTrainer

    owner = SimpleNamespace(processing_class=tokenizer, _tokenizer=tokenizer, _is_vlm=False,
                            chat_template=chat_template, chat_template_kwargs={})
    return GRPOTrainer._get_tool_suffix_ids(owner, tool_messages)


async def _call(toolbox: dict, call: dict):
    """(name, result) of one parsed tool call, as TRL's loop reports it: an exception becomes {'error': ...}; an
    async tool (load_tools makes every tool one) is awaited."""
    function = call.get("function", call) if isinstance(call, dict) else {}
    name = function.get("name", "unknown")
    try:
        if name not in toolbox:
            raise ValueError(f"Tool {name} not found.")
        result = toolbox[name](**(function.get("arguments") or {}))
        return name, (await result) if inspect.isawaitable(result) else result
    except Exception as e:
        return name, {"error": str(e)}


def _call_all(toolbox: dict, calls: list[list[dict]]) -> list[list[tuple]]:
    """Every call of a tool round, all completions' at once (TRL gathers one completion's async calls at a time;
    the results are the same, sooner): per completion, its (name, result) pairs in order."""

    async def gather():
        return await asyncio.gather(*(asyncio.gather(*(_call(toolbox, c) for c in cs)) for cs in calls))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(gather())
    # called from inside a running loop (a notebook, an async caller): asyncio.run refuses there, and this
    # function must return results, not a coroutine; the round gets its own loop on a thread
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tool-round") as pool:
        return pool.submit(asyncio.run, gather()).result()


def tool_template(tokenizer) -> str | None:
    """The chat template TRL's tool loop renders with: the tokenizer's own when prefix-preserving, else TRL's
    training version of it (GRPOTrainer.__init__ makes the same choice)."""
    from trl.chat_template_utils import get_training_chat_template, is_chat_template_prefix_preserving

    return None if is_chat_template_prefix_preserving(tokenizer) else get_training_chat_template(tokenizer)


def render_ids(tokenizer, messages: list[dict], tools: list, chat_template: str | None = None) -> list[int]:
    """A prompt's token ids as GRPOTrainer renders it with tools (their schemas, where the template shows them)."""
    ids = tokenizer.apply_chat_template(messages, tools=tools or None, chat_template=chat_template,
                                        add_generation_prompt=True, tokenize=True, return_dict=False)
    return list(ids)


def generate_with_tools(model, tokenizer, prompt_ids: list[list[int]], tools: list, *, max_new_tokens: int,
                        max_iterations: int | None = None, chat_template: str | None = None, desc: str = "generating",
                        progress: bool = True, **gen) -> list[ToolCompletion]:
    """Generation with tool calls, step for step as GRPOTrainer's tool loop (trl 1.16 `_tool_call_loop`): parse
    each turn with TRL's parse_response; run its calls (an exception is the reply {'error': ...}); append the
    replies and the next assistant header (TRL's suffix); generate on from the whole sequence; stop when a turn
    calls nothing, after max_iterations rounds, or when the replies would push the completion past
    max_new_tokens (that round's replies are dropped, as TRL drops them). Replies count against the budget."""
    from trl.chat_template_utils import parse_response

    from .rewards import completion_text

    toolbox = {fn.__name__: fn for fn in tools}
    limit = getattr(model.config, "max_position_embeddings", None) or float("inf")
    first = generate(model, tokenizer, prompt_ids, max_new_tokens=max_new_tokens, desc=desc, progress=progress, **gen)
    ids = [list(c.ids) for c in first]
    messages = [[parse_response(tokenizer, list(c.ids), prefix=list(p), tools=tools)] for c, p in zip(first, prompt_ids)]
    pending = [i for i, m in enumerate(messages) if m[-1].get("tool_calls")]
    rounds = 0
    while pending and (max_iterations is None or rounds < max_iterations):
        going, contexts = [], []
        for i, results in zip(pending, _call_all(toolbox, [messages[i][-1]["tool_calls"] for i in pending])):
            replies = [{"role": "tool", "name": name, "content": result if isinstance(result, list) else str(result)}
                       for name, result in results]
            context = list(prompt_ids[i]) + ids[i] + _suffix_ids(tokenizer, chat_template, replies)
            if len(context) - len(prompt_ids[i]) > max_new_tokens or len(context) >= limit:
                continue  # over budget: the completion ends as it is (TRL rolls these replies back)
            messages[i] += replies
            going.append(i)
            contexts.append(context)
        budgets = [max_new_tokens - (len(c) - len(prompt_ids[i])) for c, i in zip(contexts, going)]
        # a budget of 0 still asks generate() for 1 token and cuts it: TRL generates then truncates the same way
        more = generate(model, tokenizer, contexts, max_new_tokens=[max(b, 1) for b in budgets], desc=f"{desc} "
                        f"(after tool round {rounds + 1})", progress=False, **gen) if going else []
        pending = []
        for i, context, budget, c in zip(going, contexts, budgets, more):
            new = list(c.ids)[:budget]
            ids[i] = context[len(prompt_ids[i]):] + new
            if new:
                turn = parse_response(tokenizer, new, prefix=context, tools=tools)
                messages[i].append(turn)
                if turn.get("tool_calls"):
                    pending.append(i)
        rounds += 1
    eos = set(_eos_ids(model, tokenizer))
    return [ToolCompletion(completion_text(m), len(i), bool(i) and i[-1] in eos, tuple(i), tuple(m),
                           sum(len(t.get("tool_calls") or []) for t in m if t.get("role") == "assistant"))
            for i, m in zip(ids, messages)]


# --------------------------------------------------------------------------- the entry points


def encode_prompts(tokenizer, chats: list[list[dict]], tools: list = ()) -> tuple[list, str | None]:
    """(prompts, chat_template): rendered text per chat; with tools, token ids as GRPOTrainer renders them and the
    template its tool loop uses (None: the tokenizer's own)."""
    if tools:
        template = tool_template(tokenizer)
        return [render_ids(tokenizer, chat, tools, template) for chat in chats], template
    return [render(tokenizer, chat) for chat in chats], None


def complete(model, tokenizer, prompts: list, *, tools: list = (), chat_template: str | None = None,
             max_iterations: int | None = None, **gen) -> list[Completion] | list[ToolCompletion]:
    """One completion per prompt from `encode_prompts`: `generate`, or with tools `generate_with_tools`. `gen`: the
    generation settings (max_new_tokens, batch_size, do_sample, temperature, add_special_tokens, desc, progress)."""
    if tools:
        return generate_with_tools(model, tokenizer, prompts, list(tools), chat_template=chat_template,
                                   max_iterations=max_iterations, **gen)
    return generate(model, tokenizer, prompts, **gen)
