"""Where models and tokenizers come from: `from_pretrained` (Hub id or local path), or `scratch:PRESET`.

`scratch:tiny` builds a randomly initialised Llama of a size preset with a byte-level tokenizer, so recipes
can run offline on a fresh clone with nothing downloaded (recipes/tiny/*). Hub/local models are handed to
the TRL trainers as a name plus `model_init_kwargs`, exactly as TRL's own scripts do, so quantization and
PEFT go through TRL's code paths (the trainers take `quantization_config` and `peft_config`).
"""

from __future__ import annotations

from .recipe import RecipeError

# Llama shapes. Params include the embedding (tied); sizes are for a ~500-token vocabulary.
PRESETS = {
    "tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),  # ~0.1M: smoke tests, seconds on a CPU
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4),  # ~3M: learns synthetic GSM8K on a laptop CPU in minutes
    "medium": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
                   num_key_value_heads=4),  # ~20M
    "gpt2-124m": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      num_key_value_heads=12),
    "d20": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=20, num_attention_heads=10,
                num_key_value_heads=10),  # nanochat's d20 class, ~0.5B
}


def scratch_preset(name_or_path: str) -> str | None:
    if not name_or_path.startswith("scratch:"):
        return None
    preset = name_or_path.split(":", 1)[1]
    if preset not in PRESETS:
        raise RecipeError(f"model_name_or_path '{name_or_path}': unknown preset; choose scratch:{'|'.join(PRESETS)}")
    return preset


def load_tokenizer(model_args, training_args):
    if scratch_preset(model_args.model_name_or_path):
        from .tokenizer import build_tokenizer

        return build_tokenizer(None)  # bytes only: nothing to train, nothing to download
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path, revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code
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


def load_model(model_args, training_args, tokenizer):
    """A scratch preset -> an initialised model; otherwise the name, and TRL loads it with model_init_kwargs."""
    preset = scratch_preset(model_args.model_name_or_path)
    if preset is None:
        training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
        return model_args.model_name_or_path
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tokenizer), tie_word_embeddings=True, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        **PRESETS[preset],
    )
    torch.manual_seed(training_args.seed)  # same seed -> same initial weights
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)
