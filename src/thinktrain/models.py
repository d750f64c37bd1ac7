"""Where models and tokenizers come from: `from_pretrained` (Hub id or local path), or `scratch:PRESET`.

`scratch:tiny` builds a randomly initialised Llama of a size preset with a byte-level tokenizer, so recipes
can run offline on a fresh clone with nothing downloaded (recipes/tiny/*). Hub/local models are handed to
the TRL trainers as a name plus `model_init_kwargs`, exactly as TRL's own scripts do, so quantization and
PEFT go through TRL's code paths (the trainers take `quantization_config` and `peft_config`).
"""

from __future__ import annotations

from .errors import RecipeError

# Llama shapes (SwiGLU MLP, tied embeddings). Params for a 512-token vocabulary; embeddings add vocab x hidden.
PRESETS = {
    "micro": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2),  # 0.13M: smoke tests of the plumbing, seconds on a CPU
    "tiny": dict(hidden_size=256, intermediate_size=640, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=4),  # 2.9M: learns synthetic GSM8K on a 2-core CPU in minutes
    "small": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=8,
                  num_key_value_heads=4),  # 19M
    "medium": dict(hidden_size=640, intermediate_size=1728, num_hidden_layers=10, num_attention_heads=10,
                   num_key_value_heads=5),  # 46M
    # MLP 2048: SwiGLU's three matrices then match GPT-2's two 768x3072 ones; 124M with a 50k vocabulary.
    "gpt2-124m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                      num_key_value_heads=12),  # 85M + embeddings
    # nanochat's d20 (depth 20, width 64 x depth); MLP sized to its 4x relu^2 compute. ~0.5B with a 64k vocabulary.
    "d20": dict(hidden_size=1280, intermediate_size=3456, num_hidden_layers=20, num_attention_heads=10,
                num_key_value_heads=10),  # 396M + embeddings
}


def scratch_preset(name_or_path: str) -> str | None:
    if not name_or_path.startswith("scratch:"):
        return None
    preset = name_or_path.split(":", 1)[1]
    if preset not in PRESETS:
        raise RecipeError(f"model_name_or_path '{name_or_path}': unknown preset; choose one of "
                          f"{', '.join('scratch:' + p for p in PRESETS)}")
    return preset


def load_tokenizer(model_args, training_args, name_or_path: str | None = None, tools=()):
    """The model's tokenizer, or the one at `name_or_path` (pretraining reuses an existing tokenizer that way).
    A scratch preset gets a bytes-only tokenizer (with the tool tags when the recipe has tools)."""
    if name_or_path is None and scratch_preset(model_args.model_name_or_path):
        from .tokenizer import build_tokenizer

        return build_tokenizer(None, tools=tools)  # bytes only: nothing to train, nothing to download
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        name_or_path or model_args.model_name_or_path, revision=None if name_or_path else model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def model_init_kwargs(model_args, training_args) -> dict:
    """What TRL's scripts pass to from_pretrained (revision, dtype, attention); unset keys keep TRL's defaults."""
    kwargs = dict(revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code)
    if model_args.dtype is not None:
        kwargs["dtype"] = model_args.dtype
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    kwargs.update(training_args.model_init_kwargs or {})
    return kwargs


def load_model(model_args, training_args, tokenizer, config_overrides: dict | None = None):
    """A scratch preset -> an initialised model; otherwise the name, and TRL loads it with model_init_kwargs.

    `config_overrides` (scratch only) replace or add LlamaConfig fields on top of the preset."""
    preset = scratch_preset(model_args.model_name_or_path)
    if preset is None:
        training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
        return model_args.model_name_or_path
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    fields = dict(vocab_size=len(tokenizer), tie_word_embeddings=True, max_position_embeddings=2048, **PRESETS[preset])
    config = LlamaConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        **{**fields, **(config_overrides or {})},
    )
    torch.manual_seed(training_args.seed)  # same seed -> same initial weights
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def skeleton(model_args, training_args):
    """The model built on the meta device from its config (a scratch preset's, a folder's config.json, the Hub
    cache's or the Hub's): its modules and parameter names without reading or allocating a weight, for the checks
    that need its structure (checks.check_model_structure). None when the config cannot be had (offline, not
    cached: loading would report that) or the architecture is unknown to transformers."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    from transformers.integrations import deepspeed as hf_deepspeed

    preset = scratch_preset(model_args.model_name_or_path)
    # Under ZeRO-3 (a deepspeed config in the training arguments) from_config would build the model inside
    # deepspeed.zero.Init, which partitions real tensors: set that config aside while the skeleton is built.
    ref = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)
    zero_config = ref() if ref is not None else None
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        config = LlamaConfig(vocab_size=512, **PRESETS[preset]) if preset else AutoConfig.from_pretrained(
            model_args.model_name_or_path, revision=model_args.model_revision,
            trust_remote_code=training_args.trust_remote_code)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=training_args.trust_remote_code)
    except Exception:  # noqa: BLE001 (no config offline, an architecture this build cannot make on meta: no check)
        return None
    finally:
        if zero_config is not None:
            hf_deepspeed.set_hf_deepspeed_config(zero_config)


def load_checkpoint(path: str, *, dtype=None, device: str | None = None):
    """(model in eval mode, tokenizer) from a local checkpoint or Hub id (an adapter folder loads base + LoRA)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(path)
    dtype = dtype or ("auto" if device != "cpu" else torch.float32)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    return model.eval(), tokenizer
