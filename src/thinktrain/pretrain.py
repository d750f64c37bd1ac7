"""Pretraining: raw text -> tokenizer -> a model from scratch (or continued) -> an ordinary checkpoint in output_dir.

The tokenizer is a byte-level BPE trained here on the corpus (or reused: tokenizer_name_or_path); the model is a
Llama of a size preset (`scratch:PRESET`, fields overridable) or any causal LM to continue. Training is TRL's
SFTTrainer on the `text` column with wrapped packing: documents are tokenized (datasets.map, dataset_num_proc),
joined with eos and cut into max_length blocks, so no token is dropped. A callback adds tokens/s, MFU and
validation bits per byte to the logs.
"""

from __future__ import annotations

import math
import time

from transformers import TrainerCallback

from . import data, run
from .errors import RecipeError
from .hardware import measure_peak_tflops
from .models import load_model, load_tokenizer, scratch_preset


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token (PaLM appendix B): 6 per matmul weight (2 forward, 4 backward) plus attention's
    scores and weighted sums, 12 x layers x query width x seq_len. An embedding lookup is free, but a tied
    embedding is also the output projection, so it counts once."""
    c = model.config.get_text_config()
    n = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())  # ds_numel: DeepSpeed ZeRO-3 shards
    if not c.tie_word_embeddings:
        n -= c.vocab_size * c.hidden_size
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return 6 * n + 12 * c.num_hidden_layers * c.num_attention_heads * head_dim * seq_len


class PretrainMetrics(TrainerCallback):
    """Adds `tokens_per_second` and `mfu` (%) to each training log and `eval_bpb` to each evaluation log.

    Tokens are SFTTrainer's `num_tokens` (all processes, padding excluded); time is the wall time between training
    logs minus evaluation and checkpointing. bpb = eval loss (nats/token) / (ln 2 x bytes per eval token)."""

    def __init__(self, flops_per_token: float, peak_tflops: float, eval_bytes_per_token: float | None = None):
        self.flops, self.peak, self.bytes_per_token = flops_per_token, peak_tflops, eval_bytes_per_token

    def speed(self, tokens, seconds, world_size) -> dict:
        rate = tokens / max(seconds, 1e-9)
        return {"tokens_per_second": rate, "mfu": 100 * self.flops * rate / (self.peak * 1e12 * world_size)}

    def on_train_begin(self, args, state, control, **kwargs):
        self.mark, self.tokens, self.total_tokens, self.total_time = time.perf_counter(), 0, 0, 0.0

    def on_evaluate(self, args, state, control, **kwargs):  # after the eval log: its time is not training time
        self.mark = time.perf_counter()

    on_save = on_evaluate

    def on_log(self, args, state, control, logs=None, **kwargs):
        extra = {}
        if "loss" in logs and "num_tokens" in logs:
            now = time.perf_counter()
            tokens, seconds = logs["num_tokens"] - self.tokens, now - self.mark
            self.tokens, self.mark = logs["num_tokens"], now
            self.total_tokens, self.total_time = self.total_tokens + tokens, self.total_time + seconds
            extra = self.speed(tokens, seconds, args.world_size)
        elif "train_runtime" in logs and self.total_time:  # the end-of-training summary: the whole run's average
            extra = {f"train_{k}": v for k, v in self.speed(self.total_tokens, self.total_time, args.world_size).items()}
        if "eval_loss" in logs and self.bytes_per_token:
            extra["eval_bpb"] = logs["eval_loss"] / (math.log(2) * self.bytes_per_token)
        logs.update(extra)  # callbacks after this one (printer, progress) see it ...
        if extra and state.log_history:
            state.log_history[-1].update(extra)  # ... and trainer_state.json, which Trainer.log copied before us


def check(script_args, training_args, model_args):
    """Pretrain-specific combinations, before any data or model loads (the general ones: checks.validate)."""
    # vocab_size alone is just unused then (the header says where the tokenizer came from): a GPU recipe must
    # still run with --model_name_or_path CHECKPOINT for continued pretraining.
    if not scratch_preset(model_args.model_name_or_path):
        for key in ("tokenizer_name_or_path", "model_config_overrides"):
            if getattr(script_args, key) is not None:
                raise RecipeError(f"{key} is for a model built here (model_name_or_path: scratch:PRESET); "
                                  f"{model_args.model_name_or_path} brings its own tokenizer and config")


def make_tokenizer(script_args, model_args, training_args, train_ds, tools: list = ()):
    """-> (tokenizer, where it came from): trained on the first tokenizer_train_samples documents, or loaded."""
    if script_args.tokenizer_name_or_path or not scratch_preset(model_args.model_name_or_path):
        tok = load_tokenizer(model_args, training_args, script_args.tokenizer_name_or_path)
        return tok, f"from {script_args.tokenizer_name_or_path or model_args.model_name_or_path}"
    from .tokenizer import build_tokenizer

    n, column = script_args.tokenizer_train_samples, training_args.dataset_text_field
    docs = train_ds.take(n) if script_args.dataset_streaming else train_ds.select(range(min(n, len(train_ds))))
    tok = build_tokenizer((row[column] for row in docs), script_args.vocab_size,
                          model_max_length=max(2048, training_args.max_length or 0), tools=tools)
    tools = f", tool tags for {', '.join(script_args.tools)}" if script_args.tools else ""
    return tok, f"byte-level BPE trained on {min(n, len(docs)) if hasattr(docs, '__len__') else n:,} documents{tools}"


def main(recipe):
    import torch
    from transformers import set_seed
    from trl import SFTTrainer

    script_args, training_args, model_args = recipe.script_args, recipe.training_args, recipe.model_args
    set_seed(training_args.seed)
    check(script_args, training_args, model_args)
    train_ds, eval_ds = data.load(script_args, training_args)  # column/split errors before anything heavy
    tokenizer, origin = make_tokenizer(script_args, model_args, training_args, train_ds, recipe.tools)
    run.header(recipe, train_ds, eval_ds)
    overrides = {"max_position_embeddings": max(2048, training_args.max_length or 0),
                 **(script_args.model_config_overrides or {})}
    trainer = SFTTrainer(
        model=load_model(model_args, training_args, tokenizer, overrides if scratch_preset(
            model_args.model_name_or_path) else None),
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=run.callbacks(script_args, training_args),
    )
    block = training_args.max_length
    fpt = flops_per_token(trainer.model, block)
    dtype = torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else torch.float32
    peak = script_args.peak_tflops or measure_peak_tflops(dtype, training_args.device)
    bytes_per_token = None
    if eval_ds is not None:  # once: UTF-8 bytes of the eval documents over their tokens after packing
        n_bytes = sum(len(t.encode("utf-8")) for t in eval_ds[training_args.dataset_text_field])
        bytes_per_token = n_bytes / sum(len(ids) for ids in trainer.eval_dataset["input_ids"])
    trainer.callback_handler.callbacks.insert(0, PretrainMetrics(fpt, peak, bytes_per_token))  # before reporters
    if training_args.process_index == 0:
        n_params = sum(p.numel() for p in trainer.model.parameters())
        print(f"  tokenizer  {origin}: {len(tokenizer):,} tokens\n"
              f"  model      {n_params / 1e6:.2f}M params, blocks of {block} tokens, {fpt / 1e6:.1f} MFLOP/token; "
              f"MFU against {peak:.3g} TFLOP/s ({'given' if script_args.peak_tflops else 'measured'}, "
              f"{str(dtype).split('.')[-1]})", flush=True)
    result = run.train(trainer, recipe)
    return run.finish(trainer, result, recipe)
